"""Measured gradient equivalence: -log N against MSE / SSE / SSE/2, -log Laplace against MAE / SAE.

For a Gaussian decoder with fixed sigma and any parameter theta that mu depends on:

    grad[-log N] = (D / (2 sigma^2)) grad(MSE) = (1 / (2 sigma^2)) grad(SSE)
                 = (1 / sigma^2) grad(SSE / 2)

and for a Laplace decoder with fixed scale b (the L1 counterpart):

    grad[-log Laplace] = (D / b) grad(MAE) = (1 / b) grad(SAE)

:func:`compare_gradients` (Gaussian) and :func:`compare_laplace_gradients` (Laplace)
measure this with real gradients (``jax.grad`` of each loss, every parameter leaf) over a
grid of S scale values times L Monte-Carlo latent samples, both as vmapped axes, so one
``jax.jit`` of either is one compiled call. The batch is reduced with a mean for every
loss, so the factors above are exactly the theoretical ratios. Both run the same
measurement code; only the likelihood, the reference losses and their factors differ.

Precision is a stated choice: measurement code runs at the precision the claim needs on
any backend; training stays at the backend's fast default. The identity is exact up to
float32 rounding (relative error <= 1e-5 measured), but XLA's default float32 matmul on a
GPU is TF32-like (10-bit mantissa, ~1e-4 relative error per product; 1.7e-4 measured), which
would make the measurement report the matmul's error instead of the identity's. So
:func:`compare_gradients` (and :func:`compare_laplace_gradients`) traces its whole
computation, forward and backward passes, under
``jax.default_matmul_precision("highest")`` by default (true float32 products on CPU, GPU
and TPU); ``precision=None`` leaves the ambient setting. The setting is trace-time
configuration (read when each ``dot_general`` / convolution is traced, and part of the jit
cache key), so it applies when ``compare_gradients`` is traced inside an outer ``jax.jit``
at the call site, and to a ``decode_fn`` that is itself jitted; a matmul that passes its
own ``precision=`` keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike

from vaejax.likelihoods import (
    _event_size,
    _resolve_event_ndims,
    gaussian_log_likelihood,
    laplace_log_likelihood,
    mae,
    mse,
    sae,
    sse,
)

DecodeFn = Callable[[Any, jax.Array], jax.Array]

# Reference losses and their theoretical factor f(sigma, D): grad(-log N) = f * grad(loss).
CONVENTIONS = {
    "mse": lambda sigma, num_dims: num_dims / (2.0 * jnp.square(sigma)),
    "sse": lambda sigma, num_dims: 1.0 / (2.0 * jnp.square(sigma)),
    "sse_half": lambda sigma, num_dims: 1.0 / jnp.square(sigma),
}
# The Laplace counterpart, f(b, D): grad(-log Laplace) = f * grad(loss).
LAPLACE_CONVENTIONS = {
    "mae": lambda scale, num_dims: num_dims / scale,
    "sae": lambda scale, num_dims: 1.0 / scale,
}

# Per-example losses (x, mean, event_ndims) -> [B]; each is reduced with a batch mean.
_GAUSSIAN_REFERENCES = {
    "mse": lambda x, mean, event_ndims: mse(x, mean, event_ndims=event_ndims),
    "sse": lambda x, mean, event_ndims: sse(x, mean, event_ndims=event_ndims),
    "sse_half": lambda x, mean, event_ndims: 0.5 * sse(x, mean, event_ndims=event_ndims),
}
_LAPLACE_REFERENCES = {
    "mae": lambda x, mean, event_ndims: mae(x, mean, event_ndims=event_ndims),
    "sae": lambda x, mean, event_ndims: sae(x, mean, event_ndims=event_ndims),
}


@struct.dataclass
class GradientComparison:
    """grad(-log p) against ``factor * grad(loss)`` for one reference loss (p: N or Laplace).

    Norms are over all parameter leaves together; ``per_leaf_*`` hold the same per leaf,
    keyed by the leaf's path (``jax.tree_util.keystr``). A leaf whose gradients are exactly
    zero under both losses (a parameter the decoder does not use) has NaN per-leaf values:
    0/0 is undefined, and a made-up number would hide it.
    """

    factor: jax.Array  # [S] theoretical factor for each sigma (or scale)
    ratio: jax.Array  # [S, L] ||grad(-log p)|| / ||grad(loss)||
    cosine: jax.Array  # [S, L] cosine similarity of the two gradients
    relative_error: jax.Array  # [S, L] ||grad(-log p) - factor grad(loss)|| / ||grad(-log p)||
    per_leaf_ratio: dict[str, jax.Array]  # leaf path -> [S, L]
    per_leaf_relative_error: dict[str, jax.Array]  # leaf path -> [S, L]


@struct.dataclass
class EquivalenceReport:
    """Gradient comparisons for the three conventions on one batch."""

    sigmas: jax.Array  # [S]
    num_dims: int = struct.field(pytree_node=False)
    mse: GradientComparison
    sse: GradientComparison
    sse_half: GradientComparison
    nll_grad_norm: jax.Array  # [S, L] ||grad(-log N)||


@struct.dataclass
class LaplaceEquivalenceReport:
    """Gradient comparisons of -log Laplace against MAE (factor D/b) and SAE (1/b)."""

    scales: jax.Array  # [S]
    num_dims: int = struct.field(pytree_node=False)
    mae: GradientComparison
    sae: GradientComparison
    nll_grad_norm: jax.Array  # [S, L] ||grad(-log Laplace)||


def _squared_norm(leaf: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(leaf))


def _leaf_stats(nll_grads, ref_grads, factor, nll_sq=None, ref_sq=None):
    """Per-leaf dot, squared norms and squared residual for one (sigma, sample) pair.

    Sums run over each leaf's own axes: raveling first would make XLA copy (transpose)
    every vmapped gradient. ``nll_sq`` and ``ref_sq`` (trees of scalars) may be passed in
    when already computed: the first is shared by the three conventions, the second by
    every sigma.
    """
    nll_sq = jax.tree.map(_squared_norm, nll_grads) if nll_sq is None else nll_sq
    ref_sq = jax.tree.map(_squared_norm, ref_grads) if ref_sq is None else ref_sq

    def stats(g_nll, g_ref, g_nll_sq, g_ref_sq):
        return {
            "dot": jnp.sum(g_nll * g_ref),
            "nll_sq": g_nll_sq,
            "ref_sq": g_ref_sq,
            # The residual is formed directly, not from norms, to avoid cancellation.
            "residual_sq": jnp.sum(jnp.square(g_nll - factor * g_ref)),
        }

    return jax.tree.map(stats, nll_grads, ref_grads, nll_sq, ref_sq)


def _summarise(leaf_stats: dict, factor: jax.Array) -> GradientComparison:
    paths_and_stats = jax.tree_util.tree_flatten_with_path(
        leaf_stats, is_leaf=lambda node: isinstance(node, dict) and "dot" in node
    )[0]
    total = {k: sum(s[k] for _, s in paths_and_stats) for k in ("dot", "nll_sq", "ref_sq",
                                                                   "residual_sq")}
    nll_norm, ref_norm = jnp.sqrt(total["nll_sq"]), jnp.sqrt(total["ref_sq"])
    per_leaf_ratio, per_leaf_error = {}, {}
    for path, s in paths_and_stats:
        name = jax.tree_util.keystr(path)
        per_leaf_ratio[name] = jnp.sqrt(s["nll_sq"] / s["ref_sq"])
        per_leaf_error[name] = jnp.sqrt(s["residual_sq"] / s["nll_sq"])
    return GradientComparison(
        factor=factor,
        ratio=nll_norm / ref_norm,
        cosine=total["dot"] / (nll_norm * ref_norm),
        relative_error=jnp.sqrt(total["residual_sq"]) / nll_norm,
        per_leaf_ratio=per_leaf_ratio,
        per_leaf_relative_error=per_leaf_error,
    )


def _precision_name(precision: str | jax.lax.Precision | jax.lax.DotAlgorithmPreset) -> str:
    """The ``jax_default_matmul_precision`` value for ``precision`` ("highest", ...)."""
    if isinstance(precision, jax.lax.Precision):
        return precision.name.lower()  # Precision.HIGHEST -> "highest"
    if isinstance(precision, jax.lax.DotAlgorithmPreset):
        return precision.name
    if isinstance(precision, str):
        legacy = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")
        return precision.lower() if precision.lower() in legacy else precision
    raise ValueError(
        "`precision` must be None, a jax.lax.Precision or one of the strings "
        f"jax.default_matmul_precision accepts ('highest', 'float32', ...), got {precision!r}."
    )


def _matmul_precision(precision) -> contextlib.ExitStack:
    """An entered ``jax.default_matmul_precision(precision)``, or nothing for None.

    Use as ``with _matmul_precision(precision): ...``; the setting is active from the call.
    """
    stack = contextlib.ExitStack()
    if precision is not None:
        name = _precision_name(precision)
        try:
            stack.enter_context(jax.default_matmul_precision(name))
        except ValueError as error:
            raise ValueError(
                f"`precision` must be None, a jax.lax.Precision or a value of "
                f"jax.default_matmul_precision ('highest', 'float32', ...), got "
                f"{precision!r}."
            ) from error
    return stack


def compare_gradients(
    decode_fn: DecodeFn,
    params: Any,
    latents: ArrayLike,
    x: ArrayLike,
    sigmas: ArrayLike,
    *,
    event_ndims: int | None = None,
    sigma_chunk_size: int | None = None,
    precision: str | jax.lax.Precision | None = "highest",
) -> EquivalenceReport:
    """Measures grad(-log N) against grad(MSE), grad(SSE), grad(SSE/2) on a sigma x sample grid.

    Pure and unjitted: jit it at the call site, with ``decode_fn`` static, e.g.
    ``jax.jit(compare_gradients, static_argnames=("decode_fn",))`` (add ``"precision"``,
    ``"event_ndims"``, ``"sigma_chunk_size"`` to the static names when passing them). Then
    every sigma and every sample is one compiled call.

    Every matmul and convolution it traces (decoder forward and backward passes included)
    runs at ``precision``: "highest" by default, so the measured relative error is the
    identity's (float32 rounding, <= 1e-5) and not that of a GPU's TF32-like default
    (~1e-4). Measurement code runs at the precision the claim needs on any backend; training
    stays at the backend's fast default.

    Args:
      decode_fn: ``(params, z [B, Z]) -> mean [B, *event]``, any differentiable function.
        To include an encoder through the reparameterised path, make ``params`` hold both
        networks and ``latents`` the noise eps.
      params: pytree of parameters; gradients are taken w.r.t. every leaf.
      latents: [L, B, Z] latent samples (one decoder pass per sample).
      x: [B, *event] data.
      sigmas: [S] fixed decoder standard deviations, > 0.
      event_ndims: trailing axes of ``x`` forming one example (None: 1 for [B, D] data;
        required for images, e.g. 3 for [B, H, W, C]).
      sigma_chunk_size: if given, sigmas are processed ``sigma_chunk_size`` at a time with
        ``lax.map`` (bounds memory at S x L x #params floats); None vmaps them all.
      precision: matmul precision for the whole computation, entered as
        ``jax.default_matmul_precision(precision)`` around it: "highest" (default),
        "float32", "tensorfloat32", "bfloat16", "default", a ``jax.lax.Precision``, or a
        ``jax.lax.DotAlgorithmPreset`` name. None leaves the ambient setting (the backend's
        default unless the caller set ``jax_default_matmul_precision``). Matmuls in
        ``decode_fn`` that pass their own ``precision=`` keep it.

    Returns:
      EquivalenceReport with [S, L] ratio, cosine and relative error per convention.
    """
    with _matmul_precision(precision):
        scales, num_dims, comparisons, nll_grad_norm = _compare(
            decode_fn, params, latents, x, sigmas,
            nll=gaussian_log_likelihood, references=_GAUSSIAN_REFERENCES,
            conventions=CONVENTIONS, scales_name="sigmas", event_ndims=event_ndims,
            chunk_size=sigma_chunk_size,
        )
    return EquivalenceReport(sigmas=scales, num_dims=num_dims, nll_grad_norm=nll_grad_norm,
                             **comparisons)


def compare_laplace_gradients(
    decode_fn: DecodeFn,
    params: Any,
    latents: ArrayLike,
    x: ArrayLike,
    scales: ArrayLike,
    *,
    event_ndims: int | None = None,
    scale_chunk_size: int | None = None,
    precision: str | jax.lax.Precision | None = "highest",
) -> LaplaceEquivalenceReport:
    """Measures grad(-log Laplace) against grad(MAE) and grad(SAE) on a scale x sample grid.

    The L1 counterpart of :func:`compare_gradients`: for a fixed Laplace scale b,
    ``-log Laplace(x; mu, b) = SAE / b + D log(2 b) = (D / b) MAE + const``, so
    ``grad(-log Laplace) = (D / b) grad(MAE)`` (convention ``"mae"``) ``= grad(SAE) / b``
    (``"sae"``). Both sides take the derivative of |x - mu| at x == mu as 0 (see
    :func:`vaejax.likelihoods.laplace_log_likelihood`). Pure and unjitted, at ``precision``
    ("highest" by default) for every matmul it traces, exactly as
    :func:`compare_gradients`: jit it at the call site with ``decode_fn`` static (and
    ``"precision"``, ``"event_ndims"``, ``"scale_chunk_size"`` when passed).

    Args:
      decode_fn: ``(params, z [B, Z]) -> loc [B, *event]``, any differentiable function.
      params: pytree of parameters; gradients are taken w.r.t. every leaf.
      latents: [L, B, Z] latent samples (one decoder pass per sample).
      x: [B, *event] data.
      scales: [S] fixed Laplace scales b, > 0.
      event_ndims: trailing axes of ``x`` forming one example (None: 1 for [B, D] data;
        required for images, e.g. 3 for [B, H, W, C]).
      scale_chunk_size: if given, scales are processed ``scale_chunk_size`` at a time with
        ``lax.map``; None vmaps them all.
      precision: matmul precision for the whole computation, as in
        :func:`compare_gradients`; None leaves the ambient setting.

    Returns:
      LaplaceEquivalenceReport with [S] scales, [S] factors and [S, L] ratio, cosine and
      relative error for the ``mae`` and ``sae`` conventions, and [S, L] nll_grad_norm.
    """
    with _matmul_precision(precision):
        scales, num_dims, comparisons, nll_grad_norm = _compare(
            decode_fn, params, latents, x, scales,
            nll=laplace_log_likelihood, references=_LAPLACE_REFERENCES,
            conventions=LAPLACE_CONVENTIONS, scales_name="scales", event_ndims=event_ndims,
            chunk_size=scale_chunk_size,
        )
    return LaplaceEquivalenceReport(scales=scales, num_dims=num_dims,
                                    nll_grad_norm=nll_grad_norm, **comparisons)


def compare_loss_gradients(
    decode_fn: DecodeFn,
    params: Any,
    latents: ArrayLike,
    x: ArrayLike,
    scales: ArrayLike,
    *,
    log_likelihood: Callable[..., jax.Array],
    losses: dict[str, Callable[..., jax.Array]],
    factors: dict[str, Callable[..., jax.Array]],
    event_ndims: int | None = None,
    scale_chunk_size: int | None = None,
    precision: str | jax.lax.Precision | None = "highest",
) -> dict[str, GradientComparison]:
    """grad(-log p) against ``factor(scale, D) * grad(loss)`` for any likelihood and losses.

    The general form of :func:`compare_gradients` (Gaussian vs MSE / SSE) and
    :func:`compare_laplace_gradients` (Laplace vs MAE / SAE), for a user's own pair, e.g. a
    Huber density against the Huber loss, or a likelihood without a scale (pass
    ``scales=[1.0]`` and ignore it). Same vmapped scale x sample grid, same statistics,
    same ``precision`` ("highest" by default); pure and unjitted: jit it at the call site
    with ``decode_fn``, ``log_likelihood``, ``losses`` and ``factors`` static (wrap them
    with ``functools.partial`` or close over them).

    Args:
      decode_fn: ``(params, z [B, Z]) -> output [B, *event]`` (a mean, logits, ...).
      params: pytree of parameters; gradients are taken w.r.t. every leaf.
      latents: [L, B, Z] latent samples.
      x: [B, *event] data.
      scales: [S] values of the likelihood's scale parameter.
      log_likelihood: ``(x, output, scale, *, event_ndims) -> [B]`` nats per example.
      losses: name -> ``(x, output, event_ndims) -> [B]``, each reduced with a batch mean.
      factors: name -> ``f(scale, D)`` with grad(-log p) = f grad(loss) in theory.
      event_ndims: trailing axes of ``x`` forming one example (None: 1 for [B, D] data).
      scale_chunk_size: scales per ``lax.map`` chunk; None vmaps them all.
      precision: matmul precision for the whole computation; None leaves the ambient one.

    Returns:
      name -> GradientComparison with [S] factors and [S, L] ratio, cosine, relative error.
    """
    if set(losses) != set(factors):
        raise ValueError(f"`losses` and `factors` must name the same losses, got "
                         f"{sorted(losses)} and {sorted(factors)}.")
    with _matmul_precision(precision):
        _, _, comparisons, _ = _compare(
            decode_fn, params, latents, x, scales, nll=log_likelihood, references=losses,
            conventions=factors, scales_name="scales", event_ndims=event_ndims,
            chunk_size=scale_chunk_size)
    return comparisons


def _compare(
    decode_fn: DecodeFn,
    params: Any,
    latents: ArrayLike,
    x: ArrayLike,
    scales: ArrayLike,
    *,
    nll: Callable[..., jax.Array],
    references: dict[str, Callable[..., jax.Array]],
    conventions: dict[str, Callable[..., jax.Array]],
    scales_name: str,
    event_ndims: int | None,
    chunk_size: int | None,
):
    """The measurement at the ambient matmul precision, for any likelihood.

    ``nll(x, mean, scale, event_ndims=...)`` is the [B] log-likelihood, ``references`` maps
    each convention to its [B] loss ``(x, mean, event_ndims)`` and ``conventions`` to its
    factor ``f(scale, D)``. Returns ``(scales [S], D, {name: GradientComparison},
    nll_grad_norm [S, L])``.
    """
    latents = jnp.asarray(latents)
    x = jnp.asarray(x)
    scales = jnp.asarray(scales, dtype=x.dtype)
    if latents.ndim < 2:
        raise ValueError(f"`latents` must be [L, B, Z], got shape {latents.shape}.")
    if scales.ndim != 1:
        raise ValueError(f"`{scales_name}` must be a 1-D grid [S], got shape {scales.shape}.")
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    num_dims = _event_size(x.shape, event_ndims)

    def nll_loss(p, z, scale):
        return -jnp.mean(nll(x, decode_fn(p, z), scale, event_ndims=event_ndims))

    def reference_loss(loss):
        return lambda p, z: jnp.mean(loss(x, decode_fn(p, z), event_ndims))

    # Reference gradients do not depend on the scale: one per sample, [L, ...] leaves.
    ref_grads = {
        name: jax.vmap(jax.grad(reference_loss(loss)), in_axes=(None, 0))(params, latents)
        for name, loss in references.items()
    }

    # Their squared norms neither: [L] per leaf, computed once rather than once per scale.
    ref_sq = {name: jax.vmap(lambda g: jax.tree.map(_squared_norm, g))(grads)
              for name, grads in ref_grads.items()}

    def per_sample(nll_grad, refs, refs_sq, scale):
        nll_sq = jax.tree.map(_squared_norm, nll_grad)  # shared by the conventions
        return {name: _leaf_stats(nll_grad, refs[name], conventions[name](scale, num_dims),
                                  nll_sq, refs_sq[name])
                for name in references}

    def per_scale(scale):
        nll_grads = jax.vmap(jax.grad(nll_loss), in_axes=(None, 0, None))(params, latents, scale)
        return jax.vmap(per_sample, in_axes=(0, 0, 0, None))(nll_grads, ref_grads, ref_sq, scale)

    if chunk_size is None:
        stats = jax.vmap(per_scale)(scales)
    else:
        stats = jax.lax.map(per_scale, scales, batch_size=chunk_size)

    comparisons = {}
    for name in references:
        factor = conventions[name](scales, num_dims)
        comparisons[name] = _summarise(stats[name], factor[:, None]).replace(factor=factor)
    first = next(iter(references))
    nll_sq = sum(
        s["nll_sq"]
        for s in jax.tree.leaves(
            stats[first], is_leaf=lambda node: isinstance(node, dict) and "dot" in node
        )
    )
    return scales, num_dims, comparisons, jnp.sqrt(nll_sq)


def log_log_slope(sigmas: ArrayLike, values: ArrayLike) -> jax.Array:
    """Least-squares slope of log(values) against log(sigmas): -2 for a D/(2 sigma^2) law.

    Args:
      sigmas: [S] grid.
      values: [S] or [S, ...] positive values (extra axes are averaged in log space first).

    Returns:
      [] slope.
    """
    log_s = jnp.log(jnp.asarray(sigmas))
    log_v = jnp.log(jnp.asarray(values))
    if log_v.ndim > 1:
        log_v = jnp.mean(log_v.reshape(log_v.shape[0], -1), axis=1)
    centred = log_s - jnp.mean(log_s)
    return jnp.sum(centred * (log_v - jnp.mean(log_v))) / jnp.sum(jnp.square(centred))
