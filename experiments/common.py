"""Shared plumbing for experiments: run folders, atomic result files, report sections.

Every result file is written to a temporary file in the same folder and renamed
into place, so an interrupted run never leaves a truncated CSV, JSON, figure or report.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Path:
    """Writes a CSV with ``header`` and ``rows`` atomically; floats keep full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return atomic_write_text(path, buffer.getvalue())


def save_figure(fig, path_stem: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf")):
    """Saves a matplotlib figure as ``<stem>.png`` and ``<stem>.pdf`` atomically."""
    import matplotlib.pyplot as plt

    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(atomic_write_bytes(f"{path_stem}.{fmt}", buffer.getvalue()))
    plt.close(fig)
    return paths


def prepare_workdir(workdir: str | os.PathLike) -> Path:
    """Creates ``workdir`` (and parents) and checks it is a writable directory."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"workdir {str(path)!r} exists and is not a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"workdir {str(path)!r} is not writable: {err}") from err
    return path


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
