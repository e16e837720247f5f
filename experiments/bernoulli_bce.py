"""Experiment: Bernoulli = -BCE on binary data; on grey levels BCE is no density, the CB is.

(a) On statically binarised digits, log Bernoulli(x; sigmoid(logits)) from the library
    (float32) is compared per example with BCE computed independently in float64 from the
    same decoder logits of a trained Bernoulli VAE (and with scipy's Bernoulli log-pmf).
(b) log C(lambda) of the continuous Bernoulli against lambda and against the logit, and the
    integral over x in [0, 1] of exp(-BCE(x; lambda)), the "density" BCE implies for grey
    levels: it is 1/C(lambda) < 1 (Gauss-Legendre on a lambda grid, scipy quad at a few).
(c) A BCE-trained (Bernoulli) VAE and a continuous-Bernoulli VAE on grey-level digits, same
    architecture, seed and epochs: reconstructions, samples, the per-grey-level bias of their
    outputs, and both evaluated as normalised densities on [0, 1]^D (the BCE model plus log C).

    python -m experiments.bernoulli_bce --workdir=results/bb [--config.train.num_epochs=200]
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.integrate
import scipy.special
import scipy.stats

from experiments import common
from experiments.common import style_axes
from experiments.configs.bernoulli_bce import GROUP
from vaejax import plotting
from vaejax import trainer as trainer_lib
from vaejax.config import validate_group
from vaejax.elbo import reparameterize
from vaejax.likelihoods import (
    bce,
    bernoulli_log_likelihood,
    continuous_bernoulli_log_likelihood,
    continuous_bernoulli_log_normalizer,
    continuous_bernoulli_mean,
)
from vaejax.models import VAE

_FLOAT32_EPS = float(np.finfo(np.float32).eps)
# (summary key, name of the expected pixels) of the four readings of the two decoders.
_VIEWS = (("bce_sigmoid", "BCE model: sigmoid(logits)"),
          ("bce_as_cb_mean", "BCE model read as CB: CB mean"),
          ("cb_mean", "CB model: CB mean"),
          ("cb_sigmoid", "CB model: sigmoid(logits) (mistake)"))

# ----------------------------------------------------------------------------- training


class _Model:
    """A trainer for one likelihood head (same seed: same initial weights); compiles once."""

    def __init__(self, config: ml_collections.ConfigDict, likelihood: str, dataset, **train):
        self.config = config.copy_and_resolve_references()
        self.config.model.likelihood = likelihood
        self.config.train.update(train)
        self.trainer, self.members = trainer_lib.build(self.config, dataset)

    def train(self, dataset, workdir, name: str):
        return common.train(self.config, dataset, workdir, f"bernoulli_bce/{name}",
                            trainer=self.trainer, members=self.members).state

    def test_metrics(self, state, dataset) -> dict:
        metrics = self.trainer.jit.evaluate(state, jnp.asarray(dataset.test), self.members)
        names = ("elbo", "recon", "kl") + (("iwae",) if self.config.eval.iwae_samples else ())
        return {name: float(np.asarray(getattr(metrics, name))[0]) for name in names}

    def expected_pixels(self, method: str, state, inputs):
        """The library's own expected pixels: Trainer.reconstruct(x) or .decode_means(z)."""
        return np.asarray(getattr(self.trainer.jit, method)(state, inputs, self.members))[0]


# Library calls are jitted as whole functions: called eagerly, every jnp op would compile
# its own tiny program (about 0.1 s each on a busy 2-core CPU).
_log_normalizer = jax.jit(continuous_bernoulli_log_normalizer)
_cb_mean = jax.jit(continuous_bernoulli_mean)


def _decoder_readings(model: VAE, params, z: jax.Array) -> dict[str, jax.Array]:
    """The decoder's logits at z [N, Z] and what each reading of them means, each [N, D]."""
    logits = model.apply(params, z, method=VAE.decode)["logits"]
    return {"logits": logits, "sigmoid": jax.nn.sigmoid(logits),
            "cb_mean": continuous_bernoulli_mean(logits),
            "log_c": continuous_bernoulli_log_normalizer(logits)}


def _sampled_log_likelihoods(model: VAE, params, x: jax.Array, key: jax.Array):
    """One z ~ q(z|x) per example: (decoder logits [N, D], log Bernoulli [N], BCE [N])."""
    mean, log_var = model.apply(params, x, method=VAE.encode)
    logits = model.apply(params, reparameterize(key, mean, log_var), method=VAE.decode)["logits"]
    return logits, bernoulli_log_likelihood(x, logits), bce(x, logits)


# ------------------------------------- (a) log Bernoulli = -BCE on binary data, against references


