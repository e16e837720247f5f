"""Exact log-likelihoods of k-level discrete data: bits/dim without dequantisation.

Data ``x`` take the ``k = num_levels`` values of the grid {0, 1/(k-1), ..., 1} in [0, 1]
(the convention of the bundled data: the digits have k = 17 grey levels i/16, 8-bit
images k = 256, values i/255). Level i owns the bin [x_i - h, x_i + h] with
h = 1/(2(k-1)), except that the first bin is open to -inf and the last to +inf, so the k
probabilities of any decoder output sum to 1 exactly:

    P(x_i) = F((x_i + h - mu) / s) - F((x_i - h - mu) / s)      (0 < i < k-1)
    P(x_0) = F((x_0 + h - mu) / s),   P(x_{k-1}) = 1 - F((x_{k-1} - h - mu) / s)

with F the standard normal CDF Phi (:func:`discretized_gaussian_log_likelihood`) or the
logistic sigmoid (:func:`discretized_logistic_log_likelihood`, and per pixel mixtures of
it in :func:`discretized_logistic_mixture_log_likelihood`). :func:`categorical_log_likelihood`
is the k-way softmax over intensities ("cross-entropy over intensities"). Every function
returns log P(x) in nats per example, the sum over the trailing ``event_ndims`` axes, and
being a log-probability of discrete data it needs no correction: bits/dim is
``-log P / (D log 2)``, i.e. :func:`vaejax.likelihoods.nats_to_bits_per_dim` without
``num_bits`` (the ``num_bits`` correction is for densities of dequantised data). Note that
these bins are centred on i/(k-1); uniform dequantisation uses [i/k, (i+1)/k) instead.

This module imports only ``jax`` and :mod:`vaejax.likelihoods` (itself jax-only), whose
argument checks, broadcasting and precision rules it shares; the two files can be copied
into any JAX project together.

Accuracy (tests/test_discretized.py, against mpmath at 50 digits and scipy in float64):
every bin, including bins hundreds of scales out in a tail and bins far narrower than
the scale, is within 32 eps max(1, |log P|) for s in [1e-4, 1e3], |mu| <= 1e3 and k up
to 4097 (measured: <= 12 eps, the Gaussian's worst in float64 near its switch to the
midpoint series); the gradients with respect to the mean and the scale are finite there
and within 100 eps of mpmath's derivatives.

Shapes: ``event_ndims`` is the number of trailing axes of ``x`` that form one example;
the result has the remaining batch shape [...] of ``x``: [..., *event] -> [...]. Left
out, it is 1 for ``x`` of rank 1 or 2 (0 for a scalar) and required for rank > 2 (pass
``event_ndims=3`` for [B, H, W, C] images). ``mean`` has x's rank with each axis equal to
x's or 1; ``scale`` / ``log_scale`` broadcast to x by numpy's rules. Parameters with a
trailing axis (mixture components [..., *event, M], categorical logits [..., *event, k])
have rank ``x.ndim + 1``, the other axes equal to x's or 1.

Precision: bfloat16 and float16 inputs are upcast to float32, float64 (x64 enabled) stays
float64; the result is float32 unless an input is float64. ``x`` is snapped to its level
index round(x (k-1)) before use, so a value that its dtype cannot store exactly (i/255 in
bfloat16) still gets the bin of its level.

Validation: ``num_levels`` must be a Python int >= 2 (static under ``jit``). With concrete
arguments (outside ``jit``) bad values raise ``ValueError`` naming the argument: ``x`` not
finite, outside [0, 1] or off the grid, ``scale`` <= 0, non-finite parameters. ``x`` is on
the grid when x (k-1) is within ``(k-1) (eps/2 + 2^-23)`` of an integer, ``eps`` the machine
epsilon of x's dtype and at least float32's (2^-23): twice the rounding that a stored
i/(k-1) carries (float32 data cast to float64 pass). Where that tolerance reaches half a
level (bfloat16 with k >= 129) every value in [0, 1] counts as on the grid. Under ``jit``
values cannot be inspected: an invalid value (x off the grid, outside [0, 1] or NaN,
scale <= 0) makes the affected examples NaN, never a silent wrong number
(:func:`vaejax.likelihoods.checked` turns that NaN into an error). Shape errors are
static and always raise.
"""

from __future__ import annotations

import fractions
import functools
import math
import operator
import struct
from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy.special import erfcx, log_ndtr, ndtr
from jax.typing import ArrayLike

from vaejax.likelihoods import (
    _as_float_array,
    _broadcast_like,
    _check_broadcastable,
    _check_finite,
    _check_positive_finite,
    _event_sum,
    _holds_everywhere,
    _promote,
    _resolve_event_ndims,
)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Terms of jax's asymptotic series for log Phi(z) in the far lower tail (z < -10 in
# float32, z < -20 in float64). The default 3 leaves a relative error of ~1e-11 in
# float64 near z = -20 (the next term, 105 / z^8 ~ 4e-9 absolute); 8 is below eps there.
_LOG_NDTR_SERIES_ORDER = 8
# The Gaussian probability of an interior bin switches from the difference of log-CDFs to
# the midpoint series (see _discretized_gaussian_elementwise) where w (1 + |c|) is below
# this cutoff, w the standardised bin width and c the standardised bin centre: the difference
# cancels there (relative error ~ eps |log Phi| / (w (1 + |c|))), while the series,
# truncated after w^8, is exact to ~945 w^10 / 4.1e10 near the mode. Chosen on a (c, w)
# grid against mpmath (|c| <= 100, 1e-7 <= w <= 10): worst 2.3 eps (float32) and 12 eps
# (float64) of max(1, |log P|); in float64 a cutoff of 0.25 already costs 25 eps (series).
_GAUSSIAN_MIDPOINT_CUTOFF = {4: 1.0, 8: 0.2}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)

