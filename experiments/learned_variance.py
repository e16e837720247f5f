"""Experiment: the learned-variance trap. A per-pixel sigma collapses where the data are constant.

A Gaussian decoder with a learned per-pixel log-sigma head (AEVB appendix C.2) earns
``-log sigma_i - 1/2 log(2 pi) - r_i^2 / (2 sigma_i^2)`` nats on pixel i. Where a pixel
is (almost) always 0, as in the border columns of the digits, the mean head predicts it
exactly and the optimum is sigma_i -> 0: the density is unbounded, each such pixel adds
more positive nats the longer training runs, and only the optimiser's noise stops it.
The ELBO then ranks models by how well they predict blank pixels.

Four VAEs are trained, one engine run each (different decoder heads cannot share one
population): ``gaussian_per_pixel``, the same head with sigma floored at ``min_sigma``
(the fix: the head's ``model.min_sigma`` option), ``gaussian_shared`` (one learned sigma)
and ``gaussian_optimal`` (sigma* = sqrt(batch MSE)). For each we map the mean predicted
sigma and the mean test log-density of every pixel.

    python -m experiments.learned_variance --workdir=results/lv [--config.train.num_epochs=200]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.common import style_axes
from experiments.configs.learned_variance import GROUP
from vaejax import heads
from vaejax import trainer as trainer_lib
from vaejax.config import validate_group
from vaejax.elbo import reparameterize
from vaejax.likelihoods import (
    gaussian_log_likelihood,
    gaussian_log_likelihood_from_log_sigma,
    optimal_sigma,
)
from vaejax.models import VAE

# (name, decoder likelihood, sigma floored at lv.min_sigma)
MODELS = (
    ("per_pixel", "gaussian_per_pixel", False),
    ("per_pixel_floored", "gaussian_per_pixel", True),
    ("shared", "gaussian_shared", False),
    ("optimal", "gaussian_optimal", False),
)
MODEL_COLORS = {"per_pixel": "C3", "per_pixel_floored": "C0", "shared": "C2", "optimal": "C1"}
_PER_PIXEL = ("per_pixel", "per_pixel_floored")  # the models whose sigma varies per pixel
_STD_FLOOR = 1e-3  # pixels with zero training-set std are drawn here on log axes
_EVAL_KEY = 0x5EED  # one posterior sample per test image for the per-pixel maps
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_DIP_NATS = 10.0  # a test-ELBO drop larger than this between evaluations counts as a dip
_RECENT_EPOCHS = 10  # "still improving": the test-ELBO gain over the last epochs
# Columns of learned_variance_models.csv after "model" and "likelihood" (summary keys).
_MODEL_COLUMNS = ("test_elbo", "test_recon", "test_kl", "train_elbo", "min_sigma",
                  "median_sigma", "num_collapsed_pixels", "log_density_near_constant_pixels",
                  "log_density_other_pixels", "train_seconds")


def model_label(name: str, min_sigma: float) -> str:
    return {"per_pixel": "per-pixel sigma (learned)",
            "per_pixel_floored": f"per-pixel sigma >= {min_sigma:g}",
            "shared": "shared sigma (learned)",
            "optimal": "optimal sigma* = sqrt(MSE)"}[name]


def pixel_statistics(model: VAE, likelihood: str, params, x: jax.Array, key: jax.Array) -> dict:
    """Per-pixel sigma and log-density at one posterior sample z ~ q(z|x) per example (key).

    ``x`` is [N, D] data, ``params`` one member's parameters of ``model`` (decoder head
    ``likelihood``). Returns ``sigma`` [D] (mean over examples of the predicted sigma),
    ``log_density`` [D] (mean over examples of log N(x_i; mu_i, sigma_i^2), nats),
    ``recon`` [] (the mean over examples of log p(x|z) from the head
    (:mod:`vaejax.heads`), which the per-pixel map must sum to) and ``optimal_sigma`` []
    (sqrt of the MSE of these reconstructions: the best single sigma for them).
    """
    mean, log_var = model.apply(params, x, method=VAE.encode)
    z = reparameterize(key, mean, log_var)
    outputs = model.apply(params, z, method=VAE.decode)
    if likelihood == "gaussian_optimal":
        sigma = optimal_sigma(x, outputs["mean"], axis="batch")  # what the loss uses
        log_density = gaussian_log_likelihood(x, outputs["mean"], sigma, event_ndims=0)
        sigma = jnp.broadcast_to(sigma, x.shape)
    else:
        log_density = gaussian_log_likelihood_from_log_sigma(
            x, outputs["mean"], outputs["log_sigma"], event_ndims=0)  # [N, D]: per pixel
        sigma = jnp.broadcast_to(jnp.exp(outputs["log_sigma"]), x.shape)
    recon = heads.log_likelihood(likelihood, x, outputs)
    return {"sigma": jnp.mean(sigma, axis=0), "log_density": jnp.mean(log_density, axis=0),
            "recon": jnp.mean(recon),
            "optimal_sigma": optimal_sigma(x, outputs["mean"], axis="batch")}


def _decay_epoch(config) -> int:
    """The epoch of the (first) learning-rate drop; past the end when there is none."""
    epochs = tuple(config.train.decay_epochs)
    return int(epochs[0]) if epochs else config.train.num_epochs


def shared_sigma_start(train: np.ndarray) -> float:
    """log sqrt(mean_d Var(x_d)): the best shared sigma for a decoder that ignores z."""
    return float(np.log(np.sqrt(np.mean(np.var(np.asarray(train, np.float64), axis=0)))))


def _train_model(name: str, likelihood: str, floored: bool, config, dataset, workdir) -> dict:
    """One engine run; returns final metrics, pixel maps and the training curve."""
    lv = config.learned_variance
    model_config = config.copy_and_resolve_references()
    model_config.model.likelihood = likelihood
    model_config.model.min_sigma = lv.min_sigma if floored else 0.0
    if likelihood == "gaussian_shared":
        # Start at the optimum of a model that ignores z, sqrt(mean pixel variance), so
        # that Adam (which moves log sigma by about the rate per step) need not walk from 0.
        model_config.model.init_log_sigma = shared_sigma_start(dataset.train)
    trainer, members = trainer_lib.build(model_config, dataset)
    # One compiled evaluation: the engine's test metrics and the per-pixel maps together.
    evaluate = jax.jit(lambda s, x: (
        trainer.evaluate(s, x, members),
        pixel_statistics(trainer.model, likelihood, common.first_member(s.params), x,
                         jax.random.key(_EVAL_KEY))))
    test_data = jnp.asarray(dataset.test)
    # Same shape as the test set, so the compiled evaluation is reused for the train ELBO.
    train_subset = jnp.asarray(dataset.train)[: test_data.shape[0]]

    def curve_point(ctx):
        evals, stats = common.host(evaluate(ctx.state, test_data))
        return [{"epoch": int(ctx.epoch), "test_elbo": float(evals.elbo[0]),
                 "min_sigma": float(stats["sigma"].min()),
                 "median_sigma": float(np.median(stats["sigma"]))}]

    every_steps = lv.eval_every_epochs * trainer.steps_per_epoch(dataset.train.shape[0])
    tic = time.perf_counter()
    result = common.train(model_config, dataset, workdir, f"learned_variance/{name}",
                          trainer=trainer, members=members,
                          hooks=[trainer_lib.Hook(curve_point, every_steps=every_steps)])
    seconds = time.perf_counter() - tic
    test_metrics, test_stats = common.host(evaluate(result.state, test_data))
    train_metrics, _ = common.host(evaluate(result.state, train_subset))
    first = lambda tree: jax.tree.map(lambda a: float(a[0]), tree)  # noqa: E731
    return {"test": first(test_metrics), "train": first(train_metrics), "stats": test_stats,
            "curve": result.history, "seconds": seconds}


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains the four models; writes figures, CSVs, JSON and a report section."""
    lv = config.learned_variance
    workdir = common.prepare_workdir(workdir)
    validate_group(config, "learned_variance", GROUP)
    dataset = common.load_data(config)
    results = {name: _train_model(name, likelihood, floored, config, dataset, workdir)
               for name, likelihood, floored in MODELS if not (floored and lv.min_sigma == 0)}

    train = dataset.train
    data_std = train.std(axis=0).astype(np.float64)  # [D]
    data_mean = train.mean(axis=0).astype(np.float64)
    always_zero = train.max(axis=0) == 0  # [D]
    near_constant = data_std < lv.near_constant_std
    summary = _summarise(config, dataset, results, data_std, always_zero, near_constant)

    names, width = list(results), dataset.image_shape[1]
    common.write_csv(
        workdir / "learned_variance_pixels.csv",
        ["pixel", "row", "col", "train_mean", "train_std", "train_fraction_zero", "always_zero",
         "near_constant", *(f"sigma_{n}" for n in names),
         *(f"test_log_density_{n}" for n in names)],
        [[i, i // width, i % width, float(data_mean[i]), float(data_std[i]),
          float(np.mean(train[:, i] == 0)), int(always_zero[i]), int(near_constant[i]),
          *(float(results[n]["stats"][key][i]) for key in ("sigma", "log_density") for n in names)]
         for i in range(dataset.num_dims)])
    models = summary["models"]
    common.write_csv(workdir / "learned_variance_models.csv",
                     ["model", "likelihood", *_MODEL_COLUMNS],
                     [[n, models[n]["likelihood"], *(models[n][k] for k in _MODEL_COLUMNS)]
                      for n in names])
    common.write_csv(workdir / "learned_variance_training.csv",
                     ["model", "epoch", "test_elbo", "min_sigma", "median_sigma"],
                     [[n, p["epoch"], p["test_elbo"], p["min_sigma"], p["median_sigma"]]
                      for n in names for p in results[n]["curve"]])
    common.write_json(workdir / "learned_variance.json", summary)
    common.save_config(config, workdir / "learned_variance_config.json")
    stem = workdir / "learned_variance"
    common.save_figure(sigma_figure(results, data_std, always_zero, dataset.image_shape, config),
                       f"{stem}_sigma")
    common.save_figure(log_density_figure(results, always_zero, dataset.image_shape, config),
                       f"{stem}_log_density")
    common.save_figure(training_figure(results, config), f"{stem}_training")
    summary["report"] = _report_section(summary, config)
    return summary


