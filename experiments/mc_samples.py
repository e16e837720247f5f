"""Experiment: how many Monte-Carlo samples L? Variance of the ELBO gradient against L and M.

AEVB (section 2.3) sets L = 1 sample per datapoint "as long as the minibatch size M was
large enough, e.g. M = 100". The gradient of the minibatch ELBO with M datapoints and L
latent samples each has two independent sources of noise: which datapoints are drawn
and which latent noise eps is drawn. For M datapoints drawn without replacement from N,

    Var = A (N - M) / ((N - 1) M) + B / (M L),

A = the variance over datapoints of the per-datapoint expected gradient (minibatch
noise) and B = the mean over datapoints of the variance over eps (Monte-Carlo noise),
both summed over parameters. Raising L shrinks only the B term; raising M shrinks both.
Measured here: the total variance E||g - E g||^2 over all parameters, from
``num_repeats`` draws (random minibatch and latent noise each) per (M, L). Since the
L-sample gradient is the mean of L single-sample gradients (the sample average is
linear, the KL analytic), each draw computes L_max single-sample gradients as one
vmapped axis and reads every L of the grid off their running mean: all draws and all L
of one M are one jitted call (vmapped chunks of draws under ``lax.map``). Draws share
random numbers across L and M (nested minibatches; the first samples of a larger L
are those of a smaller one), which makes the comparisons precise.

    python -m experiments.mc_samples --workdir=results/mc [--config.mc_samples.num_repeats=400]
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.flatten_util import ravel_pytree

from experiments import common
from experiments.configs.mc_samples import GROUP
from vaejax import config as config_lib
from vaejax import trainer as trainer_lib
from vaejax.config import validate_group
from vaejax.elbo import reparameterize
from vaejax.kl import kl_standard_normal

PARTS = ("total", "encoder", "decoder")


def single_sample_loss(trainer: trainer_lib.Trainer, params, batch: jax.Array, eps: jax.Array,
                       member: trainer_lib.Members) -> jax.Array:
    """The engine's ELBO loss of one member with L = 1 and the latent noise given: a scalar.

    The L-sample loss is the mean of these over eps_1..eps_L (the sample average is
    linear and the KL is analytic), hence so is its gradient.
    """
    mean, log_var = trainer.encode(params, batch, member)
    recon = trainer.log_likelihood_fn(params, batch, member)(mean + jnp.exp(0.5 * log_var) * eps)
    loss = -jnp.mean(recon - member.beta * kl_standard_normal(mean, log_var))
    return loss + trainer._decay(params, member, loss)


def draw_gradients(trainer: trainer_lib.Trainer, params, train_data: jax.Array,
                   draw_key: jax.Array, member, *, batch_size: int,
                   num_samples_grid: tuple[int, ...]) -> dict[str, jax.Array]:
    """One draw of the minibatch ELBO gradient for every L of the grid at once.

    The minibatch is ``permutation(draw_key)[:M]`` and the latent noise that of
    ``elbo(fold_in(draw_key, 1), ..., num_samples=L)`` (sample l from ``fold_in(key, l)``),
    so entry L equals the gradient of the engine's loss with ``num_samples=L`` and that key:
    the L_max single-sample gradients are one vmapped axis, and their running mean gives
    every L.

    Returns:
      {"encoder": [len(grid), n_encoder], "decoder": [len(grid), n_decoder]} flat gradients.
    """
    batch = train_data[jax.random.permutation(draw_key, train_data.shape[0])[:batch_size]]
    zeros = jnp.zeros((batch_size, trainer.max_latent), batch.dtype)
    max_samples = max(num_samples_grid)
    # reparameterize with mean 0 and log-variance 0 returns the elbo's own eps draws.
    eps = reparameterize(jax.random.fold_in(draw_key, 1), zeros, zeros,
                         num_samples=max_samples)  # [L_max, M, Z]
    grads = jax.vmap(lambda e: jax.grad(single_sample_loss, argnums=1)(
        trainer, params, batch, e, member))(eps)["params"]
    rows = jnp.asarray(num_samples_grid) - 1
    counts = jnp.arange(1, max_samples + 1, dtype=batch.dtype)[:, None]
    out = {}
    for part in ("encoder", "decoder"):
        flat = jax.vmap(lambda g: ravel_pytree(g)[0])(grads[part])  # [L_max, n]
        out[part] = (jnp.cumsum(flat, axis=0) / counts)[rows]
    return out


def gradient_statistics(trainer: trainer_lib.Trainer, params, train_data: jax.Array,
                        key: jax.Array, member, *, batch_size: int,
                        num_samples_grid: tuple[int, ...], num_repeats: int,
                        repeat_chunk: int) -> dict[str, jax.Array]:
    """Variance of the minibatch ELBO gradient over ``num_repeats`` draws, per L; jit-able.

    Draw r uses ``draw_gradients`` with key ``fold_in(key, r)``; the draws run in chunks of
    ``repeat_chunk`` under ``vmap`` (``lax.map``).

    Args:
      trainer: its model, head and weight decay define the loss.
      params, member: one member's parameters and settings (decoder sigma, KL weight, ...),
        unstacked.
      train_data, key: [N, D] the training set the minibatches are drawn from; PRNG key.
      batch_size, num_samples_grid, num_repeats: M, the L values (static), R >= 2 draws.
      repeat_chunk: draws evaluated together under ``vmap``.

    Returns:
      dict with, for each part in ``PARTS`` (all parameters, encoder, decoder), each
      [len(num_samples_grid)]: ``variance_<part>`` = E||g - E g||^2 (unbiased over the R
      draws) and ``mean_sq_norm_<part>`` = ||E g||^2 (unbiased: ||mean||^2 - variance / R).
    """
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(num_repeats))
    draws = jax.lax.map(  # each [R, len(grid), n_part]
        lambda k: draw_gradients(trainer, params, train_data, k, member,
                                 batch_size=batch_size, num_samples_grid=num_samples_grid),
        keys, batch_size=repeat_chunk)
    stats = {}
    for part in ("encoder", "decoder"):
        g = draws[part]
        stats[f"variance_{part}"] = jnp.sum(jnp.var(g, axis=0, ddof=1), axis=-1)
        stats[f"mean_sq_norm_{part}"] = (jnp.sum(jnp.square(jnp.mean(g, axis=0)), axis=-1)
                                         - stats[f"variance_{part}"] / num_repeats)
    for name in ("variance", "mean_sq_norm"):
        stats[f"{name}_total"] = stats[f"{name}_encoder"] + stats[f"{name}_decoder"]
    return stats


def fit_noise_model(batch_sizes, num_samples, variance, num_examples: int):
    """Least-squares (relative error) A, B of Var = A (N-M)/((N-1) M) + B/(M L).

    Returns:
      (A, B, predicted variance for each point).
    """
    m = np.asarray(batch_sizes, np.float64)
    ell = np.asarray(num_samples, np.float64)
    v = np.asarray(variance, np.float64)
    design = np.stack([(num_examples - m) / ((num_examples - 1) * m), 1.0 / (m * ell)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design / v[:, None], np.ones_like(v), rcond=None)
    return float(a), float(b), design @ np.array([a, b])


def log_log_slope(x, y) -> float:
    return float(np.polyfit(np.log(np.asarray(x, np.float64)),
                            np.log(np.asarray(y, np.float64)), 1)[0])


def _variance_hook(exp, trainer, member, train_data, key) -> trainer_lib.Hook:
    """Measures the variances at the epochs ``exp.measure_at_epochs``: one jit per M."""
    grid = tuple(int(ell) for ell in exp.num_samples_grid)
    stats_fns = {int(m): jax.jit(functools.partial(
        gradient_statistics, trainer, train_data=train_data, member=member, batch_size=int(m),
        num_samples_grid=grid, num_repeats=exp.num_repeats, repeat_chunk=exp.repeat_chunk))
        for m in exp.batch_sizes}
    per_epoch = trainer.steps_per_epoch(int(train_data.shape[0]))

    def measure(ctx):
        params = common.first_member(ctx.state.params)
        epoch = ctx.step // per_epoch
        loss = None if ctx.block is None else float(np.mean(ctx.block.loss))
        rows = []
        for batch_size, stats_fn in stats_fns.items():
            # The same key for every M: nested minibatches, common random numbers.
            stats = common.host(stats_fn(params, key=key))
            rows += [{"epoch": epoch, "batch_size": batch_size, "num_samples": num_samples,
                      "train_loss": loss, **{n: float(v[i]) for n, v in stats.items()}}
                     for i, num_samples in enumerate(grid)]
        return rows

    return trainer_lib.Hook(measure, at_steps=tuple(int(e) * per_epoch
                                                    for e in exp.measure_at_epochs),
                            at_end=False)


def _time_steps(exp, trainer, state, train_data, members) -> dict[int, list[float]]:
    """Seconds per training step for each L: the median over epochs interleaved across L."""
    steps = trainer.steps_per_epoch(int(train_data.shape[0]))
    runs = {ell: dataclasses.replace(trainer, num_samples=int(ell)).jit.run
            for ell in exp.num_samples_grid}

    def epoch(run, start):
        fresh = jax.tree.map(jnp.copy, state)  # run donates its state
        jax.block_until_ready(fresh)
        tic = time.perf_counter()
        jax.block_until_ready(run(fresh, train_data, members, jnp.int32(start),
                                  jnp.int32(start + steps)))
        return (time.perf_counter() - tic) / steps

    for run in runs.values():
        epoch(run, 0)  # compile and warm up
    times = {ell: [] for ell in runs}
    for repeat in range(exp.timing_epochs):
        for ell, run in runs.items():
            times[ell].append(epoch(run, (repeat + 1) * steps))
    return times


def _stat_keys(big_m: int, small_l: int, large_l: int) -> dict[str, str]:
    """Names of the per-epoch statistics, keyed by their ``headline_*`` name."""
    return {"variance_ratio": f"variance_ratio_L{small_l}_vs_L{large_l}_at_M{big_m}",
            "slope_vs_L": f"slope_vs_L_at_M{big_m}", "slope_vs_M": f"slope_vs_M_at_L{small_l}",
            "minibatch_share": f"minibatch_share_at_M{big_m}_L{small_l}"}


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Measures gradient variance over the (M, L) grid and the step time against L."""
    workdir = common.prepare_workdir(workdir)
    exp = validate_group(config, "mc_samples", GROUP)
    epochs_to_measure = sorted(set(int(e) for e in exp.measure_at_epochs))
    if not epochs_to_measure:
        raise ValueError("config `mc_samples.measure_at_epochs` must list epochs >= 0.")
    dataset = common.load_data(config)
    num_examples = dataset.train.shape[0]
    if max(exp.batch_sizes) > num_examples:
        raise ValueError(f"config `mc_samples.batch_sizes` {exp.batch_sizes} exceed the "
                         f"{num_examples} training examples.")
    if config_lib.population_size(config) != 1:
        raise ValueError("mc_samples measures one model: leave config.population empty.")
    trainer, members = trainer_lib.build(config, dataset)
    train_data = jnp.asarray(dataset.train)
    per_epoch = trainer.steps_per_epoch(num_examples)

    # Brief training (L = train.num_samples); the hook measures at each listed epoch.
    tic = time.perf_counter()
    hook = _variance_hook(exp, trainer, common.first_member(members), train_data,
                          jax.random.key(config.seed + 4242))
    result = common.train(config, dataset, workdir, "mc_samples/warmup", trainer=trainer,
                          members=members, num_steps=epochs_to_measure[-1] * per_epoch,
                          hooks=[hook])
    rows = result.history
    variance_seconds = time.perf_counter() - tic
    times = _time_steps(exp, trainer, result.state, train_data, members)
    losses = {r["epoch"]: r["train_loss"] for r in rows}

    summary = {"dataset": dataset.name, "likelihood": config.model.likelihood,
               "sigma": float(config.model.sigma), "num_examples": num_examples,
               "num_parameters": trainer_lib.num_parameters(
                   common.first_member(result.state.params)),
               "num_repeats": exp.num_repeats, "batch_sizes": list(exp.batch_sizes),
               "num_samples_grid": list(exp.num_samples_grid),
               "measured_at_epochs": epochs_to_measure,
               "train_loss_at_last_epoch": losses.get(epochs_to_measure[-1]),
               "train_and_variance_seconds": variance_seconds, "per_epoch": {}}
    big_m, small_l = max(exp.batch_sizes), min(exp.num_samples_grid)
    large_l = 16 if 16 in exp.num_samples_grid else max(exp.num_samples_grid)
    keys = _stat_keys(big_m, small_l, large_l)
    for epoch in epochs_to_measure:
        sel = [r for r in rows if r["epoch"] == epoch]
        ms, ells, variances = ([r[k] for r in sel]
                               for k in ("batch_size", "num_samples", "variance_total"))
        v = {(r["batch_size"], r["num_samples"]): r["variance_total"] for r in sel}
        a, b, predicted = fit_noise_model(ms, ells, variances, num_examples)
        for r, p in zip(sel, predicted, strict=True):
            r["fit_variance_total"] = float(p)
        minibatch = a * (num_examples - big_m) / ((num_examples - 1) * big_m)
        summary["per_epoch"][str(epoch)] = {
            keys["variance_ratio"]: v[(big_m, small_l)] / v[(big_m, large_l)],
            keys["slope_vs_L"]: log_log_slope(
                exp.num_samples_grid, [v[(big_m, ell)] for ell in exp.num_samples_grid]),
            keys["slope_vs_M"]: log_log_slope(
                exp.batch_sizes, [v[(m, small_l)] for m in exp.batch_sizes]),
            "slope_vs_ML_all_points": log_log_slope(
                [m * ell for m, ell in zip(ms, ells, strict=True)], variances),
            "fit_A_minibatch": a, "fit_B_monte_carlo": b,
            keys["minibatch_share"]: minibatch / (minibatch + b / big_m),
            "fit_max_relative_error": float(max(abs(r["fit_variance_total"] / r["variance_total"]
                                                    - 1) for r in sel)),
            f"variance_at_equal_budget_ML{big_m * small_l}": {
                f"M={m},L={ell}": v[(m, ell)] for (m, ell) in v if m * ell == big_m * small_l},
            f"signal_to_noise_M{big_m}_L{small_l}": next(
                r["mean_sq_norm_total"] / r["variance_total"] for r in sel
                if r["batch_size"] == big_m and r["num_samples"] == small_l),
        }
    median = {ell: float(np.median(t)) for ell, t in times.items()}
    summary["timing_batch_size"] = config.train.batch_size
    summary["timing_seconds_per_step"] = {str(ell): s for ell, s in median.items()}
    summary["timing_relative_to_L1"] = {str(ell): s / median[small_l] for ell, s in median.items()}
    summary["timing_slope_vs_L"] = log_log_slope(list(median), list(median.values()))
    summary["headline_epoch"] = epochs_to_measure[-1]
    summary["headline"] = (f"after {epochs_to_measure[-1]} epochs: Var(L={small_l}) / "
                           f"Var(L={large_l}) at M={big_m}; log-log slopes against L at "
                           f"M={big_m} and against M at L={small_l}")
    headline = summary["per_epoch"][str(epochs_to_measure[-1])]
    summary.update({f"headline_{k}": headline[key] for k, key in keys.items()})

    columns = ["epoch", "batch_size", "num_samples", "samples_M_times_L", "variance_total",
               "variance_encoder", "variance_decoder", "mean_sq_norm_total",
               "fit_variance_total"]
    common.write_csv(workdir / "mc_samples.csv", columns,
                     [[r["epoch"], r["batch_size"], r["num_samples"],
                       r["batch_size"] * r["num_samples"], *(r[c] for c in columns[4:])]
                      for r in rows])
    common.write_csv(workdir / "mc_samples_timing.csv",
                     ["num_samples", "repeat", "seconds_per_step"],
                     [[ell, i, t] for ell, ts in times.items() for i, t in enumerate(ts)])
    fig = variance_figure(rows, times, summary, epochs_to_measure,
                          title=f"ELBO gradient variance over {exp.num_repeats} draws: "
                                f"{dataset.name}, {config.model.likelihood} sigma = "
                                f"{config.model.sigma:g}, "
                                f"{summary['num_parameters']} parameters")
    common.save_figure(fig, workdir / "mc_samples")
    common.write_json(workdir / "mc_samples.json", summary)
    common.save_config(config, workdir / "mc_samples_config.json")
    summary["report"] = _report_section(summary, big_m, small_l, large_l)
    return summary


