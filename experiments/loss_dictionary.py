"""Experiment: every reconstruction loss people write, as the negative log of a likelihood.

For each loss (SSE, SSE/2, MSE, MAE, SAE, Huber, BCE on binary and on grey data, the
cross-entropy over intensities) the table gives the likelihood it is minus the log of, the
constant it drops, how its scale maps to beta (loss + beta KL is the -ELBO times beta),
and the measured identity grad(-log p) = factor * grad(loss): max relative error over a
grid of scales x L latent samples of an untrained decoder on a batch of real digits, with
every decoder parameter, in float32 and float64. The losses are independent
implementations (optax's where one exists: ``sigmoid_binary_cross_entropy``,
``softmax_cross_entropy_with_integer_labels``, ``huber_loss``; numpy-style formulas
otherwise), so a wrong constant or scale in the library would show.

    python -m experiments.loss_dictionary --workdir=results/ld
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments.configs.loss_dictionary import GROUP
from vaejax import discretized
from vaejax import likelihoods as lk
from vaejax.equivalence import compare_loss_gradients
from vaejax.models import Decoder

# Independent per-example losses (x, output, event_ndims) -> [B], summed over D pixels.
_SSE = lambda x, m, e: jnp.sum(jnp.square(x - m), -1)  # noqa: E731
_SAE = lambda x, m, e: jnp.sum(jnp.abs(x - m), -1)  # noqa: E731


# (row, output, likelihood, loss, factor(scale, D), dropped constant, beta map, data)
#   output: "mean" (a decoder mean), "logits" (D logits) or "levels" (D x k logits)
#   data: "grey", "binary" or "levels" (the digits on their k-level grid)
def _rows(delta: float, k: int):
    return (
        ("SSE", "mean", "Gaussian N(mu, sigma^2)", lk.gaussian_log_likelihood, _SSE,
         lambda s, d: 1 / (2 * s**2), "D log sigma + (D/2) log 2 pi", "beta = 2 sigma^2", "grey"),
        ("SSE / 2", "mean", "Gaussian N(mu, sigma^2)", lk.gaussian_log_likelihood,
         lambda x, m, e: 0.5 * _SSE(x, m, e), lambda s, d: 1 / s**2,
         "D log sigma + (D/2) log 2 pi", "beta = sigma^2", "grey"),
        ("MSE", "mean", "Gaussian N(mu, sigma^2)", lk.gaussian_log_likelihood,
         lambda x, m, e: jnp.mean(jnp.square(x - m), -1), lambda s, d: d / (2 * s**2),
         "D log sigma + (D/2) log 2 pi", "beta = 2 sigma^2 / D", "grey"),
        ("SAE (L1)", "mean", "Laplace(mu, b)", lk.laplace_log_likelihood, _SAE,
         lambda s, d: 1 / s, "D log 2b", "beta = b", "grey"),
        ("MAE", "mean", "Laplace(mu, b)", lk.laplace_log_likelihood,
         lambda x, m, e: jnp.mean(jnp.abs(x - m), -1), lambda s, d: d / s,
         "D log 2b", "beta = b / D", "grey"),
        (f"Huber (delta = {delta:g}, sum)", "mean", "Huber density exp(-h/s) / Z",
         functools.partial(lk.huber_log_likelihood, delta=delta),
         lambda x, m, e: jnp.sum(optax.huber_loss(m, x, delta=delta), -1),
         lambda s, d: 1 / s, "D log Z(delta, s), Z = sqrt(2 pi s) erf(delta/sqrt(2s)) + "
         "(2s/delta) exp(-delta^2/2s)", "beta = s", "grey"),
        ("BCE, binary data", "logits", "Bernoulli(sigmoid(l))",
         lambda x, o, s, event_ndims: lk.bernoulli_log_likelihood(x, o),
         lambda x, o, e: jnp.sum(optax.sigmoid_binary_cross_entropy(o, x), -1),
         lambda s, d: jnp.ones_like(s), "none (a probability)", "beta = 1 (no scale)",
         "binary"),
        ("BCE, grey levels", "logits", "none: needs + log C(lambda) (continuous Bernoulli)",
         lambda x, o, s, event_ndims: lk.continuous_bernoulli_log_likelihood(x, o),
         lambda x, o, e: jnp.sum(optax.sigmoid_binary_cross_entropy(o, x), -1),
         lambda s, d: jnp.ones_like(s), "sum_i log C(lambda_i): depends on the output",
         "-", "grey"),
        (f"cross-entropy over {k} intensities", "levels", f"Categorical over {k} levels",
         lambda x, o, s, event_ndims: discretized.categorical_log_likelihood(
             x, o, num_levels=k),
         lambda x, o, e: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
             o, jnp.round(x * (k - 1)).astype(jnp.int32)), -1),
         lambda s, d: jnp.ones_like(s), "none (a probability)", "beta = 1 (no scale)",
         "levels"),
    )


def _decoder(output: str, hidden: int, num_dims: int, k: int):
    """An untrained MLP decoder z -> [B, D] mean or logits, or [B, D, k] level logits."""
    width = num_dims * k if output == "levels" else num_dims
    module = Decoder(hidden=hidden, output_dim=width,
                     likelihood="gaussian_fixed" if output == "mean" else "bernoulli")
    key = "mean" if output == "mean" else "logits"

    def decode(params, z):
        out = module.apply(params, z)[key]
        return out.reshape(z.shape[0], num_dims, k) if output == "levels" else out

    return module, decode


def _measure(row, config, exp, data: dict, dtype) -> dict:
    name, output, _, log_lik, loss, factor, *_, data_kind = row
    x = jnp.asarray(data[data_kind], dtype)
    num_dims = x.shape[-1]
    module, decode = _decoder(output, config.model.hidden, num_dims, exp.num_levels)
    key_init, key_z = jax.random.split(jax.random.key(config.seed))
    z = jax.random.normal(key_z, (exp.num_samples, x.shape[0], config.model.latent), dtype)
    params = jax.tree.map(lambda a: a.astype(dtype), module.init(key_init, z[0]))
    scales = jnp.asarray(np.logspace(math.log10(exp.scale_min), math.log10(exp.scale_max),
                                     exp.num_scales) if output == "mean" else [1.0], dtype)
    compare = jax.jit(functools.partial(
        compare_loss_gradients, decode, log_likelihood=log_lik, losses={"loss": loss},
        factors={"loss": factor}))
    result = jax.device_get(compare(params, z, x, scales)["loss"])
    return {"max_relative_error": float(np.max(result.relative_error)),
            "min_cosine": float(np.min(result.cosine)),
            "scales": np.asarray(scales, np.float64).tolist(),
            "relative_error": np.asarray(result.relative_error, np.float64).max(1).tolist()}


def _huber_normalizer_check(delta: float) -> float:
    """max |log Z (library) - log of scipy's quadrature| over s in [1e-3, 10], float64."""
    import scipy.integrate

    def z(s):
        def f(u):
            return np.exp(-np.where(abs(u) <= delta, 0.5 * u * u, delta * (abs(u) - delta / 2))
                          / s)
        return sum(scipy.integrate.quad(f, a, b, limit=200)[0]
                   for a, b in ((-np.inf, -delta), (-delta, delta), (delta, np.inf)))

    scales = np.logspace(-3, 1, 9)
    with jax.enable_x64(True):
        library = np.asarray(lk.huber_log_normalizer(jnp.asarray(scales), delta))
    return float(np.max(np.abs(library - np.log([z(s) for s in scales]))))


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Measures every row; writes CSV, JSON and a report section to ``workdir``."""
    workdir, exp, dataset = common.measurement_setup(config, workdir, "loss_dictionary", GROUP)
    grey = np.asarray(dataset.train[: exp.batch_size], np.float64)
    levels = np.round(grey * (exp.num_levels - 1)) / (exp.num_levels - 1)
    if np.max(np.abs(levels - grey)) > 1e-6:
        raise ValueError(f"config `loss_dictionary.num_levels`={exp.num_levels}: the data "
                         f"are not on a {exp.num_levels}-level grid.")
    data = {"grey": levels, "binary": (grey > 0.5).astype(np.float64), "levels": levels}
    dtypes = {"float32": jnp.float32}
    rows, results = _rows(exp.huber_delta, exp.num_levels), {}
    for row in rows:
        results[row[0]] = {"float32": _measure(row, config, exp, data, jnp.float32)}
    if exp.float64:
        dtypes["float64"] = jnp.float64
        with jax.enable_x64(True):
            for row in rows:
                results[row[0]]["float64"] = _measure(row, config, exp, data, jnp.float64)
    summary = {"num_dims": int(grey.shape[-1]), "batch_size": exp.batch_size,
               "num_scales": exp.num_scales, "num_samples": exp.num_samples,
               "huber_delta": exp.huber_delta, "num_levels": exp.num_levels,
               "huber_log_normalizer_vs_quad": _huber_normalizer_check(exp.huber_delta),
               "rows": [{"loss": r[0], "likelihood": r[2], "dropped_constant": r[6],
                         "beta_map": r[7], "data": r[8], **{
                             f"{d}_{key}": results[r[0]][d][key] for d in dtypes
                             for key in ("max_relative_error", "min_cosine")}}
                        for r in rows]}
    csv_rows = [[name, dtype, scale, error]
                for name, by_dtype in results.items() for dtype, r in by_dtype.items()
                for scale, error in zip(r["scales"], r["relative_error"], strict=True)]
    common.write_csv(workdir / "loss_dictionary.csv",
                     ["loss", "dtype", "scale", "max_relative_error_over_samples"], csv_rows)
    common.write_json(workdir / "loss_dictionary.json", summary)
    common.save_config(config, workdir / "loss_dictionary_config.json")
    summary["report"] = _report_section(summary, list(dtypes))
    return summary


def _report_section(summary: dict, dtypes: list[str]) -> str:
    table = common.markdown_table(
        ["loss you write", "-log of", "dropped constant", "scale <-> beta", "data",
         *[f"max rel. error {d}" for d in dtypes]],
        [[r["loss"], r["likelihood"], r["dropped_constant"], r["beta_map"], r["data"],
          *[f"{r[f'{d}_max_relative_error']:.2g}" for d in dtypes]]
         for r in summary["rows"]])
    return f"""
Each loss is the negative log-likelihood named beside it, up to the dropped constant and a
factor, so grad(-log p) = factor * grad(loss) exactly: measured with `jax.grad` through an
untrained {summary['num_dims']}-pixel MLP decoder on {summary['batch_size']} digits, over
{summary['num_scales']} scales (sigma, b or s in [1e-2, 10]) x {summary['num_samples']}
latent samples, every decoder parameter (worst case). The losses are independent
implementations (optax where it has one), not the library's views of itself.

{table}

"loss + beta KL" is beta times the -ELBO of the likelihood in the row (plus a constant)
when beta is the map given. BCE on grey levels is the exception: its "likelihood" lacks
the continuous Bernoulli's log C(lambda), which depends on the decoder output, so its
gradient is not a multiple of the -log p gradient. The Huber loss is the -log of a proper
density once its normaliser Z(delta, s) is added (library log Z against scipy quadrature:
{summary['huber_log_normalizer_vs_quad']:.2g} in float64). Data: `grey` the digits (on
their {summary['num_levels']}-level grid), `binary` thresholded at 1/2.
Every scale's error is in `loss_dictionary.csv`; the table is `loss_dictionary.json`.
"""


if __name__ == "__main__":
    common.cli_main("loss_dictionary", run)
