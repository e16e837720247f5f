"""Tests of `vaejax.estimators` (reparameterised, STL and DReG gradients; SNR) in float32/64.

References (each test names its own):

* A linear-Gaussian model where everything is closed form (Bishop, PRML eqs. 2.113-2.117):
  p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) give p(x) = N(b, W W^T + s^2 I), checked against
  `scipy.stats.multivariate_normal.logpdf`, and p(z|x) = N(S W^T (x - b) / s^2, S) with
  S = (I + W^T W / s^2)^-1. W has columns with disjoint supports, so W^T W and S are exactly
  diagonal and the linear encoder mean = A x + c, log_var = v (a free vector) represents the
  posterior exactly at A* = S W^T / s^2, c* = -A* b, v* = log diag S.
* The expected ELBO in closed form, E_q[log p(x|z)] = -D/2 log(2 pi s^2) -
  (||x - b - W m||^2 + sum_j v_j ||W_:j||^2) / (2 s^2), minus the closed-form KL; its exact
  gradient (jax.grad of this formula) is the reference for the ELBO estimators, and
  grad_theta log p_theta(x) for the decoder gradient of any bound at the exact posterior
  (where the bound touches log p(x) from below, so its gradient is that of log p(x)).
* Monte-Carlo checks: the mean of R = 4000 independent draws (one vmapped axis under one
  jit, key r = fold_in(key, r)) must lie within MC_STANDARD_ERRORS = 5 standard errors of the
  reference, the standard error being the sample std (ddof = 1) / sqrt(R) per parameter. The
  keys are fixed, so each check is deterministic; for an unbiased estimator a |z| > 5 has
  probability 5.7e-7 per parameter (< 1e-3 over all ~50 parameters and checks here).
* Exact identities between estimators (same draws by construction): DReG with K = 1 is STL
  with L = 1; standard IWAE with K = 1 is the reparameterised Monte-Carlo-KL ELBO; DReG's
  decoder gradient is the standard IWAE one, draw by draw.

Every test except the bad-input and SNR ones runs in float32 and in float64 (the `model`
fixture enters `jax.enable_x64(True)` for float64, as `test_elbo_float64.py` does).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vaejax.elbo import elbo, iwae_bound, reparameterize
from vaejax.estimators import (
    GradientEstimate,
    dreg_iwae,
    gradient_snr,
    reparameterized_elbo,
    reparameterized_iwae,
    stl_elbo,
)

NOISE_STD = 0.75
NUM_KEYS = 4000
MC_STANDARD_ERRORS = 5.0
# Per dtype: `identity` for two computations of the same number (values of ~10 nats, or
# gradients of ~1, from sums of ~20 terms: float32 rounding ~1e-6, float64 ~1e-15), `zero`
# for a gradient that vanishes in exact arithmetic, relative to the scale of the comparison
# estimator's std (float32 posterior parameters are rounded at ~6e-8 relative, so such a
# gradient is ~1e-6 of its scale, not 0).
TOLERANCES = {
    np.float32: {"identity": 1e-5, "zero": 1e-4},
    np.float64: {"identity": 1e-12, "zero": 1e-10},
}
# A q away from the posterior (every gradient component non-trivial) and one close to it.
WORSE_Q = {"matrix_noise": 0.3, "mean_shift": 0.5, "var_scale": 3.0}
NEAR_POSTERIOR_Q = {"matrix_noise": 0.05, "mean_shift": 0.1, "var_scale": 1.3}


# --------------------------------------------------------------------------- #
# The linear-Gaussian model.
# --------------------------------------------------------------------------- #


def encode(encoder, x):
    """Linear Gaussian encoder: mean [B, Z] = x A^T + c, log_var [B, Z] = v for every example."""
    mean = jnp.matmul(x, encoder["A"].T, precision="highest") + encoder["c"]
    return mean, jnp.broadcast_to(encoder["log_var"], mean.shape)


def make_log_likelihood(x):
    """(decoder {W [D, Z], b [D]}, z [B, Z]) -> [B]: log N(x; W z + b, s^2 I), written out."""

    def log_likelihood(decoder, z):
        mean = jnp.matmul(z, decoder["W"].T, precision="highest") + decoder["b"]
        residual = (x - mean) / NOISE_STD
        terms = -0.5 * math.log(2 * math.pi) - math.log(NOISE_STD) - 0.5 * jnp.square(residual)
        return jnp.sum(terms, axis=-1)

    return log_likelihood


def expected_elbo_per_example(encoder, decoder, x):
    """E_q[log p(x|z)] - KL(q || N(0, I)) in closed form: [B]."""
    mean, log_var = encode(encoder, x)
    var = jnp.exp(log_var)
    weight, bias = decoder["W"], decoder["b"]
    residual = x - bias - jnp.matmul(mean, weight.T, precision="highest")
    column_norms = jnp.sum(jnp.square(weight), axis=0)  # ||W_:j||^2, [Z]
    recon = -0.5 * x.shape[-1] * math.log(2 * math.pi * NOISE_STD**2) - (
        jnp.sum(jnp.square(residual), -1) + jnp.sum(var * column_norms, -1)
    ) / (2 * NOISE_STD**2)
    kl = 0.5 * jnp.sum(jnp.square(mean) + var - 1.0 - log_var, -1)
    return recon - kl


def log_marginal_per_example(decoder, x):
    """log N(x; b, W W^T + s^2 I) with jax.scipy, differentiable in the decoder: [B]."""
    weight = decoder["W"]
    covariance = jnp.matmul(weight, weight.T, precision="highest") + NOISE_STD**2 * jnp.eye(
        weight.shape[0], dtype=weight.dtype
    )
    return jax.scipy.stats.multivariate_normal.logpdf(x, decoder["b"], covariance)


@dataclasses.dataclass(frozen=True)
class Model:
    dtype: type
    x: jax.Array  # [B, D]
    decoder: dict  # W [D, Z] (W^T W diagonal), b [D]
    log_marginal: np.ndarray  # [B] float64, scipy
    posterior_mean: np.ndarray  # [B, Z] float64
    posterior_var: np.ndarray  # [Z] float64
    posterior_matrix: np.ndarray  # [Z, D] A*
    posterior_offset: np.ndarray  # [Z] c*

    @property
    def log_likelihood_fn(self):
        return make_log_likelihood(self.x)

    def encoder(self, matrix_noise=0.0, mean_shift=0.0, var_scale=1.0):
        """Encoder parameters: the exact posterior's, optionally perturbed."""
        noise = np.random.default_rng(1).normal(size=self.posterior_matrix.shape)
        return {
            "A": jnp.asarray(self.posterior_matrix + matrix_noise * noise, self.dtype),
            "c": jnp.asarray(self.posterior_offset + mean_shift, self.dtype),
            "log_var": jnp.asarray(np.log(self.posterior_var * var_scale), self.dtype),
        }


