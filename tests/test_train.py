"""Training loop: population == separate runs, resumption (also after SIGKILL), NaN guard,
config validation, determinism and no retracing.

Runs are tiny (smoke config: hidden 16, latent 2) on the 'synthetic' data set (D = 16,
900 training examples, 18 batches of 50 per epoch) or on the bundled digits (D = 64).
References are independent runs of the same library: a member of a population against a
population of one, a resumed run against an uninterrupted one, a run against its repeat.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.configs.default import get_config
from vaejax import data as data_lib
from vaejax import train
from vaejax.models import LIKELIHOODS

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_STEPS_PER_EPOCH = 900 // 50
DIGITS_STEPS_PER_EPOCH = 1500 // 50


# --------------------------------------------------------------------------- helpers


def _config(**overrides):
    """The smoke config on 'synthetic' without progress bar or IWAE; `a__b=v` sets a.b."""
    config = get_config("smoke")
    config.dataset = "synthetic"
    config.progress = False
    config.eval_iwae_samples = 0
    config.num_epochs = 2
    for name, value in overrides.items():
        *parents, leaf = name.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node:  # a typo here would silently add a key
            raise KeyError(name)
        node[leaf] = value
    return config


def _restore(workdir, step=None):
    """(step, state as nested dicts) of the newest (or given) checkpoint in workdir."""
    manager = ocp.CheckpointManager((Path(workdir) / "checkpoints").absolute())
    try:
        step = manager.latest_step() if step is None else step
        assert step is not None, f"no checkpoint in {workdir}"
        return step, manager.restore(step, args=ocp.args.StandardRestore())
    finally:
        manager.close()


def _checkpoint_steps(workdir) -> list[int]:
    """Finished orbax step directories (orbax renames a temporary directory when done)."""
    folder = Path(workdir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _leaves(tree) -> dict[str, np.ndarray]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def _assert_trees_close(actual, expected, *, rtol, label=""):
    """Equal leaves: exactly if rtol == 0, else max|a - b| <= rtol * max|b| per leaf.

    The tolerance is relative to a leaf's scale, not to each element: batched and single
    matmuls round differently, and after tens of Adam steps an element near zero carries
    the absolute error of its leaf.
    """
    actual, expected = _leaves(actual), _leaves(expected)
    assert actual.keys() == expected.keys(), label
    for path, value in expected.items():
        assert actual[path].shape == value.shape and actual[path].dtype == value.dtype, path
        if rtol == 0:
            np.testing.assert_array_equal(actual[path], value, err_msg=f"{label}{path}")
            continue
        error = np.max(np.abs(actual[path].astype(np.float64) - value), initial=0.0)
        scale = np.max(np.abs(value), initial=0.0)
        assert error <= rtol * scale, f"{label}{path}: max error {error:.3g}, scale {scale:.3g}"


def _member(tree, m):
    return jax.tree.map(lambda leaf: np.asarray(leaf)[m], tree)


def _metric_rows(workdir) -> list[dict[str, str]]:
    with open(Path(workdir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _without_wall_time(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def _member_metrics(summary) -> str:
    """The per-member test numbers of a summary (timings excluded), NaN == NaN."""
    return json.dumps(summary["members"], sort_keys=True)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module only.

    Many runs here compile identical programs (a run and its resumption or repeat, the
    members' populations of one); loading them from the cache saves most of their time.
    The cached executables are the ones a fresh compile would produce.
    """
    from jax.experimental.compilation_cache import compilation_cache as cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: jax.config.values[name] for name in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0.0)
    cache.reset_cache()  # the cache is set up once per process, at the first compile
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cache.reset_cache()


@pytest.fixture(scope="module")
def synthetic():
    return data_lib.load_dataset("synthetic", seed=0)


@pytest.fixture(scope="module")
def direct(synthetic):
    """A Trainer with jitted init/epoch, shared by every hyper-parameter set of a shape.

    Sigma, beta, learning rate and member seed are arguments (the Hyper arrays), so
    one compilation per population size serves all of them.
    """
    config = _config()
    trainer = train.Trainer(train.make_model(config, synthetic.num_dims), config,
                            synthetic.num_dims)
    # As train_and_evaluate jits them (the state is donated).
    return trainer, jax.jit(trainer.init), jax.jit(trainer.epoch, donate_argnums=(0,))


