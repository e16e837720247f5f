"""bfloat16 / float16 inputs: computed and returned in float32, gradients in the input dtype.

The contract (module docstrings of `vaejax.likelihoods`, `vaejax.kl`, `vaejax.elbo`):
low-precision inputs are upcast to float32 on entry, so the result must be *the float32
result on the same, already rounded inputs*. The reference is therefore the library's own
float32 path fed ``x.astype(low).astype(float32)``: only the plumbing (where the casts
happen) is tested here, the float32 numerics are tested against scipy/mpmath elsewhere.
For `elbo` and `iwae_bound` the contract also rounds z to the posterior's dtype; their
reference is written out here from the documented formula (z = mean + exp(log_var/2) eps_k,
eps_k = normal(fold_in(key, k)) in float32, rounded once to the posterior's dtype).

Tolerances, from the dtypes:

* Values: both paths run the same float32 operations on the same float32 numbers; XLA
  may fuse or order the two compiled programs differently, which moves a sum of n terms by
  at most ~n eps32 times the sum of their magnitudes. The sums here have n <= 20 terms
  of one magnitude, so 16 eps32 relative to max(1, |reference|) bounds it (eps32 = 2^-23).
* Gradients: the gradient with respect to a low-precision input is the float32 gradient
  rounded once to that dtype (the transpose of the cast), i.e. within half an ulp, at most
  eps_low / 2 relative (eps_bf16 = 2^-7, eps_f16 = 2^-10), plus the float32 reordering
  above, which is ~2^-19 relative. So rtol = eps_low (twice the rounding bound), with an
  absolute floor of the dtype's smallest subnormal for gradients that round to one.

All functions of one dtype are compiled as one jitted program (values and gradients), so
the module costs four compilations, not one per function.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from vaejax import kl
from vaejax import likelihoods as lik
from vaejax.elbo import ElboTerms, elbo, iwae_bound, reparameterize

LOW = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}
EPS32 = float(np.finfo(np.float32).eps)
VALUE_RTOL = 16 * EPS32
B, D, Z, L, K = 3, 5, 4, 3, 6
KEY = jax.random.key(0)
F16_MAX = float(np.finfo(np.float16).max)  # 65504


def eps_of(dtype) -> float:
    return float(ml_dtypes.finfo(dtype).eps)


def smallest_subnormal(dtype) -> float:
    return float(ml_dtypes.finfo(dtype).smallest_subnormal)


# --------------------------------------------------------------------------- inputs

_rng = np.random.default_rng(0)
_W = (0.3 * _rng.normal(size=(Z, D))).astype(np.float32)  # the user's decoder weights
_X_DECODER = _rng.uniform(size=(B, D)).astype(np.float32)

MODERATE = {
    "x": _rng.uniform(size=(B, D)),
    "binary": (_rng.uniform(size=(B, D)) < 0.5).astype(np.float64),
    "mean": _rng.uniform(size=(B, D)),
    "sigma": _rng.uniform(0.05, 2.0, size=(D,)),  # per pixel, shared over the batch
    "log_sigma": _rng.uniform(-2.0, 1.0, size=(B, D)),
    "logits": 3.0 * _rng.normal(size=(B, D)),
    "z": _rng.normal(size=(B, Z)),
    "post_mean": _rng.normal(size=(B, Z)),
    "post_log_var": _rng.uniform(-2.0, 1.0, size=(B, Z)),
    "prior_mean": _rng.normal(size=(Z,)),
    "prior_log_var": _rng.uniform(-1.0, 1.0, size=(Z,)),
    "positive": _rng.uniform(0.1, 3.0, size=(B,)),  # sigma or beta for the converters
    "nats": _rng.uniform(100.0, 2000.0, size=(B,)),
}


def _extreme(low_name):
    """Inputs at the ends of the promised ranges (module docstrings) for one dtype."""
    f16 = low_name == "float16"
    sigma = [2.0**-14, 1e-3, 1.0, 1e3, F16_MAX] if f16 else [1e-6, 1e-3, 1.0, 1e3, 1e6]
    residual = [-1e4, -1.0, 0.0, 1.0, 1e4]
    sigma_grid, residual_grid = (a.ravel() for a in np.meshgrid(sigma, residual))
    logit_end = F16_MAX if f16 else 1e4
    logits = np.array([-logit_end, -1e4, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 1e4,
                       logit_end])
    x01 = np.resize([0.0, 0.3, 1.0], logits.size)
    log_var = np.array([-30.0, -10.0, -1e-3, 0.0, 1e-3, 10.0, 30.0])
    big = np.resize([-1e3, 0.0, 1e3, 5.0], log_var.size)
    return {
        "x": residual_grid,  # with mean 0: every residual against every sigma
        "mean": np.zeros_like(residual_grid),
        "sigma": sigma_grid,
        "log_sigma": np.log(sigma_grid).clip(-13.8, 13.8),
        "x_opt": np.resize([-1e4, 0.5, 1e4, -3.0, 7.0], (2, 5)),
        "mean_opt": np.resize([1e4, -0.5, 0.0, 2.0, -1e4], (2, 5)),
        "logits": logits,
        "x01": x01,
        "z": np.resize([-1e3, 0.0, 1e3, -7.0], log_var.size),
        "kl_mean": big,
        "log_var": log_var,
        "post_mean": np.resize([-1e3, 0.0, 1e3, 3.0, -2.0], (B, Z)),  # the decoder's batch
        "post_log_var": np.resize([-30.0, 0.0, 10.0, 1.0, -5.0], (B, Z)),
    }


# --------------------------------------------------------------------------- the user's decoder


def decoder_in_z_dtype(z):
    """A user's Gaussian decoder computing in z's dtype: z [B, Z] -> [B] in that dtype."""
    mean = z @ jnp.asarray(_W).astype(z.dtype)
    return jnp.sum(-0.5 * jnp.square(jnp.asarray(_X_DECODER).astype(z.dtype) - mean), axis=-1)


def decoder_in_float32(z):
    """The same decoder computing in float32 (for the range test, where z reaches 1e3)."""
    mean = z.astype(jnp.float32) @ jnp.asarray(_W)
    return jnp.sum(-0.5 * jnp.square(jnp.asarray(_X_DECODER) - mean), axis=-1)


def _fold_in_eps(num, shape):
    """eps_k = normal(fold_in(KEY, k)) in float32, as vaejax.elbo documents: [num, *shape]."""
    return jax.vmap(
        lambda k: jax.random.normal(jax.random.fold_in(KEY, k), shape, jnp.float32)
    )(jnp.arange(num))


def _z_float32(mean, log_var, num):
    """The documented draws before rounding: z_k = mean + exp(log_var/2) eps_k, float32."""
    return mean + jnp.exp(0.5 * log_var) * _fold_in_eps(num, mean.shape)


def _z_reference(low, mean, log_var, num):
    """The documented z: computed in float32, rounded once to the posterior's dtype."""
    return _z_float32(mean, log_var, num).astype(low)


