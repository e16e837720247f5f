"""The linear-Gaussian latent model (probabilistic PCA) and its linear VAE, in closed form.

The model is ``p(z) = N(0, I_k)``, ``p(x | z) = N(W z + mu, sigma^2 I_D)``, whose marginal is
``p(x) = N(mu, C)`` with ``C = W W^T + sigma^2 I_D`` (Tipping & Bishop, 1999). With the
eigendecomposition ``S = U diag(lambda) U^T`` of the data covariance (eigenvalues descending),
the maximum-likelihood decoder for a **fixed** sigma is

    W = U_k diag(sqrt(max(lambda_i - sigma^2, 0)))        (times any rotation R; here R = I)

so latent ``i`` is *collapsed* (a zero column of W) exactly when ``lambda_i <= sigma^2``. With
sigma free, ``sigma^2_ML`` is the mean of the ``D - k`` discarded eigenvalues.

A linear VAE with the encoder ``q(z | x) = N(V (x - mu), diag(s^2))`` reaches that optimum
with an ELBO **equal** to the pPCA log-likelihood: with orthogonal columns of W the exact
posterior ``p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1)``, ``M = W^T W + sigma^2 I_k``, is
diagonal and data-independent in its covariance, so ``q`` can match it. Posterior collapse in
this model is therefore a property of the likelihood (sigma against the spectrum of the data),
not of the ELBO: latent ``i`` is active iff ``sigma^2 < lambda_i``, i.e.
``sigma < collapse_thresholds(eigvals)[i]``.

Everything is pure ``jax.numpy``: float32 and float64 (under ``jax.enable_x64``) both work
and keep their dtype (bfloat16/float16 inputs are computed and returned in float32: ``eigh``
and Cholesky need it), and every function can be jitted (``num_latents`` and ``ddof``
static). Matrix products use ``Precision.HIGHEST`` so that accelerators do not round float32
products to bf16/tf32.

Validation follows :mod:`vaejax.likelihoods`: shape, rank and dtype errors always raise
``ValueError`` naming the argument; value errors (sigma <= 0, unsorted eigenvalues) raise when
the values are concrete (outside ``jit``), and under ``jit`` an invalid sigma gives NaN.

References:
  Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS-B 61(3), 1999.
  Lucas, Tucker, Grosse & Norouzi, Don't Blame the ELBO! A Linear VAE Perspective on
  Posterior Collapse (arXiv 1911.02469).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.typing import ArrayLike

from vaejax.likelihoods import _as_float_array as _float_array
from vaejax.likelihoods import _holds_everywhere

_LOG_2PI = math.log(2.0 * math.pi)
_HIGHEST = jax.lax.Precision.HIGHEST


class CovarianceEigen(NamedTuple):
    """Eigendecomposition of a sample covariance: ``S = eigvecs @ diag(eigvals) @ eigvecs.T``."""

    eigvals: jax.Array  # [D] descending, clipped at 0
    eigvecs: jax.Array  # [D, D] orthonormal columns, column i belongs to eigvals[i]
    mean: jax.Array  # [D] sample mean


class PPCAParams(NamedTuple):
    """pPCA / linear-Gaussian decoder: ``x = weight @ z + mean + sigma * noise``.

    The field order matches :func:`ppca_log_likelihood`, so ``ppca_log_likelihood(x, *params)``
    works.
    """

    weight: jax.Array  # [D, k] W
    mean: jax.Array  # [D] mu
    sigma: jax.Array  # [] observation noise std


class LinearVAEParams(NamedTuple):
    """Linear VAE: ``q(z|x) = N(encoder_weight @ (x - decoder_bias), diag(exp(encoder_log_var)))``
    and ``p(x|z) = N(decoder_weight @ z + decoder_bias, sigma^2 I)``.
    """

    encoder_weight: jax.Array  # [k, D] V
    encoder_log_var: jax.Array  # [k] log s^2, shared by all examples
    decoder_weight: jax.Array  # [D, k] W
    decoder_bias: jax.Array  # [D] mu


# --------------------------------------------------------------------------- #
# Argument checks: shapes always, values only when concrete (outside jit).
# --------------------------------------------------------------------------- #


def _check_ndim(name: str, array: jax.Array, ndim: int, shape_doc: str) -> None:
    if array.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {shape_doc}, got shape {array.shape}.")


def _sigma_array(sigma: ArrayLike, dtype, *, allow_zero: bool = False, vector: bool = False):
    sigma = _float_array("sigma", sigma, parameter=True)
    if sigma.ndim > (1 if vector else 0):
        expected = "[] or [S]" if vector else "[] (a scalar)"
        raise ValueError(f"`sigma` must have shape {expected}, got shape {sigma.shape}.")
    if allow_zero:
        bound, ok = ">= 0", lambda s: jnp.isfinite(s) & (s >= 0)
    else:
        bound, ok = "> 0", lambda s: jnp.isfinite(s) & (s > 0)
    if not _holds_everywhere(ok, sigma):
        raise ValueError(f"`sigma` must be finite and {bound}, got min {float(jnp.min(sigma))!r}.")
    return sigma.astype(dtype)


def _nan_unless_positive(sigma: jax.Array) -> jax.Array:
    """Under jit an invalid sigma cannot raise: turn it into NaN (never a wrong number)."""
    return jnp.where(jnp.isfinite(sigma) & (sigma > 0), sigma, jnp.nan)


def _check_num_latents(num_latents: int, data_dim: int, *, free_sigma: bool = False) -> int:
    if (
        not isinstance(num_latents, numbers.Integral)
        or isinstance(num_latents, bool)
        or not 1 <= num_latents <= data_dim
    ):
        raise ValueError(f"`num_latents` must be an int in [1, D={data_dim}], got {num_latents!r}.")
    if free_sigma and num_latents == data_dim:
        raise ValueError(
            f"`num_latents`={num_latents} equals D: with sigma free the ML sigma^2 is the mean "
            "of the discarded eigenvalues and none are left; use num_latents < D or fix sigma."
        )
    return int(num_latents)


def _decoder_arrays(x: ArrayLike, weight: ArrayLike, mean: ArrayLike, sigma: ArrayLike):
    x = _float_array("x", x)
    weight = _float_array("W", weight)
    mean = _float_array("mu", mean)
    if x.ndim < 1:
        raise ValueError(f"`x` must have shape [..., D], got shape {x.shape}.")
    _check_ndim("W", weight, 2, "[D, k]")
    _check_ndim("mu", mean, 1, "[D]")
    data_dim = x.shape[-1]
    if weight.shape[0] != data_dim or weight.shape[1] < 1:
        raise ValueError(
            f"`W` must have shape [D={data_dim}, k >= 1] to match `x` of shape {x.shape}, "
            f"got shape {weight.shape}."
        )
    if mean.shape != (data_dim,):
        raise ValueError(
            f"`mu` must have shape [D={data_dim}] to match `x` of shape {x.shape}, "
            f"got shape {mean.shape}."
        )
    dtype = jnp.result_type(jnp.float32, x, weight, mean)
    sigma = _nan_unless_positive(_sigma_array(sigma, dtype))
    return x.astype(dtype), weight.astype(dtype), mean.astype(dtype), sigma


def _spectrum_arrays(eigvals: ArrayLike, eigvecs: ArrayLike, mean: ArrayLike):
    eigvals = _float_array("eigvals", eigvals)
    eigvecs = _float_array("eigvecs", eigvecs)
    mean = _float_array("mean", mean)
    _check_ndim("eigvals", eigvals, 1, "[D]")
    _check_ndim("mean", mean, 1, "[D]")
    data_dim = mean.shape[0]
    if eigvals.shape != (data_dim,):
        raise ValueError(
            f"`eigvals` must have shape [D={data_dim}] to match `mean`, got {eigvals.shape}."
        )
    if eigvecs.shape != (data_dim, data_dim):
        raise ValueError(
            f"`eigvecs` must have shape [D, D] = {(data_dim, data_dim)} to match `mean`, "
            f"got {eigvecs.shape}."
        )
    if not _holds_everywhere(jnp.isfinite, eigvals):
        raise ValueError("`eigvals` contains NaN or inf.")
    if not _holds_everywhere(lambda v: v[1:] <= v[:-1], eigvals):
        raise ValueError(
            "`eigvals` must be sorted in descending order (as data_covariance_eigen returns "
            "them), with eigvecs[:, i] belonging to eigvals[i]."
        )
    dtype = jnp.result_type(jnp.float32, eigvals, eigvecs, mean)
    return eigvals.astype(dtype), eigvecs.astype(dtype), mean.astype(dtype)


# --------------------------------------------------------------------------- #
# Spectrum of the data.
# --------------------------------------------------------------------------- #


def data_covariance_eigen(x: ArrayLike, *, ddof: int = 0) -> CovarianceEigen:
    """Eigenvalues (descending), eigenvectors and mean of the sample covariance of ``x``.

    ``S = (x - mean)^T (x - mean) / (N - ddof)``. The default ``ddof=0`` is the biased (1/N)
    maximum-likelihood covariance, the one for which :func:`ppca_mle` is the exact MLE;
    ``ddof=1`` is ``numpy.cov``'s and scikit-learn ``PCA``'s normalisation. Eigenvalues are
    clipped at 0 (negative values are rounding of a PSD matrix); each eigenvector's sign is
    fixed so that its entry of largest magnitude is positive.

    Args:
      x: [N, D] data, one example per row (N > ddof).
      ddof: delta degrees of freedom of the normalisation, 0 or 1.

    Returns:
      CovarianceEigen(eigvals [D] descending, eigvecs [D, D] with eigvecs[:, i] the
      eigenvector of eigvals[i], mean [D]).

    References:
      Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS-B 61(3), 1999.
    """
    x = _float_array("x", x)
    _check_ndim("x", x, 2, "[N, D]")
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise ValueError(f"`ddof` must be 0 or 1, got {ddof!r}.")
    num_examples = x.shape[0]
    if num_examples <= ddof or x.shape[1] < 1:
        raise ValueError(f"`x` must have shape [N > ddof={ddof}, D >= 1], got {x.shape}.")
    if not _holds_everywhere(jnp.isfinite, x):
        raise ValueError("`x` contains NaN or inf.")
    x = x.astype(jnp.result_type(jnp.float32, x))
    mean = jnp.mean(x, axis=0)
    centred = x - mean
    cov = jnp.matmul(centred.T, centred, precision=_HIGHEST) / (num_examples - ddof)
    cov = 0.5 * (cov + cov.T)
    eigvals, eigvecs = jnp.linalg.eigh(cov)
    eigvals, eigvecs = jnp.maximum(eigvals[::-1], 0.0), eigvecs[:, ::-1]
    pivot = jnp.take_along_axis(eigvecs, jnp.argmax(jnp.abs(eigvecs), axis=0)[None], axis=0)
    eigvecs = eigvecs * jnp.where(pivot < 0, -1.0, 1.0).astype(eigvecs.dtype)
    return CovarianceEigen(eigvals=eigvals, eigvecs=eigvecs, mean=mean)


def collapse_thresholds(eigvals: ArrayLike) -> jax.Array:
    """The noise levels sigma_i = sqrt(lambda_i) at which each latent collapses.

    Latent i is active for ``sigma < sigma_i`` and collapsed (zero decoder column, encoder
    equal to the prior) for ``sigma >= sigma_i``.

    Args:
      eigvals: [D] covariance eigenvalues (any order; negatives are treated as 0).

    Returns:
      [D] thresholds, in the order of ``eigvals``.

    References:
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469) (stationary points of pPCA,
      after Tipping & Bishop 1999).
    """
    eigvals = _float_array("eigvals", eigvals)
    _check_ndim("eigvals", eigvals, 1, "[D]")
    eigvals = eigvals.astype(jnp.result_type(jnp.float32, eigvals))
    return jnp.sqrt(jnp.maximum(eigvals, 0.0))


def predicted_active_units(eigvals: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """How many latents of the optimal pPCA / linear VAE are active: #{i : lambda_i > sigma^2}.

    Evaluated as ``sqrt(lambda_i) > sigma`` (the same comparison as :func:`ppca_mle`), so at
    ``sigma = collapse_thresholds(eigvals)[i]`` unit i already counts as collapsed. This is the
    count for ``num_latents >= D``; with fewer latents take ``minimum(count, num_latents)``.

    Args:
      eigvals: [D] covariance eigenvalues (any order).
      sigma: [] or [S] observation noise std (>= 0).

    Returns:
      int32 [] or [S] number of active units for each sigma.

    References:
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469).
    """
    thresholds = collapse_thresholds(eigvals)
    sigma = _sigma_array(sigma, thresholds.dtype, allow_zero=True, vector=True)
    return jnp.sum(thresholds > sigma[..., None], axis=-1, dtype=jnp.int32)


# --------------------------------------------------------------------------- #
# pPCA likelihood, posterior and maximum likelihood.
# --------------------------------------------------------------------------- #


def _posterior_terms(x, weight, mean, sigma):
    """Whitened quantities shared by the log-likelihood and the posterior.

    With ``A = W / sigma``, ``u = (x - mu) / sigma`` and ``L L^T = I + A^T A`` (= M / sigma^2):
    posterior mean ``m = (L L^T)^-1 A^T u``, posterior covariance ``(L L^T)^-1``.
    """
    scaled = weight / sigma  # [D, k]
    num_latents = weight.shape[1]
    gram = jnp.eye(num_latents, dtype=weight.dtype) + jnp.matmul(
        scaled.T, scaled, precision=_HIGHEST
    )
    chol = jnp.linalg.cholesky(gram)  # [k, k] lower
    u = (x - mean) / sigma  # [..., D]
    batch_shape = u.shape[:-1]
    rhs = jnp.matmul(u.reshape(-1, u.shape[-1]), scaled, precision=_HIGHEST).T  # [k, B]
    half = solve_triangular(chol, rhs, lower=True)
    post_mean = solve_triangular(chol, half, lower=True, trans="T").T  # [B, k]
    post_mean = post_mean.reshape(*batch_shape, num_latents)
    return u, scaled, chol, post_mean


def ppca_log_likelihood(x: ArrayLike, W: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """Exact log N(x; mu, W W^T + sigma^2 I) per example, in nats.

    Evaluated with a k x k Cholesky factor (matrix determinant lemma and Woodbury identity)
    and the quadratic form written as a sum of squares, with no cancellation:

        log|C| = 2 D log sigma + log|I_k + W^T W / sigma^2|
        (x - mu)^T C^-1 (x - mu) = |u - A m|^2 + |m|^2,   u = (x - mu)/sigma, A = W/sigma,

    where m is the posterior mean of z (the minimiser of |u - A z|^2 + |z|^2).

    Args:
      x: [..., D] data.
      W: [D, k] decoder weight (any columns, orthogonal or not).
      mu: [D] decoder bias (the marginal mean).
      sigma: [] observation noise std, > 0.

    Returns:
      [...] log p(x) in nats.

    References:
      Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS-B 61(3), 1999;
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469).
    """
    x, W, mu, sigma = _decoder_arrays(x, W, mu, sigma)
    u, scaled, chol, post_mean = _posterior_terms(x, W, mu, sigma)
    data_dim = x.shape[-1]
    residual = u - jnp.matmul(post_mean, scaled.T, precision=_HIGHEST)
    quad = jnp.sum(jnp.square(residual), axis=-1) + jnp.sum(jnp.square(post_mean), axis=-1)
    log_det = 2.0 * data_dim * jnp.log(sigma) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (data_dim * _LOG_2PI + log_det + quad)


#: Alias of :func:`ppca_log_likelihood`: the exact log-marginal log p(x) of the
#: linear-Gaussian model, the limit of the IWAE bound as K -> infinity.
exact_log_marginal = ppca_log_likelihood


def exact_posterior(
    x: ArrayLike, W: ArrayLike, mu: ArrayLike, sigma: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """The exact posterior p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1), M = W^T W + sigma^2 I.

    Args:
      x: [..., D] data.
      W: [D, k] decoder weight.
      mu: [D] decoder bias.
      sigma: [] observation noise std, > 0.

    Returns:
      (mean [..., k], covariance [k, k]); the covariance does not depend on x. It is diagonal
      iff W has orthogonal columns, the case a diagonal-Gaussian encoder can match.

    References:
      Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS-B 61(3), 1999;
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469).
    """
    x, W, mu, sigma = _decoder_arrays(x, W, mu, sigma)
    _, _, chol, post_mean = _posterior_terms(x, W, mu, sigma)
    chol_inv = solve_triangular(chol, jnp.eye(W.shape[1], dtype=W.dtype), lower=True)
    covariance = jnp.matmul(chol_inv.T, chol_inv, precision=_HIGHEST)  # (L L^T)^-1
    return post_mean, 0.5 * (covariance + covariance.T)


def _column_scales(top_eigvals: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sqrt(max(lambda - sigma^2, 0)) as sqrt((r - sigma)(r + sigma)), r = sqrt(lambda).

    The factored form avoids the cancellation of lambda - sigma^2 near collapse and is
    positive exactly when ``r > sigma`` (the comparison of :func:`predicted_active_units`).
    """
    root = jnp.sqrt(jnp.maximum(top_eigvals, 0.0))
    active = root > sigma
    scale = jnp.sqrt(jnp.where(active, (root - sigma) * (root + sigma), 0.0))
    # A NaN sigma (invalid under jit) compares False: keep it NaN instead of "all collapsed".
    return jnp.where(jnp.isnan(sigma), jnp.nan, scale), active


