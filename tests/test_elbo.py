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

Every call site is run eagerly and under `jax.jit` (static arguments closed over). The
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
# Tolerances by kind (STYLE.md): float32 identities between two library paths, float32
# against a float64 reference, and the exact-posterior equality, where the ELBO is a sum of
# D + 2 Z float32 log-density terms of up to ~20 nats that must cancel to log p(x).
IDENTITY_RTOL = 1e-6
REFERENCE_RTOL = 1e-5
EXACT_POSTERIOR_ATOL = 1e-4
MC_STANDARD_ERRORS = 5.0

TRANSFORMS = pytest.mark.parametrize("transform", ["eager", "jit"])


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


@TRANSFORMS
@pytest.mark.parametrize("batch_shape", [(), (4,), (2, 3)])
def test_reparameterize_shapes(transform, batch_shape):
    mean = jnp.zeros((*batch_shape, 5), DTYPE)
    log_var = jnp.zeros((*batch_shape, 5), DTYPE)
    key = jax.random.key(0)
    one = call(transform, reparameterize, key, mean, log_var)
    many = call(transform, reparameterize, key, mean, log_var, num_samples=7)
    assert one.shape == (*batch_shape, 5) and one.dtype == DTYPE
    assert many.shape == (7, *batch_shape, 5) and many.dtype == DTYPE


@TRANSFORMS
def test_reparameterize_moments_match_mean_and_variance(transform):
    # Reference: z ~ N(mean, exp(log_var)); sample mean within 5 SE = 5 sqrt(var / n), and
    # sample variance within 5 SE = 5 var sqrt(2 / (n - 1)) (Gaussian fourth moment).
    num_samples = 20_000
    mean = np.array([[0.0, -1.5, 3.0], [10.0, 0.25, -4.0]], DTYPE)
    log_var = np.array([[0.0, -2.0, 1.0], [3.0, -6.0, 0.5]], DTYPE)
    z = call(
        transform, reparameterize, jax.random.key(1), mean, log_var, num_samples=num_samples
    )
    z = np.asarray(z, np.float64)
    var = np.exp(log_var.astype(np.float64))
    assert_within_standard_errors(z.mean(0), mean, np.sqrt(var / num_samples), "mean")
    assert_within_standard_errors(
        z.var(0, ddof=1), var, var * np.sqrt(2.0 / (num_samples - 1)), "variance"
    )
    # The samples are distinct across the sample axis (fold_in gives fresh draws).
    assert np.unique(z[:, 0, 0]).size > 0.99 * num_samples


@TRANSFORMS
def test_reparameterize_is_mean_plus_std_times_fold_in_draws(transform):
    # Reference: the documented formula z_k = mean + exp(log_var / 2) * eps_k with
    # eps_k = normal(fold_in(key, k)); num_samples=None draws eps from `key` itself.
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(3, 4)).astype(DTYPE)
    log_var = rng.normal(size=(3, 4)).astype(DTYPE)
    key = jax.random.key(3)
    std = np.exp(0.5 * log_var.astype(np.float64))

    def expected(eps_key):
        eps = np.asarray(jax.random.normal(eps_key, mean.shape, DTYPE), np.float64)
        return mean + std * eps

    many = call(transform, reparameterize, key, mean, log_var, num_samples=5)
    for k in range(5):
        assert_close(many[k], expected(jax.random.fold_in(key, k)), IDENTITY_RTOL)
    single = call(transform, reparameterize, key, mean, log_var, num_samples=1)
    assert single.shape == (1, 3, 4)
    assert_close(single[0], expected(jax.random.fold_in(key, 0)), IDENTITY_RTOL)
    assert_close(call(transform, reparameterize, key, mean, log_var), expected(key), IDENTITY_RTOL)


def test_reparameterize_same_key_same_samples_other_key_other_samples():
    mean = jnp.ones((2, 3), DTYPE)
    log_var = jnp.full((2, 3), -1.0, DTYPE)
    first = reparameterize(jax.random.key(4), mean, log_var, num_samples=6)
    again = reparameterize(jax.random.key(4), mean, log_var, num_samples=6)
    jitted = jax.jit(functools.partial(reparameterize, num_samples=6))(
        jax.random.key(4), mean, log_var
    )
    other = reparameterize(jax.random.key(5), mean, log_var, num_samples=6)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, jitted, rtol=IDENTITY_RTOL)
    assert not np.any(np.isclose(first, other))
    # Prefix property: the first L of K samples are the L-sample draw (sample k <-> fold_in k).
    np.testing.assert_array_equal(
        reparameterize(jax.random.key(4), mean, log_var, num_samples=3), first[:3]
    )


