"""The main job: every experiment at its CPU size on the bundled digits, one report.

    ./launch.sh                      # writes results/<timestamp>/ and results/latest
    ./launch.sh main --smoke         # tiny sizes (seconds), for tests
    ./launch.sh main --new           # a new run even if the latest one is unfinished

Each experiment writes its figures (PNG + PDF), CSV and JSON into the run folder and
contributes one section to ``report.md``. The job can be killed at any moment (SIGKILL,
a pre-empted machine) and resumed by running the same command again: it continues the
newest unfinished run of the same settings, skips the experiments that finished (their
sections are kept in ``<run>/sections/``), restores each training from its last
checkpoint (``<run>/checkpoints/``), and writes the report an uninterrupted run writes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from experiments import common

# (section title, name): experiments/<name>(.py or package) has run(config, workdir) and
# experiments/configs/<name>.py has get_config(arg).
EXPERIMENTS = (
    ("1. Gradient equivalence: grad(-log N) = D/(2 sigma^2) grad(MSE)", "gradient_equivalence"),
    ("2. Fixed sigma is beta = 2 sigma^2", "sigma_is_beta"),
    ("3. Sweeping sigma by population training", "sigma_sweep"),
    ("4. Bernoulli, BCE and the continuous Bernoulli", "bernoulli_bce"),
    ("5. How many Monte-Carlo samples?", "mc_samples"),
    ("6. The learned-variance trap", "learned_variance"),
    ("7. AEVB figures 2-5: AEVB against wake-sleep", "aevb"),
    ("8. The dictionary of reconstruction losses", "loss_dictionary"),
)
_SETTINGS = "main_settings.json"


def _settings(args, selected) -> dict:
    return {"smoke": bool(args.smoke), "experiments": [name for _, name in selected]}


def _unfinished_run(root: Path, settings: dict) -> Path | None:
    """results/latest when it is an unfinished run of the same settings, else None."""
    latest = root / "latest"
    if not latest.is_dir() or (latest / "report.md").exists():
        return None
    try:
        saved = json.loads((latest / _SETTINGS).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return latest.resolve() if saved == settings else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny configs (for tests)")
    parser.add_argument("--results", default="results", help="root folder of the runs")
    parser.add_argument("--name", default=None,
                        help="run folder name (default: resume the latest unfinished run of "
                             "these settings, else a new timestamp)")
    parser.add_argument("--new", action="store_true", help="never resume: start a new run")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        choices=[name for _, name in EXPERIMENTS],
                        help="run only these experiments")
    args = parser.parse_args(argv)
    common.quiet_matplotlib()
    selected = [(t, n) for t, n in EXPERIMENTS if args.only is None or n in args.only]
    settings = _settings(args, selected)

    root = Path(args.results)
    resume = None if (args.new or args.name) else _unfinished_run(root, settings)
    if args.name and (root / args.name / _SETTINGS).exists():
        saved = json.loads((root / args.name / _SETTINGS).read_text())
        if saved != settings:
            parser.error(f"{root / args.name} holds a run with other settings ({saved}); "
                         "use another --name.")
        resume = root / args.name
    run_dir = common.new_run_dir(root, resume.name if resume else args.name)
    print(f"[vaejax] {'resuming the unfinished run' if resume else 'writing results to'} "
          f"{run_dir}", flush=True)
    common.write_json(run_dir / _SETTINGS, settings)
    sections_dir = run_dir / "sections"
    sections, start = {}, time.perf_counter()
    bar = tqdm(selected, desc="experiments", unit="exp", file=sys.stdout)
    for title, name in bar:
        bar.set_postfix_str(name)
        done = sections_dir / f"{name}.json"
        if done.exists():  # finished in an earlier, interrupted run of this job
            sections[title] = json.loads(done.read_text())["section"]
            continue
        module = importlib.import_module(f"experiments.{name}")
        config_module = importlib.import_module(f"experiments.configs.{name}")
        tic = time.perf_counter()
        summary = module.run(config_module.get_config("smoke" if args.smoke else None), run_dir)
        section = summary["report"] + f"\n_Wall time: {time.perf_counter() - tic:.1f} s._\n"
        common.write_json(done, {"section": section})
        sections[title] = section
    total = time.perf_counter() - start
    intro = (f"Generated by `./launch.sh`{' (smoke sizes)' if args.smoke else ''}; this "
             f"invocation took {total:.1f} s. Every number below was measured in this run; "
             "the CSV and JSON files beside this report hold every plotted value.")
    common.write_report(run_dir, "vaejax report", {"About this run": intro, **sections})
    print(f"[vaejax] done in {total:.1f} s: {run_dir / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