def ppca_mle(
    eigvals: ArrayLike,
    eigvecs: ArrayLike,
    mean: ArrayLike,
    sigma: ArrayLike | None = None,
    *,
    num_latents: int,
) -> PPCAParams:
    """The maximum-likelihood pPCA decoder, for a fixed sigma or with sigma free.

    ``W = U_k diag(sqrt(max(lambda_i - sigma^2, 0)))``: orthogonal columns along the top
    ``num_latents`` eigenvectors, a zero column (a collapsed latent) wherever
    ``lambda_i <= sigma^2``. The ML ``mu`` is the sample mean. Any ``W R`` with R orthogonal
    has the same likelihood; this returns R = I. With ``sigma=None`` the noise is fitted too:
    ``sigma^2_ML = mean(lambda_{k+1}, ..., lambda_D)`` and no kept column is zero.

    The result is the exact MLE for eigenvalues of the 1/N covariance
    (``data_covariance_eigen(x, ddof=0)``); with ``ddof=1`` it is scikit-learn ``PCA``'s model.

    Args:
      eigvals: [D] covariance eigenvalues, descending.
      eigvecs: [D, D] eigenvectors, eigvecs[:, i] belonging to eigvals[i].
      mean: [D] sample mean.
      sigma: [] fixed observation noise std (> 0), or None to fit it.
      num_latents: k, 1 <= k <= D (k < D when sigma is None).

    Returns:
      PPCAParams(weight [D, k], mean [D], sigma []): sigma is the given one or sigma_ML.

    Raises:
      ValueError: on bad shapes or values; with sigma free, also when sigma^2_ML = 0 (the data
        lie in a k-dimensional subspace, where the likelihood is unbounded).

    References:
      Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS-B 61(3), 1999;
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469).
    """
    eigvals, eigvecs, mean = _spectrum_arrays(eigvals, eigvecs, mean)
    data_dim = mean.shape[0]
    num_latents = _check_num_latents(num_latents, data_dim, free_sigma=sigma is None)
    if sigma is None:
        sigma_sq = jnp.mean(eigvals[num_latents:])
        if not _holds_everywhere(lambda s: s > 0, sigma_sq):
            raise ValueError(
                f"The ML sigma^2 (mean of the discarded eigenvalues) is 0: the data lie in a "
                f"`num_latents`={num_latents}-dimensional subspace and the likelihood is "
                "unbounded; use fewer latents or fix sigma."
            )
        sigma = jnp.sqrt(sigma_sq)
    else:
        sigma = _nan_unless_positive(_sigma_array(sigma, eigvals.dtype))
    scale, _ = _column_scales(eigvals[:num_latents], sigma)
    weight = eigvecs[:, :num_latents] * scale
    return PPCAParams(weight=weight, mean=mean, sigma=sigma)


