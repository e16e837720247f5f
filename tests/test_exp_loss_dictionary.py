"""The loss-dictionary experiment at smoke size: every loss's gradient identity holds to
float rounding against an independent implementation, except BCE on grey levels (not a
likelihood), and the Huber normaliser equals scipy's quadrature."""

import json

import numpy as np
import pytest

from experiments import loss_dictionary
from experiments.configs.loss_dictionary import get_config

F32, F64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loss_dictionary")
    return workdir, loss_dictionary.run(get_config("smoke"), workdir)


def test_every_identity_holds_to_rounding_but_bce_on_grey_levels(smoke):
    workdir, summary = smoke
    rows = {row["loss"]: row for row in summary["rows"]}
    assert len(rows) == 9
    for name, row in rows.items():
        if name == "BCE, grey levels":
            # log C(lambda) depends on the output: far from a rounding error.
            assert row["float32_max_relative_error"] > 1e-2
            assert row["float64_max_relative_error"] > 1e-2
            continue
        # A handful of float32 / float64 ulps relative to the gradient norm.
        assert row["float32_max_relative_error"] <= 100 * F32, (name, row)
        assert row["float64_max_relative_error"] <= 100 * F64, (name, row)
        assert row["float32_min_cosine"] >= 1 - 100 * F32, (name, row)
    assert summary["huber_log_normalizer_vs_quad"] < 1e-10
    written = json.loads((workdir / "loss_dictionary.json").read_text())
    assert written == {k: v for k, v in summary.items() if k != "report"}
    lines = (workdir / "loss_dictionary.csv").read_text().strip().splitlines()
    # header + (6 scaled rows x 4 scales + 3 unscaled rows x 1) x 2 dtypes
    assert len(lines) == 1 + (6 * 4 + 3) * 2
    assert "| MAE | Laplace(mu, b) |" in summary["report"]


def test_a_wrong_factor_is_caught():
    """The measurement can fail: a Gaussian row with the SSE factor off by 2 is 1/2 off."""
    config = get_config("smoke")
    exp = config.loss_dictionary
    row = loss_dictionary._rows(exp.huber_delta, exp.num_levels)[0]
    wrong = (*row[:5], lambda s, d: 1 / s**2, *row[6:])
    grey = np.asarray(loss_dictionary.common.load_data(config).train[: exp.batch_size])
    levels = np.round(grey * 16) / 16
    result = loss_dictionary._measure(wrong, config, exp, {"grey": levels}, np.float32)
    assert result["max_relative_error"] == pytest.approx(1.0, rel=1e-4)
