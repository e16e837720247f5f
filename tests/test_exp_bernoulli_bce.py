"""Experiment 4 (bernoulli_bce) at smoke size, in process: the numbers it writes must hold.

References used here, independent of the experiment's own code paths:
  * int_0^1 lambda^x (1 - lambda)^(1-x) dx = (2 lambda - 1) / logit(lambda) = 1/C(lambda)
    (elementary integral; 1/2 at lambda = 1/2), Loaiza-Ganem & Cunningham 2019, eq. 7;
  * log C(lambda) = log(2 atanh(1 - 2 lambda) / (1 - 2 lambda)) with numpy's arctanh;
  * CB mean in logits: 1/(1 - e^{-l}) - 1/l (same paper), evaluated in numpy float64.
"""

import csv
import json
import math
from collections import defaultdict

import numpy as np
import pytest
import scipy.integrate
import scipy.special

from experiments import bernoulli_bce
from experiments.configs import bernoulli_bce as bernoulli_bce_config

FIGURES = ("bernoulli_bce_identity", "bernoulli_bce_normalizer", "bernoulli_bce_bias",
           "bernoulli_bce_reconstructions", "bernoulli_bce_samples")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bernoulli_bce")
    summary = bernoulli_bce.run(bernoulli_bce_config.get_config("smoke"), workdir)
    series = defaultdict(lambda: ([], []))
    with open(workdir / "bernoulli_bce.csv", newline="") as f:
        for row in csv.DictReader(f):
            xs, ys = series[(row["figure"], row["panel"], row["series"])]
            xs.append(float(row["x"]))
            ys.append(float(row["y"]))
    series = {key: (np.asarray(xs), np.asarray(ys)) for key, (xs, ys) in series.items()}
    written = json.loads((workdir / "bernoulli_bce.json").read_text())
    return workdir, summary, written, series


def _inverse_c(lambdas):
    lambdas = np.asarray(lambdas, np.float64)
    odd = np.abs(lambdas - 0.5) > 1e-12
    safe = np.where(odd, lambdas, 0.25)
    return np.where(odd, (2 * safe - 1) / scipy.special.logit(safe), 0.5)


