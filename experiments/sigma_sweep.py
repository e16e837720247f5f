"""Experiment: sweeping the decoder sigma by population training, against a learned sigma.

A Gaussian-decoder VAE with fixed sigma trains "SSE + 2 sigma^2 KL", i.e. MSE with a KL
weight set by sigma. A log grid of sigma values is trained as ONE population (one
vmapped, jitted step for every member, on the same batches); a second model learns one
shared sigma. Per sigma the test ELBO (nats), KL, active units and the MSE at the
posterior mean are measured, and three estimates of the best sigma are compared:

* the sigma where the test ELBO peaks over the grid;
* the fixed point sigma = sqrt(E_q MSE(sigma)), where E_q MSE is the expected squared
  error under q(z|x) that the ELBO sees: the maximiser of the ELBO over sigma for a
  given model is sigma*^2 = E_q MSE (``vaejax.likelihoods.optimal_sigma``), so at the
  peak of max_theta ELBO(theta, sigma) the two coincide (envelope theorem);
* the learned shared sigma, exp(log_sigma) of the ``gaussian_shared`` model.

Large sigma makes the KL term dominate: the posterior collapses (KL -> 0, no active
units) and every reconstruction becomes the mean digit.

    python -m experiments.sigma_sweep --workdir=results/sigma [--config.sigma_sweep.num_sigmas=32]
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.configs.sigma_sweep import GROUP
from vaejax import plotting
from vaejax import trainer as trainer_lib
from vaejax.config import validate_group
from vaejax.data import Dataset
from vaejax.likelihoods import mse, optimal_sigma

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_KL_FLOOR = 1e-3  # KL values below this are drawn at the floor of the log axis


def sigma_grid(exp: ml_collections.ConfigDict) -> np.ndarray:
    """The swept sigmas: [num_sigmas] log-spaced in [sigma_min, sigma_max]."""
    if not exp.sigma_min < exp.sigma_max:
        raise ValueError(f"config needs sigma_sweep.sigma_min < sigma_sweep.sigma_max, got "
                         f"{exp.sigma_min} and {exp.sigma_max}.")
    return np.logspace(math.log10(exp.sigma_min), math.log10(exp.sigma_max), exp.num_sigmas)


def _model_config(config: ml_collections.ConfigDict, likelihood: str, sigmas=None,
                  init_log_sigma: float = 0.0) -> ml_collections.ConfigDict:
    model = config.copy_and_resolve_references()
    model.model.likelihood = likelihood
    model.model.init_log_sigma = init_log_sigma
    model.population.sigma = None if sigmas is None else tuple(float(s) for s in sigmas)
    return model


def _expected_mse(recon: np.ndarray, sigma: np.ndarray, num_dims: int) -> np.ndarray:
    """E_q MSE from the Gaussian recon term: recon = -D/2 log 2pi - D log sigma - D MSE/(2s^2)."""
    return -2.0 * sigma**2 * (recon + num_dims * (_HALF_LOG_2PI + np.log(sigma))) / num_dims


def _measure(config, result, trainer, members, dataset: Dataset, sigma: np.ndarray,
             image_key) -> dict:
    """Per-member test metrics, each [P], plus image rows."""
    test, state = jnp.asarray(dataset.test), result.state
    evals = common.host(trainer.jit.evaluate(state, test, members))
    recons = np.asarray(trainer.jit.reconstruct(state, test, members))  # [P, N, D]
    mse_mean = np.asarray(jnp.mean(mse(jnp.broadcast_to(test, recons.shape), recons,
                                       event_ndims=1), axis=-1))
    num = config.sigma_sweep.num_images
    z = jax.random.normal(image_key, (num, config.model.latent))
    samples = np.asarray(trainer.jit.decode_means(state, z, members))
    return {
        "elbo": evals.elbo, "recon": evals.recon, "kl": evals.kl,
        "active_units": evals.active_units,
        "mse_posterior_mean": mse_mean,
        "expected_mse": _expected_mse(evals.recon, sigma, dataset.num_dims),
        "recon_images": recons[:, :num], "sample_images": samples,
    }


def fixed_point(sigmas: np.ndarray, expected_mse: np.ndarray) -> float:
    """First sigma where sqrt(E_q MSE(sigma)) crosses sigma from above (log interpolation)."""
    gap = np.log(expected_mse) - 2.0 * np.log(sigmas)  # > 0 while sigma < sqrt(MSE)
    for i in range(len(sigmas) - 1):
        if gap[i] > 0 >= gap[i + 1]:
            t = gap[i] / (gap[i] - gap[i + 1])
            return float(np.exp((1 - t) * np.log(sigmas[i]) + t * np.log(sigmas[i + 1])))
    return float("nan")


def _refined_peak(sigmas: np.ndarray, elbo: np.ndarray) -> float:
    """Vertex of the parabola through the grid maximum and its neighbours, in log sigma."""
    i = int(np.argmax(elbo))
    if i == 0 or i == len(sigmas) - 1:
        return float(sigmas[i])
    x = np.log(sigmas[i - 1:i + 2])
    a, b, _ = np.polyfit(x, elbo[i - 1:i + 2], 2)
    return float(np.exp(np.clip(-b / (2 * a), x[0], x[-1]))) if a < 0 else float(sigmas[i])


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains the sweep and the learned-sigma model; writes figures, CSV, JSON to ``workdir``."""
    workdir = common.prepare_workdir(workdir)
    exp = validate_group(config, "sigma_sweep", GROUP)
    sigmas = sigma_grid(exp)
    dataset = common.load_data(config)
    num_dims = dataset.num_dims
    image_key = jax.random.key(config.seed + 1)

    sweep_config = _model_config(config, "gaussian_fixed", sigmas)
    trainer, members = trainer_lib.build(sweep_config, dataset)
    result = common.train(sweep_config, dataset, workdir, "sigma_sweep/fixed", trainer=trainer,
                          members=members)
    sweep = _measure(config, result, trainer, members, dataset,
                     np.asarray(members.sigma, np.float64), image_key)

    # The learned sigma starts at the optimum of a model that ignores z (the mean image):
    # Adam moves log sigma by about the learning rate per step, so from the library's
    # sigma = 1 it would still be descending after a CPU-sized run.
    train_mean = dataset.train.mean(axis=0, keepdims=True)
    init_sigma = float(optimal_sigma(dataset.train, np.broadcast_to(train_mean,
                                                                    dataset.train.shape),
                                     axis="batch"))
    learned_config = _model_config(config, "gaussian_shared", None, math.log(init_sigma))
    l_trainer, l_members = trainer_lib.build(learned_config, dataset)
    l_result = common.train(learned_config, dataset, workdir, "sigma_sweep/learned",
                            trainer=l_trainer, members=l_members)
    learned_sigma = np.exp(np.asarray(l_result.state.params["params"]["decoder"]["log_sigma"],
                                      np.float64))  # [1]
    learned = _measure(config, l_result, l_trainer, l_members, dataset, learned_sigma,
                       image_key)
    train_recon = np.asarray(l_trainer.jit.evaluate(
        l_result.state, jnp.asarray(dataset.train), l_members).recon)
    learned_train_rmse = float(np.sqrt(_expected_mse(train_recon, learned_sigma, num_dims))[0])

    peak = int(np.argmax(sweep["elbo"]))
    active = np.flatnonzero(sweep["active_units"] >= 1)
    summary = {
        "dataset": dataset.name, "num_dims": num_dims, "num_sigmas": len(sigmas),
        "population": members.size, "epochs": config.train.num_epochs,
        "sigma_min": float(sigmas[0]), "sigma_max": float(sigmas[-1]),
        "sigma_elbo_peak": float(sigmas[peak]),
        "sigma_elbo_peak_refined": _refined_peak(sigmas, sweep["elbo"]),
        "elbo_at_peak": float(sweep["elbo"][peak]), "kl_at_peak": float(sweep["kl"][peak]),
        "sqrt_mse_at_peak": float(np.sqrt(sweep["mse_posterior_mean"][peak])),
        "sqrt_expected_mse_at_peak": float(np.sqrt(sweep["expected_mse"][peak])),
        "sigma_fixed_point": fixed_point(sigmas, sweep["expected_mse"]),
        "sigma_fixed_point_posterior_mean": fixed_point(sigmas, sweep["mse_posterior_mean"]),
        "learned_sigma": float(learned_sigma[0]), "learned_init_sigma": init_sigma,
        "learned_elbo": float(learned["elbo"][0]), "learned_kl": float(learned["kl"][0]),
        "learned_active_units": int(learned["active_units"][0]),
        "learned_sqrt_mse": float(np.sqrt(learned["mse_posterior_mean"][0])),
        "learned_sqrt_expected_mse_test": float(np.sqrt(learned["expected_mse"][0])),
        "learned_sqrt_expected_mse_train": learned_train_rmse,
        "largest_sigma_with_active_unit": float(sigmas[active[-1]]) if active.size else None,
        "latent": config.model.latent,
    }
    for end, i in (("smallest", 0), ("largest", -1)):
        summary[f"kl_{end}_sigma"] = float(sweep["kl"][i])
        summary[f"active_units_{end}_sigma"] = int(sweep["active_units"][i])

    columns = ["model", "sigma", "test_elbo", "test_recon", "test_kl", "active_units",
               "mse_posterior_mean", "expected_mse_q", "sqrt_mse_posterior_mean",
               "sqrt_expected_mse_q"]

    def row(model, sigma, m, i):
        return [model, float(sigma), float(m["elbo"][i]), float(m["recon"][i]),
                float(m["kl"][i]), int(m["active_units"][i]), float(m["mse_posterior_mean"][i]),
                float(m["expected_mse"][i]), float(np.sqrt(m["mse_posterior_mean"][i])),
                float(np.sqrt(m["expected_mse"][i]))]

    rows = [row("fixed", s, sweep, i) for i, s in enumerate(sigmas)]
    rows.append(row("learned", learned_sigma[0], learned, 0))
    common.write_csv(workdir / "sigma_sweep.csv", columns, rows)

    fig = sweep_figure(sigmas, sweep, summary,
                       title=f"fixed-sigma Gaussian VAEs on {dataset.name} (D = {num_dims}): "
                             f"{len(sigmas)} sigmas trained as one population, "
                             f"{config.train.num_epochs} epochs")
    common.save_figure(fig, workdir / "sigma_sweep")
    shown = image_sigma_indices(len(sigmas), exp.num_image_sigmas, peak)
    summary["image_sigmas"] = [float(sigmas[i]) for i in shown]
    fig = images_figure(dataset, sigmas, shown, sweep, learned, summary["learned_sigma"])
    common.save_figure(fig, workdir / "sigma_sweep_images")
    common.write_json(workdir / "sigma_sweep.json", summary)
    common.save_config(config, workdir / "sigma_sweep_config.json")
    summary["report"] = _report_section(summary, rows, shown)
    return summary


