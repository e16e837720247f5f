"""Decoder log-likelihoods in nats, with every constant, and the loss views they imply.

Every ``*_log_likelihood`` returns log p(x | decoder output) **per example**: the
elementwise log-density summed over the trailing ``event_ndims`` axes. Reducing over the
batch is the caller's job; doing it with a mean over pixels instead of a sum silently
rescales the KL weight (beta).

The loss views (:func:`sse`, :func:`mse`, :func:`sae`, :func:`mae`, :func:`bce`) name
their reduction and differ from the negative log-likelihoods only by scale and constants:

    -log N(x; mu, sigma^2 I) = SSE / (2 sigma^2) + D log sigma + D/2 log(2 pi)
                             = D/(2 sigma^2) * MSE + const
    -log Laplace(x; mu, b)   = SAE / b + D log(2 b)
                             = (D / b) * MAE + const
    -log Bern(x; sigmoid(logits)) = BCE_with_logits(logits, x)      (x in {0, 1})

so for a fixed shared scale grad(-log N) = D/(2 sigma^2) grad(MSE) and grad(-log Laplace)
= (D / b) grad(MAE) (measured by :mod:`vaejax.equivalence`). The scale that maximises the
likelihood is sigma* = sqrt(MSE) (:func:`optimal_sigma`) and b* = MAE
(:func:`optimal_laplace_scale`). The logistic (:func:`logistic_log_likelihood`) and the
Beta for data in the open interval (0, 1) (:func:`beta_log_likelihood`, mean and
concentration parameters) have no plain-loss counterpart. A learned log-scale (Gaussian,
Laplace, logistic) can be bounded from below smoothly with :func:`soft_clip_log_scale`,
the sigma-VAE's soft clipping.

This module imports only ``jax`` so that it can be copied into any JAX project.

Shapes: ``event_ndims`` is the number of trailing axes of ``x`` that form one example;
the result has the remaining leading (batch) shape of ``x``. Left out, it is 1 for data of
rank 1 or 2 (a [D] vector, a [B, D] batch of flattened images) and 0 for a scalar; for data
of rank > 2 (e.g. [B, H, W, C] images) it must be given, because summing only the last
axis would return [B, H, W] instead of one value per image: pass ``event_ndims=3`` for
nats per image. ``mean`` / ``logits`` must have the rank of ``x``, each axis equal to x's
or 1 (a (1, H, W, C) mean broadcasts over the batch); a different rank is refused, as
numpy's right-aligned broadcasting would silently pair the wrong elements (a [B] mean
against [B, D] data when B == D); so must the Laplace and logistic ``loc`` and the Beta
``mean``. ``sigma`` / ``log_sigma`` (and ``scale`` / ``log_scale`` / ``concentration``)
broadcast to ``x`` by numpy's rules (a scalar, a per-pixel [*event] array, a per-example
[B, 1, ...] array).

Precision: bfloat16 and float16 inputs are upcast to float32 on entry; every elementwise
operation and the sums over the event axes run in float32 and the result is float32.
float32 stays float32 and float64 (with x64 enabled) stays float64: the result dtype is
the promotion of the floating inputs with float32. Gradients with respect to a bfloat16
or float16 input come back in that dtype (the transpose of the cast): the float32
gradient rounded once. bfloat16 has float32's exponent range, so the float32 ranges hold
for it: finite results and gradients for sigma in [1e-6, 1e6] (|log_sigma| <= 13.8),
logits in [-1e4, 1e4] and |x|, |mean| <= 1e4. float16 holds only magnitudes up to 65504
and normal numbers down to 2^-14 = 6.1e-5 (sigma = 1e-6 is a subnormal there, sigma = 1e6
overflows to inf). For float16 inputs the promise is: finite float32 results for sigma in
[6.1e-5, 65504], |log_sigma| <= 13.8 (exp runs in float32), any finite logits
(|l| <= 65504) and |x|, |mean| <= 1e4; float16 gradients equal to the float32 gradient
rounded to float16, hence finite wherever that gradient is at most 65504 in magnitude:
always for the Bernoulli family (logit gradients lie in [-1, 1]); for the Gaussian,
d/dmean = (x - mean)/sigma^2 exceeds it when sigma < 4e-3 and |x - mean| = 1. The
Laplace and logistic scales have sigma's ranges; their gradients with respect to loc are
at most 1/scale in magnitude, so float16 ones are finite over float16's whole scale range
[6.1e-5, 65504]. The logistic stays finite, values and gradients, for |z| = |x - loc| / s
up to 1e4 and beyond.

Validation: when the arguments are concrete (called outside ``jit``), bad values
raise ``ValueError`` naming the argument. Under ``jit`` values cannot be
inspected; invalid values (sigma or scale <= 0 or non-finite, x outside [0, 1] for the
Bernoulli family, x or mean outside (0, 1) or concentration <= 0 for the Beta) then
turn the affected examples into NaN, never a silent wrong number; :func:`checked`
turns such a NaN into an error naming the function. Shape and dtype errors are static
and always raise. :func:`bernoulli_log_likelihood` and :func:`bce` warn (once per
process, concrete data only) when ``x`` has grey levels, where the Bernoulli is not a
normalised density on [0, 1]. :func:`beta_log_likelihood` refuses x of exactly 0 or 1
(its density is 0 or infinite there) and says how to move the data into (0, 1).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.experimental import checkify
from jax.typing import ArrayLike

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)
# Below this |logit| the continuous-Bernoulli normaliser and mean use their Taylor series:
# the closed forms cancel catastrophically near lambda = 1/2 (logit = 0). The series are
# truncated at l^8 (normaliser) and l^5 (mean): 0.5 keeps float32 exact, float64 needs a
# smaller cutoff where the truncation error stays below its eps.
_CB_TAYLOR_CUTOFF = {4: 0.5, 8: 0.02}
_GREY_LEVEL_WARNING = (
    "bernoulli_log_likelihood / bce got grey-level data (x not all in {0, 1}): for such x "
    "the Bernoulli log-likelihood is a cross-entropy, not a normalised density on [0, 1], "
    "so its value is not a log-likelihood of the data. Use "
    "continuous_bernoulli_log_likelihood for grey levels, or binarise the data "
    "(x in {0, 1}, e.g. sampled from Bernoulli(x))."
)


def _cb_cutoff(dtype) -> float:
    return _CB_TAYLOR_CUTOFF.get(jnp.dtype(dtype).itemsize, 0.5)


# --------------------------------------------------------------------------- #
# Argument checks (only raise when values are concrete, i.e. outside jit).
# --------------------------------------------------------------------------- #


def _is_concrete(value: ArrayLike) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _as_float_array(name: str, value: ArrayLike, *, parameter: bool = False) -> jax.Array:
    """Converts to a jax array and rejects integer, boolean and complex data.

    With ``parameter=True`` a plain Python int (``sigma=1``) is accepted as a float; data
    arrays must already be floating point (integer pixels are a scaling bug waiting).
    """
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a floating-point array, got a bool.")
    if parameter and isinstance(value, int):
        value = float(value)
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be a floating-point array, got dtype {array.dtype}. "
            f"Convert it first, e.g. `{name}.astype(jnp.float32)` (scale images to [0, 1])."
        )
    return array


def _promote(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """Casts to the arrays' promoted dtype, at least float32: [...] -> [...] each.

    bfloat16 and float16 become float32, so that the elementwise work and the event sums
    never round to 8 or 11 significant bits; float64 stays float64. Python scalars are
    weakly typed: they follow the arrays (float64 only when x64 is on and nothing else
    is typed). The cast's transpose returns gradients in each input's own dtype.
    """
    dtype = jnp.result_type(*arrays)
    if jnp.finfo(dtype).bits < 32:
        dtype = jnp.dtype(jnp.float32)
    return tuple(array.astype(dtype) for array in arrays)


def _check_event_ndims(event_ndims: int, *arrays: jax.Array) -> None:
    if not isinstance(event_ndims, int) or isinstance(event_ndims, bool) or event_ndims < 0:
        raise ValueError(f"`event_ndims` must be a non-negative int, got {event_ndims!r}.")
    for array in arrays:
        if event_ndims > array.ndim:
            raise ValueError(
                f"`event_ndims`={event_ndims} exceeds the rank of an input of shape "
                f"{array.shape}."
            )


def _resolve_event_ndims(
    event_ndims: int | None, name: str, array: jax.Array, *, unit: str = "image"
) -> int:
    """The explicit ``event_ndims``, or the default for ``array``: 0 for a scalar, 1 for
    rank 1 or 2; refused for rank > 2, where summing only the last axis is rarely meant."""
    if event_ndims is None:
        if array.ndim > 2:
            example = "[" + ", ".join(str(size) for size in array.shape[1:]) + "]"
            raise ValueError(
                f"`event_ndims` must be given for inputs of rank > 2: `{name}` has shape "
                f"{array.shape}; pass event_ndims={array.ndim - 1} to sum each {example} "
                f"{unit} (nats per example), or event_ndims=1 to sum only the last axis."
            )
        return min(array.ndim, 1)
    _check_event_ndims(event_ndims, array)
    return event_ndims


def _check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, got {a.shape} and {b.shape}."
        )


def _broadcast_like(name: str, param: jax.Array, target_name: str, target: jax.Array):
    """Broadcasts a decoder output of ``target``'s rank (axes equal or 1) to its shape.

    A different rank is refused: numpy aligns shapes on the right, so a [B] mean against
    [B, D] data would be paired with the pixels instead of the examples when B == D.
    """
    if param.ndim != target.ndim:
        raise ValueError(
            f"`{name}` of shape {param.shape} must have the same rank as `{target_name}` of "
            f"shape {target.shape} (axes of size 1 broadcast): a lower rank would be aligned "
            f"with the trailing axes of `{target_name}` and could silently pair the wrong "
            f"elements (a [B] `{name}` against [B, D] data when B == D). Add the size-1 axes "
            f"explicitly, e.g. `{name}[None]` for one example shared by the batch."
        )
    if any(p not in (1, t) for p, t in zip(param.shape, target.shape, strict=True)):
        raise ValueError(
            f"`{name}` of shape {param.shape} does not broadcast to `{target_name}` of shape "
            f"{target.shape}: each axis must equal `{target_name}`'s or be 1."
        )
    return jnp.broadcast_to(param, target.shape)


def _check_broadcastable(name: str, param: jax.Array, target_name: str, target: jax.Array) -> None:
    try:
        shape = jnp.broadcast_shapes(param.shape, target.shape)
    except ValueError:
        shape = None
    if shape != target.shape:
        raise ValueError(
            f"`{name}` of shape {param.shape} does not broadcast to `{target_name}` of shape "
            f"{target.shape}."
        )


def _holds_everywhere(condition, value: jax.Array) -> bool:
    """True unless ``condition(value)`` is concretely false somewhere.

    Inside a trace (jit, vmap, scan) even a closed-over constant yields a tracer, so the
    check is skipped there and the NaN behaviour documented in the module applies.
    """
    if not _is_concrete(value):
        return True
    try:
        return bool(jnp.all(condition(value)))
    except jax.errors.ConcretizationTypeError:
        return True


def _check_positive_finite(name: str, value: jax.Array) -> None:
    if not _holds_everywhere(lambda v: jnp.isfinite(v) & (v > 0), value):
        raise ValueError(f"`{name}` must be finite and > 0, got min {float(jnp.min(value))!r}.")


def _check_finite(name: str, value: jax.Array) -> None:
    if not _holds_everywhere(jnp.isfinite, value):
        raise ValueError(f"`{name}` contains NaN or inf.")


def _check_unit_interval(name: str, value: jax.Array) -> None:
    if not _holds_everywhere(lambda v: (v >= 0) & (v <= 1), value):
        raise ValueError(
            f"`{name}` must lie in [0, 1] for this likelihood, got values in "
            f"[{float(jnp.min(value))!r}, {float(jnp.max(value))!r}]."
        )


def _warn_if_grey_levels(x: jax.Array) -> None:
    # One fixed message from one fixed line (stacklevel=1): Python's default filter then
    # shows it once per process, however many call sites there are.
    if not _holds_everywhere(lambda v: (v == 0) | (v == 1), x):
        warnings.warn(_GREY_LEVEL_WARNING, UserWarning, stacklevel=1)


def _event_sum(values: jax.Array, event_ndims: int) -> jax.Array:
    """Sums the trailing ``event_ndims`` axes: [..., *event] -> [...]."""
    if event_ndims == 0:
        return values
    return jnp.sum(values, axis=tuple(range(-event_ndims, 0)))


def _event_size(shape: tuple[int, ...], event_ndims: int) -> int:
    return math.prod(shape[len(shape) - event_ndims :]) if event_ndims else 1


def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``fn`` so that a NaN it produces, also under ``jit``, raises an error naming it.

    Value checks cannot raise under ``jit``; this library makes a bad value (sigma <= 0,
    x outside [0, 1]) a NaN instead. ``checked(fn)`` runs ``fn`` under
    ``jax.experimental.checkify`` with NaN checks and user checks (``checkify.check``
    calls in ``fn``) and raises ``checkify.JaxRuntimeError`` (a ``ValueError``) naming
    ``fn`` and the primitive that made the NaN. It must be the outermost wrapper: pass it
    the jitted function (``checked(jax.jit(step))``), do not jit the result. The checks
    cost one reduction per primitive; use it to debug, or where errors matter more than
    speed.

    Example::

        fn = jax.jit(functools.partial(gaussian_log_likelihood, event_ndims=1))
        safe = checked(fn)
        safe(x, mean, jnp.float32(0.1))   # [B], the same value as fn(x, mean, 0.1)
        safe(x, mean, jnp.float32(-0.1))  # raises JaxRuntimeError: gaussian_log_likelihood:
                                          # nan generated by primitive: select_n ...

    Args:
      fn: any function of arrays, typically a jitted loss or training step returning
        e.g. a [B] log-likelihood or a [] loss.

    Returns:
      A function with ``fn``'s signature returning ``fn``'s outputs (same shapes
      [...] and dtypes), raising instead of returning a NaN-producing result.
    """
    checkified = checkify.checkify(fn, errors=checkify.nan_checks | checkify.user_checks)
    inner = fn
    while isinstance(inner, functools.partial):  # name the function, not the partial
        inner = inner.func
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None) or repr(fn)

    def checked_fn(*args, **kwargs):
        error, out = checkified(*args, **kwargs)
        message = error.get()
        if message is not None:
            raise checkify.JaxRuntimeError(
                f"{name}: {message} (an invalid value, e.g. sigma <= 0 or x outside [0, 1] "
                f"for the Bernoulli family, gives NaN under jit)"
            )
        return out

    return functools.update_wrapper(checked_fn, fn)