Distribution = Literal["gaussian", "logistic"]


# --------------------------------------------------------------------------- #
# Argument checks and the grid.
# --------------------------------------------------------------------------- #


def _check_num_levels(num_levels) -> int:
    message = (
        f"`num_levels` must be a Python int >= 2, the number of grey levels of the data "
        f"(17 for the bundled digits, 256 for 8-bit images), got {num_levels!r}"
    )
    if isinstance(num_levels, bool):
        raise ValueError(message + ".")
    try:
        k = operator.index(num_levels)
    except TypeError:
        raise ValueError(
            message + " (under jit pass it as a static argument, "
            "e.g. `jax.jit(fn, static_argnames='num_levels')`)."
        ) from None
    if k < 2:
        raise ValueError(message + ".")
    return k


def _grid_name(k: int) -> str:
    if k == 2:
        return "{0, 1}"
    if k == 3:
        return "{0, 1/2, 1}"
    return f"{{0, 1/{k - 1}, ..., 1}}"


def _grid_tolerance(k: int, dtype) -> float:
    """Largest |x (k-1) - round(x (k-1))| accepted as on the grid, in levels.

    A level i/(k-1) stored in ``dtype`` is off by at most eps/4 (ulp/2 in [0.5, 1)), i.e.
    (k-1) eps/4 levels, and x (k-1) rounds once more in float32 or float64: the tolerance
    (k-1) (eps/2 + eps_32) leaves a factor 2, with eps at least float32's so that float32
    data cast to float64 pass.
    """
    eps_32 = float(jnp.finfo(jnp.float32).eps)
    eps = max(float(jnp.finfo(dtype).eps), eps_32)
    return min(0.5, (k - 1) * (0.5 * eps + eps_32))


def _check_grid(x: jax.Array, k: int, tol: float) -> None:
    """Raises (concrete x only) unless x is finite, in [0, 1] and on the k-level grid."""
    _check_finite("x", x)
    if not _holds_everywhere(lambda v: (v >= 0) & (v <= 1), x):
        raise ValueError(
            f"`x` must lie in [0, 1], on the {k}-level grid {_grid_name(k)} of "
            f"num_levels={k}, got values in [{float(jnp.min(x))!r}, {float(jnp.max(x))!r}]: "
            f"scale the data to [0, 1] (e.g. `pixels / 255` for 8-bit images)."
        )

    def on_grid(v):
        scaled = v * (k - 1)
        return jnp.abs(scaled - jnp.round(scaled)) <= tol

    if not _holds_everywhere(on_grid, x):
        scaled = x * (k - 1)
        off = jnp.abs(scaled - jnp.round(scaled))
        worst = int(jnp.argmax(off))
        value = float(jnp.ravel(x)[worst])
        raise ValueError(
            f"`x` has values off the {k}-level grid {_grid_name(k)} (e.g. {value!r}, "
            f"{float(jnp.ravel(off)[worst]):.3g} levels from the nearest): quantize the "
            f"data with `quantize(x, {k})` or pass the data's num_levels (17 for the "
            f"bundled digits, 256 for 8-bit images)."
        )


def _level_indices(x: jax.Array, k: int, tol: float) -> tuple[jax.Array, jax.Array]:
    """(index, valid) for validated, promoted x: [...] -> [...] each.

    ``index`` is round(x (k-1)) as a float of x's dtype (0 where invalid, a safe value);
    ``valid`` is False where x is NaN, outside [0, 1] or off the grid.
    """
    scaled = x * (k - 1)
    index = jnp.round(scaled)
    valid = (x >= 0) & (x <= 1) & (jnp.abs(scaled - index) <= tol)  # False for NaN
    return jnp.where(valid, index, 0.0), valid


def _grid_inputs(x: ArrayLike, num_levels, event_ndims: int | None):
    """(x, k, tolerance, event_ndims) with x a floating array (not yet promoted)."""
    k = _check_num_levels(num_levels)
    x = _as_float_array("x", x)
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    return x, k, _grid_tolerance(k, x.dtype), event_ndims


def _trailing_axis_param(
    name: str, param: jax.Array, x: jax.Array, size: int, axis_name: str
) -> jax.Array:
    """Broadcasts a [..., *event, size] parameter (axes equal to x's or 1) to that shape."""
    target = tuple(x.shape) + (size,)
    if param.ndim != x.ndim + 1:
        raise ValueError(
            f"`{name}` of shape {param.shape} must have rank x.ndim + 1 = {x.ndim + 1}: x's "
            f"axes {tuple(x.shape)} (each equal or 1) followed by one axis of {axis_name}, "
            f"i.e. shape {target}."
        )
    if param.shape[-1] != size:
        raise ValueError(
            f"`{name}` of shape {param.shape} has a last axis of {param.shape[-1]}, but it "
            f"must be {size} ({axis_name}); expected shape {target}."
        )
    if any(p not in (1, t) for p, t in zip(param.shape[:-1], x.shape, strict=True)):
        raise ValueError(
            f"`{name}` of shape {param.shape} does not broadcast to {target}: each axis but "
            f"the last must equal x's (shape {tuple(x.shape)}) or be 1."
        )
    return jnp.broadcast_to(param, target)


