"""Numerical stress: property tests over extreme ranges, in float32 and float64.

Hypothesis draws inputs over the ranges the library promises (the module docstrings: float32
finite for logits in [-1e4, 1e4], sigma in [1e-6, 1e6], continuous-Bernoulli lambda within
1e-7 of 1/2; float64 over wider ranges) and checks, for every log-likelihood, its gradients and the
continuous-Bernoulli mean:

* finite wherever the float64 reference is finite;
* equal to an independent float64 reference, evaluated on the *same* (rounded) inputs, within
  ``C * eps * S``: eps is the machine epsilon of the dtype, S the sum of the magnitudes of
  the terms the result is made of (its condition scale: a sum of terms of size S cannot be
  computed to better than eps * S), and C the constant each test states;
* the identities: grad_mean(-log N) = D/(2 sigma^2) grad_mean(MSE) (elementwise, for every
  sigma), Bernoulli = -BCE (against the usual max(l, 0) - l x + log1p(e^-|l|) form),
  continuous Bernoulli = Bernoulli + log C, closed-form KL = KL to a general diagonal
  Gaussian at N(0, I), and the optimal-sigma log-likelihood = -D/2 log(2 pi e MSE);
* that no primitive generates a NaN for valid input, also in the unused branch of a
  ``where`` (checked with ``jax.experimental.checkify``).

References: ``scipy.stats.norm.logpdf``; closed forms in numpy float64 written out below
(``logaddexp`` for log-sigmoids; ``l / tanh(l / 2)`` for the continuous-Bernoulli normaliser,
which has no cancellation in this form, and its Taylor series below |l| = 1e-3 for the
gradient and the mean, where the closed forms cancel).

Every function under test is jitted once per dtype with fixed shapes (D = 4), so an
example costs one dispatch, not a compile. Settings are derandomised (a fixed seed per
test, no example database): CI runs the same cases every time. The last test checks that at
least 10,000 cases were generated in this module.
"""

from __future__ import annotations

import collections
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jax.experimental import checkify
from scipy import special, stats

from vaejax import kl
from vaejax import likelihoods as lik

D = 4  # values per example
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
DTYPES = {"float32": np.float32, "float64": np.float64}
# Inputs: float32 within the contract, float64 far beyond it.
RANGES = {
    np.float32: dict(value=1e4, log10_sigma=6.0, logit=1e4, mean=1e3, log_var=30.0),
    np.float64: dict(value=1e6, log10_sigma=30.0, logit=1e30, mean=1e6, log_var=300.0),
}
# The generated cases of every (test, dtype); the last test sums them.
CASES: collections.Counter = collections.Counter()
# The worst error seen per check, in units of eps * S (reported with -s).
WORST: dict[str, float] = collections.defaultdict(float)
MIN_TOTAL_CASES = 10_000
# STRESS_CALIBRATE=1e9 turns the error bounds off, to print the worst errors with -s.
_CALIBRATE = float(os.environ.get("STRESS_CALIBRATE", "1"))
_EPS = {dtype: float(np.finfo(dtype).eps) for dtype in DTYPES.values()}
_TINY = {dtype: float(np.finfo(dtype).tiny) for dtype in DTYPES.values()}


def stress(max_examples: int):
    # No example database and no replay phase: the same cases on every machine and run.
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache  # strategies are built once: building them costs as much as drawing
def floats(dtype, low, high):
    """Floats of the dtype in [low, high]; no subnormals: XLA on CPU flushes them to zero."""
    width = 32 if dtype is np.float32 else 64
    low, high = float(dtype(low)), float(dtype(high))  # bounds of the dtype's own values
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_subnormal=False,
                     width=width)


@functools.cache
def vectors(element):
    return st.lists(element, min_size=D, max_size=D)


@functools.cache
def unit_interval(dtype):
    """x in [0, 1], with exact 0s and 1s (binary pixels) as likely as grey values."""
    return st.one_of(st.sampled_from([0.0, 1.0]), floats(dtype, 0.0, 1.0))


@functools.cache
def logits(dtype):
    """Logits over the whole range, and densely near 0 (lambda within 1e-7 of 1/2)."""
    bound = RANGES[dtype]["logit"]
    return st.one_of(floats(dtype, -bound, bound), floats(dtype, -1.0, 1.0),
                     floats(dtype, -1e-6, 1e-6), floats(dtype, -40.0, 40.0))


