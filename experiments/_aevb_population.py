"""Population training for the AEVB reproduction: AEVB or wake-sleep members in one jitted step.

The members of one :class:`Population` share the network shapes and the minibatches and
are trained by ONE ``jax.vmap``-ed step inside a ``lax.fori_loop``. They differ in

* latent size: every member is padded to the largest latent size Z_max of its population
  and masked. A member of latent size Z starts as an ordinary Z-latent VAE whose weights
  are embedded in the Z_max-shaped arrays with zeros elsewhere (:func:`pad_params`); in
  the masked dimensions the encoder output is forced to the prior (mean 0, log-variance
  0, so their KL is exactly 0), the decoder sees z = 0, and the sleep phase's log q leaves
  them out. Those weights then get an exactly-zero gradient and stay zero, so the padded
  member IS the Z-latent model: same loss, same gradients (``tests/test_exp_aevb.py``);
* Adagrad step size (the paper picks it from {0.01, 0.02, 0.1} by the training-set bound
  after the first iterations: :func:`train_population` runs the candidates one after
  another for those iterations, through the same compiled program, and each member goes
  on from its best candidate);
* training-set size (figure 3): member m draws its minibatches from ``train[:num_train[m]]``.

Minibatches are M examples drawn uniformly at random from the member's training set
(shared draws across members: same-size members see the same examples), transformed on
the fly: dynamic binarisation (Bernoulli(x), for the MNIST analogue) or dequantisation
(x = (k + u) / levels for grey level k, u ~ U[0, 1): a density on quantised pixels).
The reported bounds use one fixed transformed copy of the train and test sets.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vaejax import sharding
from vaejax.elbo import elbo, iwae_bound
from vaejax.kl import kl_standard_normal
from vaejax.models import VAE, decoder_log_likelihood
from vaejax.train import make_optimizer, squared_norm
from vaejax.wake_sleep import WakeSleepNoise, wake_sleep_terms

METHODS = ("aevb", "wake_sleep")
METHOD_LABELS = {"aevb": "AEVB", "wake_sleep": "wake-sleep"}
TRANSFORMS = (None, "binarize", "dequantize")
LIKELIHOODS = ("bernoulli", "gaussian_per_pixel")


@struct.dataclass
class Members:
    """Per-member settings, each [P]."""

    latent: jax.Array  # [P] int32 latent dimensions in use (<= Z_max)
    learning_rate: jax.Array  # [P] Adagrad global step size
    num_train: jax.Array  # [P] int32: member m trains on train[:num_train[m]]
    weight_decay: jax.Array  # [P] coefficient of 0.5 ||theta||^2 (1/num_train: N(0, I) prior)
    stream: jax.Array  # [P] int32: the member's random stream (its latent noise)


@struct.dataclass
class State:
    """Stacked parameters and Adagrad states; leaves have a leading [P] axis."""

    params: Any
    opt_state: Any


@dataclass(frozen=True)
class PanelData:
    """One data set as device arrays.

    Attributes:
      train: [N, D] training images as loaded (grey levels or binary), transformed per batch.
      train_eval: [N, D] one fixed transformed copy of ``train`` (the train bound uses it).
      test_eval: [N_test, D] one fixed transformed copy of the test set.
    """

    train: jax.Array
    train_eval: jax.Array
    test_eval: jax.Array


def latent_mask(latent: jax.typing.ArrayLike, max_latent: int) -> jax.Array:
    """[..., Z_max] float32: 1 for the first ``latent`` dimensions, 0 for the padding."""
    return (jnp.arange(max_latent) < jnp.asarray(latent)[..., None]).astype(jnp.float32)


def pad_params(params: Any, template: Any) -> Any:
    """Embeds a smaller model's parameters in the shapes of ``template``, zeros elsewhere.

    Only the latent axes differ between a Z-latent and a Z_max-latent VAE (the encoder's
    mean/log_var outputs and the decoder's first layer inputs), and the used dimensions
    come first.
    """

    def pad(small, big):
        if small.ndim != big.ndim or any(s > b for s, b in zip(small.shape, big.shape,
                                                               strict=True)):
            raise ValueError(f"cannot pad a parameter of shape {small.shape} to {big.shape}.")
        return jnp.pad(small, [(0, b - s) for s, b in zip(small.shape, big.shape, strict=True)])

    return jax.tree.map(pad, params, template)


def transform_batch(key: jax.Array, x: jax.Array, transform: str | None,
                    levels: int) -> jax.Array:
    """Per-batch data transform: Bernoulli(x) draws, or dequantised grey levels, or x."""
    if transform is None:
        return x
    u = jax.random.uniform(key, x.shape, x.dtype)
    if transform == "binarize":
        return (u < x).astype(x.dtype)
    # Grey level k = x (levels - 1) in {0, .., levels - 1}; (k + u)/levels fills [0, 1).
    return (jnp.round(x * (levels - 1)) + u) / levels


@dataclass(frozen=True)
class Population:
    """The pure functions of one population (jitted once by the caller).

    Attributes:
      model: the VAE at the population's largest latent size Z_max.
      method: "aevb" or "wake_sleep".
      batch_size: M.
      transform: None, "binarize" or "dequantize" (applied to each minibatch).
      levels: grey levels of the data (dequantisation).
      optimizer: name for :func:`vaejax.train.make_optimizer` (the paper: "adagrad").
      seed: seeds the minibatch draws, the member streams and the initial weights.
    """

    model: VAE
    method: str
    batch_size: int
    transform: str | None = None
    levels: int = 256
    optimizer: str = "adagrad"
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; expected one of {METHODS}.")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Unknown transform {self.transform!r}; expected one of "
                             f"{TRANSFORMS}.")
        if self.model.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood {self.model.likelihood!r} is not supported here; "
                             f"expected one of {LIKELIHOODS}.")

    @property
    def max_latent(self) -> int:
        return self.model.latent

    # ------------------------------------------------------------------ one member
    def encode(self, params, x: jax.Array, mask: jax.Array):
        """q(z|x) of a masked member: (mean, log_var) [B, Z_max], prior in padded dims."""
        mean, log_var = self.model.apply(params, x, method=VAE.encode)
        return mean * mask, log_var * mask

    def decode(self, params, z: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
        """Decoder outputs for z with the padded dimensions set to 0."""
        return self.model.apply(params, z * mask, method=VAE.decode)

    def log_likelihood_fn(self, params, x: jax.Array, mask: jax.Array):
        likelihood = self.model.likelihood
        return lambda z: decoder_log_likelihood(likelihood, x, self.decode(params, z, mask))

    def aevb_loss(self, params, x, eps, mask, weight_decay):
        """AEVB's SGVB estimator B (eq. 7, L = 1) with given eps [B, Z_max]; (loss, bound)."""
        mean, log_var = self.encode(params, x, mask)
        z = mean + jnp.exp(0.5 * log_var) * eps
        recon = self.log_likelihood_fn(params, x, mask)(z)
        bound = jnp.mean(recon - kl_standard_normal(mean, log_var))
        return -bound + 0.5 * weight_decay * squared_norm(params), bound

    def wake_sleep_loss(self, params, x, noise: WakeSleepNoise, mask, weight_decay):
        """-(wake + sleep objectives) + prior; aux: the mean wake log p(x, z)."""
        terms = wake_sleep_terms(
            noise, x, lambda v: self.encode(params, v, mask),
            lambda z: self.decode(params, z, mask), self.model.likelihood, latent_mask=mask)
        return terms.loss() + 0.5 * weight_decay * squared_norm(params), jnp.mean(terms.wake)

    def draw_noise(self, key: jax.Array):
        """A member's latent noise for one step, as wide as Z_max."""
        shape = (self.batch_size, self.max_latent)
        if self.method == "aevb":
            return jax.random.normal(key, shape)
        wake_key, dream_key, x_key = jax.random.split(key, 3)
        return WakeSleepNoise(wake=jax.random.normal(wake_key, shape),
                              dream=jax.random.normal(dream_key, shape), dream_key=x_key)

    def member_loss(self, params, x, noise, mask, weight_decay):
        loss_fn = self.aevb_loss if self.method == "aevb" else self.wake_sleep_loss
        return loss_fn(params, x, noise, mask, weight_decay)

    def batch(self, step: jax.Array, train: jax.Array, num_train: jax.Array) -> jax.Array:
        """Minibatch of step t: M uniform draws from train[:num_train], transformed."""
        key = jax.random.fold_in(jax.random.key(self.seed), step)
        u = jax.random.uniform(jax.random.fold_in(key, 0), (self.batch_size,))
        index = jnp.minimum((u * num_train).astype(jnp.int32), num_train - 1)
        return transform_batch(jax.random.fold_in(key, 1), train[index], self.transform,
                               self.levels)

    def member_step(self, params, opt_state, member: Members, step, train):
        mask = latent_mask(member.latent, self.max_latent)
        stream = jax.random.fold_in(jax.random.key(self.seed + 1), member.stream)
        noise = self.draw_noise(jax.random.fold_in(stream, step))
        x = self.batch(step, train, member.num_train)
        grads, bound = jax.grad(self.member_loss, has_aux=True)(
            params, x, noise, mask, member.weight_decay)
        tx = make_optimizer(self.optimizer)(0.0)  # the step size lives in opt_state
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, bound

    # ------------------------------------------------------------------ population
    def init(self, members: Members) -> State:
        """Every member starts as a Z-latent VAE with i.i.d. N(0, init_scale^2) weights.

        The Z_max-shaped weights are drawn and the padding zeroed (:func:`zero_padding`),
        so the used weights have the distribution of a Z-latent model's. They depend on the
        latent size and the seed only: members that differ in step size, training-set size
        or method start from the same weights. With ``init_scale`` set (AEVB's N(0, 0.01^2))
        the draws are made with numpy on the host (``model.init`` costs seconds of XLA
        compilation per population on a CPU); with None, by the model's jitted ``init``.
        """
        latent_axes = padding_axes(self.model)
        stacked = [jax.tree.map(np.asarray, self.initial_params(int(z), latent_axes))
                   for z in np.asarray(members.latent)]
        params = jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *stacked)
        # The optimiser state of a fresh member does not depend on its weights' values.
        single = make_optimizer(self.optimizer)(0.0).init(stacked[0])
        opt_state = jax.tree.map(
            lambda leaf: jnp.asarray(np.broadcast_to(np.asarray(leaf),
                                                     (len(stacked), *np.shape(leaf)))), single)
        return State(params=params, opt_state=with_learning_rate(opt_state,
                                                                 members.learning_rate))

    def initial_params(self, latent: int, latent_axes: Any = None) -> Any:
        """One member's initial parameters at the Z_max shapes, padding zeroed."""
        latent_axes = padding_axes(self.model) if latent_axes is None else latent_axes
        dummy = jnp.zeros((1, self.model.output_dim), jnp.float32)
        if self.model.init_scale is None:
            key = jax.random.fold_in(jax.random.key(self.seed + 2), latent)
            params = jax.jit(self.model.init)(key, dummy, key)
        else:
            # Every parameter of the supported models is a Dense kernel or bias, and
            # vaejax.models draws both from N(0, init_scale^2) when init_scale is set.
            shapes = jax.eval_shape(lambda: self.model.init(jax.random.key(0), dummy,
                                                            jax.random.key(0)))
            rng = np.random.default_rng([self.seed, latent])
            params = jax.tree.map(lambda leaf: rng.normal(0.0, self.model.init_scale,
                                                          leaf.shape).astype(np.float32),
                                  shapes)
        return zero_padding(params, latent, latent_axes)

    def train(self, state: State, members: Members, train: jax.Array, start: jax.Array,
              stop: jax.Array) -> tuple[State, jax.Array]:
        """Steps start..stop-1 of every member in one ``fori_loop``.

        Returns:
          (new state, [P] mean minibatch objective over the steps: ELBO for AEVB, the wake
          log p(x, z) for wake-sleep).
        """
        step_all = jax.vmap(self.member_step, in_axes=(0, 0, 0, None, None))

        def body(step, carry):
            params, opt_state, total = carry
            params, opt_state, bound = step_all(params, opt_state, members, step, train)
            return params, opt_state, total + bound

        init = (state.params, state.opt_state, jnp.zeros(members.latent.shape, jnp.float32))
        params, opt_state, total = jax.lax.fori_loop(start, stop, body, init)
        return State(params, opt_state), total / jnp.maximum(stop - start, 1)

    def advance(self, state: State, members: Members, train: jax.Array, start: jax.Array,
                stop: jax.Array, eval_x: jax.Array, eval_key: jax.Array, *,
                eval_chunk: int = 1000) -> tuple[State, jax.Array, jax.Array]:
        """Trains steps start..stop-1, then evaluates: ONE program (jit once, donate state).

        Returns:
          (new state, [P] mean minibatch objective, [P, N] ELBO of every member on every
          row of ``eval_x`` (L = 1, the same draws for every member)).
        """
        state, objective = self.train(state, members, train, start, stop)
        return state, objective, self.elbo_per_example(state, members, eval_x, eval_key,
                                                       chunk=eval_chunk)

    def member_elbo(self, params, member: Members, x: jax.Array, key: jax.Array,
                    chunk: int) -> jax.Array:
        """ELBO (L = 1, analytic KL) of one member on each row of x [N, D]: [N]."""
        mask = latent_mask(member.latent, self.max_latent)
        num = x.shape[0]
        chunk = min(chunk, num)
        chunks = -(-num // chunk)
        padded = jnp.pad(x, ((0, chunks * chunk - num), (0, 0)))

        def one_chunk(args):
            index, xs = args
            mean, log_var = self.encode(params, xs, mask)
            terms = elbo(jax.random.fold_in(key, index), mean, log_var,
                         self.log_likelihood_fn(params, xs, mask))
            return terms.elbo

        values = jax.lax.map(one_chunk, (jnp.arange(chunks), padded.reshape(chunks, chunk, -1)))
        return values.reshape(-1)[:num]

    def elbo_per_example(self, state: State, members: Members, x: jax.Array, key: jax.Array,
                         *, chunk: int = 1000) -> jax.Array:
        """[P, N] ELBO of every member on every row of x."""
        return jax.vmap(self.member_elbo, in_axes=(0, 0, None, None, None))(
            state.params, members, x, key, chunk)

    def iwae(self, state: State, members: Members, x: jax.Array, key: jax.Array, *,
             num_samples: int, chunk_size: int) -> jax.Array:
        """[P, N] IWAE estimate of log p(x) per example (K samples in chunks)."""

        def member(params, member):
            mask = latent_mask(member.latent, self.max_latent)
            mean, log_var = self.encode(params, x, mask)
            return iwae_bound(key, mean, log_var, self.log_likelihood_fn(params, x, mask),
                              num_samples=num_samples, chunk_size=chunk_size)

        return jax.vmap(member)(state.params, members)

    def expected_pixels(self, params, member: Members, z: jax.Array) -> jax.Array:
        """E[x|z] [N, D] of one member for z [N, Z_max] (padded dims ignored)."""
        outputs = self.decode(params, z, latent_mask(member.latent, self.max_latent))
        if "mean" in outputs:
            return outputs["mean"]
        return jax.nn.sigmoid(outputs["logits"])


def padding_axes(model: VAE) -> Any:
    """For each parameter, the axes whose length is the latent size (a pytree of tuples)."""
    dummy = jnp.zeros((1, model.output_dim), jnp.float32)

    def shapes(latent):
        bigger = dataclasses.replace(model, latent=latent)
        return jax.eval_shape(lambda: bigger.init(jax.random.key(0), dummy, jax.random.key(0)))

    return jax.tree.map(
        lambda a, b: tuple(i for i, (m, n) in enumerate(zip(a.shape, b.shape, strict=True))
                           if m != n),
        shapes(model.latent), shapes(model.latent + 1))


def zero_padding(params: Any, latent: int, axes: Any) -> Any:
    """Zeroes the weights of the latent dimensions >= ``latent`` (see :func:`padding_axes`)."""

    def zero(leaf, leaf_axes):
        leaf = np.array(leaf)
        for axis in leaf_axes:
            index = [slice(None)] * leaf.ndim
            index[axis] = slice(latent, None)
            leaf[tuple(index)] = 0.0
        return leaf

    return jax.tree.map(zero, params, axes, is_leaf=lambda x: isinstance(x, tuple))


def with_learning_rate(opt_state: Any, learning_rate: jax.typing.ArrayLike) -> Any:
    """The optimiser state (from :func:`vaejax.train.make_optimizer`) with a new step size."""
    hyperparams = dict(opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(np.asarray(learning_rate, np.float32).reshape(
        np.shape(hyperparams["learning_rate"])))
    return opt_state._replace(hyperparams=hyperparams)


def gather(tree: Any, index: Sequence[int]) -> Any:
    """Members ``index`` of a stacked [P, ...] pytree."""
    index = jnp.asarray(np.asarray(index, np.int32))
    return jax.tree.map(lambda leaf: leaf[index], tree)


def make_members(arms: Sequence[tuple[int, int]], learning_rate: float, *,
                 parameter_prior: bool = True) -> Members:
    """One member per (latent, num_train) arm, all with one step size."""
    latent = np.asarray([a[0] for a in arms], np.int32)
    num_train = np.asarray([a[1] for a in arms], np.int32)
    decay = 1.0 / num_train if parameter_prior else np.zeros(len(arms))
    return Members(latent=jnp.asarray(latent), learning_rate=jnp.full(len(arms), learning_rate,
                                                                     jnp.float32),
                   num_train=jnp.asarray(num_train),
                   weight_decay=jnp.asarray(decay, jnp.float32),
                   stream=jnp.arange(len(arms), dtype=jnp.int32))


def select_step_sizes(train_bounds: np.ndarray) -> np.ndarray:
    """[S, P] training bounds of S step sizes -> [P] index of the best step size per arm."""
    score = np.where(np.isfinite(train_bounds), train_bounds, -np.inf)
    if not np.isfinite(score).any(axis=0).all():
        arm = int(np.flatnonzero(~np.isfinite(score).any(axis=0))[0])
        raise FloatingPointError(f"every step size diverged for arm {arm} (training bounds "
                                 f"{train_bounds[:, arm].tolist()}).")
    return np.argmax(score, axis=0)


def eval_schedule(first_step: int, total_steps: int, num_points: int,
                  must_include: Sequence[int] = ()) -> list[int]:
    """Log-spaced evaluation steps in [first_step, total_steps], with ``must_include``."""
    if not 1 <= first_step <= total_steps:
        raise ValueError(f"need 1 <= first_step <= total_steps, got {first_step}, "
                         f"{total_steps}.")
    grid = np.round(np.logspace(math.log10(first_step), math.log10(total_steps),
                                max(num_points, 2))).astype(int)
    return sorted(set(grid.tolist()) | {int(s) for s in must_include if s <= total_steps})


def put_examples(x: jax.Array) -> jax.Array:
    """x [N, D] split over the devices along N (padded by repeating rows when needed).

    With one device this is x itself. Callers keep the first N results.
    """
    count = jax.device_count()
    num = x.shape[0]
    if count == 1:
        return x
    padded = -(-num // count) * count
    x = jnp.concatenate([x, x[: padded - num]]) if padded > num else x
    return jax.device_put(x, NamedSharding(sharding.make_mesh(), P(sharding.AXIS)))


HISTORY_COLUMNS = ("step", "arm", "latent", "num_train", "learning_rate", "selected",
                   "train_bound", "test_bound", "train_iwae", "test_iwae")


@dataclass
class History:
    """Evaluation rows of a training run (see :data:`HISTORY_COLUMNS`) and its cost."""

    rows: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0  # training steps and bound evaluations (compilation included)
    iwae_seconds: float = 0.0
    member_steps: int = 0


def train_population(pop: Population, arms: Sequence[tuple[int, int]],
                     learning_rates: Sequence[float], data: PanelData, *, total_steps: int,
                     select_steps: int, eval_steps: Sequence[int], parameter_prior: bool = True,
                     eval_chunk: int = 1000, iwae: dict | None = None, label: str = "",
                     progress: bool = True) -> tuple[State, Members, History]:
    """Trains one member per arm; picks each arm's step size at ``select_steps``; goes on.

    The step-size candidates run one after another for the first ``select_steps`` steps,
    each as the same population of one member per arm (so the program compiles once);
    each arm then continues from its candidate with the best training bound.

    Args:
      pop: the population's functions.
      arms: (latent, num_train) of each member.
      learning_rates: the Adagrad step sizes to choose from (one: no selection).
      data: the data set.
      total_steps: steps of every kept member.
      select_steps: the step-size selection happens after this many steps.
      eval_steps: steps at which the train and test bounds of every member are measured.
      parameter_prior: weight decay 1/num_train (AEVB's N(0, I) prior on the parameters).
      eval_chunk: examples per chunk of the bound evaluation.
      iwae: optional ``{"steps", "num_samples", "chunk_size", "num_examples"}``: the IWAE
        estimate of log p(x) on the first ``num_examples`` train (inside every member's own
        training set) and test examples at ``steps``.
      label: progress-bar label.
      progress: show a tqdm bar.

    Returns:
      (final state, members, History). The train bound of a member averages over its own
      training set (the first ``num_train`` rows of ``data.train_eval``).
    """
    from tqdm import tqdm

    history = History()
    advance = jax.jit(pop.advance, donate_argnums=(0,), static_argnames=("eval_chunk",))
    iwae_fn = None
    if iwae:
        iwae_fn = jax.jit(pop.iwae, static_argnames=("num_samples", "chunk_size"))
        num_iwae = min(iwae["num_examples"], data.test_eval.shape[0],
                       min(n for _, n in arms))
        iwae_x = put_examples(jnp.concatenate([data.train_eval[:num_iwae],
                                               data.test_eval[:num_iwae]]))
    num_train_eval = int(data.train_eval.shape[0])
    eval_x = jnp.concatenate([data.train_eval, data.test_eval])
    eval_key = jax.random.key(pop.seed + 3)
    learning_rates = [float(lr) for lr in learning_rates]
    if len(learning_rates) == 1:
        select_steps = 0
    steps = sorted({s for s in eval_steps if 0 < s <= total_steps} | {total_steps}
                   | ({select_steps} if select_steps else set()))

    def run(state, members, start, targets, bar):
        rows = []
        host = jax.tree.map(np.asarray, members)
        own = np.minimum(host.num_train, num_train_eval)
        train_bound = test_bound = None
        for target in targets:
            tic = time.perf_counter()
            state, objective, per_example = advance(
                state, members, data.train, jnp.int32(start), jnp.int32(target), eval_x,
                eval_key, eval_chunk=eval_chunk)
            per_example = np.asarray(per_example)  # waits for the steps
            history.train_seconds += time.perf_counter() - tic
            history.member_steps += (target - start) * len(own)
            start = target
            train_bound = np.array([per_example[m, :own[m]].mean() for m in range(len(own))])
            test_bound = per_example[:, num_train_eval:].mean(axis=1)
            train_iwae = test_iwae = np.full(len(own), np.nan)
            if iwae_fn is not None and target in iwae["steps"]:
                tic = time.perf_counter()
                values = np.asarray(iwae_fn(state, members, iwae_x, eval_key,
                                            num_samples=iwae["num_samples"],
                                            chunk_size=iwae["chunk_size"]))
                history.iwae_seconds += time.perf_counter() - tic
                train_iwae = values[:, :num_iwae].mean(axis=1)
                test_iwae = values[:, num_iwae:2 * num_iwae].mean(axis=1)
            rows += [[target, m, int(host.latent[m]), int(host.num_train[m]),
                      float(host.learning_rate[m]), 1, float(train_bound[m]),
                      float(test_bound[m]), float(train_iwae[m]), float(test_iwae[m])]
                     for m in range(len(own))]
            bar.set_postfix(step=target, best_train=f"{np.nanmax(train_bound):.1f}",
                            objective=f"{np.nanmean(np.asarray(objective)):.1f}")
            bar.update()
        return state, rows, train_bound, test_bound

    before = [s for s in steps if select_steps and s <= select_steps]
    after = [s for s in steps if s not in before]
    bar = tqdm(total=len(before) * len(learning_rates) + len(after), desc=label or pop.method,
               unit="eval", disable=not progress, dynamic_ncols=True, leave=False)
    if select_steps:
        candidates, candidate_rows, bounds = [], [], []
        for lr in learning_rates:
            members = make_members(arms, lr, parameter_prior=parameter_prior)
            state, rows, train_bound, _ = run(pop.init(members), members, 0, before, bar)
            candidates.append(state)
            candidate_rows.append(rows)
            bounds.append(train_bound)
        choice = select_step_sizes(np.stack(bounds))
        for k, rows in enumerate(candidate_rows):
            for row in rows:
                row[5] = int(choice[row[1]] == k)
            history.rows += rows
        arm_index = jnp.arange(len(arms))
        state = jax.tree.map(lambda *leaves: jnp.stack(leaves)[jnp.asarray(choice), arm_index],
                             *candidates)
        members = make_members(arms, 0.0, parameter_prior=parameter_prior).replace(
            learning_rate=jnp.asarray([learning_rates[k] for k in choice], jnp.float32))
        start = select_steps
    else:
        members = make_members(arms, learning_rates[0], parameter_prior=parameter_prior)
        state, start = pop.init(members), 0
    state, rows, train_bound, test_bound = run(state, members, start, after, bar)
    history.rows += rows
    bar.close()
    bad = ~np.isfinite(train_bound) | ~np.isfinite(test_bound)
    if bad.any():
        m = int(np.flatnonzero(bad)[0])
        raise FloatingPointError(
            f"{pop.method}: the bound of the member with latent={arms[m][0]}, "
            f"num_train={arms[m][1]} became non-finite (step size "
            f"{float(members.learning_rate[m]):g}).")
    return state, members, history


def latent_groups(sizes: Sequence[int], pad_ratio: float) -> list[list[int]]:
    """Latent sizes grouped into populations: a group's largest <= pad_ratio x its smallest.

    Padding costs the compute of the largest size for every member, so a group of
    {2, ..., 20} shares one step while 200 trains in its own population (pad_ratio 10).
    """
    groups: list[list[int]] = []
    for size in sorted(set(int(s) for s in sizes)):
        if groups and size <= pad_ratio * groups[-1][0]:
            groups[-1].append(size)
        else:
            groups.append([size])
    return groups
