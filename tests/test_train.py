"""The training job (vaejax.train / ``./launch.sh train``): every head trains, files and
summary, resumption (also after SIGKILL), the NaN stop, bad config, determinism.

Runs are tiny (smoke config: hidden 16, latent 2) on 'synthetic' (D = 16, 900 training
examples, 18 batches of 50 per epoch) or on the bundled digits (D = 64, 30 batches).
References are independent runs: a resumed run against an uninterrupted one, a run
against its repeat. The engine itself is tested in tests/test_trainer.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    REPO,
    assert_trees_close,
    checkpoint_steps,
    cli_env,
    make_config,
    metric_rows,
    restore,
    wait_for,
    without_wall_time,
)

from vaejax import heads, train
from vaejax import trainer as trainer_lib

SYNTHETIC_STEPS = 900 // 50
DIGITS_STEPS = 1500 // 50


@pytest.fixture(scope="module", autouse=True)
def _cache(compilation_cache):
    yield


def _config(**overrides):
    base = dict(data__dataset="synthetic", train__num_epochs=2)
    return make_config(**{**base, **overrides})


def _member_metrics(summary) -> str:
    return json.dumps(summary["members"], sort_keys=True)


REFERENCE = dict(population__sigma=(0.05, 0.1, 0.3), train__num_epochs=4,
                 eval__every_epochs=1, checkpoint__every_epochs=1)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 4-epoch run of a population of three on 'synthetic'."""
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, train.train_and_evaluate(_config(**REFERENCE), workdir)


# --------------------------------------------------------------------------- heads


SUMMARY_KEYS = {"dataset", "likelihood", "population", "epochs", "steps_per_epoch",
                "num_parameters_per_member", "steps_per_second", "model_steps_per_second",
                "examples_per_second", "members"}
MEMBER_KEYS = {"sigma", "beta", "learning_rate", "seed", "latent", "test_elbo", "test_recon",
               "test_kl", "test_iwae", "active_units"}