def check(label, got, reference, scale, dtype, factor, atol=0.0):
    """Finite where the reference is; |got - reference| <= factor * eps * scale + atol.

    ``atol`` covers intermediate results that XLA flushes to zero (below the smallest normal
    number, ``tiny``), e.g. a subnormal gradient of the MSE.
    """
    got = np.asarray(got, np.float64)
    reference = np.asarray(reference, np.float64)
    finite = np.isfinite(reference)
    assert np.all(np.isfinite(got[finite])), (label, got, reference)
    # The floor `tiny`: a result that underflows to 0 is off by less than that.
    excess = np.maximum(np.abs(got - reference) - atol, 0.0)
    error = np.where(finite, excess / (_EPS[dtype] * np.asarray(scale) + _TINY[dtype]), 0.0)
    worst = float(np.max(error, initial=0.0))
    key = f"{label}[{'float32' if dtype is np.float32 else 'float64'}]"
    WORST[key] = max(WORST[key], worst)
    assert worst <= factor * _CALIBRATE, (label, worst, got, reference, scale)


def _count(name, dtype):
    CASES[(name, np.dtype(dtype).name)] += 1


def _precision(dtype):
    """float64 needs x64 on only while the case runs (the other modules run in float32)."""
    return jax.enable_x64(dtype is np.float64)


# --------------------------------------------------------------------------- jitted subjects


@jax.jit
def gaussian_subject(x, mean, sigma):
    log_lik = lambda m, s: lik.gaussian_log_likelihood(x, m, s)  # noqa: E731
    value, (grad_mean, grad_sigma) = jax.value_and_grad(log_lik, argnums=(0, 1))(mean, sigma)
    grad_mse = jax.grad(lambda m: lik.mse(x, m))(mean)
    return value, grad_mean, grad_sigma, grad_mse


@jax.jit
def log_sigma_subject(x, mean, log_sigma):
    log_lik = lambda m, s: lik.gaussian_log_likelihood_from_log_sigma(x, m, s)  # noqa: E731
    value, grads = jax.value_and_grad(log_lik, argnums=(0, 1))(mean, log_sigma)
    return value, *grads


@jax.jit
def bernoulli_subject(x, logits):
    value, grad = jax.value_and_grad(lambda l: lik.bernoulli_log_likelihood(x, l))(logits)
    return value, grad, lik.bce(x, logits)


@jax.jit
def continuous_bernoulli_subject(x, logits):
    value, grad = jax.value_and_grad(
        lambda l: lik.continuous_bernoulli_log_likelihood(x, l))(logits)
    log_norm, log_norm_grad = jax.vmap(jax.value_and_grad(
        lik.continuous_bernoulli_log_normalizer))(logits)
    return (value, grad, log_norm, log_norm_grad, lik.continuous_bernoulli_mean(logits),
            lik.bernoulli_log_likelihood(x, logits))


@jax.jit
def kl_subject(mean, log_var):
    value, grads = jax.value_and_grad(kl.kl_standard_normal, argnums=(0, 1))(mean, log_var)
    zeros = jnp.zeros_like(mean)
    return value, *grads, kl.kl_diagonal_gaussians(mean, log_var, zeros, zeros)


@jax.jit
def optimal_subject(x, mean):
    value, grad = jax.value_and_grad(
        lambda m: lik.gaussian_log_likelihood_optimal_sigma(x, m))(mean)
    return value, grad, lik.optimal_sigma(x, mean)


def _all_log_likelihoods(mean, sigma, logits, log_var, x):
    return (lik.gaussian_log_likelihood(x, mean, sigma)
            + lik.gaussian_log_likelihood_from_log_sigma(x, mean, jnp.log(sigma))
            + lik.bernoulli_log_likelihood(x, logits)
            + lik.continuous_bernoulli_log_likelihood(x, logits)
            + lik.continuous_bernoulli_log_normalizer(logits).sum()
            + lik.continuous_bernoulli_mean(logits).sum()
            + kl.kl_standard_normal(mean, log_var))


nan_checked_gradients = jax.jit(checkify.checkify(
    jax.value_and_grad(_all_log_likelihoods, argnums=(0, 1, 2, 3)), errors=checkify.nan_checks))


# --------------------------------------------------------------------------- references


def log_sigmoid(l):
    return -np.logaddexp(0.0, -l)