# ---------------------------------------------------------------------------- figures


def variance_figure(rows: list[dict], times: dict, summary: dict, epochs: list[int], *,
                    title: str = ""):
    """Panels: variance vs L per M (one panel per measured epoch), vs M*L, time vs L."""
    import matplotlib.pyplot as plt

    num_panels = len(epochs) + 2
    num_rows = -(-num_panels // 2)
    fig, grid_axes = plt.subplots(num_rows, 2, figsize=(12, 4.8 * num_rows), squeeze=False)
    axes = grid_axes.ravel()
    for ax in axes[num_panels:]:
        ax.set_visible(False)
    batch_sizes, grid = summary["batch_sizes"], summary["num_samples_grid"]
    small_l, large_l = min(grid), (16 if 16 in grid else max(grid))
    keys = _stat_keys(max(batch_sizes), small_l, large_l)
    l_label, var_label = "L latent samples per datapoint", r"total variance $E\|g - Eg\|^2$"
    for ax, epoch in zip(axes, epochs, strict=False):
        stats = summary["per_epoch"][str(epoch)]
        for i, m in enumerate(batch_sizes):
            sel = [r for r in rows if r["epoch"] == epoch and r["batch_size"] == m]
            ax.loglog(grid, [r["variance_total"] for r in sel], "o-", color=f"C{i}",
                      label=f"M = {m}")
            ax.loglog(grid, [r["fit_variance_total"] for r in sel], "--", color=f"C{i}", lw=0.8)
        ax.set_title(f"{'untrained' if epoch == 0 else f'after {epoch} epochs'}: "
                     f"Var(L={small_l})/Var(L={large_l}) at M={max(batch_sizes)}: "
                     f"{stats[keys['variance_ratio']]:.2f}\nminibatch share of the variance "
                     f"{100 * stats[keys['minibatch_share']]:.0f}% (dashed: fit)", fontsize=9)
        ax.set_xticks(grid, [str(g) for g in grid])
        common.style_axes(ax, l_label, var_label, grid="both")

    ax = axes[len(epochs)]
    ml = np.array([min(batch_sizes) * grid[0], max(batch_sizes) * max(grid)], np.float64)
    for e_idx, epoch in enumerate(epochs):
        last = e_idx == len(epochs) - 1
        for i, ell in enumerate(grid):
            sel = [r for r in rows if r["epoch"] == epoch and r["num_samples"] == ell]
            ax.loglog([r["batch_size"] * ell for r in sel], [r["variance_total"] for r in sel],
                      "osD^v<>"[e_idx % 7] + ("-" if last else ":"), color=f"C{i}", ms=4,
                      mfc=None if last else "none", label=f"L = {ell}" if last else None)
        ref = next(r for r in rows if r["epoch"] == epoch and r["num_samples"] == grid[0]
                   and r["batch_size"] == batch_sizes[0])
        ax.loglog(ml, ref["variance_total"] * ml[0] / ml, color="gray", lw=0.8,
                  ls="-" if last else ":", label=r"$\propto 1/(ML)$" if last else None)
    ax.set_title(f"against M x L (lines join equal L; solid: epoch {epochs[-1]}, "
                 f"dotted: epoch {epochs[0]})", fontsize=9)
    common.style_axes(ax, "samples per step M x L", var_label, grid="both")

    ax = axes[num_panels - 1]
    ells = np.array(list(times), np.float64)
    med = np.array([np.median(t) for t in times.values()]) * 1e3
    ax.loglog(ells, med, "o-", color="C0", label="median")
    ax.fill_between(ells, [1e3 * min(t) for t in times.values()],
                    [1e3 * max(t) for t in times.values()], color="C0", alpha=0.2,
                    label="min-max")
    ax.loglog(ells, med[0] * ells / ells[0], "--", color="gray", lw=0.8, label=r"$\propto L$")
    ax.set_title(f"cost of L under vmap (measured here, not a test):\n"
                 f"L={max(grid)} / L={min(grid)} = "
                 f"{summary['timing_relative_to_L1'][str(max(grid))]:.2f}x, "
                 f"slope {summary['timing_slope_vs_L']:.2f}", fontsize=9)
    ax.set_xticks(grid, [str(g) for g in grid])
    common.style_axes(ax, l_label, f"ms per training step (M = {summary['timing_batch_size']})",
                      grid="both")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _report_section(summary: dict, big_m: int, small_l: int, large_l: int) -> str:
    keys = _stat_keys(big_m, small_l, large_l)
    table, findings = [], []
    for epoch, stats in summary["per_epoch"].items():
        budget = stats[f"variance_at_equal_budget_ML{big_m * small_l}"]
        name = "untrained" if epoch == "0" else f"after {epoch} epochs"
        share = stats[keys["minibatch_share"]]
        table.append([name, stats[keys["variance_ratio"]], stats[keys["slope_vs_L"]],
                      stats[keys["slope_vs_M"]], stats["slope_vs_ML_all_points"], share,
                      stats["fit_max_relative_error"],
                      ", ".join(f"{k}: {v:.3g}" for k, v in sorted(budget.items()))])
        dominant = ("the minibatch term A dominates: more latent samples per datapoint "
                    "barely lower the variance, more datapoints do (about 1/M)"
                    if share >= 0.5 else
                    "the Monte-Carlo term B dominates: the variance falls nearly as 1/(M L), "
                    "and a sample of z buys about as much as a datapoint")
        findings.append(f"- **{name}**: {100 * share:.0f}% of the variance at M = {big_m}, "
                        f"L = {small_l} is minibatch noise, so {dominant}. At the budget "
                        f"M x L = {big_m * small_l} the lowest variance is at "
                        f"{min(budget, key=budget.get)}.")
    ratio = summary["headline_variance_ratio"]
    timing = summary["timing_relative_to_L1"]
    timing_text = ", ".join(f"L = {ell}: {timing[str(ell)]:.2f}x"
                            for ell in summary["num_samples_grid"][1:])
    return f"""
![gradient variance against L, M and M x L; time per step against L](mc_samples.png)

How many latent samples L per datapoint does the ELBO gradient need? For a
{summary['likelihood']} VAE (sigma = {summary['sigma']:g}, {summary['num_parameters']}
parameters) on {summary['dataset']}, the minibatch gradient with M datapoints and L samples
each was drawn {summary['num_repeats']} times per (M, L) (fresh minibatch and latent noise;
every L from the running mean of L_max single-sample gradients, one jitted call per M),
untrained and after {summary['headline_epoch']} epochs; the plot shows the total variance
E||g - E g||^2 over all parameters. After training, at M = {big_m} the variance with
L = {small_l} is **{ratio:.2f}x** that with L = {large_l}: log-log slope
**{summary['headline_slope_vs_L']:.2f}** against L, but
**{summary['headline_slope_vs_M']:.2f}** against M at L = {small_l} (pure Monte-Carlo
noise would give -1 for both). The fit Var = A (N-M)/((N-1) M) + B/(M L) (dashed; A: the
spread of the per-datapoint gradients, B: the latent-noise variance) splits the two:

{chr(10).join(findings)}

{common.markdown_table(["model", f"Var(L={small_l}) / Var(L={large_l}) at M={big_m}",
                        f"slope vs L (M={big_m})", f"slope vs M (L={small_l})",
                        "slope vs M x L", "minibatch share", "fit max rel. error",
                        f"variance at M x L = {big_m * small_l}"], table)}

With the same M x L the B term is the same, while the A term shrinks only with M: so L = 1
with the larger minibatch is never worse, and once the model has trained for
{summary['headline_epoch']} epochs, the variance of L = {small_l} with M = {big_m} is only
{100 * (ratio - 1):.0f}% above that of L = {large_l}, as AEVB found. The last panel times one
training step (batch {summary['timing_batch_size']}) against L in this process, relative
to L = {small_l} ({timing_text}; log-log slope {summary['timing_slope_vs_L']:.2f}; median
over epochs interleaved across L): a measurement on this machine, not a test. The L
samples share one encoder pass and form one batched decoder pass under vmap, so the cost
grows more slowly than L, but it grows: L = {large_l} costs
{timing.get(str(large_l), float('nan')):.1f}x the time for {100 * (1 - 1 / ratio):.0f}% less
variance.
Every plotted value is in `mc_samples.csv` and `mc_samples_timing.csv`.
"""


if __name__ == "__main__":
    common.cli_main("mc_samples", run)
