"""The likelihood-head registry: each head's log-likelihood is the library formula it
names, its expected value and sampler have the distribution's moments (Monte-Carlo bounds
from the sample standard error), the continuous-Bernoulli sampler follows its CDF
(Kolmogorov-Smirnov against the closed form), and bad names or a missing sigma are named.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from vaejax import heads, likelihoods
from vaejax.models import VAE, Decoder

B, D, Z, H = 5, 12, 3, 16


@pytest.mark.parametrize("name", heads.NAMES)
def test_vae_outputs_and_log_likelihood_per_head(name):
    x = jax.random.uniform(jax.random.key(0), (B, D))
    model = VAE(hidden=H, latent=Z, output_dim=D, likelihood=name)
    params = model.init(jax.random.key(1), x, jax.random.key(2))
    outputs, aux = model.apply(params, x, jax.random.key(3))
    assert set(aux) == {"mu", "logvar", "z"} and all(aux[k].shape == (B, Z) for k in aux)
    main = "logits" if "bernoulli" in name else "mean"
    assert outputs[main].shape == (B, D)
    if name == "gaussian_shared":
        assert outputs["log_sigma"].shape == ()
    if name == "gaussian_per_pixel":
        assert outputs["log_sigma"].shape == (B, D)
    ll = heads.get(name).log_likelihood(x, outputs, sigma=0.3)
    assert ll.shape == (B,) and bool(jnp.all(jnp.isfinite(ll)))
    assert heads.get(name).expected_value(outputs).shape == (B, D)


def test_each_head_is_its_library_formula():
    x = jax.random.uniform(jax.random.key(0), (B, D))
    out = jax.random.normal(jax.random.key(1), (B, D))
    log_sigma = jnp.full((B, D), -0.7)
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
    }
    assert set(cases) == set(heads.NAMES)
    for name, (outputs, expected) in cases.items():
        np.testing.assert_allclose(heads.log_likelihood(name, x, outputs, sigma=0.2), expected,
                                   rtol=1e-6, err_msg=name)
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