def cb_log_normalizer(l):
    """log C(l) = log(l / tanh(l / 2)), C(0) = 2: a ratio, so no cancellation in float64."""
    l = np.asarray(l, np.float64)
    safe = np.where(l == 0, 1.0, l)
    with np.errstate(over="ignore"):
        return np.where(l == 0, math.log(2.0), np.log(safe / np.tanh(safe / 2)))


def cb_log_normalizer_grad(l):
    """d/dl log C = 1/l - 1/sinh(l); its series l/6 - 7 l^3/360 + 31 l^5/15120 below 1e-3."""
    l = np.asarray(l, np.float64)
    small = np.abs(l) < 1e-3
    safe = np.where(small, 1.0, l)
    with np.errstate(over="ignore"):
        closed = 1 / safe - 1 / np.sinh(safe)
    series = l / 6 - 7 * l**3 / 360 + 31 * l**5 / 15120
    return np.where(small, series, closed)


def cb_mean(l):
    """1/(1 - e^-l) - 1/l; its series 1/2 + l/12 - l^3/720 below 1e-3."""
    l = np.asarray(l, np.float64)
    small = np.abs(l) < 1e-3
    safe = np.where(small, 1.0, l)
    with np.errstate(over="ignore", divide="ignore"):
        closed = -1 / np.expm1(-safe) - 1 / safe
    return np.where(small, 0.5 + l / 12 - l**3 / 720, closed)


# --------------------------------------------------------------------------- 1. Gaussian


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@stress(max_examples=1000)
@given(data=st.data())
def test_gaussian_log_likelihood_and_gradients(dtype, data):
    """log N(x; mean, diag sigma^2) against scipy.stats.norm.logpdf, gradients in closed form.

    Value: C = 8 with S = sum_i (log(2 pi)/2 + |log sigma_i| + z_i^2/2), z = (x - mean)/sigma.
    grad_mean = z/sigma: C = 8 relative to |z|/sigma + 1/sigma.
    grad_sigma = (z^2 - 1)/sigma: C = 8 relative to (z^2 + 1)/sigma.
    Identity grad_mean(-log N) = D/(2 sigma^2) grad_mean(MSE): C = 8 relative to |grad_mean|.
    """
    bounds = RANGES[dtype]
    x = np.asarray(data.draw(vectors(floats(dtype, -bounds["value"], bounds["value"]))), dtype)
    mean = np.asarray(data.draw(vectors(floats(dtype, -bounds["value"], bounds["value"]))),
                      dtype)
    exponents = data.draw(vectors(floats(np.float64, -bounds["log10_sigma"],
                                         bounds["log10_sigma"])))
    sigma = np.asarray([10.0**e for e in exponents], dtype)  # per pixel, log-uniform
    _count("gaussian", dtype)
    with _precision(dtype):
        value, grad_mean, grad_sigma, grad_mse = gaussian_subject(x, mean, sigma)
    x64, mean64, sigma64 = (a.astype(np.float64) for a in (x, mean, sigma))
    z = (x64 - mean64) / sigma64
    scale = np.sum(HALF_LOG_2PI + np.abs(np.log(sigma64)) + 0.5 * z**2)
    check("gaussian value", value, stats.norm.logpdf(x64, mean64, sigma64).sum(), scale, dtype,
          8)
    check("gaussian grad mean", grad_mean, z / sigma64, (np.abs(z) + 1) / sigma64, dtype, 8)
    check("gaussian grad sigma", grad_sigma, (z**2 - 1) / sigma64, (z**2 + 1) / sigma64, dtype,
          8)
    implied = -(D / (2 * sigma64**2)) * np.asarray(grad_mse, np.float64)
    check("gradient ratio D/(2 sigma^2)", grad_mean, implied,
          np.abs(np.asarray(grad_mean, np.float64)), dtype, 8,
          atol=D / (2 * sigma64**2) * np.finfo(dtype).tiny)  # grad MSE below tiny: flushed


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@stress(max_examples=600)
@given(data=st.data())
def test_gaussian_from_log_sigma(dtype, data):
    """log N with sigma = exp(log_sigma) against scipy; d/dlog_sigma = z^2 - 1.

    Value: C = 8 with S as for the Gaussian; grad_mean as there; grad_log_sigma: C = 8
    relative to z^2 + 1. (log_sigma is rounded to the dtype first; the reference uses the
    rounded value.)
    """
    bounds = RANGES[dtype]
    x = np.asarray(data.draw(vectors(floats(dtype, -bounds["value"], bounds["value"]))), dtype)
    mean = np.asarray(data.draw(vectors(floats(dtype, -bounds["value"], bounds["value"]))),
                      dtype)
    limit = bounds["log10_sigma"] * math.log(10)
    log_sigma = np.asarray(data.draw(vectors(floats(dtype, -limit, limit))), dtype)
    _count("gaussian_log_sigma", dtype)
    with _precision(dtype):
        value, grad_mean, grad_log_sigma = log_sigma_subject(x, mean, log_sigma)
    x64, mean64, log_sigma64 = (a.astype(np.float64) for a in (x, mean, log_sigma))
    sigma64 = np.exp(log_sigma64)
    z = (x64 - mean64) / sigma64
    scale = np.sum(HALF_LOG_2PI + np.abs(log_sigma64) + 0.5 * z**2)
    check("log-sigma value", value, stats.norm.logpdf(x64, mean64, sigma64).sum(), scale, dtype,
          8)
    check("log-sigma grad mean", grad_mean, z / sigma64, (np.abs(z) + 1) / sigma64, dtype, 8)
    check("log-sigma grad", grad_log_sigma, z**2 - 1, z**2 + 1, dtype, 8)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@stress(max_examples=500)