# --------------------------------------------------------------------------- #
# Elementwise bin log-probabilities.
# --------------------------------------------------------------------------- #


# jax 0.10's erfcx returns 0 on a window of its argument (float32: about [9.195, 9.419];
# float64: [26.544, 26.641]), at the switch between its approximations. Beyond these
# thresholds the asymptotic series 1/(x sqrt(pi)) sum_n (-1)^n (2n-1)!! / (2x^2)^n is used
# instead: with 10 terms its truncation error is below 1e-12 relative from x = 8 and below
# 1e-20 from x = 20.
_ERFCX_ASYMPTOTIC_FROM = {4: 8.0, 8: 20.0}


def _erfcx(x: jax.Array) -> jax.Array:
    """erfcx(x) = exp(x^2) erfc(x) elementwise, correct also where jax's is 0: [...] -> [...]."""
    start = _ERFCX_ASYMPTOTIC_FROM.get(jnp.dtype(x.dtype).itemsize, 8.0)
    far = x >= start
    y = jnp.where(far, x, start)
    inverse_2y2 = 1.0 / (2.0 * jnp.square(y))
    term, total = jnp.ones_like(y), jnp.ones_like(y)
    for n in range(1, 11):
        term = -term * (2 * n - 1) * inverse_2y2
        total = total + term
    asymptotic = total / (y * math.sqrt(math.pi))
    return jnp.where(far, asymptotic, erfcx(jnp.where(far, 0.0, x)))


@jax.custom_jvp
def _log_ndtr(z: jax.Array) -> jax.Array:
    """log Phi(z) with an accurate derivative in the far lower tail: [...] -> [...]."""
    return log_ndtr(z, series_order=_LOG_NDTR_SERIES_ORDER)


@_log_ndtr.defjvp
def _log_ndtr_jvp(primals, tangents):
    # d/dz log Phi(z) = phi(z) / Phi(z) = sqrt(2/pi) / erfcx(-z/sqrt(2)). jax's own rule,
    # exp(-z^2/2 - log Phi(z)) / sqrt(2 pi), cancels two numbers of size z^2/2: at z = -1e7
    # (x - mu = -1e3, s = 1e-4) it is off by 1e-3 in float64 and by orders of magnitude in
    # float32. erfcx is accurate for positive arguments and overflows to inf (a zero
    # derivative) in the upper tail.
    (z,), (z_dot,) = primals, tangents
    return _log_ndtr(z), z_dot * (_SQRT_2_OVER_PI / _erfcx(-z * _SQRT_HALF))


@functools.lru_cache(maxsize=64)
def _split_table(numerators: tuple[int, ...], denominator: int, dtype_name: str):
    """(hi, lo) with hi + lo = n / denominator to twice the precision of ``dtype``.

    hi is n / denominator rounded to the dtype and lo the rounded remainder, computed
    exactly with fractions: the pair carries the grid values and bin edges exactly enough
    that (hi - mu) + lo keeps a small difference x - mu accurate (hi - mu alone carries
    hi's rounding, a relative error eps |x| / |x - mu|: 400 eps of log P at s = 1e-4).
    """
    single = jnp.dtype(dtype_name).itemsize == 4  # float32, else float64 (after _promote)
    hi, lo = [], []
    for n in numerators:
        exact = fractions.Fraction(n, denominator)
        rounded = float(exact)
        if single:  # round to float32 in Python: jnp would give a tracer under jit
            rounded = struct.unpack("f", struct.pack("f", rounded))[0]
        hi.append(rounded)
        lo.append(float(exact - fractions.Fraction(rounded)))
    return tuple(hi), tuple(lo)


def _offsets(numerators, denominator, position, mean, scale):
    """(n[position] / denominator - mean) / scale with the table split into hi + lo."""
    hi, lo = _split_table(tuple(numerators), denominator, jnp.dtype(mean.dtype).name)
    hi = jnp.asarray(hi, dtype=mean.dtype)
    lo = jnp.asarray(lo, dtype=mean.dtype)
    return ((jnp.take(hi, position) - mean) + jnp.take(lo, position)) / scale


def _standardized_bin(index, k, mean, scale):
    """Standardised bin (centre c, upper a, lower b, width w) of level ``index``.

    The edges are read from one table, edge[j] = (j - 1/2)/(k-1) = (2j - 1)/(2(k-1)): the
    upper edge of level i and the lower edge of level i+1 are then the same numbers, so
    that the CDF differences telescope and the k probabilities sum to 1 also where the
    scale is tiny. (Forming x_i + h and x_{i+1} - h separately rounds them differently,
    e.g. where XLA contracts one into a fused multiply-add and not the other; at s = 1e-4
    that moves the shared edge by eps / s standard units.) Edges and centres are stored as
    hi + lo pairs, so that x - mu is accurate even where it is small (see _split_table).
    """
    position = index.astype(jnp.int32)
    edges = range(-1, 2 * k, 2)  # 2j - 1 for j = 0..k
    upper = _offsets(edges, 2 * (k - 1), position + 1, mean, scale)
    lower = _offsets(edges, 2 * (k - 1), position, mean, scale)
    centre = _offsets(range(k), k - 1, position, mean, scale)
    return centre, upper, lower, (1.0 / (k - 1)) / scale


