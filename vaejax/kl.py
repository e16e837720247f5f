"""KL divergences for diagonal-Gaussian posteriors: closed form and Monte Carlo.

All functions return nats **per example**, summed over the trailing ``event_ndims`` axes
(the latent dimensions), like the log-likelihoods. Left out, ``event_ndims`` is 1 for
inputs of rank 1 or 2 ([Z], [B, Z]) and 0 for a scalar; for rank > 2 (e.g. [L, B, Z]
samples) it must be given, usually ``event_ndims=1``.

Precision: bfloat16 and float16 inputs are upcast to float32 on entry; the elementwise work
and the sums run in float32 and the result is float32. float32 stays float32 and float64
(with x64 enabled) stays float64: the result dtype is the promotion of the floating inputs
with float32, and gradients with respect to a low-precision input come back in its dtype
(the float32 gradient rounded once). float16 holds |v| <= 65504: its gradients are finite
where the float32 gradient is (d/dlog_var = expm1(log_var)/2 overflows float16 above
log_var = 11.7); the float32 values are finite for |mean| <= 1e3 and |log_var| <= 30.

Near the prior (log_var ~ 0) ``s^2 - 1 - log s^2 = e^v - 1 - v`` cancels in its closed
form; it is evaluated by its Taylor series there and its gradient as expm1(v), so the
value and the gradient keep full relative precision at any log_var.

Under ``jit`` there are no value checks (every finite input is valid); shape and dtype
errors always raise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vaejax.likelihoods import (
    _as_float_array,
    _check_broadcastable,
    _check_same_shape,
    _event_sum,
    _promote,
    _resolve_event_ndims,
    gaussian_log_likelihood_from_log_sigma,
)

# e^v - 1 - v = sum_{n >= 2} v^n / n!. The closed form expm1(v) - v subtracts v from
# expm1(v) = v + v^2/2 + ...: its relative error is about eps/2 (|expm1 v| / (e^v - 1 - v) + 1),
# i.e. ~4 eps/|v| for small |v| (9 % at v = 1e-6 in float32), but at most ~3 eps for
# |v| >= 1/2 (2.7 eps at v = 1/2). Below |v| = 1/2 the series is used instead: truncated after
# v^N/N!, its relative error is at most 2 |v|^(N-1)/(N+1)! / 0.85 / (1 - |v|/(N+2)) (the
# remainder over f(v) >= 0.85 v^2/2 on [-1/2, 1/2]); at |v| = 1/2 that is 0.45 eps for
# N = 8 in float32 (N = 7 would give 6.5 eps) and 0.03 eps for N = 15 in float64 (N = 14:
# 1.0 eps). Horner's rule on the decreasing terms adds about 2 eps of rounding.
_EXP_MINUS_ONE_MINUS_CUTOFF = 0.5
_EXP_MINUS_ONE_MINUS_ORDER = {4: 8, 8: 15}  # itemsize -> N (float16/bfloat16 never get here)


def _exp_minus_one_minus_value(v: jax.Array) -> jax.Array:
    """e^v - 1 - v elementwise, accurate near 0: [...] -> [...] (float32 or float64 v).

    Its derivative is expm1(v), which has no cancellation at any v: the custom JVP below
    uses it directly instead of differentiating the branches (the derivative of the
    truncated series would lose one term of accuracy).
    """
    order = _EXP_MINUS_ONE_MINUS_ORDER.get(jnp.dtype(v.dtype).itemsize, 8)
    small = jnp.abs(v) < _EXP_MINUS_ONE_MINUS_CUTOFF
    # Double-where: the series is fed 0 where it is not used, so it never overflows (no
    # inf or NaN intermediate for checkify), and the closed form is fed 1 where it is not
    # used. The gradient comes from the custom JVP below, not through these branches.
    v_small = jnp.where(small, v, 0.0)
    v_large = jnp.where(small, 1.0, v)
    series = jnp.full_like(v_small, 1.0 / math.factorial(order))
    for n in range(order - 1, 1, -1):
        series = series * v_small + 1.0 / math.factorial(n)
    series = series * jnp.square(v_small)
    closed = jnp.expm1(v_large) - v_large
    return jnp.where(small, series, closed)


_exp_minus_one_minus = jax.custom_jvp(_exp_minus_one_minus_value)


def _exp_minus_one_minus_jvp(primals, tangents):
    (v,), (v_dot,) = primals, tangents
    return _exp_minus_one_minus(v), jnp.expm1(v) * v_dot


_exp_minus_one_minus.defjvp(_exp_minus_one_minus_jvp)


def kl_standard_normal(
    mean: ArrayLike, log_var: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """KL(N(mean, diag exp(log_var)) || N(0, I)) in nats per example, closed form.

    ``KL = -1/2 sum_j (1 + log s_j^2 - mean_j^2 - s_j^2) = 1/2 sum_j (mean_j^2 + f(log s_j^2))``
    with ``f(v) = e^v - 1 - v``, evaluated without cancellation near v = 0. Under jit: as
    outside (no value checks; every finite input is valid).

    Args:
      mean: [..., Z] posterior mean.
      log_var: [..., Z] posterior log-variance.
      event_ndims: number of trailing latent axes; default 1 for rank 1 or 2 (0 for a
        scalar), required for rank > 2 (pass 1 for [L, B, Z]).

    Returns:
      [...] KL per example (mean's batch shape); float32 (float64 if an input is float64).

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), appendix B.
    """
    mean = _as_float_array("mean", mean)
    log_var = _as_float_array("log_var", log_var)
    _check_same_shape("mean", mean, "log_var", log_var)
    event_ndims = _resolve_event_ndims(event_ndims, "mean", mean, unit="example")
    mean, log_var = _promote(mean, log_var)
    elementwise = 0.5 * (jnp.square(mean) + _exp_minus_one_minus(log_var))
    return _event_sum(elementwise, event_ndims)


def kl_diagonal_gaussians(
    mean_q: ArrayLike,
    log_var_q: ArrayLike,
    mean_p: ArrayLike,
    log_var_p: ArrayLike,
    *,
    event_ndims: int | None = None,
) -> jax.Array:
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)) in nats per example, closed form.

    ``KL = 1/2 sum_j (log var_p/var_q + (var_q + (mean_q - mean_p)^2)/var_p - 1)
    = 1/2 sum_j (f(r_j) + (mean_q - mean_p)_j^2 / var_p)`` with ``r = log var_q - log var_p``
    and ``f(r) = e^r - 1 - r``, evaluated without cancellation near r = 0. Under jit: as
    outside (no value checks; every finite input is valid).

    Args:
      mean_q: [..., Z] mean of q.
      log_var_q: [..., Z] log-variance of q.
      mean_p: [..., Z] (or broadcastable) mean of p.
      log_var_p: [..., Z] (or broadcastable) log-variance of p.
      event_ndims: number of trailing latent axes; default 1 for rank 1 or 2 (0 for a
        scalar), required for rank > 2 (pass 1 for [L, B, Z]).

    Returns:
      [...] KL per example (mean_q's batch shape); float32 (float64 if an input is
      float64).
    """
    mean_q = _as_float_array("mean_q", mean_q)
    log_var_q = _as_float_array("log_var_q", log_var_q)
    mean_p = _as_float_array("mean_p", mean_p, parameter=True)
    log_var_p = _as_float_array("log_var_p", log_var_p, parameter=True)
    _check_same_shape("mean_q", mean_q, "log_var_q", log_var_q)
    _check_broadcastable("mean_p", mean_p, "mean_q", mean_q)
    _check_broadcastable("log_var_p", log_var_p, "mean_q", mean_q)
    event_ndims = _resolve_event_ndims(event_ndims, "mean_q", mean_q, unit="example")
    mean_q, log_var_q, mean_p, log_var_p = _promote(mean_q, log_var_q, mean_p, log_var_p)
    log_ratio = log_var_q - log_var_p
    elementwise = 0.5 * (
        _exp_minus_one_minus(log_ratio) + jnp.square(mean_q - mean_p) * jnp.exp(-log_var_p)
    )
    return _event_sum(elementwise, event_ndims)


