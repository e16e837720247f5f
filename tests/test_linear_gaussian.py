"""Tests of `vaejax.linear_gaussian` (pPCA and the linear VAE) against independent references.

References, named in each test: `scipy.stats.multivariate_normal.logpdf` (the marginal
N(mu, W W^T + sigma^2 I)); `numpy.linalg.eigh` / `numpy.cov` (the spectrum); scikit-learn's
`PCA`, an independent pPCA implementation (`get_covariance`, `score_samples`, `noise_variance_`);
numerical optimisation with `scipy.optimize` (L-BFGS over W, `minimize_scalar` over sigma);
Monte-Carlo estimates from `vaejax.elbo.elbo` / `vaejax.elbo.iwae_bound` (their own samples);
and `sklearn.datasets.load_digits` for the digits spectrum.

Float64 tests run inside `jax.enable_x64(True)` (the `float64` fixture); the others run at the
default float32 precision.

Sources: Tipping & Bishop, Probabilistic PCA (JRSS-B 1999); Lucas, Tucker, Grosse & Norouzi,
Don't Blame the ELBO! A Linear VAE Perspective on Posterior Collapse (arXiv 1911.02469);
Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders (arXiv 1509.00519).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from vaejax import kl as kl_lib
from vaejax import likelihoods as lik
from vaejax import linear_gaussian as lg
from vaejax.elbo import elbo, iwae_bound

EPS32 = float(np.finfo(np.float32).eps)  # 1.2e-7
EPS64 = float(np.finfo(np.float64).eps)  # 2.2e-16
# A Monte-Carlo mean is within 5 standard errors of its expectation except w.p. ~6e-7.
MC_STANDARD_ERRORS = 5.0

ppca_log_likelihood = jax.jit(lg.ppca_log_likelihood)
linear_vae_elbo = jax.jit(lg.linear_vae_elbo)
exact_posterior = jax.jit(lg.exact_posterior)
data_covariance_eigen = jax.jit(lg.data_covariance_eigen, static_argnames=["ddof"])
ppca_mle = jax.jit(lg.ppca_mle, static_argnames=["num_latents"])
optimal_linear_vae = jax.jit(lg.optimal_linear_vae, static_argnames=["num_latents"])


@jax.jit
def vae_summary(x, eig, sigma):
    """The optimal linear VAE (k = D) at sigma, its mean KL per unit (vaejax.kl), its
    closed-form ELBO, the pPCA log-likelihood and the predicted number of active units."""
    params = lg.optimal_linear_vae(*eig, sigma, num_latents=x.shape[-1])
    mean, log_var = lg.linear_vae_encode(x, params)
    kl_per_unit = jnp.mean(kl_lib.kl_standard_normal(mean, log_var, event_ndims=0), axis=0)
    elbo_value = lg.linear_vae_elbo(x, params, sigma)
    log_lik = lg.ppca_log_likelihood(x, params.decoder_weight, params.decoder_bias, sigma)
    return params, kl_per_unit, elbo_value, log_lik, lg.predicted_active_units(eig.eigvals, sigma)


@pytest.fixture
def float64():
    before = jax.config.jax_enable_x64
    with jax.enable_x64(True):
        yield np.float64
    assert jax.config.jax_enable_x64 == before


def random_orthogonal(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def planted_data(seed=0, num_examples=400, spectrum=(4.0, 2.5, 1.5, 0.6, 0.3, 0.2, 0.1, 0.05)):
    """x = mu + Q diag(sqrt(spectrum)) g, g ~ N(0, I): sample eigenvalues near `spectrum`."""
    rng = np.random.default_rng(seed)
    spectrum = np.asarray(spectrum)
    basis = random_orthogonal(rng, len(spectrum))
    mu = rng.normal(size=len(spectrum))
    x = mu + (rng.normal(size=(num_examples, len(spectrum))) * np.sqrt(spectrum)) @ basis.T
    return x


def random_model(seed=0, data_dim=10, num_latents=3, sigma=0.5, num_examples=64):
    """A generic (non-orthogonal W) linear-Gaussian model and data, all float64 numpy."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(data_dim, num_latents))
    mu = rng.normal(size=data_dim)
    z = rng.normal(size=(num_examples, num_latents))
    x = mu + z @ weight.T + sigma * rng.normal(size=(num_examples, data_dim))
    return x, weight, mu, sigma


def scipy_log_marginal(x, weight, mu, sigma):
    """Reference: scipy's Gaussian log-density of the pPCA marginal (Tipping & Bishop 1999)."""
    x, weight, mu = (np.asarray(a, np.float64) for a in (x, weight, mu))
    sigma = float(sigma)
    cov = weight @ weight.T + sigma**2 * np.eye(len(mu))
    return np.atleast_1d(stats.multivariate_normal.logpdf(x, mu, cov))


def cond_of_gram(weight, sigma):
    """Condition number of I + W^T W / sigma^2, the k x k matrix the implementation factors."""
    weight = np.asarray(weight, np.float64)
    gram = np.eye(weight.shape[1]) + weight.T @ weight / float(sigma) ** 2
    return float(np.linalg.cond(gram))