@TRANSFORMS
def test_reparameterize_gradients_match_the_formula(transform):
    # Reference: d z / d mean = I and d z / d log_var = diag(0.5 exp(0.5 log_var) eps), with eps
    # the draw from fold_in(key, k) (AEVB section 2.4: z = g(eps, phi) is differentiable in phi).
    rng = np.random.default_rng(6)
    mean = rng.normal(size=(2, 3)).astype(DTYPE)
    log_var = rng.normal(size=(2, 3)).astype(DTYPE)
    key = jax.random.key(7)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), mean.shape, DTYPE))

    def sample(m, lv):
        return reparameterize(key, m, lv, num_samples=1)[0]

    jacobian = jax.jacrev if transform == "eager" else lambda f, **kw: jax.jit(jax.jacrev(f, **kw))
    jac_mean = np.asarray(jacobian(sample, argnums=0)(mean, log_var)).reshape(6, 6)
    np.testing.assert_array_equal(jac_mean, np.eye(6))
    jac_log_var = np.asarray(jacobian(sample, argnums=1)(mean, log_var)).reshape(6, 6)
    expected = 0.5 * np.exp(0.5 * log_var.astype(np.float64)) * eps
    assert_close(np.diag(jac_log_var), expected.reshape(-1), IDENTITY_RTOL)
    np.testing.assert_array_equal(jac_log_var - np.diag(np.diag(jac_log_var)), 0.0)

    # jax.grad of the sum: the diagonal Jacobians, summed over L samples.
    def total(m, lv):
        return jnp.sum(reparameterize(key, m, lv, num_samples=4))

    grad = jax.grad(total, argnums=(0, 1))
    grad = grad if transform == "eager" else jax.jit(grad)
    grad_mean, grad_log_var = grad(mean, log_var)
    np.testing.assert_array_equal(grad_mean, np.full_like(mean, 4.0))
    eps_all = np.stack(
        [jax.random.normal(jax.random.fold_in(key, k), mean.shape, DTYPE) for k in range(4)]
    ).astype(np.float64)
    expected_sum = (0.5 * np.exp(0.5 * log_var.astype(np.float64)) * eps_all).sum(0)
    assert_close(grad_log_var, expected_sum, REFERENCE_RTOL)


# --------------------------------------------------------------------------- #
# 2. Linear-Gaussian model with an exact marginal
# --------------------------------------------------------------------------- #


@TRANSFORMS
@pytest.mark.parametrize("num_samples", [1, 10, 1000])
def test_iwae_with_exact_posterior_equals_log_marginal(model, transform, num_samples):
    # Reference: log p(x) from scipy.stats.multivariate_normal. With q = p(z|x) every log-weight
    # log p(x, z) - log q(z|x) equals log p(x), so any K gives log p(x) up to rounding.
    mean, log_var = model.q()
    got = call(
        transform,
        iwae_bound,
        jax.random.key(10),
        mean,
        log_var,
        log_likelihood_fn=model.log_likelihood_fn,
        num_samples=num_samples,
    )
    np.testing.assert_allclose(got, model.log_marginal, rtol=0, atol=EXACT_POSTERIOR_ATOL)


@TRANSFORMS
@pytest.mark.parametrize("num_samples", [1, 3, 100])
def test_monte_carlo_elbo_with_exact_posterior_equals_log_marginal(model, transform, num_samples):
    # Reference: as above; with kl="monte_carlo" the ELBO is the mean of the (constant) log-weights.
    mean, log_var = model.q()
    terms = call(
        transform,
        elbo,
        jax.random.key(11),
        mean,
        log_var,
        log_likelihood_fn=model.log_likelihood_fn,
        num_samples=num_samples,
        kl="monte_carlo",
    )
    np.testing.assert_allclose(terms.elbo, model.log_marginal, rtol=0, atol=EXACT_POSTERIOR_ATOL)


