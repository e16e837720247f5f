"""The wake-sleep algorithm for the AEVB encoder and decoder, as pure functions.

Wake-sleep (Hinton, Dayan, Frey & Neal 1995) is AEVB's baseline in Kingma & Welling's
figures 2 and 3. It trains the same two networks with two separate objectives:

* **wake phase** (decoder / generative model): draw z ~ q(z|x) for a data example and
  raise log p(x, z) = log p(x|z) + log p(z). z is held fixed: no gradient reaches the
  recognition model q.
* **sleep phase** (encoder / recognition model): "dream" z ~ p(z) = N(0, I) and
  x ~ p(x|z) from the current decoder, and raise log q(z|x) on the dream. The dream is
  held fixed: no gradient reaches the decoder.

Neither phase maximises a bound on log p(x); the sleep phase fits q to the wrong KL
direction (KL(p || q)) on dreamed rather than real data. The lower bound reported for a
wake-sleep model is the same ELBO estimate as for AEVB (:func:`vaejax.elbo.elbo`),
computed with its recognition model.

The networks enter through closures, like :mod:`vaejax.elbo`:
``encode_fn: x [B, D] -> (mean [B, Z], log_var [B, Z])`` and
``decode_fn: z [B, Z] -> decoder outputs`` (the dictionary of :class:`vaejax.models.Decoder`);
the head (:mod:`vaejax.heads`) gives log p(x|z) and the dream sampler.
The random draws are arguments (:class:`WakeSleepNoise`), so that a model padded to a
larger latent size can be fed the same draws as the smaller model it contains; an optional
``latent_mask`` [Z] (1 = used, 0 = padding) keeps padded dimensions out of every sum.

References:
  Hinton, Dayan, Frey & Neal, The "wake-sleep" algorithm for unsupervised neural
  networks, Science 268 (1995). Kingma & Welling, Auto-Encoding Variational Bayes
  (arXiv 1312.6114), section 5 and figures 2-3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike

from vaejax import heads
from vaejax.kl import diagonal_gaussian_log_density

EncodeFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
DecodeFn = Callable[[jax.Array], dict[str, jax.Array]]


@struct.dataclass
class WakeSleepNoise:
    """The random draws of one wake-sleep step."""

    wake: jax.Array  # [B, Z] eps: the wake-phase z = mean + exp(log_var / 2) * eps, z ~ q(z|x)
    dream: jax.Array  # [B, Z] the sleep-phase z ~ p(z) = N(0, I)
    dream_key: jax.Array  # PRNG key of the dreamed x ~ p(x | z_dream)


@struct.dataclass
class WakeSleepTerms:
    """The two wake-sleep objectives, per example, in nats (both maximised)."""

    wake: jax.Array  # [B] log p(x, z) = log p(x|z) + log p(z), z ~ q(z|x) held fixed
    sleep: jax.Array  # [B] log q(z_dream | x_dream), the dream held fixed

    def loss(self) -> jax.Array:
        """-(mean wake + mean sleep): one gradient step on it is one wake and one sleep step.

        The two terms depend on disjoint parameters (the decoder and the encoder), so the
        gradient of the sum is exactly the pair of phase gradients.
        """
        return -(jnp.mean(self.wake) + jnp.mean(self.sleep))


def draw_noise(key: jax.Array, batch_size: int, latent: int, dtype=jnp.float32) -> WakeSleepNoise:
    """Fresh draws for one step: wake eps and dream z, each [batch_size, latent]."""
    wake_key, dream_key, x_key = jax.random.split(key, 3)
    return WakeSleepNoise(wake=jax.random.normal(wake_key, (batch_size, latent), dtype),
                          dream=jax.random.normal(dream_key, (batch_size, latent), dtype),
                          dream_key=x_key)


def _masked_sum(values: jax.Array, latent_mask: ArrayLike | None) -> jax.Array:
    """Sum over the last (latent) axis, counting only the dimensions the mask keeps."""
    if latent_mask is not None:
        values = values * jnp.asarray(latent_mask, values.dtype)
    return jnp.sum(values, axis=-1)


def _gaussian_log_density(z, mean, log_var, latent_mask):
    per_dim = diagonal_gaussian_log_density(z, mean, log_var, event_ndims=0)
    return _masked_sum(per_dim, latent_mask)


def wake_log_joint(x: ArrayLike, z: ArrayLike, decode_fn: DecodeFn, likelihood: str, *,
                   sigma: Any = None, latent_mask: ArrayLike | None = None) -> jax.Array:
    """Wake phase: log p(x, z) = log p(x|z) + log N(z; 0, I) with z held fixed.

    Args:
      x: [B, D] data.
      z: [B, Z] latents drawn from q(z|x); ``stop_gradient`` is applied here, so the
        gradient of the result reaches only the decoder.
      decode_fn: z -> decoder outputs.
      likelihood: the decoder's likelihood name.
      sigma: fixed sigma (``gaussian_fixed``).
      latent_mask: [Z] 1 for used dimensions, 0 for padding (z is multiplied by it).

    Returns:
      [B] log p(x, z) in nats.
    """
    z = jax.lax.stop_gradient(jnp.asarray(z))
    if latent_mask is not None:
        z = z * jnp.asarray(latent_mask, z.dtype)
    log_lik = heads.log_likelihood(likelihood, jnp.asarray(x), decode_fn(z), sigma=sigma)
    return log_lik + _gaussian_log_density(z, 0.0, jnp.zeros_like(z), latent_mask)


def dream(noise: WakeSleepNoise, decode_fn: DecodeFn, likelihood: str, *, sigma: Any = None,
          latent_mask: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
    """Sleep-phase fantasies: z = ``noise.dream`` ~ N(0, I) and x ~ p(x|z), both held fixed.

    Returns:
      (z [B, Z] with padded dimensions zeroed, x [B, D]); ``stop_gradient`` is applied.
    """
    z = noise.dream
    if latent_mask is not None:
        z = z * jnp.asarray(latent_mask, z.dtype)
    x = heads.get(likelihood).sample(noise.dream_key, decode_fn(z), sigma=sigma)
    return jax.lax.stop_gradient(z), jax.lax.stop_gradient(x)


def sleep_log_recognition(z: ArrayLike, x: ArrayLike, encode_fn: EncodeFn, *,
                          latent_mask: ArrayLike | None = None) -> jax.Array:
    """Sleep phase: log q(z|x) on a dream (z, x), both held fixed; only q gets a gradient.

    Args:
      z: [B, Z] dreamed latents.
      x: [B, D] dreamed data.
      encode_fn: x -> (mean, log_var) of q(z|x).
      latent_mask: [Z] 1 for used dimensions; padded ones are left out of the sum.

    Returns:
      [B] log q(z|x) in nats.
    """
    z = jax.lax.stop_gradient(jnp.asarray(z))
    mean, log_var = encode_fn(jax.lax.stop_gradient(jnp.asarray(x)))
    return _gaussian_log_density(z, mean, log_var, latent_mask)


def wake_sleep_terms(noise: WakeSleepNoise, x: ArrayLike, encode_fn: EncodeFn,
                     decode_fn: DecodeFn, likelihood: str, *, sigma: Any = None,
                     latent_mask: ArrayLike | None = None) -> WakeSleepTerms:
    """Both phases of one wake-sleep step on a batch; ``.loss()`` is the training loss.

    Args:
      noise: the step's draws (:func:`draw_noise`), latent axis as wide as ``encode_fn``'s.
      x: [B, D] data batch.
      encode_fn: x -> (mean [B, Z], log_var [B, Z]).
      decode_fn: z -> decoder outputs.
      likelihood: a head with a sampler (:func:`vaejax.heads.sampleable`).
      sigma: fixed sigma (``gaussian_fixed``).
      latent_mask: [Z] 1 for used latent dimensions, 0 for padding.

    Returns:
      WakeSleepTerms with ``wake`` [B] and ``sleep`` [B].

    References:
      Hinton et al., Science 268 (1995); Kingma & Welling (arXiv 1312.6114), section 5.
    """
    x = jnp.asarray(x)
    mean, log_var = encode_fn(x)
    z_wake = mean + jnp.exp(0.5 * log_var) * noise.wake  # z ~ q(z|x), held fixed below
    wake = wake_log_joint(x, z_wake, decode_fn, likelihood, sigma=sigma,
                          latent_mask=latent_mask)
    z_dream, x_dream = dream(noise, decode_fn, likelihood, sigma=sigma, latent_mask=latent_mask)
    sleep = sleep_log_recognition(z_dream, x_dream, encode_fn, latent_mask=latent_mask)
    return WakeSleepTerms(wake=wake, sleep=sleep)
