"""The training engine: a population of P VAEs trained by one jitted, vmapped step.

A single model is a population of one. Members differ in their hyper-parameters
(:class:`Members`: decoder sigma, KL weight, learning rate, seed, latent size, training
subset, weight decay), their parameters and optimiser states are stacked along a
leading [P] axis, and one ``jax.vmap``-ed step trains them all on the same batches.

    trainer, members = trainer_lib.build(config, dataset)
    state = trainer.init(members)
    result = trainer_lib.fit(trainer, state, train_data, members, num_steps=...,
                             hooks=[...], checkpoints=Checkpointer(...))

:meth:`Trainer.run` advances every member from step ``start`` to ``stop`` inside one
``lax.fori_loop`` (one dispatch, one compilation for any range), and returns the block's
mean losses with the first non-finite step of each member; :func:`fit` cuts training
into blocks at the steps where hooks (evaluation, logging, measurement, early stop) or
checkpoints act, raises :class:`NonFiniteLossError` once, shows the progress bar once,
and resumes from the newest checkpoint. Learning-rate schedules are optax schedules
(``Trainer.decay_steps``), never edits of an optimiser state.

Randomness is a pure function of (seed, step): the batches of step t come from
``fold_in(key(data_seed), epoch)`` (a permutation per epoch, ``sampling="epochs"``) or
``fold_in(key(data_seed), t)`` (uniform draws with replacement, ``sampling="uniform"``),
member m's latent noise at step t from ``fold_in(key(seed_m), t)``. A resumed run, or
member m of a population, therefore reproduces an uninterrupted single run exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from vaejax import heads, sharding, wake_sleep
from vaejax.elbo import elbo, iwae_bound
from vaejax.models import VAE

TERMS = ("recon", "kl", "weight_decay", "loss")  # first_bad_term indexes this


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or inf. Names the member, its settings, the epoch and step.

    Attributes:
      member: index of the first member whose loss became non-finite.
      step: the global step (1-based) at which it did.
      term: which part of the loss was non-finite first (``recon``, ``kl``, ...).
    """

    def __init__(self, message: str, *, member: int, step: int, term: str):
        super().__init__(message)
        self.member, self.step, self.term = member, step, term


@struct.dataclass
class Members:
    """Per-member hyper-parameters, each [P]."""

    sigma: jax.Array  # [P] decoder sigma (heads with a fixed sigma)
    beta: jax.Array  # [P] KL weight
    learning_rate: jax.Array  # [P] base learning rate (times the schedule)
    seed: jax.Array  # [P] int32: initial weights and latent noise
    latent: jax.Array  # [P] int32: latent dimensions in use (<= the model's)
    num_train: jax.Array  # [P] int32: member m draws its batches from train[:num_train[m]]
    weight_decay: jax.Array  # [P] coefficient of 0.5 ||theta||^2 (AEVB prior: 1/N)
    tag: jax.Array  # [P] int32: free for a custom objective (which loss a member trains)

    @property
    def size(self) -> int:
        return int(self.seed.shape[0])


def make_members(*, latent: int, num_train: int, sigma: Any = 1.0, beta: Any = 1.0,
                 learning_rate: Any = 1e-3, seed: Any = 0, weight_decay: Any = 0.0,
                 tag: Any = 0, dtype=jnp.float32) -> Members:
    """Members from scalars or length-P sequences (length-1 and scalars broadcast).

    ``latent`` and ``num_train`` may be sequences too. Raises ValueError naming the field
    for lengths that disagree or values out of range.
    """
    columns = {"sigma": sigma, "beta": beta, "learning_rate": learning_rate, "seed": seed,
               "latent": latent, "num_train": num_train, "weight_decay": weight_decay,
               "tag": tag}
    arrays = {k: np.atleast_1d(np.asarray(v)) for k, v in columns.items()}
    size = max(a.shape[0] for a in arrays.values())
    for name, array in arrays.items():
        if array.ndim != 1 or array.shape[0] not in (1, size):
            raise ValueError(f"member field `{name}` must be a scalar or have length P={size}, "
                             f"got shape {array.shape}.")
        arrays[name] = np.broadcast_to(array, (size,))
    for name in ("sigma", "learning_rate"):
        if not np.all(np.isfinite(arrays[name]) & (arrays[name] > 0)):
            raise ValueError(f"member `{name}` must be finite and > 0, got "
                             f"{arrays[name].tolist()}.")
    for name in ("beta", "weight_decay"):
        if not np.all(np.isfinite(arrays[name]) & (arrays[name] >= 0)):
            raise ValueError(f"member `{name}` must be finite and >= 0, got "
                             f"{arrays[name].tolist()}.")
    if not np.all(arrays["num_train"] >= 1) or not np.all(arrays["latent"] >= 1):
        raise ValueError("member `latent` and `num_train` must be >= 1.")
    ints = {"seed", "latent", "num_train", "tag"}
    return Members(**{k: jnp.asarray(v, jnp.int32 if k in ints else dtype)
                      for k, v in arrays.items()})


