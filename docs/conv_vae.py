"""Using vaejax's losses in your own model: a convolutional VAE on [B, 8, 8, 1] digit images.

The same small model is written twice, in ``flax.nnx`` and in ``flax.linen``; both train
with ``optax`` on the bundled digits (scikit-learn's 8x8 digits, grey levels / 16) and
use only vaejax's public functions for the maths:

* the reconstruction term is a vaejax log-likelihood with ``event_ndims=3``: one value
  per image, summed over height, width and channel (left out, vaejax refuses [B, H, W, C]
  data instead of silently summing the channel axis only);
* ``vj.elbo`` draws the L latent samples as a vmapped axis and adds the analytic KL;
* ``vj.iwae_bound`` evaluates the trained model with K importance samples.

Three heads, each a normalised likelihood of the data it is given: ``gaussian`` (fixed
sigma) and ``continuous_bernoulli`` on the grey levels, ``bernoulli`` on the digits
binarised at 1/2 (on grey levels a Bernoulli is no density: vaejax warns).

    python docs/conv_vae.py                 # both frameworks, every head, 300 steps each
    python docs/conv_vae.py --steps 2000

``tests/test_docs_conv_vae.py`` trains each version and checks what is printed here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx

import vaejax as vj

HEADS = ("gaussian", "continuous_bernoulli", "bernoulli")
SIGMA = 0.1  # the fixed decoder sigma of the Gaussian head
LATENT = 4


def load_digit_images(head: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train [1497, 8, 8, 1], test [300, 8, 8, 1]) float32 digits in [0, 1] for ``head``."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)[..., None] / 16.0
    if head == "bernoulli":
        images = (images > 0.5).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[300:]], images[order[:300]]


def log_likelihood(head: str, x: jax.Array, output: jax.Array) -> jax.Array:
    """log p(x | z) per image, [B], from the decoder output (a mean or logits) [B, 8, 8, 1]."""
    if head == "gaussian":
        return vj.gaussian_log_likelihood(x, output, SIGMA, event_ndims=3)
    if head == "continuous_bernoulli":
        return vj.continuous_bernoulli_log_likelihood(x, output, event_ndims=3)
    if head == "bernoulli":
        return vj.bernoulli_log_likelihood(x, output, event_ndims=3)
    raise ValueError(f"head must be one of {HEADS}, got {head!r}.")


def decoder_output(head: str, raw: jax.Array) -> jax.Array:
    """The Gaussian head reads a mean in (0, 1); the Bernoulli family reads logits."""
    return jax.nn.sigmoid(raw) if head == "gaussian" else raw


# --------------------------------------------------------------------------- flax.nnx


class NnxConvVAE(nnx.Module):
    """x [B, 8, 8, 1] -> q(z|x) = N(mean, diag exp(log_var)); z [B, Z] -> output [B, 8, 8, 1]."""

    def __init__(self, latent: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)  # -> [B, 4, 4, 32]
        self.posterior = nnx.Linear(4 * 4 * 32, 2 * latent, rngs=rngs)
        self.expand = nnx.Linear(latent, 4 * 4 * 32, rngs=rngs)
        self.deconv = nnx.ConvTranspose(32, 16, (3, 3), strides=(2, 2), rngs=rngs)
        self.out = nnx.Conv(16, 1, (3, 3), rngs=rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
        mean, log_var = jnp.split(self.posterior(h.reshape(h.shape[0], -1)), 2, axis=-1)
        return mean, log_var

    def decode(self, z: jax.Array) -> jax.Array:
        h = nnx.relu(self.expand(z)).reshape(z.shape[0], 4, 4, 32)
        return self.out(nnx.relu(self.deconv(h)))


# --------------------------------------------------------------------------- flax.linen


class LinenConvVAE(nn.Module):
    """The same network in linen: ``apply(..., method="encode" | "decode")``."""

    latent: int

    def setup(self):
        self.conv1 = nn.Conv(16, (3, 3))
        self.conv2 = nn.Conv(32, (3, 3), strides=(2, 2))
        self.posterior = nn.Dense(2 * self.latent)
        self.expand = nn.Dense(4 * 4 * 32)
        self.deconv = nn.ConvTranspose(16, (3, 3), strides=(2, 2))
        self.out = nn.Conv(1, (3, 3))

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(self.conv2(nn.relu(self.conv1(x))))
        mean, log_var = jnp.split(self.posterior(h.reshape(h.shape[0], -1)), 2, axis=-1)
        return mean, log_var

    def decode(self, z: jax.Array) -> jax.Array:
        h = nn.relu(self.expand(z)).reshape(z.shape[0], 4, 4, 32)
        return self.out(nn.relu(self.deconv(h)))

    def __call__(self, x: jax.Array) -> jax.Array:  # used once, to create the parameters
        return self.decode(self.encode(x)[0])


# --------------------------------------------------------------------------- the maths


def negative_elbo(encode: Callable, decode: Callable, head: str, x: jax.Array, key: jax.Array,
                  num_samples: int = 1) -> jax.Array:
    """Batch mean of -ELBO in nats per image; ``encode``/``decode`` are the model's methods."""
    mean, log_var = encode(x)
    terms = vj.elbo(key, mean, log_var,
                    lambda z: log_likelihood(head, x, decoder_output(head, decode(z))),
                    num_samples=num_samples)
    return -jnp.mean(terms.elbo)


