"""Encoder gradient estimators for the ELBO and the IWAE bound: reparameterised, STL and DReG.

Every estimator returns a :class:`GradientEstimate`: the value of its bound per example and
a scalar ``surrogate`` whose value is the batch mean of that bound and whose gradient is the
estimator. Differentiate the surrogate, never the bound, e.g.::

    grads_enc, grads_dec = jax.grad(
        lambda enc, dec: est(key, *encoder(enc, x), ll_fn, dec).surrogate, argnums=(0, 1)
    )(enc_params, dec_params)

(for a loss to minimise, use ``-surrogate``). The decoder enters as
``log_likelihood_fn(decoder_params, z [B, Z]) -> [B]`` (log p(x|z) in nats per example)
with ``decoder_params`` passed explicitly, not closed over: DReG needs the decoder with its
parameters stop-gradiented in the encoder term and the latents stop-gradiented in the
decoder term, which cannot be arranged from outside a closure. Anything that should get a
gradient must therefore reach the estimator through ``posterior_mean``,
``posterior_log_var`` (the encoder) or ``decoder_params`` (the decoder); arrays closed over
by ``log_likelihood_fn`` (the data x) are constants. The prior is p(z) = N(0, I).

Common arguments of every estimator:

* ``key``: PRNG key; sample k uses ``jax.random.fold_in(key, k)``;
* ``posterior_mean``, ``posterior_log_var``: [B, Z] the encoder's outputs;
* ``log_likelihood_fn``: ``(decoder_params, z [B, Z]) -> [B]`` log p(x|z) in nats;
* ``decoder_params``: the pytree of decoder parameters handed to ``log_likelihood_fn``.

Sample k uses ``jax.random.fold_in(key, k)``, as in :mod:`vaejax.elbo`, so with the same key
every estimator here and :func:`vaejax.elbo.elbo` / :func:`vaejax.elbo.iwae_bound` see the
same draws, and an estimator's ``bound`` equals theirs (exactly or to rounding).

Dtypes follow :mod:`vaejax.elbo`: z is computed in float32 (float64 stays float64) from
the upcast posterior and handed to ``log_likelihood_fn`` in the posterior's dtype (a
bfloat16 encoder gives its decoder bfloat16 z); log q, log p(z), the weights and the
results are float32 or wider; gradients w.r.t. a low-precision posterior come back in its
dtype.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike

from vaejax.elbo import _check_num_samples, _standard_normal_draws, elbo, iwae_bound
from vaejax.kl import diagonal_gaussian_log_density
from vaejax.likelihoods import _as_float_array, _check_same_shape

DecoderLogLikelihoodFn = Callable[[Any, jax.Array], jax.Array]


@struct.dataclass
class GradientEstimate:
    """A bound's value and the scalar surrogate whose gradient is the estimator."""

    bound: jax.Array  # [B] the bound per example, nats (a value: differentiate `surrogate`)
    surrogate: jax.Array  # [] mean_b bound in value; its gradient is the estimator's


@struct.dataclass
class GradientSNR:
    """Per-parameter statistics of a gradient estimator over R independent keys.

    Each field is a pytree shaped like the gradient. ``snr`` is inf where ``std`` is 0 and
    ``mean`` is not, NaN where both are 0.
    """

    mean: Any  # sample mean over the R keys
    std: Any  # sample standard deviation over the R keys (ddof = 1)
    snr: Any  # |mean| / std


def _prepare(
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: DecoderLogLikelihoodFn,
    decoder_params: Any,
) -> tuple[jax.Array, jax.Array]:
    """Validates the encoder outputs and the shape of ``log_likelihood_fn``'s output."""
    mean = _as_float_array("posterior_mean", posterior_mean)
    log_var = _as_float_array("posterior_log_var", posterior_log_var)
    _check_same_shape("posterior_mean", mean, "posterior_log_var", log_var)
    if mean.ndim < 1:
        raise ValueError(f"`posterior_mean` must be [..., Z], got shape {mean.shape}.")
    out = jax.eval_shape(log_likelihood_fn, decoder_params, mean)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != mean.shape[:-1]:
        got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"`log_likelihood_fn` must map (decoder_params, z {mean.shape}) to log p(x|z) per "
            f"example of shape {mean.shape[:-1]}, got {got}."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"`log_likelihood_fn` must return floats, got dtype {out.dtype}.")
    return mean, log_var


