"""Experiment: grad(-log N) = (D / (2 sigma^2)) grad(MSE), measured on real digits batches.

For a VAE on the bundled digits (untrained weights), the gradients of the Gaussian
negative log-likelihood and of MSE, SSE and SSE/2 with respect to every decoder
parameter are compared over a log grid of sigma values times L latent samples, in
one jitted vmapped call, in float32 and float64.

    python -m experiments.gradient_equivalence --workdir=results/ge \
        [--config.gradient_equivalence.num_samples=64]
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.configs.gradient_equivalence import GROUP
from vaejax import plotting
from vaejax.elbo import reparameterize
from vaejax.equivalence import compare_gradients, log_log_slope
from vaejax.models import VAE

# One compiled call per dtype: sigma grid and samples are vmapped axes inside.
_compare_gradients = jax.jit(compare_gradients, static_argnames=("decode_fn", "event_ndims",
                                                                "sigma_chunk_size"))


def _measure(model, params, x, latents, sigmas, compute_dtype=None):
    """compare_gradients of the model's decoder; ``compute_dtype`` (e.g. bfloat16) runs the
    decoder in that dtype on weights kept in their own dtype (mixed precision: the gradients
    and the statistics stay in the weights' dtype, the log-likelihoods accumulate in float32)."""

    def decode(p, z):
        if compute_dtype is not None:
            p, z = jax.tree.map(lambda a: a.astype(compute_dtype), (p, z))
        return model.apply(p, z, method=VAE.decode)["mean"]

    return jax.tree.map(np.asarray, _compare_gradients(decode, params, latents, x, sigmas))


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs the measurement and writes figure, CSV, JSON and a report section to ``workdir``."""
    workdir, exp, data = common.measurement_setup(config, workdir, "gradient_equivalence", GROUP)
    x = jnp.asarray(data.train[: exp.batch_size])
    num_dims = x.shape[-1]
    model = VAE(hidden=config.model.hidden, latent=config.model.latent, output_dim=num_dims,
                likelihood="gaussian_fixed")
    key_init, key_z = jax.random.split(jax.random.key(config.seed))
    params = model.init(key_init, x, key_z)
    mu, logvar = model.apply(params, x, method=VAE.encode)
    latents = reparameterize(key_z, mu, logvar, num_samples=exp.num_samples)  # [L, B, Z]
    sigmas = np.logspace(math.log10(exp.sigma_min), math.log10(exp.sigma_max), exp.num_sigmas)

    sigmas32 = jnp.asarray(sigmas, jnp.float32)
    results = {"float32": _measure(model, params, x, latents, sigmas32)}
    if exp.bfloat16:  # the decoder in bfloat16 on float32 weights, the data given in bfloat16
        results["bfloat16"] = _measure(model, params, x.astype(jnp.bfloat16), latents, sigmas32,
                                       compute_dtype=jnp.bfloat16)
    if exp.float64:
        with jax.enable_x64(True):
            to64 = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
            results["float64"] = _measure(model, jax.tree.map(to64, params), to64(x),
                                          to64(latents), to64(sigmas))

    r32 = results["float32"]
    slope = float(log_log_slope(sigmas, r32.mse.ratio))
    summary = {"num_dims": num_dims, "num_sigmas": len(sigmas), "num_samples": exp.num_samples,
               "batch_size": exp.batch_size, "slope_float32": slope}
    for dtype, r in results.items():
        for name in ("mse", "sse", "sse_half"):
            comparison = getattr(r, name)
            summary[f"{name}_max_relative_error_{dtype}"] = float(comparison.relative_error.max())
            summary[f"{name}_min_cosine_{dtype}"] = float(comparison.cosine.min())
            summary[f"{name}_max_ratio_deviation_{dtype}"] = float(
                np.abs(comparison.ratio / comparison.factor[:, None] - 1).max())
        summary[f"slope_{dtype}"] = float(log_log_slope(sigmas, r.mse.ratio))

    rows = []
    for dtype, r in results.items():
        for s_idx, sigma in enumerate(sigmas):
            for l_idx in range(exp.num_samples):
                rows.append([dtype, float(sigma), l_idx, float(r.mse.factor[s_idx]),
                             float(r.mse.ratio[s_idx, l_idx]), float(r.mse.cosine[s_idx, l_idx]),
                             float(r.mse.relative_error[s_idx, l_idx]),
                             float(r.sse.relative_error[s_idx, l_idx]),
                             float(r.sse_half.relative_error[s_idx, l_idx])])
    common.write_csv(workdir / "gradient_equivalence.csv",
                     ["dtype", "sigma", "sample", "theory_factor_mse", "ratio_mse", "cosine_mse",
                      "relative_error_mse", "relative_error_sse", "relative_error_sse_half"], rows)
    common.write_json(workdir / "gradient_equivalence.json", summary)
    common.save_config(config, workdir / "gradient_equivalence_config.json")
    fig = plotting.gradient_equivalence_figure(
        sigmas, r32.mse.ratio, r32.mse.factor, num_dims, slope,
        {k: 1.0 - r.mse.cosine for k, r in results.items()},
        {k: r.mse.relative_error for k, r in results.items()},
        title=f"grad(-log N) vs grad(MSE): {config.data.dataset}, batch {exp.batch_size}, "
              f"{len(sigmas)} sigmas x {exp.num_samples} samples, untrained VAE",
    )
    common.save_figure(fig, workdir / "gradient_equivalence")
    part2, part2_report = run_part2(config, data, workdir, model, params, x, sigmas)
    summary.update(part2)
    common.write_json(workdir / "gradient_equivalence.json", summary)
    summary["report"] = _report_section(summary, results) + part2_report
    return summary


def _report_section(summary: dict, results: dict) -> str:
    bfloat16 = ""
    if "bfloat16" in results:
        bfloat16 = f"""
Rows `bfloat16`: the same weights (float32) with the decoder run in bfloat16 and the data
given in bfloat16, as in a mixed-precision model; the log-likelihoods accumulate in float32.
There "MSE = Gaussian" holds to bfloat16 rounding (eps = 7.8e-3), not float32's: max relative
error **{summary['mse_max_relative_error_bfloat16']:.2g}**, the norm ratio off the factor
D/(2 sigma^2) by up to {summary['mse_max_ratio_deviation_bfloat16']:.2g}, while the
directions agree to 1 - cosine = {1 - summary['mse_min_cosine_bfloat16']:.2g}. Both losses
see the same bfloat16 mean; their backward passes run in bfloat16 on cotangents scaled by
1/sigma^2 and by 2/D, which round differently, so the factor holds only to that rounding."""
    table_rows = []
    for dtype in results:
        for name, theory in (("mse", "D/(2 sigma^2)"), ("sse", "1/(2 sigma^2)"),
                             ("sse_half", "1/sigma^2")):
            table_rows.append([
                dtype, name.replace("sse_half", "SSE/2").upper(), theory,
                summary[f"{name}_max_relative_error_{dtype}"],
                1.0 - summary[f"{name}_min_cosine_{dtype}"],
                summary[f"{name}_max_ratio_deviation_{dtype}"],
            ])
    return f"""
![gradient ratio against sigma](gradient_equivalence.png)

For a Gaussian decoder with fixed sigma, grad(-log N) is exactly grad(MSE) scaled by
D/(2 sigma^2) (D = {summary['num_dims']}). Measured with `jax.grad` on a batch of
{summary['batch_size']} real digits for {summary['num_sigmas']} sigma values in [1e-3, 1e2]
times {summary['num_samples']} latent samples (one jitted, vmapped call): the fitted log-log
slope of the gradient-norm ratio is **{summary['slope_float32']:.7f}** (theory -2).

{common.markdown_table(["dtype", "loss", "theory factor", "max relative error",
                        "max (1 - cosine)", "max abs(ratio/theory - 1)"], table_rows)}

Worst case over every sigma, sample and all decoder parameters together; the per-leaf
numbers are in `gradient_equivalence.csv`'s source arrays. Errors are float rounding:
a few float32 ulps (eps = 1.2e-7) and a few float64 ulps (eps = 2.2e-16).{bfloat16}
"""



# --------------------------------------------------------------------------- #
# Part 2: the L-sample estimator, a trained decoder, and the encoder's path.
# --------------------------------------------------------------------------- #


def _train_params(config, dataset, workdir):
    """Parameters of the VAE trained with the config's fixed-sigma Gaussian decoder."""
    result = common.train(config, dataset, workdir, "gradient_equivalence/trained")
    return common.first_member(result.state.params)


def _estimator_study(config, model, params_by_name, x, sigmas):
    """Max relative error / 1-cosine of the L-sample estimator for each decoder state and L."""
    exp, latent = config.gradient_equivalence, config.model.latent

    def decode_flat(p, z):  # z [L, B, Z] -> mean [L*B, D]: the L-sample estimator's batch
        return model.apply(p, z.reshape(-1, latent), method=VAE.decode)["mean"]

    rows = []
    key = jax.random.key(config.seed + 11)
    for name, params in params_by_name.items():
        mu, logvar = model.apply(params, x, method=VAE.encode)
        for num in exp.estimator_samples:
            z = reparameterize(key, mu, logvar, num_samples=exp.num_repeats * num)
            z = z.reshape(exp.num_repeats, num, *mu.shape)
            x_tiled = jnp.tile(x, (num, 1))
            report = _compare_gradients(decode_flat, params, z, x_tiled, sigmas)
            rows.append([name, num, float(jnp.max(report.mse.relative_error)),
                         float(1 - jnp.min(report.mse.cosine)),
                         float(log_log_slope(sigmas, report.mse.ratio))])
    return rows


def _encoder_study(config, model, params, x, sigmas):
    """Encoder gradients through z = mu + sigma_z * eps: recon term vs full -ELBO, vs MSE."""
    from vaejax.kl import kl_standard_normal
    from vaejax.likelihoods import gaussian_log_likelihood, mse

    eps = jax.random.normal(jax.random.key(config.seed + 12), (x.shape[0], config.model.latent))

    def decode_from_eps(p):
        mu, logvar = model.apply(p, x, method=VAE.encode)
        z = mu + jnp.exp(0.5 * logvar) * eps
        return model.apply(p, z, method=VAE.decode)["mean"], mu, logvar

    def encoder_norm(grads):
        return jnp.sqrt(sum(jnp.sum(jnp.square(g))
                            for g in jax.tree.leaves(grads["params"]["encoder"])))

    def flat_encoder(grads):
        return jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(grads["params"]["encoder"])])

    def mse_loss(p):
        return jnp.mean(mse(x, decode_from_eps(p)[0]))

    def losses(p, sigma):
        mean, mu, logvar = decode_from_eps(p)
        nll = -jnp.mean(gaussian_log_likelihood(x, mean, sigma))
        return nll, nll + jnp.mean(kl_standard_normal(mu, logvar))

    @jax.jit
    def measure(p, sigmas):
        g_mse = jax.grad(mse_loss)(p)

        def per_sigma(sigma):
            g_nll = jax.grad(lambda q: losses(q, sigma)[0])(p)
            g_elbo = jax.grad(lambda q: losses(q, sigma)[1])(p)
            factor = x.shape[-1] / (2 * sigma**2)
            residual = flat_encoder(g_nll) - factor * flat_encoder(g_mse)
            return (encoder_norm(g_nll) / encoder_norm(g_mse),
                    encoder_norm(g_elbo) / encoder_norm(g_mse),
                    jnp.linalg.norm(residual) / encoder_norm(g_nll))

        return jax.vmap(per_sigma)(sigmas)

    recon_ratio, elbo_ratio, recon_error = (np.asarray(a) for a in measure(params, sigmas))
    return recon_ratio, elbo_ratio, recon_error


