"""Reparameterisation, the ELBO over L Monte-Carlo samples, and the IWAE bound over K samples.

The decoder enters only through ``log_likelihood_fn: z [B, Z] -> [B]`` (nats per
example), a closure over the data and the decoder parameters, so any decoder and
any likelihood from :mod:`vaejax.likelihoods` plug in. The sample axis is a
vmapped axis; sample k always uses ``jax.random.fold_in(key, k)``, so the ELBO
with L samples and the IWAE bound with K = L samples see the same draws.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike

from vaejax.kl import diagonal_gaussian_log_density, kl_standard_normal
from vaejax.likelihoods import _as_float_array, _check_same_shape

LogLikelihoodFn = Callable[[jax.Array], jax.Array]


@struct.dataclass
class ElboTerms:
    """The parts of the ELBO, per example, in nats.

    ``elbo = recon - kl``; the training loss with a KL weight is ``-(recon - beta * kl)``.
    """

    elbo: jax.Array  # [B] recon - kl
    recon: jax.Array  # [B] E_q[log p(x|z)], averaged over the L samples
    kl: jax.Array  # [B] KL(q(z|x) || p(z)), closed form or averaged over the L samples

    def loss(self, beta: float | jax.Array = 1.0) -> jax.Array:
        """Batch-mean negative beta-ELBO: ``mean_b(-(recon - beta * kl))``; a scalar."""
        return -jnp.mean(self.recon - beta * self.kl)


def _check_num_samples(name: str, value: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")


def _standard_normal_draws(key: jax.Array, indices: jax.Array, shape, dtype) -> jax.Array:
    """eps_k ~ N(0, I) of ``shape`` from ``fold_in(key, k)`` for each k: [K, *shape]."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(key, k), shape, dtype))(indices)