def _draws(key: jax.Array, mean: jax.Array, log_var: jax.Array, num_samples: int):
    """z_k = mean + exp(log_var / 2) eps_k, eps_k from fold_in(key, k), at float32 or wider.

    Returns (z [K, ..., Z], mean, log_var upcast like z, the posterior's own dtype): the
    draws of :func:`vaejax.elbo.reparameterize` before their rounding to the posterior's
    dtype, which only the decoder sees.
    """
    z_dtype = jnp.result_type(mean, log_var)
    compute_dtype = z_dtype if jnp.finfo(z_dtype).bits >= 32 else jnp.dtype(jnp.float32)
    mean, log_var = mean.astype(compute_dtype), log_var.astype(compute_dtype)
    eps = _standard_normal_draws(key, jnp.arange(int(num_samples)), mean.shape, compute_dtype)
    return mean + jnp.exp(0.5 * log_var) * eps, mean, log_var, z_dtype


def _log_likelihoods(log_likelihood_fn, decoder_params, z, z_dtype) -> jax.Array:
    """log p(x | z_k) [K, ...] with z rounded to ``z_dtype``, upcast to z's (>= float32)."""
    values = jax.vmap(log_likelihood_fn, in_axes=(None, 0))(decoder_params, z.astype(z_dtype))
    return values.astype(jnp.result_type(values, z.dtype))


def _log_prior(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) per sample and example: [K, ..., Z] -> [K, ...]."""
    return diagonal_gaussian_log_density(z, 0.0, 0.0, event_ndims=1)


def _surrogate_with_value(value: jax.Array, *gradient_terms: jax.Array) -> jax.Array:
    """``value`` in value, the sum of the terms' gradients in gradient: a + (t - sg(t))."""
    out = jax.lax.stop_gradient(value)
    for term in gradient_terms:
        out = out + (term - jax.lax.stop_gradient(term))
    return out


def reparameterized_elbo(
    key: jax.Array,
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: DecoderLogLikelihoodFn,
    decoder_params: Any,
    *,
    num_samples: int = 1,
    kl: Literal["analytic", "monte_carlo"] = "analytic",
) -> GradientEstimate:
    """The standard reparameterised ELBO gradient (the reference the others are compared to).

    ``bound`` is :func:`vaejax.elbo.elbo` with the same arguments (identical values);
    ``surrogate = mean_b bound``. Its gradient w.r.t. the encoder outputs (and so the encoder
    parameters) is the reparameterisation gradient through z = mean + exp(log_var / 2) eps
    and through q's parameters in the KL term (closed form, or Monte Carlo); w.r.t.
    ``decoder_params`` it is mean_b 1/L sum_l grad_theta log p_theta(x | z_l). Use it as
    ``jax.grad(lambda enc, dec: reparameterized_elbo(key, *encoder(enc, x), ll_fn,
    dec).surrogate, argnums=(0, 1))``.

    Args:
      key, posterior_mean, posterior_log_var, log_likelihood_fn, decoder_params: the
        common arguments (module docstring); sample l uses ``fold_in(key, l)``.
      num_samples: L >= 1.
      kl: ``"analytic"`` (closed-form KL, AEVB estimator B) or ``"monte_carlo"``
        (log q - log p at the samples, estimator A).

    Returns:
      GradientEstimate with ``bound`` [B] and ``surrogate`` [].

    References:
      Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), eqs. 6-7.
    """
    _check_num_samples("num_samples", num_samples)
    mean, log_var = _prepare(posterior_mean, posterior_log_var, log_likelihood_fn,
                             decoder_params)
    terms = elbo(key, mean, log_var, lambda z: log_likelihood_fn(decoder_params, z),
                 num_samples=num_samples, kl=kl)
    return GradientEstimate(bound=terms.elbo, surrogate=jnp.mean(terms.elbo))


