"""AEVB and wake-sleep populations on the engine: padded latent sizes, step-size selection.

The models of one population share the network shapes and the minibatches and train by
ONE vmapped step of :mod:`vaejax.trainer`. They differ in

* latent size: every member is padded to the population's largest latent size Z_max
  and masked (``Trainer.mask_latents``): the padded encoder outputs are the prior (mean 0,
  log-variance 0, KL exactly 0), the decoder sees z = 0 there, the sleep phase leaves
  them out, and their weights start at zero and get an exactly-zero gradient, so a padded
  member IS the Z-latent model (``tests/test_exp_aevb.py``);
* Adagrad step size: the paper picks it from {0.01, 0.02, 0.1} by the training-set bound
  after the first samples. The candidates train one after another up to ``select_steps``
  as the same population (one compilation serves all and the rest of training); each arm
  then goes on from its best candidate (:func:`select_step_sizes`);
* training-set size (figure 3): member m draws its minibatches from ``train[:num_train[m]]``.

Minibatches are M uniform draws with replacement (``sampling="uniform"``), transformed
per batch: dynamic binarisation (MNIST analogue) or dequantisation x = (k + u) / levels
(a density on quantised pixels). The reported bounds use one fixed transformed copy of
the train and test sets. Every evaluation is a named record (:data:`RECORD_KEYS`) in the
training history, which the checkpoints keep: a killed run resumes with all of them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import common
from experiments.configs.aevb_common import PANEL_KEYS
from vaejax import sharding
from vaejax import trainer as trainer_lib

METHODS = ("aevb", "wake_sleep")
METHOD_LABELS = {"aevb": "AEVB", "wake_sleep": "wake-sleep"}
RECORD_KEYS = ("panel", "method", "step", "samples", "arm", "latent", "num_train",
               "learning_rate", "selected", "train_bound", "test_bound", "train_iwae",
               "test_iwae")


@dataclasses.dataclass(frozen=True)
class PanelData:
    """One data set as device arrays.

    Attributes:
      dataset: the loaded data set.
      train: [N, D] training images as loaded (transformed per batch by the trainer).
      train_eval: [N', D] one fixed transformed copy of ``train`` (the train bound).
      test_eval: [N_test', D] one fixed transformed copy of the test set.
      transform: "binarize", "dequantize" or None.
    """

    dataset: object
    train: jax.Array
    train_eval: jax.Array
    test_eval: jax.Array
    transform: str | None


def transform_copy(key: jax.Array, x: jax.Array, panel) -> jax.Array:
    """One fixed draw of the panel's per-batch transform applied to x [N, D]."""
    if panel.binarize == "dynamic":
        return jax.random.bernoulli(key, x).astype(x.dtype)
    if panel.dequantize_levels:
        levels = int(panel.dequantize_levels)
        return (jnp.round(x * (levels - 1)) + jax.random.uniform(key, x.shape, x.dtype)) / levels
    return x


def panel_config(config, panel):
    """The training config of a panel: the panel's data and model keys over the config's."""
    out = config.copy_and_resolve_references()
    for key, (group, field) in PANEL_KEYS.items():
        if group != "aevb":
            out[group][field] = panel[key]
    return out


def load_panel(config, panel) -> PanelData:
    """The panel's data; the evaluation copies are fixed draws of its transform."""
    dataset = common.load_data(panel_config(config, panel))
    key = jax.random.key(config.seed + 11)
    limit = config.aevb.eval_examples or None
    train = jnp.asarray(dataset.train)
    transform = ("binarize" if panel.binarize == "dynamic"
                 else "dequantize" if panel.dequantize_levels else None)
    return PanelData(dataset=dataset, train=train,
                     train_eval=transform_copy(jax.random.fold_in(key, 0), train, panel)[:limit],
                     test_eval=transform_copy(jax.random.fold_in(key, 1),
                                              jnp.asarray(dataset.test), panel)[:limit],
                     transform=transform)


def member_seed(seed: int, latent: int) -> int:
    """Members of one latent size start from the same weights and see the same noise."""
    return seed * 1009 + latent


def select_step_sizes(train_bounds: np.ndarray) -> np.ndarray:
    """[S, A] training bounds of S step sizes (ascending) -> [A] index of each arm's best.

    Non-finite bounds (a diverged candidate) never win; ties go to the smaller step size.
    """
    score = np.where(np.isfinite(train_bounds), train_bounds, -np.inf)
    if not np.isfinite(score).any(axis=0).all():
        arm = int(np.flatnonzero(~np.isfinite(score).any(axis=0))[0])
        raise FloatingPointError(f"every step size diverged for arm {arm} (training bounds "
                                 f"{train_bounds[:, arm].tolist()}).")
    return np.argmax(score, axis=0)  # the first maximum: the smallest step size


def eval_schedule(first_step: int, total_steps: int, num_points: int,
                  must_include: Sequence[int] = ()) -> list[int]:
    """Log-spaced evaluation steps in [first_step, total_steps], with ``must_include``."""
    if not 1 <= first_step <= total_steps:
        raise ValueError(f"need 1 <= first_step <= total_steps, got {first_step}, "
                         f"{total_steps}.")
    grid = np.round(np.logspace(math.log10(first_step), math.log10(total_steps),
                                max(num_points, 2))).astype(int)
    return sorted(set(grid.tolist()) | {int(s) for s in must_include if s <= total_steps})


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


def put_examples(x: jax.Array) -> jax.Array:
    """x [N, D] split over the devices along N (padded by repeating rows when needed)."""
    count = jax.device_count()
    if count == 1:
        return x
    num = x.shape[0]
    padded = -(-num // count) * count
    x = jnp.concatenate([x, x[: padded - num]]) if padded > num else x
    return jax.device_put(x, NamedSharding(sharding.make_mesh(), P(sharding.AXIS)))


@dataclasses.dataclass
class Trained:
    """The end of :func:`train_arms`: the kept members and every evaluation record."""

    trainer: trainer_lib.Trainer
    state: trainer_lib.TrainState
    members: trainer_lib.Members
    records: list[dict]
    train_seconds: float
    member_steps: int
    iwae_seconds: float

    def member(self, index: int):
        """(state, members) of member ``index`` alone (a population of one)."""
        take = lambda tree: jax.tree.map(lambda leaf: leaf[index:index + 1], tree)  # noqa: E731
        return take(self.state), take(self.members)


def train_arms(config, panel, data: PanelData, workdir: str | Path, *, panel_name: str,
               name: str, method: str, hidden: int, arms: Sequence[tuple[int, int]],
               total_steps: int, select_steps: int, eval_steps: Sequence[int],
               iwae: dict | None = None, label: str = "") -> Trained:
    """Trains one member per (latent, num_train) arm; picks each arm's step size; goes on.

    Args:
      config: the experiment config (``config.aevb`` and the training keys).
      panel, data: the data-set panel and its data; ``panel_name`` goes in the records.
      workdir, name: checkpoints go to ``<workdir>/checkpoints/aevb/<name>/{select,train}``.
      method: "aevb" or "wake_sleep".
      hidden: hidden units of both networks.
      arms: (latent, num_train) of each kept member.
      total_steps: steps of every kept member.
      select_steps: the step-size choice happens after this many steps (0: none).
      eval_steps: steps at which every member's train and test bounds are recorded.
      iwae: optional ``{"steps", "num_samples", "chunk_size", "num_examples"}``: IWAE
        estimates of log p(x) on the first examples of each split at those steps.
      label: progress-bar label.

    Returns:
      Trained: the kept members (one per arm), and the records with ``selected`` 1 for
      the candidates kept.
    """
    exp = config.aevb
    base_config = panel_config(config, panel)
    base_config.model.hidden = hidden
    base_config.model.latent = max(latent for latent, _ in arms)
    base_config.train.objective = "elbo" if method == "aevb" else "wake_sleep"
    trainer, _ = trainer_lib.build(base_config, data.dataset)
    num_train = int(data.train.shape[0])
    trainer = dataclasses.replace(
        trainer, mask_latents=len({a[0] for a in arms}) > 1 or arms[0][0] < trainer.max_latent,
        subsets=any(n < num_train for _, n in arms), weight_decay=exp.parameter_prior,
        eval_chunk=exp.eval_chunk, eval_seed=config.seed + 3, eval_iwae_samples=0)
    rates = sorted(float(lr) for lr in exp.learning_rates)
    if len(rates) == 1:
        select_steps = 0
    candidates = rates if select_steps else rates[:1]

    def members_for(learning_rates):  # member m: arm m of the step sizes given
        latent = [a[0] for a in arms]
        n = [min(a[1], num_train) for a in arms]
        return trainer_lib.make_members(
            latent=latent, num_train=n, sigma=1.0, beta=1.0, learning_rate=learning_rates,
            seed=[member_seed(config.seed, z) for z in latent],
            weight_decay=(1.0 / np.asarray(n)) if exp.parameter_prior else 0.0)

    eval_x = jnp.concatenate([data.train_eval, data.test_eval])
    num_train_eval = int(data.train_eval.shape[0])
    iwae_trainer = iwae_x = None
    if iwae:
        iwae_trainer = dataclasses.replace(trainer, eval_iwae_samples=iwae["num_samples"],
                                           eval_iwae_chunk=iwae["chunk_size"])
        num_iwae = min(iwae["num_examples"], int(data.test_eval.shape[0]),
                       min(min(n, num_train) for _, n in arms))
        iwae_x = put_examples(jnp.concatenate([data.train_eval[:num_iwae],
                                               data.test_eval[:num_iwae]]))
    timing = {"iwae": 0.0}

    def evaluate(ctx: trainer_lib.HookContext):
        values = np.asarray(trainer.jit.per_example(ctx.state, eval_x, ctx.members)["elbo"])
        members = common.host(ctx.members)
        own = np.minimum(members.num_train, num_train_eval)
        train_iwae = test_iwae = np.full(members.size, np.nan)
        if iwae_trainer is not None and ctx.step in iwae["steps"]:
            tic = time.perf_counter()
            estimates = np.asarray(iwae_trainer.jit.per_example(ctx.state, iwae_x,
                                                                ctx.members)["iwae"])
            timing["iwae"] += time.perf_counter() - tic
            train_iwae = estimates[:, :num_iwae].mean(axis=1)
            test_iwae = estimates[:, num_iwae:2 * num_iwae].mean(axis=1)
        return [{"panel": panel_name, "method": method, "step": ctx.step,
                 "samples": ctx.step * trainer.batch_size, "arm": m,
                 "latent": int(members.latent[m]), "num_train": int(members.num_train[m]),
                 "learning_rate": float(members.learning_rate[m]), "selected": 1,
                 "train_bound": float(values[m, :own[m]].mean()),
                 "test_bound": float(values[m, num_train_eval:].mean()),
                 "train_iwae": float(train_iwae[m]), "test_iwae": float(test_iwae[m])}
                for m in range(members.size)]

    steps = sorted({s for s in eval_steps if 0 < s <= total_steps} | {total_steps}
                   | ({select_steps} if select_steps else set()))
    records, seconds, member_steps = [], 0.0, 0

    def fit(members, state, num_steps, at_steps, suffix, non_finite="raise"):
        nonlocal seconds, member_steps
        result = common.train(
            base_config, data.dataset, workdir, f"aevb/{name}/{suffix}", trainer=trainer,
            members=members, num_steps=num_steps, state=state, train_data=data.train,
            hooks=[trainer_lib.Hook(evaluate, at_steps=tuple(at_steps))], label=label or name,
            non_finite=non_finite)
        seconds += sum(result.block_seconds)
        member_steps += sum(result.block_steps) * members.size
        return result

    state, members = None, members_for(candidates[0])
    if select_steps:
        # The candidates run one after another as the same population (one compilation);
        # each arm then goes on from its best one. A diverged candidate just loses.
        before = [s for s in steps if s <= select_steps]
        runs = [fit(members_for(lr), None, select_steps, before, f"select-{c}", "ignore")
                for c, lr in enumerate(candidates)]
        bounds = np.array([[r["train_bound"] for r in run.history if r["step"] == select_steps]
                           for run in runs])  # [candidates, arms]
        choice = select_step_sizes(bounds)
        for c, run in enumerate(runs):
            for r in run.history:
                r["selected"] = int(choice[r["arm"]] == c)
            records += run.history
        arm = jnp.arange(len(arms))
        state = jax.tree.map(lambda *leaves: jnp.stack(leaves)[jnp.asarray(choice), arm],
                             *[run.state for run in runs])
        members = members_for([candidates[c] for c in choice])
    result = fit(members, state, total_steps, [s for s in steps if s > select_steps], "train")
    records += result.history
    return Trained(trainer=trainer, state=result.state, members=members, records=records,
                   train_seconds=seconds, member_steps=member_steps,
                   iwae_seconds=timing["iwae"])
