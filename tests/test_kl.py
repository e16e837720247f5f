"""Float32 tests of `vaejax.kl` against independent references.

References: closed forms written out here in numpy float64, a numpy Monte-Carlo estimate with
its own random numbers, `scipy.stats.multivariate_normal`, and `mpmath` at 50 significant
digits for the KL near the prior (log_var ~ 0, where the closed form cancels), in float32 and
float64. The float64 versions of the closed-form comparisons live in
`test_likelihoods_float64.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from scipy import stats

from vaejax import kl

IDENTITY_RTOL = 1e-6
REFERENCE_RTOL = 1e-5
DTYPE = np.float32
# A Monte-Carlo mean is within 5 standard errors of the truth except with probability ~6e-7.
MC_STANDARD_ERRORS = 5.0

kl_standard_normal = jax.jit(kl.kl_standard_normal, static_argnames=["event_ndims"])
kl_diagonal_gaussians = jax.jit(kl.kl_diagonal_gaussians, static_argnames=["event_ndims"])
diagonal_gaussian_log_density = jax.jit(
    kl.diagonal_gaussian_log_density, static_argnames=["event_ndims"]
)
# Eager sampling compiles every primitive separately (seconds); shape errors are static and
# must raise under jit as well, so the bad-input test below uses this too.
kl_monte_carlo = jax.jit(kl.kl_monte_carlo, static_argnames=["num_samples", "event_ndims"])


def assert_close(got, expected, rtol):
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def posterior(seed, shape=(5, 4)):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=shape).astype(DTYPE)
    log_var = rng.uniform(-2.0, 1.0, size=shape).astype(DTYPE)
    return mean, log_var


def kl_standard_normal_reference(mean, log_var, axes=(-1,)):
    """AEVB appendix B, in numpy float64: -1/2 sum(1 + log s^2 - mu^2 - s^2)."""
    mean, log_var = mean.astype(np.float64), log_var.astype(np.float64)
    return -0.5 * np.sum(1.0 + log_var - mean**2 - np.exp(log_var), axis=axes)


def kl_diagonal_reference(mean_q, log_var_q, mean_p, log_var_p):
    """KL between diagonal Gaussians, numpy float64, written from variances (not log-ratios)."""
    mean_q, log_var_q, mean_p, log_var_p = (
        a.astype(np.float64) for a in (mean_q, log_var_q, mean_p, log_var_p)
    )
    var_q, var_p = np.exp(log_var_q), np.exp(log_var_p)
    elementwise = 0.5 * (np.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)
    return elementwise.sum(axis=-1)


@pytest.mark.parametrize("shape,event_ndims", [((5, 4), 1), ((3, 2, 4), 2), ((6,), 0)])
def test_kl_standard_normal_matches_closed_form(shape, event_ndims):
    mean, log_var = posterior(0, shape)
    axes = tuple(range(-event_ndims, 0))
    if event_ndims == 0:
        expected = -0.5 * (1.0 + log_var - mean**2 - np.exp(log_var.astype(np.float64)))
    else:
        expected = kl_standard_normal_reference(mean, log_var, axes)
    got = kl_standard_normal(mean, log_var, event_ndims=event_ndims)
    assert got.dtype == jnp.float32
    assert_close(got, expected, REFERENCE_RTOL)


def test_kl_standard_normal_agrees_with_monte_carlo():
    mean, log_var = posterior(1, (3, 4))
    exact = np.asarray(kl_standard_normal(mean, log_var))
    num_samples = 20_000
    # Reference 1: the library's own Monte-Carlo estimator, within 5 of its standard errors.
    estimate, std_error = kl_monte_carlo(jax.random.key(0), mean, log_var, num_samples=num_samples)
    assert estimate.shape == std_error.shape == (3,)
    assert np.all(np.asarray(std_error) > 0)
    assert np.all(np.abs(np.asarray(estimate) - exact) < MC_STANDARD_ERRORS * std_error)
    # Reference 2: a numpy Monte-Carlo estimate of E_q[log q(z) - log p(z)] with scipy densities.
    rng = np.random.default_rng(2)
    m64, s64 = mean.astype(np.float64), np.exp(0.5 * log_var.astype(np.float64))
    z = m64 + s64 * rng.standard_normal((num_samples, *mean.shape))
    samples = (stats.norm.logpdf(z, m64, s64) - stats.norm.logpdf(z)).sum(axis=-1)
    numpy_estimate = samples.mean(axis=0)
    numpy_error = samples.std(axis=0, ddof=1) / np.sqrt(num_samples)
    assert np.all(np.abs(numpy_estimate - exact) < MC_STANDARD_ERRORS * numpy_error)
    # The two estimators have the same variance (same distribution of samples).
    np.testing.assert_allclose(std_error, numpy_error, rtol=0.1)


def test_kl_monte_carlo_single_sample_has_infinite_standard_error():
    mean, log_var = posterior(3, (2, 4))
    estimate, std_error = kl_monte_carlo(jax.random.key(1), mean, log_var, num_samples=1)
    assert np.all(np.isfinite(estimate))
    assert np.all(np.isinf(std_error))


def test_kl_diagonal_gaussians_reduces_to_standard_normal():
    mean, log_var = posterior(4)
    zeros = np.zeros_like(mean)
    # Identity: p = N(0, I), given at full shape and as broadcast scalars.
    general = kl_diagonal_gaussians(mean, log_var, zeros, zeros)
    assert_close(general, kl_standard_normal(mean, log_var), IDENTITY_RTOL)
    broadcast = kl_diagonal_gaussians(mean, log_var, np.float32(0.0), np.float32(0.0))
    assert_close(broadcast, kl_standard_normal(mean, log_var), IDENTITY_RTOL)


@pytest.mark.parametrize("p_shape", [(5, 4), (4,)])
def test_kl_diagonal_gaussians_matches_closed_form(p_shape):
    mean_q, log_var_q = posterior(5)
    mean_p, log_var_p = posterior(6, p_shape)
    expected = kl_diagonal_reference(mean_q, log_var_q, mean_p, log_var_p)
    assert_close(
        kl_diagonal_gaussians(mean_q, log_var_q, mean_p, log_var_p), expected, REFERENCE_RTOL
    )


def test_kl_is_non_negative_and_zero_at_equality():
    mean, log_var = posterior(7, (50, 3))
    other_mean, other_log_var = posterior(8, (50, 3))
    assert np.all(np.asarray(kl_diagonal_gaussians(mean, log_var, other_mean, other_log_var)) > 0)
    assert np.all(np.asarray(kl_standard_normal(mean, log_var)) > 0)
    # Exactly zero when q = p (the expm1/log-ratio form has no cancellation residue).
    np.testing.assert_array_equal(kl_diagonal_gaussians(mean, log_var, mean, log_var), 0.0)
    zeros = np.zeros((4, 3), DTYPE)
    np.testing.assert_array_equal(kl_standard_normal(zeros, zeros), 0.0)


def test_kl_standard_normal_accurate_near_the_prior():
    # s^2 - 1 - log s^2 cancels when s^2 ~ 1. Reference: the series e^x - 1 - x = x^2/2 + x^3/6
    # with x = log s^2 (the next term, x^4/24, is below 1e-17 here). Forming 1 + log s^2 in
    # float32 would leave an absolute error ~3e-8, above the KL itself for the smallest x.
    log_var = np.asarray([[1e-4, -1e-4, 3e-6]], dtype=DTYPE)
    mean = np.zeros_like(log_var)
    x = log_var.astype(np.float64)
    expected = 0.5 * (x**2 / 2 + x**3 / 6)
    got = kl_standard_normal(mean, log_var, event_ndims=0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11)


# log_var in {+-1e-8, +-1e-6, +-1e-4, +-1e-2, +-0.1, +-1, +-10}: both sides of the series
# cutoff |v| = 1/2 and deep inside it, where e^v - 1 - v ~ v^2/2 is far below eps * |v|.
NEAR_PRIOR_LOG_VARS = [sign * m for m in (1e-8, 1e-6, 1e-4, 1e-2, 0.1, 1.0, 10.0)
                       for sign in (1.0, -1.0)]
# Value: the series (0.45 eps of truncation and ~2 eps of Horner rounding, |v| < 1/2) or
# expm1(v) - v (at most ~3 eps for |v| >= 1/2, from expm1's own error and the subtraction),
# then an exact halving: 4 eps (measured: 1 eps in float32, 2 eps in float64). Gradient:
# 1/2 expm1(v), i.e. XLA's expm1, which is not correctly rounded but within 2 ulp (up to
# 2 eps relative; measured 1.8 eps in float32, 1.5 eps in float64), times exact halvings:
# 3 eps.
NEAR_PRIOR_VALUE_EPS = 4.0
NEAR_PRIOR_GRAD_EPS = 3.0


def mpmath_half_exp_minus_one_minus(v: float) -> tuple[float, float]:
    """1/2 (e^v - 1 - v) and its derivative 1/2 expm1(v), by mpmath at 50 significant digits.

    v is the dtype-rounded input (exact as an mpf); at v = 1e-8 the subtraction leaves ~34
    correct digits, far more than float64 holds.
    """
    with mpmath.workdps(50):
        x = mpmath.mpf(v)
        return float((mpmath.exp(x) - 1 - x) / 2), float(mpmath.expm1(x) / 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_kl_near_the_prior_matches_mpmath(dtype):
    # Reference: mpmath. Per element (event_ndims=0) with mean = 0 (the mean^2 term is exactly
    # 0), KL(N(0, e^v) || N(0, 1)) = 1/2 (e^v - 1 - v), and KL(N(0, e^v) || N(0, e^0)) is the
    # same through the log-ratio r = v - 0 = v; d/dv is 1/2 expm1(v), and -1/2 expm1(v) with
    # respect to the prior's log-variance. Before the series, v = 1e-6 in float32 was off by
    # 9 % in value and 5 % in gradient.
    with jax.enable_x64(dtype is np.float64):
        log_var = np.asarray(NEAR_PRIOR_LOG_VARS, dtype)
        zeros = np.zeros_like(log_var)
        reference = [mpmath_half_exp_minus_one_minus(float(v)) for v in log_var]
        expected_value = np.array([r[0] for r in reference])
        expected_grad = np.array([r[1] for r in reference])
        eps = float(np.finfo(dtype).eps)

        def both(lv, lv_p):
            standard = kl.kl_standard_normal(zeros, lv, event_ndims=0)
            general = kl.kl_diagonal_gaussians(zeros, lv, zeros, lv_p, event_ndims=0)
            return standard, general

        values = jax.jit(both)(log_var, zeros)
        grads = jax.jit(jax.grad(lambda lv, lv_p: jnp.sum(jnp.stack(both(lv, lv_p))),
                                 argnums=(0, 1)))(log_var, zeros)
        general_grad_p = jax.jit(jax.grad(lambda lv_p: jnp.sum(both(log_var, lv_p)[1])))(zeros)
    for got in values:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected_value, rtol=NEAR_PRIOR_VALUE_EPS * eps, atol=0)
    # d/dlog_var of the sum of both KLs is twice 1/2 expm1(v).
    np.testing.assert_allclose(grads[0], 2 * expected_grad, rtol=NEAR_PRIOR_GRAD_EPS * eps,
                               atol=0)
    np.testing.assert_allclose(general_grad_p, -expected_grad, rtol=NEAR_PRIOR_GRAD_EPS * eps,
                               atol=0)


def test_kl_event_ndims_is_required_for_rank_above_two():
    # [L, B, Z] samples: the default (1 for rank <= 2) would be ambiguous, so it must be given.
    mean = np.zeros((2, 3, 4), DTYPE)
    for call in (
        lambda: kl.kl_standard_normal(mean, mean),
        lambda: kl.kl_diagonal_gaussians(mean, mean, 0.0, 0.0),
        lambda: kl.diagonal_gaussian_log_density(mean, 0.0, 0.0),
    ):
        with pytest.raises(ValueError, match=r"`event_ndims`.*\(2, 3, 4\).*event_ndims=2"):
            call()
    assert kl_standard_normal(mean, mean, event_ndims=1).shape == (2, 3)
    assert kl_standard_normal(mean, mean, event_ndims=2).shape == (2,)
    # Rank <= 2 keeps the old default: [B, Z] -> [B], [Z] -> [], a scalar -> [].
    assert kl_standard_normal(mean[0], mean[0]).shape == (3,)
    assert kl_standard_normal(mean[0, 0], mean[0, 0]).shape == ()
    assert kl_standard_normal(np.float32(0.5), np.float32(0.0)).shape == ()


@pytest.mark.parametrize("mean_shape", [(5, 4), (4,), ()])
def test_diagonal_gaussian_log_density_matches_scipy_multivariate_normal(mean_shape):
    rng = np.random.default_rng(9)
    z = rng.normal(size=(5, 4)).astype(DTYPE)
    mean = rng.normal(size=mean_shape).astype(DTYPE)
    log_var = rng.uniform(-1.0, 1.0, size=(4,)).astype(DTYPE)
    got = diagonal_gaussian_log_density(z, mean, log_var)
    # Reference: scipy.stats.multivariate_normal.logpdf with covariance diag(exp(log_var)).
    cov = np.diag(np.exp(log_var.astype(np.float64)))
    mean_full = np.broadcast_to(mean.astype(np.float64), z.shape)
    expected = np.array(
        [stats.multivariate_normal.logpdf(z[b], mean_full[b], cov) for b in range(z.shape[0])]
    )
    assert_close(got, expected, REFERENCE_RTOL)


def test_kl_gradients_match_closed_form():
    mean, log_var = posterior(10)
    grad_mean, grad_log_var = jax.jit(
        jax.grad(lambda m, v: jnp.sum(kl_standard_normal(m, v)), argnums=(0, 1))
    )(mean, log_var)
    # Closed form: d/dmu KL = mu; d/dlog s^2 KL = (s^2 - 1) / 2.
    assert_close(grad_mean, mean, IDENTITY_RTOL)
    assert_close(grad_log_var, 0.5 * np.expm1(log_var.astype(np.float64)), REFERENCE_RTOL)


def test_kl_finite_over_wide_log_variance_range():
    log_var = np.linspace(-30.0, 30.0, 121, dtype=DTYPE)[:, None]
    mean = np.linspace(-1e3, 1e3, 121, dtype=DTYPE)[:, None]

    def total(m, v):
        return jnp.sum(kl_standard_normal(m, v)) + jnp.sum(kl_diagonal_gaussians(m, v, m, -v))

    values = kl_standard_normal(mean, log_var)
    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(mean, log_var)
    for array in (values, *grads):
        assert np.all(np.isfinite(np.asarray(array)))


# --------------------------------------------------------------------------- #
# Bad input.
# --------------------------------------------------------------------------- #

Q = np.zeros((2, 3), DTYPE)

BAD_INPUTS = {
    "standard_normal_shape": (lambda: kl.kl_standard_normal(Q, Q[:, :2]), "log_var"),
    "standard_normal_int_mean": (
        lambda: kl.kl_standard_normal(np.zeros((2, 3), np.int32), Q),
        "mean",
    ),
    "standard_normal_bool_log_var": (
        lambda: kl.kl_standard_normal(Q, np.zeros((2, 3), bool)),
        "log_var",
    ),
    "standard_normal_event_ndims": (
        lambda: kl.kl_standard_normal(Q, Q, event_ndims=3),
        "event_ndims",
    ),
    "diagonal_q_shape": (lambda: kl.kl_diagonal_gaussians(Q, Q[0], Q, Q), "log_var_q"),
    "diagonal_event_ndims": (
        lambda: kl.kl_diagonal_gaussians(Q, Q, Q, Q, event_ndims=3),
        "event_ndims",
    ),
    "diagonal_int_mean_p": (
        lambda: kl.kl_diagonal_gaussians(Q, Q, np.zeros((2, 3), np.int32), Q),
        "mean_p",
    ),
    "diagonal_p_not_broadcastable": (
        lambda: kl.kl_diagonal_gaussians(Q, Q, np.zeros(4, DTYPE), np.zeros(4, DTYPE)),
        "mean_p",
    ),
    "log_density_int_z": (
        lambda: kl.diagonal_gaussian_log_density(np.zeros((2, 3), np.int32), Q, Q),
        "z",
    ),
    "log_density_event_ndims": (
        lambda: kl.diagonal_gaussian_log_density(Q, Q, Q, event_ndims=3),
        "event_ndims",
    ),
    "log_density_mean_not_broadcastable": (
        lambda: kl.diagonal_gaussian_log_density(Q, np.zeros(4, DTYPE), Q),
        "mean",
    ),
    "monte_carlo_zero_samples": (
        lambda: kl.kl_monte_carlo(jax.random.key(0), Q, Q, num_samples=0),
        "num_samples",
    ),
    "monte_carlo_float_samples": (
        lambda: kl.kl_monte_carlo(jax.random.key(0), Q, Q, num_samples=10.0),
        "num_samples",
    ),
    "monte_carlo_shape": (
        lambda: kl.kl_monte_carlo(jax.random.key(0), Q, Q[:1], num_samples=4),
        "log_var",
    ),
    "monte_carlo_event_ndims": (
        lambda: kl_monte_carlo(jax.random.key(0), Q, Q, num_samples=4, event_ndims=3),
        "event_ndims",
    ),
}


@pytest.mark.parametrize("call,argument", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call()