@TRANSFORMS
def test_analytic_elbo_with_exact_posterior_is_log_marginal_within_mc_error(model, transform):
    # Reference: ELBO = log p(x) - KL(q || p(z|x)) = log p(x) at q = p(z|x); the analytic-KL
    # estimator only averages log p(x|z_l), so it matches within 5 SE of that average.
    num_samples = 20_000
    mean, log_var = model.q()
    key = jax.random.key(12)
    terms = call(
        transform,
        elbo,
        key,
        mean,
        log_var,
        log_likelihood_fn=model.log_likelihood_fn,
        num_samples=num_samples,
    )
    z = reparameterize(key, mean, log_var, num_samples=num_samples)
    per_sample = numpy_log_likelihood(model.x, model.weight, model.bias, model.noise_std, z)
    standard_error = per_sample.std(0, ddof=1) / math.sqrt(num_samples)
    assert_within_standard_errors(terms.elbo, model.log_marginal, standard_error, "elbo")


@TRANSFORMS
def test_worse_q_orders_elbo_iwae10_iwae1000_log_marginal(model, transform):
    # Reference: Burda et al. 2015, theorem 1: log p(x) >= E[IWAE_K'] >= E[IWAE_K] >= ELBO for
    # K' >= K. Expectations are estimated over independent keys, compared at 5 SE.
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    fn = model.log_likelihood_fn

    def replicated_iwae(num_samples, num_keys, seed):
        keys = jax.random.split(jax.random.key(seed), num_keys)
        bound = jax.vmap(
            lambda key: iwae_bound(key, mean, log_var, fn, num_samples=num_samples)
        )
        values = np.asarray(call(transform, bound, keys), np.float64)
        return values.mean(0), values.std(0, ddof=1) / math.sqrt(num_keys)

    terms = call(
        transform, elbo, jax.random.key(13), mean, log_var, log_likelihood_fn=fn,
        num_samples=20_000, kl="monte_carlo",
    )  # fmt: skip
    elbo_value = np.asarray(terms.elbo, np.float64)
    iwae10, iwae10_se = replicated_iwae(10, 400, seed=14)
    iwae1000, iwae1000_se = replicated_iwae(1000, 50, seed=15)
    slack = MC_STANDARD_ERRORS
    assert np.all(elbo_value + 0.01 < iwae10 - slack * iwae10_se), (elbo_value, iwae10)
    assert np.all(iwae10 + slack * iwae10_se < iwae1000 - slack * iwae1000_se), (iwae10, iwae1000)
    assert np.all(iwae1000 <= model.log_marginal + slack * iwae1000_se), (
        iwae1000,
        model.log_marginal,
    )
    # And IWAE_1000 has closed most of the gap (here the gap is KL(q || p(z|x)) ~ 1 nat).
    assert np.all(model.log_marginal - iwae1000 < 0.05), model.log_marginal - iwae1000


@TRANSFORMS
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_worse_q_elbo_is_log_marginal_minus_kl_to_posterior(model, transform, kl):
    # Reference: ELBO = log p(x) - KL(q || p(z|x)) (Kingma & Welling eq. 1), the KL between
    # diagonal Gaussians written out in numpy; 5 SE of the estimator's per-sample terms.
    num_samples = 20_000
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    key = jax.random.key(16)
    terms = call(
        transform, elbo, key, mean, log_var, log_likelihood_fn=model.log_likelihood_fn,
        num_samples=num_samples, kl=kl,
    )  # fmt: skip
    kl_to_posterior = numpy_kl_diagonal(
        mean.astype(np.float64),
        np.exp(log_var.astype(np.float64)),
        model.posterior_mean,
        model.posterior_var,
    )
    expected = model.log_marginal - kl_to_posterior
    z = reparameterize(key, mean, log_var, num_samples=num_samples)
    if kl == "analytic":
        per_sample = numpy_log_likelihood(model.x, model.weight, model.bias, model.noise_std, z)
    else:
        per_sample = numpy_log_weights(model, z, mean, log_var)
    standard_error = per_sample.std(0, ddof=1) / math.sqrt(num_samples)
    assert_within_standard_errors(terms.elbo, expected, standard_error, f"elbo ({kl})")
    assert np.all(kl_to_posterior > 0.5)  # the test can tell a worse q from the exact one