def _part2_figure(sigmas, num_dims, estimator_rows, recon_ratio, elbo_ratio):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for i, name in enumerate(sorted({row[0] for row in estimator_rows})):
        rows = [r for r in estimator_rows if r[0] == name]
        ax.loglog([r[1] for r in rows], [max(r[2], 1e-18) for r in rows], "o-", color=f"C{i}",
                  label=f"{name} decoder: max relative error")
    ax.axhline(np.finfo(np.float32).eps, color="gray", ls="--", lw=0.8, label="float32 eps")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("L (samples averaged in the estimator)")
    ax.set_ylabel("max over sigma and repeats")
    ax.set_title("L-sample estimator: grad(-log N) vs D/(2 sigma^2) grad(MSE)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1]
    ax.loglog(sigmas, num_dims / (2 * sigmas**2), "-", color="black", lw=1,
              label=r"theory $D/(2\sigma^2)$")
    ax.loglog(sigmas, recon_ratio, "o", mfc="none", ms=4, label="reconstruction term only")
    ax.loglog(sigmas, elbo_ratio, "s", ms=3, label="full -ELBO (recon + KL)")
    ax.set_xlabel(r"decoder $\sigma$")
    ax.set_ylabel(r"encoder $\|\nabla\,\cdot\| / \|\nabla \mathrm{MSE}\|$")
    ax.set_title("encoder (reparameterised path): the KL does not scale")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def run_part2(config, dataset, workdir, model, params, x, sigmas) -> tuple[dict, str]:
    """Estimator/trained-decoder/encoder study; returns (summary entries, report markdown)."""
    trained = _train_params(config, dataset, workdir)
    sigmas32 = jnp.asarray(sigmas, jnp.float32)
    rows = _estimator_study(config, model, {"untrained": params, "trained": trained}, x, sigmas32)
    recon_ratio, elbo_ratio, recon_error = _encoder_study(config, model, trained, x, sigmas32)
    num_dims = x.shape[-1]
    common.write_csv(workdir / "gradient_estimator.csv",
                     ["decoder", "L", "max_relative_error", "max_one_minus_cosine", "slope"], rows)
    common.write_csv(workdir / "gradient_encoder.csv",
                     ["sigma", "theory", "recon_ratio", "elbo_ratio", "recon_relative_error"],
                     [[float(s), num_dims / (2 * s**2), float(a), float(b), float(c)]
                      for s, a, b, c in zip(sigmas, recon_ratio, elbo_ratio, recon_error,
                                            strict=True)])
    common.save_figure(_part2_figure(sigmas, num_dims, rows, recon_ratio, elbo_ratio),
                       workdir / "gradient_estimator_encoder")
    deviation = np.abs(elbo_ratio / (num_dims / (2 * sigmas**2)) - 1)
    departs = sigmas[np.argmax(deviation > 0.1)] if np.any(deviation > 0.1) else float("nan")
    summary = {
        "estimator_max_relative_error": max(r[2] for r in rows),
        "estimator_max_one_minus_cosine": max(r[3] for r in rows),
        "encoder_recon_max_relative_error": float(np.max(recon_error)),
        "encoder_recon_slope": float(log_log_slope(sigmas, recon_ratio)),
        "encoder_elbo_departs_at_sigma": float(departs),
        "encoder_elbo_ratio_at_max_sigma": float(elbo_ratio[-1]),
    }
    table = common.markdown_table(
        ["decoder", "L", "max relative error", "max (1 - cosine)", "slope"],
        [[r[0], r[1], r[2], r[3], r[4]] for r in rows])
    report = f"""
![estimator and encoder](gradient_estimator_encoder.png)

The identity holds for the **L-sample estimator** (the gradient of the mean over L latent
samples, {config.gradient_equivalence.num_repeats} independent draws each), for the untrained
decoder and for one trained {config.train.num_epochs} epochs at sigma = {config.model.sigma}:

{table}

For the **encoder**, through z = mu + sigma_z * eps, the reconstruction term's gradient
scales the same way (max relative error {summary['encoder_recon_max_relative_error']:.2g},
slope {summary['encoder_recon_slope']:.6f}), but the full -ELBO's does not: the KL gradient
does not carry the 1/(2 sigma^2) factor, so the ratio leaves the theory line by more than
10% from sigma = {summary['encoder_elbo_departs_at_sigma']:.3g} on and flattens to
{summary['encoder_elbo_ratio_at_max_sigma']:.3g} at sigma = {sigmas[-1]:g} (right panel).
Rescaling the whole -ELBO by 2 sigma^2 gives SSE + 2 sigma^2 KL: that is why a fixed
sigma acts as beta = 2 sigma^2.
"""
    return summary, report


if __name__ == "__main__":
    common.cli_main("gradient_equivalence", run)