def _summarise(config, dataset, results, data_std, always_zero, near_constant) -> dict:
    lv = config.learned_variance
    summary = {"num_dims": dataset.num_dims, "num_test": int(dataset.test.shape[0]),
               "num_epochs": config.train.num_epochs, "min_sigma_floor": lv.min_sigma,
               "collapsed_sigma": lv.collapsed_sigma,
               "near_constant_std": lv.near_constant_std,
               "always_zero_pixels": np.flatnonzero(always_zero).tolist(),
               "near_constant_pixels": np.flatnonzero(near_constant).tolist(),
               "shared_init_sigma": float(np.exp(shared_sigma_start(dataset.train))),
               "models": {}}
    likelihoods = {name: likelihood for name, likelihood, _ in MODELS}
    for name, r in results.items():
        sigma, log_density = r["stats"]["sigma"], r["stats"]["log_density"]
        collapsed = sigma < lv.collapsed_sigma
        elbos = np.array([p["test_elbo"] for p in r["curve"]])
        epochs = np.array([p["epoch"] for p in r["curve"]])
        earlier = elbos[epochs <= epochs[-1] - _RECENT_EPOCHS]
        summary["models"][name] = {
            "likelihood": likelihoods[name],
            "test_elbo": r["test"].elbo, "test_recon": r["test"].recon, "test_kl": r["test"].kl,
            "train_elbo": r["train"].elbo, "active_units": int(r["test"].active_units),
            "min_sigma": float(sigma.min()), "median_sigma": float(np.median(sigma)),
            "max_sigma": float(sigma.max()),
            "optimal_sigma_of_own_reconstructions": float(r["stats"]["optimal_sigma"]),
            "mean_sigma_always_zero_pixels": float(sigma[always_zero].mean()),
            "num_collapsed_pixels": int(collapsed.sum()),
            "collapsed_pixels": np.flatnonzero(collapsed).tolist(),
            # The map sums to the recon of its own posterior sample (a consistency check).
            "recon_from_pixel_map": float(log_density.sum()),
            "recon_of_map_sample": float(r["stats"]["recon"]),
            "log_density_near_constant_pixels": float(log_density[near_constant].sum()),
            "log_density_other_pixels": float(log_density[~near_constant].sum()),
            "log_density_collapsed_pixels": float(log_density[collapsed].sum()),
            "train_seconds": r["seconds"],
            # Instability: evaluations whose test ELBO fell by > _DIP_NATS since the last one.
            "num_elbo_dips": int(np.sum(np.diff(elbos) < -_DIP_NATS)),
            "worst_elbo_dip": float(min(0.0, np.diff(elbos).min(initial=0.0))),
            "test_elbo_gain_recent_epochs": (float(elbos[-1] - earlier[-1]) if earlier.size
                                             else float("nan")),
        }
        summary[f"{name}_test_elbo"] = r["test"].elbo
    per_pixel, optimal = summary["models"]["per_pixel"], summary["models"]["optimal"]
    for key, model_key in (("min_sigma", "min_sigma"), ("median_sigma", "median_sigma"),
                           ("num_collapsed", "num_collapsed_pixels"),
                           ("sigma_always_zero", "mean_sigma_always_zero_pixels")):
        summary[f"per_pixel_{key}"] = per_pixel[model_key]
    summary["num_near_constant_pixels"] = int(near_constant.sum())
    summary["per_pixel_recon_lead_over_optimal"] = (
        per_pixel["recon_from_pixel_map"] - optimal["recon_from_pixel_map"])
    summary["per_pixel_recon_lead_over_optimal_near_constant"] = (
        per_pixel["log_density_near_constant_pixels"] - optimal["log_density_near_constant_pixels"])
    if lv.min_sigma > 0:  # the most one pixel can earn when sigma >= min_sigma
        summary["floor_cap_nats_per_pixel"] = -math.log(lv.min_sigma) - _HALF_LOG_2PI
    summary["correlation_log_sigma_log_std"] = float(np.corrcoef(
        np.log(results["per_pixel"]["stats"]["sigma"]),
        np.log(np.maximum(data_std, _STD_FLOOR)))[0, 1])
    return summary