@given(data=st.data())
def test_optimal_sigma_log_likelihood(dtype, data):
    """At sigma*^2 = MSE, log N = -D/2 log(2 pi e MSE) (MSE in float64 on the same inputs).

    Value: C = 8 relative to D/2 (|log(2 pi e)| + |log MSE|) (the log of a mean of squares
    rounded to eps). sigma*: C = 4 relative to sigma*. Gradient: d/dmean = (x - mean)/MSE,
    C = 8 relative to |x - mean|/MSE + max|x - mean|/MSE. MSE = 0 (a perfect reconstruction)
    must give +inf, as documented; cases with 0 < MSE < 1e6 x the dtype's smallest normal
    number are skipped and not counted (the dtype cannot hold that MSE).
    """
    bounds = RANGES[dtype]
    x = np.asarray(data.draw(vectors(floats(dtype, -bounds["value"], bounds["value"]))), dtype)
    mean = np.asarray(data.draw(vectors(floats(dtype, -bounds["value"], bounds["value"]))),
                      dtype)
    residual = x.astype(np.float64) - mean.astype(np.float64)
    mse = float(np.mean(residual**2))
    if 0 < mse <= _TINY[dtype] * 1e6:  # the dtype cannot hold this MSE: no case
        return
    _count("optimal_sigma", dtype)
    with _precision(dtype):
        value, grad, sigma = optimal_subject(x, mean)
    if mse == 0:
        assert float(value) == np.inf and float(sigma) == 0, (value, sigma)
        return
    reference = -D / 2 * math.log(2 * math.pi * math.e * mse)
    check("optimal-sigma value", value, reference,
          D / 2 * (math.log(2 * math.pi * math.e) + abs(math.log(mse))), dtype, 8)
    check("optimal sigma", sigma, math.sqrt(mse), math.sqrt(mse), dtype, 4)
    check("optimal-sigma grad", grad, residual / mse,
          (np.abs(residual) + np.max(np.abs(residual))) / mse, dtype, 8)


