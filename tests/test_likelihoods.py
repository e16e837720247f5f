"""Float32 tests of `vaejax.likelihoods` against independent references.

Every reference says where it comes from: `scipy.stats`, `scipy.integrate.quad`,
`scipy.optimize`, or a closed form written out here in numpy float64. Inputs are drawn in
float32 and the references are evaluated in float64 on the *same* float32 values, so only
the library's own rounding is measured. The float64 versions of these comparisons (with
tight tolerances and `check_grads`) live in `test_likelihoods_float64.py`.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from scipy import integrate, optimize, special, stats

from vaejax import likelihoods as lik

# Tolerances by kind: float32 identities between two library functions (a few float32 eps,
# 1.2e-7, of reordering), and float32 comparisons against an external float64 reference
# (the library's own rounding, accumulated over sums of up to ~60 terms).
IDENTITY_RTOL = 1e-6
REFERENCE_RTOL = 1e-5
DTYPE = np.float32


def _jit_with_static_options(fn):
    """jit `fn` with its keyword-only options static, compiled once per shape.

    Eager JAX compiles every primitive separately per shape (~0.5 s per new call here), so the
    numerical comparisons run the jitted function; `test_jit_and_vmap_agree_with_eager` shows the
    eager (validated) path gives the same numbers, and the bad-input tests exercise validation.
    """
    options = ("event_ndims", "axis", "reduction", "eps")
    static = [name for name in options if name in inspect.signature(fn).parameters]
    return jax.jit(fn, static_argnames=static)


jl = types.SimpleNamespace(
    **{
        name: _jit_with_static_options(getattr(lik, name))
        for name in (
            "gaussian_log_likelihood",
            "gaussian_log_likelihood_from_log_sigma",
            "optimal_sigma",
            "gaussian_log_likelihood_optimal_sigma",
            "bernoulli_log_likelihood",
            "continuous_bernoulli_log_normalizer",
            "continuous_bernoulli_log_likelihood",
            "continuous_bernoulli_mean",
            "sse",
            "mse",
            "bce",
        )
    }
)


def jit_grad(fn, argnums=0):
    return jax.jit(jax.grad(fn, argnums=argnums))


def assert_close(got, expected, rtol):
    """Relative comparison whose absolute floor scales with the largest reference value.

    Sums of log-densities can cancel to near zero for single examples; measuring the error
    against max(|expected|) keeps the test meaningful without a hand-tuned atol.
    """
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def draw(rng, shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(DTYPE)


def event_sum(values, event_ndims):
    """numpy reference for summing the trailing `event_ndims` axes."""
    if event_ndims == 0:
        return values
    return values.sum(axis=tuple(range(-event_ndims, 0)))


def logit_grid():
    """Dense float32 logits over [-1e4, 1e4] including the ends, 0, +-1e-7 and +-4e-7."""
    magnitudes = np.concatenate(
        [np.logspace(-7, 4, 221), [4e-7, 0.49999, 0.5, 0.50001], np.linspace(1.0, 1e4, 201)]
    )
    return np.concatenate([-magnitudes, [0.0], magnitudes]).astype(DTYPE)


def test_default_precision_is_float32():
    # test_likelihoods_float64.py enables x64 only inside its own tests; a leak would show here
    # (run that file first to check: pytest tests/test_likelihoods_float64.py tests/).
    assert not jax.config.jax_enable_x64
    assert jnp.zeros(()).dtype == jnp.float32


# --------------------------------------------------------------------------- #
# Gaussian.
# --------------------------------------------------------------------------- #

# (x shape, sigma shape, event_ndims): scalar sigma, per-pixel [D], per-example-per-pixel [B, D],
# a per-example sigma broadcast over pixels, and the image layout [B, 4, 5].
GAUSSIAN_CASES = [
    ((6, 10), (), 1),
    ((6, 10), (10,), 1),
    ((6, 10), (6, 1), 1),
    ((6, 10), (6, 10), 0),
    ((6, 4, 5), (4, 5), 2),
    ((6, 4, 5), (6, 4, 5), 2),
]


@pytest.mark.parametrize("x_shape,sigma_shape,event_ndims", GAUSSIAN_CASES)
def test_gaussian_matches_scipy_norm_logpdf(x_shape, sigma_shape, event_ndims):
    rng = np.random.default_rng(0)
    x = draw(rng, x_shape, 0.0, 1.0)
    mean = draw(rng, x_shape, 0.0, 1.0)
    sigma = draw(rng, sigma_shape, 0.05, 2.0)
    # Reference: scipy.stats.norm.logpdf elementwise in float64, summed over the event axes.
    expected = event_sum(
        stats.norm.logpdf(x.astype(np.float64), mean.astype(np.float64), sigma.astype(np.float64)),
        event_ndims,
    )
    got = jl.gaussian_log_likelihood(x, mean, sigma, event_ndims=event_ndims)
    assert got.dtype == jnp.float32
    assert got.shape == x_shape[: len(x_shape) - event_ndims]
    assert_close(got, expected, REFERENCE_RTOL)
    # Identity: the log-sigma parameterisation gives the same number for the same sigma.
    log_sigma = np.log(sigma)
    from_log = jl.gaussian_log_likelihood_from_log_sigma(
        x, mean, log_sigma, event_ndims=event_ndims
    )
    from_sigma = jl.gaussian_log_likelihood(x, mean, np.exp(log_sigma), event_ndims=event_ndims)
    assert_close(from_log, from_sigma, IDENTITY_RTOL)


def test_gaussian_log_determinant_is_sum_of_log_variances_not_sum_of_variances():
    rng = np.random.default_rng(2)
    num_dims = 16
    x = draw(rng, (4, num_dims), 0.0, 1.0).astype(np.float64)
    mean = draw(rng, (4, num_dims), 0.0, 1.0).astype(np.float64)
    sigma = draw(rng, (num_dims,), 0.1, 3.0).astype(np.float64)
    sse_per_pixel = np.sum((x - mean) ** 2 / sigma**2, axis=-1)
    # The mistaken form writes log det(diag sigma^2) as sum(sigma_i^2) instead of
    # sum(log sigma_i^2).
    mistaken = (
        -0.5 * num_dims * math.log(2 * math.pi) - 0.5 * np.sum(sigma**2) - 0.5 * sse_per_pixel
    )
    # Reference: scipy.stats.norm.logpdf summed over pixels.
    expected = stats.norm.logpdf(x, mean, sigma).sum(axis=-1)
    got = jl.gaussian_log_likelihood(x.astype(DTYPE), mean.astype(DTYPE), sigma.astype(DTYPE))
    assert_close(got, expected, REFERENCE_RTOL)
    assert np.all(np.abs(mistaken - expected) > 1.0)
    assert np.all(np.abs(np.asarray(got) - mistaken) > 1.0)


def test_gaussian_gradient_matches_closed_form():
    rng = np.random.default_rng(3)
    x = draw(rng, (3, 8))
    mean = draw(rng, (3, 8))
    sigma = draw(rng, (8,), 0.2, 2.0)

    def total(mean, sigma):
        return jnp.sum(jl.gaussian_log_likelihood(x, mean, sigma))

    grad_mean, grad_sigma = jit_grad(total, argnums=(0, 1))(mean, sigma)
    x64, mean64, sigma64 = (a.astype(np.float64) for a in (x, mean, sigma))
    # Closed form: d/dmean log N = (x - mean) / sigma^2 and
    # d/dsigma log N = -1/sigma + (x - mean)^2 / sigma^3, summed over the batch (shared sigma).
    assert_close(grad_mean, (x64 - mean64) / sigma64**2, REFERENCE_RTOL)
    expected_sigma = np.sum(-1.0 / sigma64 + (x64 - mean64) ** 2 / sigma64**3, axis=0)
    assert_close(grad_sigma, expected_sigma, REFERENCE_RTOL)


def test_mse_gradient_is_gaussian_gradient_rescaled():
    # From -log N = D/(2 sigma^2) MSE + const: grad[-log N] = (D / (2 sigma^2)) grad(MSE).
    rng = np.random.default_rng(4)
    num_dims, sigma = 12, 0.3
    x = draw(rng, (5, num_dims))
    mean = draw(rng, (5, num_dims))
    grad_nll = jit_grad(lambda m: -jnp.sum(jl.gaussian_log_likelihood(x, m, sigma)))(mean)
    grad_mse = jit_grad(lambda m: jnp.sum(jl.mse(x, m)))(mean)
    assert_close(grad_nll, num_dims / (2 * sigma**2) * grad_mse, IDENTITY_RTOL)


def test_sse_and_mse_match_numpy():
    rng = np.random.default_rng(5)
    x = draw(rng, (3, 4, 5))
    mean = draw(rng, (3, 4, 5))
    diff = x.astype(np.float64) - mean.astype(np.float64)
    # Reference: numpy sums of squares in float64.
    assert_close(jl.sse(x, mean, event_ndims=2), (diff**2).sum(axis=(1, 2)), REFERENCE_RTOL)
    assert_close(jl.mse(x, mean, event_ndims=2), (diff**2).mean(axis=(1, 2)), REFERENCE_RTOL)
    assert_close(jl.mse(x, mean, event_ndims=0), diff**2, REFERENCE_RTOL)


# --------------------------------------------------------------------------- #
# Optimal sigma.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("x_shape,event_ndims", [((5, 12), 1), ((5, 3, 4), 2), ((5, 3, 4), 1)])
def test_optimal_sigma_is_root_mse(x_shape, event_ndims):
    rng = np.random.default_rng(6)
    x = draw(rng, x_shape)
    mean = draw(rng, x_shape)
    diff = x.astype(np.float64) - mean.astype(np.float64)
    axes = tuple(range(-event_ndims, 0))
    # Reference: sqrt of the numpy MSE, per example and pooled over the whole batch.
    per_example = jl.optimal_sigma(x, mean, axis="example", event_ndims=event_ndims)
    assert_close(per_example, np.sqrt((diff**2).mean(axis=axes)), REFERENCE_RTOL)
    per_batch = jl.optimal_sigma(x, mean, axis="batch", event_ndims=event_ndims)
    assert per_batch.shape == ()
    assert_close(per_batch, np.sqrt((diff**2).mean()), REFERENCE_RTOL)


def test_optimal_sigma_maximises_the_gaussian_log_likelihood():
    rng = np.random.default_rng(7)
    x = draw(rng, (3, 20))
    mean = draw(rng, (3, 20))
    sigma_star = np.asarray(jl.optimal_sigma(x, mean))
    x64, mean64 = x.astype(np.float64), mean.astype(np.float64)
    for b in range(x.shape[0]):
        # Reference: scipy.optimize.minimize_scalar on -sum(scipy.stats.norm.logpdf) over sigma.
        def neg_log_likelihood(sigma, b=b):
            return -stats.norm.logpdf(x64[b], mean64[b], sigma).sum()

        result = optimize.minimize_scalar(
            neg_log_likelihood, bounds=(1e-3, 10.0), method="bounded", options={"xatol": 1e-10}
        )
        np.testing.assert_allclose(sigma_star[b], result.x, rtol=REFERENCE_RTOL)
        # And on a fine grid around it, no sigma beats sigma* (library log-likelihood).
        grid = (sigma_star[b] * np.linspace(0.5, 2.0, 301)).astype(DTYPE)
        on_grid = jl.gaussian_log_likelihood(
            np.broadcast_to(x[b], (grid.size, 20)),
            np.broadcast_to(mean[b], (grid.size, 20)),
            grid[:, None],
        )
        at_star = jl.gaussian_log_likelihood(x[b], mean[b], sigma_star[b])
        assert float(at_star) >= float(jnp.max(on_grid)) - 1e-5 * abs(float(at_star))


@pytest.mark.parametrize("x_shape,event_ndims", [((5, 12), 1), ((5, 3, 4), 2)])
def test_log_likelihood_at_optimal_sigma_per_example(x_shape, event_ndims):
    rng = np.random.default_rng(8)
    x = draw(rng, x_shape)
    mean = draw(rng, x_shape)
    num_dims = math.prod(x_shape[-event_ndims:])
    got = jl.gaussian_log_likelihood_optimal_sigma(x, mean, event_ndims=event_ndims)
    # Identity: the general Gaussian log-likelihood evaluated at sigma* (broadcast per example).
    sigma_star = jl.optimal_sigma(x, mean, event_ndims=event_ndims)
    sigma_b = sigma_star.reshape(sigma_star.shape + (1,) * event_ndims)
    at_star = jl.gaussian_log_likelihood(x, mean, sigma_b, event_ndims=event_ndims)
    assert_close(got, at_star, IDENTITY_RTOL)
    # Closed form -D/2 log(2 pi e MSE), with MSE from numpy float64.
    axes = tuple(range(-event_ndims, 0))
    mse = ((x.astype(np.float64) - mean.astype(np.float64)) ** 2).mean(axis=axes)
    assert_close(got, -0.5 * num_dims * np.log(2 * np.pi * np.e * mse), REFERENCE_RTOL)


@pytest.mark.parametrize("x_shape,event_ndims", [((5, 12), 1), ((5, 3, 4), 2)])
def test_log_likelihood_at_optimal_sigma_pooled_over_batch(x_shape, event_ndims):
    rng = np.random.default_rng(9)
    x = draw(rng, x_shape)
    mean = draw(rng, x_shape)
    num_examples = x_shape[0]
    num_dims = math.prod(x_shape[-event_ndims:])
    got = jl.gaussian_log_likelihood_optimal_sigma(x, mean, axis="batch", event_ndims=event_ndims)
    assert got.shape == (num_examples,)
    # Identity: per example, the general log-likelihood at the pooled scalar sigma*.
    sigma_star = jl.optimal_sigma(x, mean, axis="batch", event_ndims=event_ndims)
    assert_close(
        got,
        jl.gaussian_log_likelihood(x, mean, sigma_star, event_ndims=event_ndims),
        IDENTITY_RTOL,
    )
    # Closed form: summed over the batch it is -(N D)/2 log(2 pi e MSE_batch).
    mse_batch = ((x.astype(np.float64) - mean.astype(np.float64)) ** 2).mean()
    expected_total = -0.5 * num_examples * num_dims * np.log(2 * np.pi * np.e * mse_batch)
    assert_close(jnp.sum(got), expected_total, REFERENCE_RTOL)


def test_optimal_sigma_log_likelihood_gradient_ignores_sigma_path():
    # Envelope theorem: grad wrt mean of log N(x; mean, sigma*(mean)^2) equals the gradient at a
    # sigma held fixed at sigma*, i.e. (x - mean) / sigma*^2.
    rng = np.random.default_rng(10)
    x = draw(rng, (2, 9))
    mean = draw(rng, (2, 9))
    grad = jit_grad(lambda m: jnp.sum(jl.gaussian_log_likelihood_optimal_sigma(x, m)))(mean)
    mse = ((x.astype(np.float64) - mean.astype(np.float64)) ** 2).mean(axis=-1, keepdims=True)
    assert_close(grad, (x.astype(np.float64) - mean) / mse, REFERENCE_RTOL)


# --------------------------------------------------------------------------- #
# Bernoulli.
# --------------------------------------------------------------------------- #


def test_bernoulli_matches_scipy_logpmf_on_binary_data():
    rng = np.random.default_rng(11)
    x = (rng.uniform(size=(6, 15)) < 0.4).astype(DTYPE)
    logits = draw(rng, (6, 15), -8.0, 8.0)
    # Reference: scipy.stats.bernoulli.logpmf with p = expit(logits) in float64.
    p = special.expit(logits.astype(np.float64))
    expected = stats.bernoulli.logpmf(x.astype(np.int64), p).sum(axis=-1)
    assert_close(jl.bernoulli_log_likelihood(x, logits), expected, REFERENCE_RTOL)


@pytest.mark.parametrize("event_ndims", [0, 2])
def test_bernoulli_is_minus_bce_on_grey_levels(event_ndims):
    rng = np.random.default_rng(12)
    x = draw(rng, (4, 3, 5), 0.0, 1.0)
    logits = draw(rng, (4, 3, 5), -6.0, 6.0)
    # Reference: BCE from probabilities in numpy float64 (fine for moderate logits).
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    x64 = x.astype(np.float64)
    bce_reference = event_sum(-(x64 * np.log(p) + (1 - x64) * np.log(1 - p)), event_ndims)
    log_likelihood = jl.bernoulli_log_likelihood(x, logits, event_ndims=event_ndims)
    assert_close(log_likelihood, -bce_reference, REFERENCE_RTOL)
    bce_sum = jl.bce(x, logits, event_ndims=event_ndims)
    assert_close(bce_sum, -log_likelihood, IDENTITY_RTOL)
    num_dims = math.prod(x.shape[x.ndim - event_ndims :])
    bce_mean = jl.bce(x, logits, event_ndims=event_ndims, reduction="mean")
    assert_close(bce_mean, bce_sum / num_dims, IDENTITY_RTOL)


def test_bernoulli_gradient_is_x_minus_sigmoid():
    rng = np.random.default_rng(13)
    x = draw(rng, (3, 7), 0.0, 1.0)
    logits = draw(rng, (3, 7), -5.0, 5.0)
    grad = jit_grad(lambda l: jnp.sum(jl.bernoulli_log_likelihood(x, l)))(logits)
    # Closed form: d/dl [x log s(l) + (1-x) log(1-s(l))] = x - s(l).
    assert_close(
        grad, x.astype(np.float64) - special.expit(logits.astype(np.float64)), REFERENCE_RTOL
    )


# --------------------------------------------------------------------------- #
# Continuous Bernoulli.
# --------------------------------------------------------------------------- #

NORMALISER_LOGITS = [
    0.0,
    1e-6,
    -1e-6,
    1e-3,
    -1e-3,
    0.1,
    -0.1,
    0.49,
    -0.49,
    0.5,
    -0.5,
    0.51,
    -0.51,
    1.0,
    -1.0,
    5.0,
    -5.0,
    30.0,
    -30.0,
]


def log_normalizer_by_quad(logit: float) -> float:
    """log C = -log of the integral over [0, 1] of lambda^x (1 - lambda)^(1 - x) (scipy quad)."""
    log_lam = -np.logaddexp(0.0, -logit)  # log sigmoid(l)
    log_one_minus_lam = -np.logaddexp(0.0, logit)  # log sigmoid(-l)
    integral, _ = integrate.quad(
        lambda t: np.exp(t * log_lam + (1.0 - t) * log_one_minus_lam),
        0.0,
        1.0,
        epsabs=0.0,
        epsrel=1e-13,
    )
    return -math.log(integral)


def log_normalizer_closed_form(logit: float) -> float:
    """log(l / tanh(l / 2)) in float64; tanh is relatively accurate for small arguments."""
    if logit == 0.0:
        return math.log(2.0)
    return math.log(logit / math.tanh(logit / 2.0))


def mean_by_quad(logit: float) -> float:
    """E[x] under the continuous Bernoulli, as a ratio of two scipy quad integrals."""
    log_lam = -np.logaddexp(0.0, -logit)
    log_one_minus_lam = -np.logaddexp(0.0, logit)

    def density(t):
        return np.exp(t * log_lam + (1.0 - t) * log_one_minus_lam)

    kw = {"epsabs": 0.0, "epsrel": 1e-13}
    first_moment, _ = integrate.quad(lambda t: t * density(t), 0.0, 1.0, **kw)
    mass, _ = integrate.quad(density, 0.0, 1.0, **kw)
    return first_moment / mass


def test_continuous_bernoulli_log_normalizer_matches_quad():
    logits = np.asarray(NORMALISER_LOGITS, dtype=DTYPE)
    got = np.asarray(jl.continuous_bernoulli_log_normalizer(logits))
    # Reference 1: numerical integration of the unnormalised density (scipy quad).
    by_quad = np.array([log_normalizer_by_quad(float(l)) for l in logits])
    np.testing.assert_allclose(got, by_quad, rtol=REFERENCE_RTOL)
    # Reference 2: the closed form log(l / tanh(l/2)) in float64 (reliable for big |l|).
    closed = np.array([log_normalizer_closed_form(float(l)) for l in logits])
    np.testing.assert_allclose(got, closed, rtol=REFERENCE_RTOL)
    assert np.all(got >= math.log(2.0) * (1 - 1e-7))


_continuous_bernoulli_density = jax.jit(
    lambda t, logit: jnp.exp(lik.continuous_bernoulli_log_likelihood(t, logit, event_ndims=0))
)


@pytest.mark.parametrize("logit", [0.0, 4e-7, -0.3, 0.7, -2.0, 6.0])
def test_continuous_bernoulli_density_integrates_to_one(logit):
    logit = np.float32(logit)
    # Reference: the total mass of a density is 1 (scipy quad over x in [0, 1]).
    mass, _ = integrate.quad(
        lambda t: float(_continuous_bernoulli_density(np.float32(t), logit)), 0.0, 1.0
    )
    assert mass == pytest.approx(1.0, rel=REFERENCE_RTOL)


def test_continuous_bernoulli_mean_matches_quad():
    logits = np.asarray(
        [0.0, 1e-6, -1e-3, 0.1, -0.3, 0.49, 0.5, -0.51, 1.0, -3.0, 10.0, -40.0], dtype=DTYPE
    )
    got = np.asarray(jl.continuous_bernoulli_mean(logits))
    # Reference: E[x] = integral of x * density over [0, 1] (scipy quad).
    expected = np.array([mean_by_quad(float(l)) for l in logits])
    np.testing.assert_allclose(got, expected, rtol=REFERENCE_RTOL)
    # It is not lambda = sigmoid(logits) (except at l = 0): a plotting mistake to avoid.
    assert abs(got[-2] - special.expit(10.0)) > 0.05


@pytest.mark.parametrize("event_ndims", [0, 2])
def test_continuous_bernoulli_is_bernoulli_plus_log_normalizer(event_ndims):
    rng = np.random.default_rng(14)
    x = draw(rng, (4, 3, 5), 0.0, 1.0)
    logits = draw(rng, (4, 3, 5), -6.0, 6.0)
    # Identity: log CB = log Bern + log C, the normaliser summed over the same event axes.
    bernoulli = jl.bernoulli_log_likelihood(x, logits, event_ndims=event_ndims)
    normaliser = event_sum(np.asarray(jl.continuous_bernoulli_log_normalizer(logits)), event_ndims)
    continuous = jl.continuous_bernoulli_log_likelihood(x, logits, event_ndims=event_ndims)
    assert_close(continuous, np.asarray(bernoulli) + normaliser, IDENTITY_RTOL)
    # And against scipy-free float64 numpy: x log lam + (1-x) log(1-lam) + log(l / tanh(l/2)).
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    log_lam, log_one_minus_lam = -np.logaddexp(0, -l64), -np.logaddexp(0, l64)
    elementwise = x64 * log_lam + (1 - x64) * log_one_minus_lam + np.log(l64 / np.tanh(l64 / 2))
    assert_close(continuous, event_sum(elementwise, event_ndims), REFERENCE_RTOL)


def test_continuous_bernoulli_normalizer_continuous_across_taylor_cutoff():
    cutoff = np.float32(0.5)
    below = np.nextafter(cutoff, np.float32(0.0))
    above = np.nextafter(cutoff, np.float32(1.0))
    for sign in (1.0, -1.0):
        points = jnp.asarray(sign * np.array([below, cutoff, above], dtype=DTYPE))
        values = np.asarray(jl.continuous_bernoulli_log_normalizer(points))
        # Identity: the Taylor branch and the closed form meet at |l| = 0.5.
        np.testing.assert_allclose(values[0], values[1:], rtol=IDENTITY_RTOL)
        grads = np.asarray(jax.vmap(jit_grad(jl.continuous_bernoulli_log_normalizer))(points))
        # d/dl log C is ~0.08 here and the closed form loses a few ulps of 2 to cancellation.
        np.testing.assert_allclose(grads[0], grads[1:], rtol=1e-5)
        means = np.asarray(jl.continuous_bernoulli_mean(points))
        np.testing.assert_allclose(means[0], means[1:], rtol=IDENTITY_RTOL)


def test_continuous_bernoulli_normalizer_gradient_matches_closed_form():
    logits = np.asarray([-20.0, -3.0, -0.7, -0.2, 0.0, 1e-3, 0.4, 0.6, 2.0, 15.0], dtype=DTYPE)
    grads = jax.vmap(jit_grad(jl.continuous_bernoulli_log_normalizer))(logits)
    l64 = logits.astype(np.float64)
    # Closed form: d/dl log(l / tanh(l/2)) = 1/l - 1/sinh(l), -> 0 (and ~ l/6) at l = 0.
    safe = np.where(l64 == 0, 1.0, l64)
    expected = np.where(l64 == 0, 0.0, 1 / safe - 1 / np.sinh(safe))
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- #
# Float32 numerics at the edges of the contract.
# --------------------------------------------------------------------------- #


def assert_all_finite(*arrays):
    for array in arrays:
        array = np.asarray(array)
        assert np.all(np.isfinite(array)), array[~np.isfinite(array)]


def test_bernoulli_family_finite_over_logit_range():
    # Every logit against the two binary values and a grey level: [3, num_logits].
    logits = np.broadcast_to(logit_grid(), (3, logit_grid().size))
    x = np.broadcast_to(np.asarray([[0.0], [0.3], [1.0]], dtype=DTYPE), logits.shape)
    for fn in (jl.bernoulli_log_likelihood, jl.continuous_bernoulli_log_likelihood):
        values = fn(x, logits, event_ndims=0)
        grads = jit_grad(lambda l, fn=fn: jnp.sum(fn(x, l, event_ndims=0)))(logits)
        assert values.dtype == jnp.float32
        assert_all_finite(values, grads)


def test_continuous_bernoulli_helpers_finite_over_logit_range():
    logits = jnp.asarray(logit_grid())
    for fn in (jl.continuous_bernoulli_log_normalizer, jl.continuous_bernoulli_mean):
        values = fn(logits)
        grads = jax.vmap(jit_grad(fn))(logits)
        assert_all_finite(values, grads)
    means = np.asarray(jl.continuous_bernoulli_mean(logits))
    assert np.all((means >= 0) & (means <= 1))


def test_continuous_bernoulli_near_half_is_accurate():
    # lambda within 1e-7 of 1/2: logits ~ +-4e-7 and exactly 0; the closed form would cancel.
    logits = np.asarray([-4e-7, -1e-7, 0.0, 1e-7, 4e-7], dtype=DTYPE)
    values = np.asarray(jl.continuous_bernoulli_log_normalizer(logits))
    # Reference: log C -> log 2 + l^2/12 (closed-form limit; l^2/12 ~ 1e-14 vanishes in float32).
    np.testing.assert_allclose(values, math.log(2.0), rtol=IDENTITY_RTOL)
    means = np.asarray(jl.continuous_bernoulli_mean(logits))
    np.testing.assert_allclose(means, 0.5 + logits.astype(np.float64) / 12, rtol=IDENTITY_RTOL)
    x = np.asarray([0.0, 0.25, 0.5, 0.75, 1.0], dtype=DTYPE)
    grads = jit_grad(
        lambda l: jnp.sum(jl.continuous_bernoulli_log_likelihood(x, l, event_ndims=0))
    )(jnp.asarray(logits))
    # Closed form: d/dl log CB = x - sigmoid(l) + d/dl log C ~ x - 1/2 + l/12 - l/4 near 0.
    np.testing.assert_allclose(grads, x - 0.5, atol=1e-6)


def test_gaussian_finite_over_sigma_range():
    sigmas = np.logspace(-6, 6, 61).astype(DTYPE)
    residuals = np.linspace(-1.0, 1.0, 21).astype(DTYPE)
    mean = np.zeros((sigmas.size, residuals.size), dtype=DTYPE)
    x = np.broadcast_to(residuals, mean.shape)
    sigma = sigmas[:, None]

    def total(mean, sigma):
        return jnp.sum(jl.gaussian_log_likelihood(x, mean, sigma))

    def total_log_sigma(mean, log_sigma):
        return jnp.sum(jl.gaussian_log_likelihood_from_log_sigma(x, mean, log_sigma))

    # Each row is one example, so the gradient of the sum holds every per-element gradient.
    values = jl.gaussian_log_likelihood(x, mean, sigma)
    grads = jit_grad(total, argnums=(0, 1))(mean, sigma)
    log_sigma = np.log(sigma)
    values_log = jl.gaussian_log_likelihood_from_log_sigma(x, mean, log_sigma)
    grads_log = jit_grad(total_log_sigma, argnums=(0, 1))(mean, log_sigma)
    assert_all_finite(values, values_log, *grads, *grads_log)
    # Spot check at the extreme: sigma = 1e-6 and |x - mean| = 1 gives -z^2/2 = -5e11 per pixel.
    expected = stats.norm.logpdf(residuals.astype(np.float64), 0.0, 1e-6).sum()
    np.testing.assert_allclose(values[0], expected, rtol=REFERENCE_RTOL)


# --------------------------------------------------------------------------- #
# Converters.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "convention,num_dims,factor",
    [("sse", None, 2.0), ("sse_half", None, 1.0), ("mse", 784, 2.0 / 784)],
)
def test_beta_sigma_conventions_and_round_trip(convention, num_dims, factor):
    sigma = np.asarray([1e-3, 0.1, 0.5, 1.0, 7.0], dtype=DTYPE)
    beta = lik.beta_from_sigma(sigma, convention=convention, num_dims=num_dims)
    # Closed form from -ELBO = SSE / (2 sigma^2) + KL: beta = 2 sigma^2, sigma^2, 2 sigma^2 / D.
    np.testing.assert_allclose(beta, factor * sigma.astype(np.float64) ** 2, rtol=REFERENCE_RTOL)
    back = lik.sigma_from_beta(beta, convention=convention, num_dims=num_dims)
    np.testing.assert_allclose(back, sigma, rtol=IDENTITY_RTOL)


@pytest.mark.parametrize("fn", [lik.beta_from_sigma, lik.sigma_from_beta])
@pytest.mark.parametrize("num_dims", [None, 0])
def test_mse_convention_requires_num_dims(fn, num_dims):
    with pytest.raises(ValueError, match="num_dims"):
        fn(1.0, convention="mse", num_dims=num_dims)


def test_nats_to_bits_per_dim():
    nll = np.asarray([0.0, 100.0, 2500.5], dtype=DTYPE)
    num_dims = 64
    # Closed form: bits/dim = nats / (D ln 2); 8-bit data adds 8 bits/dim for the bin width.
    expected = nll.astype(np.float64) / (num_dims * math.log(2.0))
    np.testing.assert_allclose(lik.nats_to_bits_per_dim(nll, num_dims), expected, rtol=1e-6)
    np.testing.assert_allclose(
        lik.nats_to_bits_per_dim(nll, num_dims, num_bits=8), expected + 8, rtol=1e-6
    )


# --------------------------------------------------------------------------- #
# Jit and vmap give the same numbers as eager calls.
# --------------------------------------------------------------------------- #


def _batched_calls():
    rng = np.random.default_rng(15)
    # The shape of X and M below, so eager calls reuse the primitives compiled for them.
    x = draw(rng, (2, 3), 0.0, 1.0)
    y = draw(rng, (2, 3), 0.0, 1.0)
    logits = draw(rng, (2, 3), -3.0, 3.0)
    return [
        ("gaussian", lambda a, b: lik.gaussian_log_likelihood(a, b, 0.3), x, y),
        ("optimal", lambda a, b: lik.gaussian_log_likelihood_optimal_sigma(a, b), x, y),
        ("continuous_bernoulli", lik.continuous_bernoulli_log_likelihood, x, logits),
        ("bce_mean", lambda a, b: lik.bce(a, b, reduction="mean"), x, logits),
    ]


# bce_mean is called eagerly on grey levels: its (tested) warning is expected here.
@pytest.mark.filterwarnings("ignore:bernoulli_log_likelihood / bce got grey-level data")
@pytest.mark.parametrize("name,fn,a,b", _batched_calls(), ids=[c[0] for c in _batched_calls()])
def test_jit_and_vmap_agree_with_eager(name, fn, a, b):
    eager = fn(a, b)
    assert_close(jax.jit(fn)(a, b), eager, IDENTITY_RTOL)
    assert_close(jax.jit(jax.vmap(fn))(a, b), eager, IDENTITY_RTOL)


# --------------------------------------------------------------------------- #
# Bad input: concrete values raise ValueError naming the argument.
# --------------------------------------------------------------------------- #

X = np.full((2, 3), 0.5, dtype=DTYPE)
M = np.full((2, 3), 0.25, dtype=DTYPE)

BAD_INPUTS = {
    "sigma_zero": (lambda: lik.gaussian_log_likelihood(X, M, 0.0), "sigma"),
    "sigma_negative": (lambda: lik.gaussian_log_likelihood(X, M, np.float32(-1.0)), "sigma"),
    "sigma_one_negative": (
        lambda: lik.gaussian_log_likelihood(X, M, np.asarray([1.0, -1.0, 1.0], DTYPE)),
        "sigma",
    ),
    "sigma_nan": (lambda: lik.gaussian_log_likelihood(X, M, np.float32(np.nan)), "sigma"),
    "sigma_inf": (lambda: lik.gaussian_log_likelihood(X, M, np.float32(np.inf)), "sigma"),
    "log_sigma_inf": (
        lambda: lik.gaussian_log_likelihood_from_log_sigma(X, M, np.float32(np.inf)),
        "log_sigma",
    ),
    "x_int": (lambda: lik.gaussian_log_likelihood(np.ones((2, 3), np.int32), M, 1.0), "x"),
    "x_uint8_image": (lambda: lik.bernoulli_log_likelihood(np.ones((2, 3), np.uint8), M), "x"),
    "x_bool_array": (lambda: lik.bernoulli_log_likelihood(np.ones((2, 3), bool), M), "x"),
    "x_python_bool": (lambda: lik.bernoulli_log_likelihood(True, np.float32(0.0)), "x"),
    "mean_int": (lambda: lik.gaussian_log_likelihood(X, np.ones((2, 3), np.int32), 1.0), "mean"),
    "logits_int": (lambda: lik.bernoulli_log_likelihood(X, np.ones((2, 3), np.int32)), "logits"),
    "gaussian_shape": (lambda: lik.gaussian_log_likelihood(X, M[:, :2], 1.0), "mean"),
    "gaussian_log_sigma_shape": (
        lambda: lik.gaussian_log_likelihood_from_log_sigma(X, M.T, 0.0),
        "mean",
    ),
    "bernoulli_shape": (lambda: lik.bernoulli_log_likelihood(X, M[:, :2]), "logits"),
    "bernoulli_rank": (lambda: lik.bernoulli_log_likelihood(X, M[0]), "logits"),
    "cb_shape": (lambda: lik.continuous_bernoulli_log_likelihood(X, M.T), "logits"),
    "cb_rank": (lambda: lik.continuous_bernoulli_log_likelihood(X, M[None]), "logits"),
    "sse_shape": (lambda: lik.sse(X, M[0]), "mean"),
    "mse_shape": (lambda: lik.mse(X, M[0]), "mean"),
    "bce_shape": (lambda: lik.bce(X, M[0]), "logits"),
    "optimal_sigma_shape": (lambda: lik.optimal_sigma(X, M[0]), "mean"),
    "optimal_ll_shape": (lambda: lik.gaussian_log_likelihood_optimal_sigma(X, M[0]), "mean"),
    "sigma_not_broadcastable": (
        lambda: lik.gaussian_log_likelihood(X, M, np.ones((2,), DTYPE)),
        "sigma",
    ),
    "sigma_bigger_than_x": (
        lambda: lik.gaussian_log_likelihood(X, M, np.ones((5, 2, 3), DTYPE)),
        "sigma",
    ),
    "log_sigma_not_broadcastable": (
        lambda: lik.gaussian_log_likelihood_from_log_sigma(X, M, np.ones((4,), DTYPE)),
        "log_sigma",
    ),
    "gaussian_event_ndims": (
        lambda: lik.gaussian_log_likelihood(X, M, 1.0, event_ndims=3),
        "event_ndims",
    ),
    "gaussian_log_sigma_event_ndims": (
        lambda: lik.gaussian_log_likelihood_from_log_sigma(X, M, 0.0, event_ndims=3),
        "event_ndims",
    ),
    "bernoulli_event_ndims": (
        lambda: lik.bernoulli_log_likelihood(X, M, event_ndims=3),
        "event_ndims",
    ),
    "cb_event_ndims": (
        lambda: lik.continuous_bernoulli_log_likelihood(X, M, event_ndims=3),
        "event_ndims",
    ),
    "sse_event_ndims": (lambda: lik.sse(X, M, event_ndims=3), "event_ndims"),
    "mse_event_ndims": (lambda: lik.mse(X, M, event_ndims=3), "event_ndims"),
    "bce_event_ndims": (lambda: lik.bce(X, M, event_ndims=3), "event_ndims"),
    "optimal_sigma_event_ndims": (lambda: lik.optimal_sigma(X, M, event_ndims=3), "event_ndims"),
    "optimal_ll_event_ndims": (
        lambda: lik.gaussian_log_likelihood_optimal_sigma(X, M, event_ndims=3),
        "event_ndims",
    ),
    "event_ndims_negative": (
        lambda: lik.gaussian_log_likelihood(X, M, 1.0, event_ndims=-1),
        "event_ndims",
    ),
    "bernoulli_x_above_one": (lambda: lik.bernoulli_log_likelihood(X + 1, M), "x"),
    "bernoulli_x_below_zero": (lambda: lik.bernoulli_log_likelihood(X - 1, M), "x"),
    "bernoulli_x_nan": (lambda: lik.bernoulli_log_likelihood(X * np.nan, M), "x"),
    "bce_x_above_one": (lambda: lik.bce(X * 3, M), "x"),
    "cb_x_above_one": (lambda: lik.continuous_bernoulli_log_likelihood(X + 1, M), "x"),
    "cb_x_below_zero": (lambda: lik.continuous_bernoulli_log_likelihood(X - 1, M), "x"),
    "cb_normalizer_int": (lambda: lik.continuous_bernoulli_log_normalizer(np.int32(1)), "logits"),
    "cb_mean_int": (lambda: lik.continuous_bernoulli_mean(np.arange(3)), "logits"),
    "bce_reduction": (lambda: lik.bce(X, M, reduction="none"), "reduction"),
    "optimal_sigma_axis": (lambda: lik.optimal_sigma(X, M, axis="pixel"), "axis"),
    "optimal_ll_axis": (lambda: lik.gaussian_log_likelihood_optimal_sigma(X, M, axis=0), "axis"),
    "beta_convention": (lambda: lik.beta_from_sigma(1.0, convention="mean"), "convention"),
    "sigma_convention": (lambda: lik.sigma_from_beta(1.0, convention="bce"), "convention"),
    "beta_sigma_zero": (lambda: lik.beta_from_sigma(0.0), "sigma"),
    "beta_zero": (lambda: lik.sigma_from_beta(0.0), "beta"),
    "beta_negative": (lambda: lik.sigma_from_beta(np.float32(-2.0)), "beta"),
    "bits_num_dims": (lambda: lik.nats_to_bits_per_dim(1.0, 0), "num_dims"),
    "bits_num_dims_float": (lambda: lik.nats_to_bits_per_dim(1.0, 3.0), "num_dims"),
    "bits_num_bits": (lambda: lik.nats_to_bits_per_dim(1.0, 3, num_bits=0), "num_bits"),
}


@pytest.mark.parametrize("call,argument", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call()


@pytest.mark.parametrize("bad_sigma", [0.0, -1.0, np.nan])
def test_invalid_sigma_under_jit_gives_nan(bad_sigma):
    fn = jax.jit(lambda x, m, s: lik.gaussian_log_likelihood(x, m, s))
    sigma = np.asarray([1.0, bad_sigma], dtype=DTYPE)[:, None]  # per example: one bad example
    out = np.asarray(fn(X, M, sigma))
    assert np.isfinite(out[0])
    assert np.isnan(out[1])


def test_infinite_sigma_under_jit_gives_nan():
    # The module docstring promises NaN for a non-finite sigma under jit (not -inf).
    fn = jax.jit(lambda x, m, s: lik.gaussian_log_likelihood(x, m, s))
    out = np.asarray(fn(X, M, np.float32(np.inf)))
    assert np.all(np.isnan(out)), out


@pytest.mark.parametrize(
    "fn", [lik.bernoulli_log_likelihood, lik.continuous_bernoulli_log_likelihood, lik.bce]
)
@pytest.mark.parametrize("bad_x", [-0.1, 1.5, np.nan])
def test_x_outside_unit_interval_under_jit_gives_nan(fn, bad_x):
    x = np.array([[0.2, 0.4, 1.0], [0.0, bad_x, 0.5]], dtype=DTYPE)
    out = np.asarray(jax.jit(fn)(x, M))
    assert np.isfinite(out[0])
    assert np.isnan(out[1])


# --------------------------------------------------------------------------- #
# Image shapes: event_ndims is required above rank 2; same-rank broadcasting of mean/logits.
# --------------------------------------------------------------------------- #

IMAGES = np.full((5, 8, 8, 1), 0.5, DTYPE)  # [B, H, W, C]

# name -> a call with the image data and one keyword (or none) for event_ndims.
EVENT_FUNCTIONS = {
    "gaussian_log_likelihood": lambda x, **kw: lik.gaussian_log_likelihood(x, x, 0.1, **kw),
    "gaussian_log_likelihood_from_log_sigma": (
        lambda x, **kw: lik.gaussian_log_likelihood_from_log_sigma(x, x, 0.0, **kw)),
    "optimal_sigma": lambda x, **kw: lik.optimal_sigma(x, x * 0.5, **kw),
    "gaussian_log_likelihood_optimal_sigma": (
        lambda x, **kw: lik.gaussian_log_likelihood_optimal_sigma(x, x * 0.5, **kw)),
    "bernoulli_log_likelihood": lambda x, **kw: lik.bernoulli_log_likelihood(x, x, **kw),
    "continuous_bernoulli_log_likelihood": (
        lambda x, **kw: lik.continuous_bernoulli_log_likelihood(x, x, **kw)),
    "sse": lambda x, **kw: lik.sse(x, x, **kw),
    "mse": lambda x, **kw: lik.mse(x, x, **kw),
    "bce": lambda x, **kw: lik.bce(x, x, **kw),
}


@pytest.mark.parametrize("call", EVENT_FUNCTIONS.values(), ids=EVENT_FUNCTIONS.keys())
def test_event_ndims_is_required_for_images(call):
    # The old default summed only the last axis of [B, H, W, C] images, returning [B, H, W].
    message = (r"`event_ndims`.*x.*\(5, 8, 8, 1\); pass event_ndims=3 to sum each \[8, 8, 1\] "
               r"image \(nats per example\), or event_ndims=1 to sum only the last axis")
    with pytest.raises(ValueError, match=message):
        call(IMAGES)
    # An explicit event_ndims is honoured, including 1 (shapes only: no compilation).
    x = jax.ShapeDtypeStruct(IMAGES.shape, jnp.float32)
    assert jax.eval_shape(lambda a: call(a, event_ndims=3), x).shape == (5,)
    assert jax.eval_shape(lambda a: call(a, event_ndims=1), x).shape == (5, 8, 8)


@pytest.mark.parametrize("call", EVENT_FUNCTIONS.values(), ids=EVENT_FUNCTIONS.keys())
def test_default_event_ndims_for_flat_data(call):
    # Rank <= 2 keeps the default: [B, D] -> [B], [D] -> [], a scalar -> [] (nothing to sum).
    for shape, expected in (((5, 7), (5,)), ((7,), ()), ((), ())):
        out = jax.eval_shape(call, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert out.shape == expected, (shape, out.shape)


def test_optimal_sigma_batch_axis_is_a_scalar_for_images():
    x = jax.ShapeDtypeStruct(IMAGES.shape, jnp.float32)
    out = jax.eval_shape(lambda a: lik.optimal_sigma(a, a, axis="batch", event_ndims=3), x)
    assert out.shape == ()


# (function, name of its decoder-output argument)
DECODER_OUTPUTS = {
    "gaussian_log_likelihood": (lambda x, m, **kw: lik.gaussian_log_likelihood(x, m, 0.3, **kw),
                                "mean"),
    "gaussian_log_likelihood_from_log_sigma": (
        lambda x, m, **kw: lik.gaussian_log_likelihood_from_log_sigma(x, m, -1.0, **kw), "mean"),
    "bernoulli_log_likelihood": (lik.bernoulli_log_likelihood, "logits"),
    "continuous_bernoulli_log_likelihood": (lik.continuous_bernoulli_log_likelihood, "logits"),
    "sse": (lik.sse, "mean"),
    "mse": (lik.mse, "mean"),
    "bce": (lik.bce, "logits"),
    "optimal_sigma": (lik.optimal_sigma, "mean"),
    "gaussian_log_likelihood_optimal_sigma": (lik.gaussian_log_likelihood_optimal_sigma, "mean"),
}


@pytest.mark.parametrize("fn,argument", DECODER_OUTPUTS.values(), ids=DECODER_OUTPUTS.keys())
def test_same_rank_decoder_output_broadcasts_to_x(fn, argument):
    # A (1, 4, 4, 1) mean / logits of x's rank broadcasts over the batch: the result equals
    # the call with the explicitly broadcast array (identity), and has x's batch shape.
    rng = np.random.default_rng(16)
    x = (rng.uniform(size=(3, 4, 4, 1)) < 0.5).astype(DTYPE)
    shared = draw(rng, (1, 4, 4, 1), 0.1, 0.9)
    jitted = jax.jit(lambda a, b: (fn(a, b, event_ndims=3),
                                   fn(a, jnp.broadcast_to(b, a.shape), event_ndims=3)))
    broadcast, explicit = jitted(x, shared)
    assert broadcast.shape == explicit.shape == (3,)
    assert_close(broadcast, explicit, IDENTITY_RTOL)


@pytest.mark.parametrize("fn,argument", DECODER_OUTPUTS.values(), ids=DECODER_OUTPUTS.keys())
def test_decoder_output_of_another_rank_is_refused(fn, argument):
    # A [B] mean against [B, D] data with B == D would broadcast along the pixels, silently.
    x = np.full((4, 4), 0.5, DTYPE)
    with pytest.raises(ValueError, match=rf"`{argument}` of shape \(4,\) must have the same "
                                         r"rank as `x`.*B == D"):
        fn(x, np.full((4,), 0.5, DTYPE))
    with pytest.raises(ValueError, match=rf"`{argument}` of shape \(2, 4\) does not broadcast"):
        fn(x, np.full((2, 4), 0.5, DTYPE))


# --------------------------------------------------------------------------- #
# checked(): errors under jit.
# --------------------------------------------------------------------------- #


def test_checked_raises_under_jit_for_a_bad_sigma_and_passes_good_values_through():
    fn = jax.jit(functools.partial(lik.gaussian_log_likelihood, event_ndims=1))
    safe = lik.checked(fn)
    good = np.float32(0.3)
    np.testing.assert_array_equal(safe(X, M, good), fn(X, M, good))
    with pytest.raises(checkify.JaxRuntimeError, match="gaussian_log_likelihood.*nan generated"):
        safe(X, M, np.float32(-0.3))
    # A ValueError, like the eager value checks.
    assert issubclass(checkify.JaxRuntimeError, ValueError)


def test_checked_catches_x_outside_the_support_under_jit():
    safe = lik.checked(jax.jit(lik.continuous_bernoulli_log_likelihood))
    with pytest.raises(checkify.JaxRuntimeError, match="continuous_bernoulli_log_likelihood"):
        safe(X + 1.0, M)


# --------------------------------------------------------------------------- #
# The grey-level warning of the Bernoulli likelihood.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("fn", [lik.bernoulli_log_likelihood, lik.bce], ids=["bernoulli", "bce"])
def test_grey_levels_warn_binary_data_and_jit_do_not(fn):
    with pytest.warns(UserWarning, match="not a normalised density on \\[0, 1\\].*"
                                         "continuous_bernoulli_log_likelihood.*binarise"):
        fn(X, M)  # X = 0.5 everywhere
    binary = (X > 0.4).astype(DTYPE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(binary, M)
        jax.jit(fn)(X, M)  # grey levels, but traced: no check, no warning
    assert not [w for w in caught if issubclass(w.category, UserWarning)], caught


def test_grey_level_warning_is_shown_once_by_the_default_filter():
    # One message from one line: Python's "default" action shows it once, however many calls
    # and call sites (catch_warnings resets the once-registry on entry).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        lik.bernoulli_log_likelihood(X, M)
        lik.bernoulli_log_likelihood(X, M)
        lik.bce(X, M)
    assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1, caught