def _discretized_gaussian_elementwise(index, k, mean, scale, log_scale):
    """log P(level ``index``) under the discretised N(mean, scale^2): [...] -> [...].

    Edge bins: log Phi(a) for level 0 (open to -inf) and log Phi(-b) for level k-1 (open
    to +inf). Interior bins, log(Phi(a) - Phi(b)): by the symmetry Phi(a) - Phi(b) =
    Phi(-b) - Phi(-a) the bin is moved to the lower half (c <= 0), where log Phi is
    accurate, and the difference of the logs is taken as log(e^u - e^v) =
    u + log(-expm1(v - u)). That cancels for a narrow bin (v - u small); where
    w (1 + |c|) < cutoff the midpoint series of the integral of the density is used
    instead: log(phi(c) w) + log1p(sum_n He_2n(c) w^2n / ((2n+1)! 4^n), n = 1..4), i.e.
    He2 w^2/24 + He4 w^4/1920 + He6 w^6/322560 + He8 w^8/92897280, He_n the Hermite
    polynomials (phi^(2n) = He_2n phi). One pair of log_ndtr calls serves
    edges and interior. Each branch gets safe inputs where it is not selected, so that
    gradients stay finite.
    """
    c, a, b, w = _standardized_bin(index, k, mean, scale)
    lowest, highest = index == 0, index == k - 1
    edge = lowest | highest
    cutoff = _GAUSSIAN_MIDPOINT_CUTOFF.get(jnp.dtype(c.dtype).itemsize, 0.5)
    narrow = (w * (1.0 + jnp.abs(c)) < cutoff) & ~edge
    mirror = highest | ((c > 0) & ~lowest)
    upper = jnp.where(mirror, -b, a)
    # Edges use log Phi(upper) alone; their lower argument only has to keep the unused
    # difference finite (strictly below upper, also where |upper| is huge).
    lower = jnp.where(edge, -2.0 * jnp.abs(upper) - 1.0, jnp.where(mirror, -a, b))
    upper = jnp.where(narrow, 0.0, upper)
    lower = jnp.where(narrow, -1.0, lower)
    log_upper = _log_ndtr(upper)
    log_lower = _log_ndtr(lower)
    difference = log_upper + jnp.log(-jnp.expm1(log_lower - log_upper))
    c2 = jnp.square(jnp.where(narrow, c, 0.0))
    w2 = jnp.square(jnp.where(narrow, w, 0.0))
    he2 = c2 - 1.0
    he4 = (c2 - 6.0) * c2 + 3.0
    he6 = ((c2 - 15.0) * c2 + 45.0) * c2 - 15.0
    he8 = (((c2 - 28.0) * c2 + 210.0) * c2 - 420.0) * c2 + 105.0
    series = w2 * (he2 / 24.0 + w2 * (he4 / 1920.0 + w2 * (he6 / 322560.0
                                                          + w2 * he8 / 92897280.0)))
    log_w = jnp.where(narrow, math.log(1.0 / (k - 1)) - log_scale, 0.0)
    midpoint = -_HALF_LOG_2PI - 0.5 * c2 + log_w + jnp.log1p(series)
    return jnp.where(edge, log_upper, jnp.where(narrow, midpoint, difference))


def _discretized_logistic_elementwise(index, k, mean, scale):
    """log P(level ``index``) under the discretised Logistic(mean, scale): [...] -> [...].

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^{-(a - b)}) exactly, so
    log P = log_sigmoid(a) + log_sigmoid(-b) + log(-expm1(-w)) with the width w = a - b
    taken directly from 2h / scale: no difference of probabilities, no cancellation, and
    no switch (PixelCNN++ falls back to log(pdf * width) where the difference underflows).
    """
    _, a, b, w = _standardized_bin(index, k, mean, scale)
    lowest = jax.nn.log_sigmoid(a)
    highest = jax.nn.log_sigmoid(-b)
    interior = lowest + highest + jnp.log(-jnp.expm1(-w))
    return jnp.where(index == 0, lowest, jnp.where(index == k - 1, highest, interior))


def _nan_where_invalid(valid: jax.Array, values: jax.Array) -> jax.Array:
    return jnp.where(valid, values, jnp.nan)


def _location_scale_inputs(x, mean, scale, num_levels, event_ndims, *, log_scale: bool):
    """Validated inputs: (index, valid, mean, scale, log_scale, k, event_ndims)."""
    x, k, tol, event_ndims = _grid_inputs(x, num_levels, event_ndims)
    scale_name = "log_scale" if log_scale else "scale"
    mean = _as_float_array("mean", mean)
    scale = _as_float_array(scale_name, scale, parameter=True)
    mean = _broadcast_like("mean", mean, "x", x)
    _check_broadcastable(scale_name, scale, "x", x)
    x, mean, scale = _promote(x, mean, scale)
    _check_grid(x, k, tol)
    _check_finite("mean", mean)
    if log_scale:
        _check_finite("log_scale", scale)
        valid_scale = jnp.isfinite(scale)
        log_s = jnp.where(valid_scale, scale, 0.0)
        s = jnp.exp(log_s)
    else:
        _check_positive_finite("scale", scale)
        valid_scale = (scale > 0) & jnp.isfinite(scale)
        s = jnp.where(valid_scale, scale, 1.0)
        log_s = jnp.log(s)
    index, valid = _level_indices(x, k, tol)
    valid = valid & jnp.isfinite(mean) & jnp.broadcast_to(valid_scale, x.shape)
    s, log_s = (jnp.broadcast_to(v, x.shape) for v in (s, log_s))
    return index, valid, mean, s, log_s, k, event_ndims