# --------------------------------------------------------------------------- 2. Bernoulli family


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@stress(max_examples=1000)
@given(data=st.data())
def test_bernoulli_is_minus_bce(dtype, data):
    """log Bern(x; sigmoid(l)) = -BCE over the logit range; gradient x - sigmoid(l).

    Reference: x log sigmoid(l) + (1 - x) log sigmoid(-l) with float64 logaddexp, and the
    independent BCE form max(l, 0) - l x + log1p(e^-|l|) (PyTorch's, TensorFlow's). Both terms
    are <= 0, so S is |value|: C = 8; against the BCE form S adds sum |l x|. For binary x
    and |l| <= 2 also scipy.stats.bernoulli.logpmf (C = 64: scipy forms log(1 - p)).
    Gradient: C = 16 (float32) and 64 (float64) relative to 1: the gradient of jax's
    log-sigmoid is exp(l - softplus(l)), whose argument carries the absolute rounding of
    softplus(l), up to about |l| eps while e^-|l| > eps (|l| < 17 in float32, < 37 in
    float64). library bce == -bernoulli_log_likelihood exactly.
    """
    x = np.asarray(data.draw(vectors(unit_interval(dtype))), dtype)
    l = np.asarray(data.draw(vectors(logits(dtype))), dtype)
    _count("bernoulli", dtype)
    with _precision(dtype):
        value, grad, bce = bernoulli_subject(x, l)
    x64, l64 = x.astype(np.float64), l.astype(np.float64)
    terms = x64 * log_sigmoid(l64) + (1 - x64) * log_sigmoid(-l64)
    torch_bce = np.maximum(l64, 0) - l64 * x64 + np.log1p(np.exp(-np.abs(l64)))
    scale = np.sum(np.abs(terms)) + np.sum(np.abs(l64) * x64)  # l x can cancel in the BCE form
    check("bernoulli value", value, terms.sum(), np.sum(np.abs(terms)) + 1e-300, dtype, 8)
    check("bernoulli = -BCE", value, -torch_bce.sum(), scale, dtype, 8)
    check("bernoulli grad", grad, x64 - special.expit(l64), 1.0, dtype,
          16 if dtype is np.float32 else 64)
    assert np.asarray(bce) == -np.asarray(value)
    # scipy forms log(1 - p): it loses log10(1/(1 - p)) digits, so only where |l| <= 2.
    if np.all((x == 0) | (x == 1)) and np.all(np.abs(l64) <= 2):
        logpmf = stats.bernoulli.logpmf(x64, special.expit(l64)).sum()
        check("bernoulli = scipy logpmf", value, logpmf, abs(logpmf) + 1, dtype, 64)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@stress(max_examples=1300)
@given(data=st.data())
def test_continuous_bernoulli(dtype, data):
    """The continuous Bernoulli: log C, its gradient, the density, its gradient, the mean.

    log C(l) = log(l / tanh(l/2)) >= log 2: C = 8 relative to log C. Density
    x log sigmoid(l) + (1 - x) log sigmoid(-l) + log C: C = 8 relative to the sum of the
    magnitudes of its terms; identity CB = Bernoulli + log C: C = 8 relative to the same S.
    d/dl log C = 1/l - 1/sinh(l) in (-1, 1), the density's gradient x - sigmoid(l) + d/dl
    log C and the mean in [0, 1]: relative to 1, C = 16 in float32 and 512 in float64 (1e-13):
    just above the Taylor cutoff (|l| = 0.5 in float32, 0.02 in float64) the closed forms
    subtract terms of size 1/|l|, and the float64 cutoff is small, so up to 50x eps is lost.
    """
    x = np.asarray(data.draw(vectors(unit_interval(dtype))), dtype)
    l = np.asarray(data.draw(vectors(logits(dtype))), dtype)
    _count("continuous_bernoulli", dtype)
    with _precision(dtype):
        value, grad, log_norm, log_norm_grad, mean, bernoulli = continuous_bernoulli_subject(x, l)
    x64, l64 = x.astype(np.float64), l.astype(np.float64)
    log_c = cb_log_normalizer(l64)
    bern_terms = x64 * log_sigmoid(l64) + (1 - x64) * log_sigmoid(-l64)
    scale = np.sum(np.abs(bern_terms) + log_c)
    check("cb log C", log_norm, log_c, log_c, dtype, 8)
    cancelling = 16 if dtype is np.float32 else 512
    check("cb log C grad", log_norm_grad, cb_log_normalizer_grad(l64), 1.0, dtype, cancelling)
    check("cb mean", mean, cb_mean(l64), 1.0, dtype, cancelling)
    assert np.all((np.asarray(mean) >= 0) & (np.asarray(mean) <= 1)), mean
    check("cb value", value, np.sum(bern_terms + log_c), scale, dtype, 8)
    check("cb grad", grad, x64 - special.expit(l64) + cb_log_normalizer_grad(l64), 1.0, dtype,
          cancelling)
    check("cb = bernoulli + log C", value,
          np.asarray(bernoulli, np.float64) + np.sum(np.asarray(log_norm, np.float64)), scale,
          dtype, 8)


