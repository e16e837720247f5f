"""Multi-device sharding checks, run by tests/test_sharding.py in a subprocess.

XLA reads ``--xla_force_host_platform_device_count`` once, when jax starts, so this script
must run in a fresh process with the flag in its environment. It prints one JSON object to
stdout; each section is either a dict of measurements or ``{"error": traceback}``, so the
test can say which check failed and why.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
        python tests/_sharding_check.py [section ...]

Sections: divisibility, population, data, end_to_end (all by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import default
from vaejax import data as data_lib
from vaejax import sharding, train
from vaejax import trainer as trainer_lib

NUM_EPOCHS = 2
SIGMAS = (0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)


def _config(population: int, batch_size: int, mode: str):
    config = default.get_config("smoke")
    config.population.sigma = SIGMAS[:population]
    config.population.seed = SEEDS[:population]
    config.train.batch_size = batch_size
    config.train.num_epochs = NUM_EPOCHS
    config.run.sharding = mode
    config.run.progress = False
    return config


def _relative_error(tree, reference) -> float:
    """max over leaves of max|a - b| / max|b|: float32 round-off gives ~1e-7 per step."""
    errors = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)),
        tree, reference)
    return max(jax.tree.leaves(errors))


def _placed(trainer, state, members, train_data):
    """Places the state, members and data as train_and_evaluate does."""
    if trainer.mesh is None:
        return jax.device_put(state), members, train_data
    mode = trainer.sharding
    sharding.check_mode(mode, trainer.mesh, population=members.size,
                        batch_size=trainer.batch_size)
    return (sharding.put_population(state, trainer.mesh, mode),
            sharding.put_population(members, trainer.mesh, mode),
            sharding.put_replicated(train_data, trainer.mesh))


def _train(trainer, initial_state, members, train_data):
    """NUM_EPOCHS epochs of ``trainer.run``, compiled once (also gives its HLO text)."""
    state, members, train_data = _placed(trainer, initial_state, members, train_data)
    steps = trainer.steps_per_epoch(int(train_data.shape[0]))
    compiled = jax.jit(trainer.run).lower(state, train_data, members, jnp.int32(0),
                                          jnp.int32(steps)).compile()
    for epoch in range(NUM_EPOCHS):
        state, metrics = compiled(state, train_data, members, jnp.int32(epoch * steps),
                                  jnp.int32((epoch + 1) * steps))
    return state, metrics, compiled.as_text()


def _layout(tree) -> dict:
    """How the leaves of a placed pytree are laid out over the devices."""
    leaves = jax.tree.leaves(tree)
    return {
        "num_leaves": len(leaves),
        "num_devices": [len(leaf.sharding.device_set) for leaf in leaves],
        "spec": [str(getattr(leaf.sharding, "spec", None)) for leaf in leaves],
        "num_addressable_shards": [len(leaf.addressable_shards) for leaf in leaves],
        "shard_leading_dims": [sorted({s.data.shape[0] for s in leaf.addressable_shards})
                               for leaf in leaves],
        "shard_trailing_dims_whole": [all(s.data.shape[1:] == leaf.shape[1:]
                                          for s in leaf.addressable_shards) for leaf in leaves],
        "distinct_shard_indices": [
            len({str(s.index) for s in leaf.addressable_shards}) for leaf in leaves],
        "fully_replicated": [bool(leaf.sharding.is_fully_replicated) for leaf in leaves],
    }


def _compare_mode(mode: str, population: int, batch_size: int, mesh_sizes) -> dict:
    """Trains with ``config.sharding=mode`` on meshes of ``mesh_sizes`` and without a mesh."""
    dataset = data_lib.load_dataset("digits")
    config = _config(population, batch_size, mode)
    reference, members = trainer_lib.build(config, dataset)
    reference = dataclasses.replace(reference, sharding="none")
    train_data = jnp.asarray(dataset.train)
    # The initial state does not depend on the mesh: built once, copied to host, then placed.
    initial = jax.tree.map(np.asarray, reference.jit.init(members))
    final, final_metrics, reference_hlo = _train(reference, initial, members, train_data)
    reference_params = jax.tree.map(np.asarray, final.params)
    result = {
        "population": population, "batch_size": batch_size,
        "reference_all_reduce": reference_hlo.count("all-reduce"),
        "reference_loss_finite": bool(np.all(np.isfinite(np.asarray(final_metrics.loss)))),
        "meshes": {},
    }
    for size in mesh_sizes:
        mesh = sharding.make_mesh(num_devices=size)
        trainer = dataclasses.replace(reference, mesh=mesh, sharding=mode)
        state, metrics, hlo = _train(trainer, initial, members, train_data)
        params = jax.tree.map(np.asarray, state.params)
        result["meshes"][str(size)] = {
            "mesh_size": int(mesh.size),
            "params_layout": _layout(state.params),
            "opt_state_layout": _layout(state.opt_state),
            "params_relative_error": _relative_error(params, reference_params),
            "loss_relative_error": _relative_error(np.asarray(metrics.loss),
                                                   np.asarray(final_metrics.loss)),
            "all_reduce": hlo.count("all-reduce"),
        }
    return result


def _divisibility_errors() -> dict:
    mesh = sharding.make_mesh()
    out = {}
    cases = {
        "population": dict(mode="population", population=6, batch_size=48),
        "data": dict(mode="data", population=2, batch_size=50),
        "population_ok": dict(mode="population", population=16, batch_size=50),
        "data_ok": dict(mode="data", population=3, batch_size=48),
        "none_ok": dict(mode="none", population=3, batch_size=50),
    }
    for name, case in cases.items():
        mode = case.pop("mode")
        try:
            sharding.check_mode(mode, mesh, **case)
            out[name] = None
        except ValueError as err:
            out[name] = str(err)
    return out


def _end_to_end() -> dict:
    """train_and_evaluate with sharding none/population/data: the same summary numbers."""
    summaries = {}
    with tempfile.TemporaryDirectory() as root:
        for mode in ("none", "population", "data"):
            config = _config(len(SIGMAS), 48, mode)
            config.eval.every_epochs = NUM_EPOCHS
            config.checkpoint.every_epochs = NUM_EPOCHS
            with contextlib.redirect_stdout(io.StringIO()):  # keep stdout for the JSON
                summaries[mode] = train.train_and_evaluate(config, Path(root) / mode)
        # Configs that check_mode must refuse before training starts (so the mesh path is
        # taken): P=3 and batch_size=50 on 8 devices, and an unknown mode.
        refused = {}
        for name, (population, batch_size, mode) in {
                "population": (3, 48, "population"), "data": (1, 50, "data"),
                "unknown": (1, 48, "model")}.items():
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    train.train_and_evaluate(_config(population, batch_size, mode),
                                             Path(root) / f"bad_{name}")
                refused[name] = None
            except ValueError as err:
                refused[name] = str(err)
    elbos = {mode: [m["test_elbo"] for m in s["members"]] for mode, s in summaries.items()}
    iwaes = {mode: [m["test_iwae"] for m in s["members"]] for mode, s in summaries.items()}
    return {"test_elbo": elbos, "test_iwae": iwaes,
            "population": {mode: s["population"] for mode, s in summaries.items()},
            "refused": refused}


def _section(function):
    try:
        return function()
    except Exception:  # Reported to the test, which fails with the traceback.
        return {"error": traceback.format_exc()}


SECTIONS = {
    "divisibility": lambda: _divisibility_errors(),
    "population": lambda: _compare_mode("population", len(SIGMAS), 48, (8, 1, 2, 4)),
    "data": lambda: _compare_mode("data", 2, 48, (8, 2, 4)),
    "end_to_end": lambda: _end_to_end(),
}


def main(names: list[str]) -> None:
    results = {"device_count": jax.device_count(), "platform": jax.devices()[0].platform}
    for name in names or SECTIONS:
        start = time.process_time()
        results[name] = _section(SECTIONS[name])
        results[name + "_cpu_seconds"] = time.process_time() - start
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