# --------------------------------------------------------------------------- #
# Discretised Gaussian and logistic.
# --------------------------------------------------------------------------- #


def discretized_gaussian_log_likelihood(
    x: ArrayLike,
    mean: ArrayLike,
    scale: ArrayLike,
    *,
    num_levels: int,
    event_ndims: int | None = None,
) -> jax.Array:
    """log P(x) of k-level data under a discretised Gaussian, in nats per example.

    ``log P(x_i) = log(Phi((x_i + h - mu)/s) - Phi((x_i - h - mu)/s))``, h = 1/(2(k-1)),
    with the edge bins open: ``log Phi((h - mu)/s)`` at x = 0 and ``log Phi((mu - 1 + h)/s)``
    at x = 1, so the k levels' probabilities sum to 1. Stable everywhere: edges and the
    interior use ``log_ndtr``, the interior bin is mirrored into the lower half (c <= 0,
    c = (x - mu)/s) and the difference is taken in log space as
    ``u + log(-expm1(v - u))``; where that cancels, i.e. where ``w (1 + |c|)`` is below
    1 (float32) or 0.2 (float64) with w = 2h/s, the midpoint series
    ``log(phi(c) w) + log1p((c^2-1) w^2/24 + He4(c) w^4/1920 + ... + He8(c) w^8/92897280)``
    (He_n the Hermite polynomials) replaces it (w << s: log P -> log N(x; mu, s) +
    log(1/(k-1)) as k grows). A bin far in a tail (mu = 0, s = 1e-3, x = 1) gets its
    finite log-probability (~ -4.7e5), not log(0 - 0). Under jit: x off the grid, outside
    [0, 1] or NaN, scale <= 0 or non-finite, or a non-finite mean cannot raise and give
    NaN for the affected examples.

    Args:
      x: [..., *event] data on the grid {0, 1/(k-1), ..., 1}.
      mean: [..., *event] decoder mean mu, or of x's rank with axes equal to x's or 1;
        any finite value (also outside [0, 1]).
      scale: standard deviation s > 0, broadcastable to ``x`` (scalar, [*event], or
        [..., *event]).
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-probability per example in nats (<= 0); float32
      (float64 if an input is float64).

    References:
      Ho, Jain & Abbeel, Denoising Diffusion Probabilistic Models (arXiv 2006.11239),
      eq. 13: the same discretised Gaussian decoder with open edge bins.
    """
    index, valid, mean, s, log_s, k, event_ndims = _location_scale_inputs(
        x, mean, scale, num_levels, event_ndims, log_scale=False
    )
    values = _discretized_gaussian_elementwise(index, k, mean, s, log_s)
    return _event_sum(_nan_where_invalid(valid, values), event_ndims)


def discretized_gaussian_log_likelihood_from_log_scale(
    x: ArrayLike,
    mean: ArrayLike,
    log_scale: ArrayLike,
    *,
    num_levels: int,
    event_ndims: int | None = None,
) -> jax.Array:
    """:func:`discretized_gaussian_log_likelihood` with s = exp(log_scale), per example.

    The form for a learned scale: ``log_scale`` is unconstrained and enters the
    small-bin branch, log(phi(c) w) with log w = -log(k-1) - log_scale, without a
    round trip through log(exp(.)). Under jit: x off the grid, outside [0, 1] or NaN,
    or a non-finite log_scale or mean cannot raise and give NaN for the affected examples.

    Args:
      x: [..., *event] data on the grid {0, 1/(k-1), ..., 1}.
      mean: [..., *event] decoder mean, or of x's rank with axes equal to x's or 1.
      log_scale: log s, broadcastable to ``x`` (scalar, [*event] or [..., *event]).
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-probability per example in nats; float32 (float64 if
      an input is float64).

    References:
      Ho, Jain & Abbeel, Denoising Diffusion Probabilistic Models (arXiv 2006.11239), eq. 13.
    """
    index, valid, mean, s, log_s, k, event_ndims = _location_scale_inputs(
        x, mean, log_scale, num_levels, event_ndims, log_scale=True
    )
    values = _discretized_gaussian_elementwise(index, k, mean, s, log_s)
    return _event_sum(_nan_where_invalid(valid, values), event_ndims)