@struct.dataclass
class TrainState:
    """Stacked training state of a population; every leaf has a leading [P] axis."""

    step: jax.Array  # [P] int32 optimisation steps taken
    params: Any  # pytree, leaves [P, ...]
    opt_state: Any  # pytree, leaves [P, ...]


@struct.dataclass
class StepMetrics:
    """One step's metrics, each [] per member ([P] for a population).

    For ``objective="elbo"``: ``recon`` = E_q log p(x|z) and ``kl`` = KL, batch means in
    nats. For ``"wake_sleep"``: ``recon`` = the wake log p(x, z), ``kl`` = the sleep
    log q(z_dream | x_dream).
    """

    loss: jax.Array  # the minimised loss, batch mean (+ weight decay)
    recon: jax.Array
    kl: jax.Array
    weight_decay: jax.Array  # the N(0, I) prior penalty term


@struct.dataclass
class BlockMetrics:
    """Metrics of the steps of one :meth:`Trainer.run` call, each [P]."""

    loss: jax.Array  # mean over the block's steps
    recon: jax.Array
    kl: jax.Array
    weight_decay: jax.Array
    first_bad_step: jax.Array  # int32 global step index (0-based) of the first NaN/inf loss, -1
    first_bad_term: jax.Array  # int32 index into TERMS of the first non-finite part


@struct.dataclass
class EvalMetrics:
    """Per-member evaluation metrics, each [P], in nats per example."""

    elbo: jax.Array
    recon: jax.Array
    kl: jax.Array
    iwae: jax.Array  # NaN when IWAE is disabled
    active_units: jax.Array  # int32: latent dims with Cov(E[z|x]) > 1e-2 (Burda et al.)


