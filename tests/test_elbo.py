"""Float32 tests of `vaejax.elbo`: reparameterisation, the L-sample ELBO and the IWAE bound.

Where the references come from (each test names its own):

* A linear-Gaussian model with an exact marginal and posterior (Bishop, PRML eqs.
  2.113-2.117): p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) give
  p(x) = N(b, W W^T + s^2 I), evaluated with `scipy.stats.multivariate_normal.logpdf`, and
  p(z|x) = N(m, S) with S = (I + W^T W / s^2)^-1, m = S W^T (x - b) / s^2. The library's q is
  diagonal, so W gets columns with disjoint supports: W^T W is then exactly diagonal (also
  after rounding W to float32) and so is the true posterior.
* Closed forms written out here in numpy float64 (KL between diagonal Gaussians, Gaussian
  log-densities via `scipy.stats.norm`, log-sum-exp via `scipy.special.logsumexp`).
* Python loops over the draws the library documents: sample k uses `fold_in(key, k)`.
* Monte-Carlo bounds of 5 standard errors, the standard error estimated from the same draws.

Most checks run eagerly; `test_call_sites_under_jit_match_eager`, the `transform="jit"` cases
and the tests whose comments say so run under `jax.jit` (static arguments closed over). The
float64 versions of the exact identities and `check_grads` live in `test_elbo_float64.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vaejax.elbo import ElboTerms, elbo, iwae_bound, reparameterize
from vaejax.kl import kl_standard_normal
from vaejax.likelihoods import gaussian_log_likelihood

DTYPE = np.float32
# Tolerances by kind: float32 identities between two library paths, float32
# against a float64 reference, and the exact-posterior equality, where the ELBO is a sum of
# D + 2 Z float32 log-density terms of up to ~20 nats that must cancel to log p(x).
IDENTITY_RTOL = 1e-6
REFERENCE_RTOL = 1e-5
EXACT_POSTERIOR_ATOL = 1e-4
MC_STANDARD_ERRORS = 5.0

# One sample count for the Monte-Carlo checks and one for the small exact checks, so that the
# eagerly compiled ops are shared between tests (compilation dominates the runtime).
NUM_MC = 20_000
SMALL_L = 5
# A deliberately worse diagonal q: the exact posterior mean shifted by 1, its variance tripled.
WORSE_Q = {"mean_shift": 1.0, "var_scale": 3.0}


def assert_close(got, expected, rtol):
    """Relative comparison with an absolute floor scaled by the largest reference value."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def assert_within_standard_errors(estimate, expected, standard_error, what):
    estimate = np.asarray(estimate, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    standard_error = np.asarray(standard_error, dtype=np.float64)
    z_scores = np.abs(estimate - expected) / standard_error
    assert np.all(z_scores < MC_STANDARD_ERRORS), (what, estimate, expected, z_scores)


def call(transform: str, fn: Callable, *args, **static):
    """Calls ``fn(*args, **static)`` eagerly or under jit with ``static`` closed over."""
    bound = functools.partial(fn, **static)
    if transform == "jit":
        bound = jax.jit(bound)
    return bound(*args)


def gaussian_decoder(x, weight, bias, noise_std) -> Callable[[jax.Array], jax.Array]:
    """log N(x; W z + b, s^2 I) per example, written out here (independent of the library)."""
    x, weight, bias = jnp.asarray(x), jnp.asarray(weight), jnp.asarray(bias)

    def log_likelihood(z):  # z [B, Z] -> [B]
        mean = jnp.matmul(z, weight.T, precision="highest") + bias
        residual = (x - mean) / noise_std
        terms = -0.5 * math.log(2.0 * math.pi) - math.log(noise_std) - 0.5 * jnp.square(residual)
        return jnp.sum(terms, axis=-1)

    return log_likelihood


def numpy_log_likelihood(x, weight, bias, noise_std, z):
    """scipy reference of `gaussian_decoder` at float64: z [..., B, Z] -> [..., B]."""
    mean = np.asarray(z, np.float64) @ np.asarray(weight, np.float64).T + bias
    return stats.norm.logpdf(np.asarray(x, np.float64), mean, noise_std).sum(-1)


def numpy_log_weights(model, z, mean, log_var):
    """log p(x|z) + log p(z) - log q(z|x) at float64 with scipy.stats.norm: [K, B, Z] -> [K, B]."""
    z = np.asarray(z, np.float64)
    mean = np.asarray(mean, np.float64)
    std = np.exp(0.5 * np.asarray(log_var, np.float64))
    log_prior = stats.norm.logpdf(z).sum(-1)
    log_q = stats.norm.logpdf(z, mean, std).sum(-1)
    log_lik = numpy_log_likelihood(model.x, model.weight, model.bias, model.noise_std, z)
    return log_lik + log_prior - log_q


def numpy_kl_diagonal(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)), closed form in float64: [B]."""
    return 0.5 * np.sum(
        var_q / var_p + np.square(mean_p - mean_q) / var_p - 1.0 + np.log(var_p / var_q), axis=-1
    )


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
    x: np.ndarray  # [B, D]
    weight: np.ndarray  # [D, Z], W^T W diagonal
    bias: np.ndarray  # [D]
    noise_std: float
    log_marginal: np.ndarray  # [B] log p(x), float64 reference
    posterior_mean: np.ndarray  # [B, Z] float64
    posterior_var: np.ndarray  # [B, Z] float64 (the same row for every example)

    @property
    def log_likelihood_fn(self):
        return gaussian_decoder(self.x, self.weight, self.bias, self.noise_std)

    def q(self, mean_shift=0.0, var_scale=1.0, dtype=DTYPE):
        """(mean, log_var) of a diagonal q: the exact posterior, optionally made worse."""
        mean = self.posterior_mean + mean_shift
        log_var = np.log(self.posterior_var * var_scale)
        return mean.astype(dtype), log_var.astype(dtype)


def make_linear_gaussian(
    *, dtype=DTYPE, seed=0, batch=4, latent_dim=3, data_dim=6, noise_std=0.75
) -> LinearGaussian:
    """Draws W (disjoint column supports), b and x; references in float64 from the cast values."""
    rng = np.random.default_rng(seed)
    weight = np.zeros((data_dim, latent_dim))
    rows_per_column = data_dim // latent_dim
    for j in range(latent_dim):
        weight[j * rows_per_column : (j + 1) * rows_per_column, j] = rng.normal(
            size=rows_per_column
        )
    weight = weight[rng.permutation(data_dim)].astype(dtype)
    bias = rng.normal(size=data_dim).astype(dtype)
    x = (bias + 1.5 * rng.normal(size=(batch, data_dim))).astype(dtype)

    w64, b64, x64 = (np.asarray(a, np.float64) for a in (weight, bias, x))
    gram = w64.T @ w64
    assert np.array_equal(gram, np.diag(np.diag(gram)))  # exactly diagonal posterior
    # Bishop PRML eq. 2.115: the marginal of a linear-Gaussian model.
    covariance = w64 @ w64.T + noise_std**2 * np.eye(data_dim)
    log_marginal = stats.multivariate_normal.logpdf(x64, b64, covariance)
    # Bishop PRML eq. 2.116: the posterior; diagonal because W^T W is.
    posterior_var = 1.0 / (1.0 + np.diag(gram) / noise_std**2)
    posterior_mean = (x64 - b64) @ w64 * posterior_var / noise_std**2
    return LinearGaussian(
        x=x,
        weight=weight,
        bias=bias,
        noise_std=noise_std,
        log_marginal=np.atleast_1d(log_marginal),
        posterior_mean=posterior_mean,
        posterior_var=np.broadcast_to(posterior_var, posterior_mean.shape).copy(),
    )


@pytest.fixture(scope="module")
def model() -> LinearGaussian:
    return make_linear_gaussian()


# --------------------------------------------------------------------------- #
# 1. reparameterize
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("batch_shape", [(), (4,), (2, 4)])
def test_reparameterize_shapes(batch_shape):
    # jax.eval_shape traces without compiling; the values are checked in the tests below.
    mean = jnp.zeros((*batch_shape, 3), DTYPE)
    log_var = jnp.zeros((*batch_shape, 3), DTYPE)
    key = jax.random.key(0)

    def shape_of(num_samples):
        out = jax.eval_shape(
            functools.partial(reparameterize, num_samples=num_samples), key, mean, log_var
        )
        assert out.dtype == DTYPE
        return out.shape

    assert shape_of(None) == (*batch_shape, 3)
    assert shape_of(1) == (1, *batch_shape, 3)
    assert shape_of(SMALL_L) == (SMALL_L, *batch_shape, 3)


def test_reparameterize_moments_match_mean_and_variance():
    # Reference: z ~ N(mean, exp(log_var)); the sample mean lies within 5 SE = 5 sqrt(var / n)
    # and the sample variance within 5 SE = 5 var sqrt(2 / (n - 1)) (Gaussian fourth moment).
    rng = np.random.default_rng(1)
    mean = rng.uniform(-10.0, 10.0, size=(4, 3)).astype(DTYPE)
    log_var = rng.uniform(-6.0, 3.0, size=(4, 3)).astype(DTYPE)
    z = reparameterize(jax.random.key(1), mean, log_var, num_samples=NUM_MC)
    z = np.asarray(z, np.float64)
    var = np.exp(log_var.astype(np.float64))
    assert_within_standard_errors(z.mean(0), mean, np.sqrt(var / NUM_MC), "mean")
    assert_within_standard_errors(
        z.var(0, ddof=1), var, var * np.sqrt(2.0 / (NUM_MC - 1)), "variance"
    )
    # Fresh draws along the sample axis (float32 normals may repeat by chance, rarely).
    assert np.unique(z[:, 0, 0]).size > 0.99 * NUM_MC
    # Independent across the sample axis: lag-1 correlation of the standardised draws ~ 0.
    eps = (z - mean) / np.sqrt(var)
    lag_correlation = np.mean(eps[1:] * eps[:-1], axis=0)
    assert np.all(np.abs(lag_correlation) < MC_STANDARD_ERRORS / math.sqrt(NUM_MC))


def test_reparameterize_is_mean_plus_std_times_fold_in_draws():
    # Reference: the documented formula z_k = mean + exp(log_var / 2) * eps_k with
    # eps_k = normal(fold_in(key, k)); num_samples=None draws eps from `key` itself.
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(4, 3)).astype(DTYPE)
    log_var = rng.normal(size=(4, 3)).astype(DTYPE)
    key = jax.random.key(3)
    std = np.exp(0.5 * log_var.astype(np.float64))

    def expected(eps_key):
        eps = np.asarray(jax.random.normal(eps_key, mean.shape, DTYPE), np.float64)
        return mean + std * eps

    many = reparameterize(key, mean, log_var, num_samples=SMALL_L)
    for k in range(SMALL_L):
        assert_close(many[k], expected(jax.random.fold_in(key, k)), IDENTITY_RTOL)
    single = reparameterize(key, mean, log_var, num_samples=1)
    assert_close(single[0], expected(jax.random.fold_in(key, 0)), IDENTITY_RTOL)
    assert_close(reparameterize(key, mean, log_var), expected(key), IDENTITY_RTOL)


def test_reparameterize_same_key_same_samples_other_key_other_samples():
    mean = jnp.ones((4, 3), DTYPE)
    log_var = jnp.full((4, 3), -1.0, DTYPE)
    first = reparameterize(jax.random.key(4), mean, log_var, num_samples=SMALL_L)
    again = reparameterize(jax.random.key(4), mean, log_var, num_samples=SMALL_L)
    other = reparameterize(jax.random.key(5), mean, log_var, num_samples=SMALL_L)
    np.testing.assert_array_equal(first, again)
    assert not np.any(np.isclose(first, other))
    # Prefix property (sample k <-> fold_in(key, k)): the 2-sample draw is the first 2 of L.
    np.testing.assert_array_equal(
        reparameterize(jax.random.key(4), mean, log_var, num_samples=2), first[:2]
    )


def test_reparameterize_gradients_match_the_formula():
    # Reference: d z / d mean = I and d z / d log_var = diag(0.5 exp(0.5 log_var) eps), eps the
    # draw from fold_in(key, 0) (AEVB section 2.4: z = g(eps, phi) is differentiable in phi).
    rng = np.random.default_rng(6)
    mean = rng.normal(size=(4, 3)).astype(DTYPE)
    log_var = rng.normal(size=(4, 3)).astype(DTYPE)
    key = jax.random.key(7)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), mean.shape, DTYPE))

    def sample(m, lv):
        return reparameterize(key, m, lv, num_samples=1)[0]

    jac_mean, jac_log_var = jax.jacrev(sample, argnums=(0, 1))(mean, log_var)
    jac_mean = np.asarray(jac_mean).reshape(12, 12)
    jac_log_var = np.asarray(jac_log_var).reshape(12, 12)
    np.testing.assert_array_equal(jac_mean, np.eye(12))
    expected = 0.5 * np.exp(0.5 * log_var.astype(np.float64)) * eps
    assert_close(np.diag(jac_log_var), expected.reshape(-1), IDENTITY_RTOL)
    np.testing.assert_array_equal(jac_log_var - np.diag(np.diag(jac_log_var)), 0.0)

    # jax.grad of the sum over L samples: the diagonal Jacobians summed over the samples.
    def total(m, lv):
        return jnp.sum(reparameterize(key, m, lv, num_samples=SMALL_L))

    grad_mean, grad_log_var = jax.grad(total, argnums=(0, 1))(mean, log_var)
    np.testing.assert_array_equal(grad_mean, np.full_like(mean, SMALL_L))
    eps_all = np.stack(
        [jax.random.normal(jax.random.fold_in(key, k), mean.shape, DTYPE) for k in range(SMALL_L)]
    ).astype(np.float64)
    expected_sum = (0.5 * np.exp(0.5 * log_var.astype(np.float64)) * eps_all).sum(0)
    assert_close(grad_log_var, expected_sum, REFERENCE_RTOL)


# --------------------------------------------------------------------------- #
# 2. Linear-Gaussian model with an exact marginal
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("num_samples", "transform"), [(1, "eager"), (10, "eager"), (1000, "jit")])
def test_iwae_with_exact_posterior_equals_log_marginal(model, num_samples, transform):
    # Reference: log p(x) from scipy.stats.multivariate_normal. With q = p(z|x) every log-weight
    # log p(x, z) - log q(z|x) equals log p(x), so any K gives log p(x) up to rounding.
    mean, log_var = model.q()
    got = call(
        transform, iwae_bound, jax.random.key(10), mean, log_var,
        log_likelihood_fn=model.log_likelihood_fn, num_samples=num_samples,
    )  # fmt: skip
    np.testing.assert_allclose(got, model.log_marginal, rtol=0, atol=EXACT_POSTERIOR_ATOL)


@pytest.mark.parametrize(
    ("num_samples", "transform"), [(1, "eager"), (SMALL_L, "eager"), (NUM_MC, "eager"), (1, "jit")]
)
def test_monte_carlo_elbo_with_exact_posterior_equals_log_marginal(model, num_samples, transform):
    # Reference: as above; with kl="monte_carlo" the ELBO is the mean of the (constant)
    # log-weights, so it is log p(x) for every draw, not only on average.
    mean, log_var = model.q()
    terms = call(
        transform, elbo, jax.random.key(11), mean, log_var,
        log_likelihood_fn=model.log_likelihood_fn, num_samples=num_samples, kl="monte_carlo",
    )  # fmt: skip
    np.testing.assert_allclose(terms.elbo, model.log_marginal, rtol=0, atol=EXACT_POSTERIOR_ATOL)


def test_analytic_elbo_with_exact_posterior_is_log_marginal_within_mc_error(model):
    # Reference: ELBO = log p(x) - KL(q || p(z|x)) = log p(x) at q = p(z|x); the analytic-KL
    # estimator only averages log p(x|z_l), so it matches within 5 SE of that average.
    mean, log_var = model.q()
    key = jax.random.key(12)
    terms = elbo(key, mean, log_var, model.log_likelihood_fn, num_samples=NUM_MC)
    z = reparameterize(key, mean, log_var, num_samples=NUM_MC)
    per_sample = numpy_log_likelihood(model.x, model.weight, model.bias, model.noise_std, z)
    standard_error = per_sample.std(0, ddof=1) / math.sqrt(NUM_MC)
    assert_within_standard_errors(terms.elbo, model.log_marginal, standard_error, "elbo")


def test_worse_q_orders_elbo_iwae10_iwae1000_log_marginal(model):
    # Reference: Burda et al. 2015, theorem 1: log p(x) >= E[IWAE_K'] >= E[IWAE_K] >= ELBO for
    # K' >= K, and log p(x) from scipy. Expectations are estimated over independent keys; each
    # ordering must hold by 3 standard errors of the difference (fixed seeds: deterministic).
    mean, log_var = model.q(**WORSE_Q)
    fn = model.log_likelihood_fn

    def replicated_iwae(num_samples, num_keys, seed):
        keys = jax.random.split(jax.random.key(seed), num_keys)
        return jax.vmap(lambda key: iwae_bound(key, mean, log_var, fn, num_samples=num_samples))(
            keys
        )

    def mean_and_standard_error(values):
        values = np.asarray(values, np.float64)
        return values.mean(0), values.std(0, ddof=1) / math.sqrt(values.shape[0])

    terms = elbo(jax.random.key(13), mean, log_var, fn, num_samples=NUM_MC, kl="monte_carlo")
    z = reparameterize(jax.random.key(13), mean, log_var, num_samples=NUM_MC)
    per_sample = numpy_log_weights(model, z, mean, log_var)
    elbo_value = np.asarray(terms.elbo, np.float64)
    elbo_se = per_sample.std(0, ddof=1) / math.sqrt(NUM_MC)
    # Both replicated bounds in one jitted program (compilation dominates the runtime).
    replicas_10, replicas_1000 = jax.jit(
        lambda: (replicated_iwae(10, 400, seed=14), replicated_iwae(1000, 50, seed=15))
    )()
    iwae10, iwae10_se = mean_and_standard_error(replicas_10)
    iwae1000, iwae1000_se = mean_and_standard_error(replicas_1000)

    def assert_ordered(low, low_se, high, high_se, what):
        z_scores = (high - low) / np.hypot(low_se, high_se)
        assert np.all(z_scores > 3.0), (what, low, high, z_scores)

    assert_ordered(elbo_value, elbo_se, iwae10, iwae10_se, "ELBO < IWAE_10")
    assert_ordered(iwae10, iwae10_se, iwae1000, iwae1000_se, "IWAE_10 < IWAE_1000")
    assert np.all(iwae1000 <= model.log_marginal + MC_STANDARD_ERRORS * iwae1000_se), (
        iwae1000,
        model.log_marginal,
    )
    # IWAE_1000 has closed almost all of the gap KL(q || p(z|x)) (about 3.6 nats here).
    assert np.all(model.log_marginal - iwae1000 < 0.1), model.log_marginal - iwae1000
    assert np.all(model.log_marginal - elbo_value > 3.0), model.log_marginal - elbo_value


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_worse_q_elbo_is_log_marginal_minus_kl_to_posterior(model, kl):
    # Reference: ELBO = log p(x) - KL(q || p(z|x)) (AEVB eq. 2), the KL between diagonal
    # Gaussians written out in numpy; 5 SE of the estimator's per-sample terms.
    mean, log_var = model.q(**WORSE_Q)
    key = jax.random.key(16)
    terms = elbo(key, mean, log_var, model.log_likelihood_fn, num_samples=NUM_MC, kl=kl)
    kl_to_posterior = numpy_kl_diagonal(
        mean.astype(np.float64),
        np.exp(log_var.astype(np.float64)),
        model.posterior_mean,
        model.posterior_var,
    )
    expected = model.log_marginal - kl_to_posterior
    z = reparameterize(key, mean, log_var, num_samples=NUM_MC)
    if kl == "analytic":
        per_sample = numpy_log_likelihood(model.x, model.weight, model.bias, model.noise_std, z)
    else:
        per_sample = numpy_log_weights(model, z, mean, log_var)
    standard_error = per_sample.std(0, ddof=1) / math.sqrt(NUM_MC)
    assert_within_standard_errors(terms.elbo, expected, standard_error, f"elbo ({kl})")
    assert np.all(kl_to_posterior > 1.0)  # the test can tell a worse q from the exact one


# --------------------------------------------------------------------------- #
# 3. IWAE properties
# --------------------------------------------------------------------------- #


def test_iwae_is_log_mean_exp_of_log_weights_for_every_chunk_size(model):
    # Reference: Burda et al. eq. 8 evaluated in numpy float64: log-weights from scipy.stats.norm
    # at the K = 50 samples of reparameterize(..., num_samples=K) (the same fold_in draws),
    # reduced with scipy.special.logsumexp. 50 % 7 != 0 and chunk_size 100 > K exercise the
    # padded last chunk, which must leak neither weight nor NaN (through its -inf padding) into
    # the value or the gradient. Jensen: log mean exp(w) >= mean(w). All chunk sizes and both
    # gradients are compiled as one jitted program (compilation dominates the runtime).
    num_samples = 50
    mean, log_var = model.q(**WORSE_Q)
    key = jax.random.key(20)

    def bound(m, lv, chunk_size):
        return iwae_bound(
            key, m, lv, model.log_likelihood_fn, num_samples=num_samples, chunk_size=chunk_size
        )

    z = reparameterize(key, mean, log_var, num_samples=num_samples)
    log_weights = numpy_log_weights(model, z, mean, log_var)  # [K, B]
    expected = special.logsumexp(log_weights, axis=0) - math.log(num_samples)
    assert np.all(expected > log_weights.mean(0) + 0.1)  # weights far from uniform

    chunk_sizes = (num_samples, 1, 7, 100)

    def values_and_gradients(m, lv):
        values = {chunk_size: bound(m, lv, chunk_size) for chunk_size in chunk_sizes}
        gradients = {
            chunk_size: jax.grad(
                lambda m, lv, c=chunk_size: jnp.sum(bound(m, lv, c)), argnums=(0, 1)
            )(m, lv)
            for chunk_size in (num_samples, 7)
        }
        return values, gradients

    values, gradients = jax.jit(values_and_gradients)(mean, log_var)
    one_chunk = values[num_samples]
    assert one_chunk.shape == (4,) and one_chunk.dtype == DTYPE
    assert_close(one_chunk, expected, REFERENCE_RTOL)
    for chunk_size in chunk_sizes:
        assert_close(values[chunk_size], one_chunk, REFERENCE_RTOL)
    for got, reference in zip(gradients[7], gradients[num_samples], strict=True):
        assert np.all(np.isfinite(got)) and np.any(got != 0)
        assert_close(got, reference, 1e-4)


def test_iwae_chunking_with_zero_likelihood_samples():
    # Reference: Burda et al. eq. 8 via scipy.special.logsumexp of the log-weights, where samples
    # of zero likelihood (log p(x|z) = -inf, e.g. outside a decoder's support) simply drop out.
    # The chunked running log-sum-exp must give the same finite value whatever the chunk size,
    # also when a whole first chunk (here sample 0 alone, chunk_size=1) has weight zero.
    num_samples = 8
    mean = jnp.zeros((1, 2), DTYPE)
    log_var = jnp.zeros((1, 2), DTYPE)
    key = jax.random.key(80)
    z = np.asarray(reparameterize(key, mean, log_var, num_samples=num_samples), np.float64)
    threshold = float(z[0, 0, 0])  # sample 0 lies in the zero-likelihood region z_0 <= threshold

    def log_likelihood_fn(latent):
        return jnp.where(latent[:, 0] > threshold, -1.0, -jnp.inf)

    # q = p(z) here, so each log-weight is log p(x|z_k): -1 or -inf.
    log_weights = np.where(z[:, 0, 0] > threshold, -1.0, -np.inf)
    assert np.isinf(log_weights[0]) and np.any(np.isfinite(log_weights))
    expected = special.logsumexp(log_weights) - math.log(num_samples)
    for chunk_size in (num_samples, 1):
        bound = iwae_bound(
            key, mean, log_var, log_likelihood_fn, num_samples=num_samples, chunk_size=chunk_size
        )
        assert_close(bound, [expected], REFERENCE_RTOL)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo(model):
    # Reference: the library's own ELBO with kl="monte_carlo" and L = 1: the same fold_in(key, 0)
    # draw, so log w_0 = log p(x|z) - (log q(z) - log p(z)).
    mean, log_var = model.q(**WORSE_Q)
    key = jax.random.key(30)
    bound = iwae_bound(key, mean, log_var, model.log_likelihood_fn, num_samples=1)
    terms = elbo(key, mean, log_var, model.log_likelihood_fn, num_samples=1, kl="monte_carlo")
    assert_close(bound, terms.elbo, IDENTITY_RTOL)


def test_iwae_many_samples_bernoulli_decoder_runs_chunked():
    # Reference: the memory of a full vmap over K = 5000 samples of [B, D] = [4, 784] float32
    # logits (62.7 MB); in chunks of 100 the compiled temporaries must be a small fraction of it.
    # Burda et al. theorem 1: IWAE_5000 >= ELBO (= E[IWAE_1]) in expectation, the ELBO estimated
    # in numpy from scipy.stats.norm and log-sigmoid via np.logaddexp.
    batch, data_dim, latent_dim, num_samples = 4, 784, 8, 5000
    rng = np.random.default_rng(50)
    weight = (0.3 * rng.normal(size=(data_dim, latent_dim))).astype(DTYPE)
    x = jnp.asarray(rng.uniform(size=(batch, data_dim)) < 0.3, DTYPE)
    mean = (0.5 * rng.normal(size=(batch, latent_dim))).astype(DTYPE)
    log_var = np.full((batch, latent_dim), -1.0, DTYPE)

    def log_likelihood_fn(z):  # Bernoulli(x; sigmoid(z W^T)), written out: [B, Z] -> [B]
        logits = z @ weight.T
        return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)

    def bound_fn(key):
        return iwae_bound(
            key, mean, log_var, log_likelihood_fn, num_samples=num_samples, chunk_size=100
        )

    key = jax.random.key(51)
    large = jax.jit(bound_fn)
    compiled = large.lower(key).compile()
    memory = compiled.memory_analysis()
    if memory is not None:
        assert memory.temp_size_in_bytes < num_samples * batch * data_dim * 4 / 10, memory
    bound = np.asarray(compiled(key))
    assert bound.shape == (batch,) and np.all(np.isfinite(bound))

    # ELBO estimate in numpy float64 from 200 draws of q: mean of the K = 1 log-weights.
    z = np.asarray(reparameterize(key, mean, log_var, num_samples=200), np.float64)
    logits = z @ weight.T.astype(np.float64)
    x64 = np.asarray(x, np.float64)
    log_lik = -(x64 * np.logaddexp(0, -logits) + (1 - x64) * np.logaddexp(0, logits)).sum(-1)
    std = np.exp(0.5 * log_var.astype(np.float64))
    log_prior_minus_q = (stats.norm.logpdf(z) - stats.norm.logpdf(z, mean, std)).sum(-1)
    elbo_estimate = (log_lik + log_prior_minus_q).mean(0)
    assert bound.mean() > elbo_estimate.mean(), (bound, elbo_estimate)


# --------------------------------------------------------------------------- #
# 4. ELBO
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_elbo_equals_python_loop_over_fold_in_samples(model, kl):
    # Reference: a Python loop over l of log p(x | mean + std * normal(fold_in(key, l))),
    # averaged; the KL likewise from log-densities written out here (monte_carlo), or the
    # closed form of AEVB appendix B (analytic).
    mean, log_var = model.q(**WORSE_Q)
    key = jax.random.key(60)
    fn = model.log_likelihood_fn
    terms = elbo(key, mean, log_var, fn, num_samples=SMALL_L, kl=kl)
    std = jnp.exp(0.5 * log_var)
    recon, kl_samples = [], []
    for sample in range(SMALL_L):
        eps = jax.random.normal(jax.random.fold_in(key, sample), mean.shape, DTYPE)
        z = mean + std * eps
        recon.append(fn(z))
        log_q = jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * log_var - 0.5 * eps**2, -1)
        log_prior = jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * z**2, -1)
        kl_samples.append(log_q - log_prior)
    expected_recon = sum(recon) / SMALL_L
    if kl == "analytic":
        expected_kl = 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1.0 - log_var, -1)
    else:
        expected_kl = sum(kl_samples) / SMALL_L
    assert_close(terms.recon, expected_recon, IDENTITY_RTOL)
    assert_close(terms.kl, expected_kl, 10 * IDENTITY_RTOL)
    assert_close(terms.elbo, expected_recon - expected_kl, IDENTITY_RTOL)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_elbo_terms_identity_and_loss(model, kl):
    # Reference: ElboTerms' documented identities, elbo = recon - kl (exactly, eagerly) and
    # loss(beta) = -mean_b(recon - beta * kl), written out in numpy.
    mean, log_var = model.q(**WORSE_Q)
    terms = elbo(
        jax.random.key(61), mean, log_var, model.log_likelihood_fn, num_samples=SMALL_L, kl=kl
    )
    assert isinstance(terms, ElboTerms)
    for field in (terms.elbo, terms.recon, terms.kl):
        assert field.shape == (4,) and field.dtype == DTYPE
    np.testing.assert_array_equal(terms.elbo, terms.recon - terms.kl)
    recon, kl_value = np.asarray(terms.recon, np.float64), np.asarray(terms.kl, np.float64)
    for beta in (0.0, 1.0, 0.25, 4.0):
        assert_close(terms.loss(beta), -np.mean(recon - beta * kl_value), IDENTITY_RTOL)
    assert_close(terms.loss(), -np.mean(np.asarray(terms.elbo, np.float64)), IDENTITY_RTOL)
    # beta as a traced argument (a beta sweep is a vmapped axis too).
    betas = np.array([0.0, 0.5, 2.0], DTYPE)
    swept = jax.jit(jax.vmap(lambda beta: terms.loss(beta)))(betas)
    assert_close(swept, [-np.mean(recon - b * kl_value) for b in betas], IDENTITY_RTOL)


def test_analytic_kl_is_kl_standard_normal_and_the_closed_form(model):
    # Reference: vaejax.kl.kl_standard_normal (the same number) and AEVB appendix B,
    # -1/2 sum(1 + log s^2 - mu^2 - s^2), in numpy float64.
    mean, log_var = model.q(**WORSE_Q)
    terms = elbo(jax.random.key(62), mean, log_var, model.log_likelihood_fn, kl="analytic")
    np.testing.assert_allclose(terms.kl, kl_standard_normal(mean, log_var), rtol=IDENTITY_RTOL)
    m64, lv64 = mean.astype(np.float64), log_var.astype(np.float64)
    expected = -0.5 * np.sum(1 + lv64 - m64**2 - np.exp(lv64), -1)
    assert_close(terms.kl, expected, REFERENCE_RTOL)


def test_monte_carlo_kl_is_unbiased(model):
    # Reference: the closed form of AEVB appendix B in numpy; the Monte-Carlo KL (AEVB eq. 6)
    # must agree within 5 SE, the SE from scipy.stats.norm log-densities at the same draws.
    mean, log_var = model.q(**WORSE_Q)
    mean = mean * 3.0  # a KL well away from zero
    key = jax.random.key(63)
    terms = elbo(key, mean, log_var, model.log_likelihood_fn, num_samples=NUM_MC, kl="monte_carlo")
    m64, lv64 = mean.astype(np.float64), log_var.astype(np.float64)
    expected = -0.5 * np.sum(1 + lv64 - m64**2 - np.exp(lv64), -1)
    z = np.asarray(reparameterize(key, mean, log_var, num_samples=NUM_MC), np.float64)
    per_sample = (stats.norm.logpdf(z, m64, np.exp(0.5 * lv64)) - stats.norm.logpdf(z)).sum(-1)
    standard_error = per_sample.std(0, ddof=1) / math.sqrt(NUM_MC)
    assert_within_standard_errors(terms.kl, expected, standard_error, "monte-carlo kl")
    assert_close(terms.kl, per_sample.mean(0), REFERENCE_RTOL)


def test_elbo_vmapped_over_sigma_equals_loop(model):
    # Reference: a Python loop over sigma of the same call (the sigma grid is meant to be a
    # vmapped axis), eagerly. The decoder is vaejax.likelihoods.gaussian_log_likelihood with a
    # traced sigma; the vmapped grid runs under jit, as a training step would.
    mean, log_var = model.q(**WORSE_Q)
    key = jax.random.key(64)
    x = jnp.asarray(model.x)
    sigmas = np.array([0.05, 0.3, 1.0, 4.0], DTYPE)

    def elbo_at_sigma(sigma):
        def log_likelihood_fn(z):
            decoded = jnp.matmul(z, model.weight.T, precision="highest") + model.bias
            return gaussian_log_likelihood(x, decoded, sigma)

        return elbo(key, mean, log_var, log_likelihood_fn, num_samples=SMALL_L)

    grid = jax.jit(jax.vmap(elbo_at_sigma))(sigmas)
    assert grid.elbo.shape == (4, 4)
    for index, sigma in enumerate(sigmas):
        single = elbo_at_sigma(sigma)
        assert_close(grid.elbo[index], single.elbo, IDENTITY_RTOL)
        assert_close(grid.recon[index], single.recon, IDENTITY_RTOL)
        assert_close(grid.kl[index], single.kl, IDENTITY_RTOL)
    # The grid is not degenerate: each sigma gives a different reconstruction term.
    assert np.all(np.diff(np.asarray(grid.recon[:, 0])) != 0)


# --------------------------------------------------------------------------- #
# 5. Under jit
# --------------------------------------------------------------------------- #


def test_call_sites_under_jit_match_eager(model):
    # Reference: the eager calls, which the tests above check against their references. Static
    # options (num_samples, kl, the likelihood) are closed over with partial. iwae_bound and its
    # gradient under jit are covered in the exact-posterior and chunk-size tests, gradients of
    # the ELBO by `check_grads` in test_elbo_float64.py.
    mean, log_var = model.q(**WORSE_Q)
    fn = model.log_likelihood_fn
    key = jax.random.key(70)

    call_sites = {
        "reparameterize L": functools.partial(reparameterize, key, num_samples=SMALL_L),
        "elbo analytic": functools.partial(elbo, key, log_likelihood_fn=fn, num_samples=SMALL_L),
        "elbo monte_carlo": functools.partial(
            elbo, key, log_likelihood_fn=fn, num_samples=SMALL_L, kl="monte_carlo"
        ),
    }
    for name, call_site in call_sites.items():
        eager = jax.tree.leaves(call_site(mean, log_var))
        jitted = jax.tree.leaves(jax.jit(call_site)(mean, log_var))
        assert len(eager) == len(jitted), name
        for eager_leaf, jitted_leaf in zip(eager, jitted, strict=True):
            assert jitted_leaf.shape == eager_leaf.shape and jitted_leaf.dtype == DTYPE, name
            assert np.all(np.isfinite(jitted_leaf)), name
            assert_close(jitted_leaf, eager_leaf, 1e-5)

    terms = jax.jit(call_sites["elbo monte_carlo"])(mean, log_var)
    assert_close(terms.elbo, terms.recon - terms.kl, IDENTITY_RTOL)


# --------------------------------------------------------------------------- #
# 6. Bad input
# --------------------------------------------------------------------------- #


def _fn(z):
    return jnp.sum(z, -1)


GOOD = (jnp.zeros((2, 3), DTYPE), jnp.zeros((2, 3), DTYPE))


@pytest.mark.parametrize("num_samples", [0, -1, 2.0, 1.5, True, "3"])
def test_bad_num_samples_raises(num_samples):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples"):
        reparameterize(key, *GOOD, num_samples=num_samples)
    with pytest.raises(ValueError, match="num_samples"):
        elbo(key, *GOOD, _fn, num_samples=num_samples)
    with pytest.raises(ValueError, match="num_samples"):
        iwae_bound(key, *GOOD, _fn, num_samples=num_samples)
    with pytest.raises(ValueError, match="num_samples"):
        jax.jit(lambda k, m, lv: elbo(k, m, lv, _fn, num_samples=num_samples))(key, *GOOD)


@pytest.mark.parametrize("chunk_size", [0, -5, 2.0, True])
def test_bad_chunk_size_raises(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        iwae_bound(jax.random.key(0), *GOOD, _fn, num_samples=10, chunk_size=chunk_size)


@pytest.mark.parametrize("kl", ["foo", "Analytic", "mc", None])
def test_bad_kl_name_raises(kl):
    with pytest.raises(ValueError, match="`kl`"):
        elbo(jax.random.key(0), *GOOD, _fn, kl=kl)


def test_mismatched_shapes_raise():
    key = jax.random.key(0)
    mean, log_var = jnp.zeros((2, 3), DTYPE), jnp.zeros((2, 4), DTYPE)
    with pytest.raises(ValueError, match="`mean` and `log_var`"):
        reparameterize(key, mean, log_var)
    with pytest.raises(ValueError, match="`posterior_mean` and `posterior_log_var`"):
        elbo(key, mean, log_var, _fn)
    with pytest.raises(ValueError, match="`posterior_mean` and `posterior_log_var`"):
        iwae_bound(key, mean, log_var, _fn, num_samples=4)
    with pytest.raises(ValueError, match="posterior_mean"):
        jax.jit(lambda k, m, lv: iwae_bound(k, m, lv, _fn, num_samples=4))(key, mean, log_var)


def test_integer_posterior_raises():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="posterior_mean"):
        elbo(key, np.zeros((2, 3), np.int32), GOOD[1], _fn)
    with pytest.raises(ValueError, match="posterior_log_var"):
        iwae_bound(key, GOOD[0], np.zeros((2, 3), np.int32), _fn, num_samples=2)


# --------------------------------------------------------------------------- #
# 7. log_likelihood_fn must return one value per example
# --------------------------------------------------------------------------- #

IMAGE_BATCH = np.full((2, 4, 4, 1), 0.5, DTYPE)  # [B, H, W, C]


def _image_decoder(event_ndims):
    """z [B, 3] -> a Gaussian likelihood of [B, 4, 4, 1] images with the given event_ndims."""

    def log_likelihood_fn(z):
        mean = jnp.broadcast_to(jnp.sum(z, -1)[:, None, None, None], IMAGE_BATCH.shape)
        return gaussian_log_likelihood(IMAGE_BATCH, mean, 0.5, event_ndims=event_ndims)

    return log_likelihood_fn


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_log_likelihood_fn_returning_pixels_is_refused_with_the_shapes(objective):
    # event_ndims=1 on [B, H, W, C] sums only the channel axis: [B, 4, 4] per sample. Before the
    # check this failed deep inside with "Incompatible shapes for broadcasting".
    key = jax.random.key(0)
    fn = _image_decoder(event_ndims=1)
    message = (r"`log_likelihood_fn` must return one log-likelihood per example, shape \(2,\)"
               r".*z of shape \(2, 3\).*returned shape \(2, 4, 4\).*`event_ndims`.*"
               r"event_ndims=3")
    call = (functools.partial(elbo, num_samples=2) if objective == "elbo"
            else functools.partial(iwae_bound, num_samples=3, chunk_size=2))
    with pytest.raises(ValueError, match=message):
        call(key, jnp.zeros((2, 3), DTYPE), jnp.zeros((2, 3), DTYPE), fn)
    with pytest.raises(ValueError, match=message):  # static: also under jit
        jax.jit(lambda m, lv: call(key, m, lv, fn))(jnp.zeros((2, 3), DTYPE),
                                                    jnp.zeros((2, 3), DTYPE))
    # A scalar (the batch reduced inside the closure) is refused too.
    with pytest.raises(ValueError, match=r"returned shape \(\).*reduced over the batch"):
        call(key, jnp.zeros((2, 3), DTYPE), jnp.zeros((2, 3), DTYPE),
             lambda z: jnp.sum(_image_decoder(3)(z)))
    # The whole image as the event gives [B].
    posterior = jax.ShapeDtypeStruct((2, 3), DTYPE)
    shapes = jax.eval_shape(lambda m, lv: call(key, m, lv, _image_decoder(3)), posterior, posterior)
    assert all(leaf.shape == (2,) for leaf in jax.tree.leaves(shapes))