def make_model(dtype, *, seed=0, batch=4, latent_dim=3, data_dim=6) -> Model:
    rng = np.random.default_rng(seed)
    weight = np.zeros((data_dim, latent_dim))
    rows = data_dim // latent_dim
    for j in range(latent_dim):
        weight[j * rows : (j + 1) * rows, j] = rng.normal(size=rows)
    weight = weight[rng.permutation(data_dim)].astype(dtype)
    bias = rng.normal(size=data_dim).astype(dtype)
    x = (bias + 1.5 * rng.normal(size=(batch, data_dim))).astype(dtype)
    w64, b64, x64 = (np.asarray(a, np.float64) for a in (weight, bias, x))
    gram = w64.T @ w64
    assert np.array_equal(gram, np.diag(np.diag(gram)))  # orthogonal columns
    covariance = w64 @ w64.T + NOISE_STD**2 * np.eye(data_dim)
    posterior_var = 1.0 / (1.0 + np.diag(gram) / NOISE_STD**2)  # diag S
    matrix = posterior_var[:, None] * w64.T / NOISE_STD**2  # A* = S W^T / s^2
    return Model(
        dtype=dtype,
        x=jnp.asarray(x),
        decoder={"W": jnp.asarray(weight), "b": jnp.asarray(bias)},
        log_marginal=np.atleast_1d(stats.multivariate_normal.logpdf(x64, b64, covariance)),
        posterior_mean=(x64 - b64) @ matrix.T,
        posterior_var=posterior_var,
        posterior_matrix=matrix,
        posterior_offset=-matrix @ b64,
    )


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def model(request):
    if request.param is np.float64:
        with jax.enable_x64(True):
            yield make_model(np.float64)
    else:
        yield make_model(np.float32)


@pytest.fixture(scope="module")
def model_float32():
    return make_model(np.float32)


# --------------------------------------------------------------------------- #
# Draws of the estimators: R keys as one vmapped axis under one jit.
# --------------------------------------------------------------------------- #


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _grads(estimator, key, encoder, decoder, x, **options):
    """Flattened (encoder grads, decoder grads) of one estimator's surrogate at one key."""
    ll_fn = make_log_likelihood(x)

    def surrogate(enc, dec):
        return estimator(key, *encode(enc, x), ll_fn, dec, **options).surrogate

    enc_grads, dec_grads = jax.grad(surrogate, argnums=(0, 1))(encoder, decoder)
    return {"encoder": _flat(enc_grads), "decoder": _flat(dec_grads)}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _keys(seed, num_keys):
    key = jax.random.key(seed)
    return jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(num_keys))