def _elbo_reference(low, kl_kind, decoder):
    """The documented ELBO: the decoder sees z rounded to ``low``, the densities the float32 z."""

    def reference(mean, log_var):  # float32 posterior (the rounded values)
        z = _z_float32(mean, log_var, L)
        recon = jnp.mean(jax.vmap(decoder)(z.astype(low)).astype(jnp.float32), axis=0)
        if kl_kind == "analytic":
            kl_value = kl.kl_standard_normal(mean, log_var, event_ndims=1)
        else:
            log_q = kl.diagonal_gaussian_log_density(z, mean, log_var, event_ndims=1)
            log_p = kl.diagonal_gaussian_log_density(z, 0.0, 0.0, event_ndims=1)
            kl_value = jnp.mean(log_q - log_p, axis=0)
        return ElboTerms(elbo=recon - kl_value, recon=recon, kl=kl_value)

    return reference


def _iwae_reference(low, decoder):
    """Burda et al. eq. 8 with the same split: decoder at round(z), densities at z."""

    def reference(mean, log_var):
        z = _z_float32(mean, log_var, K)
        log_q = kl.diagonal_gaussian_log_density(z, mean, log_var, event_ndims=1)
        log_p = kl.diagonal_gaussian_log_density(z, 0.0, 0.0, event_ndims=1)
        log_w = jax.vmap(decoder)(z.astype(low)).astype(jnp.float32) + log_p - log_q  # [K, B]
        return jax.nn.logsumexp(log_w, axis=0) - math.log(K)

    return reference


# --------------------------------------------------------------------------- the cases

