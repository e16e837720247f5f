"""Determinism: the same command with the same seed gives bit-identical results on one machine.

``python -m experiments.train`` runs twice, side by side, in two fresh processes with no
shared compilation cache (each compiles its own programs), on the smoke config of the bundled
digits with a population of two and the IWAE bound on. Compared byte for byte: metrics.csv
without its ``wall_s`` column (the only wall-clock column: seconds since the start, rounded
to ms), every test number of summary.json (its timing keys excluded), the final checkpoint
(parameters and optimiser state) and the figures. tests/test_train.py checks the same in
one process (runs that may share compiled programs); this is the command a user reruns.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from helpers import REPO, restore

COMMAND = ("-m", "experiments.train", "--config=experiments/configs/default.py:smoke",
           "--config.population.sigma=(0.1,0.3)", "--config.seed=3",
           "--config.run.progress=False")
TIMING_KEYS = {"steps_per_second", "model_steps_per_second", "examples_per_second"}


def _run(workdir: Path, log: Path) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, *COMMAND, f"--workdir={workdir}"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _metrics_csv_without_wall_time(workdir: Path) -> str:
    with open(workdir / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    wall = rows[0].index("wall_s")
    out = io.StringIO()
    csv.writer(out).writerows([row[:wall] + row[wall + 1:] for row in rows])
    return out.getvalue()


def test_same_command_twice_gives_bit_identical_results(tmp_path):
    runs = [tmp_path / "first", tmp_path / "second"]
    processes = [_run(workdir, tmp_path / f"{workdir.name}.log") for workdir in runs]
    for workdir, process in zip(runs, processes, strict=True):
        try:
            returncode = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert returncode == 0, (tmp_path / f"{workdir.name}.log").read_text()[-3000:]

    first, second = runs
    # The CSV holds repr(float): equal text is equal bits. Every column but wall_s.
    metrics = _metrics_csv_without_wall_time(first)
    assert metrics.count("\n") == 1 + 3 * 2  # header, 3 epochs x 2 members
    assert metrics == _metrics_csv_without_wall_time(second)

    summaries = [json.loads((workdir / "summary.json").read_text()) for workdir in runs]
    assert all(np.isfinite(member["test_iwae"]) for member in summaries[0]["members"])
    for summary in summaries:
        for key in TIMING_KEYS:
            summary.pop(key)
    assert json.dumps(summaries[0], sort_keys=True) == json.dumps(summaries[1], sort_keys=True)

    (step, state, _), (other_step, other_state, _) = (restore(first / "checkpoints"),
                                                      restore(second / "checkpoints"))
    assert step == other_step == 3 * (1500 // 50)
    leaves, other_leaves = (jax.tree_util.tree_flatten_with_path(tree)[0]
                            for tree in (state, other_state))
    for (path, leaf), (_, other) in zip(leaves, other_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(other),
                                      err_msg=jax.tree_util.keystr(path))

    for name in ("samples.png", "reconstructions.png", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
