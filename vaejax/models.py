"""Flax linen encoders and decoders: the AEVB MLPs and one decoder head per likelihood.

Modules hold only architecture. Sampling (:func:`vaejax.elbo.reparameterize`) and
the losses (:mod:`vaejax.likelihoods`) are free functions; :func:`decoder_log_likelihood`
maps a decoder's output dictionary to log p(x|z) for its likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaejax import likelihoods
from vaejax.elbo import reparameterize

LIKELIHOODS = (
    "bernoulli",
    "continuous_bernoulli",
    "gaussian_fixed",
    "gaussian_shared",
    "gaussian_per_pixel",
    "gaussian_optimal",
)


def check_likelihood(name: str) -> str:
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; expected one of {', '.join(LIKELIHOODS)}.")
    return name


def weight_init(init_scale: float | None) -> Callable[..., jax.Array]:
    """N(0, init_scale^2) weights (AEVB's N(0, 0.01) read as std 0.01), or LeCun normal if None."""
    if init_scale is None:
        return nn.initializers.lecun_normal()
    return nn.initializers.normal(stddev=init_scale)


def bias_init(init_scale: float | None) -> Callable[..., jax.Array]:
    if init_scale is None:
        return nn.initializers.zeros_init()
    return nn.initializers.normal(stddev=init_scale)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mean(x), diag exp(log_var(x))) with one tanh hidden layer (AEVB appendix C).

    Attributes:
      hidden: hidden units (500 for MNIST, 200 for Frey Face in AEVB).
      latent: latent dimensions Z.
      init_scale: weight std (None for LeCun normal).
    """

    hidden: int
    latent: int
    init_scale: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, D] -> (mean [B, Z], log_var [B, Z])."""
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n, kernel_init=weight_init(self.init_scale), bias_init=bias_init(self.init_scale),
            name=name,
        )
        h = jnp.tanh(dense(self.hidden, "hidden")(x))
        return dense(self.latent, "mean")(h), dense(self.latent, "log_var")(h)


class Decoder(nn.Module):
    """p(x|z) network: one tanh hidden layer, then the head of the chosen likelihood.

    Heads (output dictionary keys):
      * ``bernoulli``, ``continuous_bernoulli``: ``logits`` [B, D].
      * ``gaussian_fixed``, ``gaussian_optimal``: ``mean`` [B, D] (sigma given / analytic).
      * ``gaussian_shared``: ``mean`` and one learned scalar ``log_sigma`` [].
      * ``gaussian_per_pixel``: ``mean`` and ``log_sigma`` [B, D] as a second output
        (AEVB appendix C.2).

    Attributes:
      hidden: hidden units.
      output_dim: D.
      likelihood: one of :data:`LIKELIHOODS`.
      sigmoid_mean: squash the Gaussian mean into (0, 1) (AEVB does for Frey Face).
      init_scale: weight std (None for LeCun normal).
      init_log_sigma: initial value of the shared log sigma.
    """

    hidden: int
    output_dim: int
    likelihood: str = "bernoulli"
    sigmoid_mean: bool = False
    init_scale: float | None = None
    init_log_sigma: float = 0.0

    @nn.compact
    def __call__(self, z: jax.Array) -> dict[str, jax.Array]:
        """z [B, Z] -> dict of decoder outputs, each [B, D] (``log_sigma`` [] when shared)."""
        check_likelihood(self.likelihood)
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n, kernel_init=weight_init(self.init_scale), bias_init=bias_init(self.init_scale),
            name=name,
        )
        h = jnp.tanh(dense(self.hidden, "hidden")(z))
        out = dense(self.output_dim, "out")(h)
        if self.likelihood in ("bernoulli", "continuous_bernoulli"):
            return {"logits": out}
        mean = nn.sigmoid(out) if self.sigmoid_mean else out
        outputs = {"mean": mean}
        if self.likelihood == "gaussian_shared":
            init = nn.initializers.constant(self.init_log_sigma)
            outputs["log_sigma"] = self.param("log_sigma", init, ())
        elif self.likelihood == "gaussian_per_pixel":
            outputs["log_sigma"] = dense(self.output_dim, "log_sigma")(h)
        return outputs


class VAE(nn.Module):
    """Encoder + decoder. ``__call__(x, key)`` returns (decoder outputs, {mu, logvar, z}).

    Attributes:
      hidden: hidden units of both networks.
      latent: Z.
      output_dim: D.
      likelihood: decoder head, see :class:`Decoder`.
      sigmoid_mean: sigmoid on the Gaussian mean.
      init_scale: weight std (None for LeCun normal).
      init_log_sigma: initial shared log sigma (``gaussian_shared``).
    """

    hidden: int
    latent: int
    output_dim: int
    likelihood: str = "bernoulli"
    sigmoid_mean: bool = False
    init_scale: float | None = None
    init_log_sigma: float = 0.0

    def setup(self):
        self.encoder = GaussianEncoder(self.hidden, self.latent, self.init_scale)
        self.decoder = Decoder(
            self.hidden, self.output_dim, self.likelihood, self.sigmoid_mean, self.init_scale,
            self.init_log_sigma,
        )

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[dict[str, jax.Array], dict]:
        """x [B, D], key -> (decoder outputs for one z sample, {mu, logvar, z} each [B, Z])."""
        mu, logvar = self.encoder(x)
        z = reparameterize(key, mu, logvar)
        return self.decoder(z), {"mu": mu, "logvar": logvar, "z": z}

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, D] -> (mean [B, Z], log_var [B, Z])."""
        return self.encoder(x)

    def decode(self, z: jax.Array) -> dict[str, jax.Array]:
        """z [B, Z] -> decoder outputs."""
        return self.decoder(z)


def decoder_log_likelihood(
    likelihood: str, x: jax.Array, outputs: dict[str, jax.Array], *, sigma: Any = None
) -> jax.Array:
    """log p(x|z) in nats per example for a decoder's ``outputs`` dictionary.

    Args:
      likelihood: one of :data:`LIKELIHOODS`.
      x: [B, D] data.
      outputs: the decoder's output dictionary for the same batch.
      sigma: the fixed decoder sigma (``gaussian_fixed`` only); scalar or broadcastable.

    Returns:
      [B] log-likelihood per example.
    """
    check_likelihood(likelihood)
    if likelihood == "bernoulli":
        return likelihoods.bernoulli_log_likelihood(x, outputs["logits"])
    if likelihood == "continuous_bernoulli":
        return likelihoods.continuous_bernoulli_log_likelihood(x, outputs["logits"])
    if likelihood == "gaussian_fixed":
        if sigma is None:
            raise ValueError("`sigma` is required for the 'gaussian_fixed' likelihood.")
        return likelihoods.gaussian_log_likelihood(x, outputs["mean"], sigma)
    if likelihood == "gaussian_optimal":
        return likelihoods.gaussian_log_likelihood_optimal_sigma(x, outputs["mean"], axis="batch")
    return likelihoods.gaussian_log_likelihood_from_log_sigma(
        x, outputs["mean"], outputs["log_sigma"]
    )