def reparameterize(
    key: jax.Array,
    mean: ArrayLike,
    log_var: ArrayLike,
    *,
    num_samples: int | None = None,
) -> jax.Array:
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I): a differentiable sample of q(z|x).

    Args:
      key: PRNG key.
      mean: [..., Z] posterior mean.
      log_var: [..., Z] posterior log-variance.
      num_samples: None for one sample of shape [..., Z]; L for [L, ..., Z]
        (sample k drawn from ``fold_in(key, k)``).

    Returns:
      [..., Z] or [L, ..., Z] latent samples.

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), section 2.4.
    """
    mean = _as_float_array("mean", mean)
    log_var = _as_float_array("log_var", log_var)
    _check_same_shape("mean", mean, "log_var", log_var)
    if num_samples is None:
        eps = jax.random.normal(key, mean.shape, mean.dtype)
    else:
        _check_num_samples("num_samples", num_samples)
        eps = _standard_normal_draws(key, jnp.arange(int(num_samples)), mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps


def elbo(
    key: jax.Array,
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: LogLikelihoodFn,
    *,
    num_samples: int = 1,
    kl: Literal["analytic", "monte_carlo"] = "analytic",
) -> ElboTerms:
    """Monte-Carlo ELBO with L samples as a vmapped axis, per example.

    ``ELBO = 1/L sum_l log p(x | z_l) - KL(q || N(0, I))``, z_l = mean + sigma * eps_l
    (the SGVB estimator B of AEVB eq. 7 with ``kl="analytic"``, estimator A of eq. 6
    with ``kl="monte_carlo"``).

    Args:
      key: PRNG key.
      posterior_mean: [B, Z] encoder mean.
      posterior_log_var: [B, Z] encoder log-variance.
      log_likelihood_fn: z [B, Z] -> [B] log p(x|z) in nats per example.
      num_samples: L >= 1.
      kl: ``"analytic"`` (closed form) or ``"monte_carlo"`` (log q(z) - log p(z) at the samples).

    Returns:
      ElboTerms with ``elbo``, ``recon``, ``kl`` each [B].

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), eqs. 6-7, 10.
    """
    _check_num_samples("num_samples", num_samples)
    if kl not in ("analytic", "monte_carlo"):
        raise ValueError(f"`kl` must be 'analytic' or 'monte_carlo', got {kl!r}.")
    mean = _as_float_array("posterior_mean", posterior_mean)
    log_var = _as_float_array("posterior_log_var", posterior_log_var)
    _check_same_shape("posterior_mean", mean, "posterior_log_var", log_var)
    z = reparameterize(key, mean, log_var, num_samples=num_samples)  # [L, B, Z]
    recon = jnp.mean(jax.vmap(log_likelihood_fn)(z), axis=0)
    if kl == "analytic":
        kl_value = kl_standard_normal(mean, log_var)
    else:
        log_q = diagonal_gaussian_log_density(z, mean, log_var)
        log_p = diagonal_gaussian_log_density(z, 0.0, jnp.zeros_like(z))
        kl_value = jnp.mean(log_q - log_p, axis=0)
    return ElboTerms(elbo=recon - kl_value, recon=recon, kl=kl_value)


def iwae_bound(
    key: jax.Array,
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: LogLikelihoodFn,
    *,
    num_samples: int,
    chunk_size: int | None = None,
) -> jax.Array:
    """Importance-weighted bound log 1/K sum_k p(x, z_k)/q(z_k|x) with K samples, per example.

    It lower-bounds log p(x), is non-decreasing in K and tends to log p(x) as
    K -> infinity (K = 1 is the ELBO). The K samples are evaluated in chunks of
    ``chunk_size`` inside a ``lax.scan`` with a running log-sum-exp, so memory is
    that of ``chunk_size`` decoder passes: K = 5000 fits where a single vmap would not.
    The result does not depend on ``chunk_size`` (sample k always uses ``fold_in(key, k)``).

    Args:
      key: PRNG key.
      posterior_mean: [B, Z] encoder mean.
      posterior_log_var: [B, Z] encoder log-variance.
      log_likelihood_fn: z [B, Z] -> [B] log p(x|z) in nats per example.
      num_samples: K >= 1.
      chunk_size: samples per chunk (default min(K, 100)).

    Returns:
      [B] estimate of log p(x) in nats.

    References:
      Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders (arXiv 1509.00519), eq. 8.
    """
    _check_num_samples("num_samples", num_samples)
    chunk_size = min(num_samples, 100) if chunk_size is None else chunk_size
    _check_num_samples("chunk_size", chunk_size)
    num_samples, chunk_size = int(num_samples), min(int(chunk_size), int(num_samples))
    mean = _as_float_array("posterior_mean", posterior_mean)
    log_var = _as_float_array("posterior_log_var", posterior_log_var)
    _check_same_shape("posterior_mean", mean, "posterior_log_var", log_var)

    num_chunks = -(-num_samples // chunk_size)
    std = jnp.exp(0.5 * log_var)

    def log_weights(indices: jax.Array) -> jax.Array:
        eps = _standard_normal_draws(key, indices, mean.shape, mean.dtype)  # [C, B, Z]
        z = mean + std * eps
        log_q = diagonal_gaussian_log_density(z, mean, log_var)
        log_p = diagonal_gaussian_log_density(z, 0.0, jnp.zeros_like(z))
        log_w = jax.vmap(log_likelihood_fn)(z) + log_p - log_q  # [C, B]
        # Padding samples of the last chunk (index >= K) get weight zero.
        return jnp.where((indices < num_samples)[:, None], log_w, -jnp.inf)

    def finite_or_zero(value):
        # While every weight so far is zero the max is -inf: shift by 0 then (not -inf - -inf).
        return jnp.where(jnp.isfinite(value), value, 0.0)

    def step(carry, chunk_index):
        running_max, running_sum = carry  # running_sum is relative to finite_or_zero(max)
        log_w = log_weights(chunk_index * chunk_size + jnp.arange(chunk_size))
        new_max = jnp.maximum(running_max, jnp.max(log_w, axis=0))
        shift = finite_or_zero(new_max)
        # Nothing accumulated yet (max -inf, sum 0): rescale by 0, never by exp(+large).
        rescale = jnp.where(jnp.isfinite(running_max), jnp.exp(running_max - shift), 0.0)
        running_sum = running_sum * rescale + jnp.sum(jnp.exp(log_w - shift), axis=0)
        return (new_max, running_sum), None

    batch_shape = mean.shape[:-1]
    init = (jnp.full(batch_shape, -jnp.inf, mean.dtype), jnp.zeros(batch_shape, mean.dtype))
    (log_max, total), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
    return finite_or_zero(log_max) + jnp.log(total) - jnp.log(num_samples)