def image_sigma_indices(num_sigmas: int, num_rows: int, peak: int) -> list[int]:
    """Up to ``num_rows`` grid indices, log-evenly spread, with the ELBO peak among them."""
    chosen = np.unique(np.round(np.linspace(0, num_sigmas - 1, max(num_rows, 2))).astype(int))
    if peak not in chosen:
        chosen[np.argmin(np.abs(chosen - peak))] = peak
    return sorted(set(int(i) for i in chosen))


# ---------------------------------------------------------------------------- figures


def _mark_sigmas(ax, summary: dict, collapse_from: float | None, sigma_max: float) -> None:
    ax.axvline(summary["sigma_elbo_peak"], color="C3", lw=1.2,
               label=f"ELBO peak sigma = {summary['sigma_elbo_peak']:.3g}")
    ax.axvline(summary["sigma_fixed_point"], color="black", ls="--", lw=1.0,
               label=f"fixed point sigma = sqrt(E_q MSE) = {summary['sigma_fixed_point']:.3g}")
    ax.axvline(summary["learned_sigma"], color="C2", ls=":", lw=1.8,
               label=f"learned sigma = {summary['learned_sigma']:.3g}")
    if collapse_from is not None and collapse_from < sigma_max:
        ax.axvspan(collapse_from, sigma_max, color="gray", alpha=0.15, lw=0,
                   label="posterior collapsed (0 active units)")


