"""Experiment 6 (learned_variance) at smoke size, in process: the numbers it writes must hold.

References, independent of the experiment's code paths:
  * the always-zero pixels of the digits training split, found here with numpy;
  * per pixel, log N(x; mu, sigma^2) = -log sigma - 1/2 log(2 pi) - (x - mu)^2 / (2 sigma^2),
    so a pixel with sigma >= s earns at most -log s - 1/2 log(2 pi) nats;
  * the floor: max(sigma_raw, s) written out in numpy for the decoder with
    ``min_sigma`` (the head option the floored model is trained with).
"""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import record_fits

from experiments import learned_variance
from experiments.configs import learned_variance as learned_variance_config
from vaejax.data import load_dataset
from vaejax.models import VAE

FIGURES = ("learned_variance_sigma", "learned_variance_log_density", "learned_variance_training")
MODELS = ("per_pixel", "per_pixel_floored", "shared", "optimal")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, compilation_cache):  # the cache: the rerun compiles alike
    workdir = tmp_path_factory.mktemp("learned_variance")
    config = learned_variance_config.get_config("smoke")
    summary = learned_variance.run(config, workdir)
    with open(workdir / "learned_variance_pixels.csv", newline="") as f:
        pixels = list(csv.DictReader(f))
    written = json.loads((workdir / "learned_variance.json").read_text())
    return workdir, config, summary, written, pixels


