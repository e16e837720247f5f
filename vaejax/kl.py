"""KL divergences for diagonal-Gaussian posteriors: closed form and Monte Carlo.

All functions return nats **per example**, summed over the trailing
``event_ndims`` axes (the latent dimensions), like the log-likelihoods.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vaejax.likelihoods import (
    _as_float_array,
    _check_broadcastable,
    _check_event_ndims,
    _check_same_shape,
    _event_sum,
    gaussian_log_likelihood_from_log_sigma,
)


def kl_standard_normal(mean: ArrayLike, log_var: ArrayLike, *, event_ndims: int = 1) -> jax.Array:
    """KL(N(mean, diag exp(log_var)) || N(0, I)) in nats per example, closed form.

    ``KL = -1/2 sum_j (1 + log s_j^2 - mean_j^2 - s_j^2)``.

    Args:
      mean: [..., Z] posterior mean.
      log_var: [..., Z] posterior log-variance.
      event_ndims: number of trailing latent axes.

    Returns:
      [...] KL per example.

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), appendix B.
    """
    mean = _as_float_array("mean", mean)
    log_var = _as_float_array("log_var", log_var)
    _check_same_shape("mean", mean, "log_var", log_var)
    _check_event_ndims(event_ndims, mean)
    # expm1(log_var) - log_var = s^2 - 1 - log s^2 without cancellation when s^2 ~ 1.
    elementwise = 0.5 * (jnp.square(mean) + jnp.expm1(log_var) - log_var)
    return _event_sum(elementwise, event_ndims)


def kl_diagonal_gaussians(
    mean_q: ArrayLike,
    log_var_q: ArrayLike,
    mean_p: ArrayLike,
    log_var_p: ArrayLike,
    *,
    event_ndims: int = 1,
) -> jax.Array:
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)) in nats per example, closed form.

    ``KL = 1/2 sum_j (log var_p/var_q + (var_q + (mean_q - mean_p)^2)/var_p - 1)``.

    Args:
      mean_q: [..., Z] mean of q.
      log_var_q: [..., Z] log-variance of q.
      mean_p: [..., Z] (or broadcastable) mean of p.
      log_var_p: [..., Z] (or broadcastable) log-variance of p.
      event_ndims: number of trailing latent axes.

    Returns:
      [...] KL per example.
    """
    mean_q = _as_float_array("mean_q", mean_q)
    log_var_q = _as_float_array("log_var_q", log_var_q)
    mean_p = _as_float_array("mean_p", mean_p, parameter=True)
    log_var_p = _as_float_array("log_var_p", log_var_p, parameter=True)
    _check_same_shape("mean_q", mean_q, "log_var_q", log_var_q)
    _check_broadcastable("mean_p", mean_p, "mean_q", mean_q)
    _check_broadcastable("log_var_p", log_var_p, "mean_q", mean_q)
    _check_event_ndims(event_ndims, mean_q)
    log_ratio = log_var_q - log_var_p
    elementwise = 0.5 * (
        jnp.expm1(log_ratio) - log_ratio + jnp.square(mean_q - mean_p) * jnp.exp(-log_var_p)
    )
    return _event_sum(elementwise, event_ndims)


def diagonal_gaussian_log_density(
    z: ArrayLike, mean: ArrayLike, log_var: ArrayLike, *, event_ndims: int = 1
) -> jax.Array:
    """log N(z; mean, diag exp(log_var)) in nats per example (used for log q(z|x)).

    Args:
      z: [..., Z] points.
      mean: broadcastable to ``z``.
      log_var: broadcastable to ``z``.
      event_ndims: number of trailing latent axes.

    Returns:
      [...] log-density per example.
    """
    z = _as_float_array("z", z)
    mean = _as_float_array("mean", mean, parameter=True)
    log_var = _as_float_array("log_var", log_var, parameter=True)
    _check_broadcastable("mean", mean, "z", z)
    _check_broadcastable("log_var", log_var, "z", z)
    mean = jnp.broadcast_to(mean, z.shape)
    return gaussian_log_likelihood_from_log_sigma(
        z, mean, 0.5 * log_var, event_ndims=event_ndims
    )


def kl_monte_carlo(
    key: jax.Array,
    mean: ArrayLike,
    log_var: ArrayLike,
    *,
    num_samples: int,
    event_ndims: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Monte-Carlo estimate of KL(q || N(0, I)) = E_q[log q(z) - log p(z)], for checking.

    Args:
      key: PRNG key.
      mean: [..., Z] posterior mean.
      log_var: [..., Z] posterior log-variance.
      num_samples: number of samples n (>= 1), drawn as one vectorised axis.
      event_ndims: number of trailing latent axes.

    Returns:
      (estimate, standard_error), each [...]: the sample mean and std/sqrt(n).
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be an int >= 1, got {num_samples!r}.")
    mean = _as_float_array("mean", mean)
    log_var = _as_float_array("log_var", log_var)
    _check_same_shape("mean", mean, "log_var", log_var)
    _check_event_ndims(event_ndims, mean)
    eps = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    z = mean + jnp.exp(0.5 * log_var) * eps
    log_q = diagonal_gaussian_log_density(z, mean, log_var, event_ndims=event_ndims)
    log_p = diagonal_gaussian_log_density(z, 0.0, jnp.zeros_like(z), event_ndims=event_ndims)
    samples = log_q - log_p  # [n, ...]
    estimate = jnp.mean(samples, axis=0)
    std_error = jnp.std(samples, axis=0, ddof=1) / jnp.sqrt(num_samples) if num_samples > 1 else (
        jnp.full_like(estimate, jnp.inf)
    )
    return estimate, std_error