def _over_keys(per_key):
    """jit(vmap over keys) of ``per_key(key, encoder, decoder, x, num_samples)``."""
    return jax.jit(jax.vmap(per_key, in_axes=(0, None, None, None, None)),
                   static_argnums=(4,))


@_over_keys
def elbo_draws(key, encoder, decoder, x, num_samples):
    return {
        "reparameterized_analytic": _grads(reparameterized_elbo, key, encoder, decoder, x,
                                           num_samples=num_samples, kl="analytic"),
        "reparameterized_monte_carlo": _grads(reparameterized_elbo, key, encoder, decoder, x,
                                              num_samples=num_samples, kl="monte_carlo"),
        "stl": _grads(stl_elbo, key, encoder, decoder, x, num_samples=num_samples),
    }


@_over_keys
def iwae_draws(key, encoder, decoder, x, num_samples):
    return {
        "iwae": _grads(reparameterized_iwae, key, encoder, decoder, x, num_samples=num_samples),
        "dreg": _grads(dreg_iwae, key, encoder, decoder, x, num_samples=num_samples),
    }


@_over_keys
def single_sample_draws(key, encoder, decoder, x, num_samples):
    return {
        "dreg": _grads(dreg_iwae, key, encoder, decoder, x, num_samples=num_samples),
        "stl": _grads(stl_elbo, key, encoder, decoder, x, num_samples=num_samples),
        "iwae": _grads(reparameterized_iwae, key, encoder, decoder, x, num_samples=num_samples),
        "reparameterized_monte_carlo": _grads(reparameterized_elbo, key, encoder, decoder, x,
                                              num_samples=num_samples, kl="monte_carlo"),
    }


@jax.jit
def _exact_elbo_gradient(encoder, decoder, x):
    enc, dec = jax.grad(
        lambda e, d: jnp.mean(expected_elbo_per_example(e, d, x)), argnums=(0, 1)
    )(encoder, decoder)
    return _flat(enc), _flat(dec)


def exact_elbo_gradient(model, encoder):
    """jax.grad of the closed-form expected ELBO (batch mean): encoder and decoder parts."""
    enc, dec = _exact_elbo_gradient(encoder, model.decoder, model.x)
    return {"encoder": np.asarray(enc, np.float64), "decoder": np.asarray(dec, np.float64)}


@jax.jit
def _log_marginal_gradient(decoder, x):
    return _flat(jax.grad(lambda d: jnp.mean(log_marginal_per_example(d, x)))(decoder))


def log_marginal_decoder_gradient(model):
    """grad_theta of the batch-mean exact log p_theta(x), flattened like the decoder grads."""
    return np.asarray(_log_marginal_gradient(model.decoder, model.x), np.float64)


def assert_unbiased(samples, expected, dtype, what):
    """Sample mean within MC_STANDARD_ERRORS standard errors (std / sqrt(R)) of ``expected``."""
    samples = np.asarray(samples, np.float64)
    expected = np.broadcast_to(np.asarray(expected, np.float64), samples.shape[1:])
    standard_error = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    # Floor for components whose estimator is exact (zero variance): rounding only.
    floor = TOLERANCES[dtype]["identity"] * (1.0 + np.abs(expected))
    z_scores = np.abs(samples.mean(axis=0) - expected) / np.maximum(standard_error, floor)
    assert np.all(z_scores < MC_STANDARD_ERRORS), (what, np.max(z_scores), z_scores)


def assert_identical(got, expected, dtype, what):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCES[dtype]["identity"] * scale,
                               err_msg=what)


# --------------------------------------------------------------------------- #
# 1. The references.
# --------------------------------------------------------------------------- #


