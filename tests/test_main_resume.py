"""The main job killed part-way resumes where it stopped and writes the same report.

``python -m experiments.main --smoke`` runs two experiments (gradient_equivalence, then
sigma_sweep with a checkpoint after every epoch). One run is killed with SIGKILL once
sigma_sweep has saved a checkpoint of its population; the same command then resumes it:
gradient_equivalence is not run again (its section was kept), sigma_sweep's training
restores its checkpoint, and report.md and every CSV equal those of an uninterrupted run
(but for the wall-time lines).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO, checkpoint_steps, cli_env, wait_for

ONLY = ("--only", "gradient_equivalence", "sigma_sweep")


def _start(results: Path, log: Path, cache: Path, *flags) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "experiments.main", "--smoke", *ONLY,
                                 "--results", str(results), *flags], cwd=REPO,
                                env=cli_env(cache), stdout=out, stderr=subprocess.STDOUT)


def _report(run: Path) -> str:
    text = (run / "report.md").read_text()
    text = re.sub(r"_Wall time: [0-9.]+ s\._", "", text)
    return re.sub(r"this invocation took [0-9.]+ s", "", text)


def test_killed_main_job_resumes_and_writes_the_uninterrupted_report(tmp_path):
    cache = tmp_path / "jax_cache"
    killed_root, reference_root = tmp_path / "killed", tmp_path / "reference"
    victim = _start(killed_root, tmp_path / "killed.log", cache)
    checkpoints = killed_root / "latest" / "checkpoints" / "sigma_sweep" / "fixed"
    try:
        deadline = time.monotonic() + 400
        while not checkpoint_steps(checkpoints):
            assert victim.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no sigma_sweep checkpoint within 400 s"
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    run = (killed_root / "latest").resolve()
    assert not (run / "report.md").exists(), "the job ended before the kill"
    assert (run / "sections" / "gradient_equivalence.json").exists()
    killed_at = checkpoint_steps(checkpoints)

    reference = _start(reference_root, tmp_path / "reference.log", cache)
    resumed = _start(killed_root, tmp_path / "resumed.log", cache)
    output = wait_for(resumed, tmp_path / "resumed.log", timeout=600)
    wait_for(reference, tmp_path / "reference.log", timeout=600)
    assert f"resuming the unfinished run {run}" in output, output[-3000:]
    assert "gradient_equivalence] wrote" not in output  # the finished experiment was skipped
    assert min(checkpoint_steps(checkpoints)) >= min(killed_at)

    reference_run = (reference_root / "latest").resolve()
    assert _report(run) == _report(reference_run)
    for csv in sorted(p.name for p in reference_run.glob("*.csv")):
        assert (run / csv).read_text() == (reference_run / csv).read_text(), csv
    # A third call starts nothing new: the run is finished, so a new run would begin;
    # --name resumes the finished one and only rewrites the report.
    again = _start(killed_root, tmp_path / "again.log", cache, "--name", run.name)
    wait_for(again, tmp_path / "again.log", timeout=600)
    assert _report(run) == _report(reference_run)