# name -> (function of the named inputs, input names, reference factory or None). With None
# the reference is the same function on the float32 inputs.
def _cases(decoder):
    def elbo_fn(kind):
        return lambda m, lv: elbo(KEY, m, lv, decoder, num_samples=L, kl=kind)

    return {
        "gaussian_log_likelihood": (
            lambda x, m, s: lik.gaussian_log_likelihood(x, m, s), ("x", "mean", "sigma"), None),
        "gaussian_log_likelihood_from_log_sigma": (
            lambda x, m, ls: lik.gaussian_log_likelihood_from_log_sigma(x, m, ls),
            ("x", "mean", "log_sigma"), None),
        "optimal_sigma[example]": (
            lambda x, m: lik.optimal_sigma(x, m), ("x", "mean"), None),
        "optimal_sigma[batch]": (
            lambda x, m: lik.optimal_sigma(x, m, axis="batch"), ("x", "mean"), None),
        "gaussian_log_likelihood_optimal_sigma[example]": (
            lambda x, m: lik.gaussian_log_likelihood_optimal_sigma(x, m), ("x", "mean"), None),
        "gaussian_log_likelihood_optimal_sigma[batch]": (
            lambda x, m: lik.gaussian_log_likelihood_optimal_sigma(x, m, axis="batch"),
            ("x", "mean"), None),
        "sse": (lambda x, m: lik.sse(x, m), ("x", "mean"), None),
        "mse": (lambda x, m: lik.mse(x, m), ("x", "mean"), None),
        "bernoulli_log_likelihood": (
            lambda x, l: lik.bernoulli_log_likelihood(x, l), ("binary", "logits"), None),
        "bce[sum]": (lambda x, l: lik.bce(x, l), ("x", "logits"), None),
        "bce[mean]": (lambda x, l: lik.bce(x, l, reduction="mean"), ("x", "logits"), None),
        "continuous_bernoulli_log_likelihood": (
            lambda x, l: lik.continuous_bernoulli_log_likelihood(x, l), ("x", "logits"), None),
        "continuous_bernoulli_log_normalizer": (
            lik.continuous_bernoulli_log_normalizer, ("logits",), None),
        "continuous_bernoulli_mean": (lik.continuous_bernoulli_mean, ("logits",), None),
        "beta_from_sigma": (
            lambda s: lik.beta_from_sigma(s, convention="mse", num_dims=D), ("positive",), None),
        "sigma_from_beta": (lambda b: lik.sigma_from_beta(b), ("positive",), None),
        "nats_to_bits_per_dim": (lambda n: lik.nats_to_bits_per_dim(n, D), ("nats",), None),
        "kl_standard_normal": (kl.kl_standard_normal, ("post_mean", "post_log_var"), None),
        "kl_diagonal_gaussians": (
            kl.kl_diagonal_gaussians,
            ("post_mean", "post_log_var", "prior_mean", "prior_log_var"), None),
        "diagonal_gaussian_log_density": (
            kl.diagonal_gaussian_log_density, ("z", "post_mean", "post_log_var"), None),
        "kl_monte_carlo": (
            lambda m, lv: kl.kl_monte_carlo(KEY, m, lv, num_samples=L),
            ("post_mean", "post_log_var"), None),
        "elbo[analytic]": (elbo_fn("analytic"), ("post_mean", "post_log_var"),
                           lambda low: _elbo_reference(low, "analytic", decoder)),
        "elbo[monte_carlo]": (elbo_fn("monte_carlo"), ("post_mean", "post_log_var"),
                              lambda low: _elbo_reference(low, "monte_carlo", decoder)),
        "iwae_bound": (
            lambda m, lv: iwae_bound(KEY, m, lv, decoder, num_samples=K, chunk_size=K),
            ("post_mean", "post_log_var"), lambda low: _iwae_reference(low, decoder)),
    }