# --------------------------------------------------------------------------- #
# 3. IWAE properties
# --------------------------------------------------------------------------- #


@TRANSFORMS
def test_iwae_does_not_depend_on_chunk_size(model, transform):
    # Reference: chunk_size=None (default, one chunk of min(K, 100) = 50). 50 % 7 != 0 and
    # chunk_size 100 > K exercise the padded last chunk.
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    key = jax.random.key(20)
    results = {
        chunk_size: call(
            transform, iwae_bound, key, mean, log_var,
            log_likelihood_fn=model.log_likelihood_fn, num_samples=50, chunk_size=chunk_size,
        )  # fmt: skip
        for chunk_size in (None, 1, 7, 50, 100)
    }
    for chunk_size, value in results.items():
        assert value.shape == (4,) and value.dtype == DTYPE
        assert_close(value, results[None], REFERENCE_RTOL)


@TRANSFORMS
def test_iwae_gradient_does_not_depend_on_chunk_size(model, transform):
    # Reference: the gradient with one chunk; the padded chunks (7 does not divide 50) must not
    # leak NaN or weight into the gradient through the -inf padding.
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    key = jax.random.key(21)

    def gradient(chunk_size):
        def objective(m, lv):
            bound = iwae_bound(
                key, m, lv, model.log_likelihood_fn, num_samples=50, chunk_size=chunk_size
            )
            return jnp.sum(bound)

        grad = jax.grad(objective, argnums=(0, 1))
        return (jax.jit(grad) if transform == "jit" else grad)(mean, log_var)

    reference = gradient(50)
    for chunk_size in (1, 7, 100):
        got = gradient(chunk_size)
        for got_part, reference_part in zip(got, reference, strict=True):
            assert np.all(np.isfinite(got_part)), chunk_size
            assert_close(got_part, reference_part, 1e-4)


@TRANSFORMS
def test_iwae_with_one_sample_is_the_monte_carlo_elbo(model, transform):
    # Reference: the library's own ELBO with kl="monte_carlo" and L = 1: the same fold_in(key, 0)
    # draw, so log w_0 = log p(x|z) - (log q - log p).
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    for seed in range(3):
        key = jax.random.key(30 + seed)
        bound = call(
            transform, iwae_bound, key, mean, log_var,
            log_likelihood_fn=model.log_likelihood_fn, num_samples=1,
        )  # fmt: skip
        terms = call(
            transform, elbo, key, mean, log_var, log_likelihood_fn=model.log_likelihood_fn,
            num_samples=1, kl="monte_carlo",
        )  # fmt: skip
        assert_close(bound, terms.elbo, IDENTITY_RTOL)


@TRANSFORMS
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_iwae_is_log_mean_exp_of_log_weights_and_above_their_mean(model, transform, chunk_size):
    # Reference: Burda et al. eq. 8 evaluated in numpy float64: log-weights from scipy.stats.norm
    # at the K samples of reparameterize(..., num_samples=K) (the same fold_in draws), reduced
    # with scipy.special.logsumexp; Jensen: log mean exp(w) >= mean(w).
    num_samples = 50
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    key = jax.random.key(40)
    bound = call(
        transform, iwae_bound, key, mean, log_var, log_likelihood_fn=model.log_likelihood_fn,
        num_samples=num_samples, chunk_size=chunk_size,
    )  # fmt: skip
    z = reparameterize(key, mean, log_var, num_samples=num_samples)
    log_weights = numpy_log_weights(model, z, mean, log_var)  # [K, B]
    expected = special.logsumexp(log_weights, axis=0) - math.log(num_samples)
    assert_close(bound, expected, REFERENCE_RTOL)
    assert np.all(np.asarray(bound) > log_weights.mean(0) + 1e-3), (bound, log_weights.mean(0))


