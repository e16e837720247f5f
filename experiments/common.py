"""Shared plumbing of the experiments: run folders, experiment configs, training, reports.

Every experiment trains through :func:`train`, i.e. :func:`vaejax.trainer.fit` with a
checkpoint folder under ``<workdir>/checkpoints/<experiment>/<model>``: an experiment killed
part-way resumes each of its trainings where it stopped when run again, and ends with the
numbers of an uninterrupted run. Result files go through :mod:`vaejax.io` (temporary file
and rename), so an interrupted run never leaves a truncated CSV, JSON, figure or report.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vaejax import trainer as trainer_lib
from vaejax.checkpoints import Checkpointer
from vaejax.io import (  # noqa: F401  (re-exported for experiments)
    atomic_write_text,
    prepare_workdir,
    save_figure,
    write_csv,
    write_json,
)
from vaejax.train import load_data  # noqa: F401  (re-exported for experiments)

# --------------------------------------------------------------------------- training


def train(config: ml_collections.ConfigDict, dataset, workdir: str | os.PathLike, name: str, *,
          trainer: trainer_lib.Trainer | None = None, members: trainer_lib.Members | None = None,
          hooks: Sequence[trainer_lib.Hook] = (), num_steps: int | None = None,
          state: trainer_lib.TrainState | None = None, train_data: jax.Array | None = None,
          label: str | None = None, non_finite: str = "raise") -> trainer_lib.FitResult:
    """Trains the config's model (or ``trainer``/``members``) on ``dataset``, resumably.

    Checkpoints go to ``<workdir>/checkpoints/<name>`` every ``config.checkpoint.every_epochs``
    epochs and at the end; a rerun restores the newest and goes on from there. Training
    starts at ``state.step`` (a fresh state from ``trainer.init`` by default).
    """
    if trainer is None or members is None:
        built_trainer, built_members = trainer_lib.build(config, dataset)
        trainer, members = trainer or built_trainer, members or built_members
    train_data = jnp.asarray(dataset.train) if train_data is None else train_data
    per_epoch = trainer.steps_per_epoch(int(train_data.shape[0]))
    num_steps = config.train.num_epochs * per_epoch if num_steps is None else num_steps
    state = trainer.jit.init(members) if state is None else state
    with Checkpointer(Path(workdir) / "checkpoints" / name, keep=1) as checkpoints:
        return trainer_lib.fit(trainer, state, train_data, members, num_steps=num_steps,
                               hooks=hooks, checkpoints=checkpoints,
                               checkpoint_every_steps=config.checkpoint.every_epochs * per_epoch,
                               progress=config.run.progress, desc=label or name,
                               non_finite=non_finite)


def measurement_setup(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                      name: str, group) -> tuple[Path, ml_collections.ConfigDict, Any]:
    """(workdir, the validated group ``config.<name>``, the data set) of a measurement on
    one batch of ``<name>.batch_size`` training examples (refused if there are fewer)."""
    from vaejax.config import validate_group

    workdir = prepare_workdir(workdir)
    exp = validate_group(config, name, group)
    data = load_data(config)
    if exp.batch_size > data.train.shape[0]:
        raise ValueError(f"config `{name}.batch_size`={exp.batch_size} exceeds the "
                         f"{data.train.shape[0]} training examples.")
    return workdir, exp, data


def first_member(tree) -> Any:
    """Member 0 of a stacked [P, ...] pytree."""
    return jax.tree.map(lambda leaf: leaf[0], tree)


def host(tree) -> Any:
    """A pytree of device arrays as numpy arrays (waits for them)."""
    return jax.tree.map(np.asarray, tree)


# --------------------------------------------------------------------------- outputs


def quiet_matplotlib() -> None:
    """Under absl logging matplotlib would print its font-cache chatter: keep warnings only."""
    import logging as std_logging

    std_logging.getLogger("matplotlib").setLevel(std_logging.WARNING)


def style_axes(ax, xlabel: str | None = None, ylabel: str | None = None,
               title: str | None = None, *, legend: float | None = 8, grid: str = "major",
               **legend_kwargs) -> None:
    """Labels, title, legend (font size ``legend``; None: no legend) and grid of one panel.

    ``grid`` is "major", "both" (for log axes) or "" (none); ``legend_kwargs`` go to
    ``ax.legend`` (``loc``, ``title``, ``ncol``, ...).
    """
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if legend is not None:
        ax.legend(fontsize=legend, **legend_kwargs)
    if grid:
        ax.grid(True, which=grid, alpha=0.3)


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


def series(figure: str, panel: str, name: str, xs, ys) -> list[list]:
    """CSV rows ``[figure, panel, series, x, y]`` of one plotted line."""
    return [[figure, panel, name, float(a), float(b)] for a, b in zip(xs, ys, strict=True)]


SERIES_COLUMNS = ("figure", "panel", "series", "x", "y")


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
    so that ``experiments.main`` can import every experiment into one process. Rerunning
    with the same ``--workdir`` resumes the experiment's trainings.
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
        quiet_matplotlib()
        out = workdir.value or new_run_dir()
        summary = run_fn(config.value, out)
        print(summary.pop("report"))
        print(f"[{name}] wrote {out}")

    app.run(main)