def test_files_json_and_report(smoke_run):
    workdir, summary, written, _ = smoke_run
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            assert (workdir / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    for name in ("bernoulli_bce.csv", "bernoulli_bce.json", "bernoulli_bce_config.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert written == {k: v for k, v in summary.items() if k != "report"}
    report = summary["report"]
    for stem in FIGURES:
        assert f"]({stem}.png)" in report, stem
    assert "![log C and the integral of exp(-BCE)](bernoulli_bce_normalizer.png)" in report
    assert not list(workdir.glob(".*.tmp"))


def test_bernoulli_log_likelihood_equals_minus_bce_on_binary_data(smoke_run):
    _, summary, _, series = smoke_run
    assert summary["binary_max_rel_bernoulli_ll_plus_bce"] <= 1e-5
    bce_reference, log_p = series[("identity", "per_example", "log_p_float32")]
    assert bce_reference.size == summary["binary_num_test"] == 297
    assert np.all(bce_reference > 0)
    # float32 library log p against the float64 BCE: within 1e-5 relative, per example.
    np.testing.assert_allclose(-log_p, bce_reference, rtol=1e-5, atol=0)
    # scipy's Bernoulli log-pmf (float64): the identity itself, to float64 rounding.
    _, log_pmf = series[("identity", "per_example", "scipy_logpmf_float64")]
    np.testing.assert_allclose(-log_pmf, bce_reference, rtol=1e-12, atol=0)
    assert math.isfinite(summary["binary_test_elbo"]) and summary["binary_test_elbo"] < 0


def test_integral_of_exp_minus_bce_is_one_over_c(smoke_run):
    _, summary, _, series = smoke_run
    lambdas, integral64 = series[("normalizer", "integral", "gauss_legendre_float64")]
    _, integral32 = series[("normalizer", "integral", "gauss_legendre_float32")]
    _, inverse_c = series[("normalizer", "integral", "inverse_c_float64")]
    reference = _inverse_c(lambdas)
    np.testing.assert_allclose(inverse_c, reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(integral64, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(integral32, reference, rtol=0, atol=1e-6)
    assert summary["integral_max_abs_error_float64"] <= 1e-6
    assert summary["integral_max_abs_error_float32"] <= 1e-6
    # Never normalised: at most 1/2, reached at lambda = 1/2 (C(1/2) = 2).
    assert integral64.max() <= 0.5 + 1e-9
    assert summary["integral_at_half"] == pytest.approx(0.5, abs=1e-12)
    checked, quad = series[("normalizer", "integral", "scipy_quad")]
    np.testing.assert_allclose(quad, _inverse_c(checked), rtol=0, atol=1e-6)
    # The CB density on the plotted grid integrates to 1; exp(-BCE) to 1/C.
    for lam in checked:
        x, density = series[("normalizer", "densities", f"cb_density_lambda={lam:g}")]
        _, unnormalised = series[("normalizer", "densities", f"exp_neg_bce_lambda={lam:g}")]
        assert scipy.integrate.simpson(density, x=x) == pytest.approx(1.0, abs=1e-4)
        assert scipy.integrate.simpson(unnormalised, x=x) == pytest.approx(
            float(_inverse_c(lam)), abs=1e-4)


def test_log_normalizer_and_normalised_elbos(smoke_run):
    _, summary, _, series = smoke_run
    lambdas, log_c32 = series[("normalizer", "log_c_vs_lambda", "vaejax_float32")]
    odd = np.abs(lambdas - 0.5) > 1e-12
    reference = np.full_like(lambdas, math.log(2.0))
    u = 1 - 2 * lambdas[odd]
    reference[odd] = np.log(2 * np.arctanh(u) / u)
    np.testing.assert_allclose(log_c32, reference, rtol=0, atol=1e-6)
    # log C >= log 2 per pixel, so reading the BCE model as a CB adds >= D log 2 nats.
    num_dims = summary["num_dims"]
    assert summary["mean_log_c_per_pixel_bce_model"] >= math.log(2.0)
    gain = summary["bce_model_normalized_elbo"] - summary["bce_model_bernoulli_elbo"]
    assert gain >= num_dims * math.log(2.0) - 1e-3
    assert gain == pytest.approx(summary["elbo_difference_per_pixel_bce_model"] * num_dims,
                                 rel=1e-6)
    assert summary["bce_model_normalized_kl"] == summary["bce_model_bernoulli_kl"]
    for key in ("bce_model_bernoulli", "bce_model_normalized", "cb_model"):
        for part in ("elbo", "recon", "kl"):
            assert math.isfinite(summary[f"{key}_{part}"]), f"{key}_{part}"
    # Trainer.reconstruct / decode_means agree with the experiment's own readings.
    assert summary["library_expected_pixels_max_abs_diff"] <= 1e-6


def test_bias_theory_against_closed_form(smoke_run):
    _, summary, _, series = smoke_run

    def cb_mean(logit):
        return 1 / (1 - math.exp(-logit)) - 1 / logit

    x = summary["theory_x"]
    assert summary["theory_cb_mean_at_lambda_x"] == pytest.approx(
        cb_mean(scipy.special.logit(x)), abs=1e-6)
    lam = summary["theory_cb_optimal_lambda"]
    assert cb_mean(scipy.special.logit(lam)) == pytest.approx(x, abs=1e-4)
    grid, optimal = series[("bias", "theory", "cb_optimal_lambda")]
    # The CB optimum is pushed away from 1/2, the CB mean at lambda = x pulled toward it.
    _, pulled = series[("bias", "theory", "cb_mean_at_lambda_x")]
    assert np.all(np.abs(optimal - 0.5) >= np.abs(grid - 0.5) - 1e-6)
    assert np.all(np.abs(pulled - 0.5) <= np.abs(grid - 0.5) + 1e-6)


def test_config_variants():
    full, smoke = (bernoulli_bce_config.get_config(a) for a in (None, "smoke"))
    assert smoke.train.num_epochs < full.train.num_epochs
    assert smoke.model.hidden < full.model.hidden
    assert smoke.bernoulli_bce.binary_num_epochs < full.bernoulli_bce.binary_num_epochs
    with pytest.raises(ValueError, match="tiny"):
        bernoulli_bce_config.get_config("tiny")