def diagonal_gaussian_log_density(
    z: ArrayLike, mean: ArrayLike, log_var: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log N(z; mean, diag exp(log_var)) in nats per example (used for log q(z|x)).

    ``mean`` and ``log_var`` broadcast to ``z`` by numpy's rules, so a [B, Z] posterior
    serves [L, B, Z] samples. Under jit: as outside (no value checks).

    Args:
      z: [..., Z] points.
      mean: broadcastable to ``z``.
      log_var: broadcastable to ``z``.
      event_ndims: number of trailing latent axes; default 1 for z of rank 1 or 2 (0 for
        a scalar), required for rank > 2 (pass 1 for [L, B, Z] samples).

    Returns:
      [...] log-density per example (z's batch shape); float32 (float64 if an input is
      float64).
    """
    z = _as_float_array("z", z)
    mean = _as_float_array("mean", mean, parameter=True)
    log_var = _as_float_array("log_var", log_var, parameter=True)
    _check_broadcastable("mean", mean, "z", z)
    _check_broadcastable("log_var", log_var, "z", z)
    event_ndims = _resolve_event_ndims(event_ndims, "z", z, unit="example")
    z, mean, log_var = _promote(z, mean, log_var)
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
    event_ndims: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Monte-Carlo estimate of KL(q || N(0, I)) = E_q[log q(z) - log p(z)], for checking.

    The samples are drawn in the promoted dtype (float32 for a bfloat16 posterior). Under
    jit: as outside (no value checks).

    Args:
      key: PRNG key.
      mean: [..., Z] posterior mean.
      log_var: [..., Z] posterior log-variance.
      num_samples: number of samples n (>= 1), drawn as one vectorised axis.
      event_ndims: number of trailing latent axes; default 1 for rank 1 or 2 (0 for a
        scalar), required for rank > 2.

    Returns:
      (estimate, standard_error), each [...] (mean's batch shape): the sample mean and
      std/sqrt(n); float32 (float64 if an input is float64).
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be an int >= 1, got {num_samples!r}.")
    mean = _as_float_array("mean", mean)
    log_var = _as_float_array("log_var", log_var)
    _check_same_shape("mean", mean, "log_var", log_var)
    event_ndims = _resolve_event_ndims(event_ndims, "mean", mean, unit="example")
    mean, log_var = _promote(mean, log_var)
    eps = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    z = mean + jnp.exp(0.5 * log_var) * eps
    # z is [n, ..., Z]: one more leading axis than mean, so event_ndims is passed on.
    log_q = diagonal_gaussian_log_density(z, mean, log_var, event_ndims=event_ndims)
    log_p = diagonal_gaussian_log_density(z, 0.0, 0.0, event_ndims=event_ndims)
    samples = log_q - log_p  # [n, ...]
    estimate = jnp.mean(samples, axis=0)
    std_error = jnp.std(samples, axis=0, ddof=1) / jnp.sqrt(num_samples) if num_samples > 1 else (
        jnp.full_like(estimate, jnp.inf)
    )
    return estimate, std_error
