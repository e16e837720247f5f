"""Model shapes per decoder head, and the head -> likelihood mapping against direct calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import likelihoods
from vaejax.models import LIKELIHOODS, VAE, Decoder, GaussianEncoder, decoder_log_likelihood

B, D, Z, H = 5, 12, 3, 16


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_vae_outputs_and_log_likelihood(likelihood):
    x = jax.random.uniform(jax.random.key(0), (B, D))
    model = VAE(hidden=H, latent=Z, output_dim=D, likelihood=likelihood)
    params = model.init(jax.random.key(1), x, jax.random.key(2))
    outputs, aux = model.apply(params, x, jax.random.key(3))
    assert set(aux) == {"mu", "logvar", "z"}
    assert all(aux[k].shape == (B, Z) for k in aux)
    main = "logits" if "bernoulli" in likelihood else "mean"
    assert outputs[main].shape == (B, D)
    if likelihood == "gaussian_shared":
        assert outputs["log_sigma"].shape == ()
    if likelihood == "gaussian_per_pixel":
        assert outputs["log_sigma"].shape == (B, D)
    ll = decoder_log_likelihood(likelihood, x, outputs, sigma=0.3)
    assert ll.shape == (B,)
    assert bool(jnp.all(jnp.isfinite(ll)))


def test_decoder_log_likelihood_dispatches_to_the_right_formula():
    x = jax.random.uniform(jax.random.key(0), (B, D))
    out = jax.random.normal(jax.random.key(1), (B, D))
    log_sigma = jnp.full((B, D), -0.7)
    np.testing.assert_allclose(
        decoder_log_likelihood("bernoulli", x, {"logits": out}),
        likelihoods.bernoulli_log_likelihood(x, out))
    np.testing.assert_allclose(
        decoder_log_likelihood("continuous_bernoulli", x, {"logits": out}),
        likelihoods.continuous_bernoulli_log_likelihood(x, out))
    np.testing.assert_allclose(
        decoder_log_likelihood("gaussian_fixed", x, {"mean": out}, sigma=0.2),
        likelihoods.gaussian_log_likelihood(x, out, 0.2))
    np.testing.assert_allclose(
        decoder_log_likelihood("gaussian_per_pixel", x, {"mean": out, "log_sigma": log_sigma}),
        likelihoods.gaussian_log_likelihood(x, out, jnp.exp(log_sigma)), rtol=1e-6)
    np.testing.assert_allclose(
        decoder_log_likelihood("gaussian_optimal", x, {"mean": out}),
        likelihoods.gaussian_log_likelihood(
            x, out, likelihoods.optimal_sigma(x, out, axis="batch")), rtol=1e-6)


def test_sigmoid_mean_and_init_scale():
    dec = Decoder(hidden=H, output_dim=D, likelihood="gaussian_fixed", sigmoid_mean=True,
                  init_scale=0.01)
    params = dec.init(jax.random.key(0), jnp.zeros((1, Z)))
    mean = dec.apply(params, 10 * jax.random.normal(jax.random.key(1), (B, Z)))["mean"]
    assert bool(jnp.all((mean > 0) & (mean < 1)))
    kernel = params["params"]["hidden"]["kernel"]
    assert 0.005 < float(jnp.std(kernel)) < 0.02  # N(0, 0.01^2) weights (AEVB)


def test_encoder_heads():
    enc = GaussianEncoder(hidden=H, latent=Z)
    params = enc.init(jax.random.key(0), jnp.zeros((1, D)))
    mean, log_var = enc.apply(params, jnp.ones((B, D)))
    assert mean.shape == log_var.shape == (B, Z)
    assert not np.allclose(mean, log_var)


def test_unknown_likelihood_and_missing_sigma():
    with pytest.raises(ValueError, match="likelihood 'gauss'"):
        Decoder(hidden=H, output_dim=D, likelihood="gauss").init(
            jax.random.key(0), jnp.zeros((1, Z)))
    with pytest.raises(ValueError, match="sigma"):
        decoder_log_likelihood("gaussian_fixed", jnp.ones((B, D)), {"mean": jnp.ones((B, D))})


def test_init_log_sigma_reaches_the_shared_sigma_through_config():
    from experiments.configs import default
    from vaejax.train import make_model

    config = default.get_config(None)
    config.likelihood = "gaussian_shared"
    config.init_log_sigma = -2.5
    model = make_model(config, D)
    x = jnp.zeros((B, D))
    params = model.init(jax.random.key(0), x, jax.random.key(1))
    outputs, _ = model.apply(params, x, jax.random.key(2))
    np.testing.assert_allclose(outputs["log_sigma"], -2.5)
