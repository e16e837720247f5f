"""Experiment: grad(-log N) = (D / (2 sigma^2)) grad(MSE), measured on real digits batches.

For a VAE on the bundled digits (untrained weights), the gradients of the Gaussian
negative log-likelihood and of MSE, SSE and SSE/2 with respect to every decoder
parameter are compared over a log grid of sigma values times L latent samples, in
one jitted vmapped call, in float32 and float64.

    python -m experiments.gradient_equivalence --workdir=results/ge [--config.num_samples=64]
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from vaejax import plotting
from vaejax.data import load_dataset
from vaejax.elbo import reparameterize
from vaejax.equivalence import compare_gradients, log_log_slope
from vaejax.models import VAE

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).parent / "configs" / "gradient_equivalence.py"),
    "Experiment configuration.", lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: a new results/<run>).")

# One compiled call per dtype: sigma grid and samples are vmapped axes inside.
_compare_gradients = jax.jit(compare_gradients, static_argnames=("decode_fn", "event_ndims",
                                                                "sigma_chunk_size"))


def _measure(model, params, x, latents, sigmas):
    def decode(p, z):
        return model.apply(p, z, method=VAE.decode)["mean"]

    return jax.tree.map(np.asarray, _compare_gradients(decode, params, latents, x, sigmas))


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs the measurement and writes figure, CSV, JSON and a report section to ``workdir``."""
    workdir = common.prepare_workdir(workdir)
    data = load_dataset(config.dataset, seed=config.seed)
    if config.batch_size > data.train.shape[0]:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the {data.train.shape[0]} training examples."
        )
    x = jnp.asarray(data.train[: config.batch_size])
    num_dims = x.shape[-1]
    model = VAE(hidden=config.hidden, latent=config.latent, output_dim=num_dims,
                likelihood="gaussian_fixed")
    key_init, key_z = jax.random.split(jax.random.key(config.seed))
    params = model.init(key_init, x, key_z)
    mu, logvar = model.apply(params, x, method=VAE.encode)
    latents = reparameterize(key_z, mu, logvar, num_samples=config.num_samples)  # [L, B, Z]
    sigmas = np.logspace(math.log10(config.sigma_min), math.log10(config.sigma_max),
                         config.num_sigmas)

    results = {"float32": _measure(model, params, x, latents, jnp.asarray(sigmas, jnp.float32))}
    if config.float64:
        with jax.enable_x64(True):
            to64 = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
            results["float64"] = _measure(model, jax.tree.map(to64, params), to64(x),
                                          to64(latents), to64(sigmas))

    r32 = results["float32"]
    slope = float(log_log_slope(sigmas, r32.mse.ratio))
    summary = {"num_dims": num_dims, "num_sigmas": len(sigmas), "num_samples": config.num_samples,
               "batch_size": config.batch_size, "slope_float32": slope}
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
            for l_idx in range(config.num_samples):
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
        title=f"grad(-log N) vs grad(MSE): {config.dataset}, batch {config.batch_size}, "
              f"{len(sigmas)} sigmas x {config.num_samples} samples, untrained VAE",
    )
    common.save_figure(fig, workdir / "gradient_equivalence")
    summary["report"] = _report_section(summary, results)
    return summary


def _report_section(summary: dict, results: dict) -> str:
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
a few float32 ulps (eps = 1.2e-7) and a few float64 ulps (eps = 2.2e-16).
"""


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax/absl INFO chatter hides the progress bar
    del argv
    workdir = _WORKDIR.value or common.new_run_dir()
    summary = run(_CONFIG.value, workdir)
    print(summary.pop("report"))
    print(f"[gradient_equivalence] wrote {workdir}")


if __name__ == "__main__":
    app.run(main)