# --------------------------------------------------------------------------- #
# Location-scale families (Gaussian, Laplace, logistic): shared input handling.
# --------------------------------------------------------------------------- #


def _location_param_inputs(x, loc, param, event_ndims, *, loc_name: str, param_name: str):
    """Converted, broadcast and promoted ``(x, loc, param, event_ndims)`` of a decoder.

    ``loc`` (the decoder output: a mean, a location) must have x's rank with axes equal or
    1 and comes back broadcast to x's shape [..., *event]; ``param`` (a scale, log-scale or
    concentration) must broadcast to x by numpy's rules and keeps its shape. No value checks.
    """
    x = _as_float_array("x", x)
    loc = _as_float_array(loc_name, loc)
    param = _as_float_array(param_name, param, parameter=True)
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    loc = _broadcast_like(loc_name, loc, "x", x)
    _check_broadcastable(param_name, param, "x", x)
    x, loc, param = _promote(x, loc, param)
    return x, loc, param, event_ndims


def _location_scale_inputs(x, loc, scale, event_ndims, *, loc_name: str, scale_name: str):
    """Validated inputs of a location-scale density given its scale.

    Returns ``(x, loc, safe_scale, log_scale, event_ndims)``, the arrays of x's shape
    [..., *event]. Under jit a scale <= 0 or non-finite cannot raise: such elements get
    ``safe_scale = 1`` (no NaN or inf in the gradients of the other elements) and
    ``log_scale = NaN``, which makes the affected examples NaN instead of a number.
    """
    x, loc, scale, event_ndims = _location_param_inputs(
        x, loc, scale, event_ndims, loc_name=loc_name, param_name=scale_name
    )
    _check_finite("x", x)
    _check_positive_finite(scale_name, scale)
    valid = (scale > 0) & jnp.isfinite(scale)
    safe_scale = jnp.broadcast_to(jnp.where(valid, scale, 1.0), x.shape)
    log_scale = jnp.broadcast_to(jnp.where(valid, jnp.log(safe_scale), jnp.nan), x.shape)
    return x, loc, safe_scale, log_scale, event_ndims