# --------------------------------------------------------------------------- figures


def _pixel_map(ax, values, image_shape, *, norm, cmap, title, marks=None, fmt="{:.2g}"):
    image = np.asarray(values, dtype=np.float64).reshape(image_shape)
    im = ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest")
    for (r, c), v in np.ndenumerate(image):
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=5.5,
                color="white" if norm(v) < 0.35 or norm(v) > 0.85 else "black")
    if marks is not None:
        rows, cols = np.nonzero(np.asarray(marks).reshape(image_shape))
        ax.scatter(cols, rows - 0.32, marker="v", s=10, color="magenta",
                   label="always 0 in the training set")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return im


def sigma_figure(results, data_std, always_zero, image_shape, config):
    """Map of the per-pixel model's sigma, map of the data std, scatter of one against the other."""
    lv = config.learned_variance
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.3]},
                             layout="constrained")
    sigma = results["per_pixel"]["stats"]["sigma"]
    shown_std = np.maximum(data_std, _STD_FLOOR)
    norm = mcolors.LogNorm(vmin=min(sigma.min(), shown_std.min()),
                           vmax=max(sigma.max(), shown_std.max()))
    num_collapsed = int(np.sum(sigma < lv.collapsed_sigma))
    im = _pixel_map(axes[0], sigma, image_shape, norm=norm, cmap="viridis", marks=always_zero,
                    title=f"per-pixel model: mean predicted sigma (test set)\nmin {sigma.min():.2g}"
                          f", median {np.median(sigma):.2g}, {num_collapsed} pixels < "
                          f"{lv.collapsed_sigma:g}")
    axes[0].legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    _pixel_map(axes[1], shown_std, image_shape, norm=norm, cmap="viridis", marks=always_zero,
               title=f"training-set std of each pixel\n(std 0 shown as {_STD_FLOOR:g})")
    fig.colorbar(im, ax=axes[:2].tolist(), fraction=0.025, pad=0.02,
                 label="sigma / std (log scale)")

    ax = axes[2]
    for name, r in results.items():
        label, model_sigma = model_label(name, lv.min_sigma), r["stats"]["sigma"]
        if name in _PER_PIXEL:
            ax.loglog(shown_std, model_sigma, "o", ms=4, mfc="none", color=MODEL_COLORS[name],
                      label=label)
        else:
            ax.axhline(float(model_sigma[0]), color=MODEL_COLORS[name], lw=1.2,
                       label=f"{label}: {float(model_sigma[0]):.3g}")
    ax.loglog(shown_std[always_zero], sigma[always_zero], "v", ms=6, color="magenta",
              label="always-0 pixels (per-pixel model)")
    grid = np.array([_STD_FLOOR, shown_std.max()])
    ax.loglog(grid, grid, ":", color="gray", lw=1, label="sigma = pixel std")
    ax.axhline(lv.collapsed_sigma, color="black", lw=0.6, ls="--",
               label=f"collapsed: sigma < {lv.collapsed_sigma:g}")
    ax.set_title("learned sigma against the pixel's spread", fontsize=9)
    style_axes(ax, f"training-set std of the pixel (0 shown at {_STD_FLOOR:g})",
               "mean predicted sigma on the test set", legend=6.5, grid="both", loc="lower right")
    fig.suptitle(f"The learned-variance trap on {config.data.dataset}: a per-pixel sigma collapses "
                 f"where the pixel never varies ({config.train.num_epochs} epochs)", fontsize=11)
    return fig


