"""Flax linen encoders and decoders: the AEVB MLPs, with the decoder head from the registry.

Modules hold only architecture. Sampling (:func:`vaejax.elbo.reparameterize`), the
losses (:mod:`vaejax.likelihoods`) and what each decoder output means
(:mod:`vaejax.heads`) are outside them: ``heads.get(model.likelihood)`` turns a
decoder's output dictionary into log p(x|z), E[x|z] or a sample.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaejax import heads
from vaejax.elbo import reparameterize


def weight_init(init_scale: float | None) -> Callable[..., jax.Array]:
    """N(0, init_scale^2) weights (AEVB's N(0, 0.01) read as std 0.01), or LeCun normal if None."""
    if init_scale is None:
        return nn.initializers.lecun_normal()
    return nn.initializers.normal(stddev=init_scale)


def bias_init(init_scale: float | None) -> Callable[..., jax.Array]:
    """N(0, init_scale^2) biases, or zeros if None."""
    if init_scale is None:
        return nn.initializers.zeros_init()
    return nn.initializers.normal(stddev=init_scale)


def _dense_factory(init_scale: float | None) -> Callable[[int, str], nn.Dense]:
    return lambda features, name: nn.Dense(features, kernel_init=weight_init(init_scale),
                                           bias_init=bias_init(init_scale), name=name)


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
        dense = _dense_factory(self.init_scale)
        h = jnp.tanh(dense(self.hidden, "hidden")(x))
        return dense(self.latent, "mean")(h), dense(self.latent, "log_var")(h)


class Decoder(nn.Module):
    """p(x|z) network: one tanh hidden layer, then the outputs of the likelihood head.

    The outputs are those of ``heads.get(likelihood)``: ``logits`` [B, D] (Bernoulli,
    continuous Bernoulli), ``mean`` [B, D] (Gaussians), plus ``log_sigma`` (a learned
    scalar for ``gaussian_shared``, [B, D] for ``gaussian_per_pixel``, AEVB appendix C.2).

    Attributes:
      hidden: hidden units.
      output_dim: D.
      likelihood: a head name of :data:`vaejax.heads.NAMES`.
      sigmoid_mean: squash the Gaussian mean into (0, 1) (AEVB does for Frey Face).
      init_scale: weight std (None for LeCun normal).
      init_log_sigma: initial value of the shared log sigma.
      min_sigma: floor of a learned scale (0: none).
      sigma_floor: "hard" (max) or "soft" (the sigma-VAE's softplus clip) floor.
      num_levels: k, grey levels of the data (discretised and categorical heads).
      num_mixtures: M, components of ``discretized_logistic_mixture``.
    """

    hidden: int
    output_dim: int
    likelihood: str = "bernoulli"
    sigmoid_mean: bool = False
    init_scale: float | None = None
    init_log_sigma: float = 0.0
    min_sigma: float = 0.0
    sigma_floor: str = "hard"
    num_levels: int = 17
    num_mixtures: int = 5

    @nn.compact
    def __call__(self, z: jax.Array) -> dict[str, jax.Array]:
        """z [B, Z] -> dict of decoder outputs, each [B, D] (``log_sigma`` [] when shared)."""
        head = heads.get(self.likelihood)
        dense = _dense_factory(self.init_scale)
        h = jnp.tanh(dense(self.hidden, "hidden")(z))
        options = heads.HeadOptions(output_dim=self.output_dim, sigmoid_mean=self.sigmoid_mean,
                                    init_log_sigma=self.init_log_sigma,
                                    min_sigma=self.min_sigma, sigma_floor=self.sigma_floor,
                                    num_levels=self.num_levels,
                                    num_mixtures=self.num_mixtures)
        return head.outputs(self, h, dense, options)


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
      min_sigma: floor of a learned decoder scale (0: none).
      sigma_floor: how ``min_sigma`` is applied, "hard" or "soft".
      num_levels: k, grey levels of the data (discretised and categorical heads).
      num_mixtures: M, components of ``discretized_logistic_mixture``.
    """

    hidden: int
    latent: int
    output_dim: int
    likelihood: str = "bernoulli"
    sigmoid_mean: bool = False
    init_scale: float | None = None
    init_log_sigma: float = 0.0
    min_sigma: float = 0.0
    sigma_floor: str = "hard"
    num_levels: int = 17
    num_mixtures: int = 5

    def setup(self):
        self.encoder = GaussianEncoder(self.hidden, self.latent, self.init_scale)
        self.decoder = Decoder(
            self.hidden, self.output_dim, self.likelihood, self.sigmoid_mean, self.init_scale,
            self.init_log_sigma, self.min_sigma, self.sigma_floor, self.num_levels,
            self.num_mixtures,
        )

    @property
    def head(self) -> heads.Head:
        """The decoder's likelihood head."""
        return heads.get(self.likelihood)

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