def discretized_logistic_log_likelihood(
    x: ArrayLike,
    mean: ArrayLike,
    scale: ArrayLike,
    *,
    num_levels: int,
    event_ndims: int | None = None,
) -> jax.Array:
    """log P(x) of k-level data under a discretised logistic, in nats per example.

    ``log P(x_i) = log(sigmoid((x_i + h - mu)/s) - sigmoid((x_i - h - mu)/s))``,
    h = 1/(2(k-1)), with open edges ``log_sigmoid((h - mu)/s)`` at x = 0 and
    ``log_sigmoid((mu - 1 + h)/s)`` at x = 1. The interior uses the exact factorisation
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^{-(a-b)}):
    ``log_sigmoid(a) + log_sigmoid(-b) + log(-expm1(-2h/s))``, accurate in both tails
    and for bins much narrower than s, with no switch. Under jit: x off the grid, outside
    [0, 1] or NaN, scale <= 0 or non-finite, or a non-finite mean cannot raise and give
    NaN for the affected examples.

    Args:
      x: [..., *event] data on the grid {0, 1/(k-1), ..., 1}.
      mean: [..., *event] decoder location mu, or of x's rank with axes equal to x's or 1.
      scale: logistic scale s > 0 (standard deviation s pi / sqrt(3)), broadcastable to
        ``x`` (scalar, [*event] or [..., *event]).
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-probability per example in nats (<= 0); float32
      (float64 if an input is float64).

    References:
      Kingma et al., Improving Variational Inference with Inverse Autoregressive Flow
      (arXiv 1606.04934), the discretised logistic decoder; Salimans et al., PixelCNN++
      (arXiv 1701.05517), section 2.1, for the open edge bins.
    """
    index, valid, mean, s, _, k, event_ndims = _location_scale_inputs(
        x, mean, scale, num_levels, event_ndims, log_scale=False
    )
    values = _discretized_logistic_elementwise(index, k, mean, s)
    return _event_sum(_nan_where_invalid(valid, values), event_ndims)


def discretized_logistic_log_likelihood_from_log_scale(
    x: ArrayLike,
    mean: ArrayLike,
    log_scale: ArrayLike,
    *,
    num_levels: int,
    event_ndims: int | None = None,
) -> jax.Array:
    """:func:`discretized_logistic_log_likelihood` with s = exp(log_scale), per example.

    Under jit: x off the grid, outside [0, 1] or NaN, or a non-finite log_scale or mean
    cannot raise and give NaN for the affected examples.

    Args:
      x: [..., *event] data on the grid {0, 1/(k-1), ..., 1}.
      mean: [..., *event] decoder location, or of x's rank with axes equal to x's or 1.
      log_scale: log s, broadcastable to ``x`` (scalar, [*event] or [..., *event]).
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-probability per example in nats; float32 (float64 if
      an input is float64).

    References:
      Salimans et al., PixelCNN++ (arXiv 1701.05517), section 2.1.
    """
    index, valid, mean, s, _, k, event_ndims = _location_scale_inputs(
        x, mean, log_scale, num_levels, event_ndims, log_scale=True
    )
    values = _discretized_logistic_elementwise(index, k, mean, s)
    return _event_sum(_nan_where_invalid(valid, values), event_ndims)


# --------------------------------------------------------------------------- #
# Mixture of discretised logistics.
# --------------------------------------------------------------------------- #


def _mixture_inputs(logit_weights, means, log_scales, x):
    """Validated [..., *event, M] mixture parameters broadcast against x."""
    logit_weights = _as_float_array("logit_weights", logit_weights)
    means = _as_float_array("means", means)
    log_scales = _as_float_array("log_scales", log_scales)
    if logit_weights.ndim == 0:
        raise ValueError(
            "`logit_weights` must have a trailing axis of M mixture components, got a scalar."
        )
    m = logit_weights.shape[-1]
    if m < 1:
        raise ValueError("`logit_weights` has an empty last axis: M must be >= 1.")
    axis_name = f"M = {m} mixture components, as in `logit_weights`"
    logit_weights = _trailing_axis_param("logit_weights", logit_weights, x, m, axis_name)
    means = _trailing_axis_param("means", means, x, m, axis_name)
    log_scales = _trailing_axis_param("log_scales", log_scales, x, m, axis_name)
    return logit_weights, means, log_scales


def discretized_logistic_mixture_log_likelihood(
    x: ArrayLike,
    logit_weights: ArrayLike,
    means: ArrayLike,
    log_scales: ArrayLike,
    *,
    num_levels: int,
    event_ndims: int | None = None,
) -> jax.Array:
    """log P(x) under a per-element mixture of M discretised logistics, nats per example.

    ``log P(x_i) = logsumexp_m(log_softmax(logit_weights)_m + log P_m(x_i))`` with P_m the
    discretised logistic of :func:`discretized_logistic_log_likelihood_from_log_scale`
    (location ``means[..., m]``, scale ``exp(log_scales[..., m])``). Each element (pixel
    and channel) has its own mixture and the elements are independent given the
    parameters: there is no coupling between channels (PixelCNN++'s linear dependence of
    G on R and of B on R, G is not included; model it in the decoder if wanted). Under
    jit: x off the grid, outside [0, 1] or NaN, or non-finite parameters cannot raise and
    give NaN for the affected examples.

    Args:
      x: [..., *event] data on the grid {0, 1/(k-1), ..., 1}.
      logit_weights: [..., *event, M] unnormalised log mixture weights (finite), each
        axis but the last equal to x's or 1.
      means: [..., *event, M] component locations, axes as ``logit_weights``.
      log_scales: [..., *event, M] component log-scales (finite), axes as ``logit_weights``.
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).
      event_ndims: number of trailing axes of ``x`` forming one example; default 1 for x
        of rank 1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C]).

    Returns:
      [...] (x's batch shape) log-probability per example in nats; float32 (float64 if
      an input is float64).

    References:
      Salimans et al., PixelCNN++ (arXiv 1701.05517), section 2.1; Child, Very Deep VAEs
      (arXiv 2011.10650), the same decoder likelihood.
    """
    x, k, tol, event_ndims = _grid_inputs(x, num_levels, event_ndims)
    logit_weights, means, log_scales = _mixture_inputs(logit_weights, means, log_scales, x)
    x, logit_weights, means, log_scales = _promote(x, logit_weights, means, log_scales)
    _check_grid(x, k, tol)
    _check_finite("logit_weights", logit_weights)
    _check_finite("means", means)
    _check_finite("log_scales", log_scales)
    index, valid = _level_indices(x, k, tol)
    finite = (
        jnp.isfinite(logit_weights) & jnp.isfinite(means) & jnp.isfinite(log_scales)
    ).all(axis=-1)
    safe_log_scales = jnp.where(jnp.isfinite(log_scales), log_scales, 0.0)
    components = _discretized_logistic_elementwise(
        index[..., None], k, means, jnp.exp(safe_log_scales)
    )
    log_weights = jax.nn.log_softmax(logit_weights, axis=-1)
    values = jax.nn.logsumexp(log_weights + components, axis=-1)
    return _event_sum(_nan_where_invalid(valid & finite, values), event_ndims)