# --------------------------------------------------------------------------- #
# ppca_log_likelihood against scipy.
# --------------------------------------------------------------------------- #


def test_ppca_log_likelihood_matches_scipy_float64(float64):
    # Reference: scipy.stats.multivariate_normal.logpdf(x, mu, W W^T + sigma^2 I) in float64.
    x, weight, mu, sigma = random_model(seed=1)
    got = ppca_log_likelihood(x, weight, mu, sigma)
    assert got.dtype == np.float64 and got.shape == (len(x),)
    expected = scipy_log_marginal(x, weight, mu, sigma)
    # Both sides are float64; scipy's eigh of the D x D covariance loses ~cond(C) eps64 in the
    # quadratic form. cond(C) = 56 and log p in [-26, -8] here: rounding ~1e-13 (3e-14
    # observed); 1e-10 leaves a margin and still catches any missing constant or term.
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_ppca_log_likelihood_matches_scipy_float32():
    # Reference: the same scipy logpdf in float64, from the float32-cast inputs (so only the
    # float32 arithmetic is measured). Error budget: each of the three terms (D log 2 pi,
    # log|C|, the quadratic form) carries a relative error of a few eps32 per flop chain of
    # length O(D + k), amplified by at most cond(I + W^T W / sigma^2) in the k x k solve.
    # We allow 4 eps32 * cond * (|D log 2pi| + |log det C| + quad): a bound, not a fit
    # (cond = 3.4 and the magnitudes 24-40 here; the observed error is 1/20 of it).
    x, weight, mu = (a.astype(np.float32) for a in random_model(seed=2)[:3])
    sigma = 0.5
    got = ppca_log_likelihood(x, weight, mu, sigma)
    assert got.dtype == np.float32
    expected = scipy_log_marginal(x, weight, mu, sigma)
    cov = np.asarray(weight, np.float64) @ np.asarray(weight, np.float64).T + 0.25 * np.eye(10)
    centred = np.asarray(x, np.float64) - mu
    quad = np.einsum("nd,nd->n", centred, np.linalg.solve(cov, centred.T).T)
    magnitude = 10 * np.log(2 * np.pi) + abs(np.linalg.slogdet(cov)[1]) + quad
    bound = 4 * EPS32 * cond_of_gram(weight, sigma) * magnitude
    error = np.abs(np.asarray(got, np.float64) - expected)
    assert np.all(error <= bound), (error.max(), bound.min())


def test_ppca_log_likelihood_float32_is_stable_at_small_sigma():
    # Data generated by the model with sigma = 1e-3: |u|^2 = |x - mu|^2 / sigma^2 ~ 1e8 while
    # the quadratic form (x - mu)^T C^-1 (x - mu) is ~D. The textbook Woodbury form
    # |u|^2 - |L^-1 A^T u|^2 cancels 1e8 against 1e8 in float32 (measured: ~19 nats off); the
    # sum-of-squares form |u - A m|^2 + |m|^2 only loses eps32 |u| <= 1.6e-3 in each O(1)
    # residual component, so the log-likelihood (~+40 nats) is good to ~D * 1.6e-3 at worst
    # (1.2e-3 observed); 0.02 nats. Reference: scipy float64 from the float32-cast inputs.
    x, weight, mu, sigma = random_model(seed=3, data_dim=12, num_latents=3, sigma=1e-3)
    x32, w32, mu32 = (a.astype(np.float32) for a in (x, weight, mu))
    got = ppca_log_likelihood(x32, w32, mu32, sigma)
    expected = scipy_log_marginal(x32, w32, mu32, sigma)
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=0, atol=0.02)


def test_ppca_log_likelihood_batch_shapes(float64):
    # [..., D] -> [...]: a [2, N, D] batch equals the two [N, D] calls; a single [D] gives [].
    x, weight, mu, sigma = random_model(seed=4, num_examples=6)
    stacked = np.stack([x, x[::-1]])
    got = ppca_log_likelihood(stacked, weight, mu, sigma)
    assert got.shape == (2, 6)
    np.testing.assert_allclose(got[1], scipy_log_marginal(x[::-1], weight, mu, sigma), rtol=1e-10)
    single = ppca_log_likelihood(x[0], weight, mu, sigma)
    assert single.shape == ()
    np.testing.assert_allclose(single, scipy_log_marginal(x[0], weight, mu, sigma)[0], rtol=1e-10)
    mean, cov = exact_posterior(stacked, weight, mu, sigma)
    assert mean.shape == (2, 6, 3) and cov.shape == (3, 3)
    assert lg.exact_log_marginal is lg.ppca_log_likelihood