def test_closed_forms_match_scipy_and_each_other(model):
    # log p(x) in jax against scipy; the closed-form expected ELBO equals log p(x) at the exact
    # posterior and log p(x) - KL(q || p(z|x)) (diagonal Gaussians, numpy float64) elsewhere.
    # The ELBO cancels terms of ~20 nats down to log p(x): 10x the identity tolerance.
    tol = TOLERANCES[model.dtype]["identity"]
    scale = float(np.max(np.abs(model.log_marginal)))
    np.testing.assert_allclose(jax.jit(log_marginal_per_example)(model.decoder, model.x),
                               model.log_marginal, rtol=0, atol=tol * scale)
    expected_elbo = jax.jit(expected_elbo_per_example)
    at_posterior = expected_elbo(model.encoder(), model.decoder, model.x)
    np.testing.assert_allclose(at_posterior, model.log_marginal, rtol=0, atol=10 * tol * scale)

    worse = model.encoder(**WORSE_Q)
    mean, log_var = (np.asarray(a, np.float64) for a in encode(worse, model.x))
    var, post_var = np.exp(log_var), model.posterior_var
    kl_to_posterior = 0.5 * np.sum(
        var / post_var + np.square(mean - model.posterior_mean) / post_var - 1
        + np.log(post_var / var), axis=-1)
    np.testing.assert_allclose(expected_elbo(worse, model.decoder, model.x),
                               model.log_marginal - kl_to_posterior, rtol=0,
                               atol=10 * tol * scale)


# --------------------------------------------------------------------------- #
# 2. Values: the bounds are those of vaejax.elbo with the same key.
# --------------------------------------------------------------------------- #


def test_bounds_and_surrogates_equal_vaejax_elbo_bounds(model):
    # Reference: vaejax.elbo.elbo / iwae_bound with the same key and the decoder closed over.
    # The two reparameterised estimators call them, so they are bit-identical; STL and DReG
    # recompute the same sums (rounding). Each surrogate's value is the batch mean of its bound.
    # One jit for all (eager op-by-op dispatch would dominate the test's time).
    ll_fn = model.log_likelihood_fn

    @jax.jit
    def bounds_and_estimates(key, encoder, decoder):
        mean, log_var = encode(encoder, model.x)
        closed = lambda z: ll_fn(decoder, z)  # noqa: E731
        references = (
            elbo(key, mean, log_var, closed, num_samples=3).elbo,
            elbo(key, mean, log_var, closed, num_samples=3, kl="monte_carlo").elbo,
            iwae_bound(key, mean, log_var, closed, num_samples=7, chunk_size=3),
        )
        return references, {
            "reparameterized_elbo": reparameterized_elbo(key, mean, log_var, ll_fn, decoder,
                                                         num_samples=3),
            "reparameterized_elbo_mc": reparameterized_elbo(
                key, mean, log_var, ll_fn, decoder, num_samples=3, kl="monte_carlo"),
            "stl_elbo": stl_elbo(key, mean, log_var, ll_fn, decoder, num_samples=3),
            "reparameterized_iwae": reparameterized_iwae(key, mean, log_var, ll_fn, decoder,
                                                         num_samples=7, chunk_size=3),
            "dreg_iwae": dreg_iwae(key, mean, log_var, ll_fn, decoder, num_samples=7),
        }

    (elbo_analytic, elbo_mc, iwae), estimates = bounds_and_estimates(
        jax.random.key(3), model.encoder(**WORSE_Q), model.decoder)
    np.testing.assert_array_equal(estimates["reparameterized_elbo"].bound, elbo_analytic)
    np.testing.assert_array_equal(estimates["reparameterized_elbo_mc"].bound, elbo_mc)
    np.testing.assert_array_equal(estimates["reparameterized_iwae"].bound, iwae)
    assert_identical(estimates["stl_elbo"].bound, elbo_mc, model.dtype, "stl")
    assert_identical(estimates["dreg_iwae"].bound, iwae, model.dtype, "dreg")
    assert not np.allclose(elbo_mc, iwae)  # the two families really are different bounds
    for name, estimate in estimates.items():
        assert isinstance(estimate, GradientEstimate)
        assert estimate.bound.shape == (4,) and estimate.bound.dtype == model.dtype, name
        assert estimate.surrogate.shape == () and estimate.surrogate.dtype == model.dtype, name
        assert_identical(estimate.surrogate, jnp.mean(estimate.bound), model.dtype, name)


def test_bfloat16_posterior_follows_vaejax_elbo_dtypes(model_float32):
    # As vaejax.elbo documents: z is computed in float32 and the decoder sees it rounded to
    # bfloat16, the bounds are float32 and equal vaejax.elbo's with the same key (the same
    # float32 arithmetic, so float32 rounding), gradients come back in bfloat16.
    model = model_float32
    mean, log_var = (a.astype(jnp.bfloat16) for a in encode(model.encoder(**WORSE_Q), model.x))
    seen = []

    def ll_fn(decoder, z):
        seen.append(z.dtype)
        return model.log_likelihood_fn(decoder, z.astype(jnp.float32))

    key, decoder = jax.random.key(9), model.decoder
    closed = lambda z: ll_fn(decoder, z)  # noqa: E731

    @jax.jit
    def run(m, lv):
        stl_grad, stl = jax.grad(lambda a: (lambda e: (e.surrogate, e))(
            stl_elbo(key, a, lv, ll_fn, decoder, num_samples=3)), has_aux=True)(m)
        dreg = dreg_iwae(key, m, lv, ll_fn, decoder, num_samples=5)
        references = (elbo(key, m, lv, closed, num_samples=3, kl="monte_carlo").elbo,
                      iwae_bound(key, m, lv, closed, num_samples=5))
        return stl_grad, stl, dreg, references

    stl_grad, stl, dreg, (elbo_mc, iwae) = run(mean, log_var)
    assert set(seen) == {jnp.dtype(jnp.bfloat16)}
    assert stl.bound.dtype == dreg.bound.dtype == jnp.float32
    assert stl_grad.dtype == jnp.bfloat16
    assert_identical(stl.bound, elbo_mc, np.float32, "stl")
    assert_identical(dreg.bound, iwae, np.float32, "dreg")


