"""Figures 2-5 of Kingma & Welling (2013) and the report section, from named records.

Records are the dicts of :data:`experiments.aevb.training.RECORD_KEYS`; the final numbers
come from :func:`experiments.aevb.final_bounds`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from experiments import common
from experiments.aevb.training import METHOD_LABELS, METHODS

METHOD_STYLE = {"aevb": dict(color="C3"), "wake_sleep": dict(color="C0")}
GREY = dict(cmap="gray", vmin=0, vmax=1, interpolation="nearest")  # imshow of [0, 1] images
PAPER_NOTE = {
    "mnist": "paper: Nz = 20 test about -100 nats at 1e8 samples (wake-sleep about -104)",
    "frey": "paper: Nz = 20 about +1490 train / +1320 test; wake-sleep levels off near +580",
}


# ----------------------------------------------------------------------------- images


def manifold(trained, config) -> dict:
    """Decoder means on the grid z = Phi^-1(u) of the AEVB model with 2 latents."""
    n = config.aevb.manifold_grid
    u = (np.arange(n) + 0.5) / n  # evenly spaced inside the unit square (Phi^-1(0) = -inf)
    values = scipy.stats.norm.ppf(u)
    # Row i from the top holds z2 = values[n-1-i]; column j holds z1 = values[j].
    coords = [(i, j, float(values[j]), float(values[n - 1 - i]))
              for i in range(n) for j in range(n)]
    trainer, state, members = trained
    z = np.zeros((n * n, trainer.max_latent), np.float32)
    z[:, :2] = [(c[2], c[3]) for c in coords]
    images = np.asarray(trainer.jit.decode_means(state, jnp.asarray(z), members))[0]
    return {"coords": coords, "images": images, "grid": n, "values": values}


def sample_images(models: dict, config) -> dict:
    """{latent: [N, D]} decoder means at z ~ N(0, I) for each of aevb.sample_latents."""
    out = {}
    for latent in config.aevb.sample_latents:
        if ("aevb", latent) not in models:
            continue
        trainer, state, members = models[("aevb", latent)]
        z = jax.random.normal(jax.random.key(config.seed + 5),
                              (config.aevb.num_sample_images, trainer.max_latent))
        out[latent] = np.asarray(trainer.jit.decode_means(state, z, members))[0]
    return out


def _tile(images: np.ndarray, image_shape, cols: int) -> np.ndarray:
    """[N, D] -> one image of rows x cols tiles with 1-pixel white gaps."""
    h, w = image_shape
    n = images.shape[0]
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = \
            np.clip(images[k].reshape(h, w), 0, 1)
    return canvas


# ----------------------------------------------------------------------------- figures


def _curves(records, key, *, finite=False, **match):
    """(samples, record[key]) of the selected records matching ``match``, by samples."""
    sel = sorted((r for r in records if r["selected"] == 1 and (not finite or np.isfinite(r[key]))
                  and all(r[k] == v for k, v in match.items())), key=lambda r: r["samples"])
    return np.array([r["samples"] for r in sel]), np.array([r[key] for r in sel])


def _plot_splits(ax, curves, method: str, label: str, ms: float) -> None:
    """The train (solid) and test (dashed) curves [(x, y), (x, y)] of one method."""
    for (x, y), ls, split in zip(curves, ("-", "--"), ("train", "test"), strict=True):
        ax.semilogx(x, y, ls, marker="o", ms=ms, lw=1.3, label=f"{label} ({split})",
                    **METHOD_STYLE[method])


def figure2(rows, panels, results, config):
    """Figure 2: lower bound against training samples, one panel per (data set, Nz)."""
    import matplotlib.pyplot as plt

    exp = config.aevb
    names = list(panels)
    cols = max(len(panels[n].latent_sizes) for n in names)
    fig, axes = plt.subplots(len(names), cols, figsize=(3.3 * cols, 3.0 * len(names) + 0.6),
                             squeeze=False)
    methods = ["aevb"] + (["wake_sleep"] if exp.wake_sleep else [])
    for r, name in enumerate(names):
        panel = panels[name]
        curves = {(m, lat, col): _curves(rows, col, panel=name, method=m, latent=lat)
                  for m in methods for lat in panel.latent_sizes
                  for col in ("train_bound", "test_bound")}
        finals = [v for (_, _, col), (_, y) in curves.items() if col == "test_bound"
                  for v in y[-1:].tolist()]
        values = [v for _, y in curves.values() for v in y.tolist() if np.isfinite(v)]
        top = max(values)
        span = max(top - min(finals), 5.0)
        bottom = max(min(values), min(finals) - 1.5 * span)
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(panel.latent_sizes):
                ax.axis("off")
                continue
            latent = panel.latent_sizes[c]
            for method in methods:
                _plot_splits(ax, [curves[(method, latent, col)]
                                  for col in ("train_bound", "test_bound")],
                             method, "AEVB" if method == "aevb" else "WS", 2.5)
            ax.axvline(results[name]["select_steps"] * config.train.batch_size, color="gray",
                       lw=0.8, ls=":", label="step size chosen")
            ax.set_ylim(bottom, top + 0.08 * (top - bottom))
            ax.set_title(f"{panel.label}, $N_z$ = {latent}", fontsize=8)
            ax.set_xlabel("# training samples evaluated", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.25)
            if c == 0:
                ax.set_ylabel(r"lower bound $\mathcal{L}$ per datapoint (nats)", fontsize=8)
                ax.legend(fontsize=6, loc="lower right")
        if name in PAPER_NOTE:
            axes[r, 0].text(0.02, 0.98, PAPER_NOTE[name], transform=axes[r, 0].transAxes,
                            fontsize=6, va="top")
    fig.suptitle("Figure 2 (Kingma & Welling 2013): AEVB vs wake-sleep, lower bound per "
                 f"datapoint; Adagrad step size from {tuple(exp.learning_rates)} by the "
                 "training bound, M = 100, L = 1", fontsize=9)
    fig.tight_layout()
    return fig


def figure3(rows, fig3, panel, config):
    """Figure 3: estimated marginal log-likelihood against training samples, per N_train."""
    import matplotlib.pyplot as plt

    exp, sizes = config.aevb, fig3["train_sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.9), squeeze=False)
    methods = sorted({r["method"] for r in rows}, key=METHODS.index)
    for ax, n in zip(axes[0], sizes, strict=True):
        for method in methods:
            _plot_splits(ax, [_curves(rows, col, finite=True, method=method, num_train=n)
                              for col in ("train_iwae", "test_iwae")],
                         method, METHOD_LABELS[method], 3)
        ax.set_title(f"{panel.label}, $N_{{train}}$ = {n}", fontsize=9)
        ax.set_xlabel("# training samples evaluated", fontsize=8)
        ax.set_ylabel("marginal log-likelihood (nats)", fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="lower right")
        ax.tick_params(labelsize=7)
    fig.text(0.5, -0.02,
             f"log p(x) estimated by the IWAE bound with K = {exp.fig3_iwae_samples} "
             f"importance samples on {fig3['iwae_examples']} train and test examples; "
             f"Nz = {exp.fig3_latent}, {exp.fig3_hidden} hidden units. The paper used "
             "an HMC-based estimator (and also showed Monte-Carlo EM).",
             ha="center", fontsize=7, wrap=True)
    fig.suptitle("Figure 3 (Kingma & Welling 2013): AEVB vs wake-sleep, estimated marginal "
                 "likelihood", fontsize=9)
    fig.tight_layout()
    return fig


def figure4(manifolds, panels, datasets, config):
    """Figure 4: learned 2-D manifolds, one per data set."""
    import matplotlib.pyplot as plt

    names = list(manifolds)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5.2 * max(len(names), 1), 5.4),
                             squeeze=False)
    for c, name in enumerate(names):
        m, ax = manifolds[name], axes[0, c]
        n, (h, w) = m["grid"], datasets[name].image_shape
        ax.imshow(_tile(np.asarray(m["images"]), (h, w), n), **GREY)
        ax.set_title(f"({'abcdefgh'[c]}) Learned {panels[name].label} manifold", fontsize=9)
        ticks = [0, n // 2, n - 1]
        ax.set_xticks([t * (w + 1) + w / 2 for t in ticks],
                      [f"{m['values'][t]:.2f}" for t in ticks], fontsize=7)
        ax.set_yticks([t * (h + 1) + h / 2 for t in ticks],
                      [f"{m['values'][n - 1 - t]:.2f}" for t in ticks], fontsize=7)
        ax.set_xlabel(r"$z_1 = \Phi^{-1}(u_1)$", fontsize=8)
        ax.set_ylabel(r"$z_2 = \Phi^{-1}(u_2)$", fontsize=8)
    grid = config.aevb.manifold_grid
    fig.suptitle("Figure 4 (Kingma & Welling 2013): decoder means E[x|z] of 2-D latent AEVB "
                 f"models on a {grid}x{grid} grid, u evenly spaced in the unit square",
                 fontsize=9)
    fig.tight_layout()
    return fig


def figure5(samples, panels, datasets, config):
    """Figure 5: random samples (decoder means, z ~ N(0, I)) for each latent size."""
    import matplotlib.pyplot as plt

    names = [n for n in samples if samples[n]]
    cols = max(len(samples[n]) for n in names)
    fig, axes = plt.subplots(len(names), cols, figsize=(3.2 * cols, 3.6 * len(names) + 0.4),
                             squeeze=False)
    per_row = max(1, int(math.ceil(math.sqrt(config.aevb.num_sample_images))))
    for r, name in enumerate(names):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(samples[name]):
                ax.axis("off")
                continue
            latent = list(samples[name])[c]
            ax.imshow(_tile(samples[name][latent], datasets[name].image_shape, per_row), **GREY)
            ax.set_title(f"({'abcdefgh'[c]}) {latent}-D latent space", fontsize=8)
        axes[r, 0].set_ylabel(panels[name].label, fontsize=8)
    fig.suptitle("Figure 5 (Kingma & Welling 2013): random samples from AEVB models, decoder "
                 "means E[x|z] at z ~ N(0, I)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- report


def report_section(summary: dict, config) -> str:
    lines = ["![figure 2: lower bound against training samples](aevb_fig2.png)", ""]
    for name, info in summary["panels"].items():
        methods = summary["final"].get(name, {})
        lines += [
            f"**{info['label']}** ({info['dataset']}, {info['likelihood']} decoder, "
            f"{info['hidden']} hidden units, {info['num_train']} train / {info['num_test']} "
            f"test, data transform: {info['transform'] or 'none'}): bounds per datapoint in "
            f"nats after {info['total_samples']:,} training samples (step size chosen "
            f"after {info['select_samples']:,}).", ""]
        header = ["Nz", "AEVB train", "AEVB test", "AEVB step size"]
        if "wake_sleep" in methods:
            header += ["WS train", "WS test", "WS step size", "AEVB - WS (test)"]
        table = []
        for latent in sorted(methods.get("aevb", {}), key=int):
            ae = methods["aevb"][latent]
            row = [latent, ae["train"], ae["test"], ae["learning_rate"]]
            if "wake_sleep" in methods:
                ws = methods["wake_sleep"].get(latent)
                row += ([ws["train"], ws["test"], ws["learning_rate"], ae["test"] - ws["test"]]
                        if ws else ["-"] * 4)
            table.append(row)
        lines += [common.markdown_table(header, table), ""]
    gaps = summary["aevb_beats_wake_sleep"]
    if gaps:
        test_gaps = [g["test_gap"] for g in gaps.values()]
        lines += [f"AEVB ends above wake-sleep on the test bound for "
                  f"**{sum(g > 0 for g in test_gaps)} of {len(gaps)}** (data set, Nz) pairs "
                  f"(test gap from {min(test_gaps):+.1f} to {max(test_gaps):+.1f} nats).", ""]
    if summary["fig3"]:
        f3 = summary["fig3"]
        lines += [
            "![figure 3: marginal likelihood](aevb_fig3.png)", "",
            f"Figure 3: Nz = {config.aevb.fig3_latent}, {config.aevb.fig3_hidden} hidden units, "
            f"{f3['total_samples']:,} training samples; log p(x) estimated by the IWAE bound "
            f"with K = {f3['iwae_samples']} on {f3['iwae_examples']} train and test examples "
            "(the paper used an HMC-based estimator).", ""]
        table = [[METHOD_LABELS[method], n, v["train_iwae"], v["test_iwae"], v["train_bound"],
                  v["test_bound"]] for method, per_n in f3["final"].items()
                 for n, v in sorted(per_n.items(), key=lambda kv: int(kv[0]))]
        lines += [common.markdown_table(["method", "N_train", "train log p(x)", "test log p(x)",
                                         "train ELBO", "test ELBO"], table), ""]
    lines += ["![figure 4: learned 2-D manifolds](aevb_fig4.png)", "",
              "![figure 5: random samples](aevb_fig5.png)", "",
              f"Wall time {summary['wall_seconds']:.1f} s; training "
              f"{summary['training_samples']:,} samples in {summary['train_seconds']:.1f} s = "
              f"{summary['samples_per_second']:,.0f} samples/s on {summary['devices']} "
              f"{summary['platform']} device(s). Every plotted number is in `aevb_fig2.csv` ... "
              "`aevb_fig5.csv`; the final numbers in `aevb.json`."]
    return "\n".join(lines)

