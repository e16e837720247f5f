"""Experiment 2 (sigma_is_beta) at smoke size, in process: the numbers it writes must hold.

References, independent of the experiment's training loop:
  * -log N(x; mu, sigma^2 I) = SSE / (2 sigma^2) + D log sigma + D/2 log(2 pi), written out
    here in numpy float64, so objective (a) - const = (b) / (2 sigma^2) = (c) D / (2 sigma^2);
  * bounds: float32 eps = 1.2e-7 per rounding; the smoke run takes 40 steps.
"""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sigma_is_beta
from experiments.configs import sigma_is_beta as sigma_is_beta_config
from vaejax.models import VAE

NUM_STEPS = 40  # the smoke config's
CASES = ("sgd_rescaled", "sgd_same_lr", "adam_same_lr", "adam_same_lr_small_eps",
         "sgd_rescaled_float64", "sgd_rescaled_bfloat16")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sigma_is_beta")
    config = sigma_is_beta_config.get_config("smoke")
    exp = config.sigma_is_beta
    assert exp.num_steps == NUM_STEPS and tuple(exp.sigmas) == (0.1,)
    summary = sigma_is_beta.run(config, workdir)
    with open(workdir / "sigma_is_beta.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    written = json.loads((workdir / "sigma_is_beta.json").read_text())
    return workdir, summary, written, rows


def test_files_json_and_report(smoke_run):
    workdir, summary, written, rows = smoke_run
    for name in ("sigma_is_beta.png", "sigma_is_beta.pdf", "sigma_is_beta.csv",
                 "sigma_is_beta.json", "sigma_is_beta_config.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert written == {k: v for k, v in summary.items() if k != "report"}
    assert "![parameter differences between the three objectives](sigma_is_beta.png)" in (
        summary["report"])
    assert f"**{summary['sgd_rescaled_final_max_diff']:.2g}**" in summary["report"]
    assert len(rows) == len(CASES) * NUM_STEPS  # cases x sigmas (1) x steps
    assert {row["case"] for row in rows} == set(CASES)
    assert not list(workdir.glob(".*.tmp"))


def test_rescaled_sgd_coincides_to_rounding(smoke_run):
    _, summary, _, rows = smoke_run
    # float32: a few ulps of parameters of size ~1 after 40 steps.
    assert summary["sgd_rescaled_final_max_diff"] < 2e-6
    assert summary["sgd_rescaled_max_diff_any_step"] < 2e-6
    assert summary["sgd_rescaled_final_max_relative_diff"] < 2e-6
    # ... while the parameters really moved, by far more than the differences.
    assert summary["sgd_rescaled_min_displacement"] > 1e3 * summary["sgd_rescaled_final_max_diff"]
    # float64 control: the same run with 2^-52 rounding.
    assert summary["sgd_rescaled_float64_final_max_diff"] < 1e-12
    # A bfloat16 model on float32 weights: the trajectories agree only to bfloat16 rounding
    # (eps 2^-7 relative per gradient; 40 steps of size <= 0.4 bound the gap by ~0.4 * eps),
    # which is far above float32's gap: the model really ran in bfloat16.
    bf16 = summary["sgd_rescaled_bfloat16_final_max_diff"]
    assert 100 * summary["sgd_rescaled_final_max_diff"] < bf16 < 0.4 * 2.0**-7
    # The CSV holds what the figure shows; its last row per case matches the summary.
    last = [r for r in rows if r["case"] == "sgd_rescaled" and int(r["step"]) == NUM_STEPS][0]
    assert max(float(last["max_abs_diff_a_b"]), float(last["max_abs_diff_a_c"])) == (
        summary["sgd_rescaled_final_max_diff"])
    lr_a, lr_b, lr_c = (float(last[k]) for k in ("lr_a", "lr_b", "lr_c"))
    sigma, num_dims = 0.1, 64
    assert lr_b == pytest.approx(lr_a / (2 * sigma**2), rel=1e-12)
    assert lr_c == pytest.approx(lr_a * num_dims / (2 * sigma**2), rel=1e-12)


def test_unrescaled_sgd_fails_and_adam_needs_no_rescaling(smoke_run):
    _, summary, _, _ = smoke_run
    rescaled = max(summary["sgd_rescaled_final_max_diff"], 1e-9)
    assert summary["sgd_same_lr_final_max_diff"] > 1e3 * rescaled
    # Unrescaled, (b) and (c) barely move: the gap is most of the distance (a) travelled.
    case = summary["cases"]["sgd_same_lr"]
    assert case["final_max_diff_a_c"][0] > 0.5 * case["final_displacement_a"][0]
    # Adam: invariant to the loss scale up to eps; a tiny eps leaves rounding only.
    assert summary["adam_same_lr_small_eps_final_max_diff"] < 2e-6
    assert summary["adam_same_lr_final_max_diff"] < 0.1 * summary["sgd_same_lr_final_max_diff"]
    assert summary["adam_same_lr_final_max_diff"] > summary["adam_same_lr_small_eps_final_max_diff"]


def test_objectives_are_scaled_copies_of_the_negative_elbo():
    """(b) = beta_b ((a) - const), (c) = beta_c ((a) - const), in value and in gradient."""
    num_dims, sigma = 64, 0.1
    model = VAE(hidden=8, latent=2, output_dim=num_dims, likelihood="gaussian_fixed")
    x = jax.random.uniform(jax.random.key(1), (5, num_dims))
    key = jax.random.key(2)
    params = jax.jit(model.init)(key, x, key)
    loss_fn = jax.jit(jax.vmap(jax.value_and_grad(
        lambda p, k: sigma_is_beta.objective_loss(model, k, p, x, key, jnp.float32(sigma))),
        in_axes=(None, 0)))
    losses, grads = loss_fn(params, jnp.arange(3))  # (a), (b), (c) stacked on axis 0
    loss_a, loss_b, loss_c = (float(v) for v in losses)
    const = num_dims * math.log(sigma) + 0.5 * num_dims * math.log(2 * math.pi)
    beta_b, beta_c = 2 * sigma**2, 2 * sigma**2 / num_dims
    assert loss_b == pytest.approx(beta_b * (loss_a - const), rel=1e-5)
    assert loss_c == pytest.approx(beta_c * (loss_a - const), rel=1e-5)
    for k, beta in ((1, beta_b), (2, beta_c)):
        for leaf in jax.tree.leaves(grads):
            ref = np.asarray(leaf[0], np.float64)
            np.testing.assert_allclose(np.asarray(leaf[k]), beta * ref, rtol=1e-4,
                                       atol=1e-6 * beta * np.abs(ref).max())


def test_bad_config_is_rejected(tmp_path):
    config = sigma_is_beta_config.get_config("smoke")
    config.sigma_is_beta.sigmas = (0.1, -1.0)
    with pytest.raises(ValueError, match="sigmas"):
        sigma_is_beta.run(config, tmp_path)
    config.sigma_is_beta.sigmas = ()
    with pytest.raises(ValueError, match="sigmas"):
        sigma_is_beta.run(config, tmp_path)
    with pytest.raises(ValueError, match="variant"):
        sigma_is_beta_config.get_config("huge")