def test_iwae_many_samples_bernoulli_decoder_runs_chunked():
    # Reference: memory of a full vmap over K = 5000 samples of [B, D] = [4, 784] float32 logits
    # (62.7 MB); with chunks of 100 the compiled temporaries must be a small fraction of it.
    # Burda et al. theorem 1: IWAE_5000 >= ELBO (= E[IWAE_1]) in expectation.
    batch, data_dim, latent_dim, num_samples = 4, 784, 8, 5000
    rng = np.random.default_rng(50)
    weight = (0.3 * rng.normal(size=(data_dim, latent_dim))).astype(DTYPE)
    x = jnp.asarray(rng.uniform(size=(batch, data_dim)) < 0.3, DTYPE)
    mean = (0.5 * rng.normal(size=(batch, latent_dim))).astype(DTYPE)
    log_var = np.full((batch, latent_dim), -1.0, DTYPE)

    def log_likelihood_fn(z):  # Bernoulli(x; sigmoid(z W^T)), written out: [B, Z] -> [B]
        logits = z @ weight.T
        return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)

    bound_fn = jax.jit(
        lambda key, m, lv: iwae_bound(
            key, m, lv, log_likelihood_fn, num_samples=num_samples, chunk_size=100
        )
    )
    key = jax.random.key(51)
    memory = bound_fn.lower(key, mean, log_var).compile().memory_analysis()
    full_bytes = num_samples * batch * data_dim * 4
    if memory is not None:
        assert memory.temp_size_in_bytes < full_bytes / 10, memory
    bound = np.asarray(bound_fn(key, mean, log_var))
    assert bound.shape == (batch,) and np.all(np.isfinite(bound))

    keys = jax.random.split(jax.random.key(52), 200)
    single = jax.jit(
        jax.vmap(lambda k: iwae_bound(k, mean, log_var, log_likelihood_fn, num_samples=1))
    )(keys)
    assert bound.mean() > float(jnp.mean(single)), (bound, jnp.mean(single, axis=0))


# --------------------------------------------------------------------------- #
# 4. ELBO
# --------------------------------------------------------------------------- #


@TRANSFORMS
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_elbo_equals_python_loop_over_fold_in_samples(model, transform, kl):
    # Reference: a Python loop over l of log p(x | mean + std * normal(fold_in(key, l))),
    # averaged; the KL term likewise (monte_carlo) or the closed form (analytic).
    num_samples = 6
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    key = jax.random.key(60)
    fn = model.log_likelihood_fn
    terms = call(
        transform, elbo, key, mean, log_var, log_likelihood_fn=fn, num_samples=num_samples, kl=kl
    )
    std = jnp.exp(0.5 * log_var)
    recon, kl_samples = [], []
    for sample in range(num_samples):
        eps = jax.random.normal(jax.random.fold_in(key, sample), mean.shape, DTYPE)
        z = mean + std * eps
        recon.append(fn(z))
        log_q = jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * log_var - 0.5 * eps**2, -1)
        log_prior = jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * z**2, -1)
        kl_samples.append(log_q - log_prior)
    expected_recon = sum(recon) / num_samples
    if kl == "analytic":
        expected_kl = 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1.0 - log_var, -1)
    else:
        expected_kl = sum(kl_samples) / num_samples
    assert_close(terms.recon, expected_recon, IDENTITY_RTOL)
    assert_close(terms.kl, expected_kl, 10 * IDENTITY_RTOL)
    assert_close(terms.elbo, expected_recon - expected_kl, IDENTITY_RTOL)


@TRANSFORMS
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_elbo_terms_identity_and_loss(model, transform, kl):
    # Reference: ElboTerms' documented identities, elbo = recon - kl and
    # loss(beta) = -mean_b(recon - beta * kl).
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    terms = call(
        transform, elbo, jax.random.key(61), mean, log_var,
        log_likelihood_fn=model.log_likelihood_fn, num_samples=3, kl=kl,
    )  # fmt: skip
    assert isinstance(terms, ElboTerms)
    for field in (terms.elbo, terms.recon, terms.kl):
        assert field.shape == (4,) and field.dtype == DTYPE
    np.testing.assert_array_equal(terms.elbo, terms.recon - terms.kl)
    recon, kl_value = np.asarray(terms.recon, np.float64), np.asarray(terms.kl, np.float64)
    for beta in (0.0, 1.0, 0.25, 4.0):
        assert_close(terms.loss(beta), -np.mean(recon - beta * kl_value), IDENTITY_RTOL)
    assert_close(terms.loss(), -np.mean(recon - kl_value), IDENTITY_RTOL)
    assert_close(terms.loss(), -np.mean(np.asarray(terms.elbo, np.float64)), IDENTITY_RTOL)
    loss_fn = jax.jit(lambda t, beta: t.loss(beta))
    assert_close(loss_fn(terms, 0.25), -np.mean(recon - 0.25 * kl_value), IDENTITY_RTOL)