def stl_elbo(
    key: jax.Array,
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: DecoderLogLikelihoodFn,
    decoder_params: Any,
    *,
    num_samples: int = 1,
) -> GradientEstimate:
    """The "sticking the landing" path-derivative estimator of the ELBO's gradient.

    The ELBO in its log-density form, 1/L sum_l [log p(x|z_l) + log p(z_l) - log q(z_l|x)]
    with z_l = mean + exp(log_var / 2) eps_l carrying gradients, but log q evaluated with
    ``stop_gradient`` on (mean, log_var): the score-function term E_q[d/dphi log q], zero in
    expectation, is dropped. ``bound`` equals :func:`vaejax.elbo.elbo` with
    ``kl="monte_carlo"`` and the same key (to rounding); ``surrogate = mean_b bound``.
    Gradient of the surrogate w.r.t. the encoder outputs: mean_b 1/L sum_l
    d/dz[log p(x|z) + log p(z) - log q(z)]|_{z_l} dz_l/d(mean, log_var), an unbiased
    estimator of the ELBO's gradient that is exactly zero for every draw when q equals the
    true posterior. W.r.t. ``decoder_params``: the standard mean_b 1/L sum_l
    grad_theta log p_theta(x | z_l). Use it as ``jax.grad(lambda enc, dec: stl_elbo(key,
    *encoder(enc, x), ll_fn, dec).surrogate, argnums=(0, 1))``.

    Args:
      key, posterior_mean, posterior_log_var, log_likelihood_fn, decoder_params: the
        common arguments (module docstring); sample l uses ``fold_in(key, l)``.
      num_samples: L >= 1.

    Returns:
      GradientEstimate with ``bound`` [B] and ``surrogate`` [].

    References:
      Roeder, Wu & Duvenaud, Sticking the Landing: Simple, Lower-Variance Gradient
      Estimators for Variational Inference (arXiv 1703.09194), eq. 8 and algorithm 1.
    """
    _check_num_samples("num_samples", num_samples)
    mean, log_var = _prepare(posterior_mean, posterior_log_var, log_likelihood_fn,
                             decoder_params)
    z, mean, log_var, z_dtype = _draws(key, mean, log_var, num_samples)  # z [L, B, Z]
    recon = jnp.mean(_log_likelihoods(log_likelihood_fn, decoder_params, z, z_dtype), axis=0)
    log_q = diagonal_gaussian_log_density(
        z, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(log_var), event_ndims=1
    )
    kl_value = jnp.mean(log_q - _log_prior(z), axis=0)
    bound = recon - kl_value
    return GradientEstimate(bound=bound, surrogate=jnp.mean(bound))


def reparameterized_iwae(
    key: jax.Array,
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: DecoderLogLikelihoodFn,
    decoder_params: Any,
    *,
    num_samples: int,
    chunk_size: int | None = None,
) -> GradientEstimate:
    """The standard reparameterised gradient of the IWAE bound.

    ``bound`` is :func:`vaejax.elbo.iwae_bound` with the same arguments (identical values,
    chunked the same way); ``surrogate = mean_b bound``. Its gradient w.r.t. the encoder
    outputs is mean_b sum_k w~_k d/dphi log w_k with log w_k = log p(x, z_k) - log q(z_k|x)
    differentiated through z_k and through q's parameters (w~ = normalised weights); w.r.t.
    ``decoder_params`` it is mean_b sum_k w~_k grad_theta log p_theta(x | z_k). Use it as
    ``jax.grad(lambda enc, dec: reparameterized_iwae(key, *encoder(enc, x), ll_fn, dec,
    num_samples=K).surrogate, argnums=(0, 1))``.

    Args:
      key, posterior_mean, posterior_log_var, log_likelihood_fn, decoder_params: the
        common arguments (module docstring); sample k uses ``fold_in(key, k)``.
      num_samples: K >= 1.
      chunk_size: samples per ``lax.scan`` step, as in :func:`vaejax.elbo.iwae_bound`.

    Returns:
      GradientEstimate with ``bound`` [B] and ``surrogate`` [].

    References:
      Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders (arXiv 1509.00519),
      eqs. 8 and 14.
    """
    _check_num_samples("num_samples", num_samples)
    mean, log_var = _prepare(posterior_mean, posterior_log_var, log_likelihood_fn,
                             decoder_params)
    bound = iwae_bound(key, mean, log_var, lambda z: log_likelihood_fn(decoder_params, z),
                       num_samples=num_samples, chunk_size=chunk_size)
    return GradientEstimate(bound=bound, surrogate=jnp.mean(bound))