def _bce_reference_float64(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """BCE with logits per example in float64, TensorFlow's stable formula, written out.

    max(l, 0) - l x + log(1 + exp(-|l|)): no sigmoid is formed, so no log(0).
    """
    x, logits = np.asarray(x, np.float64), np.asarray(logits, np.float64)
    return np.sum(np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits))), -1)


def _binary_identity(config, workdir) -> dict:
    binary_config = config.copy_and_resolve_references()
    binary_config.data.binarize = "static"
    data = common.load_data(binary_config)
    if not data.binary:
        raise ValueError(f"static binarisation of {config.data.dataset!r} did not give 0/1 data.")
    compiled = _Model(binary_config, "bernoulli", data,
                      num_epochs=config.bernoulli_bce.binary_num_epochs)
    state = compiled.train(data, workdir, "binary")
    # One posterior sample per test digit: the decoder outputs the ELBO actually sees.
    logits, log_p, bce_library = common.host(jax.jit(functools.partial(
        _sampled_log_likelihoods, compiled.trainer.model))(
            common.first_member(state.params), jnp.asarray(data.test),
            jax.random.key(config.seed + 3)))
    log_p, bce_library = log_p.astype(np.float64), bce_library.astype(np.float64)  # float32
    bce_reference = _bce_reference_float64(data.test, logits)
    # A second, independent reference: scipy's Bernoulli pmf at p = sigmoid(logits).
    log_pmf = np.sum(scipy.stats.bernoulli.logpmf(
        data.test.astype(np.int64), scipy.special.expit(logits.astype(np.float64))), -1)
    error = np.abs(log_p + bce_reference)
    return {
        "bce_reference": bce_reference, "log_p": log_p, "log_pmf": log_pmf, "abs_error": error,
        "summary": {
            "binary_num_test": int(data.test.shape[0]),
            "binary_max_abs_bernoulli_ll_plus_bce": float(error.max()),
            "binary_max_rel_bernoulli_ll_plus_bce": float(np.max(error / bce_reference)),
            "binary_max_abs_scipy_logpmf_plus_bce_float64": float(
                np.abs(log_pmf + bce_reference).max()),
            "binary_max_abs_library_ll_plus_library_bce": float(
                np.abs(log_p + bce_library).max()),
            "binary_mean_bce": float(bce_reference.mean()),
            "binary_max_abs_logit": float(np.abs(logits).max()),
            "binary_test_elbo": compiled.test_metrics(state, data)["elbo"],
        },
    }


# ------------------------------------------- (b) log C(lambda), and the integral of exp(-BCE)


def _log_c_reference_float64(logits: np.ndarray) -> np.ndarray:
    """log C in float64 from the closed form l / tanh(l/2) (C(0) = 2), an independent path."""
    logits = np.asarray(logits, np.float64)
    safe = np.where(logits == 0, 1.0, logits)
    return np.where(logits == 0, math.log(2.0), np.log(safe / np.tanh(safe / 2)))


def _exp_neg_bce(x: jax.Array, logits: jax.Array) -> jax.Array:
    """exp(-BCE(x; sigmoid(logits))) elementwise: the 'density' that BCE implies."""
    return jnp.exp(-bce(x, logits, event_ndims=0))


def _gauss_legendre_integral(nodes, weights, logits):
    """(integral over [0, 1] of exp(-BCE(x; lambda)) [L], log C(lambda) [L]) for logits [L]."""
    integrand = _exp_neg_bce(jnp.broadcast_to(nodes, logits.shape + nodes.shape),
                             jnp.broadcast_to(logits[:, None], logits.shape + nodes.shape))
    return jnp.sum(weights * integrand, axis=-1), continuous_bernoulli_log_normalizer(logits)


def _densities(x, logits):
    """exp(-BCE(x; lambda)) and the CB density C(lambda) exp(-BCE), each [L, X]."""
    shape = logits.shape + x.shape
    x, logits = jnp.broadcast_to(x, shape), jnp.broadcast_to(logits[:, None], shape)
    return _exp_neg_bce(x, logits), jnp.exp(
        continuous_bernoulli_log_likelihood(x, logits, event_ndims=0))