def _location_log_scale_inputs(x, loc, log_scale, event_ndims, *, loc_name: str,
                               log_scale_name: str):
    """As :func:`_location_scale_inputs` for a density parameterised by log(scale).

    Returns ``(x, loc, log_scale, event_ndims)``, the arrays of x's shape [..., *event].
    """
    x, loc, log_scale, event_ndims = _location_param_inputs(
        x, loc, log_scale, event_ndims, loc_name=loc_name, param_name=log_scale_name
    )
    _check_finite("x", x)
    _check_finite(log_scale_name, log_scale)
    return x, loc, jnp.broadcast_to(log_scale, x.shape), event_ndims


def _error_inputs(x, loc, event_ndims, *, loc_name: str = "mean"):
    """Validated, broadcast and promoted (x, loc, event_ndims) for the error views."""
    x = _as_float_array("x", x)
    loc = _as_float_array(loc_name, loc)
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    loc = _broadcast_like(loc_name, loc, "x", x)
    x, loc = _promote(x, loc)
    _check_finite("x", x)
    return x, loc, event_ndims


# --------------------------------------------------------------------------- #
# Gaussian decoder.
# --------------------------------------------------------------------------- #


def _gaussian_elementwise(
    x: jax.Array, mean: jax.Array, log_sigma: jax.Array, sigma: jax.Array | None = None
) -> jax.Array:
    # Standardise first so that (x - mean)^2 / sigma^2 never forms sigma^2 (under/overflow).
    # Given sigma, divide by it: exp(-log_sigma) carries the rounding of log(sigma), a relative
    # error of |log sigma| eps (14 eps at sigma = 1e6), in z^2 and in the gradients.
    z = (x - mean) * jnp.exp(-log_sigma) if sigma is None else (x - mean) / sigma
    return -_HALF_LOG_2PI - log_sigma - 0.5 * jnp.square(z)


def gaussian_log_likelihood(
    x: ArrayLike, mean: ArrayLike, sigma: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log N(x; mean, sigma^2 I) in nats per example, with every constant.

    ``log N = -D/2 log(2 pi) - sum_i log sigma_i - sum_i (x_i - mean_i)^2 / (2 sigma_i^2)``;
    the log-determinant of ``diag(sigma^2)`` is ``sum_i log sigma_i^2`` (a common
    mistake writes ``sum_i sigma_i^2``). Under jit: a sigma <= 0 or non-finite cannot
    raise and gives NaN for the affected examples (:func:`checked` raises instead).

    Args:
      x: [..., *event] data (the target; "y").
      mean: [..., *event] decoder mean mu(z) (the prediction; "y-hat"), or any array of
        x's rank whose axes equal x's or are 1 (e.g. [1, *event] shared by the batch).
      sigma: scalar (fixed), [*event] (per pixel, shared over the batch) or any array
        broadcastable to ``x`` (e.g. [..., *event] per example and pixel). Must be > 0.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), appendix C.2.
    """
    x, mean, safe_sigma, log_sigma, event_ndims = _location_scale_inputs(
        x, mean, sigma, event_ndims, loc_name="mean", scale_name="sigma"
    )
    return _event_sum(_gaussian_elementwise(x, mean, log_sigma, safe_sigma), event_ndims)


def gaussian_log_likelihood_from_log_sigma(
    x: ArrayLike, mean: ArrayLike, log_sigma: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log N(x; mean, exp(log_sigma)^2 I) in nats per example: the form for learned sigma.

    Parameterising by ``log_sigma`` keeps sigma positive without constraints and
    is what a decoder head (shared scalar or per-pixel output) should produce; to keep a
    learned sigma from collapsing, bound it smoothly from below with
    :func:`soft_clip_log_scale` first (the sigma-VAE's soft clipping). Under jit: a
    non-finite log_sigma cannot raise and gives a non-finite value (:func:`checked`).

    Args:
      x: [..., *event] data.
      mean: [..., *event] decoder mean, or of x's rank with axes equal to x's or 1.
      log_sigma: any array broadcastable to ``x`` (scalar shared, [*event] per pixel,
        [..., *event] per example and pixel, as in AEVB appendix C.2).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).
    """
    x, mean, log_sigma, event_ndims = _location_log_scale_inputs(
        x, mean, log_sigma, event_ndims, loc_name="mean", log_scale_name="log_sigma"
    )
    return _event_sum(_gaussian_elementwise(x, mean, log_sigma), event_ndims)


def _sum_squared_error(x: jax.Array, mean: jax.Array, event_ndims: int) -> jax.Array:
    """[..., *event] validated inputs -> [...] SSE."""
    return _event_sum(jnp.square(x - mean), event_ndims)


def _mean_squared_error(x: jax.Array, mean: jax.Array, event_ndims: int) -> jax.Array:
    """[..., *event] validated inputs -> [...] MSE."""
    return _sum_squared_error(x, mean, event_ndims) / _event_size(x.shape, event_ndims)


def optimal_sigma(
    x: ArrayLike,
    mean: ArrayLike,
    *,
    axis: Literal["example", "batch"] = "example",
    event_ndims: int | None = None,
) -> jax.Array:
    """The maximum-likelihood shared sigma for a Gaussian decoder: sqrt(MSE).

    d/dsigma log N = -D/sigma + SSE/sigma^3 = 0 gives sigma*^2 = SSE / D = MSE. Under
    jit: non-finite x gives a non-finite sigma instead of an error.

    Args:
      x: [..., *event] data.
      mean: [..., *event] decoder mean, or of x's rank with axes equal to x's or 1.
      axis: ``"example"`` pools the squared error over each example's pixels
        (returns [...]); ``"batch"`` pools over all examples and pixels (returns a
        scalar, the sigma-VAE choice of Rybkin et al., 2021).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (``axis="example"``, x's batch shape) or [] (``axis="batch"``) optimal sigma;
      float32 (float64 if an input is float64).
    """
    x, mean, event_ndims = _error_inputs(x, mean, event_ndims)
    if axis == "example":
        return jnp.sqrt(_mean_squared_error(x, mean, event_ndims))
    if axis == "batch":
        return jnp.sqrt(jnp.mean(jnp.square(x - mean)))
    raise ValueError(f"`axis` must be 'example' or 'batch', got {axis!r}.")


def gaussian_log_likelihood_optimal_sigma(
    x: ArrayLike,
    mean: ArrayLike,
    *,
    axis: Literal["example", "batch"] = "example",
    event_ndims: int | None = None,
    eps: float = 0.0,
) -> jax.Array:
    """log N(x; mean, sigma*^2 I) at the analytic optimum sigma*^2 = MSE, per example.

    With ``axis="example"`` this is exactly ``-D/2 log(2 pi e MSE)``: the
    reconstruction term no longer reduces to MSE but to its logarithm. By the
    envelope theorem the gradient through sigma* is zero, so no stop_gradient is
    needed. Under jit: non-finite x gives a non-finite value instead of an error.

    Args:
      x: [..., *event] data.
      mean: [..., *event] decoder mean, or of x's rank with axes equal to x's or 1.
      axis: where sigma* is pooled, see :func:`optimal_sigma`.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).
      eps: added to MSE before the log (0 = exact; a perfect reconstruction then
        gives +inf, as the likelihood really is unbounded there).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).
    """
    x, mean, event_ndims = _error_inputs(x, mean, event_ndims)
    num_dims = _event_size(x.shape, event_ndims)
    if axis == "example":
        var = _mean_squared_error(x, mean, event_ndims) + eps
        return -0.5 * num_dims * (jnp.log(2.0 * math.pi * var) + 1.0)
    if axis == "batch":
        var = jnp.mean(jnp.square(x - mean)) + eps
        per_example_sse = _sum_squared_error(x, mean, event_ndims)
        return -0.5 * num_dims * jnp.log(2.0 * math.pi * var) - 0.5 * per_example_sse / var
    raise ValueError(f"`axis` must be 'example' or 'batch', got {axis!r}.")


# --------------------------------------------------------------------------- #
# Laplace decoder.
# --------------------------------------------------------------------------- #


@jax.custom_jvp
def _abs(u: jax.Array) -> jax.Array:
    """|u| elementwise, with derivative sign(u): 0 at u = 0 (see :func:`laplace_log_likelihood`)."""
    return jnp.abs(u)


@_abs.defjvp
def _abs_jvp(primals, tangents):
    # jnp.abs differentiates as select(u >= 0, 1, -1): +1 at u = 0, so d/dmu |x - mu| at
    # x == mu would be -1 while d/dmu |mu - x| would be +1. sign(u) is the subgradient that
    # does not depend on how the difference is written, the one of least norm (a perfectly
    # reconstructed element contributes no gradient) and PyTorch's choice for L1 losses.
    (u,), (u_dot,) = primals, tangents
    return jnp.abs(u), jnp.sign(u) * u_dot