# --------------------------------------------------------------------------- #
# The linear VAE.
# --------------------------------------------------------------------------- #


def optimal_linear_vae(
    eigvals: ArrayLike,
    eigvecs: ArrayLike,
    mean: ArrayLike,
    sigma: ArrayLike,
    *,
    num_latents: int,
) -> LinearVAEParams:
    """Encoder and decoder of the globally optimal linear VAE for a fixed sigma.

    The decoder is :func:`ppca_mle`'s (W, mu); the encoder is its exact posterior, which is
    diagonal because W has orthogonal columns: with ``M = W^T W + sigma^2 I =
    diag(max(lambda_i, sigma^2))``,

        V = M^-1 W^T,   s_i^2 = sigma^2 / max(lambda_i, sigma^2),

    so a collapsed unit (lambda_i <= sigma^2) has a zero row of V and s_i^2 = 1: q equals the
    prior and its KL is 0. Its ELBO (:func:`linear_vae_elbo`) equals
    :func:`ppca_log_likelihood`, the maximum of the marginal likelihood.

    Args:
      eigvals: [D] covariance eigenvalues, descending.
      eigvecs: [D, D] eigenvectors, eigvecs[:, i] belonging to eigvals[i].
      mean: [D] sample mean.
      sigma: [] fixed observation noise std, > 0 (for the free-sigma optimum pass
        ``ppca_mle(eigvals, eigvecs, mean, num_latents=k).sigma``).
      num_latents: k, 1 <= k <= D.

    Returns:
      LinearVAEParams(encoder_weight [k, D], encoder_log_var [k], decoder_weight [D, k],
      decoder_bias [D]).

    References:
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469) (the linear VAE
      recovers the pPCA global optimum).
    """
    eigvals, eigvecs, mean = _spectrum_arrays(eigvals, eigvecs, mean)
    num_latents = _check_num_latents(num_latents, mean.shape[0])
    sigma = _nan_unless_positive(_sigma_array(sigma, eigvals.dtype))
    top = eigvals[:num_latents]
    scale, active = _column_scales(top, sigma)
    root = jnp.sqrt(jnp.maximum(top, 0.0))
    safe_root = jnp.where(active, root, 1.0)
    encoder_scale = jnp.where(active, scale / jnp.square(safe_root), 0.0)  # (M^-1 W^T) rows
    encoder_log_var = jnp.where(active, 2.0 * (jnp.log(sigma) - jnp.log(safe_root)), 0.0)
    encoder_log_var = jnp.where(jnp.isnan(sigma), jnp.nan, encoder_log_var)
    basis = eigvecs[:, :num_latents]
    return LinearVAEParams(
        encoder_weight=encoder_scale[:, None] * basis.T,
        encoder_log_var=encoder_log_var,
        decoder_weight=basis * scale,
        decoder_bias=mean,
    )


