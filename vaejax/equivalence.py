"""Measured gradient equivalence between -log N(x; mu, sigma^2 I) and MSE / SSE / SSE/2.

For a Gaussian decoder with fixed sigma and any parameter theta that mu depends on:

    grad[-log N] = (D / (2 sigma^2)) grad(MSE) = (1 / (2 sigma^2)) grad(SSE)
                 = (1 / sigma^2) grad(SSE / 2)

:func:`compare_gradients` measures this with real gradients (``jax.grad`` of each
loss, every parameter leaf) over a grid of S sigma values times L Monte-Carlo
latent samples, both as vmapped axes, so one ``jax.jit`` of it is one compiled
call. The batch is reduced with a mean for every loss, so the factors above are
exactly the theoretical ratios.

Precision is a stated choice: measurement code runs at the precision the claim needs on
any backend; training stays at the backend's fast default. The identity is exact up to
float32 rounding (relative error <= 1e-5 measured), but XLA's default float32 matmul on a
GPU is TF32-like (10-bit mantissa, ~1e-4 relative error per product; 1.7e-4 measured), which
would make the measurement report the matmul's error instead of the identity's. So
:func:`compare_gradients` traces its whole computation, forward and backward passes, under
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
    mse,
    sse,
)

DecodeFn = Callable[[Any, jax.Array], jax.Array]

# Reference losses and their theoretical factor f(sigma, D): grad(-log N) = f * grad(loss).
CONVENTIONS = {
    "mse": lambda sigma, num_dims: num_dims / (2.0 * jnp.square(sigma)),
    "sse": lambda sigma, num_dims: 1.0 / (2.0 * jnp.square(sigma)),
    "sse_half": lambda sigma, num_dims: 1.0 / jnp.square(sigma),
}


@struct.dataclass
class GradientComparison:
    """grad(-log N) against ``factor * grad(loss)`` for one reference loss.

    Norms are over all parameter leaves together; ``per_leaf_*`` hold the same per leaf,
    keyed by the leaf's path (``jax.tree_util.keystr``). A leaf whose gradients are exactly
    zero under both losses (a parameter the decoder does not use) has NaN per-leaf values:
    0/0 is undefined, and a made-up number would hide it.
    """

    factor: jax.Array  # [S] theoretical factor for each sigma
    ratio: jax.Array  # [S, L] ||grad(-log N)|| / ||grad(loss)||
    cosine: jax.Array  # [S, L] cosine similarity of the two gradients
    relative_error: jax.Array  # [S, L] ||grad(-log N) - factor grad(loss)|| / ||grad(-log N)||
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
    with contextlib.ExitStack() as stack:
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
        return _compare_gradients(decode_fn, params, latents, x, sigmas,
                                  event_ndims=event_ndims, sigma_chunk_size=sigma_chunk_size)


def _compare_gradients(
    decode_fn: DecodeFn,
    params: Any,
    latents: ArrayLike,
    x: ArrayLike,
    sigmas: ArrayLike,
    *,
    event_ndims: int,
    sigma_chunk_size: int | None,
) -> EquivalenceReport:
    """:func:`compare_gradients` at the ambient matmul precision."""
    latents = jnp.asarray(latents)
    x = jnp.asarray(x)
    sigmas = jnp.asarray(sigmas, dtype=x.dtype)
    if latents.ndim < 2:
        raise ValueError(f"`latents` must be [L, B, Z], got shape {latents.shape}.")
    if sigmas.ndim != 1:
        raise ValueError(f"`sigmas` must be a 1-D grid [S], got shape {sigmas.shape}.")
    event_ndims = _resolve_event_ndims(event_ndims, "x", x)
    num_dims = _event_size(x.shape, event_ndims)

    def nll(p, z, sigma):
        return -jnp.mean(gaussian_log_likelihood(x, decode_fn(p, z), sigma,
                                                 event_ndims=event_ndims))

    references = {
        "mse": lambda p, z: jnp.mean(mse(x, decode_fn(p, z), event_ndims=event_ndims)),
        "sse": lambda p, z: jnp.mean(sse(x, decode_fn(p, z), event_ndims=event_ndims)),
        "sse_half": lambda p, z: 0.5 * jnp.mean(sse(x, decode_fn(p, z), event_ndims=event_ndims)),
    }
    # Reference gradients do not depend on sigma: one per sample, [L, ...] leaves.
    ref_grads = {
        name: jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, latents)
        for name, loss in references.items()
    }

    # Their squared norms neither: [L] per leaf, computed once rather than once per sigma.
    ref_sq = {name: jax.vmap(lambda g: jax.tree.map(_squared_norm, g))(grads)
              for name, grads in ref_grads.items()}

    def per_sample(nll_grad, refs, refs_sq, sigma):
        nll_sq = jax.tree.map(_squared_norm, nll_grad)  # shared by the three conventions
        return {name: _leaf_stats(nll_grad, refs[name], CONVENTIONS[name](sigma, num_dims),
                                  nll_sq, refs_sq[name])
                for name in references}

    def per_sigma(sigma):
        nll_grads = jax.vmap(jax.grad(nll), in_axes=(None, 0, None))(params, latents, sigma)
        return jax.vmap(per_sample, in_axes=(0, 0, 0, None))(nll_grads, ref_grads, ref_sq, sigma)

    if sigma_chunk_size is None:
        stats = jax.vmap(per_sigma)(sigmas)
    else:
        stats = jax.lax.map(per_sigma, sigmas, batch_size=sigma_chunk_size)

    comparisons = {}
    for name in references:
        factor = CONVENTIONS[name](sigmas, num_dims)
        comparisons[name] = _summarise(stats[name], factor[:, None])
        comparisons[name] = comparisons[name].replace(factor=factor)
    nll_sq = sum(
        s["nll_sq"]
        for s in jax.tree.leaves(
            stats["mse"], is_leaf=lambda node: isinstance(node, dict) and "dot" in node
        )
    )
    return EquivalenceReport(
        sigmas=sigmas,
        num_dims=num_dims,
        nll_grad_norm=jnp.sqrt(nll_sq),
        **comparisons,
    )


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