def _train_directly(direct, config, train_data, num_epochs=3):
    trainer, init, epoch = direct
    assert config.seed == trainer.config.seed  # the data stream is the trainer's
    hyper = train.make_hyper(config)
    state = init(hyper)
    for index in range(num_epochs):
        state, metrics = epoch(state, train_data, jnp.int32(index), hyper)
        assert train.first_non_finite(jax.tree.map(np.asarray, metrics)) is None
    return state


# A population of three, like the direct tests' and the populations below: the runs of this
# module share compiled programs through the cache.
REFERENCE_OVERRIDES = dict(population__sigma=(0.05, 0.1, 0.3), num_epochs=4, eval_every_epochs=1,
                           checkpoint_every_epochs=1)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 4-epoch run of a population of three on 'synthetic'."""
    workdir = tmp_path_factory.mktemp("reference")
    summary = train.train_and_evaluate(_config(**REFERENCE_OVERRIDES), workdir)
    return workdir, summary


# --------------------------------------------------------------------------- 1. population


POPULATIONS = {
    "sigma_seed": dict(population__sigma=(0.05, 0.1, 0.3), population__seed=(0, 1, 2)),
    "learning_rate": dict(population__sigma=(0.05, 0.1, 0.3), population__seed=(0, 1, 2),
                          population__learning_rate=(1e-3, 3e-3, 1e-2)),
    "beta_learning_rate": dict(population__beta=(0.5, 1.0, 2.0), population__seed=(2, 0, 1),
                               population__learning_rate=(1e-2, 1e-3, 3e-3)),
}


def _single_overrides(population_overrides, m):
    """Config overrides of a population of one equal to member m.

    The member seed of a population of one is `population.seed` if given, else
    `config.seed`; `config.seed` also seeds the data, so it stays the population's.
    """
    single = {}
    for name, values in population_overrides.items():
        field = name.removeprefix("population__")
        if field == "seed":
            single["population__seed"] = (values[m],)
        else:
            single[field] = values[m]
    return single


@pytest.mark.parametrize("case", sorted(POPULATIONS))
def test_population_member_equals_separate_run_direct(direct, synthetic, case):
    overrides = POPULATIONS[case]
    train_data = jnp.asarray(synthetic.train)
    population = _train_directly(direct, _config(**overrides), train_data)
    assert population.step.tolist() == [3 * SYNTHETIC_STEPS_PER_EPOCH] * 3
    for m in range(3):
        single = _train_directly(direct, _config(**_single_overrides(overrides, m)), train_data)
        assert single.step.shape == (1,)
        _assert_trees_close(_member(population.params, m), _member(single.params, 0),
                            rtol=2e-6, label=f"{case} member {m}: ")
        _assert_trees_close(_member(population.opt_state, m), _member(single.opt_state, 0),
                            rtol=2e-5, label=f"{case} member {m} opt_state: ")
    # Not vacuous: the members differ from each other.
    kernels = np.asarray(population.params["params"]["decoder"]["out"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1], rtol=1e-3)
    assert not np.allclose(kernels[1], kernels[2], rtol=1e-3)


def test_member_with_the_data_seed_equals_plain_run(direct, synthetic):
    """Without population.seed a run's member seed is config.seed."""
    train_data = jnp.asarray(synthetic.train)
    population = _train_directly(direct, _config(population__sigma=(0.05, 0.1, 0.3),
                                                 population__seed=(7, 0, 3)), train_data)
    plain = _train_directly(direct, _config(sigma=0.1), train_data)
    _assert_trees_close(_member(population.params, 1), _member(plain.params, 0),
                        rtol=2e-6)