# --------------------------------------------------------------------------- #
# 3. Unbiasedness.
# --------------------------------------------------------------------------- #


def test_elbo_estimators_are_unbiased_for_the_closed_form_gradient(model):
    # Reference: jax.grad of the closed-form expected ELBO (batch mean), w.r.t. the encoder
    # (A, c, v) and the decoder (W, b), at a q away from the posterior; L = 2 samples.
    encoder = model.encoder(**WORSE_Q)
    draws = elbo_draws(_keys(0, NUM_KEYS), encoder, model.decoder, model.x, 2)
    exact = exact_elbo_gradient(model, encoder)
    for name, grads in draws.items():
        for part in ("encoder", "decoder"):
            assert_unbiased(grads[part], exact[part], model.dtype, f"{name} {part}")
    # Not a vacuous check: the reference gradient is far from zero in standard errors.
    stl_encoder = np.asarray(draws["stl"]["encoder"], np.float64)
    standard_error = stl_encoder.std(0, ddof=1) / math.sqrt(NUM_KEYS)
    assert np.max(np.abs(exact["encoder"]) / standard_error) > 50


def test_iwae_estimators_agree_in_mean_and_share_the_decoder_gradient(model):
    # DReG and standard IWAE estimate the same gradient (Tucker et al. eq. 6 is an identity in
    # expectation): the mean of their paired difference (same keys, so same z_k) is within
    # 5 standard errors of 0. DReG's decoder gradient is the standard one draw by draw.
    encoder = model.encoder(**WORSE_Q)
    draws = iwae_draws(_keys(1, NUM_KEYS), encoder, model.decoder, model.x, 8)
    difference = np.asarray(draws["dreg"]["encoder"], np.float64) - np.asarray(
        draws["iwae"]["encoder"], np.float64)
    assert_unbiased(difference, 0.0, model.dtype, "dreg - iwae encoder")
    assert_identical(draws["dreg"]["decoder"], draws["iwae"]["decoder"], model.dtype, "decoder")
    # The encoder gradients do differ per draw (else the check above would be vacuous).
    assert np.max(np.abs(difference)) > 1e-2


def test_iwae_gradients_at_the_exact_posterior(model):
    # At q = p(z|x) every importance weight is p(x), IWAE_K = log p(x) for every draw, and the
    # bound is maximal in the encoder: the expected encoder gradient is 0 and the expected
    # decoder gradient is grad_theta log p_theta(x) (closed form, jax.scipy). DReG's encoder
    # gradient is 0 draw by draw (d/dz log p(x, z)/q(z) = 0), the standard one only on average.
    draws = iwae_draws(_keys(2, NUM_KEYS), model.encoder(), model.decoder, model.x, 8)
    reference = log_marginal_decoder_gradient(model)
    for name in ("iwae", "dreg"):
        assert_unbiased(draws[name]["decoder"], reference, model.dtype, f"{name} decoder")
    assert_unbiased(draws["iwae"]["encoder"], 0.0, model.dtype, "iwae encoder")
    iwae_std = np.asarray(draws["iwae"]["encoder"], np.float64).std(0, ddof=1)
    assert np.min(iwae_std) > 1e-3
    zero_atol = TOLERANCES[model.dtype]["zero"] * float(np.max(iwae_std))
    np.testing.assert_allclose(draws["dreg"]["encoder"], 0.0, rtol=0, atol=zero_atol)


# --------------------------------------------------------------------------- #
# 4. Variance.
# --------------------------------------------------------------------------- #


