"""Float64 versions of the exact `vaejax.elbo` identities, with tight tolerances and `check_grads`.

Every test runs inside `jax.enable_x64(True)` (a context manager in jax 0.10), entered and left
by an autouse fixture, so the float32 tests keep the default precision. The model and the
references are those of `test_elbo.py`: the linear-Gaussian model with an exact marginal
(`scipy.stats.multivariate_normal.logpdf`) and diagonal posterior (Bishop, PRML eqs.
2.115-2.116), log-weights from `scipy.stats.norm` reduced with `scipy.special.logsumexp`, and
Python loops over the documented `fold_in(key, k)` draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special
from test_elbo import WORSE_Q, make_linear_gaussian, numpy_log_weights

from vaejax.elbo import elbo, iwae_bound, reparameterize

DTYPE = np.float64
# log p(x) ~ 10 nats from D + 2 Z float64 terms: rounding ~1e-14; 1e-10 leaves room.
EXACT_POSTERIOR_ATOL = 1e-10
# Float64 against a float64 numpy/scipy reference, and between two library paths.
REFERENCE_RTOL = 1e-11
IDENTITY_RTOL = 1e-13
# Central finite differences with step 1e-4 are exact to ~1e-8 times the third derivative.
GRAD_TOL = 1e-6


@pytest.fixture(autouse=True)
def float64_precision():
    before = jax.config.jax_enable_x64
    with jax.enable_x64(True):
        yield
    assert jax.config.jax_enable_x64 == before


@pytest.fixture
def model():
    # Built inside the x64 context (the fixture above runs first, as it is autouse).
    return make_linear_gaussian(dtype=DTYPE)


def test_iwae_with_exact_posterior_equals_log_marginal(model):
    # Reference: scipy.stats.multivariate_normal.logpdf of N(b, W W^T + s^2 I); with q = p(z|x)
    # every log-weight equals log p(x). K = 1, 10, 1000 compiled as one jitted program.
    mean, log_var = model.q(dtype=DTYPE)
    counts = (1, 10, 1000)
    bounds = jax.jit(
        lambda key, m, lv: [
            iwae_bound(key, m, lv, model.log_likelihood_fn, num_samples=k) for k in counts
        ]
    )(jax.random.key(10), mean, log_var)
    for num_samples, bound in zip(counts, bounds, strict=True):
        assert bound.dtype == DTYPE
        np.testing.assert_allclose(
            bound, model.log_marginal, rtol=0, atol=EXACT_POSTERIOR_ATOL, err_msg=f"K={num_samples}"
        )


@pytest.mark.parametrize("num_samples", [5])
def test_monte_carlo_elbo_with_exact_posterior_equals_log_marginal(model, num_samples):
    # Reference: as above; the Monte-Carlo-KL ELBO is the mean of the constant log-weights.
    mean, log_var = model.q(dtype=DTYPE)
    terms = elbo(
        jax.random.key(11),
        mean,
        log_var,
        model.log_likelihood_fn,
        num_samples=num_samples,
        kl="monte_carlo",
    )
    assert terms.elbo.dtype == DTYPE
    np.testing.assert_allclose(terms.elbo, model.log_marginal, rtol=0, atol=EXACT_POSTERIOR_ATOL)


def test_exact_posterior_distinguishes_a_slightly_worse_q(model):
    # The float64 tolerance is tight enough to see a q that is off by 1e-3 in its mean: the
    # monte_carlo ELBO then falls short of log p(x) by ~KL(q || p(z|x)) ~ 1e-6.
    mean, log_var = model.q(mean_shift=1e-3, dtype=DTYPE)
    terms = elbo(
        jax.random.key(12), mean, log_var, model.log_likelihood_fn, num_samples=5, kl="monte_carlo"
    )
    assert np.all(np.abs(np.asarray(terms.elbo) - model.log_marginal) > 100 * EXACT_POSTERIOR_ATOL)


def test_iwae_is_log_mean_exp_of_log_weights(model):
    # Reference: Burda et al. eq. 8 in numpy float64 (scipy.stats.norm, scipy.special.logsumexp)
    # at the K samples of reparameterize(..., num_samples=K), i.e. the same fold_in draws; the
    # last of the chunks of 7 is padded (50 % 7 != 0).
    num_samples = 50
    mean, log_var = model.q(**WORSE_Q, dtype=DTYPE)
    key = jax.random.key(20)
    bound = iwae_bound(
        key,
        mean,
        log_var,
        model.log_likelihood_fn,
        num_samples=num_samples,
        chunk_size=7,
    )
    z = reparameterize(key, mean, log_var, num_samples=num_samples)
    log_weights = numpy_log_weights(model, z, mean, log_var)
    expected = special.logsumexp(log_weights, axis=0) - math.log(num_samples)
    np.testing.assert_allclose(bound, expected, rtol=REFERENCE_RTOL)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_elbo_equals_python_loop_over_fold_in_samples(model, kl):
    # Reference: a Python loop over l of the log-densities written out here at
    # z_l = mean + std * normal(fold_in(key, l)); the closed-form KL of AEVB appendix B.
    num_samples = 5
    mean, log_var = model.q(**WORSE_Q, dtype=DTYPE)
    key = jax.random.key(30)
    fn = model.log_likelihood_fn
    terms = elbo(key, mean, log_var, fn, num_samples=num_samples, kl=kl)
    std = jnp.exp(0.5 * log_var)
    recon, kl_samples = 0.0, 0.0
    for sample in range(num_samples):
        eps = jax.random.normal(jax.random.fold_in(key, sample), mean.shape, DTYPE)
        z = mean + std * eps
        recon = recon + fn(z) / num_samples
        log_q = jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * log_var - 0.5 * eps**2, -1)
        log_prior = jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * z**2, -1)
        kl_samples = kl_samples + (log_q - log_prior) / num_samples
    if kl == "analytic":
        expected_kl = 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1.0 - log_var, -1)
    else:
        expected_kl = kl_samples
    np.testing.assert_allclose(terms.recon, recon, rtol=IDENTITY_RTOL)
    np.testing.assert_allclose(terms.kl, expected_kl, rtol=1e-12)
    np.testing.assert_array_equal(terms.elbo, terms.recon - terms.kl)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_gradients_match_finite_differences(model, objective):
    # Reference: jax.test_util.check_grads (central finite differences, step 1e-4) of the
    # objective w.r.t. the posterior mean and log-variance, in reverse mode (as in training):
    # the beta-ELBO loss with a Monte-Carlo KL (every path through the samples) and the IWAE
    # bound with a padded last chunk.
    mean, log_var = model.q(**WORSE_Q, dtype=DTYPE)
    key = jax.random.key(40)
    fn = model.log_likelihood_fn

    def total(m, lv):
        if objective == "iwae":
            return jnp.sum(iwae_bound(key, m, lv, fn, num_samples=20, chunk_size=7))
        return elbo(key, m, lv, fn, num_samples=3, kl="monte_carlo").loss(0.5)

    check_grads(
        jax.jit(total),
        (mean, log_var),
        order=1,
        modes=("rev",),
        atol=GRAD_TOL,
        rtol=GRAD_TOL,
        eps=1e-4,
    )