@pytest.mark.parametrize("likelihood", heads.NAMES)
def test_each_head_trains_on_digits(tmp_path, likelihood):
    # The IWAE bound (K = 8) is compiled for one head only: it is slow to compile.
    iwae = 8 if likelihood == "continuous_bernoulli" else 0
    # The Beta head is a density on the open (0, 1): the digits (with 0s) are squeezed into it.
    squeeze = 1e-3 if likelihood == "beta" else 0.0
    config = _config(data__dataset="digits", data__squeeze=squeeze, model__likelihood=likelihood,
                     population__beta=(1.0, 0.5), train__num_epochs=4, eval__every_epochs=2,
                     eval__iwae_samples=iwae, train__learning_rate=3e-3)
    summary = train.train_and_evaluate(config, tmp_path)

    assert set(summary) == SUMMARY_KEYS
    assert (summary["likelihood"], summary["dataset"]) == (likelihood, "digits")
    assert summary["population"] == 2 and summary["epochs"] == 4
    assert summary["steps_per_epoch"] == DIGITS_STEPS
    for member in summary["members"]:
        assert set(member) == MEMBER_KEYS
        for key in ("test_elbo", "test_recon", "test_kl"):
            assert np.isfinite(member[key]), (key, member)
        assert np.isfinite(member["test_iwae"]) == (iwae > 0), member  # NaN when disabled
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert json.dumps(saved, sort_keys=True) == json.dumps(summary, sort_keys=True)

    rows = metric_rows(tmp_path)
    assert list(rows[0]) == list(train.METRIC_COLUMNS)
    assert [(row["epoch"], row["member"]) for row in rows] == [
        ("2", "0"), ("2", "1"), ("4", "0"), ("4", "1")]
    assert [int(row["step"]) for row in rows] == [2 * DIGITS_STEPS] * 2 + [4 * DIGITS_STEPS] * 2
    for row in rows:
        for column in ("train_loss", "train_recon", "train_kl", "test_elbo", "test_recon",
                       "test_kl"):
            assert np.isfinite(float(row[column])), (column, row)
    first = np.mean([float(row["train_loss"]) for row in rows[:2]])
    last = np.mean([float(row["train_loss"]) for row in rows[2:]])
    assert last < first, (first, last)
    for name in ("samples.png", "reconstructions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(path.stat().st_size > 0 for path in events)
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["model"]["likelihood"] == likelihood
    assert set(saved_config) == {"seed", "data", "model", "train", "population", "eval",
                                 "checkpoint", "run"}
    assert checkpoint_steps(tmp_path / "checkpoints")[-1] == 4 * DIGITS_STEPS


def test_an_experiment_config_trains_with_no_ignored_keys(tmp_path, capsys):
    """Every experiment config is a training config: its experiment group is passed by."""
    from experiments.configs import sigma_sweep

    config = sigma_sweep.get_config("smoke")
    config.train.num_epochs = 1
    config.data.dataset = "synthetic"
    train.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr()
    assert "ignore" not in out.out + out.err
    assert "sigma_sweep" not in json.loads((tmp_path / "config.json").read_text())


# --------------------------------------------------------------------------- resume


def test_resume_equals_uninterrupted_run(tmp_path, reference_run, capsys):
    reference_dir, reference_summary = reference_run
    train.train_and_evaluate(_config(**{**REFERENCE, "train__num_epochs": 2}), tmp_path)
    assert "resumed" not in capsys.readouterr().out
    assert checkpoint_steps(tmp_path / "checkpoints") == [SYNTHETIC_STEPS, 2 * SYNTHETIC_STEPS]

    summary = train.train_and_evaluate(_config(**REFERENCE), tmp_path)
    assert f"resumed from step {2 * SYNTHETIC_STEPS} (epoch 2)" in capsys.readouterr().out
    step, state, _ = restore(tmp_path / "checkpoints")
    reference_step, reference_state, _ = restore(reference_dir / "checkpoints")
    assert step == reference_step == 4 * SYNTHETIC_STEPS
    assert_trees_close(state, reference_state, rtol=0)  # bit-identical
    assert _member_metrics(summary) == _member_metrics(reference_summary)

    rows = metric_rows(tmp_path)
    assert [row["epoch"] for row in rows] == [str(e) for e in (1, 2, 3, 4) for _ in "mmm"]
    assert without_wall_time(rows) == without_wall_time(metric_rows(reference_dir))

    # Nothing left to do: restores, evaluates the restored state, trains nothing.
    again = train.train_and_evaluate(_config(**REFERENCE), tmp_path)
    assert "resumed from step" in capsys.readouterr().out
    assert _member_metrics(again) == _member_metrics(reference_summary)
    assert without_wall_time(metric_rows(tmp_path)) == without_wall_time(rows)


def _cli_command(workdir, *flags):
    return [sys.executable, "-m", "experiments.train",
            "--config=experiments/configs/default.py:smoke", f"--workdir={workdir}", *flags]


# digits with batches of 10 (150 steps an epoch) and a checkpoint after every epoch: each
# epoch takes long enough for the poll below to see a checkpoint before the run ends.
CRASH_FLAGS = ("--config.train.num_epochs=20", "--config.train.batch_size=10",
               "--config.model.hidden=32", "--config.population.sigma=(0.1,0.3)",
               "--config.checkpoint.every_epochs=1", "--config.checkpoint.keep=2",
               "--config.eval.every_epochs=10", "--config.eval.iwae_samples=0",
               "--config.run.progress=False")
CRASH_STEPS = 1500 // 10


def _start_cli(workdir, log_path, *flags, cache_dir=None):
    with open(log_path, "w") as log:  # a file, not a pipe nobody drains
        return subprocess.Popen(_cli_command(workdir, *flags), cwd=REPO,
                                env=cli_env(cache_dir), stdout=log, stderr=subprocess.STDOUT)


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path):
    crashed, uninterrupted = tmp_path / "crashed", tmp_path / "uninterrupted"
    cache_dir = tmp_path / "jax_cache"
    victim = _start_cli(crashed, tmp_path / "crashed.log", *CRASH_FLAGS, cache_dir=cache_dir)
    try:
        deadline = time.monotonic() + 240
        while not any(s >= 2 * CRASH_STEPS for s in checkpoint_steps(crashed / "checkpoints")):
            assert victim.poll() is None, (tmp_path / "crashed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
    interrupted_at = checkpoint_steps(crashed / "checkpoints")
    assert interrupted_at and max(interrupted_at) < 20 * CRASH_STEPS, interrupted_at
    assert not (crashed / "summary.json").exists(), "the run ended before the kill"

    reference = _start_cli(uninterrupted, tmp_path / "uninterrupted.log", *CRASH_FLAGS,
                           cache_dir=cache_dir)
    rerun = _start_cli(crashed, tmp_path / "rerun.log", *CRASH_FLAGS, cache_dir=cache_dir)
    output = wait_for(rerun, tmp_path / "rerun.log")
    wait_for(reference, tmp_path / "uninterrupted.log")
    match = re.search(r"resumed from step (\d+)", output)
    assert match and 2 * CRASH_STEPS <= int(match.group(1)) < 20 * CRASH_STEPS, output[-3000:]

    step, state, _ = restore(crashed / "checkpoints")
    reference_step, reference_state, _ = restore(uninterrupted / "checkpoints")
    assert step == reference_step == 20 * CRASH_STEPS
    assert_trees_close(state, reference_state, rtol=0)
    summary = json.loads((crashed / "summary.json").read_text())
    expected = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["population"] == 2 and _member_metrics(summary) == _member_metrics(expected)
    rows = metric_rows(crashed)
    assert [row["epoch"] for row in rows] == ["10", "10", "20", "20"]
    assert without_wall_time(rows) == without_wall_time(metric_rows(uninterrupted))


# --------------------------------------------------------------------------- NaN stop


def _poison_from(step: int, member_sigma: float, monkeypatch):
    """Member with sigma ``member_sigma`` gets a NaN recon (and loss) from global step on."""
    original_step = trainer_lib.Trainer.member_step

    def member_step(self, state, batch, member):
        bad = (state.step >= step) & (member.sigma == np.float32(member_sigma))
        new, metrics = original_step(self, state, batch, member)
        nan = jnp.where(bad, jnp.nan, 0.0)
        return new, metrics.replace(loss=metrics.loss + nan, recon=metrics.recon + nan)

    monkeypatch.setattr(trainer_lib.Trainer, "member_step", member_step)


def test_nan_after_a_checkpoint_keeps_it_and_resumes(tmp_path, reference_run, monkeypatch):
    bad_step = SYNTHETIC_STEPS + 4  # 0-based: step 5 of epoch 2
    with monkeypatch.context() as patch:
        _poison_from(bad_step, 0.1, patch)
        with pytest.raises(trainer_lib.NonFiniteLossError) as error:
            train.train_and_evaluate(_config(**REFERENCE), tmp_path)
    message = str(error.value)
    assert f"step {bad_step + 1} (epoch 2)" in message, message
    assert "member 1 (sigma=0.1" in message and "'recon'" in message, message
    assert f"checkpoint (step {SYNTHETIC_STEPS}) is kept" in message, message
    assert checkpoint_steps(tmp_path / "checkpoints") == [SYNTHETIC_STEPS]
    assert [row["epoch"] for row in metric_rows(tmp_path)] == ["1", "1", "1"]
    assert not (tmp_path / "summary.json").exists()

    train.train_and_evaluate(_config(**REFERENCE), tmp_path)  # unpatched: resumes
    assert_trees_close(restore(tmp_path / "checkpoints")[1],
                       restore(reference_run[0] / "checkpoints")[1], rtol=0)


# --------------------------------------------------------------------------- bad input
# (The catalogue of bad configs is tests/test_bad_inputs.py.)


def test_resume_with_a_different_model_config_names_the_key(tmp_path, reference_run):
    workdir = tmp_path / "copy"
    shutil.copytree(reference_run[0], workdir)
    saved = (workdir / "config.json").read_text()
    # hidden changes the model; num_epochs may change on resumption and is not named.
    config = _config(**{**REFERENCE, "model__hidden": 17, "train__num_epochs": 5})
    with pytest.raises(ValueError, match=r"keys: model.hidden\)") as error:
        train.train_and_evaluate(config, workdir)
    assert "num_epochs" not in str(error.value)
    assert (workdir / "config.json").read_text() == saved


def test_cli_unknown_config_key_fails_without_checkpoints(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(_cli_command(workdir, "--config.train.no_such=1"), cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such" in proc.stderr, proc.stderr[-3000:]
    assert not (workdir / "checkpoints").exists()


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_identical_metrics(tmp_path, reference_run):
    # Both runs may load the same executables from this module's compilation cache: this
    # checks that a run is a deterministic function of its config.
    reference_dir, reference_summary = reference_run
    summary = train.train_and_evaluate(_config(**REFERENCE), tmp_path)
    rows = metric_rows(tmp_path)
    assert len(rows) == 4 * 3
    assert without_wall_time(rows) == without_wall_time(metric_rows(reference_dir))
    assert _member_metrics(summary) == _member_metrics(reference_summary)