def sweep_figure(sigmas: np.ndarray, sweep: dict, summary: dict, *, title: str = ""):
    """Four panels against sigma: test ELBO, MSE with the sigma^2 line, KL, active units."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    largest = summary["largest_sigma_with_active_unit"]
    collapsed = sigmas[sigmas > largest] if largest is not None else sigmas
    collapse_from = float(collapsed[0]) if collapsed.size else None
    learned = dict(marker="*", ms=14, color="C2", ls="none", mec="black", mew=0.6)

    def finish(ax, ylabel, title):
        _mark_sigmas(ax, summary, collapse_from, float(sigmas[-1]))
        common.style_axes(ax, r"decoder $\sigma$ (fixed per member)", ylabel, title, legend=7,
                          grid="both")

    ax = axes[0, 0]
    ax.semilogx(sigmas, sweep["elbo"], "o-", color="C0", ms=4, label="fixed sigma (population)")
    ax.plot(summary["learned_sigma"], summary["learned_elbo"], **learned,
            label=f"learned sigma: ELBO {summary['learned_elbo']:.1f}")
    ax.set_ylim(max(sweep["elbo"].min(), summary["elbo_at_peak"] - 250),
                summary["elbo_at_peak"] + 0.08 * (abs(summary["elbo_at_peak"]) + 30))
    finish(ax, "test ELBO (nats per image)", f"test ELBO peaks at sigma = "
           f"{summary['sigma_elbo_peak']:.3g} ({summary['elbo_at_peak']:.1f} nats)")

    ax = axes[0, 1]
    ax.loglog(sigmas, sweep["mse_posterior_mean"], "o-", color="C0", ms=4,
              label="MSE at the posterior mean z = E[z|x]")
    ax.loglog(sigmas, sweep["expected_mse"], "s-", color="C1", ms=4, mfc="none",
              label="E_q MSE (from the ELBO's recon term)")
    ax.loglog(sigmas, sigmas**2, "-", color="gray", lw=1, label=r"$\sigma^2$")
    ax.plot(summary["learned_sigma"], summary["learned_sqrt_expected_mse_test"] ** 2, **learned,
            label="learned-sigma model, E_q MSE")
    ax.set_ylim(0.5 * min(sweep["mse_posterior_mean"].min(), summary["learned_sqrt_mse"] ** 2),
                2.0 * max(sweep["expected_mse"].max(), sweep["mse_posterior_mean"].max()))
    finish(ax, "test MSE per pixel", r"fixed point: E_q MSE($\sigma$) = $\sigma^2$")

    ax = axes[1, 0]
    ax.loglog(sigmas, np.maximum(sweep["kl"], _KL_FLOOR), "o-", color="C4", ms=4,
              label="KL(q(z|x) || p(z))")
    ax.plot(summary["learned_sigma"], max(summary["learned_kl"], _KL_FLOOR), **learned,
            label="learned-sigma model")
    finish(ax, f"test KL (nats per image; floor {_KL_FLOOR:g})",
           f"KL: {summary['kl_smallest_sigma']:.1f} nats at sigma = {sigmas[0]:.3g} -> "
           f"{summary['kl_largest_sigma']:.2g} at {sigmas[-1]:.3g}")

    ax = axes[1, 1]
    ax.semilogx(sigmas, sweep["active_units"], "o-", color="C5", ms=4,
                label="active units (Cov(E[z|x]) > 0.01)")
    ax.plot(summary["learned_sigma"], summary["learned_active_units"], **learned,
            label="learned-sigma model")
    ax.set_ylim(-0.3, summary["latent"] + 0.5)
    finish(ax, f"active latent units (of {summary['latent']})",
           "active units" + (f": none above sigma = {largest:.3g}" if largest else ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def images_figure(dataset: Dataset, sigmas: np.ndarray, shown: list[int], sweep: dict,
                  learned: dict, learned_sigma: float):
    """Rows: test images; then per shown sigma its reconstructions and prior samples."""
    num = sweep["recon_images"].shape[1]
    rows, labels = [dataset.test[:num]], ["test images"]
    for i in shown:
        rows += [sweep["recon_images"][i], sweep["sample_images"][i]]
        labels += [f"sigma={sigmas[i]:.3g} recon", f"sigma={sigmas[i]:.3g} sample"]
    rows += [learned["recon_images"][0], learned["sample_images"][0]]
    labels += [f"learned {learned_sigma:.3g} recon", f"learned {learned_sigma:.3g} sample"]
    fig = plotting.image_rows_figure(
        np.stack(rows), dataset.image_shape, labels, max_rows=len(rows),
        title="reconstructions E[x | z = E[z|x]] and samples E[x|z], z ~ N(0, I), per sigma")
    fig.subplots_adjust(top=1.0 - 0.45 / fig.get_figheight())  # no gap under the title
    return fig


def _report_section(summary: dict, rows: list, shown: list[int]) -> str:
    table = [[f"{r[1]:.3g}" + (" (learned)" if r[0] == "learned" else ""), r[2], r[4], r[5],
              r[8], r[9]] for i, r in enumerate(rows) if i in shown or r[0] == "learned"]
    last_row = (", no active unit: z carries no information, so every reconstruction and "
                "sample is the same mean digit" if rows[shown[-1]][5] == 0 else "")
    largest = summary["largest_sigma_with_active_unit"]
    collapse = (f"the largest sigma with an active unit is **{largest:.3g}**; above it every "
                f"latent unit is inactive" if largest is not None else
                "no sigma of the grid kept an active unit")
    return f"""