# --------------------------------------------------------------------------- 3. KL


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@stress(max_examples=600)
@given(data=st.data())
def test_kl_standard_normal(dtype, data):
    """KL(N(mean, e^log_var) || N(0, 1)) = 1/2 sum(mean^2 + e^lv - 1 - lv), and its gradients.

    Value: C = 8 relative to 1/2 sum(mean^2 + e^lv + 1 + |lv|). Gradients mean and
    (e^lv - 1)/2: C = 4 relative to |mean| and (e^lv + 1)/2. Identity with
    kl_diagonal_gaussians at p = N(0, I): C = 8 relative to the same S. Cases whose
    e^log_var overflows the dtype are skipped (the reference is not finite there).
    """
    bounds = RANGES[dtype]
    mean = np.asarray(data.draw(vectors(floats(dtype, -bounds["mean"], bounds["mean"]))), dtype)
    log_var = np.asarray(data.draw(vectors(floats(dtype, -bounds["log_var"], bounds["log_var"]))),
                         dtype)
    _count("kl", dtype)
    with _precision(dtype):
        value, grad_mean, grad_log_var, general = kl_subject(mean, log_var)
    mean64, log_var64 = mean.astype(np.float64), log_var.astype(np.float64)
    reference = 0.5 * np.sum(mean64**2 + np.expm1(log_var64) - log_var64)
    scale = 0.5 * np.sum(mean64**2 + np.exp(log_var64) + 1 + np.abs(log_var64))
    check("kl value", value, reference, scale, dtype, 8)
    check("kl grad mean", grad_mean, mean64, np.abs(mean64), dtype, 4)
    check("kl grad log_var", grad_log_var, 0.5 * np.expm1(log_var64),
          0.5 * (np.exp(log_var64) + 1), dtype, 4)
    check("kl = general diagonal KL at N(0, I)", general, reference, scale, dtype, 8)


# --------------------------------------------------------------------------- 4. no NaN anywhere


@stress(max_examples=300)
@given(data=st.data())
def test_no_primitive_generates_nan_for_valid_input(data):
    """checkify(nan_checks) over every log-likelihood, KL and their gradients: no NaN is
    generated anywhere, not even in the unused branch of a `where`.

    A NaN there does not reach the outputs (the tests above check those), but it would make
    the under-jit error check the README recommends, `checkify` with `nan_checks`, fire on
    valid input. float32 only, the dtype of training: instrumenting this function for
    checkify takes seconds to compile per dtype.
    """
    dtype = np.float32
    bounds = RANGES[dtype]
    x = np.asarray(data.draw(vectors(unit_interval(dtype))), dtype)
    mean = np.asarray(data.draw(vectors(floats(dtype, -bounds["mean"], bounds["mean"]))), dtype)
    sigma = np.asarray(10.0 ** data.draw(floats(np.float64, -6, 6)), dtype)
    l = np.asarray(data.draw(vectors(logits(np.float32))), dtype)
    log_var = np.asarray(data.draw(vectors(floats(dtype, -30, 30))), dtype)
    _count("no_nan", dtype)
    with _precision(dtype):
        error, (value, grads) = nan_checked_gradients(mean, sigma, l, log_var, x)
    error.throw()
    assert np.isfinite(float(value)), value
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads), grads


# --------------------------------------------------------------------------- the count


def _declared_budget() -> int:
    """The cases the property tests above ask for: max_examples x parametrisations."""
    total = 0
    for name, fn in globals().items():
        declared = getattr(fn, "_hypothesis_internal_use_settings", None)
        if name.startswith("test_") and declared is not None:
            cases = 1
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "parametrize":
                    cases *= len(mark.args[1])
            total += declared.max_examples * cases
    return total


def test_at_least_10000_cases_were_generated():
    """The property tests above ask for at least 10,000 cases and, when all of them ran in
    this session, generated that many (with -k only part of them runs: then only the
    declared budget can be checked)."""
    assert _declared_budget() >= MIN_TOTAL_CASES
    expected = {(name, dtype) for name in ("gaussian", "gaussian_log_sigma", "optimal_sigma",
                                           "bernoulli", "continuous_bernoulli", "kl")
                for dtype in DTYPES} | {("no_nan", "float32")}
    if set(CASES) != expected:
        print(f"\n[stress] only {sorted(set(CASES))} ran: checked the declared budget")
        return
    total = sum(CASES.values())
    print(f"\n[stress] {total} generated cases: {dict(sorted(CASES.items()))}")
    print("[stress] worst errors in units of eps * S: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(WORST.items())))
    assert total >= MIN_TOTAL_CASES, CASES