def dreg_iwae(
    key: jax.Array,
    posterior_mean: ArrayLike,
    posterior_log_var: ArrayLike,
    log_likelihood_fn: DecoderLogLikelihoodFn,
    decoder_params: Any,
    *,
    num_samples: int,
) -> GradientEstimate:
    """The doubly reparameterised (DReG) gradient of the IWAE bound.

    With z_k = mean + exp(log_var / 2) eps_k, log w_k = log p(x|z_k) + log p(z_k) -
    log q(z_k|x) and w~_k = w_k / sum_j w_j, the surrogate's gradient is the sum of:

    * encoder term, w.r.t. the encoder outputs only: mean_b sum_k sg(w~_k^2) d/dphi log w_k,
      with log q evaluated at stop-gradiented (mean, log_var) and ``log_likelihood_fn``
      called with ``stop_gradient(decoder_params)``, so only the path through z_k counts
      (Tucker et al. eq. 6). Unbiased for the IWAE bound's encoder gradient, and exactly
      zero for every draw when q equals the true posterior;
    * decoder term, w.r.t. ``decoder_params`` only: mean_b sum_k sg(w~_k) grad_theta
      log p_theta(x | sg(z_k)), the standard IWAE gradient for the model (Tucker et al.
      section 3: DReG changes only the inference-network gradient).

    ``bound`` (stop-gradiented) equals :func:`vaejax.elbo.iwae_bound` with the same key to
    rounding; ``surrogate`` has value ``mean_b bound``. All K decoder passes are one
    vmapped axis (memory of K passes; use :func:`vaejax.elbo.iwae_bound` for large-K
    evaluation). Use it as ``jax.grad(lambda enc, dec: dreg_iwae(key, *encoder(enc, x),
    ll_fn, dec, num_samples=K).surrogate, argnums=(0, 1))``.

    Args:
      key, posterior_mean, posterior_log_var, log_likelihood_fn, decoder_params: the
        common arguments (module docstring); sample k uses ``fold_in(key, k)``.
      num_samples: K >= 1.

    Returns:
      GradientEstimate with ``bound`` [B] and ``surrogate`` [].

    References:
      Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte
      Carlo Objectives (arXiv 1810.04152), eqs. 5-6 and section 3.
    """
    _check_num_samples("num_samples", num_samples)
    mean, log_var = _prepare(posterior_mean, posterior_log_var, log_likelihood_fn,
                             decoder_params)
    sg = jax.lax.stop_gradient
    z, mean, log_var, z_dtype = _draws(key, mean, log_var, num_samples)  # z [K, B, Z]
    log_q = diagonal_gaussian_log_density(z, sg(mean), sg(log_var), event_ndims=1)
    log_prior_minus_q = _log_prior(z) - log_q  # [K, B], depends on phi through z only
    # Encoder term: the decoder is frozen, z_k carries the gradient.
    log_w_encoder = _log_likelihoods(log_likelihood_fn, jax.tree.map(sg, decoder_params), z,
                                     z_dtype) + log_prior_minus_q
    # Decoder term: the latents (and everything of q) are frozen.
    log_w_decoder = _log_likelihoods(log_likelihood_fn, decoder_params, sg(z), z_dtype) + sg(
        log_prior_minus_q)
    log_w = sg(log_w_encoder)  # [K, B] values
    normalized = jax.nn.softmax(log_w, axis=0)  # w~_k, no gradient
    bound = jax.scipy.special.logsumexp(log_w, axis=0) - math.log(int(num_samples))
    encoder_term = jnp.mean(jnp.sum(jnp.square(normalized) * log_w_encoder, axis=0))
    decoder_term = jnp.mean(jnp.sum(normalized * log_w_decoder, axis=0))
    return GradientEstimate(
        bound=bound,
        surrogate=_surrogate_with_value(jnp.mean(bound), encoder_term, decoder_term),
    )


def gradient_snr(
    key: jax.Array,
    gradient_fn: Callable[[jax.Array], Any],
    *,
    num_keys: int,
    batch_size: int | None = None,
) -> GradientSNR:
    """Signal-to-noise ratio |mean| / std of a gradient estimator, per parameter, over R keys.

    ``gradient_fn(key_r)`` is called for key_r = ``fold_in(key, r)``, r = 0 .. R-1, as one
    vmapped axis (or ``lax.map`` in batches of ``batch_size``: all R gradients are kept
    either way, the batches bound the intermediate activations). For an SNR-against-K plot,
    e.g. ``lambda k: jax.grad(lambda enc: dreg_iwae(k, *encoder(enc, x), ll_fn, dec,
    num_samples=K).surrogate)(enc_params)``.

    Args:
      key: PRNG key.
      gradient_fn: ``key -> pytree`` of float arrays [...] (one draw of the estimator).
      num_keys: R >= 2 independent draws.
      batch_size: None vmaps all R draws; an int runs them ``batch_size`` at a time.

    Returns:
      GradientSNR with per-parameter ``mean``, ``std`` (ddof = 1) and ``snr`` pytrees, each
      leaf [...] shaped like the gradient's.

    References:
      Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh, Tighter Variational Bounds are Not
      Necessarily Better (arXiv 1802.04537), eq. 3.
    """
    if not isinstance(num_keys, numbers.Integral) or isinstance(num_keys, bool) or num_keys < 2:
        raise ValueError(f"`num_keys` must be an int >= 2 (a std needs two draws), got "
                         f"{num_keys!r}.")
    if batch_size is not None:
        _check_num_samples("batch_size", batch_size)
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(int(num_keys)))
    if batch_size is None:
        grads = jax.vmap(gradient_fn)(keys)
    else:
        grads = jax.lax.map(gradient_fn, keys, batch_size=int(batch_size))
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    std = jax.tree.map(lambda g: jnp.std(g, axis=0, ddof=1), grads)
    snr = jax.tree.map(lambda m, s: jnp.abs(m) / s, mean, std)
    return GradientSNR(mean=mean, std=std, snr=snr)
