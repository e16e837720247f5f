"""Matplotlib figures: functions take numpy arrays and return a Figure; callers save it.

Importing this module changes no global state: matplotlib is imported when a figure is
made, with the backend the user configured (matplotlib falls back to the non-interactive
Agg backend on machines without a display).
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np


def _floor(values: np.ndarray, floor: float) -> np.ndarray:
    """Exact zeros cannot be drawn on a log axis: show them at ``floor``."""
    return np.maximum(np.asarray(values, dtype=np.float64), floor)


def gradient_equivalence_figure(
    sigmas: np.ndarray,
    ratio: np.ndarray,
    factor: np.ndarray,
    num_dims: int,
    slope: float,
    one_minus_cosine: Mapping[str, np.ndarray],
    relative_error: Mapping[str, np.ndarray],
    *,
    title: str = "",
):
    """Three panels: gradient ratio vs sigma with the theory line, 1 - cosine, relative error.

    Args:
      sigmas: [S] sigma grid.
      ratio: [S, L] measured ||grad(-log N)|| / ||grad MSE||.
      factor: [S] theory D / (2 sigma^2).
      num_dims: D.
      slope: fitted log-log slope of the ratio.
      one_minus_cosine: label (e.g. "float32") -> [S, L].
      relative_error: label -> [S, L].
      title: figure title.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.loglog(sigmas, factor, "-", color="black", lw=1.5,
              label=rf"theory $D/(2\sigma^2)$, D={num_dims}")
    med = np.median(ratio, axis=1)
    ax.fill_between(sigmas, ratio.min(axis=1), ratio.max(axis=1), color="C0", alpha=0.3)
    ax.loglog(sigmas, med, "o", ms=5, mfc="none", color="C0",
              label=f"measured, median of L={ratio.shape[1]} samples")
    ax.set_xlabel(r"decoder $\sigma$")
    ax.set_ylabel(r"$\|\nabla(-\log\mathcal{N})\| \,/\, \|\nabla \mathrm{MSE}\|$")
    ax.set_title(f"gradient ratio: fitted slope {slope:.6f} (theory -2)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    for ax, data, ylabel, panel in (
        (axes[1], one_minus_cosine, r"$1 - \cos(\nabla(-\log\mathcal{N}), \nabla\mathrm{MSE})$",
         "direction"),
        (axes[2], relative_error,
         r"$\|\nabla(-\log\mathcal{N}) - \frac{D}{2\sigma^2}\nabla\mathrm{MSE}\|$"
         r"$\,/\,\|\nabla(-\log\mathcal{N})\|$",
         "relative error against theory"),
    ):
        for i, (label, values) in enumerate(data.items()):
            floor = 1e-18
            ax.loglog(sigmas, _floor(values.max(axis=1), floor), "-", color=f"C{i}",
                      label=f"{label} (max over samples)")
        for dtype in ("float32", "bfloat16"):
            if dtype == "float32" or dtype in data:
                eps = float(ml_dtypes.finfo(dtype).eps)
                ax.axhline(eps, color="gray", lw=0.8, ls="--")
                ax.text(sigmas[0], eps * 1.5, f"{dtype} eps", fontsize=7, color="gray")
        ax.set_xlabel(r"decoder $\sigma$")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(panel)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_rows_figure(images: np.ndarray, image_shape: tuple[int, int], row_labels, *,
                      title: str = "", max_rows: int = 17):
    """A grid of images: one row per entry of ``images`` [R, N, D], labelled on the left.

    Args:
      images: [R, N, D] values in [0, 1] (clipped for display).
      image_shape: (H, W) with H * W = D.
      row_labels: R strings.
      title: figure title.
      max_rows: rows beyond this are dropped (large populations).
    """
    import matplotlib.pyplot as plt

    images = np.clip(np.asarray(images, dtype=np.float64)[:max_rows], 0.0, 1.0)
    rows, cols = images.shape[:2]
    height, width = image_shape
    fig, axes = plt.subplots(rows, 1, figsize=(cols * 0.55 + 1.8, rows * 0.62 + 0.5),
                             squeeze=False)
    for r in range(rows):
        tiles = images[r].reshape(cols, height, width)
        tiles = np.pad(tiles, ((0, 0), (0, 0), (0, 1)), constant_values=1.0)  # white gaps
        strip = tiles.transpose(1, 0, 2).reshape(height, -1)[:, :-1]
        ax = axes[r, 0]
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