def test_population_equals_separate_runs_end_to_end(tmp_path):
    overrides = POPULATIONS["learning_rate"]
    population_summary = train.train_and_evaluate(_config(**overrides), tmp_path / "population")
    assert population_summary["population"] == 3
    _, population_state = _restore(tmp_path / "population")
    population_rows = _metric_rows(tmp_path / "population")
    for m in range(3):
        workdir = tmp_path / f"member{m}"
        summary = train.train_and_evaluate(_config(**_single_overrides(overrides, m)), workdir)
        assert summary["population"] == 1
        step, state = _restore(workdir)
        assert step == 2
        _assert_trees_close(_member(population_state["params"], m), _member(state["params"], 0),
                            rtol=2e-6, label=f"member {m}: ")
        expected, got = population_summary["members"][m], summary["members"][0]
        assert expected["sigma"] == got["sigma"] and expected["seed"] == got["seed"]
        assert expected["learning_rate"] == got["learning_rate"]
        for key in ("test_elbo", "test_recon", "test_kl"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key)
        member_rows = [row for row in population_rows if row["member"] == str(m)]
        single_rows = _metric_rows(workdir)
        assert [row["epoch"] for row in single_rows] == [row["epoch"] for row in member_rows]
        for row, member_row in zip(single_rows, member_rows, strict=True):
            np.testing.assert_allclose(float(row["train_loss"]), float(member_row["train_loss"]),
                                       rtol=1e-5)


# --------------------------------------------------------------------------- 2. likelihoods


SUMMARY_KEYS = {"dataset", "likelihood", "population", "epochs", "steps_per_epoch",
                "num_parameters_per_member", "median_epoch_seconds", "steps_per_second",
                "model_steps_per_second", "examples_per_second", "members"}
MEMBER_KEYS = {"sigma", "beta", "learning_rate", "seed", "test_elbo", "test_recon", "test_kl",
               "test_iwae", "active_units"}


IWAE_LIKELIHOOD = "continuous_bernoulli"


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_each_likelihood_trains_on_digits(tmp_path, likelihood):
    # Smoke sizes on digits (in [0, 1]: valid for both Bernoulli heads). The IWAE bound
    # (K = 8) is compiled for one likelihood only: it is slow to compile.
    iwae_samples = 8 if likelihood == IWAE_LIKELIHOOD else 0
    config = _config(dataset="digits", likelihood=likelihood, population__beta=(1.0, 0.5),
                     num_epochs=4, eval_every_epochs=2, eval_iwae_samples=iwae_samples,
                     learning_rate=3e-3)
    summary = train.train_and_evaluate(config, tmp_path)

    assert set(summary) == SUMMARY_KEYS
    assert summary["likelihood"] == likelihood and summary["dataset"] == "digits"
    assert summary["population"] == 2 and summary["epochs"] == 4
    assert summary["steps_per_epoch"] == DIGITS_STEPS_PER_EPOCH
    assert len(summary["members"]) == 2
    for member in summary["members"]:
        assert set(member) == MEMBER_KEYS
        for key in ("test_elbo", "test_recon", "test_kl"):
            assert np.isfinite(member[key]), (key, member)
        # Documented: NaN when IWAE is disabled.
        assert np.isfinite(member["test_iwae"]) == (iwae_samples > 0), member
    saved_summary = json.loads((tmp_path / "summary.json").read_text())
    assert json.dumps(saved_summary, sort_keys=True) == json.dumps(summary, sort_keys=True)

    rows = _metric_rows(tmp_path)
    assert list(rows[0]) == list(train.METRIC_COLUMNS)
    # Evaluations after epochs 2 and 4 (the last), times P = 2 members.
    assert [(row["epoch"], row["member"]) for row in rows] == [
        ("2", "0"), ("2", "1"), ("4", "0"), ("4", "1")]
    assert [int(row["step"]) for row in rows] == [2 * DIGITS_STEPS_PER_EPOCH] * 2 + [
        4 * DIGITS_STEPS_PER_EPOCH] * 2
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
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved == json.loads(config.to_json_best_effort())
    assert _checkpoint_steps(tmp_path)[-1] == 4


# --------------------------------------------------------------------------- 3. resume