def squared_norm(tree) -> jax.Array:
    """Sum of squares of every leaf of a parameter tree (the N(0, I) prior's penalty)."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


def num_parameters(params) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def latent_mask(latent: jax.typing.ArrayLike, max_latent: int) -> jax.Array:
    """[..., Z_max] float32: 1 for the first ``latent`` dimensions, 0 for the padding."""
    return (jnp.arange(max_latent) < jnp.asarray(latent)[..., None]).astype(jnp.float32)


def latent_axes(model: VAE) -> Any:
    """For each parameter, the axes whose length is the latent size (a pytree of tuples)."""
    dummy = jnp.zeros((1, model.output_dim), jnp.float32)

    def shapes(latent):
        bigger = dataclasses.replace(model, latent=latent)
        return jax.eval_shape(lambda: bigger.init(jax.random.key(0), dummy, jax.random.key(0)))

    return jax.tree.map(
        lambda a, b: tuple(i for i, (m, n) in enumerate(zip(a.shape, b.shape, strict=True))
                           if m != n),
        shapes(model.latent), shapes(model.latent + 1))


ObjectiveFn = Callable[["Trainer", Any, jax.Array, jax.Array, Members], tuple[jax.Array,
                                                                               StepMetrics]]


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The pure functions of one training set-up; jitted once each (:attr:`jit`).

    Attributes:
      model: the VAE (its ``likelihood`` names the head in :mod:`vaejax.heads`).
      batch_size: M.
      objective: ``"elbo"`` (the beta-ELBO with L samples), ``"wake_sleep"``, or a function
        ``(trainer, params, batch, key, member) -> (loss, StepMetrics)`` for one member.
      num_samples: L, latent samples per example (``"elbo"``).
      optimizer: ``"adam"``, ``"adagrad"`` or ``"sgd"``; the step is
        ``-learning_rate * schedule(step) * direction``.
      adam_eps: Adam's eps.
      adagrad_initial_accumulator: Adagrad's initial sum of squares (optax: 0.1; AEVB: 0).
      decay_steps: steps at which the learning rate is multiplied by ``decay_factor``.
      decay_factor: the schedule's factor (an optax piecewise-constant schedule).
      sampling: ``"epochs"`` (each epoch a permutation, the remainder dropped) or
        ``"uniform"`` (M draws with replacement per step; members may use subsets).
      data_seed: seeds the batches.
      binarize: a fresh Bernoulli(x) draw of every batch (dynamic binarisation).
      dequantize_levels: x = (k + u) / levels for grey level k of each batch, or None.
      weight_decay: whether any member has weight decay (static: no pass over the
        parameters otherwise).
      mask_latents: whether members use fewer latent dimensions than the model has.
      subsets: whether members train on different subsets (``sampling="uniform"``).
      eval_seed: seeds the evaluation's latent samples.
      eval_iwae_samples: K of the IWAE bound in :meth:`evaluate` (0: off).
      eval_iwae_chunk: IWAE samples per chunk.
      eval_chunk: examples per evaluation chunk.
      dtype: parameter and data dtype ("float32"; "float64" under ``jax.enable_x64``).
      mesh: device mesh for ``sharding`` ("population" or "data"), or None.
      sharding: ``"none"``, ``"population"`` or ``"data"``.
    """

    model: VAE
    batch_size: int
    objective: str | ObjectiveFn = "elbo"
    num_samples: int = 1
    optimizer: str = "adam"
    adam_eps: float = 1e-8
    adagrad_initial_accumulator: float = 0.1
    decay_steps: tuple[int, ...] = ()
    decay_factor: float = 1.0
    sampling: str = "epochs"
    data_seed: int = 0
    binarize: bool = False
    dequantize_levels: int | None = None
    weight_decay: bool = False
    mask_latents: bool = False
    subsets: bool = False
    eval_seed: int = 7919
    eval_iwae_samples: int = 0
    eval_iwae_chunk: int = 100
    eval_chunk: int = 10_000
    dtype: str = "float32"
    mesh: Mesh | None = None
    sharding: str = "none"

    def __post_init__(self):
        if self.optimizer not in ("adam", "adagrad", "sgd"):
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; expected adam, adagrad "
                             "or sgd.")
        if not callable(self.objective) and self.objective not in ("elbo", "wake_sleep"):
            raise ValueError(f"Unknown objective {self.objective!r}; expected 'elbo', "
                             "'wake_sleep' or a function.")
        if self.sampling not in ("epochs", "uniform"):
            raise ValueError(f"Unknown sampling {self.sampling!r}; expected 'epochs' or "
                             "'uniform'.")
        if self.subsets and self.sampling != "uniform":
            raise ValueError("members on different training subsets need sampling='uniform'.")
        head = heads.get(self.model.likelihood)
        if self.objective == "wake_sleep" and head.sample_fn is None:
            raise ValueError(f"wake-sleep dreams from the decoder, and the "
                             f"{head.name!r} head has no sampler; heads with one: "
                             f"{', '.join(heads.sampleable())}.")
        if self.objective == "wake_sleep" and head.uses_levels:
            raise ValueError(f"wake-sleep is not implemented for the grey-level head "
                             f"{head.name!r}; use train.objective='elbo' or another head.")

    # ------------------------------------------------------------------ pieces
    @property
    def head(self) -> heads.Head:
        return heads.get(self.model.likelihood)

    @property
    def max_latent(self) -> int:
        return self.model.latent

    def steps_per_epoch(self, num_examples: int) -> int:
        """Batches per epoch: floor(N / M), at least 1 (uniform sampling allows M > N)."""
        return max(num_examples // self.batch_size, 1)

    def transform(self) -> optax.GradientTransformation:
        """The optimiser's direction (the learning rate is applied by the step)."""
        if self.optimizer == "adam":
            return optax.scale_by_adam(eps=self.adam_eps)
        if self.optimizer == "adagrad":
            return optax.scale_by_rss(initial_accumulator_value=self.adagrad_initial_accumulator,
                                      eps=1e-8)
        return optax.identity()

    def schedule(self) -> optax.Schedule | None:
        """Learning-rate multiplier against the step index, or None for a constant rate.

        The step with (0-based) index ``s`` of ``decay_steps`` and every later one is taken
        at the lower rate (optax's piecewise schedule at count = the step index).
        """
        if not self.decay_steps or self.decay_factor == 1.0:
            return None
        return optax.piecewise_constant_schedule(
            1.0, {int(s): self.decay_factor for s in self.decay_steps})

    def encode(self, params, x: jax.Array, member: Members):
        """q(z|x) of a member: (mean, log_var) [B, Z], the prior in its padded dims."""
        mean, log_var = self.model.apply(params, x, method=VAE.encode)
        if not self.mask_latents:
            return mean, log_var
        mask = latent_mask(member.latent, self.max_latent)
        return mean * mask, log_var * mask

    def decode(self, params, z: jax.Array, member: Members) -> dict[str, jax.Array]:
        """Decoder outputs for z [B, Z] (padded dims set to 0)."""
        if self.mask_latents:
            z = z * latent_mask(member.latent, self.max_latent)
        return self.model.apply(params, z, method=VAE.decode)

    def log_likelihood_fn(self, params, x: jax.Array, member: Members):
        """z [B, Z] -> log p(x|z) [B] of a member."""
        head = self.head
        return lambda z: head.log_likelihood(x, self.decode(params, z, member),
                                             sigma=member.sigma,
                                             num_levels=self.model.num_levels)

    def _decay(self, params, member: Members, like: jax.Array) -> jax.Array:
        if not self.weight_decay:  # a static zero: no pass over the parameters
            return jnp.zeros_like(like)
        return 0.5 * member.weight_decay * squared_norm(params)

    # ------------------------------------------------------------------ one member
    def init_member(self, member: Members) -> TrainState:
        """One member's state from its seed (unstacked); padded latent weights are zero."""
        key = jax.random.fold_in(jax.random.key(member.seed), 0x1)
        dummy = jnp.zeros((1, self.model.output_dim), jnp.float32)
        params = self.model.init(key, dummy, key)
        if self.mask_latents:
            params = jax.tree.map(
                lambda leaf, axes: self._zero_padding(leaf, axes, member.latent), params,
                latent_axes(self.model), is_leaf=lambda x: isinstance(x, tuple))
        params = jax.tree.map(lambda leaf: leaf.astype(self.dtype), params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.transform().init(params))

    @staticmethod
    def _zero_padding(leaf, axes, latent):
        for axis in axes:
            shape = [1] * leaf.ndim
            shape[axis] = leaf.shape[axis]
            keep = (jnp.arange(leaf.shape[axis]) < latent).reshape(shape)
            leaf = jnp.where(keep, leaf, 0.0)
        return leaf

    def member_loss(self, params, batch: jax.Array, key: jax.Array, member: Members):
        """Batch-mean loss of one member and its parts: (loss [], StepMetrics)."""
        if callable(self.objective):
            return self.objective(self, params, batch, key, member)
        if self.objective == "wake_sleep":
            noise = wake_sleep.draw_noise(key, batch.shape[0], self.max_latent, batch.dtype)
            mask = latent_mask(member.latent, self.max_latent) if self.mask_latents else None
            terms = wake_sleep.wake_sleep_terms(
                noise, batch, lambda v: self.encode(params, v, member),
                lambda z: self.decode(params, z, member), self.model.likelihood,
                sigma=member.sigma, latent_mask=mask)
            loss = terms.loss()
            decay = self._decay(params, member, loss)
            return loss + decay, StepMetrics(loss=loss + decay, recon=jnp.mean(terms.wake),
                                             kl=jnp.mean(terms.sleep), weight_decay=decay)
        mean, log_var = self.encode(params, batch, member)
        terms = elbo(key, mean, log_var, self.log_likelihood_fn(params, batch, member),
                     num_samples=self.num_samples)
        loss = terms.loss(member.beta)
        decay = self._decay(params, member, loss)
        loss = loss + decay
        return loss, StepMetrics(loss=loss, recon=jnp.mean(terms.recon), kl=jnp.mean(terms.kl),
                                 weight_decay=decay)

    def member_step(self, state: TrainState, batch: jax.Array, member: Members):
        """One optimisation step of one member: (new state, StepMetrics)."""
        key = jax.random.fold_in(jax.random.key(member.seed), state.step)
        grads, metrics = jax.grad(self.member_loss, has_aux=True)(
            state.params, batch, key, member)
        directions, opt_state = self.transform().update(grads, state.opt_state, state.params)
        learning_rate = member.learning_rate
        schedule = self.schedule()
        if schedule is not None:
            learning_rate = learning_rate * schedule(state.step)
        step_size = -1 * learning_rate  # as optax.scale_by_learning_rate applies it
        updates = jax.tree.map(lambda d: step_size * d, directions)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    # ------------------------------------------------------------------ population
    def init(self, members: Members) -> TrainState:
        """The stacked [P] population state."""
        return jax.vmap(self.init_member)(members)

    def population_step(self, state: TrainState, batch: jax.Array, members: Members):
        """One step of every member: vmapped over [P]; ``batch`` [B, D] ([P, B, D] when
        members train on their own subsets, ``subsets``).

        A population of one takes the member step unbatched: vmap over a [1] axis gives
        batched matmuls that XLA:CPU lays out with transposing copies (about a third of an
        MNIST-size step, ``benchmarks/train_step.py``).
        """
        per_member = self.subsets
        if state.step.shape[0] == 1:
            member_state, member = jax.tree.map(lambda leaf: leaf[0], (state, members))
            new_state, metrics = self.member_step(member_state, batch[0] if per_member
                                                  else batch, member)
            return jax.tree.map(lambda leaf: leaf[None], (new_state, metrics))
        return jax.vmap(self.member_step, in_axes=(0, 0 if per_member else None, 0))(
            state, batch, members)

    def _step_batch(self, train: jax.Array, step: jax.Array, order: jax.Array | None,
                    members: Members) -> jax.Array:
        """The batch of a global step: [B, D] ([P, B, D] with per-member subsets)."""
        base = jax.random.key(self.data_seed)
        step_key = jax.random.fold_in(base, step)
        if self.sampling == "epochs":
            per_epoch = self.steps_per_epoch(train.shape[0])
            start = (step % per_epoch) * self.batch_size
            batch = train[jax.lax.dynamic_slice(order, (start,), (self.batch_size,))]
        else:
            u = jax.random.uniform(jax.random.fold_in(step_key, 0), (self.batch_size,))

            def draw(num_train):
                index = jnp.minimum((u * num_train).astype(jnp.int32), num_train - 1)
                return train[index]

            if self.subsets:
                batch = jax.vmap(draw)(jnp.minimum(members.num_train, train.shape[0]))
            else:
                batch = draw(train.shape[0])
        data_key = jax.random.fold_in(step_key, 1)
        if self.binarize:
            batch = jax.random.bernoulli(data_key, batch).astype(batch.dtype)
        elif self.dequantize_levels:
            levels = self.dequantize_levels
            u = jax.random.uniform(data_key, batch.shape, batch.dtype)
            # Grey level k = x (levels - 1) in {0, .., levels - 1}; (k + u)/levels fills [0, 1).
            batch = (jnp.round(batch * (levels - 1)) + u) / levels
        if not self.subsets:
            batch = sharding.constrain_batch(batch, self.mesh, self.sharding)
        return batch

    def _epoch_order(self, train: jax.Array, step: jax.Array) -> jax.Array:
        epoch = step // self.steps_per_epoch(train.shape[0])
        key = jax.random.fold_in(jax.random.key(self.data_seed), epoch)
        return jax.random.permutation(key, train.shape[0])

    def run(self, state: TrainState, train: jax.Array, members: Members, start: jax.Array,
            stop: jax.Array) -> tuple[TrainState, BlockMetrics]:
        """Steps ``start .. stop - 1`` of every member in one ``lax.fori_loop``.

        ``start``/``stop`` are traced: one compilation serves every block length.

        Args:
          state: the population state (at step ``start``; donate it when jitting).
          train: [N, D] training data on the device.
          members: the population's settings.
          start: first global step.
          stop: one past the last step.

        Returns:
          (new state, BlockMetrics with [P] means over the block and the first bad step).
        """
        if self.sampling == "epochs" and train.shape[0] < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {train.shape[0]} "
                             "training examples.")
        size = members.size
        per_epoch = max(self.steps_per_epoch(train.shape[0]), 1)

        def body(step, carry):
            state, order, sums, bad_step, bad_term = carry
            if self.sampling == "epochs":
                order = jax.lax.cond(step % per_epoch == 0,
                                     lambda: self._epoch_order(train, step), lambda: order)
            batch = self._step_batch(train, step, order, members)
            state, metrics = self.population_step(state, batch, members)
            parts = [metrics.recon, metrics.kl, metrics.weight_decay, metrics.loss]
            finite = [jnp.isfinite(p) for p in parts]
            term = jnp.select([~f for f in finite[:-1]], [jnp.int32(i) for i in range(3)],
                              jnp.int32(3))
            new_bad = (bad_step < 0) & ~finite[-1]
            bad_step = jnp.where(new_bad, step, bad_step)
            bad_term = jnp.where(new_bad, term, bad_term)
            sums = jax.tree.map(jnp.add, sums, metrics)
            return state, order, sums, bad_step, bad_term

        zeros = jnp.zeros((size,), jnp.float32 if self.dtype == "float32" else self.dtype)
        sums = StepMetrics(loss=zeros, recon=zeros, kl=zeros, weight_decay=zeros)
        order = (self._epoch_order(train, start) if self.sampling == "epochs"
                 else jnp.zeros((0,), jnp.int32))
        init = (state, order, sums, jnp.full((size,), -1, jnp.int32),
                jnp.zeros((size,), jnp.int32))
        state, _, sums, bad_step, bad_term = jax.lax.fori_loop(start, stop, body, init)
        count = jnp.maximum(stop - start, 1).astype(zeros.dtype)
        means = jax.tree.map(lambda s: s / count, sums)
        return state, BlockMetrics(loss=means.loss, recon=means.recon, kl=means.kl,
                                   weight_decay=means.weight_decay, first_bad_step=bad_step,
                                   first_bad_term=bad_term)

    def trace(self, state: TrainState, train: jax.Array, members: Members, start: int,
              num_steps: int, probe: Callable[[TrainState, StepMetrics], Any]):
        """Like :meth:`run` for ``num_steps`` (static) steps, recording ``probe`` after each.

        Returns:
          (new state, the probe's outputs stacked over the steps: leaves [num_steps, ...]).
        """
        order0 = (self._epoch_order(train, jnp.int32(start)) if self.sampling == "epochs"
                  else jnp.zeros((0,), jnp.int32))
        per_epoch = max(self.steps_per_epoch(train.shape[0]), 1)

        def body(carry, step):
            state, order = carry
            if self.sampling == "epochs":
                order = jax.lax.cond(step % per_epoch == 0,
                                     lambda: self._epoch_order(train, step), lambda: order)
            state, metrics = self.population_step(
                state, self._step_batch(train, step, order, members), members)
            return (state, order), probe(state, metrics)

        (state, _), traced = jax.lax.scan(body, (state, order0),
                                          start + jnp.arange(num_steps, dtype=jnp.int32))
        return state, traced

    # ------------------------------------------------------------------ evaluation
    def member_evaluate(self, params, x: jax.Array, member: Members, key: jax.Array):
        """ELBO (L = 1, analytic KL), parts and IWAE of one member on x [N, D], each [N]."""
        mean, log_var = self.encode(params, x, member)
        log_likelihood = self.log_likelihood_fn(params, x, member)
        terms = elbo(key, mean, log_var, log_likelihood, num_samples=1)
        k = self.eval_iwae_samples
        if k > 0:
            iwae = iwae_bound(jax.random.fold_in(key, 1), mean, log_var, log_likelihood,
                              num_samples=k, chunk_size=min(k, self.eval_iwae_chunk))
        else:
            iwae = jnp.full_like(terms.elbo, jnp.nan)
        return {"elbo": terms.elbo, "recon": terms.recon, "kl": terms.kl, "iwae": iwae,
                "posterior_mean": mean}

    def per_example(self, state: TrainState, x: jax.Array, members: Members,
                    key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Per-example evaluation of every member: ``elbo``, ``recon``, ``kl``, ``iwae`` [P, N]
        and ``posterior_mean`` [P, N, Z].

        Examples are evaluated ``eval_chunk`` at a time (one chunk uses ``key``, several
        chunk c ``fold_in(key, c)``). A ``gaussian_optimal`` decoder pools its sigma* over
        a chunk.
        """
        key = jax.random.key(self.eval_seed) if key is None else key
        num = x.shape[0]
        members_eval = jax.vmap(self.member_evaluate, in_axes=(0, None, 0, None))
        if num <= self.eval_chunk:
            return members_eval(state.params, x, members, key)
        chunks = -(-num // self.eval_chunk)
        padded = jnp.pad(x, ((0, chunks * self.eval_chunk - num), (0, 0)))

        def one(args):
            index, xs = args
            return members_eval(state.params, xs, members, jax.random.fold_in(key, index))

        out = jax.lax.map(one, (jnp.arange(chunks), padded.reshape(chunks, self.eval_chunk, -1)))
        # [chunks, P, C, ...] -> [P, N, ...]
        return jax.tree.map(
            lambda a: jnp.moveaxis(a, 0, 1).reshape(a.shape[1], chunks * self.eval_chunk,
                                                    *a.shape[3:])[:, :num], out)

    def evaluate(self, state: TrainState, x: jax.Array, members: Members,
                 key: jax.Array | None = None) -> EvalMetrics:
        """Per-member means over x [N, D] of ELBO, parts and IWAE, and active units; each [P]."""
        values = self.per_example(state, x, members, key)
        active = jnp.sum(jnp.var(values["posterior_mean"], axis=1) > 1e-2,
                         axis=-1).astype(jnp.int32)
        return EvalMetrics(elbo=jnp.mean(values["elbo"], -1), recon=jnp.mean(values["recon"], -1),
                           kl=jnp.mean(values["kl"], -1), iwae=jnp.mean(values["iwae"], -1),
                           active_units=active)

    def decode_means(self, state: TrainState, z: jax.Array, members: Members) -> jax.Array:
        """Expected pixels E[x|z] for z [N, Z], per member: [P, N, D]."""
        head = self.head
        levels = self.model.num_levels
        return jax.vmap(lambda p, m: head.expected_value(self.decode(p, z, m),
                                                         num_levels=levels))(
            state.params, members)

    def reconstruct(self, state: TrainState, x: jax.Array, members: Members) -> jax.Array:
        """E[x | z = E[z|x]] for x [N, D], per member: [P, N, D]."""
        head = self.head

        def member(params, m):
            mean, _ = self.encode(params, x, m)
            return head.expected_value(self.decode(params, mean, m),
                                       num_levels=self.model.num_levels)

        return jax.vmap(member)(state.params, members)

    # ------------------------------------------------------------------ compiled
    @functools.cached_property
    def jit(self) -> _Compiled:
        """This trainer's jitted functions, compiled once each (the state is donated)."""
        return _Compiled(self)


class _Compiled:
    def __init__(self, trainer: Trainer):
        self.init = jax.jit(trainer.init)
        self.run = jax.jit(trainer.run, donate_argnums=(0,))
        self.trace = jax.jit(trainer.trace, static_argnames=("start", "num_steps", "probe"))
        self.evaluate = jax.jit(trainer.evaluate)
        self.per_example = jax.jit(trainer.per_example)
        self.decode_means = jax.jit(trainer.decode_means)
        self.reconstruct = jax.jit(trainer.reconstruct)


# --------------------------------------------------------------------------- from a config


def _check_support(head: heads.Head, dataset, config) -> None:
    """A head whose density lives on the open interval (0, 1) refuses data at 0 or 1; a
    head over the k grey levels refuses data off the grid and per-batch dequantisation."""
    if head.support == "levels":
        k = config.model.num_levels
        if config.data.dequantize_levels:
            raise ValueError(f"config `model.likelihood`={head.name!r} is a distribution over "
                             "grey levels: `data.dequantize_levels` would move the data off "
                             "the grid; set it to None.")
        for split in ("train", "test"):
            values = np.asarray(getattr(dataset, split), np.float64)
            if np.max(np.abs(values * (k - 1) - np.round(values * (k - 1)))) > 1e-4:
                raise ValueError(
                    f"config `model.likelihood`={head.name!r} needs data on the "
                    f"`model.num_levels`={k}-level grid {{0, 1/{k - 1}, ..., 1}}, but "
                    f"{dataset.name!r}.{split} is not on it: set `model.num_levels` to the "
                    "data's number of grey levels (17 for the digits, 256 for 8-bit).")
        return
    if head.support != "open_unit_interval":
        return
    for split in ("train", "test"):
        values = np.asarray(getattr(dataset, split))
        if np.any((values <= 0) | (values >= 1)):
            raise ValueError(
                f"config `model.likelihood`={head.name!r} is a density on the open interval "
                f"(0, 1), but {dataset.name!r}.{split} has values in [{values.min():g}, "
                f"{values.max():g}] (at 0 or 1 its log-density is infinite): set "
                "`data.squeeze`, e.g. 1e-3, to map x to e + (1 - 2e) x.")


def build(config, dataset, *, mesh: Mesh | None = None) -> tuple[Trainer, Members]:
    """The trainer and members a validated training config describes, for ``dataset``.

    Raises ValueError naming the config key when the config does not fit the data (a
    batch larger than the training set).
    """
    from vaejax import config as config_lib

    config_lib.validate(config)
    num_train = int(dataset.train.shape[0])
    if config.train.batch_size > num_train and config.train.sampling == "epochs":
        # Uniform sampling draws with replacement: any batch size works.
        raise ValueError(f"config `train.batch_size`={config.train.batch_size} exceeds the "
                         f"{num_train} training examples of {dataset.name!r} (an epoch "
                         "needs a full batch; train.sampling='uniform' draws with "
                         "replacement).")
    model_config = config.model
    _check_support(heads.get(model_config.likelihood), dataset, config)
    model = VAE(hidden=model_config.hidden, latent=model_config.latent,
                output_dim=dataset.num_dims, likelihood=model_config.likelihood,
                sigmoid_mean=model_config.sigmoid_mean, init_scale=model_config.init_scale,
                init_log_sigma=model_config.init_log_sigma, min_sigma=model_config.min_sigma,
                sigma_floor=model_config.sigma_floor, num_levels=model_config.num_levels,
                num_mixtures=model_config.num_mixtures)
    values = config_lib.member_values(config)
    members = make_members(num_train=num_train, weight_decay=config.train.weight_decay,
                           **values)
    per_epoch = max(num_train // config.train.batch_size, 1)
    trainer = Trainer(
        model=model, batch_size=config.train.batch_size, objective=config.train.objective,
        num_samples=config.train.num_samples, optimizer=config.train.optimizer,
        adam_eps=config.train.adam_eps,
        adagrad_initial_accumulator=config.train.adagrad_initial_accumulator,
        decay_steps=tuple(int(e) * per_epoch for e in config.train.decay_epochs),
        decay_factor=config.train.decay_factor, sampling=config.train.sampling,
        data_seed=config.seed, binarize=config.data.binarize == "dynamic",
        dequantize_levels=config.data.dequantize_levels,
        weight_decay=config.train.weight_decay > 0,
        mask_latents=any(v < model_config.latent for v in values["latent"]),
        eval_seed=config.seed + 7919, eval_iwae_samples=config.eval.iwae_samples,
        eval_iwae_chunk=config.eval.iwae_chunk, eval_chunk=config.eval.chunk,
        mesh=mesh, sharding=config.run.sharding)
    return trainer, members


# --------------------------------------------------------------------------- fit


@dataclasses.dataclass
class HookContext:
    """What a hook sees when it fires (after step ``step``)."""

    trainer: Trainer
    state: TrainState
    members: Members
    step: int
    steps_per_epoch: int
    block: BlockMetrics | None  # the block that just ended (None at a resumed start)
    history: list[dict]
    stop_requested: bool = False

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    def stop(self) -> None:
        """Ends training after this point (early stopping); the state is checkpointed."""
        self.stop_requested = True


@dataclasses.dataclass(frozen=True)
class Hook:
    """A periodic action of :func:`fit`: ``fn(ctx) -> records or None``.

    Fires after every ``every_steps`` steps and at each step of ``at_steps`` (and at the
    last step when ``at_end``). Records (dicts of numbers and strings) are appended to the
    fit's history, which checkpoints keep, so a resumed run has every record.
    """

    fn: Callable[[HookContext], Sequence[dict] | None]
    every_steps: int | None = None
    at_steps: tuple[int, ...] = ()
    at_end: bool = True

    def fires(self, step: int, last: int) -> bool:
        return ((self.every_steps is not None and step % self.every_steps == 0)
                or step in self.at_steps or (self.at_end and step == last))


@dataclasses.dataclass
class FitResult:
    """The end of a :func:`fit`."""

    state: TrainState
    history: list[dict]
    step: int  # steps done (== num_steps unless stopped early)
    resumed_from: int | None  # the checkpoint step training restarted from, if any
    block_seconds: list[float]  # wall time of each training block run in this process
    block_steps: list[int]  # steps of each of those blocks


def check_finite(block: BlockMetrics, members: Members, *, steps_per_epoch: int,
                 kept: int | None, label: str = "") -> None:
    """Raises NonFiniteLossError for the first member whose loss became NaN or inf."""
    bad_step = np.asarray(block.first_bad_step)
    if np.all(bad_step < 0):
        return
    candidates = np.where(bad_step >= 0, bad_step, np.iinfo(np.int32).max)
    member = int(np.argmin(candidates))
    step = int(bad_step[member]) + 1
    term = TERMS[int(np.asarray(block.first_bad_term)[member])]
    host = jax.tree.map(lambda a: np.asarray(a)[member], members)
    kept_text = (f"the last good checkpoint (step {kept}) is kept" if kept is not None
                 else "no checkpoint had been written yet")
    epoch = -(-step // max(steps_per_epoch, 1))
    raise NonFiniteLossError(
        f"{label + ': ' if label else ''}non-finite loss at step {step} (epoch {epoch}), "
        f"member {member} (sigma={float(host.sigma):g}, beta={float(host.beta):g}, "
        f"lr={float(host.learning_rate):g}, seed={int(host.seed)}, latent={int(host.latent)}):"
        f" term '{term}' became non-finite. Training stopped; {kept_text}.",
        member=member, step=step, term=term)


def fit(trainer: Trainer, state: TrainState, train: jax.Array, members: Members, *,
        num_steps: int, hooks: Sequence[Hook] = (), checkpoints=None,
        checkpoint_every_steps: int | None = None, block_steps: int | None = None,
        progress: bool = True, desc: str = "train", non_finite: str = "raise") -> FitResult:
    """Trains ``state`` to step ``num_steps``, firing hooks and saving checkpoints.

    Training starts at ``state.step`` (0 for a fresh state). With ``checkpoints`` (a
    :class:`vaejax.checkpoints.Checkpointer`) the newest checkpoint is restored first (state
    and history): a killed run resumes where it stopped, and a finished one returns at
    once. Blocks end at every hook and checkpoint step and after at most ``block_steps``
    steps (default: one epoch, for the progress bar).

    Args:
      trainer: the set-up.
      state: the initial population state (used when there is no checkpoint; donated).
      train: [N, D] training data (a device array).
      members: the population's settings.
      num_steps: the global step to train to.
      hooks: periodic actions (:class:`Hook`).
      checkpoints: where to save and resume, or None.
      checkpoint_every_steps: save every this many steps (and at the end).
      block_steps: longest block between host syncs.
      progress: show a tqdm bar.
      desc: the bar's label (also names the run in errors).
      non_finite: ``"raise"`` (NonFiniteLossError) or ``"ignore"`` (a diverged member goes
        on as NaN, e.g. a step-size candidate that a selection will drop; members are
        independent, so the others are unaffected).

    Returns:
      FitResult.

    Raises:
      NonFiniteLossError: a member's loss became NaN/inf (the last checkpoint is kept).
    """
    from tqdm import tqdm

    per_epoch = max(trainer.steps_per_epoch(train.shape[0]), 1)
    block_steps = block_steps or per_epoch
    if non_finite not in ("raise", "ignore"):
        raise ValueError(f"`non_finite` must be 'raise' or 'ignore', got {non_finite!r}.")
    history: list[dict] = []
    start = int(np.asarray(state.step).reshape(-1)[0])
    resumed = None
    if checkpoints is not None and checkpoints.latest_step() is not None:
        start, state, history = checkpoints.restore(state)
        resumed = start
    compiled = trainer.jit
    if resumed is None:  # hooks that measure the starting state (e.g. untrained)
        ctx = HookContext(trainer, state, members, start, per_epoch, None, history)
        for hook in hooks:
            if start in hook.at_steps:
                history.extend(hook.fn(ctx) or ())
    times, sizes = [], []
    bar = tqdm(total=num_steps, initial=min(start, num_steps), desc=desc, unit="step",
               disable=not progress, dynamic_ncols=True, leave=False)
    step = start
    stop = False
    try:
        while step < num_steps and not stop:
            target = min(num_steps, (step // block_steps + 1) * block_steps)
            for hook in hooks:
                if hook.every_steps:
                    target = min(target, (step // hook.every_steps + 1) * hook.every_steps)
                later = [s for s in hook.at_steps if step < s <= target]
                target = min([target, *later])
            if checkpoints is not None and checkpoint_every_steps:
                target = min(target, (step // checkpoint_every_steps + 1) * checkpoint_every_steps)
            tic = time.perf_counter()
            state, block = compiled.run(state, train, members, jnp.int32(step),
                                        jnp.int32(target))
            block = jax.tree.map(np.asarray, block)  # waits for the block
            times.append(time.perf_counter() - tic)
            sizes.append(target - step)
            if non_finite == "raise":
                check_finite(block, members, steps_per_epoch=per_epoch,
                             kept=checkpoints.latest_step() if checkpoints else None, label=desc)
            step = target
            ctx = HookContext(trainer, state, members, step, per_epoch, block, history)
            for hook in hooks:
                if hook.fires(step, num_steps):
                    history.extend(hook.fn(ctx) or ())
            stop = ctx.stop_requested
            if checkpoints is not None and (
                    step == num_steps or stop or (checkpoint_every_steps
                                                  and step % checkpoint_every_steps == 0)):
                checkpoints.save(step, state, history)
            bar.update(sizes[-1])
            bar.set_postfix(loss=f"{float(np.mean(block.loss)):.4g}",
                            model_steps_s=f"{sizes[-1] * members.size / times[-1]:.0f}")
    finally:
        bar.close()
    return FitResult(state=state, history=history, step=step, resumed_from=resumed,
                     block_seconds=times, block_steps=sizes)
