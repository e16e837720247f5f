"""Training: a population of P VAEs (one per sigma, beta, learning rate or seed) in one jitted step.

A single model is a population of one. Member hyper-parameters are arrays with a
leading [P] axis, parameters and optimiser states are stacked along that axis, and
one ``jax.vmap``-ed step trains them all on the same batch. An epoch is one
``lax.scan`` over on-device batches (one dispatch per epoch); the state is donated.

Randomness is a pure function of (seed, epoch, step): the data order of epoch e
uses ``fold_in(key(config.seed), e)``, member m's latent noise at step t uses
``fold_in(key(seed_m), t)``. Hence a run resumed from a checkpoint, or member m of a
population, reproduces an uninterrupted single run exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from vaejax import data as data_lib
from vaejax import sharding
from vaejax.elbo import ElboTerms, elbo, iwae_bound
from vaejax.kl import kl_standard_normal
from vaejax.likelihoods import continuous_bernoulli_mean
from vaejax.models import VAE, check_likelihood, decoder_log_likelihood

OPTIMIZERS = ("adam", "adagrad", "sgd")
POPULATION_FIELDS = ("sigma", "beta", "learning_rate", "seed")


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or inf; the last good checkpoint is kept."""


@struct.dataclass
class Hyper:
    """Per-member hyper-parameters, each [P]."""

    sigma: jax.Array  # [P] decoder sigma (gaussian_fixed only)
    beta: jax.Array  # [P] KL weight
    learning_rate: jax.Array  # [P]
    seed: jax.Array  # [P] int32: parameter init and latent noise


@struct.dataclass
class TrainState:
    """Stacked training state of a population; every leaf has a leading [P] axis."""

    step: jax.Array  # [P] int32 optimisation steps taken
    params: Any  # pytree, leaves [P, ...]
    opt_state: Any  # pytree, leaves [P, ...]


@struct.dataclass
class StepMetrics:
    """Per-step training metrics, each [P] (or [steps, P] out of an epoch scan)."""

    loss: jax.Array  # -(recon - beta kl) + weight decay, batch mean
    recon: jax.Array  # E_q log p(x|z), batch mean, nats
    kl: jax.Array  # KL, batch mean, nats
    weight_decay: jax.Array  # the N(0, I) prior penalty term


@struct.dataclass
class EvalMetrics:
    """Test-set metrics per member, each [P], in nats per example."""

    elbo: jax.Array
    recon: jax.Array
    kl: jax.Array
    iwae: jax.Array  # NaN when IWAE is disabled
    active_units: jax.Array  # int32: latent dims with Cov(E[z|x]) > 1e-2 (Burda et al.)


def population_size(config: ml_collections.ConfigDict) -> int:
    """P: the longest non-empty ``config.population.<field>`` tuple (1 if none)."""
    sizes = {name: len(config.population[name]) for name in POPULATION_FIELDS
             if config.population[name]}
    if not sizes:
        return 1
    size = max(sizes.values())
    bad = {k: v for k, v in sizes.items() if v not in (1, size)}
    if bad:
        raise ValueError(
            f"config.population fields must have length 1 or P={size}; got lengths {bad}."
        )
    return size


def make_hyper(config: ml_collections.ConfigDict) -> Hyper:
    """Builds the [P] hyper-parameter arrays from the scalar config and ``config.population``."""
    size = population_size(config)

    def column(name, dtype):
        values = tuple(config.population[name] or ()) or (config[name],)
        values = values * size if len(values) == 1 else values
        return jnp.asarray(values, dtype)

    hyper = Hyper(sigma=column("sigma", jnp.float32), beta=column("beta", jnp.float32),
                  learning_rate=column("learning_rate", jnp.float32),
                  seed=column("seed", jnp.int32))
    for name in ("sigma", "learning_rate"):
        values = np.asarray(getattr(hyper, name))
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"config `{name}` must be finite and > 0, got {values.tolist()}.")
    if not np.all(np.asarray(hyper.beta) >= 0):
        raise ValueError(f"config `beta` must be >= 0, got {np.asarray(hyper.beta).tolist()}.")
    return hyper


