"""Experiment 3 (sigma sweep by population training): the smoke run and its numbers.

The smoke config trains 16 sigmas in [1e-2, 3] as one population for a few epochs
(hidden 16, 2 latents) beside a learned-sigma model; the checks are the physics the
report claims (KL falls with sigma, the posterior collapses at large sigma, the ELBO peaks
where sigma = sqrt(E_q MSE)) and the files it writes. The fixed-point helper is checked
against a closed form.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers import checkpoint_steps, record_fits

from experiments import sigma_sweep
from experiments.configs.sigma_sweep import get_config


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, compilation_cache):  # the cache: the rerun compiles alike
    workdir = tmp_path_factory.mktemp("sigma_sweep")
    config = get_config("smoke")
    return config, workdir, sigma_sweep.run(config, workdir)


def test_writes_figures_csv_json_and_report(smoke):
    config, workdir, summary = smoke
    for name in ("sigma_sweep.png", "sigma_sweep.pdf", "sigma_sweep_images.png",
                 "sigma_sweep_images.pdf", "sigma_sweep.csv", "sigma_sweep.json",
                 "sigma_sweep_config.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert not list(workdir.glob(".*.tmp"))
    report = summary["report"]
    assert "](sigma_sweep.png)" in report and "](sigma_sweep_images.png)" in report
    assert f"{summary['sigma_elbo_peak']:.3g}" in report
    saved = json.loads((workdir / "sigma_sweep.json").read_text())
    assert saved["sigma_elbo_peak"] == summary["sigma_elbo_peak"]
    assert "report" not in saved


def test_one_population_member_per_sigma(smoke):
    config, workdir, summary = smoke
    exp = config.sigma_sweep
    assert summary["num_sigmas"] == exp.num_sigmas >= 16
    assert summary["population"] >= summary["num_sigmas"]
    with open(workdir / "sigma_sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fixed = [r for r in rows if r["model"] == "fixed"]
    assert len(fixed) == exp.num_sigmas and len(rows) == exp.num_sigmas + 1
    sigmas = np.array([float(r["sigma"]) for r in fixed])
    np.testing.assert_allclose(sigmas, np.logspace(-2, math.log10(3.0), exp.num_sigmas),
                               rtol=1e-6)
    # ELBO = recon - KL, per row, as written.
    for r in rows:
        assert float(r["test_elbo"]) == pytest.approx(
            float(r["test_recon"]) - float(r["test_kl"]), rel=1e-4, abs=1e-3)


def test_kl_falls_and_posterior_collapses_at_large_sigma(smoke):
    config, workdir, summary = smoke
    assert summary["kl_smallest_sigma"] > 10 * summary["kl_largest_sigma"]
    assert summary["kl_largest_sigma"] < 0.1
    assert summary["active_units_smallest_sigma"] >= 1
    assert summary["active_units_largest_sigma"] == 0
    largest = summary["largest_sigma_with_active_unit"]
    assert largest is not None and largest < summary["sigma_max"]


def test_elbo_peaks_where_sigma_equals_sqrt_expected_mse(smoke):
    config, workdir, summary = smoke
    exp = config.sigma_sweep
    grid_step = (exp.sigma_max / exp.sigma_min) ** (1 / (exp.num_sigmas - 1))
    peak, fixed = summary["sigma_elbo_peak"], summary["sigma_fixed_point"]
    assert exp.sigma_min < peak < exp.sigma_max  # an interior maximum
    assert abs(math.log(peak / fixed)) < math.log(grid_step)
    assert abs(math.log(summary["sqrt_expected_mse_at_peak"] / peak)) < math.log(grid_step)


def test_learned_sigma_moves_toward_its_optimum(smoke):
    config, workdir, summary = smoke
    target = summary["learned_sqrt_expected_mse_train"]  # the ML sigma of that model
    moved = abs(math.log(summary["learned_sigma"] / target))
    assert moved < abs(math.log(summary["learned_init_sigma"] / target))
    assert summary["learned_sigma"] == pytest.approx(summary["sigma_fixed_point"], rel=0.5)


def test_fixed_point_of_a_power_law_is_exact():
    # E_q MSE(sigma) = c sigma: sigma = sqrt(c sigma) at sigma = c, and the log-log
    # interpolation is exact for a power law.
    sigmas = np.logspace(-2, 0.5, 11)
    assert sigma_sweep.fixed_point(sigmas, 0.2 * sigmas) == pytest.approx(0.2, rel=1e-9)
    assert sigma_sweep.fixed_point(sigmas, np.full(11, 0.01)) == pytest.approx(0.1, rel=1e-9)
    assert math.isnan(sigma_sweep.fixed_point(sigmas, np.full(11, 1e-9)))


def test_expected_mse_inverts_the_gaussian_recon_term():
    from vaejax.likelihoods import gaussian_log_likelihood

    rng = np.random.default_rng(0)
    x, mean = rng.uniform(size=(5, 64)), rng.uniform(size=(5, 64))
    for sigma in (0.01, 0.3, 3.0):
        recon = float(np.mean(gaussian_log_likelihood(x, mean, sigma)))
        got = sigma_sweep._expected_mse(np.array([recon]), np.array([sigma]), 64)[0]
        assert got == pytest.approx(np.mean((x - mean) ** 2), rel=1e-4)


def test_rerun_in_the_same_workdir_resumes_from_the_checkpoints(smoke, digits, monkeypatch):
    """The finished trainings are restored, not redone, and the same numbers come out."""
    config, workdir, summary = smoke
    folders = [workdir / "checkpoints" / "sigma_sweep" / m for m in ("fixed", "learned")]
    num_steps = config.train.num_epochs * (digits.train.shape[0] // config.train.batch_size)
    assert [checkpoint_steps(f) for f in folders] == [[num_steps]] * 2
    fits = record_fits(monkeypatch)
    again = sigma_sweep.run(config, workdir)
    assert [(f.resumed_from, f.block_steps) for f in fits] == [(num_steps, [])] * 2
    assert again == summary
    assert [checkpoint_steps(f) for f in folders] == [[num_steps]] * 2


def test_bad_grid_is_rejected(tmp_path):
    # sigma > 0 is the schema's check now (config.sigma_sweep.sigma_min is positive_real),
    # so run() names the key; sigma_grid itself checks the order of the bounds.
    config = get_config("smoke")
    config.sigma_sweep.sigma_min = 0.0
    with pytest.raises(ValueError, match="sigma_min"):
        sigma_sweep.run(config, tmp_path)
    config.sigma_sweep.sigma_min = 4.0  # above sigma_max
    with pytest.raises(ValueError, match="sigma_min"):
        sigma_sweep.sigma_grid(config.sigma_sweep)
    with pytest.raises(ValueError, match="sigma_min"):
        sigma_sweep.run(config, tmp_path)
    config = get_config("smoke")
    config.sigma_sweep.num_sigmas = 1
    with pytest.raises(ValueError, match="num_sigmas"):
        sigma_sweep.run(config, tmp_path)
    with pytest.raises(ValueError, match="Unknown config variant"):
        get_config("huge")