def _normalizer(config) -> dict:
    config = config.bernoulli_bce
    lambdas = np.linspace(config.lambda_min, 1 - config.lambda_min, config.num_lambdas)
    logits = scipy.special.logit(lambdas)
    logit_axis = np.linspace(-config.logit_max, config.logit_max, config.num_lambdas)
    nodes, weights = np.polynomial.legendre.leggauss(config.num_quadrature_nodes)
    nodes, weights = (nodes + 1) / 2, weights / 2  # [-1, 1] -> [0, 1]
    integral_fn = jax.jit(_gauss_legendre_integral)

    def integrate(dtype):
        integral, log_c = integral_fn(*(jnp.asarray(a, dtype) for a in (nodes, weights, logits)))
        return np.asarray(integral, np.float64), np.asarray(log_c, np.float64)

    checked = np.asarray(config.integration_lambdas, np.float64)
    x_grid = np.linspace(0, 1, 201)
    integral32, log_c32 = integrate(jnp.float32)
    log_c_axis32 = np.asarray(_log_normalizer(jnp.asarray(logit_axis, jnp.float32)), np.float64)
    with jax.enable_x64(True):
        integral64, log_c64 = integrate(jnp.float64)
        integrand = jax.jit(_exp_neg_bce)  # scalar float64 calls from quad: compile once
        checked_logits = jnp.asarray(scipy.special.logit(checked), jnp.float64)
        quad_pairs = np.stack([
            [scipy.integrate.quad(lambda t, l=logit: float(integrand(jnp.float64(t), l)),
                                  0.0, 1.0, epsabs=1e-14, epsrel=1e-13)[0]
             for logit in checked_logits],
            np.exp(-np.asarray(_log_normalizer(checked_logits)))], axis=1)
        # exp(-BCE) and the CB density on a grid of x for the checked lambdas.
        unnormalised, density = common.host(jax.jit(_densities)(
            jnp.asarray(x_grid), checked_logits))
    reference = _log_c_reference_float64(logits)
    axis_reference = _log_c_reference_float64(logit_axis)
    half = int(np.argmin(np.abs(lambdas - 0.5)))
    return {
        "lambdas": lambdas, "log_c32": log_c32, "log_c64": log_c64, "log_c_reference": reference,
        "integral32": integral32, "integral64": integral64, "logit_axis": logit_axis,
        "log_c_axis32": log_c_axis32, "log_c_axis_reference": axis_reference,
        "checked_lambdas": checked, "quad": quad_pairs, "x_grid": x_grid,
        "unnormalised": unnormalised, "density": density,
        "summary": {
            "integral_max_abs_error_float64": float(np.abs(integral64 - np.exp(-log_c64)).max()),
            "integral_max_abs_error_float32": float(np.abs(integral32 - np.exp(-log_c32)).max()),
            "integral_quad_max_abs_error": float(np.abs(quad_pairs[:, 0] - quad_pairs[:, 1]).max()),
            "integral_max": float(integral64.max()), "integral_min": float(integral64.min()),
            "integral_at_half": float(integral64[half]), "lambda_at_half": float(lambdas[half]),
            "log_c_max_abs_error_float32": float(max(np.abs(log_c32 - reference).max(),
                                                     np.abs(log_c_axis32 - axis_reference).max())),
            "log_c_min_lambda": float(log_c64[0]), "lambda_min": float(lambdas[0]),
            "integration_lambdas": [float(v) for v in checked],
            "integration_values_quad": [float(v) for v in quad_pairs[:, 0]],
        },
    }


# ------------------------------------------ (c) BCE-trained and continuous-Bernoulli VAEs