def test_resume_equals_uninterrupted_run(tmp_path, reference_run, capsys):
    reference_dir, reference_summary = reference_run
    train.train_and_evaluate(_config(**{**REFERENCE_OVERRIDES, "num_epochs": 2}), tmp_path)
    assert "resumed" not in capsys.readouterr().out
    assert _checkpoint_steps(tmp_path) == [1, 2]

    summary = train.train_and_evaluate(_config(**REFERENCE_OVERRIDES), tmp_path)
    assert "resumed from epoch 2" in capsys.readouterr().out
    step, state = _restore(tmp_path)
    reference_step, reference_state = _restore(reference_dir)
    assert step == reference_step == 4
    _assert_trees_close(state, reference_state, rtol=0)  # bit-identical
    assert _member_metrics(summary) == _member_metrics(reference_summary)

    rows = _metric_rows(tmp_path)
    keys = [(row["epoch"], row["member"]) for row in rows]
    assert len(keys) == len(set(keys)), "duplicated epochs in metrics.csv"
    assert [row["epoch"] for row in rows] == [str(e) for e in (1, 2, 3, 4) for _ in "mmm"]
    assert _without_wall_time(rows) == _without_wall_time(_metric_rows(reference_dir))

    # Nothing left to do: restores, evaluates the restored state, trains nothing.
    again = train.train_and_evaluate(_config(**REFERENCE_OVERRIDES), tmp_path)
    assert "resumed from epoch 4" in capsys.readouterr().out
    assert _member_metrics(again) == _member_metrics(reference_summary)
    assert _without_wall_time(_metric_rows(tmp_path)) == _without_wall_time(rows)
    _assert_trees_close(_restore(tmp_path)[1], reference_state, rtol=0)


# --------------------------------------------------------------------------- 4. SIGKILL


def _cli_command(workdir, *flags):
    return [sys.executable, "-m", "experiments.train",
            "--config=experiments/configs/default.py:smoke", f"--workdir={workdir}", *flags]