def evaluation_bounds(encode: Callable, decode: Callable, head: str, x: jax.Array,
                      key: jax.Array,
                      num_samples: int = 64) -> tuple[jax.Array, jax.Array]:
    """(ELBO [B], IWAE bound [B]) in nats per image, K = L = ``num_samples``; jit it."""
    mean, log_var = encode(x)

    def log_lik(z):  # z [B, Z] -> [B]
        return log_likelihood(head, x, decoder_output(head, decode(z)))

    return (vj.elbo(key, mean, log_var, log_lik, num_samples=num_samples).elbo,
            vj.iwae_bound(key, mean, log_var, log_lik, num_samples=num_samples))


def summarise(elbo: jax.Array, iwae: jax.Array) -> dict[str, float]:
    return {"elbo": float(jnp.mean(elbo)), "iwae": float(jnp.mean(iwae)),
            "iwae_minus_elbo_min": float(jnp.min(iwae - elbo))}


@dataclasses.dataclass
class Result:
    framework: str
    head: str
    steps: int
    initial: dict[str, float]  # test bounds before training
    final: dict[str, float]  # test bounds after training
    losses: list[float]  # training -ELBO every 50 steps


def _batches(train: np.ndarray, batch_size: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield jnp.asarray(train[rng.integers(0, len(train), batch_size)])


def train_nnx(head: str, steps: int = 300, *, seed: int = 0, batch_size: int = 64,
              learning_rate: float = 3e-3) -> Result:
    train, test = load_digit_images(head, seed)
    model = NnxConvVAE(LATENT, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, key):
        loss, grads = nnx.value_and_grad(
            lambda m: negative_elbo(m.encode, m.decode, head, x, key))(model)
        optimizer.update(model, grads)
        return loss

    evaluate = nnx.jit(lambda m, x, key: evaluation_bounds(m.encode, m.decode, head, x, key))
    x_test, key_test = jnp.asarray(test), jax.random.key(seed + 1)

    initial, losses = summarise(*evaluate(model, x_test, key_test)), []
    keys = jax.random.split(jax.random.key(seed + 2), steps)
    for i, x in enumerate(_batches(train, batch_size, steps, seed)):
        loss = step(model, optimizer, x, keys[i])
        if i % 50 == 0 or i == steps - 1:
            losses.append(float(loss))
    return Result("nnx", head, steps, initial, summarise(*evaluate(model, x_test, key_test)),
                  losses)


def train_linen(head: str, steps: int = 300, *, seed: int = 0, batch_size: int = 64,
                learning_rate: float = 3e-3) -> Result:
    train, test = load_digit_images(head, seed)
    model = LinenConvVAE(LATENT)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))
    tx = optax.adam(learning_rate)
    opt_state = tx.init(params)

    def methods(p):
        return (lambda x: model.apply(p, x, method="encode"),
                lambda z: model.apply(p, z, method="decode"))

    @jax.jit
    def step(params, opt_state, x, key):
        loss, grads = jax.value_and_grad(
            lambda p: negative_elbo(*methods(p), head, x, key))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    evaluate = jax.jit(lambda p, x, key: evaluation_bounds(*methods(p), head, x, key))
    x_test, key_test = jnp.asarray(test), jax.random.key(seed + 1)

    initial, losses = summarise(*evaluate(params, x_test, key_test)), []
    keys = jax.random.split(jax.random.key(seed + 2), steps)
    for i, x in enumerate(_batches(train, batch_size, steps, seed)):
        params, opt_state, loss = step(params, opt_state, x, keys[i])
        if i % 50 == 0 or i == steps - 1:
            losses.append(float(loss))
    return Result("linen", head, steps, initial,
                  summarise(*evaluate(params, x_test, key_test)), losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    args = parser.parse_args()
    print("| framework | head | steps | test ELBO before | test ELBO after | IWAE K=64 after |")
    print("|---|---|---|---|---|---|")
    for train_fn in (train_nnx, train_linen):
        for head in args.heads:
            r = train_fn(head, args.steps)
            print(f"| {r.framework} | {r.head} | {r.steps} | {r.initial['elbo']:.2f} | "
                  f"{r.final['elbo']:.2f} | {r.final['iwae']:.2f} |")


if __name__ == "__main__":
    main()