def make_model(config: ml_collections.ConfigDict, num_dims: int) -> VAE:
    check_likelihood(config.likelihood)
    return VAE(hidden=config.hidden, latent=config.latent, output_dim=num_dims,
               likelihood=config.likelihood, sigmoid_mean=config.sigmoid_mean,
               init_scale=config.init_scale,
               init_log_sigma=config.get("init_log_sigma", 0.0))


def make_optimizer(name: str) -> Callable[[jax.Array], optax.GradientTransformation]:
    """learning_rate -> optax transform, with the rate injected into the state (per member)."""
    factories = {
        "adam": optax.adam,
        # AEVB's Adagrad; optax's default initial accumulator 0.1 differs from the paper's 0.
        "adagrad": lambda learning_rate: optax.adagrad(learning_rate, eps=1e-8),
        "sgd": optax.sgd,
    }
    if name not in factories:
        raise ValueError(f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.")
    return optax.inject_hyperparams(factories[name])


def squared_norm(tree) -> jax.Array:
    """Sum of squares of every leaf of a parameter tree (the N(0, I) prior's penalty)."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


@dataclass(frozen=True)
class Trainer:
    """The pure, jitted functions of one configuration (built once: nothing jitted twice).

    Attributes:
      model: the VAE module.
      config: the run's configuration.
      num_dims: D.
      mesh: device mesh for ``config.sharding`` ("population" or "data"), or None.
    """

    model: VAE
    config: ml_collections.ConfigDict
    num_dims: int
    mesh: Mesh | None = None

    # ---------------------------------------------------------------- pure functions
    def init_member(self, seed: jax.Array, learning_rate: jax.Array) -> TrainState:
        """One member's state from its seed: params and optimiser state (unstacked)."""
        key = jax.random.fold_in(jax.random.key(seed), 0x1)
        dummy = jnp.zeros((1, self.num_dims), jnp.float32)
        params = self.model.init(key, dummy, key)
        opt_state = make_optimizer(self.config.optimizer)(learning_rate).init(params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)

    def init(self, hyper: Hyper) -> TrainState:
        """The stacked [P] population state."""
        return jax.vmap(self.init_member)(hyper.seed, hyper.learning_rate)

    def member_loss(self, params, batch: jax.Array, key: jax.Array, sigma, beta):
        """Batch-mean negative beta-ELBO (+ prior) of one member, and its parts."""
        model, likelihood = self.model, self.config.likelihood
        mean, log_var = model.apply(params, batch, method=VAE.encode)

        def log_likelihood(z):
            outputs = model.apply(params, z, method=VAE.decode)
            return decoder_log_likelihood(likelihood, batch, outputs, sigma=sigma)

        terms = elbo(key, mean, log_var, log_likelihood, num_samples=self.config.num_samples)
        loss = terms.loss(beta)
        if self.config.weight_decay:
            # AEVB's N(0, I) prior on the parameters: weight_decay = 1/N makes it per datapoint.
            decay = 0.5 * self.config.weight_decay * squared_norm(params)
        else:  # A static zero: no pass over the parameters and no 0 * params in the gradient.
            decay = jnp.zeros_like(loss)
        loss = loss + decay
        return loss, StepMetrics(loss=loss, recon=jnp.mean(terms.recon), kl=jnp.mean(terms.kl),
                                 weight_decay=decay)

    def member_step(self, state: TrainState, batch: jax.Array, sigma, beta, seed):
        key = jax.random.fold_in(jax.random.key(seed), state.step)
        grads, metrics = jax.grad(self.member_loss, has_aux=True)(
            state.params, batch, key, sigma, beta)
        tx = make_optimizer(self.config.optimizer)(0.0)  # the rate lives in opt_state
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def population_step(self, state: TrainState, batch: jax.Array, hyper: Hyper):
        """One step of every member on the same batch: vmapped over the [P] axis.

        A population of one takes the member step unbatched: vmap over a [1] axis gives
        batched matmuls that XLA:CPU lays out with transposing copies (about a third of an
        MNIST-size step, ``benchmarks/train_step.py``).
        """
        if state.step.shape[0] == 1:
            member, member_hyper = jax.tree.map(lambda leaf: leaf[0], (state, hyper))
            new_state, metrics = self.member_step(member, batch, member_hyper.sigma,
                                                  member_hyper.beta, member_hyper.seed)
            return jax.tree.map(lambda leaf: leaf[None], (new_state, metrics))
        return jax.vmap(self.member_step, in_axes=(0, None, 0, 0, 0))(
            state, batch, hyper.sigma, hyper.beta, hyper.seed)

    def epoch(self, state: TrainState, train_data: jax.Array, epoch_index: jax.Array,
              hyper: Hyper) -> tuple[TrainState, StepMetrics]:
        """One epoch as a ``lax.scan`` over on-device batches; metrics are [steps, P]."""
        data_key = jax.random.fold_in(jax.random.key(self.config.seed), epoch_index)
        batches = data_lib.epoch_batches(data_key, train_data, self.config.batch_size)
        if self.config.binarize == "dynamic":
            batches = data_lib.dynamic_binarize(jax.random.fold_in(data_key, 1), batches)

        def body(carry, batch):
            batch = sharding.constrain_batch(batch, self.mesh, self.config.sharding)
            return self.population_step(carry, batch, hyper)

        return jax.lax.scan(body, state, batches)

    def evaluate_member(self, params, test_data: jax.Array, sigma, key):
        """Test metrics of one member on [N, D] data (L = 1 sample, analytic KL)."""
        model, likelihood = self.model, self.config.likelihood
        mean, log_var = model.apply(params, test_data, method=VAE.encode)

        def log_likelihood(z):
            outputs = model.apply(params, z, method=VAE.decode)
            return decoder_log_likelihood(likelihood, test_data, outputs, sigma=sigma)

        terms: ElboTerms = elbo(key, mean, log_var, log_likelihood, num_samples=1)
        k = self.config.eval_iwae_samples
        if k > 0:
            iwae = iwae_bound(jax.random.fold_in(key, 1), mean, log_var, log_likelihood,
                              num_samples=k, chunk_size=min(k, self.config.eval_iwae_chunk))
        else:
            iwae = jnp.full_like(terms.elbo, jnp.nan)
        return terms, iwae, mean

    def evaluate(self, state: TrainState, test_data: jax.Array, hyper: Hyper) -> EvalMetrics:
        """Per-member test ELBO, parts, IWAE bound and active units; each [P]."""
        key = jax.random.key(self.config.seed + 7919)
        terms, iwae, mean = jax.vmap(self.evaluate_member, in_axes=(0, None, 0, None))(
            state.params, test_data, hyper.sigma, key)
        active = jnp.sum(jnp.var(mean, axis=1) > 1e-2, axis=-1).astype(jnp.int32)
        return EvalMetrics(elbo=jnp.mean(terms.elbo, -1), recon=jnp.mean(terms.recon, -1),
                           kl=jnp.mean(terms.kl, -1), iwae=jnp.mean(iwae, -1),
                           active_units=active)

    def _expected_pixels(self, params, z: jax.Array) -> jax.Array:
        outputs = self.model.apply(params, z, method=VAE.decode)
        if "mean" in outputs:
            return outputs["mean"]
        if self.config.likelihood == "continuous_bernoulli":
            # The CB mean is not sigmoid(logits): showing lambda would be the classic mistake.
            return continuous_bernoulli_mean(outputs["logits"])
        return jax.nn.sigmoid(outputs["logits"])

    def decode_means(self, state: TrainState, z: jax.Array) -> jax.Array:
        """Expected pixels E[x|z] for z [N, Z], per member: [P, N, D]."""
        return jax.vmap(self._expected_pixels, in_axes=(0, None))(state.params, z)

    def reconstruct(self, state: TrainState, x: jax.Array) -> jax.Array:
        """E[x | z = E[z|x]] for x [N, D], per member: [P, N, D]."""

        def member(params):
            mean, _ = self.model.apply(params, x, method=VAE.encode)
            return self._expected_pixels(params, mean)

        return jax.vmap(member)(state.params)


def first_non_finite(metrics: StepMetrics) -> tuple[int, int, str] | None:
    """(step index in the epoch, member, term) of the first NaN/inf loss, or None."""
    loss = np.asarray(metrics.loss)
    if np.all(np.isfinite(loss)):
        return None
    step, member = (int(i) for i in np.argwhere(~np.isfinite(loss))[0])
    for term in ("recon", "kl", "weight_decay"):
        if not np.isfinite(np.asarray(getattr(metrics, term))[step, member]):
            return step, member, term
    return step, member, "loss"


def kl_per_dimension(model: VAE, params, x: jax.Array) -> jax.Array:
    """Mean KL per latent dimension over x [N, D] for one member's params: [Z]."""
    mean, log_var = model.apply(params, x, method=VAE.encode)
    return jnp.mean(jax.vmap(lambda m, lv: kl_standard_normal(m, lv, event_ndims=0))(
        mean, log_var), axis=0)


def num_parameters(params) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


# --------------------------------------------------------------------------- #
# The training loop: checkpoints, resumption, metrics, NaN guard, progress.
# --------------------------------------------------------------------------- #

# Keys that may change between a run and its resumption (they do not change the model
# or the random streams of the epochs already done).
RESUMABLE_KEYS = frozenset({
    "num_epochs", "eval_every_epochs", "eval_iwae_samples", "eval_iwae_chunk",
    "checkpoint_every_epochs", "keep_checkpoints", "progress", "sharding", "num_devices",
    "data_dir", "data_path",
})

METRIC_COLUMNS = (
    "epoch", "step", "member", "sigma", "beta", "learning_rate", "seed",
    "train_loss", "train_recon", "train_kl", "test_elbo", "test_recon", "test_kl",
    "test_iwae", "active_units", "wall_s",
)


# The keys of experiments/configs/default.py (tests/test_bad_inputs.py keeps them in step) and
# the type each must have. Experiment configs add keys of their own (aevb_*.py), so another
# key is not an error here: train_and_evaluate names it in a warning (the command line
# refuses unknown keys outright: lock_config).
_INT, _REAL, _STR, _BOOL, _NONE = "int", "real", "str", "bool", "None"
CONFIG_TYPES = {
    "dataset": (_STR,), "data_dir": (_STR, _NONE), "data_path": (_STR, _NONE),
    "binarize": (_STR, _NONE), "likelihood": (_STR,), "sigma": (_REAL,),
    "sigmoid_mean": (_BOOL,), "hidden": (_INT,), "latent": (_INT,),
    "init_scale": (_REAL, _NONE), "init_log_sigma": (_REAL,), "beta": (_REAL,),
    "num_samples": (_INT,), "optimizer": (_STR,), "learning_rate": (_REAL,),
    "weight_decay": (_REAL,), "batch_size": (_INT,), "num_epochs": (_INT,), "seed": (_INT,),
    "population": ("ConfigDict",), "eval_every_epochs": (_INT,), "eval_iwae_samples": (_INT,),
    "eval_iwae_chunk": (_INT,), "checkpoint_every_epochs": (_INT,), "keep_checkpoints": (_INT,),
    "sharding": (_STR,), "num_devices": (_INT, _NONE), "progress": (_BOOL,),
}
CONFIG_KEYS = tuple(CONFIG_TYPES)


def _has_type(value, kind: str) -> bool:
    if kind == _NONE:
        return value is None
    if kind == _BOOL:
        return isinstance(value, bool | np.bool_)
    if isinstance(value, bool | np.bool_):  # bool is an int to Python, never to a config
        return False
    if kind == _INT:
        return isinstance(value, int | np.integer)
    if kind == _REAL:
        return isinstance(value, int | float | np.integer | np.floating)
    if kind == _STR:
        return isinstance(value, str)
    return isinstance(value, ml_collections.ConfigDict)


def _check_config_types(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming a known key whose value has the wrong type.

    Keys absent from ``config`` are skipped: experiments validate their own configs with
    :func:`validate_config`, which need not hold every training key.
    """
    for key, kinds in CONFIG_TYPES.items():
        if key in config and not any(_has_type(config[key], kind) for kind in kinds):
            raise ValueError(f"config `{key}` must be {' or '.join(kinds)}, got "
                             f"{config[key]!r} ({type(config[key]).__name__}).")
    population = config.get("population")
    if not isinstance(population, ml_collections.ConfigDict):
        return
    for field in POPULATION_FIELDS:
        values = population.get(field)
        if values is None:
            continue
        kind = _INT if field == "seed" else _REAL
        if not isinstance(values, tuple | list) or not all(_has_type(v, kind) for v in values):
            raise ValueError(f"config `population.{field}` must be None or a tuple of {kind}s, "
                             f"got {values!r}.")


def check_config_keys(config: ml_collections.ConfigDict) -> list[str]:
    """Checks the keys of a training config; returns the top-level keys training ignores.

    Raises ValueError naming a missing key or an unknown ``population.<field>`` (a
    population field is a training key or a typo: nothing else reads that dict).
    """
    ignored = sorted(set(config.keys()) - set(CONFIG_KEYS))
    missing = sorted(set(CONFIG_KEYS) - set(config.keys()))
    population = config.get("population")
    if isinstance(population, ml_collections.ConfigDict):
        unknown = sorted(set(population.keys()) - set(POPULATION_FIELDS))
        if unknown:
            raise ValueError(f"unknown config key{'s' * (len(unknown) > 1)} "
                             f"{', '.join(f'`population.{k}`' for k in unknown)}; a population "
                             f"varies {', '.join(POPULATION_FIELDS)}.")
        missing += [f"population.{k}" for k in POPULATION_FIELDS if k not in population]
    if missing:
        raise ValueError(f"config lacks the key{'s' * (len(missing) > 1)} "
                         f"{', '.join(f'`{k}`' for k in missing)}; start from "
                         "experiments/configs/default.py:get_config().")
    return ignored


def validate_config(config: ml_collections.ConfigDict, dataset) -> None:
    """Raises ValueError naming the offending config key."""
    _check_config_types(config)
    for key, check in (("likelihood", check_likelihood), ("optimizer", make_optimizer)):
        try:
            check(config[key])
        except ValueError as err:
            raise ValueError(f"config `{key}`: {err}") from err
    for key in ("batch_size", "num_epochs", "num_samples", "hidden", "latent",
                "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"config `{key}` must be an int >= 1, got {value!r}.")
    if not config.weight_decay >= 0:
        raise ValueError(f"config `weight_decay` must be >= 0, got {config.weight_decay!r}.")
    if config.eval_iwae_samples < 0 or config.eval_iwae_chunk < 1:
        raise ValueError("config `eval_iwae_samples` must be >= 0 and `eval_iwae_chunk` >= 1.")
    if config.batch_size > dataset.train.shape[0]:
        raise ValueError(
            f"config `batch_size`={config.batch_size} exceeds the {dataset.train.shape[0]} "
            f"training examples of {dataset.name!r}.")
    if config.binarize not in (None, "static", "threshold", "dynamic"):
        raise ValueError(f"config `binarize` must be None, 'static', 'threshold' or 'dynamic', "
                         f"got {config.binarize!r}.")
    if config.likelihood == "bernoulli" and not dataset.binary and config.binarize is None:
        # Allowed (the point of an experiment), but say it: BCE on grey levels is no likelihood.
        print("[vaejax] note: Bernoulli likelihood on grey-level data is not a normalised "
              "density (use continuous_bernoulli or binarize).", flush=True)


def _load_data(config):
    binarize = None if config.binarize == "dynamic" else config.binarize
    try:
        return data_lib.load_dataset(config.dataset, data_dir=config.data_dir,
                                     path=config.data_path, binarize=binarize, seed=config.seed)
    except FileNotFoundError as err:  # say which config key points at the files
        key = "data_path" if config.dataset == "frey_face" else "data_dir"
        raise FileNotFoundError(f"config `{key}`={config[key]!r}: {err}") from err


def _check_resume_config(workdir, config) -> None:
    import json

    saved_path = workdir / "config.json"
    if not saved_path.exists():
        return
    try:
        saved = json.loads(saved_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{str(saved_path)!r}, the config of the run in this workdir, is not valid JSON "
            f"({err}); restore it or use a new --workdir.") from err
    current = json.loads(config.to_json_best_effort())
    differing = sorted(k for k in set(saved) | set(current)
                       if k not in RESUMABLE_KEYS and saved.get(k) != current.get(k))
    if differing:
        raise ValueError(
            f"workdir {str(workdir)!r} holds a run with a different config (keys: "
            f"{', '.join(differing)}); use a new --workdir or the same config to resume.")


def _read_metric_rows(path, last_epoch: int) -> list[list]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # Written atomically, so a malformed file was damaged from outside: never carry it on.
    bad = [i for i, row in enumerate(rows[1:], 2)
           if len(row) != len(METRIC_COLUMNS) or not row[0].isdigit()]
    if not rows or rows[0] != list(METRIC_COLUMNS) or bad:
        where = f"line {bad[0]}" if bad else "the header"
        raise ValueError(f"{str(path)!r} is corrupt ({where} is not a row of "
                         f"{len(METRIC_COLUMNS)} metrics); move it away to resume.")
    return [row for row in rows[1:] if int(row[0]) <= last_epoch]


def _named_shapes(tree) -> dict[str, tuple[int, ...]]:
    """{'params.decoder.out.kernel': shape, ...} for a state or orbax's metadata of one."""
    def name(path):
        return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                        for k in path)
    return {name(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _model_mismatch(step_dir, abstract) -> str | None:
    """How the checkpoint in ``step_dir`` differs from ``abstract`` in names or shapes.

    None when they agree, or when the checkpoint's metadata cannot be read (then the
    checkpoint is corrupt, not of another model).
    """
    import orbax.checkpoint as ocp

    try:
        stored = _named_shapes(ocp.StandardCheckpointer().metadata(step_dir / "default")
                               .item_metadata.tree)
    except Exception:  # unreadable metadata: reported as corrupt by the caller
        return None
    expected = _named_shapes(abstract)
    def params_first(names):  # parameters say more to a user than optimiser moments
        return sorted(names, key=lambda name: (not name.startswith("params"), name))

    if stored.keys() != expected.keys():
        parts = []
        for names, what in ((expected.keys() - stored.keys(), "lacks {} arrays this model has"),
                            (stored.keys() - expected.keys(), "holds {} arrays this model lacks")):
            if names:
                shown = ", ".join(f"`{name}`" for name in params_first(names)[:2])
                parts.append(f"it {what.format(len(names))} ({shown}, ...)")
        return "; ".join(parts)
    differing = params_first(name for name in expected if stored[name] != expected[name])
    if not differing:
        return None
    first = differing[0]
    return (f"{len(differing)} arrays differ in shape, e.g. `{first}` is {stored[first]} there "
            f"but {expected[first]} for this config (population size P and the layer sizes "
            "set these shapes)")


def _short(err: BaseException) -> str:
    """The gist of an orbax/tensorstore error: its first line without the spec dump, and
    of a long one its start (the kind of error) and end (the innermost cause)."""
    lines = str(err).split("[tensorstore_spec", 1)[0].strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 320 else f"{text[:100]} ... {text[-200:]}"


def _restore_checkpoint(manager, step: int, state: TrainState, checkpoint_dir) -> TrainState:
    """Restores checkpoint ``step`` into the shapes and shardings of ``state``.

    Raises ValueError naming the step folder when it holds another model (different
    shapes or arrays) or is corrupt or truncated. Orbax commits a step folder by renaming
    it once complete, so a killed run never leaves a partial one; a committed folder that
    does not restore was damaged afterwards. We do not fall back to an older checkpoint
    silently: the message says which folder to delete to resume from the previous one
    (training is deterministic, so the result is the same).
    """
    import orbax.checkpoint as ocp

    step_dir = (checkpoint_dir / str(step)).absolute()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    # orbax and tensorstore raise ValueError, KeyError, TypeError, RuntimeError, OSError...
    except Exception as err:
        mismatch = _model_mismatch(step_dir, abstract)
        if mismatch is not None:
            raise ValueError(
                f"checkpoint {str(step_dir)!r} was written by a different model: {mismatch}. "
                "Use a new --workdir, or the config that wrote it.") from err
        earlier = [s for s in manager.all_steps() if s < step]
        resume = (f"delete that folder to resume from the previous checkpoint (epoch "
                  f"{max(earlier)})" if earlier else "delete it to start again from epoch 0")
        raise ValueError(
            f"checkpoint {str(step_dir)!r} is corrupt or truncated ({_short(err)}); {resume}"
            " (training is deterministic: the result is the same), or use a new --workdir."
        ) from err


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Trains the configured population, resuming from ``workdir`` if it holds checkpoints.

    Writes to ``workdir``: ``config.json``, ``checkpoints/`` (orbax, atomic), ``metrics.csv``,
    TensorBoard events in ``tensorboard/``, ``samples.png``, ``reconstructions.png`` and
    ``summary.json``. Returns the summary dictionary.

    Raises:
      ValueError: bad config, data or workdir (names the key or path).
      NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
    """
    import orbax.checkpoint as ocp
    from tqdm import tqdm

    from vaejax import io as io_lib

    ignored = check_config_keys(config)
    if ignored:  # a typo such as `learnin_rate` would otherwise go unnoticed
        print(f"[vaejax] warning: training ignores the config keys "
              f"{', '.join(f'`{k}`' for k in ignored)} (not in "
              "experiments/configs/default.py).", flush=True)
    _check_config_types(config)
    workdir = io_lib.prepare_workdir(workdir)
    io_lib.remove_stale_temporaries(workdir)  # left by a run killed while writing a file
    if config.dataset not in data_lib.DATASETS:
        raise ValueError(f"config `dataset`={config.dataset!r} is unknown; expected one of "
                         f"{', '.join(data_lib.DATASETS)}.")
    dataset = _load_data(config)
    validate_config(config, dataset)
    _check_resume_config(workdir, config)
    hyper = make_hyper(config)
    size = int(hyper.sigma.shape[0])

    mesh = None
    if config.sharding != "none":
        mesh = sharding.make_mesh(config.num_devices)
        sharding.check_mode(config.sharding, mesh, population=size, batch_size=config.batch_size)
    trainer = Trainer(make_model(config, dataset.num_dims), config, dataset.num_dims, mesh)
    place = ((lambda t: sharding.put_population(t, mesh, config.sharding)) if mesh
             else (lambda t: t))
    train_data = sharding.put_replicated(jnp.asarray(dataset.train), mesh) if mesh else (
        jnp.asarray(dataset.train))
    test_data = jnp.asarray(dataset.test)
    hyper = place(hyper)

    init = jax.jit(trainer.init)
    epoch_fn = jax.jit(trainer.epoch, donate_argnums=(0,))
    evaluate = jax.jit(trainer.evaluate)
    state = place(init(hyper))

    manager = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                             enable_async_checkpointing=False))
    start_epoch = 0
    if manager.latest_step() is not None:
        start_epoch = manager.latest_step()
        state = _restore_checkpoint(manager, start_epoch, state, workdir / "checkpoints")
        print(f"[vaejax] resumed from epoch {start_epoch} in {workdir}", flush=True)
    io_lib.atomic_write_text(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")

    steps_per_epoch = data_lib.num_batches(dataset.train.shape[0], config.batch_size)
    metric_rows = _read_metric_rows(workdir / "metrics.csv", start_epoch)
    writer = _tensorboard_writer(workdir)
    hyper_host = jax.tree.map(np.asarray, hyper)
    timings: list[float] = []
    last_eval = None
    bar = tqdm(range(start_epoch, config.num_epochs), initial=start_epoch,
               total=config.num_epochs, desc=f"train P={size}", unit="epoch",
               disable=not config.progress, dynamic_ncols=True)
    wall_start = time.perf_counter()
    try:
        for epoch in bar:
            tic = time.perf_counter()
            state, step_metrics = epoch_fn(state, train_data, jnp.int32(epoch), hyper)
            step_metrics = jax.tree.map(np.asarray, step_metrics)  # waits for the epoch
            timings.append(time.perf_counter() - tic)
            bad = first_non_finite(step_metrics)
            if bad is not None:
                step, member, term = bad
                kept = manager.latest_step()
                kept = (f"the last good checkpoint (epoch {kept}) is kept" if kept is not None
                        else "no checkpoint had been written yet")
                raise NonFiniteLossError(
                    f"non-finite loss at step {epoch * steps_per_epoch + step + 1} (epoch "
                    f"{epoch + 1}), member {member} (sigma={hyper_host.sigma[member]:g}, "
                    f"beta={hyper_host.beta[member]:g}, lr={hyper_host.learning_rate[member]:g}):"
                    f" term '{term}' is {getattr(step_metrics, term)[step, member]}. Training "
                    f"stopped; {kept}.")
            done = epoch + 1
            rate = steps_per_epoch * size / timings[-1]
            bar.set_postfix(loss=f"{float(step_metrics.loss.mean()):.4g}",
                            model_steps_s=f"{rate:.0f}")
            if done % config.eval_every_epochs == 0 or done == config.num_epochs:
                last_eval = jax.tree.map(np.asarray, evaluate(state, test_data, hyper))
                for m in range(size):
                    metric_rows.append(_metric_row(done, done * steps_per_epoch, m, hyper_host,
                                                   step_metrics, last_eval,
                                                   time.perf_counter() - wall_start))
                io_lib.write_csv(workdir / "metrics.csv", METRIC_COLUMNS, metric_rows)
                _write_tensorboard(writer, done * steps_per_epoch, step_metrics, last_eval)
            if done % config.checkpoint_every_epochs == 0 or done == config.num_epochs:
                manager.save(done, args=ocp.args.StandardSave(state))
                manager.wait_until_finished()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        manager.close()

    if last_eval is None:  # Nothing left to train: evaluate the restored state.
        last_eval = jax.tree.map(np.asarray, evaluate(state, test_data, hyper))
    _write_images(trainer, state, dataset, workdir, hyper_host)
    steady = timings[1:] if len(timings) > 1 else timings
    seconds = float(np.median(steady)) if steady else float("nan")
    summary = {
        "dataset": dataset.name, "likelihood": config.likelihood, "population": size,
        "epochs": config.num_epochs, "steps_per_epoch": steps_per_epoch,
        "num_parameters_per_member": num_parameters(
            jax.tree.map(lambda a: a[0], state.params)),
        "median_epoch_seconds": seconds,
        "steps_per_second": steps_per_epoch / seconds,
        "model_steps_per_second": steps_per_epoch * size / seconds,
        "examples_per_second": steps_per_epoch * size * config.batch_size / seconds,
        "members": [
            {"sigma": float(hyper_host.sigma[m]), "beta": float(hyper_host.beta[m]),
             "learning_rate": float(hyper_host.learning_rate[m]), "seed": int(hyper_host.seed[m]),
             "test_elbo": float(last_eval.elbo[m]), "test_recon": float(last_eval.recon[m]),
             "test_kl": float(last_eval.kl[m]), "test_iwae": float(last_eval.iwae[m]),
             "active_units": int(last_eval.active_units[m])}
            for m in range(size)
        ],
    }
    io_lib.write_json(workdir / "summary.json", summary)
    return summary


def _metric_row(epoch, step, member, hyper, step_metrics, evals, wall):
    return [epoch, step, member, float(hyper.sigma[member]), float(hyper.beta[member]),
            float(hyper.learning_rate[member]), int(hyper.seed[member]),
            float(step_metrics.loss[:, member].mean()), float(step_metrics.recon[:, member].mean()),
            float(step_metrics.kl[:, member].mean()), float(evals.elbo[member]),
            float(evals.recon[member]), float(evals.kl[member]), float(evals.iwae[member]),
            int(evals.active_units[member]), round(wall, 3)]


def _tensorboard_writer(workdir):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # Optional: CSV metrics are always written.
        return None
    return SummaryWriter(str(workdir / "tensorboard"))


def _write_tensorboard(writer, step, step_metrics, evals) -> None:
    if writer is None:
        return
    for m in range(step_metrics.loss.shape[1]):
        prefix = f"member_{m:03d}"
        writer.add_scalar(f"{prefix}/train_loss", float(step_metrics.loss[:, m].mean()), step)
        for name in ("elbo", "recon", "kl", "iwae", "active_units"):
            value = float(getattr(evals, name)[m])
            if math.isfinite(value):  # IWAE is NaN when disabled: nothing to plot.
                writer.add_scalar(f"{prefix}/test_{name}", value, step)
    writer.flush()


def _write_images(trainer: Trainer, state: TrainState, dataset, workdir, hyper) -> None:
    from vaejax import io as io_lib
    from vaejax import plotting

    num = 16
    z = jax.random.normal(jax.random.key(trainer.config.seed + 1), (num, trainer.config.latent))
    samples = np.asarray(jax.jit(trainer.decode_means)(state, z))
    originals = dataset.test[:num]
    recons = np.asarray(jax.jit(trainer.reconstruct)(state, jnp.asarray(originals)))
    labels = [f"sigma={s:.3g} beta={b:.3g}" for s, b in zip(hyper.sigma, hyper.beta, strict=True)]
    io_lib.save_figure(plotting.image_rows_figure(
        samples, dataset.image_shape, labels, title="decoder means E[x|z], z ~ N(0, I)"),
        workdir / "samples")
    io_lib.save_figure(plotting.image_rows_figure(
        np.concatenate([originals[None], recons]), dataset.image_shape, ["data", *labels],
        title="reconstructions E[x | z = E[z|x]] (test set)"), workdir / "reconstructions")