def test_stl_encoder_gradient_has_zero_variance_at_the_exact_posterior(model):
    # At q = p(z|x), log p(x, z) - log q(z|x) = log p(x) for every z, so STL's path derivative
    # vanishes draw by draw; the standard reparameterised estimator (both KL forms) is noisy
    # there. The decoder gradients stay unbiased for grad_theta log p_theta(x).
    draws = elbo_draws(_keys(3, NUM_KEYS), model.encoder(), model.decoder, model.x, 2)
    reference_std = np.asarray(draws["reparameterized_analytic"]["encoder"], np.float64).std(
        0, ddof=1)
    assert np.min(reference_std) > 1e-3
    assert np.min(np.asarray(draws["reparameterized_monte_carlo"]["encoder"]).std(0)) > 1e-3
    zero_atol = TOLERANCES[model.dtype]["zero"] * float(np.max(reference_std))
    np.testing.assert_allclose(draws["stl"]["encoder"], 0.0, rtol=0, atol=zero_atol)
    reference = log_marginal_decoder_gradient(model)
    for name, grads in draws.items():
        assert_unbiased(grads["decoder"], reference, model.dtype, f"{name} decoder")
        assert_unbiased(grads["encoder"], 0.0, model.dtype, f"{name} encoder")


def test_dreg_encoder_gradient_has_lower_variance_and_higher_snr_than_iwae(model_float32):
    # Near the posterior, DReG's encoder gradient is much less noisy than IWAE's (Tucker et al.
    # figure 1), and its SNR grows with K where IWAE's falls (Rainforth et al. section 3).
    # Measured with gradient_snr over R = 1000 keys, K = 16 and 64 in one jit. Measured: the
    # DReG/IWAE std ratio is ~0.017 (K = 16) and ~0.004 (K = 64) for every encoder parameter,
    # the mean SNR 3.0 and 6.0 for DReG against 0.08 and 0.035 for IWAE. The sample std of
    # R draws is within ~5 % (1 / sqrt(2 R)) of the truth; the checks leave a factor >= 2 of
    # margin on every quantity (IWAE's SNR at K = 64 is near the floor sqrt(2 / (pi R)) = 0.025
    # of |mean| / std for a zero-mean gradient, so its fall with K is not asserted). Float32
    # only: a variance comparison has nothing to gain from float64.
    model = model_float32
    encoder = model.encoder(**NEAR_POSTERIOR_Q)
    ll_fn = model.log_likelihood_fn
    estimators = {"iwae": reparameterized_iwae, "dreg": dreg_iwae}
    counts = (16, 64)

    def encoder_gradient(estimator, num_samples):
        def gradient_fn(key):
            return jax.grad(lambda enc: estimator(
                key, *encode(enc, model.x), ll_fn, model.decoder, num_samples=num_samples
            ).surrogate)(encoder)
        return gradient_fn

    results = jax.jit(lambda key: {
        (name, k): gradient_snr(key, encoder_gradient(estimator, k), num_keys=1000)
        for name, estimator in estimators.items() for k in counts
    })(jax.random.key(4))
    std = {key: np.asarray(_flat(r.std)) for key, r in results.items()}
    mean_snr = {key: float(jnp.mean(_flat(r.snr))) for key, r in results.items()}
    for k in counts:
        assert np.all(std["dreg", k] < 0.1 * std["iwae", k]), (k, std["dreg", k] / std["iwae", k])
        assert mean_snr["dreg", k] > 10 * mean_snr["iwae", k], (k, mean_snr)
    assert mean_snr["dreg", 64] > 1.4 * mean_snr["dreg", 16], mean_snr  # ~sqrt(4) = 2 expected


# --------------------------------------------------------------------------- #
# 5. Exact identities between estimators.
# --------------------------------------------------------------------------- #


def test_single_sample_identities(model):
    # With one sample, w~ = 1: DReG's gradient is STL's (sg(w~^2) = 1, same sg on q), and the
    # standard IWAE bound is the Monte-Carlo-KL ELBO (same z from fold_in(key, 0)). Per key.
    encoder = model.encoder(**WORSE_Q)
    draws = single_sample_draws(_keys(5, 16), encoder, model.decoder, model.x, 1)
    for part in ("encoder", "decoder"):
        assert_identical(draws["dreg"][part], draws["stl"][part], model.dtype, part)
        assert_identical(draws["iwae"][part], draws["reparameterized_monte_carlo"][part],
                         model.dtype, part)
    stl_minus_standard = np.asarray(draws["stl"]["encoder"]) - np.asarray(
        draws["reparameterized_monte_carlo"]["encoder"])
    assert np.max(np.abs(stl_minus_standard)) > 1e-2  # the two pairs are different estimators