def _laplace_elementwise(
    x: jax.Array, loc: jax.Array, log_scale: jax.Array, scale: jax.Array | None = None
) -> jax.Array:
    # As for the Gaussian: divide by the scale when it is given (exp(-log_scale) would carry
    # the rounding of log(scale), a relative error of |log b| eps), else multiply by exp(-log b).
    z = (x - loc) * jnp.exp(-log_scale) if scale is None else (x - loc) / scale
    return -_LOG_2 - log_scale - _abs(z)


def laplace_log_likelihood(
    x: ArrayLike, loc: ArrayLike, scale: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log Laplace(x; loc, scale) in nats per example, with every constant: the L1 likelihood.

    ``log Laplace = -sum_i log(2 b_i) - sum_i |x_i - mu_i| / b_i`` (density
    ``exp(-|x - mu| / b) / (2 b)``: mean and median mu, variance 2 b^2). For a shared
    fixed b: ``-log Laplace = SAE / b + D log(2 b) = (D / b) MAE + D log(2 b)``, so
    ``grad(-log Laplace) = (D / b) grad(MAE) = grad(SAE) / b`` (:func:`mae`, :func:`sae`;
    measured by :func:`vaejax.equivalence.compare_laplace_gradients`).

    Gradient at x == mu: |x - mu| has no derivative there. ``jnp.abs`` would give +1
    (``select(u >= 0, 1, -1)``), i.e. d/dmu = -1 for ``|x - mu|`` but +1 for
    ``|mu - x|``; this module uses ``sign(x - mu)`` (0 at x == mu, the subgradient of least
    norm, PyTorch's choice for L1 losses), here and in :func:`mae` / :func:`sae`, so the
    gradients are finite everywhere and a perfectly reconstructed element contributes
    none. Under jit: a scale <= 0 or non-finite cannot raise and gives NaN for the affected
    examples (:func:`checked` raises instead).

    Args:
      x: [..., *event] data.
      loc: [..., *event] decoder location mu(z) (the median), or any array of x's rank
        whose axes equal x's or are 1 (e.g. [1, *event] shared by the batch).
      scale: b > 0: scalar (fixed), [*event] (per pixel) or any array broadcastable to
        ``x`` (e.g. [..., *event] per example and pixel).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).

    References:
      Laplace distribution: Johnson, Kotz & Balakrishnan, Continuous Univariate
      Distributions vol. 2 (2nd ed., Wiley 1995), ch. 24; ``scipy.stats.laplace``.
    """
    x, loc, safe_scale, log_scale, event_ndims = _location_scale_inputs(
        x, loc, scale, event_ndims, loc_name="loc", scale_name="scale"
    )
    return _event_sum(_laplace_elementwise(x, loc, log_scale, safe_scale), event_ndims)


def laplace_log_likelihood_from_log_scale(
    x: ArrayLike, loc: ArrayLike, log_scale: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log Laplace(x; loc, exp(log_scale)) in nats per example: the form for a learned scale.

    The formula of :func:`laplace_log_likelihood` with ``log b`` given, for a decoder head
    that learns b (a shared scalar or a per-pixel output) without a positivity constraint.
    To keep a learned b from collapsing onto the data, pass the head's output through
    :func:`soft_clip_log_scale` first. Under jit: a non-finite log_scale cannot raise and
    gives a non-finite value (:func:`checked` raises instead).

    Args:
      x: [..., *event] data.
      loc: [..., *event] decoder location, or of x's rank with axes equal to x's or 1.
      log_scale: log b, any array broadcastable to ``x`` (scalar shared, [*event] per
        pixel, [..., *event] per example and pixel).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).
    """
    x, loc, log_scale, event_ndims = _location_log_scale_inputs(
        x, loc, log_scale, event_ndims, loc_name="loc", log_scale_name="log_scale"
    )
    return _event_sum(_laplace_elementwise(x, loc, log_scale), event_ndims)


def _sum_absolute_error(x: jax.Array, loc: jax.Array, event_ndims: int) -> jax.Array:
    """[..., *event] validated inputs -> [...] SAE."""
    return _event_sum(_abs(x - loc), event_ndims)


def _mean_absolute_error(x: jax.Array, loc: jax.Array, event_ndims: int) -> jax.Array:
    """[..., *event] validated inputs -> [...] MAE."""
    return _sum_absolute_error(x, loc, event_ndims) / _event_size(x.shape, event_ndims)


def optimal_laplace_scale(
    x: ArrayLike,
    loc: ArrayLike,
    *,
    axis: Literal["example", "batch"] = "example",
    event_ndims: int | None = None,
) -> jax.Array:
    """The maximum-likelihood shared scale for a Laplace decoder: b* = MAE.

    d/db log Laplace = -D/b + SAE/b^2 = 0 gives b* = SAE / D = MAE (a maximum: the
    derivative is positive below b* and negative above). A perfect reconstruction gives
    b* = 0, where the likelihood is unbounded; the gradient of b* stays finite (sign(0) = 0,
    see :func:`laplace_log_likelihood`). Under jit: non-finite x gives a non-finite scale
    instead of an error.

    Args:
      x: [..., *event] data.
      loc: [..., *event] decoder location, or of x's rank with axes equal to x's or 1.
      axis: ``"example"`` pools the absolute error over each example's elements
        (returns [...]); ``"batch"`` pools over all examples and elements (returns a
        scalar, as :func:`optimal_sigma` does for the Gaussian).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (``axis="example"``, x's batch shape) or [] (``axis="batch"``) optimal scale;
      float32 (float64 if an input is float64).
    """
    x, loc, event_ndims = _error_inputs(x, loc, event_ndims, loc_name="loc")
    if axis == "example":
        return _mean_absolute_error(x, loc, event_ndims)
    if axis == "batch":
        return jnp.mean(_abs(x - loc))
    raise ValueError(f"`axis` must be 'example' or 'batch', got {axis!r}.")


def laplace_log_likelihood_optimal_scale(
    x: ArrayLike,
    loc: ArrayLike,
    *,
    axis: Literal["example", "batch"] = "example",
    event_ndims: int | None = None,
    eps: float = 0.0,
) -> jax.Array:
    """log Laplace(x; loc, b*) at the analytic optimum b* = MAE, per example.

    With ``axis="example"`` this is exactly ``-D (1 + log(2 MAE))``: the reconstruction
    term becomes the logarithm of the MAE. With ``axis="batch"`` (one b* = mean |x - mu|
    over the batch) it is ``-D log(2 b*) - SAE / b*`` per example. By the envelope theorem
    the gradient through b* is zero, so no stop_gradient is needed: the gradient equals that
    of :func:`laplace_log_likelihood` at b = b*. Under jit: non-finite x gives a non-finite
    value instead of an error.

    Args:
      x: [..., *event] data.
      loc: [..., *event] decoder location, or of x's rank with axes equal to x's or 1.
      axis: where b* is pooled, see :func:`optimal_laplace_scale`.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).
      eps: added to b* before the log (0 = exact; a perfect reconstruction then gives
        +inf, as the likelihood really is unbounded there).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).
    """
    x, loc, event_ndims = _error_inputs(x, loc, event_ndims, loc_name="loc")
    num_dims = _event_size(x.shape, event_ndims)
    if axis == "example":
        scale = _mean_absolute_error(x, loc, event_ndims) + eps
        return -num_dims * (1.0 + jnp.log(2.0 * scale))
    if axis == "batch":
        scale = jnp.mean(_abs(x - loc)) + eps
        return -num_dims * jnp.log(2.0 * scale) - _sum_absolute_error(x, loc, event_ndims) / scale
    raise ValueError(f"`axis` must be 'example' or 'batch', got {axis!r}.")


# --------------------------------------------------------------------------- #
# Logistic decoder.
# --------------------------------------------------------------------------- #


@jax.custom_jvp
def _standard_logistic_log_density(z: jax.Array) -> jax.Array:
    # log p(z) = -z - 2 softplus(-z) is even in z; written in |z| it never subtracts two large
    # numbers (at z = -1e4 the plain form is 1e4 - 2e4) and exp never overflows.
    abs_z = jnp.abs(z)
    return -abs_z - 2.0 * jax.nn.softplus(-abs_z)


@_standard_logistic_log_density.defjvp
def _standard_logistic_log_density_jvp(primals, tangents):
    # d/dz log p(z) = -tanh(z / 2): exact at z = 0 (where the |z| form would differentiate
    # through |.|) and accurate for small z, where 1 - 2 sigmoid(-|z|) cancels.
    (z,), (z_dot,) = primals, tangents
    return _standard_logistic_log_density(z), -jnp.tanh(0.5 * z) * z_dot


def _logistic_elementwise(
    x: jax.Array, loc: jax.Array, log_scale: jax.Array, scale: jax.Array | None = None
) -> jax.Array:
    z = (x - loc) * jnp.exp(-log_scale) if scale is None else (x - loc) / scale
    return _standard_logistic_log_density(z) - log_scale


def logistic_log_likelihood(
    x: ArrayLike, loc: ArrayLike, scale: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log Logistic(x; loc, scale) in nats per example, with every constant.

    With ``z = (x - mu) / s``: ``log p = -z - log s - 2 softplus(-z)`` per element
    (density ``e^{-z} / (s (1 + e^{-z})^2)``, mean mu, variance s^2 pi^2 / 3), summed
    over the event axes. Evaluated as ``-|z| - 2 softplus(-|z|) - log s`` (the density is
    even in z), with the derivative ``d/dz = -tanh(z / 2)`` written out: values and
    gradients are finite and accurate for |z| up to 1e4 and beyond in float32 (there
    ``log p = -|z| - log s`` to rounding). Under jit: a scale <= 0 or non-finite cannot
    raise and gives NaN for the affected examples (:func:`checked` raises instead).

    Args:
      x: [..., *event] data.
      loc: [..., *event] decoder location mu(z) (mean and median), or any array of x's
        rank whose axes equal x's or are 1.
      scale: s > 0: scalar (fixed), [*event] (per pixel) or any array broadcastable to
        ``x``.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).

    References:
      Logistic distribution: Johnson, Kotz & Balakrishnan, Continuous Univariate
      Distributions vol. 2 (2nd ed., Wiley 1995), ch. 23; ``scipy.stats.logistic``.
    """
    x, loc, safe_scale, log_scale, event_ndims = _location_scale_inputs(
        x, loc, scale, event_ndims, loc_name="loc", scale_name="scale"
    )
    return _event_sum(_logistic_elementwise(x, loc, log_scale, safe_scale), event_ndims)


def logistic_log_likelihood_from_log_scale(
    x: ArrayLike, loc: ArrayLike, log_scale: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log Logistic(x; loc, exp(log_scale)) in nats per example: the form for a learned scale.

    The formula of :func:`logistic_log_likelihood` with ``log s`` given (z = (x - mu)
    exp(-log s)), for a decoder head that learns s without a positivity constraint;
    :func:`soft_clip_log_scale` bounds it from below. Under jit: a non-finite log_scale
    cannot raise and gives a non-finite value (:func:`checked` raises instead).

    Args:
      x: [..., *event] data.
      loc: [..., *event] decoder location, or of x's rank with axes equal to x's or 1.
      log_scale: log s, any array broadcastable to ``x`` (scalar shared, [*event] per
        pixel, [..., *event] per example and pixel).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).
    """
    x, loc, log_scale, event_ndims = _location_log_scale_inputs(
        x, loc, log_scale, event_ndims, loc_name="loc", log_scale_name="log_scale"
    )
    return _event_sum(_logistic_elementwise(x, loc, log_scale), event_ndims)


# --------------------------------------------------------------------------- #
# Learned scales: soft clipping from below.
# --------------------------------------------------------------------------- #


def soft_clip_log_scale(log_scale: ArrayLike, min_log_scale: ArrayLike) -> jax.Array:
    """Smooth lower bound on a learned log-scale: ``min + softplus(log_scale - min)``.

    The sigma-VAE's soft clipping: a learned decoder scale (the Gaussian's log sigma,
    the Laplace or logistic log b) can shrink without bound on well-reconstructed data,
    sending the likelihood to +inf and its gradients to overflow. A hard floor
    ``maximum(log_scale, min)`` has zero gradient below the floor, so a head stuck there
    stops learning; this bound is smooth, strictly increasing (derivative
    ``sigmoid(log_scale - min)`` in (0, 1)), > ``min`` (>= after rounding) and equal to
    ``log_scale + log1p(exp(-(log_scale - min)))``, so within 0.0068 of ``log_scale`` once
    that is 5 above min. Apply it to a head's output before
    :func:`gaussian_log_likelihood_from_log_sigma`,
    :func:`laplace_log_likelihood_from_log_scale` or
    :func:`logistic_log_likelihood_from_log_scale`; Rybkin et al. use ``min = -6``
    (sigma > 2.5e-3). Under jit: as outside, except that non-finite inputs give a
    non-finite result instead of an error.

    Args:
      log_scale: [...] learned log-scale (any shape).
      min_log_scale: the lower bound: a scalar, or any array broadcastable to
        ``log_scale`` (e.g. [*event] per pixel).

    Returns:
      [...] (log_scale's shape) soft-clipped log-scale; float32 (float64 if an input is
      float64).

    References:
      Rybkin, Daniilidis & Levine, Simple and Effective VAE Training with Calibrated
      Decoders (ICML 2021, arXiv 2006.13202), and ``softclip`` in its code
      (github.com/orybkin/sigma-vae-pytorch), which applies it with min = -6.
    """
    log_scale = _as_float_array("log_scale", log_scale, parameter=True)
    min_log_scale = _as_float_array("min_log_scale", min_log_scale, parameter=True)
    _check_broadcastable("min_log_scale", min_log_scale, "log_scale", log_scale)
    log_scale, min_log_scale = _promote(log_scale, min_log_scale)
    _check_finite("log_scale", log_scale)
    _check_finite("min_log_scale", min_log_scale)
    return min_log_scale + jax.nn.softplus(log_scale - min_log_scale)


# --------------------------------------------------------------------------- #
# Bernoulli and continuous Bernoulli decoders.
# --------------------------------------------------------------------------- #


@jax.custom_jvp
def _bernoulli_elementwise(x: jax.Array, logits: jax.Array) -> jax.Array:
    # log_sigmoid(l) = -softplus(-l) keeps log(1 - p) accurate for |l| up to float max.
    return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


@_bernoulli_elementwise.defjvp
def _bernoulli_elementwise_jvp(primals, tangents):
    # d/dl = x sigmoid(-l) - (1 - x) sigmoid(l): two logistics, where differentiating the two
    # log-sigmoids costs four exps and two log1ps (the hot spot of a training step); written
    # without 1 - sigmoid(l), which cancels. d/dx = log_sigmoid(l) - log_sigmoid(-l) = l.
    x, logits = primals
    x_dot, logits_dot = tangents
    d_logits = x * jax.nn.sigmoid(-logits) - (1.0 - x) * jax.nn.sigmoid(logits)
    return _bernoulli_elementwise(x, logits), d_logits * logits_dot + logits * x_dot


def _nan_outside_unit_interval(x: jax.Array, values: jax.Array) -> jax.Array:
    return jnp.where((x >= 0) & (x <= 1), values, jnp.nan)


def _bernoulli_family_inputs(x, logits, event_ndims):
    """Validated, broadcast and promoted (x, logits, event_ndims) for the Bernoulli family."""
    x = _as_float_array("x", x)
    logits = _as_float_array("logits", logits)
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    logits = _broadcast_like("logits", logits, "x", x)
    x, logits = _promote(x, logits)
    _check_unit_interval("x", x)
    return x, logits, event_ndims


def bernoulli_log_likelihood(
    x: ArrayLike, logits: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log Bernoulli(x; sigmoid(logits)) in nats per example; equals -BCE_with_logits.

    Exact (a normalised log-probability) for x in {0, 1}. For grey levels x in
    (0, 1) the same expression is the cross-entropy but not a normalised density
    over [0, 1]: see :func:`continuous_bernoulli_log_likelihood`. Concrete grey-level
    data triggers a ``UserWarning`` saying so (shown once per process by Python's
    default filter). Under jit: x outside [0, 1] cannot raise and gives NaN for the
    affected examples, and no warning is issued (:func:`checked` raises instead).

    Args:
      x: [..., *event] data in [0, 1].
      logits: [..., *event] decoder logits (pre-sigmoid), or of x's rank with axes equal
        to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-likelihood per example in nats; float32 (float64 if an
      input is float64).
    """
    x, logits, event_ndims = _bernoulli_family_inputs(x, logits, event_ndims)
    _warn_if_grey_levels(x)
    values = _nan_outside_unit_interval(x, _bernoulli_elementwise(x, logits))
    return _event_sum(values, event_ndims)


def continuous_bernoulli_log_normalizer(logits: ArrayLike) -> jax.Array:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(logits), elementwise.

    ``C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda)``, which in terms of the
    logit l is ``C = l / tanh(l / 2)`` (an even function, C(0) = 2). Evaluated as
    ``log|l| - log(-expm1(-|l|)) + softplus(-|l|)`` away from 0 and by its Taylor
    series ``log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - 127 l^8/4838400`` for
    |l| < 0.5 (float32; 0.02 in float64), with the unused branch fed a safe value so
    gradients stay finite. Under jit: as outside; every finite logit is valid.

    Args:
      logits: [...] logits of lambda.

    Returns:
      [...] log C(lambda) in nats (>= log 2); float32 (float64 for float64 logits).

    References:
      Loaiza-Ganem & Cunningham, The continuous Bernoulli: fixing a pervasive error
      in variational autoencoders (NeurIPS 2019), eq. 7.
    """
    (logits,) = _promote(_as_float_array("logits", logits))
    abs_l = jnp.abs(logits)
    small = abs_l < _cb_cutoff(logits.dtype)
    # Double-where: the closed form would give 0/0 (NaN gradient) at l = 0.
    safe_l = jnp.where(small, 1.0, abs_l)
    # -expm1(-l) = 1 - e^{-l}, softplus(-l) = log(1 + e^{-l}): log tanh(l/2) without cancellation.
    closed = jnp.log(safe_l) - jnp.log(-jnp.expm1(-safe_l)) + jax.nn.softplus(-safe_l)
    l2 = jnp.square(jnp.where(small, logits, 0.0))
    taylor = _LOG_2 + l2 * (
        1.0 / 12.0 + l2 * (-7.0 / 1440.0 + l2 * (31.0 / 90720.0 - l2 * 127.0 / 4838400.0))
    )
    return jnp.where(small, taylor, closed)


def continuous_bernoulli_log_likelihood(
    x: ArrayLike, logits: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log CB(x; lambda = sigmoid(logits)) in nats per example: a normalised density on [0, 1].

    ``log CB(x; lambda) = x log lambda + (1 - x) log(1 - lambda) + log C(lambda)``,
    i.e. ``-BCE + log C``: the normaliser is exactly what separates BCE from a
    likelihood for grey-level data. Under jit: x outside [0, 1] cannot raise and gives
    NaN for the affected examples (:func:`checked` raises instead).

    Args:
      x: [..., *event] data in [0, 1].
      logits: [..., *event] decoder logits, or of x's rank with axes equal to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-density per example in nats; float32 (float64 if an
      input is float64).
    """
    x, logits, event_ndims = _bernoulli_family_inputs(x, logits, event_ndims)
    values = _bernoulli_elementwise(x, logits) + continuous_bernoulli_log_normalizer(logits)
    return _event_sum(_nan_outside_unit_interval(x, values), event_ndims)


def continuous_bernoulli_mean(logits: ArrayLike) -> jax.Array:
    """Continuous-Bernoulli mean: lambda/(2 lambda - 1) + 1/(2 atanh(1 - 2 lambda)), elementwise.

    In logits: ``E[x] = 1/(1 - e^{-l}) - 1/l``, with the Taylor series
    ``1/2 + l/12 - l^3/720`` near l = 0. Note it is not lambda: plotting sigmoid(logits)
    as the "reconstruction" of a continuous-Bernoulli decoder is a common mistake.
    Under jit: as outside; every finite logit is valid.

    Args:
      logits: [...] logits.

    Returns:
      [...] mean in [0, 1]; float32 (float64 for float64 logits).
    """
    (logits,) = _promote(_as_float_array("logits", logits))
    small = jnp.abs(logits) < _cb_cutoff(logits.dtype)
    safe_l = jnp.where(small, 1.0, logits)
    # 1/(1 - e^{-l}) written so that neither branch overflows for |l| up to float max.
    pos = jnp.where(safe_l > 0, safe_l, 1.0)
    neg = jnp.where(safe_l < 0, safe_l, -1.0)
    inv_one_minus_exp = jnp.where(safe_l > 0, -1.0 / jnp.expm1(-pos), jnp.exp(neg) / jnp.expm1(neg))
    closed = inv_one_minus_exp - 1.0 / safe_l
    l_small = jnp.where(small, logits, 0.0)
    taylor = 0.5 + l_small / 12.0 - l_small**3 / 720.0 + l_small**5 / 30240.0
    return jnp.where(small, taylor, closed)


# --------------------------------------------------------------------------- #
# Beta decoder.
# --------------------------------------------------------------------------- #

_BETA_X_HINT = (
    "The Beta density is 0 or infinite at 0 and 1, so data must lie strictly inside: "
    "dequantise it (8-bit pixels k -> (k + u) / 256 with u ~ Uniform(0, 1)) or squeeze it "
    "into (0, 1), e.g. `x * (1 - 2 * eps) + eps` with eps = 1e-3 (at least 1e-6 in "
    "float32, whose largest number below 1 is 1 - 6e-8)."
)


# Coefficients of del(b) - del(a + b), del(x) = lgamma(x) - (x - 1/2) log x + x - log(2 pi)/2:
# scipy's cdflib ``algdiv`` (minimax values for x >= 8, close to Stirling's 1/12, -1/360, ...).
_ALGDIV_COEFFICIENTS = (
    0.833333333333333e-01,
    -0.277777777760991e-02,
    0.793650666825390e-03,
    -0.595202931351870e-03,
    0.837308034031215e-03,
    -0.165322962780713e-02,
)


def _log_gamma_ratio(a: jax.Array, b: jax.Array) -> jax.Array:
    """lgamma(b) - lgamma(a + b) for a <= b, b >= 8, without cancellation: [...] -> [...].

    scipy's cdflib ``algdiv``: Stirling's series for both terms, with ``del(b) - del(a + b)``
    summed as ``sum_k c_k (1 - x^(2k+1)) / b^(2k+1)`` with x = b / (a + b).
    ``jax.scipy.special.betaln`` (jax 0.10) sets x = a / (a + b) here instead, an error of
    up to 1.3e-6 nats in float64 (largest just above b = 8 with a / b near 1/3), which is
    why the Beta likelihood does not use it.
    """
    c0, c1, c2, c3, c4, c5 = _ALGDIV_COEFFICIENTS
    h = a / b
    c = h / (1.0 + h)  # a / (a + b) = 1 - x
    x = 1.0 / (1.0 + h)  # b / (a + b)
    x2 = x * x
    # s_n = (1 - x^n) / (1 - x) = 1 + x + ... + x^(n-1).
    s3 = 1.0 + (x + x2)
    s5 = 1.0 + (x + x2 * s3)
    s7 = 1.0 + (x + x2 * s5)
    s9 = 1.0 + (x + x2 * s7)
    s11 = 1.0 + (x + x2 * s9)
    t = jnp.square(1.0 / b)
    w = ((((c5 * s11 * t + c4 * s9) * t + c3 * s7) * t + c2 * s5) * t + c1 * s3) * t + c0
    w = w * (c / b)
    u = (b + (a - 0.5)) * jnp.log1p(h)
    v = a * (jnp.log(b) - 1.0)
    return jnp.where(u <= v, (w - v) - u, (w - u) - v)


def _log_beta(a: jax.Array, b: jax.Array) -> jax.Array:
    """log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b) for a, b > 0: [...] -> [...].

    As scipy's ``betaln``: the three lgammas while max(a, b) < 8, else lgamma(min) plus
    :func:`_log_gamma_ratio`, which avoids the cancellation of lgamma(b) - lgamma(a + b)
    (each ~ b log b) for large concentrations. Both branches are evaluated at valid points,
    so gradients are finite; the derivative is that of the series (digamma differences to
    ~20 eps, measured against scipy).
    """
    small, large = jnp.minimum(a, b), jnp.maximum(a, b)
    use_series = large >= 8.0
    series_large = jnp.where(use_series, large, 8.0)
    direct_large = jnp.where(use_series, 1.0, large)
    direct = jax.lax.lgamma(direct_large) - jax.lax.lgamma(small + direct_large)
    series = _log_gamma_ratio(small, series_large)
    return jax.lax.lgamma(small) + jnp.where(use_series, series, direct)


def _open_unit_interval(value: jax.Array) -> jax.Array:
    return (value > 0) & (value < 1)


def _check_open_unit_interval(name: str, value: jax.Array, hint: str = "") -> None:
    if not _holds_everywhere(_open_unit_interval, value):
        raise ValueError(
            f"`{name}` must lie in the open interval (0, 1) for the Beta likelihood, got values "
            f"in [{float(jnp.min(value))!r}, {float(jnp.max(value))!r}]. {hint}".rstrip()
        )


def beta_log_likelihood(
    x: ArrayLike, mean: ArrayLike, concentration: ArrayLike, *, event_ndims: int | None = None
) -> jax.Array:
    """log Beta(x; alpha, beta) in nats per example, parameterised by mean and concentration.

    With ``alpha = mean * kappa`` and ``beta = (1 - mean) * kappa`` (kappa =
    ``concentration`` = alpha + beta): ``log p = (alpha - 1) log x + (beta - 1) log(1 - x)
    - log B(alpha, beta)`` per element, ``log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a +
    b)``, summed over the event axes; ``log(1 - x)`` is computed as ``log1p(-x)``. log B is
    evaluated as scipy's ``betaln`` (a series for lgamma(b) - lgamma(a + b) once max(a, b)
    >= 8, accurate also for large concentrations), not with ``jax.scipy.special.betaln``,
    which is off by up to 1.3e-6 nats in float64 in jax 0.10. The decoder output is the mean:
    ``E[x] = mean``, ``Var[x] = mean (1 - mean) / (kappa + 1)``. A normalised density on
    (0, 1) for grey-level data, like :func:`continuous_bernoulli_log_likelihood`, with a
    separate concentration. ``1 - mean`` is formed in the computation dtype (float32 or
    float64), so a mean within a few eps of 1 (a saturated sigmoid) loses relative
    precision in ``beta = (1 - mean) kappa``.

    x must lie in the **open** interval (0, 1): concrete data with a 0 or a 1 (or any value
    outside) raises a ``ValueError`` saying to dequantise or squeeze it into (0, 1), e.g.
    ``x * (1 - 2 eps) + eps``. Under jit: x or mean outside (0, 1) or a concentration <= 0
    or non-finite cannot raise and gives NaN for the affected examples (:func:`checked`
    raises instead).

    Args:
      x: [..., *event] data in the open interval (0, 1).
      mean: [..., *event] decoder mean in (0, 1) (e.g. a sigmoid output), or any array of
        x's rank whose axes equal x's or are 1.
      concentration: kappa = alpha + beta > 0: scalar (fixed), [*event] (per pixel) or any
        array broadcastable to ``x`` (e.g. [..., *event] per example and pixel).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-density per example in nats; float32 (float64 if an
      input is float64).

    References:
      Ferrari & Cribari-Neto, Beta Regression for Modelling Rates and Proportions (Journal
      of Applied Statistics 31, 2004), the mean-precision parameterisation;
      ``scipy.stats.beta``.
    """
    x, mean, concentration, event_ndims = _location_param_inputs(
        x, mean, concentration, event_ndims, loc_name="mean", param_name="concentration"
    )
    _check_open_unit_interval("x", x, _BETA_X_HINT)
    _check_open_unit_interval("mean", mean)
    _check_positive_finite("concentration", concentration)
    concentration = jnp.broadcast_to(concentration, x.shape)
    # Under jit invalid values cannot raise: evaluate a safe point (x = mean = 1/2, kappa =
    # 2: the uniform density) there, so no NaN or inf reaches the other elements' gradients,
    # and return NaN for the affected examples.
    valid = (
        _open_unit_interval(x)
        & _open_unit_interval(mean)
        & (concentration > 0)
        & jnp.isfinite(concentration)
    )
    x = jnp.where(valid, x, 0.5)
    mean = jnp.where(valid, mean, 0.5)
    concentration = jnp.where(valid, concentration, 2.0)
    alpha = mean * concentration
    beta = (1.0 - mean) * concentration
    values = (
        (alpha - 1.0) * jnp.log(x)
        + (beta - 1.0) * jnp.log1p(-x)
        - _log_beta(alpha, beta)
    )
    return _event_sum(jnp.where(valid, values, jnp.nan), event_ndims)


# --------------------------------------------------------------------------- #
# Huber: the density whose negative log is the Huber loss, with its normaliser.
# --------------------------------------------------------------------------- #


def _huber_elementwise(u: jax.Array, delta) -> jax.Array:
    """h_delta(u) = u^2 / 2 for |u| <= delta, delta (|u| - delta / 2) beyond (optax's form)."""
    a = _abs(u)
    quadratic = jnp.minimum(a, delta)
    return 0.5 * jnp.square(quadratic) + delta * (a - quadratic)


def huber_log_normalizer(scale: ArrayLike, delta: float = 1.0) -> jax.Array:
    """log Z(delta, s), Z = integral over u of exp(-h_delta(u) / s), elementwise in s.

    ``Z = sqrt(2 pi s) erf(delta / sqrt(2 s)) + (2 s / delta) exp(-delta^2 / (2 s))``: the
    Gaussian core on [-delta, delta] plus the two exponential tails. Computed in log space
    (logaddexp of the two terms), finite for s in [1e-30, 1e30]. Under jit: a scale <= 0
    or non-finite cannot raise and gives NaN (:func:`checked` raises instead).

    Args:
      scale: [...] s > 0.
      delta: the Huber threshold, > 0 (a Python float).

    Returns:
      [...] log Z in the promoted dtype of ``scale`` (at least float32).
    """
    if not delta > 0:
        raise ValueError(f"`delta` must be > 0, got {delta!r}.")
    (scale,) = _promote(_as_float_array("scale", scale, parameter=True))
    _check_positive_finite("scale", scale)
    core = 0.5 * jnp.log(2.0 * math.pi * scale) + jnp.log(
        jax.scipy.special.erf(delta / jnp.sqrt(2.0 * scale)))
    tails = math.log(2.0 / delta) + jnp.log(scale) - delta**2 / (2.0 * scale)
    return jnp.logaddexp(core, tails)


def huber_log_likelihood(
    x: ArrayLike, loc: ArrayLike, scale: ArrayLike, *, delta: float = 1.0,
    event_ndims: int | None = None,
) -> jax.Array:
    """log p(x) of the Huber density in nats per example: -Huber / s - log Z(delta, s).

    The Huber loss is a normalised likelihood once its normaliser is added:
    ``p(x) = exp(-h_delta(x - loc) / s) / Z(delta, s)`` per element
    (:func:`huber_log_normalizer`), Gaussian with variance s near loc and Laplace-tailed
    beyond ``delta``. For a fixed s the normaliser does not depend on loc, so
    ``grad(-log p) = grad(huber) / s``: the Huber loss is this density's -log up to scale
    and a constant, as SSE is the Gaussian's. Under jit: a scale <= 0 or non-finite cannot
    raise and gives NaN for the affected examples (:func:`checked` raises instead).

    Args:
      x: [..., *event] data.
      loc: [..., *event] prediction, or of x's rank with axes equal to x's or 1.
      scale: s > 0: scalar, [*event] or any array broadcastable to ``x``.
      delta: the Huber threshold (a Python float > 0; optax's default 1).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) log-density per example in nats; float32 (float64 if an
      input is float64).

    References:
      Huber, Robust Estimation of a Location Parameter (Ann. Math. Statist. 35, 1964);
      ``optax.huber_loss`` for h_delta.
    """
    x, loc, safe_scale, log_scale, event_ndims = _location_scale_inputs(
        x, loc, scale, event_ndims, loc_name="loc", scale_name="scale"
    )
    log_z = huber_log_normalizer(safe_scale, delta)
    values = -_huber_elementwise(x - loc, delta) / safe_scale - log_z
    return _event_sum(jnp.where(jnp.isnan(log_scale), jnp.nan, values), event_ndims)


def huber(x: ArrayLike, loc: ArrayLike, *, delta: float = 1.0,
          event_ndims: int | None = None) -> jax.Array:
    """The Huber loss summed over the event axes, per example: sum_i h_delta(x_i - loc_i).

    ``-log p_Huber = huber / s + D log Z(delta, s)`` (:func:`huber_log_likelihood`). The
    derivative of |u| at 0 is taken as 0 (no effect on h_delta, whose derivative is u
    there). Under jit: non-finite x gives a non-finite value instead of an error.

    Args:
      x: [..., *event] data.
      loc: [..., *event] prediction, or of x's rank with axes equal to x's or 1.
      delta: the Huber threshold (a Python float > 0).
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) Huber loss per example; float32 (float64 if an input is).
    """
    if not delta > 0:
        raise ValueError(f"`delta` must be > 0, got {delta!r}.")
    x, loc, event_ndims = _error_inputs(x, loc, event_ndims, loc_name="loc")
    return _event_sum(_huber_elementwise(x - loc, delta), event_ndims)


# --------------------------------------------------------------------------- #
# Loss views: the same quantities as plain losses, with the reduction in the name.
# --------------------------------------------------------------------------- #


def sse(x: ArrayLike, mean: ArrayLike, *, event_ndims: int | None = None) -> jax.Array:
    """Sum of squared errors per example: sum over the event axes of (x - mean)^2.

    Under jit: non-finite x gives a non-finite SSE instead of an error.

    Args:
      x: [..., *event] data.
      mean: [..., *event] prediction, or of x's rank with axes equal to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) SSE per example; float32 (float64 if an input is float64).
      ``-log N = SSE / (2 sigma^2) + const``.
    """
    x, mean, event_ndims = _error_inputs(x, mean, event_ndims)
    return _sum_squared_error(x, mean, event_ndims)


def mse(x: ArrayLike, mean: ArrayLike, *, event_ndims: int | None = None) -> jax.Array:
    """Mean squared error per example: SSE / D, with D the number of event elements.

    Under jit: non-finite x gives a non-finite MSE instead of an error.

    Args:
      x: [..., *event] data.
      mean: [..., *event] prediction, or of x's rank with axes equal to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) MSE per example; float32 (float64 if an input is float64).
      ``-log N = D/(2 sigma^2) * MSE + const``.
    """
    x, mean, event_ndims = _error_inputs(x, mean, event_ndims)
    return _mean_squared_error(x, mean, event_ndims)


def sae(x: ArrayLike, loc: ArrayLike, *, event_ndims: int | None = None) -> jax.Array:
    """Sum of absolute errors per example: sum over the event axes of |x - loc|.

    The derivative of |x - loc| at x == loc is taken as 0 (sign(0); see
    :func:`laplace_log_likelihood`). Under jit: non-finite x gives a non-finite SAE
    instead of an error.

    Args:
      x: [..., *event] data.
      loc: [..., *event] prediction, or of x's rank with axes equal to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) SAE per example; float32 (float64 if an input is float64).
      ``-log Laplace = SAE / b + D log(2 b)``.
    """
    x, loc, event_ndims = _error_inputs(x, loc, event_ndims, loc_name="loc")
    return _sum_absolute_error(x, loc, event_ndims)


def mae(x: ArrayLike, loc: ArrayLike, *, event_ndims: int | None = None) -> jax.Array:
    """Mean absolute error per example: SAE / D, with D the number of event elements.

    The L1 loss of one example (PyTorch's ``L1Loss(reduction='mean')`` also averages over
    the batch). The derivative of |x - loc| at x == loc is taken as 0 (sign(0); see
    :func:`laplace_log_likelihood`). Under jit: non-finite x gives a non-finite MAE
    instead of an error.

    Args:
      x: [..., *event] data.
      loc: [..., *event] prediction, or of x's rank with axes equal to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).

    Returns:
      [...] (x's batch shape) MAE per example; float32 (float64 if an input is float64).
      ``-log Laplace = (D / b) MAE + D log(2 b)``.
    """
    x, loc, event_ndims = _error_inputs(x, loc, event_ndims, loc_name="loc")
    return _mean_absolute_error(x, loc, event_ndims)


def bce(
    x: ArrayLike,
    logits: ArrayLike,
    *,
    event_ndims: int | None = None,
    reduction: Literal["sum", "mean"] = "sum",
) -> jax.Array:
    """Binary cross-entropy with logits per example, reduced over the event axes.

    Concrete grey-level data triggers the ``UserWarning`` of
    :func:`bernoulli_log_likelihood`. Under jit: x outside [0, 1] cannot raise and gives
    NaN for the affected examples (:func:`checked` raises instead).

    Args:
      x: [..., *event] targets in [0, 1].
      logits: [..., *event] decoder logits, or of x's rank with axes equal to x's or 1.
      event_ndims: number of trailing axes forming one example; default 1 for x of rank
        1 or 2 (0 for a scalar), required for rank > 2 (3 for [B, H, W, C] images).
      reduction: ``"sum"`` over pixels (equals ``-bernoulli_log_likelihood``) or
        ``"mean"`` over pixels (PyTorch's default ``reduction='mean'``, which is the
        negative log-likelihood divided by D: with a KL term it silently sets beta = D).

    Returns:
      [...] (x's batch shape) BCE per example; float32 (float64 if an input is float64).
    """
    x = _as_float_array("x", x)
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"`reduction` must be 'sum' or 'mean', got {reduction!r}.")
    nll = -bernoulli_log_likelihood(x, logits, event_ndims=event_ndims)
    if reduction == "mean":
        return nll / _event_size(x.shape, event_ndims)
    return nll