def _linear_vae_arrays(x: ArrayLike, params: LinearVAEParams):
    if not isinstance(params, LinearVAEParams):
        raise ValueError(f"`params` must be a LinearVAEParams, got {type(params).__name__}.")
    x = _float_array("x", x)
    names = ("encoder_weight", "encoder_log_var", "decoder_weight", "decoder_bias")
    arrays = [_float_array(f"params.{n}", a) for n, a in zip(names, params, strict=True)]
    enc_w, enc_lv, dec_w, dec_b = arrays
    if x.ndim < 1:
        raise ValueError(f"`x` must have shape [..., D], got shape {x.shape}.")
    data_dim = x.shape[-1]
    _check_ndim("params.decoder_weight", dec_w, 2, "[D, k]")
    num_latents = dec_w.shape[1]
    expected = {
        "encoder_weight": (num_latents, data_dim),
        "encoder_log_var": (num_latents,),
        "decoder_weight": (data_dim, num_latents),
        "decoder_bias": (data_dim,),
    }
    for name, array in zip(names, arrays, strict=True):
        if array.shape != expected[name]:
            raise ValueError(
                f"`params.{name}` must have shape {expected[name]} for `x` of shape {x.shape} "
                f"and k={num_latents}, got {array.shape}."
            )
    dtype = jnp.result_type(jnp.float32, x, *arrays)
    return x.astype(dtype), *(a.astype(dtype) for a in arrays)