MODERATE_CASES = _cases(decoder_in_z_dtype)
# The range test: the same functions on the extreme inputs (names mapped per case).
EXTREME_INPUTS = {
    "gaussian_log_likelihood": ("x", "mean", "sigma"),
    "gaussian_log_likelihood_from_log_sigma": ("x", "mean", "log_sigma"),
    "optimal_sigma[example]": ("x_opt", "mean_opt"),
    "optimal_sigma[batch]": ("x_opt", "mean_opt"),
    "gaussian_log_likelihood_optimal_sigma[example]": ("x_opt", "mean_opt"),
    "gaussian_log_likelihood_optimal_sigma[batch]": ("x_opt", "mean_opt"),
    "sse": ("x", "mean"),
    "mse": ("x", "mean"),
    "bernoulli_log_likelihood": ("x01", "logits"),
    "bce[sum]": ("x01", "logits"),
    "bce[mean]": ("x01", "logits"),
    "continuous_bernoulli_log_likelihood": ("x01", "logits"),
    "continuous_bernoulli_log_normalizer": ("logits",),
    "continuous_bernoulli_mean": ("logits",),
    "kl_standard_normal": ("kl_mean", "log_var"),
    "kl_diagonal_gaussians": ("kl_mean", "log_var", "kl_mean", "log_var"),
    "diagonal_gaussian_log_density": ("z", "kl_mean", "log_var"),
    "elbo[analytic]": ("post_mean", "post_log_var"),
}
EXTREME_CASES = {
    name: (fn, EXTREME_INPUTS[name], make_reference)
    for name, (fn, _, make_reference) in _cases(decoder_in_float32).items()
    if name in EXTREME_INPUTS
}


def _total(out):
    return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(out))


def _program(cases, low, reference):
    """One jitted program: every case's output and its gradients w.r.t. all its inputs."""

    def run(inputs):
        results = {}
        for name, (fn, names, make_reference) in cases.items():
            if reference and make_reference is not None:
                fn = make_reference(low)
            args = [inputs[n] for n in names]

            def total_and_output(*a, fn=fn):
                out = fn(*a)
                return _total(out), out

            (_, out), grads = jax.value_and_grad(
                total_and_output, argnums=tuple(range(len(args))), has_aux=True
            )(*args)
            results[name] = (out, grads)
        return results

    return jax.jit(run)


# Compilation dominates this module's runtime (threefry sampling, 20-odd gradients); XLA's
# cheaper CPU pipeline compiles the same programs 2-3x faster. Both paths of a comparison
# are compiled with it, and only the float32 reordering allowed for above can differ.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _run(program, inputs):
    return program.lower(inputs).compile(compiler_options=FAST_COMPILE)(inputs)


@functools.cache
def results(which: str, low_name: str):
    """(low-precision results, float32 reference results) for the moderate or extreme inputs."""
    low = LOW[low_name]
    cases, inputs = (
        (MODERATE_CASES, MODERATE) if which == "moderate" else (EXTREME_CASES, _extreme(low_name))
    )
    rounded = {k: jnp.asarray(np.asarray(v, np.float32)).astype(low) for k, v in inputs.items()}
    upcast = {k: v.astype(jnp.float32) for k, v in rounded.items()}
    got = _run(_program(cases, low, reference=False), rounded)
    expected = _run(_program(cases, low, reference=True), upcast)
    return jax.device_get(got), jax.device_get(expected)


def _assert_values_close(got, expected, name):
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        g64, e64 = np.asarray(g, np.float64), np.asarray(e, np.float64)
        assert g.shape == e.shape, name
        scale = max(1.0, float(np.max(np.abs(e64))))
        np.testing.assert_allclose(g64, e64, rtol=VALUE_RTOL, atol=VALUE_RTOL * scale,
                                   err_msg=name)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("low_name", LOW)
@pytest.mark.parametrize("name", MODERATE_CASES)
def test_result_is_float32_and_equals_float32_on_the_rounded_inputs(name, low_name):
    got, expected = results("moderate", low_name)
    value, _ = got[name]
    for leaf in jax.tree.leaves(value):
        assert leaf.dtype == np.float32, (name, leaf.dtype)
        assert np.all(np.isfinite(leaf)), name
    _assert_values_close(value, expected[name][0], name)


@pytest.mark.parametrize("low_name", LOW)
@pytest.mark.parametrize("name", MODERATE_CASES)
def test_gradient_is_in_the_input_dtype_and_is_the_rounded_float32_gradient(name, low_name):
    low = LOW[low_name]
    got, expected = results("moderate", low_name)
    grads, reference = got[name][1], expected[name][1]
    for g, e in zip(grads, reference, strict=True):
        assert g.dtype == low, (name, g.dtype)
        g64, e64 = np.asarray(g, np.float64), np.asarray(e, np.float64)
        assert np.all(np.isfinite(g64)), name
        np.testing.assert_allclose(g64, e64, rtol=eps_of(low), atol=smallest_subnormal(low),
                                   err_msg=name)