def test_exact_posterior_matches_bishop_formulas(float64):
    # Reference: Bishop PRML eqs. 2.116-2.117 written with a D x D inverse in numpy:
    # Sigma = (I + W^T W / s^2)^-1, mean = Sigma W^T (x - mu) / s^2.
    x, weight, mu, sigma = random_model(seed=5)
    mean, cov = exact_posterior(x, weight, mu, sigma)
    expected_cov = np.linalg.inv(np.eye(3) + weight.T @ weight / sigma**2)
    expected_mean = (x - mu) @ weight @ expected_cov / sigma**2
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# data_covariance_eigen and ppca_mle.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("ddof", [0, 1])
def test_data_covariance_eigen_matches_numpy(float64, ddof):
    # Reference: numpy.cov(x, ddof) and numpy.linalg.eigh.
    x = planted_data(seed=6)
    eig = data_covariance_eigen(x, ddof=ddof)
    cov = np.cov(x, rowvar=False, ddof=ddof)
    np.testing.assert_allclose(eig.eigvals, np.linalg.eigvalsh(cov)[::-1], rtol=1e-12)
    np.testing.assert_allclose(eig.mean, x.mean(axis=0), rtol=1e-13)
    vecs = np.asarray(eig.eigvecs)
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(8), atol=1e-13)
    np.testing.assert_allclose(vecs @ np.diag(eig.eigvals) @ vecs.T, cov, atol=1e-12)
    assert np.all(np.diff(eig.eigvals) <= 0)


def test_ppca_mle_fixed_sigma_is_a_maximum(float64):
    # Tipping & Bishop: with sigma fixed, W = U_k (Lambda_k - sigma^2)_+^{1/2} maximises the
    # average log-likelihood. sigma^2 = 0.45 lies between lambda_4 (~0.6) and lambda_5 (~0.3)
    # with k = 5, so the 5th column must be zero (collapsed).
    x = planted_data(seed=7)
    eig = data_covariance_eigen(x)
    sigma = np.sqrt(0.45)
    assert eig.eigvals[3] > 0.45 > eig.eigvals[4]
    fit = ppca_mle(*eig, sigma, num_latents=5)
    weight = np.asarray(fit.weight)
    gram = weight.T @ weight
    np.testing.assert_allclose(gram, np.diag(np.maximum(eig.eigvals[:5] - 0.45, 0)), atol=1e-12)
    assert np.all(weight[:, 4] == 0) and np.all(np.abs(weight[:, :4]).sum(0) > 0)
    np.testing.assert_allclose(fit.mean, x.mean(0), rtol=1e-13)

    batched = jax.jit(jax.vmap(lambda w, m: jnp.mean(lg.ppca_log_likelihood(x, w, m, sigma))))
    best = float(batched(fit.weight[None], fit.mean[None])[0])
    # Perturbations: 40 random unit-Frobenius directions of W (and of mu) at two step sizes.
    # The optimum is flat along rotations W R and zero-curvature along some directions of the
    # zero column, so "never increases" is up to float64 rounding of an average of ~-8 nats.
    rng = np.random.default_rng(8)
    tol = 1e-12 * abs(best)
    for step in (1e-4, 1e-2):
        directions = rng.normal(size=(40, *weight.shape))
        directions /= np.linalg.norm(directions, axis=(1, 2), keepdims=True)
        shifts = rng.normal(size=(40, 8))
        shifts /= np.linalg.norm(shifts, axis=1, keepdims=True)
        means = np.broadcast_to(fit.mean, shifts.shape)
        weights = np.broadcast_to(weight, directions.shape)
        values = np.concatenate(
            [batched(weight + step * directions, means), batched(weights, means + step * shifts)]
        )
        assert np.all(values <= best + tol), (step, np.max(values) - best)
    assert best - np.max(values) > 1e-6  # the step 1e-2 perturbations see the curvature

    # Independent optimiser: L-BFGS over W from a random start (pPCA with fixed sigma has no
    # local maxima other than the global one: its other stationary points are saddles, Tipping
    # & Bishop 1999) reaches `best`.
    value_and_grad = jax.jit(
        jax.value_and_grad(
            lambda w: -jnp.mean(lg.ppca_log_likelihood(x, w.reshape(8, 5), fit.mean, sigma))
        )
    )

    def objective(flat):
        value, grad = value_and_grad(jnp.asarray(flat))
        return float(value), np.asarray(grad, np.float64)

    result = optimize.minimize(
        objective,
        rng.normal(size=40) * 0.3,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000},
    )
    assert -result.fun <= best + tol
    assert -result.fun == pytest.approx(best, rel=1e-8, abs=0)


