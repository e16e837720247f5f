"""Reparameterisation, the ELBO over L Monte-Carlo samples, and the IWAE bound over K samples.

The decoder enters only through ``log_likelihood_fn: z [B, Z] -> [B]`` (nats per
example), a closure over the data and the decoder parameters, so any decoder and
any likelihood from :mod:`vaejax.likelihoods` plug in. It must return one value per
example (the posterior's batch shape); anything else raises ``ValueError`` at trace time
(for images, the likelihood's ``event_ndims`` must cover the whole image, e.g.
``event_ndims=3`` for [B, H, W, C]). The sample axis is a vmapped axis; sample k always
uses ``jax.random.fold_in(key, k)``, so the ELBO with L samples and the IWAE bound with
K = L samples see the same draws.

Precision: z keeps the posterior's dtype (a bfloat16 encoder gives bfloat16 z, as z
feeds the user's decoder): it is computed in float32 from the upcast mean and
log-variance and rounded once. Everything else runs in float32: bfloat16 and float16
posteriors are upcast on entry, log q(z|x) and log p(z) are evaluated at the float32 z
(so the rounding of z counts as part of the decoder, x -> p(x | round(z)), and the
estimators remain exact bounds for that likelihood, with no bfloat16 cancellation in their
gradients), the values ``log_likelihood_fn`` returns are upcast to float32 before the
average over samples and the log-sum-exp, and the results (``ElboTerms`` fields, the IWAE
bound) are float32. float32 stays float32 and float64 (with x64 enabled) stays float64:
the result dtype is the promotion of the posterior, the likelihood values and float32.
Gradients with respect to a low-precision posterior come back in its dtype. A float16 z
overflows beyond 65504 (|mean| + 5 exp(log_var / 2) must stay below it).
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
from vaejax.likelihoods import _as_float_array, _check_same_shape, _promote

LogLikelihoodFn = Callable[[jax.Array], jax.Array]


@struct.dataclass
class ElboTerms:
    """The parts of the ELBO, per example, in nats; each field float32 (float64 if the
    posterior or the likelihood values are float64).

    ``elbo = recon - kl``; the training loss with a KL weight is ``-(recon - beta * kl)``.
    """

    elbo: jax.Array  # [B] recon - kl
    recon: jax.Array  # [B] E_q[log p(x|z)], averaged over the L samples
    kl: jax.Array  # [B] KL(q(z|x) || p(z)), closed form or averaged over the L samples

    def loss(self, beta: float | jax.Array = 1.0) -> jax.Array:
        """Batch-mean negative beta-ELBO: ``mean_b(-(recon - beta * kl))``; a scalar []."""
        return -jnp.mean(self.recon - beta * self.kl)


def _check_num_samples(name: str, value: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")


def _posterior(mean: ArrayLike, log_var: ArrayLike, prefix: str = "posterior_"):
    """Validated (mean, log_var) [..., Z], at least rank 1, in their own dtype."""
    mean = _as_float_array(f"{prefix}mean", mean)
    log_var = _as_float_array(f"{prefix}log_var", log_var)
    _check_same_shape(f"{prefix}mean", mean, f"{prefix}log_var", log_var)
    if mean.ndim < 1:
        raise ValueError(
            f"`{prefix}mean` and `{prefix}log_var` must be [..., Z] with a latent axis, "
            f"got shape {mean.shape}."
        )
    return mean, log_var


def _standard_normal_draws(key: jax.Array, indices: jax.Array, shape, dtype) -> jax.Array:
    """eps_k ~ N(0, I) of ``shape`` from ``fold_in(key, k)`` for each k: [K, *shape]."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(key, k), shape, dtype))(indices)


def _check_per_example(values, batch_shape, z_shape) -> None:
    """Raises unless ``log_likelihood_fn`` gave one value per example: [S, *batch_shape]."""
    shape = getattr(values, "shape", None)
    if shape is None or tuple(shape[1:]) != tuple(batch_shape):
        got = f"a {type(values).__name__}" if shape is None else f"shape {tuple(shape[1:])}"
        raise ValueError(
            f"`log_likelihood_fn` must return one log-likelihood per example, shape "
            f"{tuple(batch_shape)} (the posterior's batch shape) for z of shape "
            f"{tuple(z_shape)}, but it returned {got}. If it calls a likelihood on "
            f"[B, H, W, C] images, the likelihood's `event_ndims` probably needs to cover "
            f"the whole image (e.g. event_ndims=3); a scalar means it reduced over the batch."
        )


def _upcast(values: jax.Array, dtype) -> jax.Array:
    """[...] likelihood values promoted with the posterior's compute dtype (>= float32)."""
    values = jnp.asarray(values)
    return values.astype(jnp.result_type(values, dtype))


