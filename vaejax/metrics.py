"""Metric and image writers of a training run; only process 0 writes files.

Every process computes (the arrays are global), one writes: :func:`is_writer` is
``jax.process_index() == 0``. CSV and images go through :mod:`vaejax.io` (temporary file
and rename), so a killed run never leaves a truncated file. TensorBoard is optional
(``tensorboardX``); the CSV is always written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from vaejax import io as io_lib


def is_writer() -> bool:
    """True on the process that writes files (process 0 of a multi-host run)."""
    return jax.process_index() == 0


class MetricsWriter:
    """Writes history records to ``<workdir>/metrics.csv`` and TensorBoard.

    Args:
      workdir: the run's folder.
      columns: the CSV columns (each record supplies every column).
      scalars: the record keys plotted in TensorBoard, per member (``member`` column).
    """

    def __init__(self, workdir: str | os.PathLike, columns: Sequence[str],
                 scalars: Sequence[str] = ()):
        self.path = Path(workdir) / "metrics.csv"
        self.columns = tuple(columns)
        self.scalars = tuple(scalars)
        self._tensorboard = None
        if is_writer() and self.scalars:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional: the CSV has every number
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, history: Sequence[dict], new: Sequence[dict] = ()) -> None:
        """Rewrites the CSV from every record of ``history``; adds ``new`` to TensorBoard."""
        if not is_writer():
            return
        io_lib.write_csv(self.path, self.columns,
                         [[record[c] for c in self.columns] for record in history])
        if self._tensorboard is None:
            return
        for record in new:
            prefix = f"member_{int(record.get('member', 0)):03d}"
            for name in self.scalars:
                value = float(record[name])
                if math.isfinite(value):  # IWAE is NaN when disabled: nothing to plot
                    self._tensorboard.add_scalar(f"{prefix}/{name}", value, int(record["step"]))
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def write_image_rows(path_stem: str | os.PathLike, images: np.ndarray, image_shape,
                     labels: Sequence[str], *, title: str) -> None:
    """An image grid (one row per entry of ``images`` [R, N, D]) as PNG and PDF, process 0."""
    if not is_writer():
        return
    from vaejax import plotting

    io_lib.save_figure(plotting.image_rows_figure(images, image_shape, list(labels),
                                                  title=title), path_stem)
