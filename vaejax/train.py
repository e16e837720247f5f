"""The training job: one config -> a trained population in a workdir, resumable at any point.

:func:`train_and_evaluate` is what ``./launch.sh train`` runs. It reads the training
groups of a config (:mod:`vaejax.config`), trains with the engine (:func:`vaejax.trainer.fit`),
evaluates on the test set every ``eval.every_epochs``, and writes to the workdir:

    config.json        the training keys of the run
    checkpoints/       orbax step folders: state + metric records (atomic)
    metrics.csv        one row per evaluation and member (METRIC_COLUMNS)
    tensorboard/       the same as TensorBoard scalars (when tensorboardX is installed)
    samples.png, reconstructions.png, summary.json

Rerunning the same command resumes from the newest checkpoint; the end result is the
same as an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vaejax import config as config_lib
from vaejax import data as data_lib
from vaejax import io as io_lib
from vaejax import metrics as metrics_lib
from vaejax import sharding
from vaejax import trainer as trainer_lib
from vaejax.checkpoints import Checkpointer

METRIC_COLUMNS = (
    "epoch", "step", "member", "sigma", "beta", "learning_rate", "seed",
    "train_loss", "train_recon", "train_kl", "test_elbo", "test_recon", "test_kl",
    "test_iwae", "active_units", "wall_s",
)
_TENSORBOARD = ("train_loss", "test_elbo", "test_recon", "test_kl", "test_iwae",
                "active_units")

# Keys that may change between a run and its resumption (they change neither the model nor
# the random streams of the steps already taken).
RESUMABLE_KEYS = frozenset({
    "train.num_epochs", "eval.every_epochs", "eval.iwae_samples", "eval.iwae_chunk",
    "eval.chunk", "checkpoint.every_epochs", "checkpoint.keep", "run.progress",
    "run.sharding", "run.num_devices", "data.data_dir", "data.data_path",
})


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
    """The data set of ``config.data`` (static binarisation applied; dynamic is per batch)."""
    data = config.data
    binarize = None if data.binarize == "dynamic" else data.binarize
    try:
        dataset = data_lib.load_dataset(data.dataset, data_dir=data.data_dir,
                                        path=data.data_path, binarize=binarize, seed=config.seed)
    except FileNotFoundError as err:  # say which config key points at the files
        key = "data.data_path" if data.dataset == "frey_face" else "data.data_dir"
        value = data.data_path if data.dataset == "frey_face" else data.data_dir
        raise FileNotFoundError(f"config `{key}`={value!r}: {err}") from err
    if data.squeeze:
        e = np.float32(data.squeeze)
        dataset = dataclasses.replace(dataset, train=e + (1 - 2 * e) * dataset.train,
                                      test=e + (1 - 2 * e) * dataset.test, binary=False)
    return dataset


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError when ``workdir`` holds a run of a different model or random streams."""
    saved_path = workdir / "config.json"
    if not saved_path.exists():
        return
    try:
        saved = _flat(json.loads(saved_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(
            f"{str(saved_path)!r}, the config of the run in this workdir, is not valid JSON "
            f"({err}); restore it or use a new --workdir.") from err
    current = _flat(json.loads(json.dumps(config_lib.describe(config), default=str)))
    differing = sorted(k for k in set(saved) | set(current)
                       if k not in RESUMABLE_KEYS and saved.get(k) != current.get(k))
    if differing:
        raise ValueError(
            f"workdir {str(workdir)!r} holds a run with a different config (keys: "
            f"{', '.join(differing)}); use a new --workdir or the same config to resume.")


def _eval_hook(trainer, members, test_data, wall_start) -> trainer_lib.Hook:
    host = jax.tree.map(np.asarray, members)

    def evaluate(ctx: trainer_lib.HookContext):
        evals = jax.tree.map(np.asarray, trainer.jit.evaluate(ctx.state, test_data, members))
        block = ctx.block
        wall = round(time.perf_counter() - wall_start, 3)
        return [{"epoch": ctx.step // ctx.steps_per_epoch, "step": ctx.step, "member": m,
                 "sigma": float(host.sigma[m]), "beta": float(host.beta[m]),
                 "learning_rate": float(host.learning_rate[m]), "seed": int(host.seed[m]),
                 "train_loss": float(block.loss[m]), "train_recon": float(block.recon[m]),
                 "train_kl": float(block.kl[m]), "test_elbo": float(evals.elbo[m]),
                 "test_recon": float(evals.recon[m]), "test_kl": float(evals.kl[m]),
                 "test_iwae": float(evals.iwae[m]), "active_units": int(evals.active_units[m]),
                 "wall_s": wall}
                for m in range(members.size)]

    return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Trains the configured population, resuming from ``workdir`` if it holds checkpoints.

    Returns the summary dictionary (also written to ``summary.json``).

    Raises:
      ValueError: bad config, data or workdir (names the key or path).
      FileNotFoundError: data files absent (names the config key).
      NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
    """
    config_lib.validate(config)
    workdir = io_lib.prepare_workdir(workdir)
    io_lib.remove_stale_temporaries(workdir)  # left by a run killed while writing a file
    dataset = load_data(config)
    if (config.model.likelihood == "bernoulli" and not dataset.binary
            and config.data.binarize is None):
        # Allowed (the point of an experiment), but say it: BCE on grey levels is no likelihood.
        print("[vaejax] note: Bernoulli likelihood on grey-level data is not a normalised "
              "density (use continuous_bernoulli or data.binarize).", flush=True)
    check_resume_config(workdir, config)

    mesh = None
    size = config_lib.population_size(config)
    if config.run.sharding != "none":
        mesh = sharding.make_mesh(config.run.num_devices)
        sharding.check_mode(config.run.sharding, mesh, population=size,
                            batch_size=config.train.batch_size)
    trainer, members = trainer_lib.build(config, dataset, mesh=mesh)
    place = ((lambda t: sharding.put_population(t, mesh, config.run.sharding)) if mesh
             else (lambda t: t))
    train_data = jnp.asarray(dataset.train)
    if mesh is not None:
        train_data = sharding.put_replicated(train_data, mesh)
    test_data = jnp.asarray(dataset.test)
    members = place(members)
    state = place(trainer.jit.init(members))
    if metrics_lib.is_writer():
        io_lib.write_json(workdir / "config.json", config_lib.describe(config))

    per_epoch = trainer.steps_per_epoch(dataset.train.shape[0])
    writer = metrics_lib.MetricsWriter(workdir, METRIC_COLUMNS, _TENSORBOARD)
    wall_start = time.perf_counter()
    evaluate = _eval_hook(trainer, members, test_data, wall_start)

    def evaluate_and_write(ctx):
        records = evaluate(ctx)
        writer.write(ctx.history + records, records)
        return records

    hooks = [trainer_lib.Hook(evaluate_and_write, every_steps=config.eval.every_epochs * per_epoch)]
    checkpoints = Checkpointer(workdir / "checkpoints", keep=config.checkpoint.keep)
    try:
        latest = checkpoints.latest_step()
        if latest is not None:
            print(f"[vaejax] resumed from step {latest} (epoch {latest // per_epoch}) in "
                  f"{workdir}", flush=True)
        result = trainer_lib.fit(
            trainer, state, train_data, members, num_steps=config.train.num_epochs * per_epoch,
            hooks=hooks, checkpoints=checkpoints,
            checkpoint_every_steps=config.checkpoint.every_epochs * per_epoch,
            progress=config.run.progress, desc=f"train P={members.size}")
    finally:
        writer.close()
        checkpoints.close()
    state = result.state
    writer.write(result.history)  # the CSV of a resumed or finished run holds every record
    final = jax.tree.map(np.asarray, trainer.jit.evaluate(state, test_data, members))
    _write_images(trainer, state, members, dataset, workdir, config.seed)
    steady = result.block_seconds[1:] or result.block_seconds
    steady_steps = result.block_steps[1:] or result.block_steps
    seconds_per_step = (float(np.sum(steady)) / max(float(np.sum(steady_steps)), 1)
                        if steady else float("nan"))
    host = jax.tree.map(np.asarray, members)
    summary = {
        "dataset": dataset.name, "likelihood": config.model.likelihood,
        "population": members.size, "epochs": config.train.num_epochs,
        "steps_per_epoch": per_epoch,
        "num_parameters_per_member": trainer_lib.num_parameters(
            jax.tree.map(lambda a: a[0], state.params)),
        "steps_per_second": 1.0 / seconds_per_step,
        "model_steps_per_second": members.size / seconds_per_step,
        "examples_per_second": members.size * config.train.batch_size / seconds_per_step,
        "members": [
            {"sigma": float(host.sigma[m]), "beta": float(host.beta[m]),
             "learning_rate": float(host.learning_rate[m]), "seed": int(host.seed[m]),
             "latent": int(host.latent[m]),
             "test_elbo": float(final.elbo[m]), "test_recon": float(final.recon[m]),
             "test_kl": float(final.kl[m]), "test_iwae": float(final.iwae[m]),
             "active_units": int(final.active_units[m])}
            for m in range(members.size)
        ],
    }
    if metrics_lib.is_writer():
        io_lib.write_json(workdir / "summary.json", summary)
    return summary


def _write_images(trainer, state, members, dataset, workdir: Path, seed: int) -> None:
    num = 16
    z = jax.random.normal(jax.random.key(seed + 1), (num, trainer.max_latent))
    samples = np.asarray(trainer.jit.decode_means(state, z, members))
    originals = dataset.test[:num]
    recons = np.asarray(trainer.jit.reconstruct(state, jnp.asarray(originals), members))
    host = jax.tree.map(np.asarray, members)
    labels = [f"sigma={s:.3g} beta={b:.3g}" for s, b in zip(host.sigma, host.beta, strict=True)]
    metrics_lib.write_image_rows(workdir / "samples", samples, dataset.image_shape, labels,
                                 title="decoder means E[x|z], z ~ N(0, I)")
    metrics_lib.write_image_rows(workdir / "reconstructions",
                                 np.concatenate([originals[None], recons]), dataset.image_shape,
                                 ["data", *labels],
                                 title="reconstructions E[x | z = E[z|x]] (test set)")