def reparameterize(
    key: jax.Array,
    mean: ArrayLike,
    log_var: ArrayLike,
    *,
    num_samples: int | None = None,
) -> jax.Array:
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I): a differentiable sample of q(z|x).

    z keeps the posterior's dtype, as it feeds the user's network: eps is drawn and z
    computed in float32 (or float64) from the upcast mean and log_var, then rounded once
    to the dtype of ``mean`` and ``log_var`` (promoted together). Under jit: as outside
    (no value checks).

    Args:
      key: PRNG key.
      mean: [..., Z] posterior mean.
      log_var: [..., Z] posterior log-variance.
      num_samples: None for one sample of shape [..., Z]; L for [L, ..., Z]
        (sample k drawn from ``fold_in(key, k)``).

    Returns:
      [..., Z] or [L, ..., Z] latent samples, in the posterior's dtype (bfloat16 stays
      bfloat16).

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), section 2.4.
    """
    mean = _as_float_array("mean", mean)
    log_var = _as_float_array("log_var", log_var)
    _check_same_shape("mean", mean, "log_var", log_var)
    z_dtype = jnp.result_type(mean, log_var)
    mean, log_var = _promote(mean, log_var)
    if num_samples is None:
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        return (mean + jnp.exp(0.5 * log_var) * eps).astype(z_dtype)
    _check_num_samples("num_samples", num_samples)
    return _draw(key, jnp.arange(int(num_samples)), mean, log_var).astype(z_dtype)


def _draw(key: jax.Array, indices: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """z_k = mean + exp(log_var/2) eps_k, eps_k from fold_in(key, k), in mean's dtype.

    [..., Z] promoted posterior -> [K, ..., Z]: the draws of :func:`reparameterize` before
    they are rounded to the posterior's dtype.
    """
    eps = _standard_normal_draws(key, indices, mean.shape, mean.dtype)
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
    with ``kl="monte_carlo"``). Under jit: as outside (no value checks here; those of
    the likelihood apply), and the shape check on ``log_likelihood_fn`` is static.

    Args:
      key: PRNG key.
      posterior_mean: [B, Z] encoder mean (any [..., Z]).
      posterior_log_var: [B, Z] encoder log-variance.
      log_likelihood_fn: z [B, Z] (the posterior's dtype) -> [B] log p(x|z) in nats per
        example; any other output shape raises ``ValueError``.
      num_samples: L >= 1.
      kl: ``"analytic"`` (closed form) or ``"monte_carlo"`` (log q(z) - log p(z) at the samples).

    Returns:
      ElboTerms with ``elbo``, ``recon``, ``kl`` each [B] (the posterior's batch shape);
      float32 (float64 if the posterior or the likelihood values are float64).

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), eqs. 6-7, 10.
    """
    _check_num_samples("num_samples", num_samples)
    if kl not in ("analytic", "monte_carlo"):
        raise ValueError(f"`kl` must be 'analytic' or 'monte_carlo', got {kl!r}.")
    mean, log_var = _posterior(posterior_mean, posterior_log_var)
    z_dtype = jnp.result_type(mean, log_var)
    mean, log_var = _promote(mean, log_var)
    z = _draw(key, jnp.arange(int(num_samples)), mean, log_var)  # [L, B, Z], float32 or wider
    values = jax.vmap(log_likelihood_fn)(z.astype(z_dtype))  # [L, B]
    _check_per_example(values, mean.shape[:-1], z.shape[1:])
    recon = jnp.mean(_upcast(values, mean.dtype), axis=0)
    if kl == "analytic":
        kl_value = kl_standard_normal(mean, log_var, event_ndims=1)
    else:
        # z is [L, B, Z]: the latent axis alone is the event. The densities see the float32
        # z, the decoder its rounding (see the module docstring).
        log_q = diagonal_gaussian_log_density(z, mean, log_var, event_ndims=1)
        log_p = diagonal_gaussian_log_density(z, 0.0, 0.0, event_ndims=1)
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
    Under jit: as outside (no value checks here; those of the likelihood apply), and the
    shape check on ``log_likelihood_fn`` is static.

    Args:
      key: PRNG key.
      posterior_mean: [B, Z] encoder mean (any [..., Z]).
      posterior_log_var: [B, Z] encoder log-variance.
      log_likelihood_fn: z [B, Z] (the posterior's dtype) -> [B] log p(x|z) in nats per
        example; any other output shape raises ``ValueError``.
      num_samples: K >= 1.
      chunk_size: samples per chunk (default min(K, 100)).

    Returns:
      [B] (the posterior's batch shape) estimate of log p(x) in nats; float32 (float64
      if the posterior or the likelihood values are float64).

    References:
      Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders (arXiv 1509.00519), eq. 8.
    """
    _check_num_samples("num_samples", num_samples)
    chunk_size = min(num_samples, 100) if chunk_size is None else chunk_size
    _check_num_samples("chunk_size", chunk_size)
    num_samples, chunk_size = int(num_samples), min(int(chunk_size), int(num_samples))
    mean, log_var = _posterior(posterior_mean, posterior_log_var)
    z_dtype = jnp.result_type(mean, log_var)
    mean, log_var = _promote(mean, log_var)
    batch_shape = mean.shape[:-1]
    # The dtype of the log-weights (and so of the scan carry): the likelihood values' dtype
    # promoted with the posterior's. eval_shape traces log_likelihood_fn without running it.
    z_spec = jax.ShapeDtypeStruct((chunk_size, *mean.shape), z_dtype)
    values_spec = jax.eval_shape(jax.vmap(log_likelihood_fn), z_spec)
    _check_per_example(values_spec, batch_shape, mean.shape)
    dtype = jnp.result_type(values_spec.dtype, mean.dtype)

    num_chunks = -(-num_samples // chunk_size)
    std = jnp.exp(0.5 * log_var)

    def log_weights(indices: jax.Array) -> jax.Array:
        eps = _standard_normal_draws(key, indices, mean.shape, mean.dtype)  # [C, B, Z]
        z = mean + std * eps  # the draws of reparameterize, before their rounding
        log_q = diagonal_gaussian_log_density(z, mean, log_var, event_ndims=1)
        log_p = diagonal_gaussian_log_density(z, 0.0, 0.0, event_ndims=1)
        values = jax.vmap(log_likelihood_fn)(z.astype(z_dtype))
        log_w = _upcast(values, dtype) + log_p - log_q  # [C, B]
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

    init = (jnp.full(batch_shape, -jnp.inf, dtype), jnp.zeros(batch_shape, dtype))
    (log_max, total), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
    return finite_or_zero(log_max) + jnp.log(total) - jnp.log(num_samples)