def log_density_figure(results, always_zero, image_shape, config):
    """Maps of the mean test log-density per pixel (nats), one per model, one colour scale."""
    lv = config.learned_variance
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results) + 1, 4.2),
                             squeeze=False, layout="constrained")
    bound = float(np.abs(np.stack([r["stats"]["log_density"] for r in results.values()])).max())
    norm = mcolors.TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    for ax, (name, r) in zip(axes[0], results.items(), strict=True):
        total = float(r["stats"]["log_density"].sum())
        im = _pixel_map(ax, r["stats"]["log_density"], image_shape, norm=norm, cmap="RdBu_r",
                        marks=always_zero, fmt="{:.1f}",
                        title=f"{model_label(name, lv.min_sigma)}\nsum {total:.1f} nats; "
                              f"test ELBO {r['test'].elbo:.1f}")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, pad=0.02,
                 label="mean test log N(x_i; mu_i, sigma_i^2), nats")
    fig.suptitle("Where the test log-likelihood comes from: mean log-density of each pixel "
                 "(one posterior sample per test image; triangles: always-0 pixels)", fontsize=10)
    return fig


def training_figure(results, config):
    """Test ELBO and the per-pixel sigma's min/median against epoch, per model."""
    lv = config.learned_variance
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, r in results.items():
        epochs = [p["epoch"] for p in r["curve"]]
        label, color = model_label(name, lv.min_sigma), MODEL_COLORS[name]
        axes[0].plot(epochs, [p["test_elbo"] for p in r["curve"]], "-o", ms=2.5, color=color,
                     label=label)
        if name in _PER_PIXEL:
            for key, style in (("min", "-"), ("median", "--")):
                axes[1].semilogy(epochs, [p[f"{key}_sigma"] for p in r["curve"]], style,
                                 color=color, label=f"{label}: {key} over pixels")
    decay = _decay_epoch(config)
    for ax, ylabel, title in (
            (axes[0], "test ELBO (nats per image)", "test ELBO during training"),
            (axes[1], "mean predicted sigma (test set)",
             f"per-pixel sigma; dotted line: Adam rate x {config.train.decay_factor:g}")):
        if config.train.decay_factor != 1 and decay < config.train.num_epochs:
            ax.axvline(decay, color="gray", lw=0.8, ls=":")
        ax.set_title(title, fontsize=9)
        style_axes(ax, "epoch", ylabel, legend=7, grid="both")
    fig.tight_layout()
    return fig


