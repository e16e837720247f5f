"""Model shapes and initialisation (the heads themselves: tests/test_heads.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.models import Decoder, GaussianEncoder

B, D, Z, H = 5, 12, 3, 16


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


def test_init_log_sigma_reaches_the_shared_sigma_through_config():
    from vaejax import config as config_lib
    from vaejax import data as data_lib
    from vaejax import trainer as trainer_lib

    config = config_lib.default_config()
    config.model.likelihood = "gaussian_shared"
    config.model.init_log_sigma = -2.5
    config.data.dataset = "synthetic"
    model = trainer_lib.build(config, data_lib.load_dataset("synthetic"))[0].model
    x = jnp.zeros((B, D))
    params = model.init(jax.random.key(0), x, jax.random.key(1))
    outputs, _ = model.apply(params, x, jax.random.key(2))
    np.testing.assert_allclose(outputs["log_sigma"], -2.5)