@TRANSFORMS
def test_analytic_kl_is_kl_standard_normal_and_the_closed_form(model, transform):
    # Reference: vaejax.kl.kl_standard_normal (exactly the same number) and AEVB appendix B,
    # -1/2 sum(1 + log s^2 - mu^2 - s^2), in numpy float64.
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    terms = call(
        transform, elbo, jax.random.key(62), mean, log_var,
        log_likelihood_fn=model.log_likelihood_fn, kl="analytic",
    )  # fmt: skip
    np.testing.assert_allclose(terms.kl, kl_standard_normal(mean, log_var), rtol=IDENTITY_RTOL)
    m64, lv64 = mean.astype(np.float64), log_var.astype(np.float64)
    expected = -0.5 * np.sum(1 + lv64 - m64**2 - np.exp(lv64), -1)
    assert_close(terms.kl, expected, REFERENCE_RTOL)


@TRANSFORMS
def test_monte_carlo_kl_is_unbiased(model, transform):
    # Reference: the closed form of AEVB appendix B in numpy; the Monte-Carlo KL (AEVB eq. 6)
    # must agree within 5 SE, the SE from scipy.stats.norm log-densities at the same draws.
    num_samples = 20_000
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    mean = mean * 3.0  # a KL well away from zero
    key = jax.random.key(63)
    terms = call(
        transform, elbo, key, mean, log_var, log_likelihood_fn=model.log_likelihood_fn,
        num_samples=num_samples, kl="monte_carlo",
    )  # fmt: skip
    m64, lv64 = mean.astype(np.float64), log_var.astype(np.float64)
    expected = -0.5 * np.sum(1 + lv64 - m64**2 - np.exp(lv64), -1)
    z = np.asarray(reparameterize(key, mean, log_var, num_samples=num_samples), np.float64)
    per_sample = (stats.norm.logpdf(z, m64, np.exp(0.5 * lv64)) - stats.norm.logpdf(z)).sum(-1)
    standard_error = per_sample.std(0, ddof=1) / math.sqrt(num_samples)
    assert_within_standard_errors(terms.kl, expected, standard_error, "monte-carlo kl")
    assert_close(terms.kl, per_sample.mean(0), REFERENCE_RTOL)


@TRANSFORMS
def test_elbo_vmapped_over_sigma_equals_loop(model, transform):
    # Reference: a Python loop over sigma of the same call (DESIGN.md: the sigma grid is a
    # vmapped axis). The decoder is vaejax.likelihoods.gaussian_log_likelihood with traced sigma.
    mean, log_var = model.q(mean_shift=0.5, var_scale=2.0)
    key = jax.random.key(64)
    x = jnp.asarray(model.x)
    sigmas = np.array([0.05, 0.3, 1.0, 4.0], DTYPE)

    def elbo_at_sigma(sigma):
        def log_likelihood_fn(z):
            decoded = jnp.matmul(z, model.weight.T, precision="highest") + model.bias
            return gaussian_log_likelihood(x, decoded, sigma)

        return elbo(key, mean, log_var, log_likelihood_fn, num_samples=4)

    vmapped = jax.vmap(elbo_at_sigma)
    vmapped = jax.jit(vmapped) if transform == "jit" else vmapped
    grid = vmapped(sigmas)
    assert grid.elbo.shape == (4, 4)
    for index, sigma in enumerate(sigmas):
        single = elbo_at_sigma(sigma)
        assert_close(grid.elbo[index], single.elbo, IDENTITY_RTOL)
        assert_close(grid.recon[index], single.recon, IDENTITY_RTOL)
        np.testing.assert_array_equal(grid.kl[index], single.kl)
    # The grid is not degenerate: a smaller sigma penalises the same residuals more.
    assert np.all(np.diff(np.asarray(grid.recon[:, 0])) != 0)


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