# --------------------------------------------------------------------------- #
# Converters.
# --------------------------------------------------------------------------- #

Convention = Literal["sse", "sse_half", "mse"]


def beta_from_sigma(
    sigma: ArrayLike, *, convention: Convention = "sse", num_dims: int | None = None
) -> jax.Array:
    """The KL weight beta that a fixed-sigma Gaussian VAE implies for a plain loss.

    ``-ELBO = SSE/(2 sigma^2) + KL + const`` is proportional to ``loss + beta * KL`` with:

    * ``"sse"``:       loss = SSE,     beta = 2 sigma^2
    * ``"sse_half"``:  loss = SSE / 2, beta = sigma^2
    * ``"mse"``:       loss = MSE,     beta = 2 sigma^2 / D  (needs ``num_dims`` = D)

    Under jit: a sigma <= 0 cannot raise and gives a meaningless beta; check it outside.

    Args:
      sigma: [...] decoder standard deviation, > 0.
      convention: which reconstruction loss the beta multiplies against.
      num_dims: D, required for the ``"mse"`` convention.

    Returns:
      [...] beta; float32 (float64 for float64 sigma).
    """
    (sigma,) = _promote(_as_float_array("sigma", sigma, parameter=True))
    _check_positive_finite("sigma", sigma)
    # beta * KL must carry the same 1/(2 sigma^2) scale as the loss: SSE/(2 sigma^2) =
    # (SSE/2)/sigma^2 = MSE * D/(2 sigma^2), so beta = 2 sigma^2 / divisor.
    return 2.0 * jnp.square(sigma) / _convention_divisor(convention, num_dims)


