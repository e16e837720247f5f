"""Experiment 5 (how many MC samples?): the smoke run, its numbers, and the estimator.

The smoke config measures the ELBO-gradient variance of a tiny VAE (hidden 16, 2
latents) on digits for M in {10, 50} and L in {1, 4}, untrained and after one epoch. The
running-mean trick (every L from one set of single-sample gradients) is checked against
``jax.grad`` of the engine's own L-sample ``Trainer.member_loss``; the noise-model fit
against data generated from known A and B.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import record_fits
from jax.flatten_util import ravel_pytree

from experiments import common, mc_samples
from experiments.configs.mc_samples import get_config
from vaejax import trainer as trainer_lib
from vaejax.data import load_dataset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, compilation_cache):  # the cache: the rerun compiles alike
    workdir = tmp_path_factory.mktemp("mc_samples")
    config = get_config("smoke")
    return config, workdir, mc_samples.run(config, workdir)


def _variances(workdir):
    with open(workdir / "mc_samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {(int(r["epoch"]), int(r["batch_size"]), int(r["num_samples"])):
            float(r["variance_total"]) for r in rows}


def test_writes_figure_csv_json_and_report(smoke):
    config, workdir, summary = smoke
    exp = config.mc_samples
    for name in ("mc_samples.png", "mc_samples.pdf", "mc_samples.csv", "mc_samples_timing.csv",
                 "mc_samples.json", "mc_samples_config.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert "](mc_samples.png)" in summary["report"]
    saved = json.loads((workdir / "mc_samples.json").read_text())
    assert saved["headline_variance_ratio"] == summary["headline_variance_ratio"] > 1
    assert "Var(L=1) / Var(L=4) at M=50" in saved["headline"]
    variances = _variances(workdir)
    assert set(variances) == set(itertools.product(
        exp.measure_at_epochs, exp.batch_sizes, exp.num_samples_grid))
    with open(workdir / "mc_samples_timing.csv", newline="") as f:
        timing = list(csv.DictReader(f))
    assert len(timing) == exp.timing_epochs * len(exp.num_samples_grid)
    assert all(float(r["seconds_per_step"]) > 0 for r in timing)


def test_variance_decreases_with_l_and_with_m(smoke):
    config, workdir, summary = smoke
    exp = config.mc_samples
    v = _variances(workdir)
    (m_small, m_big), (l_small, l_big) = exp.batch_sizes, exp.num_samples_grid
    for epoch in exp.measure_at_epochs:
        for m in exp.batch_sizes:
            assert v[(epoch, m, l_big)] < v[(epoch, m, l_small)], (epoch, m)
        for ell in exp.num_samples_grid:
            # Five times the datapoints: the variance drops by well over half.
            assert v[(epoch, m_big, ell)] < 0.5 * v[(epoch, m_small, ell)], (epoch, ell)
        stats = summary["per_epoch"][str(epoch)]
        # No better than 1/(M L) and no worse than flat in L; about 1/M in M.
        assert -1.2 < stats[f"slope_vs_L_at_M{m_big}"] < 0
        assert -1.3 < stats[f"slope_vs_M_at_L{l_small}"] < -0.7
        assert stats["fit_max_relative_error"] < 0.25
        assert 0 <= stats[f"minibatch_share_at_M{m_big}_L{l_small}"] <= 1


def _without_timings(summary):
    return {k: v for k, v in summary.items()
            if k != "report" and "seconds" not in k and not k.startswith("timing")}


def test_rerun_in_the_same_workdir_resumes_with_the_measured_rows(smoke, monkeypatch):
    """The warm-up is restored from its checkpoint, and with it the hook's variance rows
    (the fit history is saved with the state): the same variances without retraining."""
    config, workdir, summary = smoke
    variances = (workdir / "mc_samples.csv").read_text()
    fits = record_fits(monkeypatch)
    again = mc_samples.run(config, workdir)
    (fit,) = fits
    assert fit.resumed_from is not None and fit.block_steps == []
    assert _without_timings(again) == _without_timings(summary)
    assert (workdir / "mc_samples.csv").read_text() == variances


def test_running_mean_is_the_l_sample_gradient():
    """Entry L of draw_gradients == jax.grad of Trainer.member_loss with num_samples=L."""
    config = get_config("smoke")
    dataset = load_dataset("digits")
    trainer, members = trainer_lib.build(config, dataset)
    params = common.first_member(trainer.jit.init(members).params)
    member = common.first_member(members)
    data = jnp.asarray(dataset.train)
    draw_key, batch_size, grid = jax.random.key(3), 20, (1, 4)
    draw = jax.jit(functools.partial(mc_samples.draw_gradients, trainer, batch_size=batch_size,
                                     num_samples_grid=grid))
    got = draw(params, data, draw_key, member)
    batch = data[jax.random.permutation(draw_key, data.shape[0])[:batch_size]]
    for i, ell in enumerate(grid):
        trainer_l = dataclasses.replace(trainer, num_samples=ell)
        grads, _ = jax.jit(jax.grad(trainer_l.member_loss, has_aux=True))(
            params, batch, jax.random.fold_in(draw_key, 1), member)
        for part in ("encoder", "decoder"):
            want = ravel_pytree(grads["params"][part])[0]
            np.testing.assert_allclose(got[part][i], want, rtol=2e-4,
                                       atol=2e-5 * float(jnp.max(jnp.abs(want))))
    # Different L really are different estimates (the test would pass trivially otherwise).
    assert not np.allclose(got["decoder"][0], got["decoder"][-1])


def test_noise_model_fit_recovers_known_terms():
    n, a, b = 1500, 3.0, 40.0
    m, ell = (np.array(v, float) for v in zip(*itertools.product((10, 25, 100), (1, 4, 32)),
                                              strict=True))
    variance = a * (n - m) / ((n - 1) * m) + b / (m * ell)
    fit_a, fit_b, predicted = mc_samples.fit_noise_model(m, ell, variance, n)
    assert fit_a == pytest.approx(a, rel=1e-9) and fit_b == pytest.approx(b, rel=1e-9)
    np.testing.assert_allclose(predicted, variance, rtol=1e-9)
    assert mc_samples.log_log_slope([1, 10, 100], [5.0, 0.5, 0.05]) == pytest.approx(-1.0)


def test_bad_config_is_rejected(tmp_path):
    config = get_config("smoke")
    config.mc_samples.num_repeats = 1
    with pytest.raises(ValueError, match="num_repeats"):
        mc_samples.run(config, tmp_path)
    config = get_config("smoke")
    config.mc_samples.batch_sizes = (10, 100000)
    with pytest.raises(ValueError, match="batch_sizes"):
        mc_samples.run(config, tmp_path)
    config = get_config("smoke")
    config.mc_samples.measure_at_epochs = ()
    with pytest.raises(ValueError, match="measure_at_epochs"):
        mc_samples.run(config, tmp_path)
    config = get_config("smoke")
    config.population.sigma = (0.1, 0.2)
    with pytest.raises(ValueError, match="one model"):
        mc_samples.run(config, tmp_path)
    with pytest.raises(ValueError, match="Unknown config variant"):
        get_config("huge")