@jax.jit
def _cb_mean_inverse(targets: jax.Array) -> jax.Array:
    """Logits l with CB mean(l) = target, by bisection (the mean is increasing in l)."""

    def halve(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        below = continuous_bernoulli_mean(mid) < targets
        return jnp.where(below, mid, low), jnp.where(below, high, mid)

    bounds = (jnp.full_like(targets, -1e3), jnp.full_like(targets, 1e3))
    low, high = jax.lax.fori_loop(0, 80, halve, bounds)  # 2e3 / 2^80: float32 resolution
    return 0.5 * (low + high)


def _bias_theory() -> dict:
    """Per-pixel optima for a target grey level x: BCE's lambda = x, and the CB's."""
    x = np.linspace(0.005, 0.995, 199)
    cb_logits = np.asarray(_cb_mean_inverse(jnp.asarray(x, jnp.float32)), np.float64)
    return {
        "x": x,
        # BCE's optimum is lambda = x; read as a CB density its mean is pulled toward 1/2.
        "cb_mean_at_lambda_x": np.asarray(_cb_mean(
            jnp.asarray(scipy.special.logit(x), jnp.float32)), np.float64),
        # The CB's optimum has mean x; its lambda = sigmoid(logits) is pushed away from 1/2.
        "cb_optimal_lambda": scipy.special.expit(cb_logits),
        "cb_inverse_max_error": float(np.abs(np.asarray(_cb_mean(
            jnp.asarray(cb_logits, jnp.float32))) - x).max()),
    }


def _binned(x: np.ndarray, values: np.ndarray, num_bins: int):
    index = np.minimum((x * num_bins).astype(np.int64), num_bins - 1).ravel()
    counts = np.bincount(index, minlength=num_bins)
    keep = counts > 0
    # (mean x, mean value) of each non-empty bin of x
    return tuple(np.bincount(index, v.ravel(), num_bins)[keep] / counts[keep] for v in (x, values))


def _grey_comparison(config, data, workdir) -> dict:
    bernoulli, cb = _Model(config, "bernoulli", data), _Model(config, "continuous_bernoulli", data)
    tic = time.perf_counter()
    bce_state = bernoulli.train(data, workdir, "bce")
    cb_state = cb.train(data, workdir, "cb")
    train_seconds = time.perf_counter() - tic
    bce_as_bernoulli = bernoulli.test_metrics(bce_state, data)  # -BCE: not a density
    bce_as_cb = cb.test_metrics(bce_state, data)  # same logits, plus log C: a density
    cb_metrics = cb.test_metrics(cb_state, data)

    # Both models share one architecture (a logits head), so one jitted decode serves both.
    model = cb.trainer.model
    encode = jax.jit(lambda params, x: model.apply(params, x, method=VAE.encode)[0])
    readings_fn = jax.jit(functools.partial(_decoder_readings, model))
    x_test, num, n_test = jnp.asarray(data.test), config.bernoulli_bce.num_images, len(data.test)
    # As many prior samples as test digits (for the brightness statistic); num are shown.
    z_prior = jax.random.normal(jax.random.key(config.seed + 1), (n_test, config.model.latent))
    # Test reconstructions at z = E[z|x] [N] and prior samples [N], in one call per model.
    readings = {name: common.host(readings_fn(p, jnp.concatenate([encode(p, x_test), z_prior])))
                for name, p in (("bce", common.first_member(bce_state.params)),
                                ("cb", common.first_member(cb_state.params)))}
    # Expected pixels under each reading of each decoder, in the order of _VIEWS.
    views = [readings["bce"]["sigmoid"], readings["bce"]["cb_mean"],
             readings["cb"]["cb_mean"], readings["cb"]["sigmoid"]]
    recon_views = {name: v[:n_test] for (_, name), v in zip(_VIEWS, views, strict=True)}
    sample_views = {name: v[n_test:] for (_, name), v in zip(_VIEWS, views, strict=True)}
    # The library's own expected pixels (Trainer.reconstruct, decode_means) must agree.
    agreement = max(np.abs(library - mine).max() for library, mine in (
        (bernoulli.expected_pixels("reconstruct", bce_state, x_test), views[0][:n_test]),
        (cb.expected_pixels("reconstruct", cb_state, x_test), views[2][:n_test]),
        (bernoulli.expected_pixels("decode_means", bce_state, z_prior), views[0][n_test:]),
        (cb.expected_pixels("decode_means", cb_state, z_prior), views[2][n_test:])))
    recon_rows = {"data (grey test digits)": data.test[:num],
                  **{name: values[:num] for name, values in recon_views.items()}}
    sample_rows = {name: values[:num] for name, values in sample_views.items()}
    binned = {name: _binned(data.test, values, config.bernoulli_bce.num_bias_bins)
              for name, values in recon_views.items()}
    log_c_bce, log_c_cb = (readings[m]["log_c"][:n_test].astype(np.float64) for m in ("bce", "cb"))
    ink, background = data.test >= 0.75, data.test <= 0.0
    summary = {
        "num_dims": data.num_dims, "num_test": n_test,
        "num_epochs": config.train.num_epochs, "train_seconds_both_models": train_seconds,
        "eval_iwae_samples": config.eval.iwae_samples,
        "library_expected_pixels_max_abs_diff": float(agreement),
        "mean_log_c_per_pixel_bce_model": float(log_c_bce.mean()),
        "mean_log_c_per_image_bce_model": float(log_c_bce.sum(-1).mean()),
        "mean_log_c_per_pixel_cb_model": float(log_c_cb.mean()),
        # Same L = 1 latent draws in both evaluations: the difference is E_q sum_i log C.
        "elbo_difference_per_pixel_bce_model": float(
            (bce_as_cb["elbo"] - bce_as_bernoulli["elbo"]) / data.num_dims),
    }
    for prefix, metrics in (("bce_model_bernoulli", bce_as_bernoulli),
                            ("bce_model_normalized", bce_as_cb), ("cb_model", cb_metrics)):
        summary.update({f"{prefix}_{name}": value for name, value in metrics.items()})
    for key, name in _VIEWS:
        values = recon_views[name]
        summary[f"mae_{key}"] = float(np.abs(values - data.test).mean())
        summary[f"mean_on_background_{key}"] = float(values[background].mean())
        summary[f"mean_on_ink_{key}"] = float(values[ink].mean())
        summary[f"bright_sample_fraction_{key}"] = float(np.mean(
            sample_views[name].mean(-1) > 0.5))
    # Test digits are dark on average: a sample with mean grey level > 1/2 is "inverted".
    summary["bright_fraction_test_data"] = float(np.mean(data.test.mean(-1) > 0.5))
    summary["mean_data_on_ink"] = float(data.test[ink].mean())
    return {"summary": summary, "recon_rows": recon_rows, "sample_rows": sample_rows,
            "binned": binned, "image_shape": data.image_shape}


# ------------------------------------------------------------------------------ figures


def _identity_figure(identity: dict, title: str):
    import matplotlib.pyplot as plt

    bce_ref, log_p, log_pmf = identity["bce_reference"], identity["log_p"], identity["log_pmf"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    line = np.array([bce_ref.min(), bce_ref.max()])
    axes[0].plot(line, line, "-", color="black", lw=1, label="y = x")
    axes[0].plot(bce_ref, -log_p, "o", ms=3, mfc="none", color="C0",
                 label="-log Bernoulli (vaejax, float32)")
    style_axes(axes[0], "BCE with logits (independent float64 formula), nats",
               "-log p(x|z), nats", "binarised test digits: -log p against BCE")
    ax = axes[1]
    order = np.argsort(bce_ref)
    ax.semilogy(bce_ref, np.maximum(identity["abs_error"], 1e-18), "o", ms=3, mfc="none",
                color="C0", label="|log p (float32) + BCE (float64)|")
    ax.semilogy(bce_ref, np.maximum(np.abs(log_pmf + bce_ref), 1e-18), "x", ms=3, color="C1",
                label="|scipy log-pmf + BCE| (both float64; exact 0 drawn at 1e-18)")
    ax.semilogy(bce_ref[order], _FLOAT32_EPS * bce_ref[order], "--", color="gray", lw=1,
                label="float32 eps x BCE")
    style_axes(ax, "BCE (nats)", "absolute difference (nats)",
               f"max {identity['abs_error'].max():.2g} nats: float rounding", legend=7,
               grid="both")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _normalizer_figure(norm: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
    # Panels 1-2: log C, float32 library (every 4th point) on the float64 closed form.
    for ax, x, reference, library, label, xlabel, ylabel, title in (
            (axes[0], norm["lambdas"], norm["log_c_reference"], norm["log_c32"],
             "closed form (float64)", r"$\lambda$", r"$\log C(\lambda)$",
             r"CB normaliser against $\lambda$"),
            (axes[1], norm["logit_axis"], norm["log_c_axis_reference"], norm["log_c_axis32"],
             r"$\log(l / \tanh(l/2))$ (float64)", "logit l", r"$\log C$",
             r"against the logit: $\approx \log|l|$ for large $|l|$")):
        ax.plot(x, reference, "-", color="black", lw=1, label=label)
        ax.plot(x[::4], library[::4], "o", ms=3, mfc="none", color="C0", label="vaejax (float32)")
        style_axes(ax, xlabel, ylabel, title)
    axes[0].axhline(math.log(2), color="gray", ls="--", lw=0.8)
    axes[0].text(0.02, math.log(2) + 0.05, "log 2", fontsize=7, color="gray")
    ax = axes[2]
    for i, lam in enumerate(norm["checked_lambdas"]):
        ax.plot(norm["x_grid"], norm["unnormalised"][i], "--", color=f"C{i}", lw=1)
        ax.plot(norm["x_grid"], norm["density"][i], "-", color=f"C{i}", lw=1.2,
                label=rf"$\lambda$={lam:g}: area {norm['quad'][i, 0]:.3f}")
    style_axes(ax, "x (grey level)", "density", r"dashed $e^{-\mathrm{BCE}(x;\lambda)}$, "
               r"solid CB = $C(\lambda)\,e^{-\mathrm{BCE}}$", legend=None)
    ax.legend(fontsize=7, title="area under dashed", title_fontsize=7)
    ax = axes[3]
    ax.plot(norm["lambdas"], np.exp(-norm["log_c64"]), "-", color="black", lw=1.5,
            label=r"$1/C(\lambda)$")
    ax.plot(norm["lambdas"][::4], norm["integral64"][::4], "o", ms=4, mfc="none", color="C0",
            label=r"$\int_0^1 e^{-\mathrm{BCE}(x;\lambda)}\,dx$ (Gauss-Legendre)")
    ax.plot(norm["checked_lambdas"], norm["quad"][:, 0], "s", ms=5, color="C3",
            label="scipy quad")
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.text(0.02, 0.95, "a density would integrate to 1", fontsize=7, color="gray")
    ax.set_ylim(0, 1.05)
    style_axes(ax, r"$\lambda$", "integral over x in [0, 1]",
               f"BCE's 'density' integrates to at most {norm['summary']['integral_max']:.3f}",
               legend=7, loc="lower center")
    fig.suptitle("Grey levels: BCE is not a normalised likelihood; the continuous Bernoulli "
                 r"adds $\log C(\lambda)$")
    fig.tight_layout()
    return fig


def _bias_figure(theory: dict, binned: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    x = theory["x"]
    axes[0].plot(x, x, "-", color="black", lw=1, label=r"BCE optimum $\lambda = x$ (= its mean)")
    axes[0].plot(x, theory["cb_mean_at_lambda_x"], "-", color="C1",
                 label=r"CB mean at $\lambda = x$ (BCE read as a density)")
    axes[0].plot(x, theory["cb_optimal_lambda"], "-", color="C3",
                 label=r"CB optimum $\lambda^*$ (its mean is x)")
    style_axes(axes[0], "target grey level x", "decoder output", "one pixel, per-pixel optimum",
               legend=7)
    axes[1].plot([0, 1], [0, 1], "-", color="black", lw=1, label="y = x")
    for i, (name, (mean_x, mean_v)) in enumerate(binned.items()):
        axes[1].plot(mean_x, mean_v, "o-", ms=4, color=f"C{i}", label=name)
    style_axes(axes[1], "test pixel grey level x", "mean reconstruction at z = E[z|x]",
               "trained models, test digits", legend=7)
    fig.tight_layout()
    return fig


def _image_figure(rows: dict, image_shape, title: str):
    return plotting.image_rows_figure(np.stack(list(rows.values())), image_shape, list(rows),
                                      title=title)


# ------------------------------------------------------------------------------ the experiment


def _csv_rows(identity, norm, theory, grey) -> list[list]:
    bce_ref, lambdas, x = identity["bce_reference"], norm["lambdas"], theory["x"]
    specs = [  # (figure, panel, series, xs, ys)
        ("identity", "per_example", "log_p_float32", bce_ref, identity["log_p"]),
        ("identity", "per_example", "scipy_logpmf_float64", bce_ref, identity["log_pmf"]),
        ("normalizer", "log_c_vs_lambda", "vaejax_float32", lambdas, norm["log_c32"]),
        ("normalizer", "log_c_vs_lambda", "vaejax_float64", lambdas, norm["log_c64"]),
        ("normalizer", "log_c_vs_lambda", "closed_form_float64", lambdas, norm["log_c_reference"]),
        ("normalizer", "log_c_vs_logit", "vaejax_float32", norm["logit_axis"],
         norm["log_c_axis32"]),
        ("normalizer", "log_c_vs_logit", "closed_form_float64", norm["logit_axis"],
         norm["log_c_axis_reference"]),
    ]
    for i, lam in enumerate(norm["checked_lambdas"]):
        specs += [("normalizer", "densities", f"{series}_lambda={lam:g}", norm["x_grid"],
                   norm[key][i]) for series, key in (("exp_neg_bce", "unnormalised"),
                                                     ("cb_density", "density"))]
    specs += [
        ("normalizer", "integral", "gauss_legendre_float64", lambdas, norm["integral64"]),
        ("normalizer", "integral", "gauss_legendre_float32", lambdas, norm["integral32"]),
        ("normalizer", "integral", "inverse_c_float64", lambdas, np.exp(-norm["log_c64"])),
        ("normalizer", "integral", "scipy_quad", norm["checked_lambdas"], norm["quad"][:, 0]),
        ("bias", "theory", "bce_optimum_lambda", x, x),
        ("bias", "theory", "cb_mean_at_lambda_x", x, theory["cb_mean_at_lambda_x"]),
        ("bias", "theory", "cb_optimal_lambda", x, theory["cb_optimal_lambda"]),
        *(("bias", "measured", name, mx, mv) for name, (mx, mv) in grey["binned"].items()),
    ]
    for figure, image_rows in (("reconstructions", grey["recon_rows"]),
                               ("samples", grey["sample_rows"])):
        specs += [(figure, name, f"image_{index}", np.arange(image.size), image)
                  for name, images in image_rows.items() for index, image in enumerate(images)]
    return [row for spec in specs for row in common.series(*spec)]


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs (a), (b), (c); writes figures, CSV, JSON and returns the summary with a report."""
    workdir = common.prepare_workdir(workdir)
    exp = validate_group(config, "bernoulli_bce", GROUP)
    tic = time.perf_counter()
    identity = _binary_identity(config, workdir)
    norm = _normalizer(config)
    theory = _bias_theory()
    grey = _grey_comparison(config, common.load_data(config), workdir)

    index_01 = int(np.argmin(np.abs(theory["x"] - 0.1)))
    summary = {
        **identity["summary"], **norm["summary"], **grey["summary"],
        "theory_x": float(theory["x"][index_01]),
        "theory_cb_mean_at_lambda_x": float(theory["cb_mean_at_lambda_x"][index_01]),
        "theory_cb_optimal_lambda": float(theory["cb_optimal_lambda"][index_01]),
        "theory_cb_inverse_max_error": theory["cb_inverse_max_error"],
        "binary_num_epochs": exp.binary_num_epochs,
    }
    common.write_csv(workdir / "bernoulli_bce.csv", common.SERIES_COLUMNS,
                     _csv_rows(identity, norm, theory, grey))
    stem = workdir / "bernoulli_bce"
    common.save_figure(_identity_figure(
        identity, f"log Bernoulli = -BCE on {config.data.dataset} binarised (static), "
                  f"{summary['binary_num_test']} test digits, Bernoulli VAE after "
                  f"{exp.binary_num_epochs} epochs"), f"{stem}_identity")
    common.save_figure(_normalizer_figure(norm), f"{stem}_normalizer")
    common.save_figure(_bias_figure(theory, grey["binned"]), f"{stem}_bias")
    common.save_figure(_image_figure(grey["recon_rows"], grey["image_shape"],
                                     "reconstructions E[x | z = E[z|x]] of grey test digits"),
                       f"{stem}_reconstructions")
    common.save_figure(_image_figure(grey["sample_rows"], grey["image_shape"],
                                     "samples: decoder outputs at z ~ N(0, I)"), f"{stem}_samples")
    summary["wall_seconds"] = time.perf_counter() - tic
    common.write_json(workdir / "bernoulli_bce.json", summary)
    common.save_config(config, workdir / "bernoulli_bce_config.json")
    summary["report"] = _report_section(summary)
    return summary


def _report_section(s: dict) -> str:
    d = s["num_dims"]
    table = common.markdown_table(
        ["model (training objective)", "evaluated as", "test ELBO", "recon", "KL",
         f"IWAE K={s['eval_iwae_samples']}" if s["eval_iwae_samples"] else "IWAE (off)"],
        [[model, reading, *(s[f"{key}_{part}"] for part in ("elbo", "recon", "kl")),
          s.get(f"{key}_iwae", "-")]
         for key, model, reading in (
             ("bce_model_bernoulli", "BCE (Bernoulli decoder)", "-BCE: not a density on [0,1]^D"),
             ("bce_model_normalized", "BCE (Bernoulli decoder)",
              "continuous Bernoulli (-BCE + log C)"),
             ("cb_model", "continuous Bernoulli", "continuous Bernoulli"))])
    bias_table = common.markdown_table(
        ["output", "mean abs error", "mean on background (x = 0)",
         f"mean on ink (x >= 0.75; data {s['mean_data_on_ink']:.3f})"],
        [[name, s[f"mae_{key}"], s[f"mean_on_background_{key}"], s[f"mean_on_ink_{key}"]]
         for key, name in (("bce_sigmoid", "BCE model: sigmoid(logits)"),
                           ("bce_as_cb_mean", "BCE model read as CB: CB mean"),
                           ("cb_mean", "CB model: CB mean"),
                           ("cb_sigmoid", "CB model: sigmoid(logits) (the mistake)"))])
    return f"""
**(a) Binary data: log Bernoulli = -BCE.** On statically binarised digits (D = {d}) a
Bernoulli VAE was trained for {s['binary_num_epochs']} epochs; for one posterior sample per
test digit ({s['binary_num_test']} digits, logits up to |l| = {s['binary_max_abs_logit']:.3g})
the library's float32 `bernoulli_log_likelihood` plus BCE computed independently in float64
(`max(l,0) - l x + log1p(exp(-|l|))`) is at most
**{s['binary_max_abs_bernoulli_ll_plus_bce']:.2g} nats**
({s['binary_max_rel_bernoulli_ll_plus_bce']:.2g} relative to a mean BCE of
{s['binary_mean_bce']:.3g} nats): float32 rounding. scipy's Bernoulli log-pmf and that BCE,
both float64, differ by at most {s['binary_max_abs_scipy_logpmf_plus_bce_float64']:.2g}.
(`vaejax.bce` is defined as `-bernoulli_log_likelihood`, so the library pair agrees to
{s['binary_max_abs_library_ll_plus_library_bce']:.2g}; only the independent reference measures
anything.) Here -BCE is a true log-probability: test ELBO {s['binary_test_elbo']:.2f} nats.

![log Bernoulli equals -BCE on binarised digits](bernoulli_bce_identity.png)

Left: -log p from the library against the float64 BCE for every test digit (on the line);
right: their absolute difference, max {s['binary_max_abs_bernoulli_ll_plus_bce']:.2g} nats,
at the float32 rounding scale eps x BCE.

**(b) Grey levels: BCE is not a normalised likelihood.** For x in [0, 1],
exp(-BCE(x; lambda)) = lambda^x (1 - lambda)^(1-x) integrates over x to
(2 lambda - 1) / logit(lambda) = 1/C(lambda), which is below 1 for every lambda (at most
{s['integral_max']:.4f}, at lambda = {s['lambda_at_half']:.3g}: C(1/2) = 2; down to
{s['integral_min']:.4f} at lambda = {s['lambda_min']:g}). The continuous Bernoulli multiplies
by C(lambda) and integrates to 1.

![log C and the integral of exp(-BCE)](bernoulli_bce_normalizer.png)

Panels 1-2: log C(lambda) >= log 2 against lambda and against the logit (library float32
against the float64 closed form l / tanh(l/2): max abs error
{s['log_c_max_abs_error_float32']:.2g}). Panel 3: exp(-BCE(x; lambda)) (dashed, areas
{', '.join(f'{v:.3f}' for v in s['integration_values_quad'])} for lambda =
{', '.join(f'{v:g}' for v in s['integration_lambdas'])}) and the CB density (solid). Panel 4:
the numerical integral equals 1/C(lambda): max abs error
{s['integral_max_abs_error_float64']:.2g} (Gauss-Legendre, float64),
{s['integral_max_abs_error_float32']:.2g} (float32), {s['integral_quad_max_abs_error']:.2g}
(scipy quad).

**(c) Training on grey digits.** Same architecture, seed and {s['num_epochs']} epochs, one
model trained with BCE (Bernoulli decoder) and one with the continuous-Bernoulli likelihood.
Test bounds in nats per digit ({s['num_test']} grey test digits, L = 1, analytic KL):

{table}

The BCE model's logits read as a continuous Bernoulli add E_q sum_i log C(lambda_i): mean
log C at its test outputs is **{s['mean_log_c_per_pixel_bce_model']:.3f} nats per pixel**
({s['mean_log_c_per_image_bce_model']:.1f} per digit; ELBO difference
{s['elbo_difference_per_pixel_bce_model']:.3f} per pixel), against
{s['mean_log_c_per_pixel_cb_model']:.3f} at the CB model's outputs. Both rows 2 and 3 are
normalised densities on [0, 1]^{d} and comparable; row 1 is not (it is no density at all).
The CB model's test ELBO is higher by
{s['cb_model_elbo'] - s['bce_model_normalized_elbo']:.1f} nats.

![reconstructions of grey digits](bernoulli_bce_reconstructions.png)

Reconstructions at z = E[z|x]: the BCE model's sigmoid(logits), the same logits read as a
CB (its mean, pulled toward grey), the CB model's mean (mean abs error
{s['mae_cb_mean']:.3f} against {s['mae_bce_sigmoid']:.3f} for BCE's sigmoid and
{s['mae_bce_as_cb_mean']:.3f} for BCE read as a CB) and the CB model's sigmoid(logits), the
common mistake: near-binary (mean {s['mean_on_background_cb_sigmoid']:.3f} on background,
{s['mean_on_ink_cb_sigmoid']:.3f} on ink), sharper than what the model predicts (mean abs
error {s['mae_cb_sigmoid']:.3f}: on nearly binary digits the exaggeration costs little).

![samples](bernoulli_bce_samples.png)

Decoder outputs for the same z ~ N(0, I) under the four readings. Of
{s['num_test']} prior samples, the fraction with mean grey level above 1/2 (white
background; {s['bright_fraction_test_data']:.3f} of test digits) is
{s['bright_sample_fraction_bce_sigmoid']:.3f} for the BCE model and
{s['bright_sample_fraction_cb_mean']:.3f} for the CB model (its mean): a higher test ELBO
is a claim about likelihood, not about the quality of samples from the prior.

![bias toward 1/2](bernoulli_bce_bias.png)

Left, one pixel with target x: BCE's optimum is lambda = x; read as a density its CB mean is
pulled toward 1/2 (x = {s['theory_x']:.3g} gives mean {s['theory_cb_mean_at_lambda_x']:.3f}).
The CB's optimum has mean exactly x, so its lambda is pushed away from 1/2 (lambda* =
{s['theory_cb_optimal_lambda']:.2g} for the same x): plotting sigmoid(logits) of a CB decoder
exaggerates contrast. Right, measured per grey level on the test digits:

{bias_table}
"""


if __name__ == "__main__":
    common.cli_main("bernoulli_bce", run)
