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

Decoder outputs are a dictionary (``logits``, ``mean``, ``log_sigma``); its arrays are
[B, *event] except the shared ``log_sigma`` of ``gaussian_shared``, a scalar parameter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vaejax import likelihoods

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
      min_sigma: floor of a learned sigma (0: none). ``sigma = max(sigma_raw, min_sigma)``
        is a hard floor: below it the head gets no gradient, so sigma can no longer shrink
        towards the unbounded density of a constant pixel.
    """

    output_dim: int
    sigmoid_mean: bool = False
    init_log_sigma: float = 0.0
    min_sigma: float = 0.0


@dataclasses.dataclass(frozen=True)
class Head:
    """One likelihood head.

    Attributes:
      name: the registry key (``config.model.likelihood``).
      loss: the plain loss this head's negative log-likelihood is a scaled view of.
      support: where the density lives: ``"binary"`` ({0, 1}: a probability mass),
        ``"unit_interval"`` ([0, 1]) or ``"real"``.
      uses_sigma: the decoder sigma is a fixed hyper-parameter (``sigma=`` is required).
      outputs: builds the decoder outputs from the last hidden layer (``OutputsFn``).
      log_likelihood_fn: (x [B, D], outputs, sigma) -> [B] nats per example.
      expected_value_fn: outputs -> E[x|z] [B, D].
      sample_fn: (key, outputs, sigma) -> x ~ p(x|z) [B, D], or None (no sampler).
    """

    name: str
    loss: str
    support: str
    uses_sigma: bool
    outputs: OutputsFn
    log_likelihood_fn: Callable[..., jax.Array]
    expected_value_fn: Callable[[Outputs], jax.Array]
    sample_fn: Callable[..., jax.Array] | None = None

    def log_likelihood(self, x: jax.Array, outputs: Outputs, *, sigma: Any = None) -> jax.Array:
        """log p(x|z) in nats per example.

        Args:
          x: [B, D] data.
          outputs: the decoder's outputs for the same batch.
          sigma: the fixed decoder sigma (heads with ``uses_sigma`` only): a scalar or
            any array broadcastable to ``x``.

        Returns:
          [B] log-likelihood per example.
        """
        if self.uses_sigma and sigma is None:
            raise ValueError(f"`sigma` is required for the {self.name!r} likelihood.")
        return self.log_likelihood_fn(x, outputs, sigma)

    def expected_value(self, outputs: Outputs) -> jax.Array:
        """E[x|z]: [B, D] (for a continuous Bernoulli its mean, not sigmoid(logits))."""
        return self.expected_value_fn(outputs)

    def sample(self, key: jax.Array, outputs: Outputs, *, sigma: Any = None) -> jax.Array:
        """x ~ p(x|z): [B, D] (0/1 for Bernoulli; Gaussian draws are not clipped)."""
        if self.sample_fn is None:
            raise ValueError(f"the {self.name!r} head has no sampler (x ~ p(x|z) is undefined "
                             f"for it); heads with one: {', '.join(sampleable())}.")
        if self.uses_sigma and sigma is None:
            raise ValueError(f"`sigma` is required for the {self.name!r} likelihood.")
        return self.sample_fn(key, outputs, sigma)


# --------------------------------------------------------------------------- outputs


def _logits_outputs(module, h, dense, options: HeadOptions) -> dict[str, jax.Array]:
    del module
    return {"logits": dense(options.output_dim, "out")(h)}


def _mean(h, dense, options: HeadOptions) -> jax.Array:
    out = dense(options.output_dim, "out")(h)
    return jax.nn.sigmoid(out) if options.sigmoid_mean else out


def _floored(log_sigma: jax.Array, options: HeadOptions) -> jax.Array:
    if options.min_sigma > 0:
        return jnp.maximum(log_sigma, math.log(options.min_sigma))
    return log_sigma


def _mean_outputs(module, h, dense, options):
    del module
    return {"mean": _mean(h, dense, options)}


def _shared_sigma_outputs(module, h, dense, options):
    import flax.linen as nn

    log_sigma = module.param("log_sigma", nn.initializers.constant(options.init_log_sigma), ())
    return {"mean": _mean(h, dense, options), "log_sigma": _floored(log_sigma, options)}


def _per_pixel_sigma_outputs(module, h, dense, options):
    del module
    mean = _mean(h, dense, options)
    return {"mean": mean,
            "log_sigma": _floored(dense(options.output_dim, "log_sigma")(h), options)}


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


# The Gaussian heads whose decoder outputs log sigma (shared or per pixel).
_LEARNED_SIGMA = dict(
    log_likelihood_fn=lambda x, o, s: likelihoods.gaussian_log_likelihood_from_log_sigma(
        x, o["mean"], o["log_sigma"]),
    expected_value_fn=lambda o: o["mean"],
    sample_fn=lambda k, o, s: _gaussian_sample(k, o, jnp.exp(o["log_sigma"])))

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
            support="real", uses_sigma=False, outputs=_shared_sigma_outputs,
            **_LEARNED_SIGMA),
        Head(
            name="gaussian_per_pixel",
            loss="sum_i log sigma_i + (x_i - mu_i)^2 / (2 sigma_i^2), sigma_i(z) learned",
            support="real", uses_sigma=False, outputs=_per_pixel_sigma_outputs,
            **_LEARNED_SIGMA),
        Head(
            # sigma* = sqrt(batch MSE): the sigma-VAE choice; it depends on the whole batch,
            # so x ~ p(x|z) of one example is undefined and the head has no sampler.
            name="gaussian_optimal", loss="D/2 log(2 pi e MSE)", support="real",
            uses_sigma=False, outputs=_mean_outputs,
            log_likelihood_fn=lambda x, o, s: likelihoods.gaussian_log_likelihood_optimal_sigma(
                x, o["mean"], axis="batch"),
            expected_value_fn=lambda o: o["mean"]),
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


def log_likelihood(name: str, x: jax.Array, outputs: Outputs, *, sigma: Any = None) -> jax.Array:
    """``get(name).log_likelihood(x, outputs, sigma=sigma)``: [B] nats per example."""
    return get(name).log_likelihood(x, outputs, sigma=sigma)
