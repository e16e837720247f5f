"""Float64 versions of the reference comparisons, with tight tolerances and `check_grads`.

Every test here runs inside `jax.enable_x64(True)` (a context manager in jax 0.10), entered
and left by an autouse fixture, so the float32 tests in the other files keep the default
precision. References are as in `test_likelihoods.py` and `test_kl.py`: `scipy.stats`,
`scipy.integrate.quad`, `scipy.optimize`, and closed forms in numpy float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, optimize, special, stats

from vaejax import kl
from vaejax import likelihoods as lik

# Float64 against float64 references (scipy, quad, numpy closed forms).
REFERENCE_RTOL = 1e-10
# Float64 identities between two library computations.
IDENTITY_RTOL = 1e-13
# Central finite differences with step 1e-4 are exact to ~1e-8 times the third derivative.
GRAD_TOL = 1e-6
DTYPE = np.float64


@pytest.fixture(autouse=True)
def float64_precision():
    before = jax.config.jax_enable_x64
    with jax.enable_x64(True):
        yield
    assert jax.config.jax_enable_x64 == before


def _jit(fn, *static):
    return jax.jit(fn, static_argnames=static)


# Wrapped at import but traced at call time, inside the x64 context (jit caches per setting).
gaussian_log_likelihood = _jit(lik.gaussian_log_likelihood, "event_ndims")
gaussian_log_likelihood_from_log_sigma = _jit(
    lik.gaussian_log_likelihood_from_log_sigma, "event_ndims"
)
optimal_sigma = _jit(lik.optimal_sigma, "axis", "event_ndims")
gaussian_log_likelihood_optimal_sigma = _jit(
    lik.gaussian_log_likelihood_optimal_sigma, "axis", "event_ndims", "eps"
)
bernoulli_log_likelihood = _jit(lik.bernoulli_log_likelihood, "event_ndims")
bce = _jit(lik.bce, "event_ndims", "reduction")
continuous_bernoulli_log_normalizer = jax.jit(lik.continuous_bernoulli_log_normalizer)
continuous_bernoulli_log_likelihood = _jit(lik.continuous_bernoulli_log_likelihood, "event_ndims")
continuous_bernoulli_mean = jax.jit(lik.continuous_bernoulli_mean)
kl_standard_normal = _jit(kl.kl_standard_normal, "event_ndims")
kl_diagonal_gaussians = _jit(kl.kl_diagonal_gaussians, "event_ndims")
diagonal_gaussian_log_density = _jit(kl.diagonal_gaussian_log_density, "event_ndims")


def assert_close(got, expected, rtol):
    got = np.asarray(got)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.dtype == np.float64, got.dtype
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def event_sum(values, event_ndims):
    return values if event_ndims == 0 else values.sum(axis=tuple(range(-event_ndims, 0)))


def test_float64_is_on_inside_these_tests():
    assert jnp.asarray(1.0).dtype == jnp.float64
    assert gaussian_log_likelihood(np.ones(3), np.zeros(3), 1.0).dtype == jnp.float64


# --------------------------------------------------------------------------- #
# Gaussian and optimal sigma.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "x_shape,sigma_shape,event_ndims",
    [((6, 10), (), 1), ((6, 10), (10,), 1), ((6, 10), (6, 10), 0), ((6, 4, 5), (6, 4, 5), 2)],
)
def test_gaussian_matches_scipy_norm_logpdf(x_shape, sigma_shape, event_ndims):
    rng = np.random.default_rng(0)
    x, mean = rng.uniform(size=x_shape), rng.uniform(size=x_shape)
    sigma = rng.uniform(0.05, 2.0, size=sigma_shape)
    # Reference: scipy.stats.norm.logpdf summed over the event axes.
    expected = event_sum(stats.norm.logpdf(x, mean, sigma), event_ndims)
    got = gaussian_log_likelihood(x, mean, sigma, event_ndims=event_ndims)
    assert_close(got, expected, REFERENCE_RTOL)
    from_log = gaussian_log_likelihood_from_log_sigma(
        x, mean, np.log(sigma), event_ndims=event_ndims
    )
    assert_close(from_log, got, IDENTITY_RTOL)


def test_gaussian_log_determinant_mistake_is_visible():
    rng = np.random.default_rng(1)
    x, mean = rng.uniform(size=(3, 8)), rng.uniform(size=(3, 8))
    sigma = rng.uniform(0.1, 3.0, size=8)
    quadratic = -0.5 * np.sum((x - mean) ** 2 / sigma**2, axis=-1)
    constant = -4.0 * math.log(2 * math.pi)
    correct = constant - 0.5 * np.sum(np.log(sigma**2)) + quadratic
    mistaken = constant - 0.5 * np.sum(sigma**2) + quadratic
    # Reference: scipy agrees with the sum(log sigma_i^2) form, and so does the library.
    np.testing.assert_allclose(correct, stats.norm.logpdf(x, mean, sigma).sum(-1), rtol=1e-13)
    assert_close(gaussian_log_likelihood(x, mean, sigma), correct, REFERENCE_RTOL)
    assert np.all(np.abs(np.asarray(gaussian_log_likelihood(x, mean, sigma)) - mistaken) > 1.0)


def test_optimal_sigma_closed_forms():
    rng = np.random.default_rng(2)
    x, mean = rng.uniform(size=(4, 3, 5)), rng.uniform(size=(4, 3, 5))
    mse = ((x - mean) ** 2).mean(axis=(1, 2))
    mse_batch = ((x - mean) ** 2).mean()
    assert_close(optimal_sigma(x, mean, event_ndims=2), np.sqrt(mse), REFERENCE_RTOL)
    assert_close(
        optimal_sigma(x, mean, axis="batch", event_ndims=2), np.sqrt(mse_batch), REFERENCE_RTOL
    )
    # -D/2 log(2 pi e MSE) per example; -(N D)/2 log(2 pi e MSE_batch) summed over the batch.
    per_example = gaussian_log_likelihood_optimal_sigma(x, mean, event_ndims=2)
    assert_close(per_example, -7.5 * np.log(2 * np.pi * np.e * mse), REFERENCE_RTOL)
    pooled = gaussian_log_likelihood_optimal_sigma(x, mean, axis="batch", event_ndims=2)
    assert_close(jnp.sum(pooled), -30.0 * np.log(2 * np.pi * np.e * mse_batch), REFERENCE_RTOL)
    # Identity: the general log-likelihood at sigma*.
    at_star = gaussian_log_likelihood(x, mean, np.sqrt(mse)[:, None, None], event_ndims=2)
    assert_close(per_example, at_star, 1e-12)


def test_optimal_sigma_is_the_maximiser():
    rng = np.random.default_rng(3)
    x, mean = rng.uniform(size=20), rng.uniform(size=20)
    # Reference: scipy.optimize.minimize_scalar on -sum(scipy.stats.norm.logpdf) over sigma.
    result = optimize.minimize_scalar(
        lambda s: -stats.norm.logpdf(x, mean, s).sum(),
        bounds=(1e-3, 10.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    # The objective is flat at the optimum: sigma is only determined to ~sqrt(machine eps).
    np.testing.assert_allclose(optimal_sigma(x, mean), result.x, rtol=1e-7)


# --------------------------------------------------------------------------- #
# Bernoulli and continuous Bernoulli.
# --------------------------------------------------------------------------- #


def test_bernoulli_matches_scipy_and_numpy_bce():
    rng = np.random.default_rng(4)
    binary = (rng.uniform(size=(5, 12)) < 0.5).astype(DTYPE)
    grey = rng.uniform(size=(5, 12))
    logits = rng.uniform(-8.0, 8.0, size=(5, 12))
    p = special.expit(logits)
    # Reference: scipy.stats.bernoulli.logpmf on binary data.
    expected = stats.bernoulli.logpmf(binary.astype(np.int64), p).sum(-1)
    assert_close(bernoulli_log_likelihood(binary, logits), expected, REFERENCE_RTOL)
    # Reference: -BCE from probabilities in numpy on grey levels.
    bce_reference = -(grey * np.log(p) + (1 - grey) * np.log1p(-p)).sum(-1)
    assert_close(bernoulli_log_likelihood(grey, logits), -bce_reference, REFERENCE_RTOL)
    assert_close(bce(grey, logits), bce_reference, REFERENCE_RTOL)
    assert_close(bce(grey, logits, reduction="mean"), bce_reference / 12, REFERENCE_RTOL)


NORMALISER_LOGITS = [
    0.0,
    1e-6,
    -1e-6,
    1e-3,
    -1e-3,
    0.1,
    -0.1,
    0.3,
    -0.3,
    0.45,
    -0.45,
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


def _log_density_pieces(logit):
    return -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit)


def log_normalizer_by_quad(logit):
    """-log of the integral of lambda^x (1 - lambda)^(1 - x) over [0, 1] (scipy quad)."""
    log_lam, log_one_minus_lam = _log_density_pieces(logit)
    integral, _ = integrate.quad(
        lambda t: np.exp(t * log_lam + (1 - t) * log_one_minus_lam),
        0.0,
        1.0,
        epsabs=0.0,
        epsrel=1e-13,
    )
    return -math.log(integral)


def log_normalizer_closed_form(logit):
    """log(l / tanh(l / 2)); tanh keeps full relative accuracy for small arguments."""
    return math.log(2.0) if logit == 0 else math.log(logit / math.tanh(logit / 2))


@pytest.mark.parametrize("logit", NORMALISER_LOGITS)
def test_continuous_bernoulli_log_normalizer(logit):
    got = continuous_bernoulli_log_normalizer(np.float64(logit))
    # Reference 1: scipy quad; reference 2: the closed form (the reliable one for big |l|).
    np.testing.assert_allclose(got, log_normalizer_by_quad(logit), rtol=REFERENCE_RTOL)
    np.testing.assert_allclose(got, log_normalizer_closed_form(logit), rtol=REFERENCE_RTOL)


@pytest.mark.parametrize("logit", [0.0, 1e-6, -0.1, 0.3, -0.45, 0.49, 0.5, -0.51, 2.0, -30.0])
def test_continuous_bernoulli_mean(logit):
    log_lam, log_one_minus_lam = _log_density_pieces(logit)

    def density(t):
        return np.exp(t * log_lam + (1 - t) * log_one_minus_lam)

    kw = {"epsabs": 0.0, "epsrel": 1e-13}
    # Reference: ratio of scipy quad integrals of x * density and of density.
    expected = integrate.quad(lambda t: t * density(t), 0, 1, **kw)[0]
    expected /= integrate.quad(density, 0, 1, **kw)[0]
    np.testing.assert_allclose(
        continuous_bernoulli_mean(np.float64(logit)), expected, rtol=REFERENCE_RTOL
    )


_continuous_bernoulli_density = jax.jit(
    lambda t, logit: jnp.exp(lik.continuous_bernoulli_log_likelihood(t, logit, event_ndims=0))
)


@pytest.mark.parametrize("logit", [0.0, -0.3, 0.7, 6.0])
def test_continuous_bernoulli_density_integrates_to_one(logit):
    # Reference: the total mass of a density is 1 (scipy quad over x in [0, 1]).
    mass, _ = integrate.quad(
        lambda t: float(_continuous_bernoulli_density(t, logit)), 0.0, 1.0, epsrel=1e-13
    )
    assert mass == pytest.approx(1.0, rel=REFERENCE_RTOL)


def test_continuous_bernoulli_is_bernoulli_plus_log_normalizer():
    rng = np.random.default_rng(5)
    x, logits = rng.uniform(size=(4, 3, 5)), rng.uniform(-6.0, 6.0, size=(4, 3, 5))
    # Identity: log CB = log Bern + sum(log C) over the same event axes.
    expected = bernoulli_log_likelihood(x, logits, event_ndims=2) + event_sum(
        np.asarray(continuous_bernoulli_log_normalizer(logits)), 2
    )
    got = continuous_bernoulli_log_likelihood(x, logits, event_ndims=2)
    assert_close(got, expected, IDENTITY_RTOL)


# --------------------------------------------------------------------------- #
# Gradients against finite differences.
# --------------------------------------------------------------------------- #


def _grad_check(fns, args, order):
    """check_grads on the concatenated outputs of several functions of the same arguments.

    One combined check compiles one chain of derivatives instead of one per function; a wrong
    gradient in any of them still fails it (the check projects on a random direction).
    """

    def combined(*a):
        return jnp.concatenate([jnp.ravel(fn(*a)) for fn in fns])

    check_grads(jax.jit(combined), args, order=order, modes=["rev"], atol=GRAD_TOL, rtol=GRAD_TOL)


def test_gaussian_gradients():
    rng = np.random.default_rng(6)
    x, mean = rng.uniform(size=(3, 6)), rng.uniform(size=(3, 6))
    sigma, log_sigma = rng.uniform(0.3, 2.0, size=6), rng.uniform(-1.0, 0.5, size=(3, 6))
    # With respect to mean, sigma (per pixel) and log_sigma (per example and pixel).
    _grad_check(
        [
            lambda m, s, ls: lik.gaussian_log_likelihood(x, m, s),
            lambda m, s, ls: lik.gaussian_log_likelihood_from_log_sigma(x, m, ls),
            lambda m, s, ls: lik.gaussian_log_likelihood_optimal_sigma(x, m),
            lambda m, s, ls: lik.gaussian_log_likelihood_optimal_sigma(x, m, axis="batch"),
        ],
        (mean, sigma, log_sigma),
        order=1,
    )
    # Second order for the fixed-sigma likelihood (its Hessian in sigma is what learned-sigma
    # training curvature depends on).
    _grad_check([lambda m, s: lik.gaussian_log_likelihood(x, m, s)], (mean, sigma), order=2)


def test_bernoulli_family_gradients():
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(2, 8))
    # Kept away from the Taylor cutoff |l| = 0.5 so finite differences stay on one branch.
    logits = np.array(
        [[-7.0, -2.0, -0.6, -0.3, 0.0, 0.05, 0.4, 3.0], [-0.45, 0.45, 0.55, -0.55, 1.0, -1.0, 8, 0]]
    )
    _grad_check(
        [
            lambda l: lik.bernoulli_log_likelihood(x, l),
            lambda l: lik.continuous_bernoulli_log_likelihood(x, l),
            lik.continuous_bernoulli_log_normalizer,
            lik.continuous_bernoulli_mean,
        ],
        (logits,),
        order=1,
    )


def test_kl_gradients():
    rng = np.random.default_rng(8)
    mean_q, log_var_q = rng.normal(size=(3, 4)), rng.uniform(-2.0, 1.0, size=(3, 4))
    mean_p, log_var_p = rng.normal(size=4), rng.uniform(-1.0, 1.0, size=4)
    z = rng.normal(size=(3, 4))
    _grad_check(
        [
            lambda mq, vq, mp, vp, z: kl.kl_standard_normal(mq, vq),
            lambda mq, vq, mp, vp, z: kl.kl_diagonal_gaussians(mq, vq, mp, vp),
            lambda mq, vq, mp, vp, z: kl.diagonal_gaussian_log_density(z, mq, vq),
        ],
        (mean_q, log_var_q, mean_p, log_var_p, z),
        order=1,
    )


# --------------------------------------------------------------------------- #
# KL.
# --------------------------------------------------------------------------- #


def test_kl_closed_forms_and_scipy_density():
    rng = np.random.default_rng(9)
    mean_q, log_var_q = rng.normal(size=(5, 4)), rng.uniform(-2.0, 1.0, size=(5, 4))
    mean_p, log_var_p = rng.normal(size=(5, 4)), rng.uniform(-2.0, 1.0, size=(5, 4))
    # Reference: AEVB appendix B, -1/2 sum(1 + log s^2 - mu^2 - s^2).
    expected = -0.5 * np.sum(1 + log_var_q - mean_q**2 - np.exp(log_var_q), axis=-1)
    assert_close(kl_standard_normal(mean_q, log_var_q), expected, REFERENCE_RTOL)
    # Reference: KL between diagonal Gaussians written from the variances.
    var_q, var_p = np.exp(log_var_q), np.exp(log_var_p)
    expected = 0.5 * np.sum(
        np.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1, axis=-1
    )
    assert_close(
        kl_diagonal_gaussians(mean_q, log_var_q, mean_p, log_var_p), expected, REFERENCE_RTOL
    )
    zeros = np.zeros_like(mean_q)
    assert_close(
        kl_diagonal_gaussians(mean_q, log_var_q, zeros, zeros),
        kl_standard_normal(mean_q, log_var_q),
        IDENTITY_RTOL,
    )
    # Reference: scipy.stats.multivariate_normal.logpdf with a diagonal covariance.
    z = rng.normal(size=(5, 4))
    expected = [
        stats.multivariate_normal.logpdf(z[b], mean_q[b], np.diag(var_q[b])) for b in range(5)
    ]
    assert_close(diagonal_gaussian_log_density(z, mean_q, log_var_q), expected, REFERENCE_RTOL)
