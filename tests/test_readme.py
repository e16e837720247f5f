"""The README's API tour runs as written, and the README starts with the two commands."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["./launch.sh", "./launch.sh test"]
    assert text.index("```bash") < text.index("## ")


def test_readme_python_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python snippet"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