def _report_section(summary: dict, config) -> str:
    lv = config.learned_variance
    models = summary["models"]
    table = common.markdown_table(
        ["decoder", "test ELBO", "test recon", "test KL",
         f"train ELBO (first {summary['num_test']} images)", "min sigma",
         "median sigma", f"pixels sigma < {lv.collapsed_sigma:g}",
         f"log-density, {summary['num_near_constant_pixels']} near-constant pixels",
         "log-density, other pixels"],
        [[model_label(n, lv.min_sigma), *(m[k] for k in _MODEL_COLUMNS[:-1])]
         for n, m in models.items()])
    pp, opt, shared = models["per_pixel"], models["optimal"], models["shared"]
    floored = ""
    if "per_pixel_floored" in models:
        fl = models["per_pixel_floored"]
        floored = f"""

**The fix.** Flooring sigma at {lv.min_sigma:g} (about the std of the data's 1/16
quantisation step) caps what a pixel can earn at -log({lv.min_sigma:g}) - 1/2 log(2 pi)
= {summary['floor_cap_nats_per_pixel']:.2f} nats: {fl['num_collapsed_pixels']} pixels are
below {lv.collapsed_sigma:g}, the near-constant pixels give
{fl['log_density_near_constant_pixels']:.1f} nats (cap
{summary['num_near_constant_pixels'] * summary['floor_cap_nats_per_pixel']:.1f}), the test
ELBO is {fl['test_elbo']:.1f} and training is stable ({fl['num_elbo_dips']} dips). Any
floor is a modelling choice that the ELBO then reflects; dequantising the data (adding
uniform noise of one quantisation step, which makes the density bounded) is the
principled version of the same fix."""
    dips = ""
    if pp["num_elbo_dips"]:
        dips = (f" The collapse also makes training unstable: the per-pixel model's test ELBO "
                f"fell by more than {_DIP_NATS:g} nats between evaluations "
                f"{pp['num_elbo_dips']} times (worst {pp['worst_elbo_dip']:.1f} nats), each time "
                "sigma on the border jumped up and collapsed again (figure below), so a table "
                "number taken at a fixed epoch can land in a dip.")
    return f"""
![per-pixel sigma map and scatter](learned_variance_sigma.png)

With a learned per-pixel sigma, a pixel that never varies is predicted exactly and its
sigma has no lower bound. On the digits (D = {summary['num_dims']}),
{len(summary['always_zero_pixels'])} pixels are 0 in every training image and
{summary['num_near_constant_pixels']} have a training-set std below
{lv.near_constant_std:g}, all in the border columns. After {summary['num_epochs']}
epochs the per-pixel model's mean predicted sigma is
**{summary['per_pixel_sigma_always_zero']:.2g}** on the always-0 pixels and
**{summary['per_pixel_min_sigma']:.2g}** at its smallest, against a median of
{summary['per_pixel_median_sigma']:.2g}; **{summary['per_pixel_num_collapsed']}** pixels
are below {lv.collapsed_sigma:g} (figure above: the sigma map, left, mirrors the
data's std, middle; right, log sigma against log std, correlation
{summary['correlation_log_sigma_log_std']:.2f}).

![per-pixel test log-density](learned_variance_log_density.png)

Each collapsed pixel earns about -log sigma - 1/2 log(2 pi) nats of log-density on every
test image (figure above: mean test log-density of every pixel, nats). The per-pixel
model's test ELBO is **{pp['test_elbo']:.1f}** nats against
**{shared['test_elbo']:.1f}** (shared sigma) and **{opt['test_elbo']:.1f}** (optimal
sigma*). Of its reconstruction-term lead over the optimal-sigma model,
{summary['per_pixel_recon_lead_over_optimal']:.1f} nats,
**{summary['per_pixel_recon_lead_over_optimal_near_constant']:.1f}** come from the
{summary['num_near_constant_pixels']} near-constant pixels
({summary['num_near_constant_pixels'] / summary['num_dims']:.0%} of the image), which carry
almost no information; the rest is the legitimate gain of a sigma that varies with the
pixel.{dips}{floored}

![training curves](learned_variance_training.png)

Left: test ELBO during training; right: the smallest and the median per-pixel sigma.
The collapse is held back only by the optimiser's noise: when the Adam rate is divided
by {1 / config.train.decay_factor:g} at epoch {_decay_epoch(config)} (every model alike) the
per-pixel sigma drops further (to {pp['min_sigma']:.2g}) and the per-pixel model's test
ELBO climbs, {pp['test_elbo_gain_recent_epochs']:+.1f} nats in the last {_RECENT_EPOCHS}
epochs. The shared-sigma model starts at sigma = {summary['shared_init_sigma']:.3g} (the
optimum of a model that ignores z) and ends at {shared['min_sigma']:.3g}, against sqrt(MSE) of
its own test reconstructions, {shared['optimal_sigma_of_own_reconstructions']:.3g} (the best
single sigma for them; {shared['test_elbo_gain_recent_epochs']:+.1f} nats of test ELBO in the
last {_RECENT_EPOCHS} epochs).

{table}

Log-densities are means over the {summary['num_test']} test images of one posterior
sample each (the maps sum to that sample's reconstruction term); ELBOs are the Trainer's
test evaluation. Per-pixel numbers: `learned_variance_pixels.csv`; per model:
`learned_variance_models.csv`; curves: `learned_variance_training.csv`.
"""


if __name__ == "__main__":
    common.cli_main("learned_variance", run)