def test_dreg_gradients_equal_tucker_eq6_and_the_iwae_decoder_gradient_written_out():
    # Reference: numpy float64 at the same draws z_k = m + s eps_k (s = exp(log_var / 2)) for a
    # decoder p(x|z) = N(x; theta z, I), K = 4, one example (scipy.stats.norm for log w_k):
    # * encoder (Tucker et al. eq. 6): d/dm = sum_k w~_k^2 g_k and d/dlog_var = sum_k w~_k^2
    #   g_k (z_k - m) / 2, with g_k = d/dz [log p(x|z) + log p(z) - log q(z)] at z_k, q's
    #   parameters held fixed: theta (x - theta z) - z + (z - m) / s^2;
    # * decoder (the standard IWAE gradient, weights w~_k, not w~_k^2): sum_k w~_k
    #   d/dtheta log p(x | z_k) = sum_k w~_k sum_j (x_j - theta z_kj) z_kj. This is the part
    #   that needs decoder_params passed explicitly: theta also moves log w_k's z-derivative.
    key = jax.random.key(6)
    x = jnp.asarray([[0.3, -1.2]], jnp.float32)
    mean, log_var = jnp.asarray([[0.4, 0.1]]), jnp.asarray([[-0.5, 0.2]])
    theta = 1.7

    def ll_fn(t, z):
        return jnp.sum(-0.5 * math.log(2 * math.pi) - 0.5 * jnp.square(x - t * z), -1)

    grads = jax.jit(jax.grad(
        lambda m, lv, t: dreg_iwae(key, m, lv, ll_fn, t, num_samples=4).surrogate,
        argnums=(0, 1, 2)))(mean, log_var, jnp.asarray(theta))

    z = np.asarray(reparameterize(key, mean, log_var, num_samples=4), np.float64)[:, 0]  # [K, Z]
    x64, m64, v64 = (np.asarray(a, np.float64)[0] for a in (x, mean, jnp.exp(log_var)))
    log_w = (stats.norm.logpdf(x64, theta * z).sum(-1) + stats.norm.logpdf(z).sum(-1)
             - stats.norm.logpdf(z, m64, np.sqrt(v64)).sum(-1))
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    g = theta * (x64 - theta * z) - z + (z - m64) / v64  # [K, Z]
    squared = np.square(weights)[:, None]
    np.testing.assert_allclose(grads[0][0], np.sum(squared * g, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1][0], np.sum(squared * g * (z - m64) / 2, 0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(grads[2], np.sum(weights * np.sum((x64 - theta * z) * z, -1)),
                               rtol=1e-5)


# --------------------------------------------------------------------------- #
# 6. gradient_snr.
# --------------------------------------------------------------------------- #


def test_gradient_snr_recovers_known_mean_and_std():
    # Draws g = mu + sigma * N(0, 1) per component: the mean is within 5 SE (sigma / sqrt(R)),
    # the std within 5 SE (sigma / sqrt(2 (R - 1)) for Gaussian data) and the SNR within 5 SE
    # (delta method: sqrt((1 + SNR^2 / 2) / R)) of mu, sigma and |mu| / sigma. A constant
    # component has std 0 (to rounding) and a huge SNR, a zero one SNR NaN (0 / 0, documented).
    mu = jnp.asarray([2.0, -0.5, 0.0, 10.0])
    sigma = jnp.asarray([1.0, 2.0, 3.0, 0.5])

    def gradient_fn(key):
        return {"noisy": mu + sigma * jax.random.normal(key, (4,)),
                "constant": jnp.asarray([1.5, 0.0])}

    num_keys = NUM_KEYS
    result = jax.jit(lambda key: gradient_snr(key, gradient_fn, num_keys=num_keys))(
        jax.random.key(7))
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    snr = np.abs(mu) / sigma
    z_mean = np.abs(np.asarray(result.mean["noisy"]) - mu) / (sigma / math.sqrt(num_keys))
    z_std = np.abs(np.asarray(result.std["noisy"]) - sigma) / (
        sigma / math.sqrt(2 * (num_keys - 1)))
    z_snr = np.abs(np.asarray(result.snr["noisy"]) - snr) / np.sqrt((1 + snr**2 / 2) / num_keys)
    for what, z_scores in (("mean", z_mean), ("std", z_std), ("snr", z_snr)):
        assert np.all(z_scores < MC_STANDARD_ERRORS), (what, z_scores)
    # The mean of R equal float32 values is that value to rounding (XLA divides by R as a
    # multiplication by 1/R), so the std of a constant is ~1e-7 of it, not always 0.
    assert float(result.std["constant"][0]) <= 1e-6 and float(result.snr["constant"][0]) > 1e6
    assert float(result.std["constant"][1]) == 0.0 and np.isnan(result.snr["constant"][1])


def test_gradient_snr_uses_fold_in_keys_ddof_one_and_batches_alike():
    # Reference: a Python loop over r of gradient_fn(fold_in(key, r)), numpy mean / std(ddof=1).
    key = jax.random.key(8)

    def gradient_fn(k):
        return {"a": jax.random.normal(k, (3,)), "b": jax.random.uniform(k, (2, 2))}

    draws = [jax.jit(gradient_fn)(jax.random.fold_in(key, r)) for r in range(5)]
    result, batched = jax.jit(lambda k: (gradient_snr(k, gradient_fn, num_keys=5),
                                         gradient_snr(k, gradient_fn, num_keys=5, batch_size=2)))(
        key)
    for name in ("a", "b"):
        stack = np.stack([np.asarray(d[name], np.float64) for d in draws])
        np.testing.assert_allclose(result.mean[name], stack.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.std[name], stack.std(0, ddof=1), rtol=1e-5)
        np.testing.assert_allclose(result.snr[name],
                                   np.abs(stack.mean(0)) / stack.std(0, ddof=1), rtol=1e-4)
        np.testing.assert_allclose(batched.std[name], result.std[name], rtol=1e-6)


# --------------------------------------------------------------------------- #
# 7. Bad input.
# --------------------------------------------------------------------------- #

_GOOD = (jnp.zeros((2, 3)), jnp.zeros((2, 3)))
_DECODER = {"w": jnp.ones(3)}


def _ll(decoder, z):
    return jnp.sum(z * decoder["w"], -1)


_ESTIMATORS = {
    "reparameterized_elbo": (reparameterized_elbo, {}),
    "stl_elbo": (stl_elbo, {}),
    "reparameterized_iwae": (reparameterized_iwae, {"num_samples": 3}),
    "dreg_iwae": (dreg_iwae, {"num_samples": 3}),
}


@pytest.mark.parametrize("name", list(_ESTIMATORS))
@pytest.mark.parametrize("num_samples", [0, -1, 1.5, True, "3"])
def test_bad_num_samples_raises(name, num_samples):
    estimator, _ = _ESTIMATORS[name]
    with pytest.raises(ValueError, match="`num_samples`"):
        estimator(jax.random.key(0), *_GOOD, _ll, _DECODER, num_samples=num_samples)


@pytest.mark.parametrize("name", list(_ESTIMATORS))
def test_bad_posterior_raises(name):
    estimator, options = _ESTIMATORS[name]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`posterior_mean` and `posterior_log_var`"):
        estimator(key, jnp.zeros((2, 3)), jnp.zeros((2, 4)), _ll, _DECODER, **options)
    with pytest.raises(ValueError, match="`posterior_mean`"):
        estimator(key, np.zeros((2, 3), np.int32), _GOOD[1], _ll, _DECODER, **options)
    with pytest.raises(ValueError, match="posterior_mean"):  # also when traced under jit
        jax.jit(lambda m, lv: estimator(key, m, lv, _ll, _DECODER, **options).surrogate)(
            jnp.zeros((2, 3)), jnp.zeros((3, 3)))


@pytest.mark.parametrize("name", list(_ESTIMATORS))
@pytest.mark.parametrize("bad_ll", [
    lambda decoder, z: z * decoder["w"],  # [B, Z]: forgot to sum over the event
    lambda decoder, z: jnp.sum(z * decoder["w"]),  # []: summed over the batch too
    lambda decoder, z: (jnp.sum(z, -1) > 0),  # [B] bool
], ids=["per_dimension", "batch_summed", "bool"])
def test_bad_log_likelihood_fn_output_raises(name, bad_ll):
    estimator, options = _ESTIMATORS[name]
    with pytest.raises(ValueError, match="`log_likelihood_fn`"):
        estimator(jax.random.key(0), *_GOOD, bad_ll, _DECODER, **options)


def test_bad_kl_and_chunk_size_raise():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`kl`"):
        reparameterized_elbo(key, *_GOOD, _ll, _DECODER, kl="mc")
    with pytest.raises(ValueError, match="`chunk_size`"):
        reparameterized_iwae(key, *_GOOD, _ll, _DECODER, num_samples=3, chunk_size=0)


@pytest.mark.parametrize("bad, match", [
    (dict(num_keys=1), "`num_keys`"),
    (dict(num_keys=2.0), "`num_keys`"),
    (dict(num_keys=True), "`num_keys`"),
    (dict(num_keys=10, batch_size=0), "`batch_size`"),
])
def test_bad_gradient_snr_arguments_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        gradient_snr(jax.random.key(0), lambda k: jax.random.normal(k, (2,)), **bad)
