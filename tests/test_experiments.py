"""Smoke runs of the entry points at tiny size, checking the numbers they write."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_main_job_smoke_writes_report(tmp_path):
    # Each experiment has its own smoke test (tests/test_exp_*.py); this one checks the
    # report assembly with the first experiment.
    _run(["-m", "experiments.main", "--smoke", "--only", "gradient_equivalence",
          "--results", str(tmp_path), "--name", "run"],
         cwd=tmp_path)
    run = tmp_path / "run"
    assert (tmp_path / "latest").resolve() == run.resolve()
    for name in ("report.md", "gradient_equivalence.png", "gradient_equivalence.pdf",
                 "gradient_equivalence.csv", "gradient_equivalence.json",
                 "gradient_estimator_encoder.png", "gradient_encoder.csv"):
        assert (run / name).stat().st_size > 0, name
    summary = json.loads((run / "gradient_equivalence.json").read_text())
    assert abs(summary["slope_float32"] + 2) < 1e-3
    assert summary["mse_min_cosine_float32"] >= 1 - 1e-6
    assert summary["mse_max_relative_error_float32"] <= 1e-5
    assert summary["mse_max_relative_error_float64"] <= 1e-12
    # The decoder run in bfloat16: the identity holds to bfloat16 rounding (eps 2^-7), and the
    # error is at that scale (well above float32's), so the decoder really ran in bfloat16.
    bf16_eps = 2.0**-7
    assert 1e-4 < summary["mse_max_relative_error_bfloat16"] <= 2 * bf16_eps
    assert summary["mse_min_cosine_bfloat16"] >= 1 - bf16_eps
    # The L-sample estimator, a trained decoder and the encoder path obey the same identity;
    # the full -ELBO's encoder gradient does not (the KL does not scale with 1/sigma^2).
    assert summary["estimator_max_relative_error"] <= 1e-5
    assert summary["encoder_recon_max_relative_error"] <= 1e-5
    assert abs(summary["encoder_recon_slope"] + 2) < 1e-3
    assert summary["encoder_elbo_ratio_at_max_sigma"] > 100 * 64 / (2 * 100.0**2)
    estimator_rows = (run / "gradient_estimator.csv").read_text().strip().splitlines()
    assert len(estimator_rows) == 1 + 2 * 2  # header + (untrained, trained) x L in (1, 2)
    report = (run / "report.md").read_text()
    assert "![gradient ratio against sigma](gradient_equivalence.png)" in report
    rows = (run / "gradient_equivalence.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 * 8 * 2  # header + 3 dtypes x sigmas x samples (smoke config)
    # No temporary files are left behind by the atomic writers.
    assert not list(run.glob(".*.tmp"))


def test_gradient_equivalence_cli_overrides(tmp_path):
    config = REPO / "experiments" / "configs" / "gradient_equivalence.py"
    _run(["-m", "experiments.gradient_equivalence", f"--config={config}:smoke",
          "--config.gradient_equivalence.num_samples=3",
          "--config.gradient_equivalence.float64=False",
          "--config.gradient_equivalence.bfloat16=False", f"--workdir={tmp_path}"], cwd=REPO)
    summary = json.loads((tmp_path / "gradient_equivalence.json").read_text())
    assert summary["num_samples"] == 3
    assert "mse_max_relative_error_float64" not in summary
    assert "mse_max_relative_error_bfloat16" not in summary


@pytest.mark.parametrize("flag, message", [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.gradient_equivalence.batch_size=100000", "gradient_equivalence.batch_size"),
    ("--config.train.learnin_rate=0.1", "learnin_rate"),
])
def test_gradient_equivalence_cli_bad_config(tmp_path, flag, message):
    config = REPO / "experiments" / "configs" / "gradient_equivalence.py"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.gradient_equivalence", f"--config={config}:smoke",
         flag, f"--workdir={tmp_path / 'out'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "gradient_equivalence.json").exists()


def test_workdir_that_is_a_file_is_rejected(tmp_path):
    from experiments import common

    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        common.prepare_workdir(target)