def _cli_env(cache_dir=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    if cache_dir is not None:  # later processes load what the first one compiled
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


# digits with batches of 10 (150 steps an epoch) and a checkpoint after every epoch: each
# epoch takes long enough (~0.1 s) for the poll below to see a checkpoint before the run
# ends. A population of two, given on the command line as a tuple.
CRASH_FLAGS = ("--config.num_epochs=20", "--config.batch_size=10", "--config.hidden=32",
               "--config.population.sigma=(0.1,0.3)", "--config.checkpoint_every_epochs=1",
               "--config.keep_checkpoints=2", "--config.eval_every_epochs=10",
               "--config.eval_iwae_samples=0", "--config.progress=False")


def _start_cli(workdir, log_path, *flags, cache_dir=None):
    with open(log_path, "w") as log:  # a file, not a pipe nobody drains
        return subprocess.Popen(_cli_command(workdir, *flags), cwd=REPO,
                                env=_cli_env(cache_dir), stdout=log, stderr=subprocess.STDOUT)


def _finish_cli(process, log_path, timeout=300) -> str:
    try:
        returncode = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = Path(log_path).read_text()
    assert returncode == 0, output[-3000:]
    return output


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path):
    crashed, uninterrupted = tmp_path / "crashed", tmp_path / "uninterrupted"
    cache_dir = tmp_path / "jax_cache"
    victim = _start_cli(crashed, tmp_path / "crashed.log", *CRASH_FLAGS, cache_dir=cache_dir)
    try:
        deadline = time.monotonic() + 240
        while not any(step >= 2 for step in _checkpoint_steps(crashed)):
            assert victim.poll() is None, (tmp_path / "crashed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
    interrupted_at = _checkpoint_steps(crashed)
    assert interrupted_at and max(interrupted_at) < 20, interrupted_at
    assert not (crashed / "summary.json").exists(), "the run ended before the kill"

    # The same command again, and (concurrently) an uninterrupted run to compare with.
    reference_run = _start_cli(uninterrupted, tmp_path / "uninterrupted.log", *CRASH_FLAGS,
                               cache_dir=cache_dir)
    rerun = _start_cli(crashed, tmp_path / "rerun.log", *CRASH_FLAGS, cache_dir=cache_dir)
    output = _finish_cli(rerun, tmp_path / "rerun.log")
    _finish_cli(reference_run, tmp_path / "uninterrupted.log")
    match = re.search(r"resumed from epoch (\d+)", output)
    assert match and 2 <= int(match.group(1)) < 20, output[-3000:]

    step, state = _restore(crashed)
    reference_step, reference_state = _restore(uninterrupted)
    assert step == reference_step == 20
    _assert_trees_close(state, reference_state, rtol=0)
    summary = json.loads((crashed / "summary.json").read_text())
    reference = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["population"] == 2
    assert _member_metrics(summary) == _member_metrics(reference)
    rows = _metric_rows(crashed)
    assert [row["epoch"] for row in rows] == ["10", "10", "20", "20"]
    assert _without_wall_time(rows) == _without_wall_time(_metric_rows(uninterrupted))


# --------------------------------------------------------------------------- 5. NaN guard


def _step_metrics(loss, **terms):
    loss = np.asarray(loss, np.float32)
    zeros = np.zeros_like(loss)
    return train.StepMetrics(loss=loss, recon=terms.get("recon", zeros),
                             kl=terms.get("kl", zeros),
                             weight_decay=terms.get("weight_decay", zeros))


def test_first_non_finite_finds_step_member_and_term():
    finite = np.arange(12, dtype=np.float32).reshape(4, 3)  # [steps, P]
    assert train.first_non_finite(_step_metrics(finite)) is None

    loss, kl = finite.copy(), np.zeros_like(finite)
    loss[2, 1] = loss[3, 0] = np.nan
    kl[2, 1] = np.inf
    assert train.first_non_finite(_step_metrics(loss, kl=kl)) == (2, 1, "kl")

    loss, recon = finite.copy(), np.zeros_like(finite)
    loss[1, 2] = -np.inf
    recon[1, 2] = np.nan
    assert train.first_non_finite(_step_metrics(loss, recon=recon)) == (1, 2, "recon")

    loss = finite.copy()
    loss[0, 2] = np.nan  # the parts are finite: the sum overflowed
    assert train.first_non_finite(_step_metrics(loss)) == (0, 2, "loss")

    # The earliest step wins over the lowest member.
    loss = finite.copy()
    loss[3, 0] = loss[1, 2] = np.inf
    assert train.first_non_finite(_step_metrics(loss))[:2] == (1, 2)


def test_nan_after_a_checkpoint_keeps_it_and_resumes(tmp_path, reference_run, monkeypatch):
    """A NaN in epoch 2 raises, leaves checkpoint 1 and its metrics; a rerun resumes from it."""
    original_epoch = train.Trainer.epoch

    def poisoned_epoch(self, state, train_data, epoch_index, hyper):
        state, metrics = original_epoch(self, state, train_data, epoch_index, hyper)
        steps, size = metrics.loss.shape
        bad = ((epoch_index >= 1) & (jnp.arange(steps)[:, None] == 4)
               & (jnp.arange(size)[None, :] == 1))
        return state, metrics.replace(loss=jnp.where(bad, jnp.nan, metrics.loss),
                                      recon=jnp.where(bad, jnp.nan, metrics.recon))

    monkeypatch.setattr(train.Trainer, "epoch", poisoned_epoch)
    with pytest.raises(train.NonFiniteLossError) as error:
        train.train_and_evaluate(_config(**REFERENCE_OVERRIDES), tmp_path)
    message = str(error.value)
    step = SYNTHETIC_STEPS_PER_EPOCH + 4 + 1  # 1-based, counted from the start of the run
    assert f"step {step} (epoch 2)" in message, message
    assert "member 1 (sigma=0.1" in message, message
    assert "'recon'" in message, message
    assert "epoch 1) is kept" in message, message
    assert _checkpoint_steps(tmp_path) == [1]
    assert [row["epoch"] for row in _metric_rows(tmp_path)] == ["1", "1", "1"]
    assert not (tmp_path / "summary.json").exists()

    monkeypatch.setattr(train.Trainer, "epoch", original_epoch)
    train.train_and_evaluate(_config(**REFERENCE_OVERRIDES), tmp_path)
    _assert_trees_close(_restore(tmp_path)[1], _restore(reference_run[0])[1], rtol=0)


def test_diverging_member_raises_and_writes_no_checkpoint(tmp_path):
    # Adam's first step moves every parameter by about the rate: with 1e30 the decoder mean
    # of member 2 overflows float32 at step 2. The others train normally.
    config = _config(**REFERENCE_OVERRIDES, population__learning_rate=(1e-3, 1e-3, 1e30))
    with pytest.raises(train.NonFiniteLossError) as error:
        train.train_and_evaluate(config, tmp_path)
    message = str(error.value)
    assert re.search(r"non-finite loss at step [2-9] \(epoch 1\), member 2 \(sigma=0.3", message)
    assert re.search(r"term '(recon|kl|weight_decay|loss)'", message), message
    assert _checkpoint_steps(tmp_path) == []
    assert not (tmp_path / "summary.json").exists()
    # No checkpoint was written: the message must not claim that one is kept.
    assert "epoch None" not in message, message


# --------------------------------------------------------------------------- 6. bad input


@pytest.mark.parametrize("overrides, key", [
    (dict(likelihood="gaussian_learned"), "likelihood"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(dataset="cifar10"), "dataset"),
    (dict(batch_size=901), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(population__sigma=(0.1, 0.2), population__seed=(0, 1, 2)), "sigma"),
    (dict(population__sigma=(0.1, 0.0, 0.2)), "sigma"),
    (dict(population__sigma=(-0.1,)), "sigma"),
    (dict(population__learning_rate=(1e-3, -1e-3)), "learning_rate"),
    (dict(population__beta=(1.0, -1.0)), "beta"),
], ids=["likelihood", "optimizer", "dataset", "batch_too_big", "batch_zero",
        "population_lengths", "sigma_zero", "sigma_negative", "learning_rate_negative",
        "beta_negative"])
def test_bad_config_raises_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        train.train_and_evaluate(_config(**overrides), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    assert not (tmp_path / "config.json").exists()


def test_population_lengths_error_names_the_lengths():
    config = _config(population__sigma=(0.1, 0.2), population__seed=(0, 1, 2))
    with pytest.raises(ValueError, match=r"population.*'sigma': 2"):
        train.population_size(config)


def test_workdir_that_is_a_file_raises(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        train.train_and_evaluate(_config(), path)
    assert path.read_text() == "x"


def test_resume_with_a_different_model_config_names_the_key(tmp_path, reference_run):
    workdir = tmp_path / "copy"
    shutil.copytree(reference_run[0], workdir)
    saved_config = (workdir / "config.json").read_text()
    # hidden changes the model; num_epochs may change on resumption and is not named.
    config = _config(**{**REFERENCE_OVERRIDES, "hidden": 17, "num_epochs": 5})
    with pytest.raises(ValueError, match=r"keys: hidden\)") as error:
        train.train_and_evaluate(config, workdir)
    assert "num_epochs" not in str(error.value)
    assert _checkpoint_steps(workdir) == _checkpoint_steps(reference_run[0])
    assert (workdir / "config.json").read_text() == saved_config


def test_cli_unknown_config_key_fails_without_checkpoints(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(_cli_command(workdir, "--config.no_such=1"), cwd=REPO,
                          env=_cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such" in proc.stderr, proc.stderr[-3000:]
    assert _checkpoint_steps(workdir) == []
    assert not (workdir / "checkpoints").exists()


# --------------------------------------------------------------------------- 7. determinism


def test_same_config_gives_identical_metrics(tmp_path, reference_run):
    # Both runs may load the same executables from this module's compilation cache: this
    # checks that a run is a deterministic function of its config, not that XLA compiles
    # deterministically.
    reference_dir, reference_summary = reference_run
    summary = train.train_and_evaluate(_config(**REFERENCE_OVERRIDES), tmp_path)
    rows = _metric_rows(tmp_path)
    assert len(rows) == 4 * 3
    # The CSV writes repr(float): equal strings are bit-identical float32 values.
    assert _without_wall_time(rows) == _without_wall_time(_metric_rows(reference_dir))
    assert _member_metrics(summary) == _member_metrics(reference_summary)
    _assert_trees_close(_restore(tmp_path)[1], _restore(reference_dir)[1], rtol=0)


# --------------------------------------------------------------------------- 8. retracing


def test_jitted_epoch_traces_once(direct, synthetic):
    trainer, init, _ = direct
    traces = []

    @functools.wraps(trainer.epoch)
    def counted_epoch(state, train_data, epoch_index, hyper):
        traces.append(epoch_index)  # runs only while tracing
        return trainer.epoch(state, train_data, epoch_index, hyper)

    # As train_and_evaluate calls it: state donated, epoch index a traced int32. The
    # init state and an epoch's output state must have the same types, or epoch 2 retraces.
    epoch = jax.jit(counted_epoch, donate_argnums=(0,))
    hyper = train.make_hyper(_config(population__sigma=(0.05, 0.1, 0.3)))
    state = init(hyper)
    train_data = jnp.asarray(synthetic.train)
    for index in range(3):
        state, metrics = epoch(state, train_data, jnp.int32(index), hyper)
    assert len(traces) == 1
    assert metrics.loss.shape == (SYNTHETIC_STEPS_PER_EPOCH, 3)
    assert state.step.tolist() == [3 * SYNTHETIC_STEPS_PER_EPOCH] * 3