@pytest.mark.parametrize("low_name", LOW)
@pytest.mark.parametrize("name", EXTREME_CASES)
def test_finite_over_the_promised_ranges(name, low_name):
    # The promise (module docstrings): float32 results are finite over the ranges; gradients
    # w.r.t. a bfloat16 input are finite (float32's exponent range); w.r.t. a float16 input
    # they are the float32 gradient rounded to float16, finite wherever that is <= 65504.
    low = LOW[low_name]
    got, expected = results("extreme", low_name)
    value, grads = got[name]
    for leaf in jax.tree.leaves(value):
        assert leaf.dtype == np.float32 and np.all(np.isfinite(leaf)), (name, leaf)
    _assert_values_close(value, expected[name][0], name)
    for g, e in zip(grads, expected[name][1], strict=True):
        assert g.dtype == low
        e64 = np.asarray(e, np.float64)
        assert np.all(np.isfinite(e64)), (name, e64)  # the float32 gradient
        representable = np.abs(e64) <= float(ml_dtypes.finfo(low).max)
        if low_name == "bfloat16":
            assert np.all(representable), name
        assert np.all(np.isfinite(np.asarray(g, np.float64))[representable]), (name, g, e64)
        np.testing.assert_allclose(np.asarray(g, np.float64)[representable], e64[representable],
                                   rtol=eps_of(low), atol=smallest_subnormal(low), err_msg=name)


@pytest.mark.parametrize("low_name", LOW)
def test_reparameterize_keeps_the_posterior_dtype(low_name):
    # Reference: the documented z, computed in float32 from the rounded posterior and rounded
    # once to its dtype (within half an ulp of that dtype: rtol eps_low).
    low = LOW[low_name]
    mean = jnp.asarray(MODERATE["post_mean"], jnp.float32).astype(low)
    log_var = jnp.asarray(MODERATE["post_log_var"], jnp.float32).astype(low)
    z = jax.jit(functools.partial(reparameterize, num_samples=L))(KEY, mean, log_var)
    assert z.dtype == low
    expected = _z_reference(low, mean.astype(jnp.float32), log_var.astype(jnp.float32), L)
    np.testing.assert_allclose(np.asarray(z, np.float64), np.asarray(expected, np.float64),
                               rtol=eps_of(low), atol=smallest_subnormal(low))


@pytest.mark.parametrize("low_name", LOW)
def test_elbo_upcasts_the_likelihood_values_before_averaging(low_name):
    # decoder_in_z_dtype returns low-precision values; recon must be their float32 mean (the
    # low-precision mean of L values would be off by up to eps_low / 2 relative).
    low = LOW[low_name]
    got, _ = results("moderate", low_name)
    terms = got["elbo[analytic]"][0]
    mean = jnp.asarray(MODERATE["post_mean"], jnp.float32).astype(low)
    log_var = jnp.asarray(MODERATE["post_log_var"], jnp.float32).astype(low)
    z = _z_reference(low, mean.astype(jnp.float32), log_var.astype(jnp.float32), L)
    values = np.asarray(jax.vmap(decoder_in_z_dtype)(z), np.float64)  # [L, B], exact in f64
    assert jax.vmap(decoder_in_z_dtype)(z).dtype == low
    np.testing.assert_allclose(terms.recon, values.mean(0), rtol=4 * EPS32)


def test_float32_and_float64_are_unchanged():
    # float32 in, float32 out (and gradients); float64 in, float64 out with x64 enabled.
    x = np.full((2, 3), 0.25, np.float32)
    assert lik.gaussian_log_likelihood(x, x, 0.5).dtype == np.float32
    grad = jax.grad(lambda m: jnp.sum(lik.bernoulli_log_likelihood(x * 0, m)))(x)
    assert grad.dtype == np.float32
    with jax.enable_x64(True):
        x64 = x.astype(np.float64)
        assert lik.gaussian_log_likelihood(x64, x64, 0.5).dtype == np.float64
        assert kl.kl_standard_normal(x64, x64).dtype == np.float64
        # A float32 array with a float64 one promotes to float64 (jnp promotion).
        assert lik.sse(x64, x).dtype == np.float64
        # Python scalars are weakly typed: they follow the arrays, float64 when alone.
        assert lik.continuous_bernoulli_mean(0.3).dtype == np.float64
        assert lik.gaussian_log_likelihood(x, x, 0.5).dtype == np.float32
