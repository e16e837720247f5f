"""Crash-safe files: every write goes to a temporary file in the same folder, then os.replace.

A run killed at any moment leaves either the previous complete file or the new one,
never a truncated CSV, JSON, figure or report.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# mkstemp names: the prefix, 8 characters from [a-z0-9_], the suffix.
_TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(_TEMPORARY_SUFFIX) + "$")


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace``.

    The temporary file ``.<name>.XXXXXXXX.tmp`` sits in the same folder (``os.replace`` is
    atomic only within a file system). A process killed before the rename leaves it behind,
    and the previous ``path``, if any, untouched; see :func:`remove_stale_temporaries`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=_TEMPORARY_SUFFIX)
    try:
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask).
        os.fchmod(fd, 0o666 & ~_UMASK)
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


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files that killed writers left in ``folder`` (not recursive).

    Only names of the form :func:`atomic_write_bytes` creates are touched. Call it when
    no other process writes to ``folder`` (a run starting in its own workdir).

    Returns:
      The paths deleted.
    """
    removed = []
    for path in Path(folder).iterdir():
        if _TEMPORARY_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
