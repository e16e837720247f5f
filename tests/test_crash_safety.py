"""Crash safety: a training run killed again and again ends exactly where an uninterrupted one does.

One run is interrupted five times, each time at a point drawn from a seeded generator, and
restarted with the same command after each interruption:

1. SIGKILL while checkpoint e1 is being written, before any array is (orbax's temporary
   folder exists, nothing in it is committed);
2. SIGKILL after every file of checkpoint e2 is written, just before the rename that
   commits it (the most complete partial checkpoint there is);
3. SIGKILL in the middle of rewriting metrics.csv (half of the new bytes written);
4. SIGKILL from outside at a random moment after the run has made progress: during a step
   (an epoch is a few hundred steps, a checkpoint a small part of it);
5. a NaN loss at a random epoch: the NaN guard stops the run (exit status 1) naming the
   step and the term, and keeps the last good checkpoint.

The in-process kills come from tests/_crash_run.py, which runs ``experiments.train`` with one
patched function and kills itself with SIGKILL at that point; the library has no test hooks.

After every interruption: each committed checkpoint folder is complete (orbax's
commit_success.txt), no partial one carries a step name, metrics.csv and config.json parse
completely (they are replaced atomically, so they hold the previous complete version), and
no summary exists yet. Each restart resumes from the newest complete checkpoint, never from
the partial one. At the end the parameters and optimiser state equal an uninterrupted run's
bit for bit, and so do metrics.csv (but for its wall_s column) and the summary's test
numbers. Sizes are tiny: 'synthetic' (D = 16), batches of 5, hidden 16, two members.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from helpers import REPO, restore, wait_for

from vaejax import train

HELPER = REPO / "tests" / "_crash_run.py"
NUM_EPOCHS = 12
STEPS = 900 // 5  # steps per epoch; checkpoints are labelled by step
FLAGS = ("--config=experiments/configs/default.py:smoke", "--config.data.dataset=synthetic",
         f"--config.train.num_epochs={NUM_EPOCHS}", "--config.train.batch_size=5",
         "--config.model.hidden=16", "--config.population.sigma=(0.1,0.3)",
         "--config.checkpoint.every_epochs=1", "--config.checkpoint.keep=2",
         "--config.eval.every_epochs=3", "--config.eval.iwae_samples=0",
         "--config.run.progress=False")
SEED = 20_240_611  # the kill plan; the same plan on every run
KILLED = -signal.SIGKILL


def _start(workdir: Path, log: Path, cache: Path, **faults) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           # Later processes load what the first compiled (the same programs every time).
           "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **faults}
    env.pop("VAEJAX_KILL", None) if "VAEJAX_KILL" not in faults else None
    with open(log, "w") as out:  # a file, not a pipe that nobody drains
        return subprocess.Popen([sys.executable, str(HELPER), *FLAGS, f"--workdir={workdir}"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _step_folders(workdir: Path) -> list[Path]:
    folder = workdir / "checkpoints"
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


def _committed(workdir: Path) -> list[int]:
    """Committed checkpoints, as epochs."""
    return sorted(int(p.name) // STEPS for p in _step_folders(workdir) if p.name.isdigit())


def _check_interrupted_workdir(workdir: Path) -> int:
    """The invariants after any interruption; returns the newest committed epoch."""
    for folder in _step_folders(workdir):
        if folder.name.isdigit():  # committed by rename: complete
            assert (folder / "commit_success.txt").is_file(), folder
            assert (folder / "state" / "_METADATA").is_file(), folder
        else:  # only orbax's own temporary folders may be partial
            assert folder.name.endswith(".orbax-checkpoint-tmp"), folder
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["num_epochs"] == NUM_EPOCHS
    if (workdir / "metrics.csv").exists():
        with open(workdir / "metrics.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == list(train.METRIC_COLUMNS), rows[0]
        for row in rows[1:]:
            assert len(row) == len(train.METRIC_COLUMNS), row
            assert int(row[0]) % 3 == 0 and all(float(v) == float(v) for v in row[7:13]), row
    assert not (workdir / "summary.json").exists(), "the run was not interrupted"
    committed = _committed(workdir)
    assert committed, "no checkpoint before the interruption"
    return committed[-1]


def _resumed_from(output: str) -> int:
    """The epoch a run resumed from."""
    match = re.search(r"resumed from step (\d+) \(epoch (\d+)\)", output)
    assert match, output[-3000:]
    assert int(match.group(1)) == STEPS * int(match.group(2))
    return int(match.group(2))


def _restore(workdir: Path):
    step, state, _ = restore(workdir / "checkpoints")
    return step // STEPS, state


def _metrics_without_wall_time(workdir: Path) -> list[dict]:
    with open(workdir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def test_killed_four_times_and_stopped_by_a_nan_then_equal_to_an_uninterrupted_run(tmp_path):
    rng = np.random.default_rng(SEED)
    crashed, uninterrupted, cache = tmp_path / "crashed", tmp_path / "uninterrupted", (
        tmp_path / "jax_cache")
    # The reference runs alongside the first attempts.
    reference = _start(uninterrupted, tmp_path / "uninterrupted.log", cache)
    kills = 0

    def attempt(name: str, expected: int, **faults) -> str:
        log = tmp_path / f"{name}.log"
        return wait_for(_start(crashed, log, cache, **faults), log, expected)

    # 1. Killed while checkpoint e1 is being written, before any array.
    e1 = int(rng.integers(2, 5))
    attempt("checkpoint_begin", KILLED, VAEJAX_KILL=f"checkpoint_begin:{e1 * STEPS}")
    kills += 1
    newest = _check_interrupted_workdir(crashed)
    assert newest == e1 - 1
    assert (crashed / "checkpoints" / f"{e1 * STEPS}.orbax-checkpoint-tmp").is_dir()

    # 2. Killed with checkpoint e2 fully written but not committed.
    e2 = int(rng.integers(e1 + 1, e1 + 4))
    output = attempt("checkpoint_commit", KILLED,
                     VAEJAX_KILL=f"checkpoint_commit:{e2 * STEPS}")
    kills += 1
    assert _resumed_from(output) == newest  # not from the partial folder of e1
    partial = crashed / "checkpoints" / f"{e2 * STEPS}.orbax-checkpoint-tmp"
    assert (partial / "state" / "_METADATA").is_file(), "the kill came before the data"
    newest = _check_interrupted_workdir(crashed)
    assert newest == e2 - 1

    # 3. Killed half-way through the next rewrite of metrics.csv.
    before = (crashed / "metrics.csv").read_bytes()
    output = attempt("metrics_write", KILLED, VAEJAX_KILL="file:metrics.csv:1")
    kills += 1
    assert _resumed_from(output) == newest  # not from the uncommitted checkpoint e2
    assert (crashed / "metrics.csv").read_bytes() == before  # the old file, untouched
    assert list(crashed.glob(".metrics.csv.*.tmp")), "the kill came before the write"
    newest = _check_interrupted_workdir(crashed)

    # 4. Killed from outside at a random moment once this attempt has saved a checkpoint.
    log = tmp_path / "random_kill.log"
    victim = _start(crashed, log, cache)
    try:
        deadline = time.monotonic() + 240
        while not _committed(crashed) or _committed(crashed)[-1] <= newest:
            assert victim.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no progress within 240 s"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))  # epochs take ~0.15 s: mostly inside a step
        victim.send_signal(signal.SIGKILL)
        output = wait_for(victim, log, KILLED)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    kills += 1
    assert _resumed_from(output) == newest
    assert not list(crashed.glob(".metrics.csv.*.tmp")), "stale temporary file left"
    newest = _check_interrupted_workdir(crashed)
    assert newest < NUM_EPOCHS, "the run ended before the kill"

    # 5. A NaN loss in a later epoch: a clear stop, the last good checkpoint kept.
    bad_epoch = int(rng.integers(newest + 1, NUM_EPOCHS))  # 1-based epoch of the NaN
    bad_step = (bad_epoch - 1) * STEPS + 4  # 0-based: step 5 of that epoch
    output = attempt("nan", 1, VAEJAX_POISON_STEP=str(bad_step))
    assert _resumed_from(output) == newest
    message = re.search(r"error: (.*non-finite loss.*)", output)
    assert message, output[-3000:]
    assert f"at step {bad_step + 1} (epoch {bad_epoch})" in output, message.group(1)
    assert "member 1 (sigma=0.3" in output and "term 'recon'" in output, message.group(1)
    assert f"the last good checkpoint (step {(bad_epoch - 1) * STEPS}) is kept" in output
    newest = _check_interrupted_workdir(crashed)
    assert newest == bad_epoch - 1

    # The same command once more: to the end.
    output = attempt("final", 0)
    assert _resumed_from(output) == newest
    wait_for(reference, tmp_path / "uninterrupted.log", 0)

    step, state = _restore(crashed)
    reference_step, reference_state = _restore(uninterrupted)
    assert step == reference_step == NUM_EPOCHS
    for (path, leaf), (_, expected) in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                                           jax.tree_util.tree_flatten_with_path(
                                               reference_state)[0], strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(expected),
                                      err_msg=jax.tree_util.keystr(path))
    assert _metrics_without_wall_time(crashed) == _metrics_without_wall_time(uninterrupted)
    summary = json.loads((crashed / "summary.json").read_text())
    expected = json.loads((uninterrupted / "summary.json").read_text())
    assert json.dumps(summary["members"], sort_keys=True) == json.dumps(expected["members"],
                                                                         sort_keys=True)
    for name in ("samples.png", "reconstructions.png"):
        assert (crashed / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert not [p for p in crashed.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in _step_folders(crashed) if not p.name.isdigit()]
    print(f"\n[crash safety] survived {kills} SIGKILLs and a NaN stop (seed {SEED}: "
          f"checkpoint {e1} begun, checkpoint {e2} uncommitted, metrics.csv half-written, "
          f"a random moment; NaN in epoch {bad_epoch})")


# Ways to write a file other than through vaejax.io (temporary file + os.replace).
_DIRECT_WRITES = re.compile(
    r"\.write_text\(|\.write_bytes\(|\bopen\([^)]*['\"][wax]b?\+?['\"]|savefig\(\s*(?!buffer)"
    r"|np\.save\w*\(|\.to_csv\(|json\.dump\(|pickle\.dump\(")


def test_result_files_are_written_only_through_vaejax_io():
    """Every CSV, JSON, figure and report goes through vaejax.io's atomic writers, so a kill
    leaves the previous complete file or the new one (metrics.csv: the test above)."""
    offenders = []
    for folder in ("vaejax", "experiments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "io.py" and folder == "vaejax":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _DIRECT_WRITES.search(line.split("#")[0]):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