def test_ppca_mle_free_sigma_is_mean_discarded_eigenvalue_and_a_maximum(float64):
    x = planted_data(seed=9)
    eig = data_covariance_eigen(x)
    k = 3
    fit = ppca_mle(*eig, num_latents=k)
    # Tipping & Bishop 1999: sigma^2_ML is the mean of the D - k discarded eigenvalues.
    np.testing.assert_allclose(fit.sigma**2, np.mean(eig.eigvals[k:]), rtol=1e-13)
    assert np.all(np.linalg.norm(np.asarray(fit.weight), axis=0) > 0)  # no kept unit collapses

    # Independent: maximise the profile likelihood max_W L(W, sigma) over log sigma^2 with
    # scipy's bounded Brent search, W = the fixed-sigma MLE at each sigma.
    profile = jax.jit(
        lambda s: jnp.mean(
            lg.ppca_log_likelihood(x, lg.ppca_mle(*eig, s, num_latents=k).weight, eig.mean, s)
        )
    )

    def negative_profile(log_var):
        return -float(profile(np.exp(0.5 * log_var)))

    result = optimize.minimize_scalar(
        negative_profile,
        bounds=(np.log(0.01), np.log(4.0)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    # The profile is smooth with curvature O(D - k): Brent's argmin is good to ~sqrt(eps64).
    np.testing.assert_allclose(np.exp(result.x), fit.sigma**2, rtol=1e-6)

    # Joint perturbations of (W, sigma) never increase the average log-likelihood.
    best = float(profile(fit.sigma))  # the fixed-sigma MLE at sigma_ML is the same W
    assert -result.fun <= best + 1e-12 * abs(best)
    rng = np.random.default_rng(10)
    batched = jax.jit(jax.vmap(lambda w, s: jnp.mean(lg.ppca_log_likelihood(x, w, eig.mean, s))))
    for step in (1e-4, 1e-2):
        directions = rng.normal(size=(30, *fit.weight.shape))
        directions /= np.linalg.norm(directions, axis=(1, 2), keepdims=True)
        sigmas = float(fit.sigma) * np.exp(step * rng.normal(size=30))
        values = np.asarray(batched(fit.weight + step * directions, sigmas))
        assert np.all(values <= best + 1e-12 * abs(best)), (step, np.max(values) - best)


def test_ppca_mle_matches_scikit_learn_pca(float64):
    # Reference: scikit-learn's PCA is pPCA (Tipping & Bishop) with the 1/(N-1) covariance:
    # get_covariance() = W W^T + noise_variance_ I and score_samples() = log p(x).
    from sklearn.decomposition import PCA

    x = planted_data(seed=11)
    k = 3
    pca = PCA(n_components=k, svd_solver="full").fit(x)
    fit = ppca_mle(*data_covariance_eigen(x, ddof=1), num_latents=k)
    weight = np.asarray(fit.weight)
    np.testing.assert_allclose(float(fit.sigma) ** 2, pca.noise_variance_, rtol=1e-12)
    cov = weight @ weight.T + float(fit.sigma) ** 2 * np.eye(8)
    np.testing.assert_allclose(cov, pca.get_covariance(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ppca_log_likelihood(x, *fit), pca.score_samples(x), rtol=1e-10)
    # With ddof=0 (the ML covariance) sigma^2 is smaller by (N - 1)/N.
    fit_ml = ppca_mle(*data_covariance_eigen(x), num_latents=k)
    np.testing.assert_allclose(
        float(fit_ml.sigma) ** 2, pca.noise_variance_ * (len(x) - 1) / len(x), rtol=1e-12
    )


# --------------------------------------------------------------------------- #
# The optimal linear VAE.
# --------------------------------------------------------------------------- #


def test_optimal_linear_vae_elbo_equals_ppca_log_likelihood(float64):
    # Lucas et al. (arXiv 1911.02469): at the pPCA optimum the diagonal encoder is the exact
    # posterior, so the ELBO equals log p(x). Reference for the posterior: exact_posterior
    # (tested above against Bishop's formulas); for log p(x): scipy.
    x = planted_data(seed=12)
    eig = data_covariance_eigen(x)
    sigma = np.sqrt(0.45)
    assert int(lg.predicted_active_units(eig.eigvals, sigma)) == 4  # units 5 and 6 collapse
    params = optimal_linear_vae(*eig, sigma, num_latents=6)
    fit = ppca_mle(*eig, sigma, num_latents=6)
    assert np.all(np.asarray(fit.weight)[:, 4:] == 0)
    np.testing.assert_array_equal(params.decoder_weight, fit.weight)
    np.testing.assert_array_equal(params.decoder_bias, fit.mean)
    post_mean, post_cov = exact_posterior(x, *fit)
    np.testing.assert_allclose(np.diag(np.exp(params.encoder_log_var)), post_cov, atol=1e-14)
    enc_mean, enc_log_var = lg.linear_vae_encode(x, params)
    np.testing.assert_allclose(enc_mean, post_mean, atol=1e-13)
    assert enc_log_var.shape == enc_mean.shape == (len(x), 6)
    elbo_value = linear_vae_elbo(x, params, sigma)
    log_marginal = scipy_log_marginal(x, fit.weight, fit.mean, sigma)
    np.testing.assert_allclose(elbo_value, log_marginal, rtol=1e-11)
    np.testing.assert_allclose(elbo_value, ppca_log_likelihood(x, *fit), rtol=1e-13)


def test_linear_vae_elbo_closed_form_matches_monte_carlo(float64):
    # Away from the optimum (random V, log s^2, W, mu) the closed form must still be the ELBO.
    # Reference: a numpy Monte-Carlo estimate with its own random numbers, L = 20000 draws
    # z ~ q(z|x), of E_q[log N(x; W z + mu, sigma^2 I)] - KL(q || N(0, I)) with the Gaussian
    # log-density and the KL written out in numpy; agreement within 5 standard errors.
    rng = np.random.default_rng(13)
    x, weight, mu, sigma = random_model(seed=13, data_dim=6, num_latents=2, num_examples=5)
    encoder_weight = rng.normal(size=(2, 6)) * 0.3
    encoder_var = np.array([0.3, 0.8])
    params = lg.LinearVAEParams(encoder_weight, np.log(encoder_var), weight, mu)
    closed = linear_vae_elbo(x, params, sigma)

    num_samples = 20000
    q_mean = (x - mu) @ encoder_weight.T  # [B, k]
    z = q_mean + np.sqrt(encoder_var) * rng.normal(size=(num_samples, *q_mean.shape))
    residual = x - (z @ weight.T + mu)  # [L, B, D]
    log_lik = -0.5 * np.sum(residual**2, -1) / sigma**2 - 6 * np.log(np.sqrt(2 * np.pi) * sigma)
    kl = 0.5 * np.sum(q_mean**2 + encoder_var - 1 - np.log(encoder_var), -1)
    estimate = log_lik.mean(0) - kl
    standard_error = log_lik.std(0, ddof=1) / np.sqrt(num_samples)
    assert np.all(np.abs(estimate - closed) <= MC_STANDARD_ERRORS * standard_error), (
        estimate - closed,
        standard_error,
    )


def test_monte_carlo_elbo_at_the_optimum_has_zero_variance(float64):
    # At the optimum q(z|x) = p(z|x), so log p(x|z) + log p(z) - log q(z|x) = log p(x) for
    # every z: vaejax.elbo.elbo with the Monte-Carlo KL (log q - log p at the same samples) is
    # the same number for every key and equals log p(x) (scipy) to rounding. With the analytic
    # KL the estimator has NON-zero variance (log p(x|z) alone still depends on z) and is
    # unbiased: its mean over keys is the closed form within Monte-Carlo error.
    x = planted_data(seed=14, num_examples=50)
    eig = data_covariance_eigen(x)
    sigma = np.sqrt(0.45)
    params = optimal_linear_vae(*eig, sigma, num_latents=6)
    mean, log_var = lg.linear_vae_encode(x, params)
    weight, bias = params.decoder_weight, params.decoder_bias
    log_marginal = scipy_log_marginal(x, weight, bias, sigma)

    def log_likelihood_fn(z):
        return lik.gaussian_log_likelihood(x, z @ weight.T + bias, sigma, event_ndims=1)

    @jax.jit
    def estimates(key):
        def one(kl):
            return elbo(key, mean, log_var, log_likelihood_fn, num_samples=1, kl=kl).elbo

        return one("monte_carlo"), one("analytic")

    keys = jax.random.split(jax.random.key(15), 100)
    mc_kl, analytic_kl = (np.asarray(a) for a in jax.vmap(estimates)(keys))  # [100, N] each
    # log p(x) in [-16, -5] nats from ~D + k float64 terms: 1e-12 is ~1e3 eps64 |log p|.
    assert -16 < np.min(log_marginal) and np.max(log_marginal) < -5
    assert np.max(np.std(mc_kl, axis=0)) < 1e-12
    np.testing.assert_allclose(mc_kl, np.broadcast_to(log_marginal, mc_kl.shape), atol=1e-11)
    assert np.min(np.std(analytic_kl, axis=0)) > 1e-3
    standard_error = np.std(analytic_kl, axis=0, ddof=1) / np.sqrt(len(keys))
    closed = np.asarray(linear_vae_elbo(x, params, sigma))
    assert np.all(np.abs(analytic_kl.mean(0) - closed) <= MC_STANDARD_ERRORS * standard_error)


def test_unit_collapses_exactly_when_sigma_squared_reaches_its_eigenvalue(float64):
    # Lucas et al. (arXiv 1911.02469): unit i is active iff sigma^2 < lambda_i. Just above
    # lambda_i its encoder variance is 1, its encoder row and decoder column are 0 and its KL
    # is 0 (the independent check: vaejax.kl.kl_standard_normal per unit); just below, all
    # are non-zero.
    x = planted_data(seed=17)
    eig = data_covariance_eigen(x)
    for i in range(8):
        for factor, active in ((1 + 1e-6, False), (1 - 1e-6, True)):
            sigma = np.sqrt(eig.eigvals[i] * factor)
            params, kl_per_unit, elbo_value, log_lik, predicted = vae_summary(x, eig, sigma)
            kl_per_unit = np.asarray(kl_per_unit)
            column = np.linalg.norm(np.asarray(params.decoder_weight)[:, i])
            row = np.linalg.norm(np.asarray(params.encoder_weight)[i])
            if active:
                assert column > 0 and row > 0 and params.encoder_log_var[i] < 0
                assert kl_per_unit[i] > 0
            else:
                assert column == 0 and row == 0 and params.encoder_log_var[i] == 0
                assert kl_per_unit[i] == 0
            # Units before i are active, units after i are collapsed.
            assert np.all(kl_per_unit[:i] > 0) and np.all(kl_per_unit[i + 1 :] == 0)
            assert int(predicted) == i + int(active)
            np.testing.assert_allclose(elbo_value, log_lik, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predicted_active_units_and_collapse_thresholds(dtype):
    with jax.enable_x64(dtype == np.float64):
        eigvals = jnp.asarray([2.0, 1.0, 0.5, 0.25, 0.0], dtype)
        thresholds = lg.collapse_thresholds(eigvals)
        assert thresholds.dtype == dtype
        np.testing.assert_allclose(thresholds, np.sqrt([2.0, 1.0, 0.5, 0.25, 0.0]), rtol=1e-6)
        # At sigma = threshold_i unit i has just collapsed: counts 0, 1, 2, 3, 4.
        counts = lg.predicted_active_units(eigvals, thresholds)
        assert counts.shape == (5,)
        np.testing.assert_array_equal(counts, [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(
            lg.predicted_active_units(eigvals, jnp.asarray([3.0, 0.9, 0.6, 0.1], dtype)),
            [0, 2, 3, 4],
        )
        assert lg.predicted_active_units(eigvals, 0.0) == 4  # the zero eigenvalue never counts
        assert lg.predicted_active_units(eigvals, 0.6).shape == ()


# --------------------------------------------------------------------------- #
# The digits spectrum.
# --------------------------------------------------------------------------- #

# Quoted (measured elsewhere) leading eigenvalues of the covariance of load_digits().data / 16.
QUOTED_DIGITS_EIGVALS = np.array(
    [0.699, 0.640, 0.554, 0.395, 0.272, 0.231, 0.203, 0.172, 0.158, 0.145]
)
# Measured here (float64, all 1797 digits):
#   ddof=0 (1/N):     0.698857 0.639167 0.553553 0.394704 0.271385 0.230764 0.202561 0.171838
#                     0.157377 0.144497
#   ddof=1 (1/(N-1)): 0.699246 0.639522 0.553861 0.394923 0.271536 0.230893 0.202674 0.171934
#                     0.157465 0.144577
# The quoted values are the 1/(N-1) eigenvalues (numpy.cov's default) of ALL 1797 digits: 9 of
# 10 round to them directly and 0.157465 -> 0.1575 -> 0.158 by rounding twice (4 decimals then
# 3), so the largest deviation, 5.35e-4, is within the 5.5e-4 double rounding allows. The 1/N
# eigenvalues miss 4 of 10 (0.639167 is 8.3e-4 from 0.640). A train split does not reproduce
# them either: the 1500-digit train splits of vaejax.data (seeds 0, 1, 2) give lambda_3 =
# 0.544, 0.564, 0.557 instead of 0.554.
DOUBLE_ROUNDING_TOLERANCE = 5e-4 + 5e-5


@pytest.fixture(scope="module")
def digits64():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float64) / 16.0


def test_digits_spectrum_reproduces_the_quoted_eigenvalues_with_1_over_n_minus_1(float64, digits64):
    assert digits64.shape == (1797, 64)
    unbiased = np.asarray(data_covariance_eigen(digits64, ddof=1).eigvals[:10])
    biased = np.asarray(data_covariance_eigen(digits64, ddof=0).eigvals[:10])
    np.testing.assert_allclose(biased * 1797 / 1796, unbiased, rtol=1e-12)
    assert np.max(np.abs(unbiased - QUOTED_DIGITS_EIGVALS)) <= DOUBLE_ROUNDING_TOLERANCE
    assert np.max(np.abs(biased - QUOTED_DIGITS_EIGVALS)) > DOUBLE_ROUNDING_TOLERANCE
    for eigvals in (unbiased, biased):
        # Lucas et al.: latent i is active iff sigma^2 < lambda_i.
        assert int(lg.predicted_active_units(eigvals, np.sqrt(0.3))) == 4
        assert int(lg.predicted_active_units(eigvals, np.sqrt(0.15))) == 9
        np.testing.assert_array_equal(
            lg.predicted_active_units(eigvals, np.sqrt([0.3, 0.15])), [4, 9]
        )


def test_digits_optimal_linear_vae_float32_kl_and_elbo(digits64):
    # Float32 end to end on the digits (the library's default precision): the optimal linear
    # VAE's active units (mean KL > 0, from vaejax.kl) are exactly the predicted ones, and its
    # closed-form ELBO equals the pPCA log-likelihood and scipy's float64 log-density of the
    # same (float32) parameters. Tolerance: each value (in [-35, +21] nats) sums D = 64 float32
    # terms of magnitude <= D/2 log(2 pi) ~ 59, so rounding is <= D * eps32 * 59 ~ 5e-4 nats
    # (6e-6 observed). An absolute tolerance: at sigma^2 = 0.05 some log p(x) cross 0.
    x = digits64.astype(np.float32)
    eig = data_covariance_eigen(x)
    assert eig.eigvals.dtype == np.float32
    for sigma_sq, expected in ((0.3, 4), (0.15, 9), (0.05, None)):
        sigma = np.float32(np.sqrt(sigma_sq))
        params, kl_per_unit, elbo_value, log_lik, predicted = vae_summary(x, eig, sigma)
        assert params.encoder_weight.dtype == np.float32
        active = int(np.sum(np.asarray(kl_per_unit) > 0))
        assert active == int(predicted)
        if expected is not None:
            assert active == expected
        assert elbo_value.dtype == log_lik.dtype == np.float32
        np.testing.assert_allclose(elbo_value, log_lik, rtol=0, atol=5e-4)
        reference = scipy_log_marginal(x, params.decoder_weight, params.decoder_bias, sigma)
        np.testing.assert_allclose(np.asarray(elbo_value, np.float64), reference, atol=5e-4)


# --------------------------------------------------------------------------- #
# IWAE on the linear-Gaussian model.
# --------------------------------------------------------------------------- #


def test_iwae_is_non_decreasing_in_k_and_converges_to_the_exact_log_marginal():
    # Burda et al. (arXiv 1509.00519) theorem 1: E[IWAE_K] is non-decreasing in K and tends
    # to log p(x). Model: a generic W (non-orthogonal columns, so the exact posterior has
    # correlations a diagonal q cannot represent), float32. The encoder is deliberately
    # imperfect: the exact posterior mean shifted by half a posterior std, and the diagonal
    # of the posterior covariance inflated 1.5x. Reference log p(x): scipy (float64).
    sigma = 0.7
    model = random_model(seed=18, data_dim=6, num_latents=2, sigma=sigma, num_examples=256)
    x, weight, mu = (a.astype(np.float32) for a in model[:3])
    post_mean, post_cov = exact_posterior(x, weight, mu, sigma)
    post_std = np.sqrt(np.diag(np.asarray(post_cov)))
    mean = post_mean + 0.5 * post_std
    log_var = jnp.broadcast_to(jnp.log(1.5 * jnp.diag(post_cov)), mean.shape)
    log_marginal = scipy_log_marginal(x, weight, mu, sigma)

    def log_likelihood_fn(z):
        return lik.gaussian_log_likelihood(x, z @ weight.T + mu, sigma, event_ndims=1)

    counts = (1, 10, 100, 1000)
    bounds = jax.jit(
        lambda key: [
            iwae_bound(key, mean, log_var, log_likelihood_fn, num_samples=k) for k in counts
        ]
    )(jax.random.key(19))
    bounds = [np.asarray(b, np.float64) for b in bounds]  # [N] each

    def mean_and_se(values):
        return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values)))

    # The encoder really is imperfect: its ELBO gap KL(q || p(z|x)) (closed form for two
    # Gaussians, numpy float64) is large, and IWAE_1, the one-sample ELBO, is unbiased for it.
    cov = np.asarray(post_cov, np.float64)
    var_q = 1.5 * np.diag(cov)
    diff = np.asarray(mean, np.float64) - np.asarray(post_mean, np.float64)
    gap = 0.5 * (
        np.sum(var_q * np.diag(np.linalg.inv(cov)))
        + np.einsum("nk,kl,nl->n", diff, np.linalg.inv(cov), diff)
        - 2
        + np.linalg.slogdet(cov)[1]
        - np.sum(np.log(var_q))
    )
    assert np.mean(gap) > 0.1, np.mean(gap)
    elbo_error, elbo_se = mean_and_se(bounds[0] - (log_marginal - gap))
    assert abs(elbo_error) <= MC_STANDARD_ERRORS * elbo_se, (elbo_error, elbo_se)
    # Non-decreasing in K, up to Monte-Carlo error of the per-example differences (sample k
    # uses fold_in(key, k), so the K samples are the first K of the K' > K ones).
    for small, large in zip(bounds[:-1], bounds[1:], strict=True):
        increase, increase_se = mean_and_se(large - small)
        assert increase >= -MC_STANDARD_ERRORS * increase_se, (increase, increase_se)
    # Strictly better than the ELBO already at K = 10.
    increase, increase_se = mean_and_se(bounds[1] - bounds[0])
    assert increase > MC_STANDARD_ERRORS * increase_se
    # Converged at K = 1000: within 5 standard errors (plus float32 rounding, ~1e-5 nats of
    # ~-10) of log p(x) on average over examples, and 99 % of the ELBO gap is closed.
    error, error_se = mean_and_se(bounds[-1] - log_marginal)
    assert abs(error) <= MC_STANDARD_ERRORS * error_se + 1e-4, (error, error_se)
    assert abs(error) < 0.01 * np.mean(gap), (error, np.mean(gap))


# --------------------------------------------------------------------------- #
# Dtypes, jit and bad inputs.
# --------------------------------------------------------------------------- #


def test_jit_with_invalid_sigma_gives_nan_not_a_number():
    # Under jit the values cannot be checked: an invalid sigma must give NaN, never a number
    # (in particular not an "all units collapsed" VAE, which is what sigma = NaN compares as).
    x, weight, mu = (a.astype(np.float32) for a in random_model(seed=20)[:3])
    values = jax.jit(lg.ppca_log_likelihood)(x, weight, mu, jnp.float32(-1.0))
    assert values.shape == (len(x),) and np.all(np.isnan(values))
    eig = data_covariance_eigen(x)
    for sigma in (0.0, -1.0, np.inf):
        params = optimal_linear_vae(*eig, jnp.float32(sigma), num_latents=3)
        assert np.all(np.isnan(params.decoder_weight)) and np.all(np.isnan(params.encoder_log_var))
        assert np.all(np.isnan(ppca_mle(*eig, jnp.float32(sigma), num_latents=3).weight))
        assert np.all(np.isnan(linear_vae_elbo(x, params, jnp.float32(1.0))))


@functools.cache
def _good():
    """Valid float32 arguments (numpy), D = 5, k = 2: each bad-input case breaks one."""
    x, weight, mu, sigma = random_model(seed=21, data_dim=5, num_latents=2, num_examples=4)
    x, weight, mu = (a.astype(np.float32) for a in (x, weight, mu))
    eigvals, eigvecs = np.linalg.eigh(np.cov(x, rowvar=False, ddof=0))
    eig = lg.CovarianceEigen(eigvals[::-1].copy(), eigvecs[:, ::-1].copy(), x.mean(0))
    params = lg.LinearVAEParams(np.zeros((2, 5), np.float32), np.zeros(2, np.float32), weight, mu)
    return x, weight, mu, sigma, eig, params


BAD_INPUTS = {
    # name: (call, argument the message must name)
    "negative sigma, likelihood": (
        lambda g: lg.ppca_log_likelihood(g[0], g[1], g[2], -0.5),
        "sigma",
    ),
    "zero sigma, likelihood": (lambda g: lg.ppca_log_likelihood(g[0], g[1], g[2], 0.0), "sigma"),
    "nan sigma": (lambda g: lg.ppca_log_likelihood(g[0], g[1], g[2], np.nan), "sigma"),
    "vector sigma": (lambda g: lg.ppca_log_likelihood(g[0], g[1], g[2], np.ones(5)), "sigma"),
    "negative sigma, posterior": (lambda g: lg.exact_posterior(g[0], g[1], g[2], -1.0), "sigma"),
    "negative sigma, mle": (lambda g: lg.ppca_mle(*g[4], -0.1, num_latents=2), "sigma"),
    "negative sigma, vae": (lambda g: lg.optimal_linear_vae(*g[4], -0.1, num_latents=2), "sigma"),
    "negative sigma, elbo": (lambda g: lg.linear_vae_elbo(g[0], g[5], -0.1), "sigma"),
    "negative sigma, active": (
        lambda g: lg.predicted_active_units(g[4].eigvals, [0.1, -0.1]),
        "sigma",
    ),
    "W rows != D": (lambda g: lg.ppca_log_likelihood(g[0], g[1][:4], g[2], 0.5), "W"),
    "W rank 1": (lambda g: lg.ppca_log_likelihood(g[0], g[1][:, 0], g[2], 0.5), "W"),
    "mu length": (lambda g: lg.ppca_log_likelihood(g[0], g[1], g[2][:3], 0.5), "mu"),
    "integer x": (lambda g: lg.ppca_log_likelihood(np.ones((2, 5), int), g[1], g[2], 0.5), "x"),
    "x rank 1 for covariance": (lambda g: lg.data_covariance_eigen(g[0][0]), "x"),
    "one example, ddof=1": (lambda g: lg.data_covariance_eigen(g[0][:1], ddof=1), "x"),
    "bad ddof": (lambda g: lg.data_covariance_eigen(g[0], ddof=2), "ddof"),
    "num_latents > D": (lambda g: lg.ppca_mle(*g[4], 0.5, num_latents=6), "num_latents"),
    "num_latents = 0": (lambda g: lg.ppca_mle(*g[4], 0.5, num_latents=0), "num_latents"),
    "num_latents = D, free sigma": (lambda g: lg.ppca_mle(*g[4], num_latents=5), "num_latents"),
    "num_latents > D, vae": (
        lambda g: lg.optimal_linear_vae(*g[4], 0.5, num_latents=9),
        "num_latents",
    ),
    "num_latents float": (lambda g: lg.ppca_mle(*g[4], 0.5, num_latents=2.0), "num_latents"),
    "ascending eigvals": (
        lambda g: lg.ppca_mle(g[4].eigvals[::-1], g[4].eigvecs, g[4].mean, 0.5, num_latents=2),
        "eigvals",
    ),
    "eigvals length": (
        lambda g: lg.ppca_mle(g[4].eigvals[:4], g[4].eigvecs, g[4].mean, 0.5, num_latents=2),
        "eigvals",
    ),
    "eigvecs shape": (
        lambda g: lg.ppca_mle(g[4].eigvals, g[4].eigvecs[:, :3], g[4].mean, 0.5, num_latents=2),
        "eigvecs",
    ),
    "params shapes": (lambda g: lg.linear_vae_elbo(g[0][:, :4], g[5], 0.5), "params."),
    "params type": (lambda g: lg.linear_vae_elbo(g[0], tuple(g[5]), 0.5), "params"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, argument = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=f"`{argument}"):
        call(_good())


def test_free_sigma_on_data_in_a_subspace_raises():
    # Data of rank 2 in D = 4: sigma^2_ML = 0 with k = 2 (unbounded likelihood).
    rng = np.random.default_rng(22)
    x = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 4))
    eigvals, eigvecs = np.linalg.eigh(np.cov(x, rowvar=False, ddof=0))
    eigvals = np.concatenate([eigvals[::-1][:2], np.zeros(2)])  # exact zeros, not rounding
    eig = lg.CovarianceEigen(eigvals, eigvecs[:, ::-1].copy(), x.mean(0))
    with pytest.raises(ValueError, match="`num_latents`"):
        lg.ppca_mle(*eig, num_latents=2)
