"""Helpers shared by the tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_config(variant: str | None = "smoke", **overrides):
    """The default training config (smoke size by default), without progress bar or IWAE.

    Overrides use ``group__key`` for ``config.group.key`` (``train__num_epochs=2``); a
    key that does not exist raises (a typo would otherwise add a key).
    """
    from experiments.configs.default import get_config

    config = get_config(variant)
    config.run.progress = False
    config.eval.iwae_samples = 0
    for name, value in overrides.items():
        *parents, leaf = name.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node:
            raise KeyError(name)
        node[leaf] = value
    return config


def leaves(tree) -> dict[str, np.ndarray]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def assert_trees_close(actual, expected, *, rtol: float, label: str = "") -> None:
    """Equal leaves: exactly if rtol == 0, else max|a - b| <= rtol * max|b| per leaf.

    The tolerance is relative to a leaf's scale, not to each element: batched and single
    matmuls round differently, and after tens of Adam steps an element near zero carries
    the absolute error of its leaf.
    """
    actual, expected = leaves(actual), leaves(expected)
    assert actual.keys() == expected.keys(), label
    for path, value in expected.items():
        assert actual[path].shape == value.shape and actual[path].dtype == value.dtype, path
        if rtol == 0:
            np.testing.assert_array_equal(actual[path], value, err_msg=f"{label}{path}")
            continue
        error = np.max(np.abs(actual[path].astype(np.float64) - value), initial=0.0)
        scale = np.max(np.abs(value), initial=0.0)
        assert error <= rtol * scale, f"{label}{path}: max error {error:.3g}, scale {scale:.3g}"


def member(tree, m: int):
    """Member m of a stacked [P, ...] tree, as numpy."""
    return jax.tree.map(lambda leaf: np.asarray(leaf)[m], tree)


def checkpoint_steps(directory) -> list[int]:
    """Committed orbax step folders in ``directory`` (orbax renames a finished one)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def restore(directory, step: int | None = None):
    """(step, state as nested dicts, history) of the newest (or given) checkpoint."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(Path(directory).absolute())
    try:
        step = manager.latest_step() if step is None else step
        assert step is not None, f"no checkpoint in {directory}"
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), history=ocp.args.JsonRestore()))
        return step, restored.state, restored.history["records"]
    finally:
        manager.close()


def metric_rows(workdir) -> list[dict[str, str]]:
    with open(Path(workdir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_wall_time(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def cli_env(cache_dir=None) -> dict[str, str]:
    """The environment of a subprocess of the repository (CPU; optional compile cache)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    if cache_dir is not None:  # later processes load what the first one compiled
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def run_python(args, *, cwd=REPO, timeout=300, check=True, cache_dir=None):
    """``python *args`` in a subprocess; asserts success unless ``check=False``."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=cli_env(cache_dir),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def record_fits(monkeypatch) -> list:
    """Wraps ``experiments.common.train`` so that every FitResult it returns is recorded.

    Returns the list the results are appended to (e.g. to check that a rerun resumed each
    training from its checkpoint without taking a step).
    """
    from experiments import common

    fits, train = [], common.train

    def spy(*args, **kwargs):
        fits.append(train(*args, **kwargs))
        return fits[-1]

    monkeypatch.setattr(common, "train", spy)
    return fits


def wait_for(process, log, expected: int = 0, timeout: float = 300) -> str:
    """Waits for a subprocess writing to the file ``log``; asserts its exit code.

    Kills it if it outlives ``timeout`` seconds. Returns the log's text.
    """
    try:
        returncode = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = Path(log).read_text()
    assert returncode == expected, f"exit {returncode}, expected {expected}:\n{output[-3000:]}"
    return output


def dot_precisions(jaxpr) -> list:
    """The ``precision`` of every dot_general in ``jaxpr`` and its sub-jaxprs, in order."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, ClosedJaxpr):
                    found += dot_precisions(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    found += dot_precisions(sub)
    return found
