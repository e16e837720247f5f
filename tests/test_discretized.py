"""Discretised likelihoods of k-level data (`vaejax.discretized`), in float32 and float64.

References, each independent of the code under test:
* scipy.stats.norm / scipy.stats.logistic in float64: differences of CDFs (of survival
  functions above the mean, where the CDF difference would cancel) and `logcdf` / `logsf`
  for the open edge bins;
* mpmath at 50 significant digits for the far-tail bins, bins much narrower than the scale,
  and the derivatives (`mpmath.diff`);
* numpy: log-softmax for the categorical, logsumexp of log-softmax weights plus scipy bins
  for the mixture, sum_i x_i P(x_i) for the means.

Float64 runs inside `jax.enable_x64(True)` (as in test_likelihoods_float64.py); the
default precision is float32. Errors of log-probabilities are measured as
|got - ref| / max(1, |ref|): absolute in nats near log P = 0, relative in the far tails.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from scipy import special, stats

from vaejax import discretized as dz
from vaejax import likelihoods as lik

DTYPES = [np.float32, np.float64]
# Worst error against mpmath / scipy, in units of the dtype's eps, of max(1, |log P|).
# Measured: <= 2.5 eps (float32) and <= 6.2 eps (float64) on random (mu, s, level) draws,
# <= 9.5 eps (float64) at the Gaussian's midpoint switch.
LOGP_EPS = 16
DIGITS = 50  # mpmath's working precision (set per call: mpmath.workdps, no global state)


def jitted(fn):
    # Numerics run jitted: one compile per shape instead of one per primitive (eager
    # calls of these functions compile ~100 small programs). Concrete validation only
    # runs eagerly and is tested eagerly below.
    return jax.jit(fn, static_argnames=("num_levels", "event_ndims"))


FAMILIES = {
    "gaussian": (jitted(dz.discretized_gaussian_log_likelihood),
                 jitted(dz.discretized_gaussian_log_likelihood_from_log_scale), stats.norm),
    "logistic": (jitted(dz.discretized_logistic_log_likelihood),
                 jitted(dz.discretized_logistic_log_likelihood_from_log_scale), stats.logistic),
}
mixture_log_likelihood = jitted(dz.discretized_logistic_mixture_log_likelihood)
categorical_log_likelihood = jitted(dz.categorical_log_likelihood)
to_levels = jax.jit(dz.to_levels, static_argnums=1)
quantize = jax.jit(dz.quantize, static_argnums=1)
categorical_mean = jax.jit(dz.categorical_mean, static_argnums=1)
discretized_mean = jax.jit(dz.discretized_mean, static_argnames=("num_levels", "distribution"))
mixture_mean = jax.jit(dz.discretized_logistic_mixture_mean, static_argnames="num_levels")


def precision(dtype):
    """x64 on for float64 tests, left as it is for float32."""
    if dtype == np.float64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def log_error(got, ref):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    return np.abs(got - ref) / np.maximum(1.0, np.abs(ref))


BLOCK = 1024


def elementwise(family, x, mean, scale, k, *, log_scale=False):
    """log P per element (event_ndims=0) of the broadcast inputs, as a numpy array.

    The inputs are flattened and padded to blocks of BLOCK elements, so that every test
    reuses one compiled program per (family, k, dtype) instead of one per shape.
    """
    x, mean, scale = np.broadcast_arrays(x, mean, scale)
    shape, n = x.shape, x.size
    pad = -n % BLOCK
    x, mean = (np.concatenate([a.ravel(), np.zeros(pad, a.dtype)]) for a in (x, mean))
    scale = np.concatenate([scale.ravel(), np.full(pad, 0.0 if log_scale else 1.0,
                                                   scale.dtype)])
    fn = FAMILIES[family][1 if log_scale else 0]
    out = [np.asarray(fn(x[i:i + BLOCK], mean[i:i + BLOCK], scale[i:i + BLOCK],
                         num_levels=k, event_ndims=0)) for i in range(0, n + pad, BLOCK)]
    return np.concatenate(out)[:n].reshape(shape)


# --------------------------------------------------------------------------- #
# References.
# --------------------------------------------------------------------------- #


def scipy_bins(dist, index, k, mu, s):
    """float64 log P(level index) from scipy: CDF (or SF) differences, logcdf/logsf edges."""
    index, mu, s = np.broadcast_arrays(np.asarray(index), np.asarray(mu, np.float64),
                                       np.asarray(s, np.float64))
    h = 0.5 / (k - 1)
    x = index / (k - 1)
    lo, hi = x - h, x + h
    with np.errstate(divide="ignore"):
        below = np.log(dist.cdf(hi, mu, s) - dist.cdf(lo, mu, s))
        above = np.log(dist.sf(lo, mu, s) - dist.sf(hi, mu, s))
    interior = np.where(x > mu, above, below)
    out = np.where(index == 0, dist.logcdf(hi, mu, s), interior)
    return np.where(index == k - 1, dist.logsf(lo, mu, s), out)


def mpmath_bin(family, index, k, mu, s):
    """log P(level index) at 50 digits; the bin is mirrored to the lower tail first."""
    with mpmath.workdps(max(DIGITS, mpmath.mp.dps)):  # mpmath.diff raises the precision
        return _mpmath_bin(family, index, k, mu, s)


def _mpmath_bin(family, index, k, mu, s):
    mu, s = (v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v)) for v in (mu, s))
    h = mpmath.mpf(1) / (2 * (k - 1))
    x = mpmath.mpf(int(index)) / (k - 1)
    if family == "gaussian":
        cdf = mpmath.ncdf
    else:
        def cdf(z):
            return 1 / (1 + mpmath.exp(-z))
    a, b = (x + h - mu) / s, (x - h - mu) / s
    if index == 0:
        return mpmath.log(cdf(a))
    if index == k - 1:
        return mpmath.log(cdf(-b))
    if a + b > 0:
        a, b = -b, -a
    return mpmath.log(cdf(a) - cdf(b))


def mpmath_bins(family, index, k, mu, s):
    return np.array([float(mpmath_bin(family, i, k, m, v))
                     for i, m, v in zip(*np.broadcast_arrays(index, mu, s), strict=True)])


def grid(k, dtype):
    return (np.arange(k) / (k - 1)).astype(dtype)


# --------------------------------------------------------------------------- #
# Normalisation and agreement with scipy.
# --------------------------------------------------------------------------- #

MEANS = np.array([-1e3, -5.0, -0.3, 0.0, 0.37, 0.5, 1.0, 2.5, 1e3])
SCALES = np.array([1e-4, 1e-3, 0.01, 0.05, 0.3, 1.0, 10.0, 1e3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("k", [2, 3, 17, 256])
def test_probabilities_over_the_levels_sum_to_one(family, k, dtype):
    mu, s = (a.ravel()[:, None] for a in np.meshgrid(MEANS, SCALES, indexing="ij"))
    with precision(dtype):
        x = np.broadcast_to(grid(k, dtype), (mu.size, k))
        got = elementwise(family, x, mu.astype(dtype), s.astype(dtype), k)
    assert got.dtype == dtype and got.shape == (mu.size, k)
    assert np.all(np.isfinite(got)) and np.all(got <= 0)
    # Reference: the k probabilities sum to 1, so their logsumexp (float64) is 0, up to
    # the few-eps relative errors of the bins holding the mass (measured <= 2 eps).
    total = special.logsumexp(got.astype(np.float64), axis=-1)
    assert np.max(np.abs(total)) <= 8 * eps(dtype), np.max(np.abs(total)) / eps(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("k", [2, 17, 256])
def test_matches_scipy_cdf_differences(family, k, dtype):
    rng = np.random.default_rng(k)
    n = 300
    mu = rng.uniform(-0.3, 1.3, n)  # |c| <= 32: scipy's probabilities stay normal numbers
    s = np.exp(rng.uniform(np.log(0.05), np.log(3.0), n))
    index = rng.integers(0, k, n)
    index[:2] = 0, k - 1
    mu, s = mu.astype(dtype), s.astype(dtype)  # the reference sees the rounded inputs
    # Reference: scipy.stats CDF / SF differences and logcdf / logsf in float64. They
    # cancel for bins much narrower than s (relative error eps / P): tolerance 1e-11.
    ref = scipy_bins(FAMILIES[family][2], index, k, mu, s)
    with precision(dtype):
        x = (index / (k - 1)).astype(dtype)
        got = elementwise(family, x, mu, s, k)
        if k == 17:
            from_log = elementwise(family, x, mu, np.log(s), k, log_scale=True)
    tol = 1e-11 if dtype == np.float64 else LOGP_EPS * eps(dtype)
    assert np.max(log_error(got, ref)) <= tol, np.max(log_error(got, ref))
    if k == 17:
        # The two forms differ by the rounding of log s (measured <= 7 eps).
        assert np.max(log_error(from_log, got)) <= 32 * eps(dtype)


# Far-tail bins, bins far narrower than s at the mode, and edges: (level, mu, s) per k.
TAIL_CASES = {
    17: [
        (16, 0.0, 1e-3),  # x = 1, mu = 0: the naive CDF difference is 0 - 0 (checked below)
        (15, 0.0, 1e-3),  # an interior bin ~900 standard deviations out
        (0, 1.0, 1e-3),
        (1, 1.0, 1e-4),
        (8, -3.0, 0.01),
        (8, 4.0, 0.01),
        (3, 1e3, 1.0),
    ],
    256: [
        (1, 0.9, 1e-4),
        (200, 0.1, 2e-3),
        (254, -1e3, 1.0),
        (128, 0.5, 1e3),  # standardised width 3.9e-6: the Gaussian's midpoint branch
        (3, 0.5, 1e3),
        (128, 0.502, 0.3),
        (0, -5.0, 1e-4),
        # x - mu small against x: the edge i/(k-1) +- h must not be rounded to the dtype
        # before subtracting mu (that alone costs ~60 eps here, 400 eps at level 201).
        (200, 0.77, 1e-4),
        (201, 0.79, 1e-4),
        (100, 0.38, 1e-4),
    ],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_far_tail_bins_are_finite_and_match_mpmath(family, dtype):
    for k, cases in TAIL_CASES.items():
        index, mu, s = (np.array(col) for col in zip(*cases, strict=True))
        mu, s = mu.astype(dtype), s.astype(dtype)
        with precision(dtype):
            got = elementwise(family, (index / (k - 1)).astype(dtype), mu, s, k)
        # Reference: mpmath at 50 digits on the dtype-rounded mean and scale.
        ref = mpmath_bins(family, index, k, mu, s)
        assert np.all(np.isfinite(got))
        error = log_error(got, ref)
        assert np.max(error) <= LOGP_EPS * eps(dtype), (k, error / eps(dtype))
        if k == 17:
            # x = 1 under mu = 0, s = 1e-3: log Phi(-968.75) ~ -4.7e5 (Gaussian) and
            # log_sigmoid(-968.75) = -968.75 (logistic), finite, not log(0 - 0) = -inf.
            expected = -469246.076 if family == "gaussian" else -968.75
            np.testing.assert_allclose(got[0], expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_random_bins_match_mpmath(family, dtype):
    rng = np.random.default_rng(7)
    worst = 0.0
    for k in (17, 256):
        n = 60
        mu = np.concatenate([rng.uniform(-3, 4, n - 3), [0.0, 0.5, 1e3]]).astype(dtype)
        s = np.exp(rng.uniform(np.log(1e-4), np.log(1e3), n)).astype(dtype)
        index = rng.integers(0, k, n)
        with precision(dtype):
            got = elementwise(family, (index / (k - 1)).astype(dtype), mu, s, k)
        # Reference: mpmath at 50 digits.
        worst = max(worst, np.max(log_error(got, mpmath_bins(family, index, k, mu, s))))
    assert worst <= LOGP_EPS * eps(dtype), worst / eps(dtype)


# --------------------------------------------------------------------------- #
# The Gaussian's switch to the midpoint series for narrow bins.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_midpoint_switch_is_accurate_on_both_sides(dtype):
    # The interior bin uses the midpoint series where w (1 + |c|) < cutoff (c, w: the
    # standardised centre and width). Place bins just below and just above the cutoff and
    # compare both with mpmath: each branch is accurate where it is used.
    k = 17
    cutoff = dz._GAUSSIAN_MIDPOINT_CUTOFF[np.dtype(dtype).itemsize]
    cases = []
    for index in (2, 8, 14):
        for c in (0.0, 0.7, 3.0, 12.0):
            for factor in (1 - 1e-3, 1 + 1e-3):
                w = factor * cutoff / (1 + c)
                s = 1.0 / ((k - 1) * w)
                cases.append((index, index / (k - 1) - c * s, s))
    index, mu, s = (np.array(col) for col in zip(*cases, strict=True))
    mu, s = mu.astype(dtype), s.astype(dtype)
    with precision(dtype):
        got = elementwise("gaussian", (index / (k - 1)).astype(dtype), mu, s, k)
    # Reference: mpmath at 50 digits.
    error = log_error(got, mpmath_bins("gaussian", index, k, mu, s))
    assert np.max(error) <= LOGP_EPS * eps(dtype), np.max(error) / eps(dtype)
    # Continuity: the two sides differ by the change of log P over the 0.2% step only.
    below, above = got[0::2], got[1::2]
    assert np.all(np.abs(below - above) < 0.01 * np.maximum(1, np.abs(below)))


def test_narrow_bin_needs_the_midpoint_series_in_float32():
    # w = 2h/s = 3.9e-6 (k = 256, s = 1e3): the difference of log-CDFs cancels to
    # ~eps / w; the midpoint series stays within a few eps. Reference: mpmath.
    k, index, mu, s = 256, 128, 0.5, 1e3
    a, b = ((index / (k - 1) + sign * 0.5 / (k - 1) - mu) / s for sign in (1, -1))
    naive = float(jnp.log(jnp.exp(jax.scipy.special.log_ndtr(jnp.float32(a)))
                          - jnp.exp(jax.scipy.special.log_ndtr(jnp.float32(b)))))
    got = float(elementwise("gaussian", np.float32(index / (k - 1)), np.float32(mu),
                            np.float32(s), k))
    ref = float(mpmath_bin("gaussian", index, k, np.float32(mu), np.float32(s)))
    assert abs(naive - ref) > 1e-3  # what the switch avoids (here 9e-3 nats)
    assert abs(got - ref) <= LOGP_EPS * eps(np.float32) * abs(ref)


@pytest.mark.parametrize("k", [65, 513, 4097])
def test_gaussian_small_width_limit_is_density_times_width(k):
    # As k grows the bin probability tends to N(x; mu, s) * (bin width 1/(k-1)); the
    # midpoint rule's error is (c^2 - 1) w^2 / 24 in log P (c = (x - mu)/s, w = 1/((k-1)s)),
    # so the tolerance is w^2 (1 + c^2) / 24 (plus 1e-12 for float64 rounding).
    # Reference: scipy.stats.norm.logpdf.
    mu, s = 0.4, 0.1
    index = np.array([(k - 1) // 8, (k - 1) // 3, (k - 1) // 2, 3 * (k - 1) // 4])
    x = index / (k - 1)
    with jax.enable_x64(True):
        got = elementwise("gaussian", x, np.full(x.shape, mu), np.float64(s), k)
    limit = stats.norm.logpdf(x, mu, s) + math.log(1.0 / (k - 1))
    c, w = (x - mu) / s, 1.0 / ((k - 1) * s)
    assert np.all(np.abs(got - limit) <= w**2 * (1 + c**2) / 24 + 1e-12), got - limit
    if k == 4097:
        assert np.max(np.abs(got - limit)) < 1e-5


# --------------------------------------------------------------------------- #
# Gradients.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_are_finite_in_the_tails_and_match_mpmath(family, dtype):
    k = 17
    mu, s, index = (a.ravel() for a in np.meshgrid(
        np.array([-1e3, -3.0, 0.0, 0.5, 1.0, 4.0, 1e3]), np.logspace(-4, 3, 8),
        np.arange(k), indexing="ij"))
    mu, s = mu.astype(dtype), s.astype(dtype)
    x = (index / (k - 1)).astype(dtype)
    fn, from_log, _ = FAMILIES[family]
    with precision(dtype):
        def total(m, v, m_log, log_v):  # both forms, one compiled gradient
            return (jnp.sum(fn(x, m, v, num_levels=k, event_ndims=0))
                    + jnp.sum(from_log(x, m_log, log_v, num_levels=k, event_ndims=0)))

        grad_mean, grad_scale, grad_mean_log, grad_log_scale = jax.jit(
            jax.grad(total, argnums=(0, 1, 2, 3)))(mu, s, mu, np.log(s))
    for grad in (grad_mean, grad_scale, grad_mean_log, grad_log_scale):
        assert grad.dtype == dtype and np.all(np.isfinite(grad))
    # The two forms differ by the rounding of log s (measured <= 11 eps).
    assert np.max(log_error(grad_mean_log, grad_mean)) <= 64 * eps(dtype)
    # Reference: mpmath.diff of the 50-digit bin probability, on a subset.
    rng = np.random.default_rng(3)
    worst_mean = worst_scale = worst_log_scale = 0.0
    for j in rng.choice(mu.size, 30, replace=False):
        def bin_at(m, v, j=j):
            return mpmath_bin(family, index[j], k, m, v)
        with mpmath.workdps(DIGITS):
            m0, s0 = mpmath.mpf(float(mu[j])), mpmath.mpf(float(s[j]))
            ref_mean = float(mpmath.diff(lambda m, s0=s0, f=bin_at: f(m, s0), m0))
            ref_scale = float(mpmath.diff(lambda v, m0=m0, f=bin_at: f(m0, v), s0))
        worst_mean = max(worst_mean, log_error(grad_mean[j], ref_mean))
        worst_scale = max(worst_scale, log_error(grad_scale[j], ref_scale))
        worst_log_scale = max(worst_log_scale,
                              log_error(grad_log_scale[j], ref_scale * float(s[j])))
    # Measured: <= 2 eps (Gaussian), <= 16 eps (logistic, float64), <= 8 eps for d/dlog s.
    assert worst_mean <= 64 * eps(dtype), worst_mean / eps(dtype)
    assert worst_scale <= 64 * eps(dtype), worst_scale / eps(dtype)
    assert worst_log_scale <= 64 * eps(dtype), worst_log_scale / eps(dtype)


# --------------------------------------------------------------------------- #
# Mixture of logistics and the categorical.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixture_with_one_component_is_the_discretized_logistic(dtype):
    rng = np.random.default_rng(1)
    k = 256
    x = (rng.integers(0, k, (4, 6)) / (k - 1)).astype(dtype)
    mean = rng.uniform(-0.2, 1.2, (4, 6)).astype(dtype)
    log_scale = rng.uniform(-6, 1, (4, 6)).astype(dtype)
    with precision(dtype):
        single = FAMILIES["logistic"][1](x, mean, log_scale, num_levels=k)
        mixture = mixture_log_likelihood(
            x, np.full((4, 6, 1), 0.3, dtype), mean[..., None], log_scale[..., None],
            num_levels=k)
    assert mixture.dtype == dtype and mixture.shape == (4,)
    np.testing.assert_allclose(mixture, single, rtol=4 * eps(dtype), atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixture_matches_numpy_logsumexp_of_scipy_bins(dtype):
    rng = np.random.default_rng(2)
    k, m = 17, 3
    index = rng.integers(0, k, (5, 4))
    weights = rng.normal(size=(5, 4, m)).astype(dtype)
    means = rng.uniform(-0.3, 1.3, (5, 4, m)).astype(dtype)
    log_scales = rng.uniform(-3, 0, (5, 4, m)).astype(dtype)
    with precision(dtype):
        got = mixture_log_likelihood(
            (index / (k - 1)).astype(dtype), weights, means, log_scales, num_levels=k)
    # Reference: numpy log-softmax of the weights + scipy.stats.logistic bins, logsumexp.
    components = scipy_bins(stats.logistic, index[..., None], k, means,
                            np.exp(log_scales.astype(np.float64)))
    log_w = weights - special.logsumexp(weights.astype(np.float64), axis=-1, keepdims=True)
    expected = special.logsumexp(log_w + components, axis=-1).sum(-1)
    tol = 1e-13 if dtype == np.float64 else 1e-6  # measured 2e-16 and 8e-8
    np.testing.assert_allclose(got, expected, rtol=tol)
    # The mixture's k probabilities sum to 1 too.
    with precision(dtype):
        all_levels = mixture_log_likelihood(
            grid(k, dtype)[:, None], weights[:1, :1].repeat(k, 0), means[:1, :1].repeat(k, 0),
            log_scales[:1, :1].repeat(k, 0), num_levels=k, event_ndims=0)
    assert abs(special.logsumexp(np.asarray(all_levels, np.float64))) <= 8 * eps(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_is_log_softmax_at_the_level_index(dtype):
    rng = np.random.default_rng(4)
    k = 17
    index = rng.integers(0, k, (3, 2, 5))
    logits = (rng.normal(size=(3, 2, 5, k)) * 5).astype(dtype)
    with precision(dtype):
        got = categorical_log_likelihood((index / (k - 1)).astype(dtype), logits,
                                         num_levels=k, event_ndims=2)
        levels = to_levels((index / (k - 1)).astype(dtype), k)
    # Reference: numpy log-softmax, picked at index = round(x (k - 1)).
    l64 = logits.astype(np.float64)
    log_softmax = l64 - special.logsumexp(l64, axis=-1, keepdims=True)
    expected = np.take_along_axis(log_softmax, index[..., None], -1)[..., 0].sum((-2, -1))
    assert got.dtype == dtype and got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=16 * eps(dtype))
    np.testing.assert_array_equal(levels, index)
    assert levels.dtype == jnp.int32


# --------------------------------------------------------------------------- #
# Helpers: levels, quantisation, means.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_and_to_levels(dtype):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, 200).astype(dtype)
    with precision(dtype):
        q = quantize(x, 256)
        levels = to_levels(q, 256)
    # Reference: numpy rounding to the nearest multiple of 1/255.
    np.testing.assert_array_equal(levels, np.round(x.astype(np.float64) * 255).astype(int))
    np.testing.assert_allclose(q, np.asarray(levels) / 255.0, rtol=eps(dtype))
    assert q.dtype == dtype
    # Data stored in float32 and cast to float64 are on the grid (the tolerance is at
    # least float32's rounding).
    with jax.enable_x64(True):
        stored = grid(256, np.float32).astype(np.float64)
        np.testing.assert_array_equal(to_levels(stored, 256), np.arange(256))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_discretized_mean_is_sum_of_levels_times_probabilities(family, dtype):
    k = 17
    mu = np.array([-2.0, 0.0, 0.3, 0.5, 0.93, 1.0, 3.0])[:, None]
    s = np.array([1e-3, 0.05, 0.4, 5.0])[None, :]
    with precision(dtype):
        got = discretized_mean(mu.astype(dtype), s.astype(dtype), num_levels=k,
                               distribution=family)
    # Reference: sum_i x_i P(x_i) with the scipy bin probabilities.
    probs = np.exp(scipy_bins(FAMILIES[family][2], np.arange(k), k, mu[..., None],
                              s[..., None]))
    expected = np.sum(probs * np.arange(k) / (k - 1), axis=-1)
    assert got.dtype == dtype and got.shape == (7, 4)
    # Measured: 2.2e-16 (float64) and 8.3e-8 (float32) absolute.
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=1e-14 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_and_mixture_means(dtype):
    rng = np.random.default_rng(6)
    k = 17
    logits = rng.normal(size=(4, k)).astype(dtype)
    weights, means = rng.normal(size=(4, 3)), rng.uniform(0, 1, (4, 3))
    log_scales = rng.uniform(-3, 0, (4, 3))
    with precision(dtype):
        cat = categorical_mean(logits, k)
        mix = mixture_mean(
            *(a.astype(dtype) for a in (weights, means, log_scales)), num_levels=k)
    # Reference: numpy softmax times the levels; the softmax-weighted sum of the scipy
    # component means (sum_i x_i P_m(x_i)).
    p = special.softmax(logits.astype(np.float64), axis=-1)
    np.testing.assert_allclose(cat, p @ (np.arange(k) / (k - 1)), rtol=8 * eps(dtype))
    probs = np.exp(scipy_bins(stats.logistic, np.arange(k), k, means[..., None],
                              np.exp(log_scales)[..., None]))
    component = np.sum(probs * np.arange(k) / (k - 1), axis=-1)
    expected = np.sum(special.softmax(weights, axis=-1) * component, axis=-1)
    np.testing.assert_allclose(mix, expected, rtol=1e-10 if dtype == np.float64 else 1e-5)


# --------------------------------------------------------------------------- #
# Shapes and precision.
# --------------------------------------------------------------------------- #


IMAGE_SHAPE = (3, 8, 8, 1)
IMAGE_FUNCTIONS = {
    "gaussian": (dz.discretized_gaussian_log_likelihood, ("mean", "scale")),
    "gaussian_log": (dz.discretized_gaussian_log_likelihood_from_log_scale,
                     ("mean", "log_scale")),
    "logistic": (dz.discretized_logistic_log_likelihood, ("mean", "scale")),
    "logistic_log": (dz.discretized_logistic_log_likelihood_from_log_scale,
                     ("mean", "log_scale")),
    "mixture": (dz.discretized_logistic_mixture_log_likelihood,
                ("logit_weights", "means", "log_scales")),
    "categorical": (dz.categorical_log_likelihood, ("logits",)),
}
IMAGE_LEVELS = 256  # i/255 is not exact in bfloat16: x is snapped to its level


def _per_image_and_per_pixel(fn):
    # One compiled program for both reductions (the tests below share it).
    @jax.jit
    def both(x, *params):
        return (fn(x, *params, num_levels=IMAGE_LEVELS, event_ndims=3),
                fn(x, *params, num_levels=IMAGE_LEVELS, event_ndims=0))
    return both


IMAGE_JITTED = {name: _per_image_and_per_pixel(fn) for name, (fn, _) in IMAGE_FUNCTIONS.items()}


def image_inputs(name, k):
    """[B, 8, 8, 1] grid data and the parameters of IMAGE_FUNCTIONS[name], float32."""
    rng = np.random.default_rng(8)
    x = (rng.integers(0, k, IMAGE_SHAPE) / (k - 1)).astype(np.float32)
    values = {
        "mean": rng.uniform(0, 1, IMAGE_SHAPE),
        "scale": rng.uniform(0.01, 0.3, IMAGE_SHAPE),
        "log_scale": rng.uniform(-5, 0, IMAGE_SHAPE),
        "logit_weights": rng.normal(size=IMAGE_SHAPE + (2,)),
        "means": rng.uniform(0, 1, IMAGE_SHAPE + (2,)),
        "log_scales": rng.uniform(-5, 0, IMAGE_SHAPE + (2,)),
        "logits": rng.normal(size=IMAGE_SHAPE + (k,)),
    }
    return x, [values[key].astype(np.float32) for key in IMAGE_FUNCTIONS[name][1]]


@pytest.mark.parametrize("name", IMAGE_FUNCTIONS)
def test_images_with_event_ndims_3_give_one_value_per_image(name):
    k = IMAGE_LEVELS
    x, params = image_inputs(name, k)
    per_image, per_pixel = IMAGE_JITTED[name](x, *params)
    assert per_image.shape == (3,) and per_pixel.shape == x.shape
    assert per_image.dtype == jnp.float32
    # Reference: the float64 numpy sum of the per-pixel values.
    np.testing.assert_allclose(per_image, np.asarray(per_pixel, np.float64).sum((1, 2, 3)),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="event_ndims"):  # rank 4 needs it (eager check)
        IMAGE_FUNCTIONS[name][0](x, *params, num_levels=k)


@pytest.mark.parametrize("name", IMAGE_FUNCTIONS)
def test_bfloat16_inputs_give_the_float32_result_of_the_rounded_inputs(name):
    x, params = image_inputs(name, IMAGE_LEVELS)
    fn = IMAGE_JITTED[name]
    low = [jnp.asarray(p).astype(jnp.bfloat16) for p in (x, *params)]
    got = fn(*low)
    # Reference: the float32 computation on the bfloat16-rounded parameters and on the
    # exact grid values.
    expected = fn(x, *(p.astype(jnp.float32) for p in low[1:]))
    for got_part, expected_part in zip(got, expected, strict=True):
        assert got_part.dtype == jnp.float32
        np.testing.assert_array_equal(got_part, expected_part)


def test_bfloat16_grid_values_snap_to_their_levels():
    for k in (17, 256):
        x = (np.arange(k) / (k - 1)).astype(jnp.bfloat16)
        np.testing.assert_array_equal(to_levels(x, k), np.arange(k))
    # 17 levels are exact in bfloat16, and an off-grid bfloat16 value is still caught.
    with pytest.raises(ValueError, match="off the 17-level grid"):
        dz.to_levels(np.array([0.3], jnp.bfloat16), 17)


def test_mean_broadcasts_over_the_batch_and_scale_per_pixel():
    k = 17
    x = (np.arange(12).reshape(3, 4) / (k - 1)).astype(np.float32)
    mean = np.full((1, 4), 0.4, np.float32)
    scale = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    got = FAMILIES["gaussian"][0](x, mean, scale, num_levels=k)
    # Reference: scipy.stats.norm bins, summed over the last axis.
    expected = scipy_bins(stats.norm, np.arange(12).reshape(3, 4), k, 0.4, scale).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# --------------------------------------------------------------------------- #
# Bad inputs: concrete values raise; under jit the affected examples are NaN.
# --------------------------------------------------------------------------- #

X = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 0.0625]], np.float32)  # on the 17-level grid
X_OFF = X.copy()
X_OFF[1, 1] = 0.3
MU = np.full((2, 3), 0.5, np.float32)
LOGITS = np.zeros((2, 3, 17), np.float32)
MIX = np.zeros((2, 3, 2), np.float32)

BAD_INPUTS = {
    "x_off_grid": (lambda: dz.discretized_gaussian_log_likelihood(
        X_OFF, MU, 0.1, num_levels=17), "x"),
    "x_8_bit_with_17_levels": (lambda: dz.discretized_logistic_log_likelihood(
        np.full((2, 3), 100 / 255, np.float32), MU, 0.1, num_levels=17), "x"),
    "x_17_levels_with_256": (lambda: dz.discretized_logistic_log_likelihood(
        X, MU, 0.1, num_levels=256), "x"),
    "x_above_one": (lambda: dz.discretized_gaussian_log_likelihood(
        X * 2, MU, 0.1, num_levels=17), "x"),
    "x_nan": (lambda: dz.categorical_log_likelihood(X * np.nan, LOGITS, num_levels=17), "x"),
    "x_integer": (lambda: dz.discretized_gaussian_log_likelihood(
        np.ones((2, 3), np.uint8), MU, 0.1, num_levels=17), "x"),
    "num_levels_one": (lambda: dz.discretized_gaussian_log_likelihood(
        X, MU, 0.1, num_levels=1), "num_levels"),
    "num_levels_float": (lambda: dz.categorical_log_likelihood(
        X, LOGITS, num_levels=17.0), "num_levels"),
    "num_levels_bool": (lambda: dz.quantize(X, True), "num_levels"),
    "scale_negative": (lambda: dz.discretized_gaussian_log_likelihood(
        X, MU, -0.1, num_levels=17), "scale"),
    "scale_zero_logistic": (lambda: dz.discretized_logistic_log_likelihood(
        X, MU, np.zeros(3, np.float32), num_levels=17), "scale"),
    "log_scale_inf": (lambda: dz.discretized_logistic_log_likelihood_from_log_scale(
        X, MU, np.inf, num_levels=17), "log_scale"),
    "mean_rank": (lambda: dz.discretized_gaussian_log_likelihood(
        X, MU[0], 0.1, num_levels=17), "mean"),
    "logits_wrong_last_axis": (lambda: dz.categorical_log_likelihood(
        X, LOGITS[..., :16], num_levels=17), "logits"),
    "logits_missing_axis": (lambda: dz.categorical_log_likelihood(
        X, LOGITS[..., 0], num_levels=17), "logits"),
    "mixture_means_other_m": (lambda: dz.discretized_logistic_mixture_log_likelihood(
        X, MIX, np.zeros((2, 3, 3), np.float32), MIX, num_levels=17), "means"),
    "mixture_log_scales_rank": (lambda: dz.discretized_logistic_mixture_log_likelihood(
        X, MIX, MIX, MIX[..., 0], num_levels=17), "log_scales"),
    "mixture_batch_mismatch": (lambda: dz.discretized_logistic_mixture_log_likelihood(
        X, MIX, MIX[:, :2], MIX, num_levels=17), "means"),
    "mixture_log_scales_nan": (lambda: dz.discretized_logistic_mixture_log_likelihood(
        X, MIX, MIX, MIX * np.nan, num_levels=17), "log_scales"),
    "quantize_outside": (lambda: dz.quantize(X - 1, 17), "x"),
    "to_levels_off_grid": (lambda: dz.to_levels(X_OFF, 17), "x"),
    "mean_distribution": (lambda: dz.discretized_mean(
        MU, 0.1, num_levels=17, distribution="normal"), "distribution"),
    "categorical_mean_axis": (lambda: dz.categorical_mean(LOGITS, 16), "logits"),
}


@pytest.mark.parametrize("call,argument", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call()


def test_bad_input_messages_name_the_knob():
    with pytest.raises(ValueError) as info:
        dz.discretized_gaussian_log_likelihood(X_OFF, MU, 0.1, num_levels=17)
    message = str(info.value)
    assert "off the 17-level grid {0, 1/16, ..., 1}" in message
    assert "`quantize(x, 17)`" in message and "num_levels" in message
    with pytest.raises(ValueError, match="last axis of 16, but num_levels=17"):
        dz.categorical_log_likelihood(X, LOGITS[..., :16], num_levels=17)
    with pytest.raises(ValueError, match="int >= 2"):
        dz.quantize(X, 1)
    with pytest.raises(ValueError, match="astype"):  # integer pixels: convert and scale
        dz.to_levels(np.arange(17, dtype=np.uint8), 17)


JIT_CALLS = {
    "gaussian": lambda x, s: dz.discretized_gaussian_log_likelihood(x, MU, s, num_levels=17),
    "gaussian_log": lambda x, s: dz.discretized_gaussian_log_likelihood_from_log_scale(
        x, MU, jnp.log(s), num_levels=17),
    "logistic": lambda x, s: dz.discretized_logistic_log_likelihood(x, MU, s, num_levels=17),
    "mixture": lambda x, s: dz.discretized_logistic_mixture_log_likelihood(
        x, MIX, MIX, jnp.broadcast_to(jnp.log(s)[..., None], MIX.shape), num_levels=17),
    "categorical": lambda x, s: dz.categorical_log_likelihood(
        x, LOGITS / s[..., None], num_levels=17),
}
JIT_COMPILED = {name: jax.jit(fn) for name, fn in JIT_CALLS.items()}


@pytest.mark.parametrize("name", JIT_CALLS)
def test_invalid_x_under_jit_gives_nan_for_that_example_only(name):
    fn = JIT_COMPILED[name]
    good = np.asarray(fn(X, np.full((2, 1), 0.1, np.float32)))
    assert np.all(np.isfinite(good))
    for bad_x in (0.3, 1.5, -0.0625, np.nan):
        x = X.copy()
        x[1, 2] = bad_x
        out = np.asarray(fn(x, np.full((2, 1), 0.1, np.float32)))
        assert out[0] == good[0] and np.isnan(out[1]), (bad_x, out)


@pytest.mark.parametrize("name", ["gaussian", "gaussian_log", "logistic", "mixture"])
def test_invalid_scale_under_jit_gives_nan_for_that_example_only(name):
    fn = JIT_COMPILED[name]
    for bad_scale in (0.0, -0.1, np.nan, np.inf):
        scale = np.array([[0.1], [bad_scale]], np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.asarray(fn(X, scale))
        assert np.isfinite(out[0]) and np.isnan(out[1]), (bad_scale, out)


def test_to_levels_and_quantize_under_jit_flag_invalid_values():
    x = np.array([0.0, 0.5, 0.51, 1.5, np.nan], np.float32)
    np.testing.assert_array_equal(to_levels(x, 17), [0, 8, -1, -1, -1])
    q = np.asarray(quantize(x, 17))
    np.testing.assert_array_equal(q[:3], [0.0, 0.5, 0.5])
    assert np.all(np.isnan(q[3:]))


def test_checked_turns_the_jit_nan_into_an_error():
    fn = lik.checked(JIT_COMPILED["logistic"])
    fn(X, np.float32(0.1))
    with pytest.raises(ValueError, match="nan"):
        fn(X_OFF, np.float32(0.1))


def test_module_imports_only_jax():
    # The module is self-contained like vaejax.likelihoods: jax and the standard library.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(dz))
    roots = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert roots <= {"__future__", "fractions", "functools", "math", "operator", "struct",
                     "typing", "jax", "vaejax"}, roots


@pytest.mark.parametrize("dtype, window", [("float32", (9.1, 9.5)), ("float64", (26.4, 26.8))])
def test_erfcx_is_right_where_jax_s_returns_zero(dtype, window):
    """jax 0.10's erfcx is 0 on a window of its argument (float32 ~[9.195, 9.419], float64
    ~[26.544, 26.641]); the module's replacement equals scipy's there (a few eps)."""
    import scipy.special

    from vaejax.discretized import _erfcx

    with jax.enable_x64(dtype == "float64"):
        xs = np.linspace(*window, 401).astype(dtype)
        got = np.asarray(_erfcx(jnp.asarray(xs)), np.float64)
    reference = scipy.special.erfcx(xs.astype(np.float64))
    assert np.max(np.abs(got - reference) / reference) <= 16 * np.finfo(dtype).eps


def test_discretized_gaussian_gradient_is_finite_where_erfcx_failed():
    """The bin that made training NaN: x = 14/16, mu = 0.2465, s = 0.05 (standardised edges
    at 11.9 and 13.2, where jax's erfcx(13.2/sqrt 2) is 0); gradient against a float64
    central difference."""
    def f(mu):
        return dz.discretized_gaussian_log_likelihood(jnp.asarray(0.875, mu.dtype), mu, 0.05,
                                                      num_levels=17, event_ndims=0)

    grad = float(jax.grad(f)(jnp.float32(0.24651408)))
    with jax.enable_x64(True):
        h = 1e-6
        mu = jnp.float64(0.24651408)
        reference = float((f(mu + h) - f(mu - h)) / (2 * h))
    assert np.isfinite(grad)
    assert grad == pytest.approx(reference, rel=1e-4)