![test ELBO, MSE, KL and active units against sigma](sigma_sweep.png)

"MSE + beta KL" is a Gaussian VAE with beta = 2 sigma^2, so sweeping sigma sweeps beta.
{summary['num_sigmas']} sigmas in [{summary['sigma_min']:.3g}, {summary['sigma_max']:.3g}]
were trained as ONE population of {summary['population']} (one vmapped, jitted step,
{summary['epochs']} epochs on {summary['dataset']}, D = {summary['num_dims']}), beside one
model that learns a shared sigma. The test ELBO peaks at sigma =
**{summary['sigma_elbo_peak']:.3g}** ({summary['elbo_at_peak']:.1f} nats; parabola through
the peak: {summary['sigma_elbo_peak_refined']:.3g}). There sqrt(MSE) at the posterior mean is
{summary['sqrt_mse_at_peak']:.3g} and sqrt(E_q MSE), the error the ELBO actually scores, is
**{summary['sqrt_expected_mse_at_peak']:.3g}**: the optimal sigma of a model is
sqrt(E_q MSE), and the curve E_q MSE(sigma) crosses sigma^2 (the fixed point) at sigma =
**{summary['sigma_fixed_point']:.3g}**. The learned shared sigma ends at
**{summary['learned_sigma']:.3g}** (started at {summary['learned_init_sigma']:.3g}, the
optimum of a model ignoring z; its own train sqrt(E_q MSE) is
{summary['learned_sqrt_expected_mse_train']:.3g}), with test ELBO
{summary['learned_elbo']:.1f} nats. At large sigma the KL term wins and the posterior
collapses: KL falls from {summary['kl_smallest_sigma']:.1f} nats at the smallest sigma to
{summary['kl_largest_sigma']:.2g} at the largest, and {collapse} (shaded).

![reconstructions and samples per sigma](sigma_sweep_images.png)

Reconstructions and prior samples for {len(shown)} of the sigmas (and the learned one). At
sigma = {rows[0][1]:.3g}: sqrt(MSE) = {rows[0][8]:.3g}, KL = {rows[0][4]:.1f} nats (q(z|x)
far from the N(0, I) the samples are drawn from); at sigma = {rows[shown[-1]][1]:.3g}:
sqrt(MSE) = {rows[shown[-1]][8]:.3g}, KL = {rows[shown[-1]][4]:.2g} nats{last_row}.

{common.markdown_table(["sigma", "test ELBO (nats)", "KL", "active units",
                        "sqrt(MSE) at E[z|x]", "sqrt(E_q MSE)"], table)}

Every sigma is in `sigma_sweep.csv`; the numbers quoted here are in `sigma_sweep.json`.
"""


if __name__ == "__main__":
    common.cli_main("sigma_sweep", run)