def sigma_from_beta(
    beta: ArrayLike, *, convention: Convention = "sse", num_dims: int | None = None
) -> jax.Array:
    """Inverse of :func:`beta_from_sigma`: the sigma a "loss + beta * KL" objective implies.

    Under jit: a beta <= 0 cannot raise and gives NaN (or 0) instead of an error.

    Args:
      beta: [...] KL weight, > 0.
      convention: ``"sse"``, ``"sse_half"`` or ``"mse"`` (see :func:`beta_from_sigma`).
      num_dims: D, required for the ``"mse"`` convention.

    Returns:
      [...] sigma; float32 (float64 for float64 beta).
    """
    (beta,) = _promote(_as_float_array("beta", beta, parameter=True))
    _check_positive_finite("beta", beta)
    return jnp.sqrt(beta * _convention_divisor(convention, num_dims) / 2.0)


def _convention_divisor(convention: str, num_dims: int | None) -> float:
    if convention == "sse":
        return 1.0
    if convention == "sse_half":
        return 2.0
    if convention == "mse":
        if num_dims is None or num_dims < 1:
            raise ValueError("`num_dims` (D >= 1) is required for the 'mse' convention.")
        return float(num_dims)
    raise ValueError(f"`convention` must be 'sse', 'sse_half' or 'mse', got {convention!r}.")


def nats_to_bits_per_dim(
    nll_nats: ArrayLike, num_dims: int, *, num_bits: int | None = None
) -> jax.Array:
    """Converts a negative log-likelihood in nats per example to bits per dimension.

    Under jit: as outside (no value checks).

    Args:
      nll_nats: [...] -log p(x) in nats per example.
      num_dims: D, the number of dimensions per example.
      num_bits: if given, treat ``nll_nats`` as the density of data scaled to [0, 1]
        and convert it to the discrete likelihood of ``num_bits``-bit data (bins of
        width 2^-num_bits): adds ``num_bits`` bits per dimension (8 for images).

    Returns:
      [...] bits per dimension; float32 (float64 for float64 input).
    """
    if not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"`num_dims` must be a positive int, got {num_dims!r}.")
    nll = jnp.asarray(nll_nats)
    if not jnp.issubdtype(nll.dtype, jnp.floating):  # integer nats: the default float dtype
        nll = nll.astype(jnp.result_type(float))
    (nll,) = _promote(nll)
    bpd = nll / (num_dims * _LOG_2)
    if num_bits is not None:
        if num_bits < 1:
            raise ValueError(f"`num_bits` must be >= 1, got {num_bits!r}.")
        bpd = bpd + num_bits
    return bpd
