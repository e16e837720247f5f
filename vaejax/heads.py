"""The likelihood-head registry: every decoder head of vaejax, declared once.

A head is what turns a decoder's last hidden layer into a distribution p(x|z): which
outputs the network produces and how they are initialised, the log-likelihood in nats
per example (:mod:`vaejax.likelihoods`), the expected value E[x|z] (what a figure of
"reconstructions" should show), a sampler (wake-sleep dreams from it) and the data it
is a density on. Models, the trainer, wake-sleep and the experiments look heads up here
by name; adding a likelihood is one :class:`Head` entry in :data:`HEADS` plus its tests.

    head = heads.get("gaussian_fixed")
    log_p = head.log_likelihood(x, outputs, sigma=0.1)      # [B] nats
    pixels = head.expected_value(outputs)                   # [B, D]

Decoder outputs are a dictionary (``logits``, ``mean``, ``log_sigma`` for a Gaussian sigma,
``log_scale`` for a Laplace or logistic scale, ``log_concentration`` for the Beta); its
arrays are [B, *event] except the shared ``log_sigma`` / ``log_scale`` of the ``*_shared``
heads, a scalar parameter.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vaejax import discretized, likelihoods

Outputs = Mapping[str, jax.Array]
# (module, h [B, H], dense(features, name) -> flax Dense, options) -> decoder outputs
OutputsFn = Callable[[Any, jax.Array, Callable, "HeadOptions"], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class HeadOptions:
    """Per-model settings a head reads when it builds its outputs.

    Attributes:
      output_dim: D, the number of values per example.
      sigmoid_mean: squash a Gaussian mean into (0, 1) (AEVB does for Frey Face).
      init_log_sigma: initial value of a learned shared log sigma.
      min_sigma: floor of a learned scale, a Gaussian sigma or a Laplace / logistic b
        (0: none). With ``sigma_floor="hard"``, ``sigma = max(sigma_raw, min_sigma)``: below
        it the head gets no gradient, so sigma can no longer shrink towards the unbounded
        density of a constant pixel. With ``"soft"``, the sigma-VAE's soft clip
        ``log sigma = log min_sigma + softplus(log sigma_raw - log min_sigma)``
        (:func:`vaejax.likelihoods.soft_clip_log_scale`): smooth, with a gradient everywhere.
      sigma_floor: ``"hard"`` or ``"soft"``, how ``min_sigma`` is applied.
      num_levels: k, the grey levels of the data for the discretised and categorical
        heads (17 for the bundled digits, 256 for 8-bit images).
      num_mixtures: M, the components of ``discretized_logistic_mixture``.
    """

    output_dim: int
    sigmoid_mean: bool = False
    init_log_sigma: float = 0.0
    min_sigma: float = 0.0
    sigma_floor: str = "hard"
    num_levels: int = 17
    num_mixtures: int = 5


@dataclasses.dataclass(frozen=True)
class Head:
    """One likelihood head.

    Attributes:
      name: the registry key (``config.model.likelihood``).
      loss: the plain loss this head's negative log-likelihood is a scaled view of.
      support: where the density lives: ``"binary"`` ({0, 1}: a probability mass),
        ``"unit_interval"`` ([0, 1]), ``"open_unit_interval"`` ((0, 1): dequantised data),
        ``"levels"`` (the k-level grid {0, 1/(k-1), ..., 1}) or ``"real"``.
      uses_sigma: the decoder sigma is a fixed hyper-parameter (``sigma=`` is required).
      outputs: builds the decoder outputs from the last hidden layer (``OutputsFn``).
      log_likelihood_fn: (x [B, D], outputs, sigma) -> [B] nats per example.
      expected_value_fn: outputs -> E[x|z] [B, D].
      sample_fn: (key, outputs, sigma) -> x ~ p(x|z) [B, D], or None (no sampler).
      uses_levels: the head is a distribution over the k grey levels of discrete data:
        ``num_levels=`` is required and the three functions take it as a last argument.
    """

    name: str
    loss: str
    support: str
    uses_sigma: bool
    outputs: OutputsFn
    log_likelihood_fn: Callable[..., jax.Array]
    expected_value_fn: Callable[[Outputs], jax.Array]
    sample_fn: Callable[..., jax.Array] | None = None
    uses_levels: bool = False

    def _levels(self, num_levels) -> tuple:
        if not self.uses_levels:
            return ()
        if num_levels is None:
            raise ValueError(f"`num_levels` is required for the {self.name!r} likelihood "
                             "(config `model.num_levels`: 17 for the digits, 256 for 8-bit).")
        return (num_levels,)

    def log_likelihood(self, x: jax.Array, outputs: Outputs, *, sigma: Any = None,
                       num_levels: int | None = None) -> jax.Array:
        """log p(x|z) in nats per example.

        Args:
          x: [B, D] data.
          outputs: the decoder's outputs for the same batch.
          sigma: the fixed decoder sigma (heads with ``uses_sigma`` only): a scalar or
            any array broadcastable to ``x``.
          num_levels: k, the data's grey levels (heads with ``uses_levels`` only; others
            ignore it).

        Returns:
          [B] log-likelihood per example.
        """
        if self.uses_sigma and sigma is None:
            raise ValueError(f"`sigma` is required for the {self.name!r} likelihood.")
        return self.log_likelihood_fn(x, outputs, sigma, *self._levels(num_levels))

    def expected_value(self, outputs: Outputs, *, num_levels: int | None = None) -> jax.Array:
        """E[x|z]: [B, D] (for a continuous Bernoulli its mean, not sigmoid(logits))."""
        return self.expected_value_fn(outputs, *self._levels(num_levels))

    def sample(self, key: jax.Array, outputs: Outputs, *, sigma: Any = None,
               num_levels: int | None = None) -> jax.Array:
        """x ~ p(x|z): [B, D] (0/1 for Bernoulli; Gaussian draws are not clipped)."""
        if self.sample_fn is None:
            raise ValueError(f"the {self.name!r} head has no sampler (x ~ p(x|z) is undefined "
                             f"for it); heads with one: {', '.join(sampleable())}.")
        if self.uses_sigma and sigma is None:
            raise ValueError(f"`sigma` is required for the {self.name!r} likelihood.")
        return self.sample_fn(key, outputs, sigma, *self._levels(num_levels))


# --------------------------------------------------------------------------- outputs


def _logits_outputs(module, h, dense, options: HeadOptions) -> dict[str, jax.Array]:
    del module
    return {"logits": dense(options.output_dim, "out")(h)}


def _mean(h, dense, options: HeadOptions) -> jax.Array:
    out = dense(options.output_dim, "out")(h)
    return jax.nn.sigmoid(out) if options.sigmoid_mean else out


FLOORS = ("hard", "soft")


def _floored(log_sigma: jax.Array, options: HeadOptions) -> jax.Array:
    if options.min_sigma <= 0:
        return log_sigma
    if options.sigma_floor == "soft":
        return likelihoods.soft_clip_log_scale(log_sigma, math.log(options.min_sigma))
    if options.sigma_floor != "hard":
        raise ValueError(f"`sigma_floor` must be one of {FLOORS}, got {options.sigma_floor!r}.")
    return jnp.maximum(log_sigma, math.log(options.min_sigma))


def _mean_outputs(module, h, dense, options):
    del module
    return {"mean": _mean(h, dense, options)}


def _shared_scale_outputs(module, h, dense, options, key="log_sigma"):
    """The mean and one learned log-scale parameter (named ``key``), shared by all pixels."""
    import flax.linen as nn

    log_scale = module.param(key, nn.initializers.constant(options.init_log_sigma), ())
    return {"mean": _mean(h, dense, options), key: _floored(log_scale, options)}


def _per_pixel_scale_outputs(module, h, dense, options, key="log_sigma"):
    """The mean and a per-pixel log scale (a second dense layer named ``key``), [B, D] each."""
    del module
    mean = _mean(h, dense, options)
    return {"mean": mean, key: _floored(dense(options.output_dim, key)(h), options)}


# Beta head: the mean's logit is bounded so that sigmoid(logit) stays inside (0, 1) in
# float32 (sigmoid(15) = 1 - 3.1e-7 < 1), and so does 1 - mean.
_BETA_MAX_LOGIT = 15.0


def _beta_outputs(module, h, dense, options):
    del module
    logits = dense(options.output_dim, "out")(h)
    return {"logits": jnp.clip(logits, -_BETA_MAX_LOGIT, _BETA_MAX_LOGIT),
            "log_concentration": dense(options.output_dim, "log_concentration")(h)}


def _categorical_outputs(module, h, dense, options):
    del module
    logits = dense(options.output_dim * options.num_levels, "out")(h)
    return {"logits": logits.reshape(*logits.shape[:-1], options.output_dim,
                                     options.num_levels)}


def _mixture_outputs(module, h, dense, options):
    """Per pixel M weights, locations and log-scales, each [B, D, M]."""
    del module
    shape = (*h.shape[:-1], options.output_dim, options.num_mixtures)
    return {key: dense(options.output_dim * options.num_mixtures, key)(h).reshape(shape)
            for key in ("logit_weights", "means", "log_scales")}


def _quantized(values: jax.Array, k: int) -> jax.Array:
    """A continuous draw put in its bin: the level of the nearest grid point, edges open."""
    return jnp.clip(jnp.round(values * (k - 1)), 0, k - 1) / (k - 1)


def _beta_parameters(outputs):
    return jax.nn.sigmoid(outputs["logits"]), jnp.exp(outputs["log_concentration"])


# --------------------------------------------------------------------------- the heads


def _gaussian_sample(key, outputs, scale):
    mean = outputs["mean"]
    return mean + jnp.asarray(scale, mean.dtype) * jax.random.normal(key, mean.shape, mean.dtype)


def _bernoulli_sample(key, outputs, sigma):
    del sigma
    logits = outputs["logits"]
    return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)


def _continuous_bernoulli_sample(key, outputs, sigma):
    # Inverse CDF in the logit l: F(x) = (e^{l x} - 1) / (e^l - 1), so
    # x = log1p(u expm1(l)) / l; written for l < 0 and mirrored (x -> 1 - x, l -> -l) so that
    # expm1 never overflows, and the l -> 0 limit (the uniform) is taken where |l| is tiny.
    del sigma
    logits = outputs["logits"]
    u = jax.random.uniform(key, logits.shape, logits.dtype)
    neg = -jnp.abs(logits)
    tiny = jnp.abs(logits) < 1e-4
    safe = jnp.where(tiny, -1.0, neg)
    x_neg = jnp.where(tiny, u, jnp.log1p(u * jnp.expm1(safe)) / safe)
    return jnp.clip(jnp.where(logits > 0, 1.0 - x_neg, x_neg), 0.0, 1.0)


def _laplace_sample(key, outputs, scale):
    mean = outputs["mean"]
    return mean + jnp.asarray(scale, mean.dtype) * jax.random.laplace(key, mean.shape, mean.dtype)


def _logistic_sample(key, outputs, scale):
    mean = outputs["mean"]
    noise = jax.random.logistic(key, mean.shape, mean.dtype)
    return mean + jnp.asarray(scale, mean.dtype) * noise


def _discretized_sample(noise_fn):
    def sample(key, outputs, sigma, k):
        del sigma
        mean = outputs["mean"]
        noise = noise_fn(key, mean.shape, mean.dtype)
        return _quantized(mean + jnp.exp(outputs["log_scale"]) * noise, k)

    return sample


def _categorical_sample(key, outputs, sigma, k):
    del sigma
    return jax.random.categorical(key, outputs["logits"]).astype(jnp.float32) / (k - 1)


def _mixture_sample(key, outputs, sigma, k):
    del sigma
    key_m, key_x = jax.random.split(key)
    component = jax.random.categorical(key_m, outputs["logit_weights"])[..., None]
    pick = lambda a: jnp.take_along_axis(a, component, -1)[..., 0]  # noqa: E731
    mean, log_scale = pick(outputs["means"]), pick(outputs["log_scales"])
    noise = jax.random.logistic(key_x, mean.shape, mean.dtype)
    return _quantized(mean + jnp.exp(log_scale) * noise, k)


def _discretized_head(name: str, distribution: str, log_likelihood, noise_fn) -> Head:
    return Head(
        name=name, loss=f"-log of the {distribution} mass of each pixel's grey-level bin",
        support="levels", uses_sigma=False, uses_levels=True,
        outputs=functools.partial(_per_pixel_scale_outputs, key="log_scale"),
        log_likelihood_fn=lambda x, o, s, k: log_likelihood(
            x, o["mean"], o["log_scale"], num_levels=k),
        expected_value_fn=lambda o, k: discretized.discretized_mean(
            o["mean"], jnp.exp(o["log_scale"]), num_levels=k, distribution=distribution),
        sample_fn=_discretized_sample(noise_fn))


def _beta_sample(key, outputs, sigma):
    del sigma
    mean, concentration = _beta_parameters(outputs)
    return jax.random.beta(key, mean * concentration, (1.0 - mean) * concentration)


# The Gaussian heads whose decoder outputs log sigma (shared or per pixel).
_LEARNED_SIGMA = dict(
    log_likelihood_fn=lambda x, o, s: likelihoods.gaussian_log_likelihood_from_log_sigma(
        x, o["mean"], o["log_sigma"]),
    expected_value_fn=lambda o: o["mean"],
    sample_fn=lambda k, o, s: _gaussian_sample(k, o, jnp.exp(o["log_sigma"])))
# The Laplace heads with a learned scale b (log b: "log_scale").
_LEARNED_LAPLACE = dict(
    log_likelihood_fn=lambda x, o, s: likelihoods.laplace_log_likelihood_from_log_scale(
        x, o["mean"], o["log_scale"]),
    expected_value_fn=lambda o: o["mean"],
    sample_fn=lambda k, o, s: _laplace_sample(k, o, jnp.exp(o["log_scale"])))

HEADS: dict[str, Head] = {
    head.name: head
    for head in (
        Head(
            name="bernoulli", loss="BCE (sum over pixels)", support="binary", uses_sigma=False,
            outputs=_logits_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.bernoulli_log_likelihood(
                x, o["logits"]),
            expected_value_fn=lambda o: jax.nn.sigmoid(o["logits"]),
            sample_fn=_bernoulli_sample),
        Head(
            name="continuous_bernoulli", loss="BCE + log C(lambda)", support="unit_interval",
            uses_sigma=False, outputs=_logits_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.continuous_bernoulli_log_likelihood(
                x, o["logits"]),
            expected_value_fn=lambda o: likelihoods.continuous_bernoulli_mean(o["logits"]),
            sample_fn=_continuous_bernoulli_sample),
        Head(
            name="gaussian_fixed", loss="SSE / (2 sigma^2)", support="real", uses_sigma=True,
            outputs=_mean_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.gaussian_log_likelihood(
                x, o["mean"], s),
            expected_value_fn=lambda o: o["mean"],
            sample_fn=_gaussian_sample),
        Head(
            name="gaussian_shared", loss="D log sigma + SSE / (2 sigma^2), sigma learned",
            support="real", uses_sigma=False, outputs=_shared_scale_outputs,
            **_LEARNED_SIGMA),
        Head(
            name="gaussian_per_pixel",
            loss="sum_i log sigma_i + (x_i - mu_i)^2 / (2 sigma_i^2), sigma_i(z) learned",
            support="real", uses_sigma=False, outputs=_per_pixel_scale_outputs,
            **_LEARNED_SIGMA),
        Head(
            # sigma* = sqrt(batch MSE): the sigma-VAE choice; it depends on the whole batch,
            # so x ~ p(x|z) of one example is undefined and the head has no sampler.
            name="gaussian_optimal", loss="D/2 log(2 pi e MSE)", support="real",
            uses_sigma=False, outputs=_mean_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.gaussian_log_likelihood_optimal_sigma(
                x, o["mean"], axis="batch"),
            expected_value_fn=lambda o: o["mean"]),
        Head(
            # b fixed: the config's sigma is the Laplace scale b; -log p = SAE / b + D log 2b.
            name="laplace_fixed", loss="SAE / b (L1)", support="real", uses_sigma=True,
            outputs=_mean_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.laplace_log_likelihood(
                x, o["mean"], s),
            expected_value_fn=lambda o: o["mean"],
            sample_fn=_laplace_sample),
        Head(
            name="laplace_shared", loss="D log 2b + SAE / b, b learned", support="real",
            uses_sigma=False,
            outputs=functools.partial(_shared_scale_outputs, key="log_scale"),
            **_LEARNED_LAPLACE),
        Head(
            name="laplace_per_pixel", loss="sum_i log 2 b_i + |x_i - mu_i| / b_i, b_i(z) learned",
            support="real", uses_sigma=False,
            outputs=functools.partial(_per_pixel_scale_outputs, key="log_scale"),
            **_LEARNED_LAPLACE),
        Head(
            name="logistic_per_pixel",
            loss="sum_i z_i + log s_i + 2 softplus(-z_i), z_i = (x_i - mu_i) / s_i",
            support="real", uses_sigma=False,
            outputs=functools.partial(_per_pixel_scale_outputs, key="log_scale"),
            log_likelihood_fn=lambda x, o, s: likelihoods.logistic_log_likelihood_from_log_scale(
                x, o["mean"], o["log_scale"]),
            expected_value_fn=lambda o: o["mean"],
            sample_fn=lambda k, o, s: _logistic_sample(k, o, jnp.exp(o["log_scale"]))),
        Head(
            # Data must lie in the open (0, 1): dequantise (data.dequantize_levels).
            name="beta", loss="none common (a density on (0, 1) with a learned concentration)",
            support="open_unit_interval", uses_sigma=False, outputs=_beta_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.beta_log_likelihood(
                x, *_beta_parameters(o)),
            expected_value_fn=lambda o: _beta_parameters(o)[0],
            sample_fn=_beta_sample),
        # Exact likelihoods of k-level data (model.num_levels): bits/dim without
        # dequantisation. x must lie on the grid {0, 1/(k-1), ..., 1}.
        _discretized_head(
            "discretized_gaussian", "gaussian",
            discretized.discretized_gaussian_log_likelihood_from_log_scale,
            jax.random.normal),
        _discretized_head(
            "discretized_logistic", "logistic",
            discretized.discretized_logistic_log_likelihood_from_log_scale,
            jax.random.logistic),
        Head(
            name="discretized_logistic_mixture",
            loss="-log of a mixture of M discretised logistics per pixel (PixelCNN++)",
            support="levels", uses_sigma=False, uses_levels=True, outputs=_mixture_outputs,
            log_likelihood_fn=lambda x, o, s, k:
                discretized.discretized_logistic_mixture_log_likelihood(
                    x, o["logit_weights"], o["means"], o["log_scales"], num_levels=k),
            expected_value_fn=lambda o, k: discretized.discretized_logistic_mixture_mean(
                o["logit_weights"], o["means"], o["log_scales"], num_levels=k),
            sample_fn=_mixture_sample),
        Head(
            name="categorical", loss="cross-entropy over the k intensities",
            support="levels", uses_sigma=False, uses_levels=True,
            outputs=_categorical_outputs,
            log_likelihood_fn=lambda x, o, s, k: discretized.categorical_log_likelihood(
                x, o["logits"], num_levels=k),
            expected_value_fn=lambda o, k: discretized.categorical_mean(o["logits"], k),
            sample_fn=_categorical_sample),
    )
}
NAMES = tuple(HEADS)


def get(name: str) -> Head:
    """The head called ``name``; ValueError listing the known heads otherwise."""
    try:
        return HEADS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown likelihood {name!r}; expected one of "
                         f"{', '.join(NAMES)}.") from None


def sampleable() -> tuple[str, ...]:
    """Names of the heads with a sampler (those wake-sleep can dream from)."""
    return tuple(name for name, head in HEADS.items() if head.sample_fn is not None)


def log_likelihood(name: str, x: jax.Array, outputs: Outputs, *, sigma: Any = None,
                   num_levels: int | None = None) -> jax.Array:
    """``get(name).log_likelihood(x, outputs, ...)``: [B] nats per example."""
    return get(name).log_likelihood(x, outputs, sigma=sigma, num_levels=num_levels)
