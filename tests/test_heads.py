"""The likelihood-head registry: each head's log-likelihood is the library formula it
names, its expected value and sampler have the distribution's moments (Monte-Carlo bounds
from the sample standard error), the continuous-Bernoulli sampler follows its CDF
(Kolmogorov-Smirnov against the closed form), and bad names or a missing sigma are named.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from vaejax import heads, likelihoods
from vaejax.models import VAE, Decoder

B, D, Z, H = 5, 12, 3, 16


@pytest.mark.parametrize("name", heads.NAMES)
def test_vae_outputs_and_log_likelihood_per_head(name):
    x = jax.random.uniform(jax.random.key(0), (B, D), minval=0.01, maxval=0.99)
    head = heads.get(name)
    if head.uses_levels:
        x = jnp.round(x * 16) / 16  # the digits' 17-level grid
    model = VAE(hidden=H, latent=Z, output_dim=D, likelihood=name)
    params = model.init(jax.random.key(1), x, jax.random.key(2))
    outputs, aux = model.apply(params, x, jax.random.key(3))
    assert set(aux) == {"mu", "logvar", "z"} and all(aux[k].shape == (B, Z) for k in aux)
    main = {"beta": "logits", "categorical": "logits",
            "discretized_logistic_mixture": "means"}.get(name)
    main = main or ("logits" if "bernoulli" in name else "mean")
    shape = {"categorical": (B, D, 17), "discretized_logistic_mixture": (B, D, 5)}
    assert outputs[main].shape == shape.get(name, (B, D))
    scale = "log_scale" if name.startswith(("laplace", "logistic", "disc")) else "log_sigma"
    if name.endswith("_shared"):
        assert outputs[scale].shape == ()
    if name.endswith("_per_pixel"):
        assert outputs[scale].shape == (B, D)
    if name == "beta":
        assert outputs["log_concentration"].shape == (B, D)
    ll = head.log_likelihood(x, outputs, sigma=0.3, num_levels=17)
    assert ll.shape == (B,) and bool(jnp.all(jnp.isfinite(ll)))
    assert head.expected_value(outputs, num_levels=17).shape == (B, D)


def test_each_head_is_its_library_formula():
    x = jax.random.uniform(jax.random.key(0), (B, D), minval=0.01, maxval=0.99)
    out = jax.random.normal(jax.random.key(1), (B, D))
    log_sigma = jnp.full((B, D), -0.7)
    # The Beta head's reference is scipy's, from alpha = sigmoid(l) kappa, beta = sigmoid(-l)
    # kappa in float64.
    log_kappa = jax.random.normal(jax.random.key(2), (B, D))
    kappa = np.exp(np.asarray(log_kappa, np.float64))
    mean64 = scipy.special.expit(np.asarray(out, np.float64))
    beta_reference = scipy.stats.beta.logpdf(np.asarray(x, np.float64), mean64 * kappa,
                                             (1 - mean64) * kappa).sum(-1)
    cases = {
        "bernoulli": ({"logits": out}, likelihoods.bernoulli_log_likelihood(x, out)),
        "continuous_bernoulli": ({"logits": out},
                                 likelihoods.continuous_bernoulli_log_likelihood(x, out)),
        "gaussian_fixed": ({"mean": out}, likelihoods.gaussian_log_likelihood(x, out, 0.2)),
        "gaussian_per_pixel": ({"mean": out, "log_sigma": log_sigma},
                               likelihoods.gaussian_log_likelihood(x, out, jnp.exp(log_sigma))),
        "gaussian_shared": ({"mean": out, "log_sigma": jnp.float32(-0.7)},
                            likelihoods.gaussian_log_likelihood(x, out, np.exp(-0.7))),
        "gaussian_optimal": ({"mean": out}, likelihoods.gaussian_log_likelihood(
            x, out, likelihoods.optimal_sigma(x, out, axis="batch"))),
        # Laplace and logistic references: scipy.stats (float64).
        "laplace_fixed": ({"mean": out}, scipy.stats.laplace.logpdf(x, out, 0.2).sum(-1)),
        "laplace_shared": ({"mean": out, "log_scale": jnp.float32(-0.7)},
                           scipy.stats.laplace.logpdf(x, out, np.exp(-0.7)).sum(-1)),
        "laplace_per_pixel": ({"mean": out, "log_scale": log_sigma},
                              scipy.stats.laplace.logpdf(x, out, np.exp(-0.7)).sum(-1)),
        "logistic_per_pixel": ({"mean": out, "log_scale": log_sigma},
                               scipy.stats.logistic.logpdf(x, out, np.exp(-0.7)).sum(-1)),
    }
    for name, (outputs, expected) in cases.items():
        np.testing.assert_allclose(heads.log_likelihood(name, x, outputs, sigma=0.2), expected,
                                   rtol=1e-6, err_msg=name)
    # Beta: float32 lgamma and logs against float64; bound C eps S with S the sum of the
    # magnitudes of the terms and C = 64 (lgamma's float32 accuracy, summed over D pixels).
    a, b = mean64 * kappa, (1 - mean64) * kappa
    x64 = np.asarray(x, np.float64)
    magnitude = (np.abs((a - 1) * np.log(x64)) + np.abs((b - 1) * np.log1p(-x64))
                 + np.abs(scipy.special.gammaln(a)) + np.abs(scipy.special.gammaln(b))
                 + np.abs(scipy.special.gammaln(a + b))).sum(-1)
    beta_ll = heads.log_likelihood("beta", x, {"logits": out, "log_concentration": log_kappa})
    assert np.all(np.abs(np.asarray(beta_ll, np.float64) - beta_reference)
                  <= 64 * np.finfo(np.float32).eps * magnitude)
    levels = {name for name in heads.NAMES if heads.get(name).uses_levels}
    assert set(cases) | {"beta"} | levels == set(heads.NAMES)
    np.testing.assert_allclose(heads.get("continuous_bernoulli").expected_value({"logits": out}),
                               likelihoods.continuous_bernoulli_mean(out), rtol=1e-6)
    np.testing.assert_allclose(heads.get("bernoulli").expected_value({"logits": out}),
                               jax.nn.sigmoid(out), rtol=1e-6)


def test_samples_have_the_decoder_moments():
    n = 20_000
    key = jax.random.key(8)
    sample = jax.jit(lambda k, name, o, s=None: heads.get(name).sample(k, o, sigma=s),
                     static_argnums=1)
    logits = jnp.broadcast_to(jnp.array([-2.0, 0.0, 1.5]), (n, 3))
    x = sample(key, "bernoulli", {"logits": logits})
    assert set(np.unique(np.asarray(x))) <= {0.0, 1.0}
    p = jax.nn.sigmoid(logits[0])
    # Monte-Carlo tolerance: 5 standard errors sqrt(p(1-p)/n).
    np.testing.assert_array_less(np.abs(x.mean(0) - p), 5 * np.sqrt(p * (1 - p) / n))
    mean = jnp.broadcast_to(jnp.array([0.2, 0.8]), (n, 2))
    log_sigma = jnp.broadcast_to(jnp.log(jnp.array([0.1, 0.5])), (n, 2))
    x = sample(key, "gaussian_per_pixel", {"mean": mean, "log_sigma": log_sigma})
    np.testing.assert_allclose(x.mean(0), [0.2, 0.8], atol=5 * 0.5 / np.sqrt(n))
    np.testing.assert_allclose(x.std(0), [0.1, 0.5], rtol=0.03)
    x = sample(key, "gaussian_fixed", {"mean": mean}, 0.3)
    np.testing.assert_allclose(x.std(0), [0.3, 0.3], rtol=0.03)


@pytest.mark.parametrize("logit", [-30.0, -3.0, -1e-6, 0.0, 0.7, 5.0, 1e4])
def test_continuous_bernoulli_sampler_follows_its_cdf(logit):
    """F(x) = (e^{l x} - 1) / (e^l - 1) (uniform at l = 0); KS test at n = 4000."""
    n = 4000
    x = np.asarray(heads.get("continuous_bernoulli").sample(
        jax.random.key(3), {"logits": jnp.full((n,), logit, jnp.float32)}), np.float64)
    assert np.all((x >= 0) & (x <= 1))

    def cdf(t):
        if abs(logit) < 1e-8:
            return t
        if logit > 0:  # 1 - F(1 - t) of the mirrored law, in a form that does not overflow
            return 1 - np.expm1(-logit * (1 - t)) / np.expm1(-logit)
        return np.expm1(logit * t) / np.expm1(logit)

    assert scipy.stats.kstest(x, cdf).pvalue > 1e-3


def test_unknown_head_missing_sigma_and_no_sampler_are_named():
    with pytest.raises(ValueError, match="likelihood 'gauss'"):
        Decoder(hidden=H, output_dim=D, likelihood="gauss").init(
            jax.random.key(0), jnp.zeros((1, Z)))
    with pytest.raises(ValueError, match="sigma"):
        heads.log_likelihood("gaussian_fixed", jnp.ones((B, D)), {"mean": jnp.ones((B, D))})
    with pytest.raises(ValueError, match="no sampler"):
        heads.get("gaussian_optimal").sample(jax.random.key(0), {"mean": jnp.zeros((1, 2))})
    with pytest.raises(ValueError, match="sigma"):
        heads.get("gaussian_fixed").sample(jax.random.key(0), {"mean": jnp.zeros((1, 2))})
    with pytest.raises(ValueError, match="sigma"):
        heads.log_likelihood("laplace_fixed", jnp.ones((B, D)), {"mean": jnp.ones((B, D))})
    assert "gaussian_optimal" not in heads.sampleable()
    assert set(heads.sampleable()) == set(heads.NAMES) - {"gaussian_optimal"}


@pytest.mark.parametrize("name", ["gaussian_per_pixel", "gaussian_shared"])
def test_min_sigma_floors_a_learned_sigma(name):
    decoder = Decoder(hidden=H, output_dim=D, likelihood=name, init_log_sigma=-9.0,
                      min_sigma=0.02)
    params = decoder.init(jax.random.key(0), jnp.zeros((1, Z)))
    if name == "gaussian_per_pixel":  # push the raw head far below the floor
        params["params"]["log_sigma"]["bias"] = jnp.full((D,), -9.0)
    outputs = decoder.apply(params, jax.random.normal(jax.random.key(1), (B, Z)))
    np.testing.assert_allclose(jnp.min(outputs["log_sigma"]), np.log(0.02), rtol=1e-6)
    raw = Decoder(hidden=H, output_dim=D, likelihood=name, init_log_sigma=-9.0)
    raw_outputs = raw.apply(params, jax.random.normal(jax.random.key(1), (B, Z)))
    np.testing.assert_allclose(outputs["log_sigma"],
                               jnp.maximum(raw_outputs["log_sigma"], np.log(0.02)), rtol=1e-6)


def test_new_heads_sample_their_distributions():
    """Laplace, logistic and Beta samplers: mean and std against the closed forms
    (Laplace std sqrt(2) b, logistic std pi s / sqrt(3), Beta mean m and variance
    m (1 - m) / (kappa + 1)), 5 standard errors (std: 3% at n = 20,000)."""
    n = 20_000
    key = jax.random.key(11)
    mean = jnp.broadcast_to(jnp.array([0.2, 0.7]), (n, 2))
    log_scale = jnp.broadcast_to(jnp.log(jnp.array([0.05, 0.1])), (n, 2))
    outputs = {"mean": mean, "log_scale": log_scale}
    for name, std in (("laplace_per_pixel", np.sqrt(2) * np.array([0.05, 0.1])),
                      ("logistic_per_pixel", np.pi / np.sqrt(3) * np.array([0.05, 0.1]))):
        x = heads.get(name).sample(key, outputs)
        error = np.abs(np.asarray(x).mean(0) - [0.2, 0.7])
        np.testing.assert_array_less(error, 5 * std / np.sqrt(n))
        np.testing.assert_allclose(x.std(0), std, rtol=0.03, err_msg=name)
    x = heads.get("laplace_fixed").sample(key, {"mean": mean}, sigma=0.1)
    np.testing.assert_allclose(x.std(0), np.sqrt(2) * 0.1, rtol=0.03)
    logits = jnp.broadcast_to(jnp.array([-1.0, 2.0]), (n, 2))
    log_kappa = jnp.broadcast_to(jnp.log(jnp.array([4.0, 20.0])), (n, 2))
    x = heads.get("beta").sample(key, {"logits": logits, "log_concentration": log_kappa})
    m = scipy.special.expit(np.array([-1.0, 2.0]))
    var = m * (1 - m) / (np.array([4.0, 20.0]) + 1)
    assert np.all((np.asarray(x) > 0) & (np.asarray(x) < 1))
    np.testing.assert_array_less(np.abs(np.asarray(x).mean(0) - m), 5 * np.sqrt(var / n))
    np.testing.assert_allclose(x.var(0), var, rtol=0.06)


def test_beta_head_bounds_the_mean_inside_the_open_interval():
    decoder = Decoder(hidden=H, output_dim=D, likelihood="beta")
    params = decoder.init(jax.random.key(0), jnp.zeros((1, Z)))
    params["params"]["out"]["bias"] = jnp.full((D,), 80.0)  # a saturated sigmoid
    outputs = decoder.apply(params, jnp.zeros((B, Z)))
    mean = heads.get("beta").expected_value(outputs)
    assert bool(jnp.all(mean < 1.0))
    x = jnp.full((B, D), 0.999)
    assert bool(jnp.all(jnp.isfinite(heads.log_likelihood("beta", x, outputs))))


@pytest.mark.parametrize("name", ["gaussian_per_pixel", "laplace_shared"])
def test_soft_floor_is_the_sigma_vae_soft_clip(name):
    """sigma_floor="soft": log sigma = log m + softplus(raw - log m), smooth at the floor."""
    key = "log_scale" if name.startswith("laplace") else "log_sigma"
    soft = Decoder(hidden=H, output_dim=D, likelihood=name, init_log_sigma=-3.0,
                   min_sigma=0.05, sigma_floor="soft")
    params = soft.init(jax.random.key(0), jnp.zeros((1, Z)))
    z = jax.random.normal(jax.random.key(1), (B, Z))
    raw = Decoder(hidden=H, output_dim=D, likelihood=name, init_log_sigma=-3.0).apply(params, z)
    expected = np.log(0.05) + np.logaddexp(0.0, np.asarray(raw[key], np.float64) - np.log(0.05))
    # float32 sum of two terms of magnitude <= 6: a few eps * 6 absolute.
    np.testing.assert_allclose(soft.apply(params, z)[key], expected, rtol=0,
                               atol=8 * np.finfo(np.float32).eps * 6)
    with pytest.raises(ValueError, match="sigma_floor"):
        Decoder(hidden=H, output_dim=D, likelihood=name, min_sigma=0.05,
                sigma_floor="smooth").init(jax.random.key(0), jnp.zeros((1, Z)))


def test_level_heads_are_their_library_formulas_and_sample_on_the_grid():
    """The discretised and categorical heads: log p is the vaejax.discretized function,
    samples lie on the k-level grid and their mean is the head's expected value (5 standard
    errors of n = 20,000 draws)."""
    from vaejax import discretized

    k, n = 17, 20_000
    x = jnp.round(jax.random.uniform(jax.random.key(0), (B, D)) * (k - 1)) / (k - 1)
    mean = jax.random.uniform(jax.random.key(1), (B, D))
    log_scale = jnp.full((B, D), -2.0)
    logits = jax.random.normal(jax.random.key(2), (B, D, k))
    mixture = {key: jax.random.normal(jax.random.key(3 + i), (B, D, 5)) * 0.3
               for i, key in enumerate(("logit_weights", "means", "log_scales"))}
    cases = {
        "discretized_gaussian": ({"mean": mean, "log_scale": log_scale},
                                 discretized.discretized_gaussian_log_likelihood(
                                     x, mean, jnp.exp(log_scale), num_levels=k)),
        "discretized_logistic": ({"mean": mean, "log_scale": log_scale},
                                 discretized.discretized_logistic_log_likelihood(
                                     x, mean, jnp.exp(log_scale), num_levels=k)),
        "categorical": ({"logits": logits},
                        discretized.categorical_log_likelihood(x, logits, num_levels=k)),
        "discretized_logistic_mixture": (mixture,
                                         discretized.discretized_logistic_mixture_log_likelihood(
                                             x, *mixture.values(), num_levels=k)),
    }
    for name, (outputs, expected) in cases.items():
        head = heads.get(name)
        np.testing.assert_allclose(head.log_likelihood(x, outputs, num_levels=k), expected,
                                   rtol=1e-6, err_msg=name)
        with pytest.raises(ValueError, match="num_levels"):
            head.log_likelihood(x, outputs)
        one = jax.tree.map(lambda a: jnp.broadcast_to(a[:1, :2], (n, 2, *a.shape[2:])), outputs)
        draws = np.asarray(head.sample(jax.random.key(9), one, num_levels=k))
        assert np.allclose(draws * (k - 1), np.round(draws * (k - 1)))
        assert draws.min() >= 0 and draws.max() <= 1
        expected_mean = np.asarray(head.expected_value(one, num_levels=k))[0]
        np.testing.assert_array_less(np.abs(draws.mean(0) - expected_mean),
                                     5 * draws.std(0) / np.sqrt(n) + 1e-6, err_msg=name)
