"""Shared plumbing for experiments: run folders, configs, report sections.

Result files go through :mod:`vaejax.io` (temporary file + rename), so an interrupted
run never leaves a truncated CSV, JSON, figure or report.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from vaejax.io import (  # noqa: F401  (re-exported for experiments)
    atomic_write_bytes,
    atomic_write_text,
    prepare_workdir,
    save_figure,
    write_csv,
    write_json,
)


def new_run_dir(root: str | os.PathLike = "results", name: str | None = None) -> Path:
    """results/<timestamp> (or results/<name>), plus a ``results/latest`` symlink to it."""
    root = Path(root)
    name = name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = prepare_workdir(root / name)
    latest = root / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(name)
    except OSError:
        pass  # A missing convenience link is not an error.
    return run_dir


def save_config(config: ml_collections.ConfigDict, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, config.to_json_best_effort(indent=2) + "\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(run_dir: Path, title: str, sections: Mapping[str, str]) -> Path:
    """Assembles ``report.md`` from per-experiment markdown sections, in order."""
    body = [f"# {title}", ""]
    for heading, text in sections.items():
        body += [f"## {heading}", "", text.strip(), ""]
    return atomic_write_text(run_dir / "report.md", "\n".join(body))


def cli_main(name: str, run_fn) -> None:
    """``python -m experiments.<name> [--config=...] [--workdir=...]``.

    The absl flags are defined here, when a module runs as a script, and not at import,
    so that ``experiments.main`` can import every experiment into one process.
    """
    from absl import app, flags, logging
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file(
        "config", str(Path(__file__).parent / "configs" / f"{name}.py"),
        "Experiment configuration.", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None,
                                  "Output folder (default: a new results/<run>).")

    def main(argv):
        del argv
        logging.set_verbosity(logging.WARNING)  # orbax/absl INFO chatter hides progress bars
        out = workdir.value or new_run_dir()
        summary = run_fn(config.value, out)
        print(summary.pop("report"))
        print(f"[{name}] wrote {out}")

    app.run(main)