def linear_vae_encode(x: ArrayLike, params: LinearVAEParams) -> tuple[jax.Array, jax.Array]:
    """The linear encoder's q(z | x): mean ``V (x - mu)`` and the shared log-variance.

    The outputs plug into :func:`vaejax.elbo.elbo` and :func:`vaejax.elbo.iwae_bound`.

    Args:
      x: [..., D] data.
      params: LinearVAEParams.

    Returns:
      (mean [..., k], log_var [..., k]) (log_var broadcast over the batch).
    """
    x, enc_w, enc_lv, _, dec_b = _linear_vae_arrays(x, params)
    post_mean = jnp.matmul(x - dec_b, enc_w.T, precision=_HIGHEST)
    return post_mean, jnp.broadcast_to(enc_lv, post_mean.shape)


def linear_vae_elbo(x: ArrayLike, params: LinearVAEParams, sigma: ArrayLike) -> jax.Array:
    """The linear VAE's ELBO in closed form, per example, in nats.

    With q(z|x) = N(m, diag(s^2)), m = V (x - mu), the expected log-likelihood of the linear
    Gaussian decoder is analytic:

        E_q log N(x; W z + mu, sigma^2 I) = -D/2 log(2 pi sigma^2)
            - (|x - mu - W m|^2 + sum_j s_j^2 |w_j|^2) / (2 sigma^2),

    and ``KL(q || N(0, I)) = 1/2 sum_j (m_j^2 + s_j^2 - 1 - log s_j^2)``; ELBO = recon - KL.

    Args:
      x: [..., D] data.
      params: LinearVAEParams (any values, not only the optimum).
      sigma: [] observation noise std, > 0.

    Returns:
      [...] ELBO in nats (equal to :func:`ppca_log_likelihood` at
      :func:`optimal_linear_vae`).

    References:
      Lucas et al., Don't Blame the ELBO! (arXiv 1911.02469).
    """
    x, enc_w, enc_lv, dec_w, dec_b = _linear_vae_arrays(x, params)
    sigma = _nan_unless_positive(_sigma_array(sigma, x.dtype))
    data_dim = x.shape[-1]
    centred = x - dec_b
    post_mean = jnp.matmul(centred, enc_w.T, precision=_HIGHEST)  # [..., k]
    residual = (centred - jnp.matmul(post_mean, dec_w.T, precision=_HIGHEST)) / sigma
    column_norms = jnp.sum(jnp.square(dec_w / sigma), axis=0)  # |w_j|^2 / sigma^2, [k]
    trace = jnp.sum(jnp.exp(enc_lv) * column_norms)
    recon = (
        -0.5 * data_dim * _LOG_2PI
        - data_dim * jnp.log(sigma)
        - 0.5 * (jnp.sum(jnp.square(residual), axis=-1) + trace)
    )
    # expm1(l) - l = s^2 - 1 - log s^2 without cancellation near s^2 = 1 (collapsed units).
    kl = 0.5 * jnp.sum(jnp.square(post_mean) + (jnp.expm1(enc_lv) - enc_lv), axis=-1)
    return recon - kl