def test_files_json_and_report(smoke_run):
    workdir, config, summary, written, pixels = smoke_run
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            assert (workdir / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    for name in ("learned_variance_pixels.csv", "learned_variance_models.csv",
                 "learned_variance_training.csv", "learned_variance.json",
                 "learned_variance_config.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert written == {k: v for k, v in summary.items() if k != "report"}
    for stem in FIGURES:
        assert f"]({stem}.png)" in summary["report"], stem
    assert "![per-pixel sigma map and scatter](learned_variance_sigma.png)" in summary["report"]
    assert len(pixels) == 64
    with open(workdir / "learned_variance_training.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    lv = config.learned_variance
    assert len(curve) == len(MODELS) * config.train.num_epochs // lv.eval_every_epochs
    every = lv.eval_every_epochs
    for name in MODELS:
        epochs = [int(r["epoch"]) for r in curve if r["model"] == name]
        assert epochs == list(range(every, config.train.num_epochs + 1, every)), name
    assert not list(workdir.glob(".*.tmp"))


def test_per_pixel_sigma_collapses_on_the_constant_pixels(smoke_run):
    _, config, summary, _, pixels = smoke_run
    train = load_dataset("digits", seed=config.seed).train
    always_zero = np.flatnonzero(train.max(axis=0) == 0)
    assert always_zero.size >= 1
    assert summary["always_zero_pixels"] == always_zero.tolist()
    sigma = np.array([float(p["sigma_per_pixel"]) for p in pixels])
    median = np.median(sigma)
    assert median == pytest.approx(summary["per_pixel_median_sigma"])
    # Far below the median on every always-zero pixel (the smoke run is short: factor 5).
    assert np.all(sigma[always_zero] < 0.2 * median), (sigma[always_zero], median)
    assert summary["per_pixel_min_sigma"] == pytest.approx(sigma.min())
    assert summary["per_pixel_num_collapsed"] == int(
        np.sum(sigma < config.learned_variance.collapsed_sigma))
    assert summary["per_pixel_num_collapsed"] >= 1
    # sigma follows the pixel's spread: strongly correlated in log-log.
    assert summary["correlation_log_sigma_log_std"] > 0.7


def test_collapsed_pixels_buy_the_elbo(smoke_run):
    _, config, summary, _, pixels = smoke_run
    models = summary["models"]
    assert set(models) == set(MODELS)
    per_pixel = models["per_pixel"]
    for other in ("shared", "optimal"):
        assert per_pixel["test_elbo"] > models[other]["test_elbo"]
        assert (per_pixel["log_density_near_constant_pixels"]
                > models[other]["log_density_near_constant_pixels"])
    # A pixel with sigma ~ s earns about -log s - 1/2 log(2 pi): large and positive.
    always_zero = summary["always_zero_pixels"]
    log_density = np.array([float(p["test_log_density_per_pixel"]) for p in pixels])
    assert np.all(log_density[always_zero] > 2.0)
    # Each map sums to the reconstruction term of its own posterior sample.
    for name, m in models.items():
        assert m["recon_from_pixel_map"] == pytest.approx(m["recon_of_map_sample"], rel=1e-4,
                                                          abs=1e-3), name
        # ... which is close to the Trainer's test recon (another sample of z).
        assert abs(m["recon_of_map_sample"] - m["test_recon"]) < 0.2 * abs(m["test_recon"]) + 5


def test_floor_caps_sigma_and_log_density(smoke_run):
    _, config, summary, _, pixels = smoke_run
    min_sigma = config.learned_variance.min_sigma
    floored = summary["models"]["per_pixel_floored"]
    assert floored["min_sigma"] >= min_sigma * (1 - 1e-6)
    assert floored["num_collapsed_pixels"] == 0
    cap = -math.log(min_sigma) - 0.5 * math.log(2 * math.pi)
    assert summary["floor_cap_nats_per_pixel"] == pytest.approx(cap)
    log_density = np.array([float(p["test_log_density_per_pixel_floored"]) for p in pixels])
    assert np.all(log_density <= cap + 1e-5)


def test_floored_decoder_is_max_of_raw_sigma_and_floor():
    min_sigma = 0.05
    model = VAE(hidden=8, latent=2, output_dim=16, likelihood="gaussian_per_pixel",
                min_sigma=min_sigma)
    raw = VAE(hidden=8, latent=2, output_dim=16, likelihood="gaussian_per_pixel")
    key = jax.random.key(0)
    params = jax.jit(model.init)(key, jnp.zeros((1, 16)), key)
    # Push the raw log-sigma head far down for half the pixels.
    decoder = params["params"]["decoder"]
    head = decoder["log_sigma"]
    bias = np.zeros(16, np.float32)
    bias[:8] = -20.0
    head["bias"] = jnp.asarray(bias)
    z = jax.random.normal(key, (4, 2))
    decode = jax.jit(lambda m, p, z: m.apply(p, z, method=VAE.decode), static_argnums=0)
    out = decode(model, params, z)
    # the raw head, recomputed in numpy
    hidden = np.tanh(np.asarray(z) @ np.asarray(decoder["hidden"]["kernel"])
                     + np.asarray(decoder["hidden"]["bias"]))
    raw_log_sigma = hidden @ np.asarray(head["kernel"]) + bias
    np.testing.assert_allclose(np.asarray(decode(raw, params, z)["log_sigma"]), raw_log_sigma,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["log_sigma"]),
                               np.maximum(raw_log_sigma, math.log(min_sigma)), rtol=1e-5,
                               atol=1e-6)
    assert np.all(np.asarray(out["log_sigma"])[:, :8] == np.float32(math.log(min_sigma)))


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if k not in ("report", "train_seconds")}
    return value


def test_rerun_in_the_same_workdir_resumes_with_the_curves(smoke_run, monkeypatch):
    """Each model is restored from its checkpoint with its training curve (the fit history
    is saved with the state): the same numbers and curves come out without retraining."""
    workdir, config, summary, _, _ = smoke_run
    curves = (workdir / "learned_variance_training.csv").read_text()
    fits = record_fits(monkeypatch)
    again = learned_variance.run(config, workdir)
    assert len(fits) == len(MODELS)
    assert all(f.resumed_from is not None and f.block_steps == [] for f in fits)
    assert _without_timings(again) == _without_timings(summary)
    assert (workdir / "learned_variance_training.csv").read_text() == curves


def test_bad_config_is_rejected(tmp_path):
    config = learned_variance_config.get_config("smoke")
    config.learned_variance.min_sigma = -0.1
    with pytest.raises(ValueError, match="min_sigma"):
        learned_variance.run(config, tmp_path)
    with pytest.raises(ValueError, match="variant"):
        learned_variance_config.get_config("huge")
