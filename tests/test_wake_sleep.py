"""vaejax.wake_sleep: each phase against a hand computation, and where its gradient goes.

References: log q(z|x) and log N(z; 0, I) from scipy.stats.norm.logpdf; log Bernoulli from
its definition x log p + (1 - x) log(1 - p), in float64 numpy. The phase gradients are
checked structurally: the wake term must give an exactly-zero gradient to the encoder, the
sleep term an exactly-zero gradient to the decoder (Hinton et al. 1995; AEVB section 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from vaejax import wake_sleep
from vaejax.models import VAE

B, D, Z, H = 6, 10, 3, 7


def _model(likelihood="bernoulli"):
    model = VAE(hidden=H, latent=Z, output_dim=D, likelihood=likelihood, init_scale=0.3)
    key = jax.random.key(0)
    # Drawn with numpy (N(0, 0.3^2) like the model's init): no XLA compilation of init.
    shapes = jax.eval_shape(lambda: model.init(key, jnp.zeros((1, D)), key))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32),
                          shapes)
    return model, params


def _closures(model, params, *, jit=False):
    encode = lambda x: model.apply(params, x, method=VAE.encode)  # noqa: E731
    decode = lambda z: model.apply(params, z, method=VAE.decode)  # noqa: E731
    # Eager flax applies compile every primitive separately: jit when called directly.
    return (jax.jit(encode), jax.jit(decode)) if jit else (encode, decode)


def _data(seed=1):
    return (np.random.default_rng(seed).random((B, D)) < 0.4).astype(np.float32)


def test_sleep_phase_is_log_q_of_the_dream_by_hand():
    model, params = _model()
    encode, decode = _closures(model, params, jit=True)
    rng = np.random.default_rng(2)
    z, x = rng.normal(size=(B, Z)).astype(np.float32), _data()
    got = jax.jit(wake_sleep.sleep_log_recognition, static_argnums=2)(z, x, encode)
    mean, log_var = (np.asarray(a, np.float64) for a in encode(x))
    expected = scipy.stats.norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The sleep term of a whole step is log q(z_dream | x_dream) of its own dream.
    noise = wake_sleep.draw_noise(jax.random.key(3), B, Z)
    terms = jax.jit(wake_sleep.wake_sleep_terms, static_argnums=(2, 3, 4))(
        noise, x, encode, decode, "bernoulli")
    z_dream, x_dream = jax.jit(wake_sleep.dream, static_argnums=(1, 2))(noise, decode,
                                                                         "bernoulli")
    mean, log_var = (np.asarray(a, np.float64) for a in encode(x_dream))
    by_hand = scipy.stats.norm.logpdf(np.asarray(z_dream), mean, np.exp(0.5 * log_var))
    np.testing.assert_allclose(terms.sleep, by_hand.sum(axis=1), rtol=1e-5)


def test_masked_sleep_phase_sums_only_the_used_dimensions():
    model, params = _model()
    encode, _ = _closures(model, params, jit=True)
    rng = np.random.default_rng(4)
    z, x = rng.normal(size=(B, Z)).astype(np.float32), _data()
    mask = np.array([1.0, 1.0, 0.0], np.float32)
    got = jax.jit(wake_sleep.sleep_log_recognition, static_argnums=2)(z, x, encode,
                                                                       latent_mask=mask)
    mean, log_var = (np.asarray(a, np.float64) for a in encode(x))
    expected = scipy.stats.norm.logpdf(z, mean, np.exp(0.5 * log_var))[:, :2].sum(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_wake_phase_is_log_joint_by_hand():
    model, params = _model()
    _, decode = _closures(model, params, jit=True)
    z, x = np.random.default_rng(5).normal(size=(B, Z)).astype(np.float32), _data()
    got = jax.jit(wake_sleep.wake_log_joint, static_argnums=(2, 3))(x, z, decode, "bernoulli")
    p = 1.0 / (1.0 + np.exp(-np.asarray(decode(z)["logits"], np.float64)))
    log_lik = (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)
    log_prior = scipy.stats.norm.logpdf(z).sum(axis=1)
    np.testing.assert_allclose(got, log_lik + log_prior, rtol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_per_pixel"])
def test_each_phase_trains_only_its_own_network(likelihood):
    model, params = _model(likelihood)
    x = _data()
    noise = wake_sleep.draw_noise(jax.random.key(6), B, Z)

    def phase(params, name):
        encode, decode = _closures(model, params)
        terms = wake_sleep.wake_sleep_terms(noise, x, encode, decode, likelihood)
        return jnp.mean(getattr(terms, name))

    grad = jax.jit(jax.grad(phase), static_argnums=1)
    wake = grad(params, "wake")["params"]
    sleep = grad(params, "sleep")["params"]

    def norms(tree):
        return [float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(tree)]

    # Wake: z ~ q(z|x) is held fixed, so the encoder gets exactly nothing.
    assert norms(wake["encoder"]) == [0.0] * len(norms(wake["encoder"]))
    assert min(norms(wake["decoder"])) > 0
    # Sleep: the dream (z, x) is held fixed, so the decoder gets exactly nothing.
    assert norms(sleep["decoder"]) == [0.0] * len(norms(sleep["decoder"]))
    assert min(norms(sleep["encoder"])) > 0

    # One step on the summed loss is one wake step plus one sleep step.
    def loss(params):
        encode, decode = _closures(model, params)
        return wake_sleep.wake_sleep_terms(noise, x, encode, decode, likelihood).loss()

    total = jax.jit(jax.grad(loss))(params)["params"]
    for part, phase_grads in (("decoder", wake), ("encoder", sleep)):
        for got, want in zip(jax.tree.leaves(total[part]), jax.tree.leaves(phase_grads[part]),
                             strict=True):
            np.testing.assert_allclose(got, -want, rtol=1e-6, atol=1e-7)


def test_wake_phase_uses_the_given_noise_as_a_posterior_sample():
    model, params = _model()
    encode, decode = _closures(model, params, jit=True)
    x = _data()
    noise = wake_sleep.draw_noise(jax.random.key(7), B, Z)
    terms = jax.jit(wake_sleep.wake_sleep_terms, static_argnums=(2, 3, 4))(
        noise, x, encode, decode, "bernoulli")
    mean, log_var = encode(x)
    z = mean + jnp.exp(0.5 * log_var) * noise.wake
    wake = jax.jit(wake_sleep.wake_log_joint, static_argnums=(2, 3))(x, z, decode, "bernoulli")
    np.testing.assert_allclose(terms.wake, wake, rtol=1e-5)


def test_terms_are_jittable_and_finite():
    model, params = _model("gaussian_per_pixel")
    x = jnp.asarray(np.random.default_rng(9).random((B, D)), jnp.float32)

    @jax.jit
    def loss(params, key):
        encode, decode = _closures(model, params)
        noise = wake_sleep.draw_noise(key, B, Z)
        return wake_sleep.wake_sleep_terms(noise, x, encode, decode,
                                           "gaussian_per_pixel").loss()

    values = [float(loss(params, jax.random.key(k))) for k in range(3)]
    assert np.all(np.isfinite(values)) and len(set(values)) == 3  # fresh noise, fresh loss