# --------------------------------------------------------------------------- #
# Categorical over intensities.
# --------------------------------------------------------------------------- #


def categorical_log_likelihood(
    x: ArrayLike, logits: ArrayLike, *, num_levels: int, event_ndims: int | None = None
) -> jax.Array:
    """log Categorical(x; softmax(logits)) over the k intensities, in nats per example.

    ``log P(x) = log_softmax(logits)[round(x (k-1))]``: the k-way softmax of PixelRNN /
    PixelCNN, i.e. minus the cross-entropy over intensities (with integer targets
    ``to_levels(x, k)``). Under jit: x off the grid, outside [0, 1] or NaN cannot raise
    and gives NaN for the affected examples (non-finite logits propagate).

    Args:
      x: [..., *event] data on the grid {0, 1/(k-1), ..., 1}.
      logits: [..., *event, k] unnormalised log-probabilities of the levels 0..k-1,
        each axis but the last equal to x's or 1.
      num_levels: k; must equal ``logits.shape[-1]``.
      event_ndims: number of trailing axes of ``x`` forming one example; default 1 for x
        of rank 1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C]).

    Returns:
      [...] (x's batch shape) log-probability per example in nats; float32 (float64 if
      an input is float64).

    References:
      van den Oord, Kalchbrenner & Kavukcuoglu, Pixel Recurrent Neural Networks
      (arXiv 1601.06759), section 5.3 (discrete softmax over 256 values).
    """
    x, k, tol, event_ndims = _grid_inputs(x, num_levels, event_ndims)
    logits = _as_float_array("logits", logits)
    if logits.ndim >= 1 and logits.ndim == x.ndim + 1 and logits.shape[-1] != k:
        raise ValueError(
            f"`logits` of shape {logits.shape} has a last axis of {logits.shape[-1]}, but "
            f"num_levels={k}: the categorical needs one logit per level, logits of shape "
            f"{tuple(x.shape) + (k,)}; pass the data's num_levels or fix the decoder head."
        )
    logits = _trailing_axis_param("logits", logits, x, k, f"k = num_levels = {k} logits")
    x, logits = _promote(x, logits)
    _check_grid(x, k, tol)
    index, valid = _level_indices(x, k, tol)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    values = jnp.take_along_axis(log_probs, index.astype(jnp.int32)[..., None], axis=-1)
    return _event_sum(_nan_where_invalid(valid, values[..., 0]), event_ndims)


# --------------------------------------------------------------------------- #
# Helpers: levels, quantisation, means.
# --------------------------------------------------------------------------- #


def to_levels(x: ArrayLike, num_levels: int) -> jax.Array:
    """The integer level index round(x (k-1)) of grid data x in {0, 1/(k-1), ..., 1}.

    The inverse of ``index / (k - 1)``; the integer targets of a cross-entropy over
    intensities. Under jit: x off the grid, outside [0, 1] or NaN cannot raise and
    gives -1 for those elements.

    Args:
      x: [...] data on the grid {0, 1/(k-1), ..., 1}.
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).

    Returns:
      [...] int32 indices in {0, ..., k-1} (not float32: they are indices).
    """
    x, k, tol, _ = _grid_inputs(x, num_levels, 0)
    (x,) = _promote(x)
    _check_grid(x, k, tol)
    index, valid = _level_indices(x, k, tol)
    return jnp.where(valid, index.astype(jnp.int32), -1)


def quantize(x: ArrayLike, num_levels: int) -> jax.Array:
    """Rounds data in [0, 1] to the nearest of the k levels: round(x (k-1)) / (k-1).

    Values halfway between two levels go to the even index (``jnp.round``). Use it to
    put data on the grid the discrete likelihoods require (their error for off-grid x
    suggests it). Under jit: x outside [0, 1] or NaN cannot raise and gives NaN.

    Args:
      x: [...] data in [0, 1].
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).

    Returns:
      [...] values on the grid {0, 1/(k-1), ..., 1}; float32 (float64 for float64 x).
    """
    k = _check_num_levels(num_levels)
    (x,) = _promote(_as_float_array("x", x))
    _check_finite("x", x)
    if not _holds_everywhere(lambda v: (v >= 0) & (v <= 1), x):
        raise ValueError(
            f"`x` must lie in [0, 1] to be quantized to num_levels={k} levels, got values in "
            f"[{float(jnp.min(x))!r}, {float(jnp.max(x))!r}]: scale the data first (e.g. "
            f"`pixels / 255`), or clip it (`jnp.clip(x, 0, 1)`)."
        )
    levels = jnp.round(x * (k - 1)) / (k - 1)
    return jnp.where((x >= 0) & (x <= 1), levels, jnp.nan)


def discretized_mean(
    mean: ArrayLike, scale: ArrayLike, *, num_levels: int, distribution: Distribution
) -> jax.Array:
    """E[x] under the discretised Gaussian or logistic: sum_i x_i P(x_i), elementwise.

    Computed by summation by parts as ``(1/(k-1)) sum_{i=1}^{k-1} S(t_i)``, with the bin
    boundaries t_i = (i - 1/2)/(k-1) and S(t) = P(X > t) = F((mu - t)/s) (Phi or
    sigmoid): k-1 CDF evaluations per element (a [..., k-1] intermediate). It lies in
    [0, 1] and differs from mu wherever the edge bins collect mass (mu near or outside
    [0, 1], or s large): it is the mean of the data distribution, so use it (not mu) as
    the reconstruction. Under jit: scale <= 0 or non-finite gives NaN.

    Args:
      mean: [...] location mu, any finite value.
      scale: s > 0 (Gaussian standard deviation or logistic scale), broadcastable with
        ``mean`` (the result has their broadcast shape).
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).
      distribution: ``"gaussian"`` (:func:`discretized_gaussian_log_likelihood`) or
        ``"logistic"`` (:func:`discretized_logistic_log_likelihood`).

    Returns:
      [...] expected value in [0, 1]; float32 (float64 if an input is float64).
    """
    k = _check_num_levels(num_levels)
    if distribution not in ("gaussian", "logistic"):
        raise ValueError(
            f"`distribution` must be 'gaussian' or 'logistic', got {distribution!r}."
        )
    mean = _as_float_array("mean", mean)
    scale = _as_float_array("scale", scale, parameter=True)
    mean, scale = _promote(mean, scale)
    _check_finite("mean", mean)
    _check_positive_finite("scale", scale)
    valid = (scale > 0) & jnp.isfinite(scale)
    safe_scale = jnp.where(valid, scale, 1.0)
    boundaries = (jnp.arange(1, k, dtype=mean.dtype) - 0.5) / (k - 1)
    z = (mean[..., None] - boundaries) / safe_scale[..., None]
    survival = ndtr(z) if distribution == "gaussian" else jax.nn.sigmoid(z)
    return jnp.where(valid, jnp.sum(survival, axis=-1) / (k - 1), jnp.nan)


def discretized_logistic_mixture_mean(
    logit_weights: ArrayLike, means: ArrayLike, log_scales: ArrayLike, *, num_levels: int
) -> jax.Array:
    """E[x] under the mixture of :func:`discretized_logistic_mixture_log_likelihood`.

    ``sum_m softmax(logit_weights)_m E_m``, with E_m the :func:`discretized_mean` of
    component m (k-1 sigmoids per component). Under jit: non-finite log_scales give NaN.

    Args:
      logit_weights: [..., M] unnormalised log mixture weights.
      means: [..., M] component locations (broadcastable with ``logit_weights``).
      log_scales: [..., M] component log-scales (broadcastable with ``logit_weights``).
      num_levels: k, the number of levels (17 for the bundled digits, 256 for 8-bit).

    Returns:
      [...] expected value in [0, 1] (the M axis reduced); float32 (float64 if an input
      is float64).
    """
    logit_weights = _as_float_array("logit_weights", logit_weights)
    means = _as_float_array("means", means)
    log_scales = _as_float_array("log_scales", log_scales)
    logit_weights, means, log_scales = _promote(logit_weights, means, log_scales)
    if min(a.ndim for a in (logit_weights, means, log_scales)) == 0:
        raise ValueError("mixture parameters need a trailing axis of M components, got a scalar.")
    _check_finite("log_scales", log_scales)
    component_means = discretized_mean(
        means, jnp.exp(log_scales), num_levels=num_levels, distribution="logistic"
    )
    weights = jax.nn.softmax(logit_weights, axis=-1)
    return jnp.sum(weights * component_means, axis=-1)


def categorical_mean(logits: ArrayLike, num_levels: int) -> jax.Array:
    """E[x] under the categorical over intensities: sum_i softmax(logits)_i i/(k-1).

    Under jit: as outside (non-finite logits propagate).

    Args:
      logits: [..., k] logits of the k levels.
      num_levels: k; must equal ``logits.shape[-1]``.

    Returns:
      [...] expected value in [0, 1]; float32 (float64 for float64 logits).
    """
    k = _check_num_levels(num_levels)
    (logits,) = _promote(_as_float_array("logits", logits))
    if logits.ndim == 0 or logits.shape[-1] != k:
        raise ValueError(
            f"`logits` of shape {logits.shape} must have a last axis of num_levels={k} "
            f"(one logit per level)."
        )
    levels = jnp.arange(k, dtype=logits.dtype) / (k - 1)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * levels, axis=-1)
