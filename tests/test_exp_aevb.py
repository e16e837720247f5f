"""Experiment 7 (AEVB figures 2-5 with wake-sleep): padding is exact, and the numbers written.

* A member padded to a larger latent size and masked has the loss and the gradients of
  the smaller model (reference: the smaller model itself, with the same draws), for AEVB
  and wake-sleep, Bernoulli and per-pixel Gaussian decoders; its padding stays zero.
* The digits smoke run writes figures 2-5 with their CSVs, and the CSVs hold what the
  report claims: one curve per (data set, method, latent size) with increasing sample
  counts, the step size chosen as the best training bound at the selection step, the
  figure-4 grid at Phi^-1 of evenly spaced u, finite IWAE values.
* The MNIST and Frey Face configs run on mocked TFDS data and a written .mat file.
"""

from __future__ import annotations

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
import scipy.stats

from experiments import _aevb_population as population
from experiments import aevb
from experiments.configs import aevb_digits, aevb_frey, aevb_mnist
from vaejax.models import VAE
from vaejax.wake_sleep import WakeSleepNoise

B, D, H, SMALL, BIG = 8, 12, 6, 3, 7


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("method", population.METHODS)
@pytest.mark.parametrize("likelihood", population.LIKELIHOODS)
def test_padded_masked_member_is_the_smaller_model(method, likelihood):
    def make(latent):
        model = VAE(hidden=H, latent=latent, output_dim=D, likelihood=likelihood,
                    sigmoid_mean=likelihood != "bernoulli", init_scale=0.3)
        return population.Population(model=model, method=method, batch_size=B, seed=1)

    small, big = make(SMALL), make(BIG)
    params_small = jax.tree.map(jnp.asarray, small.initial_params(SMALL))
    params_big = jax.tree.map(jnp.asarray, population.pad_params(
        params_small, big.initial_params(BIG)))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((B, D)) < 0.5, jnp.float32)
    eps, dream = (jnp.asarray(rng.normal(size=(B, BIG)), jnp.float32) for _ in range(2))
    if method == "aevb":
        noise_big, noise_small = eps, eps[:, :SMALL]
    else:
        key = jax.random.key(3)
        noise_big = WakeSleepNoise(wake=eps, dream=dream, dream_key=key)
        noise_small = WakeSleepNoise(wake=eps[:, :SMALL], dream=dream[:, :SMALL],
                                     dream_key=key)
    weight_decay = 0.01  # the padding (zeros) adds nothing to the prior term either

    def value_and_grad(pop, params, noise, latent):
        mask = population.latent_mask(latent, pop.max_latent)
        fn = jax.jit(jax.value_and_grad(pop.member_loss, has_aux=True))
        return fn(params, x, noise, mask, weight_decay)

    (loss_s, aux_s), grad_s = value_and_grad(small, params_small, noise_small, SMALL)
    (loss_b, aux_b), grad_b = value_and_grad(big, params_big, noise_big, SMALL)
    np.testing.assert_allclose(loss_b, loss_s, rtol=1e-6)
    np.testing.assert_allclose(aux_b, aux_s, rtol=1e-6)
    for g_small, g_big in zip(jax.tree.leaves(grad_s), jax.tree.leaves(grad_b), strict=True):
        used = tuple(slice(0, n) for n in g_small.shape)
        np.testing.assert_allclose(g_big[used], g_small, rtol=2e-5, atol=1e-7)
        padding = np.asarray(g_big).copy()
        padding[used] = 0.0
        assert np.all(padding == 0.0)  # exactly zero: the padding never moves


def test_population_padding_stays_zero_and_members_start_alike():
    model = VAE(hidden=H, latent=4, output_dim=D, likelihood="bernoulli", init_scale=0.01)
    pop = population.Population(model=model, method="wake_sleep", batch_size=B,
                                transform="binarize", levels=2, seed=2)
    members = population.make_members([(2, 40), (4, 40)], 0.1)
    state = pop.init(members)
    other = pop.init(population.make_members([(2, 40)], 0.01))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(other.params), strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # same latent size: same initial weights
    train = jnp.asarray(np.random.default_rng(1).random((40, D)), jnp.float32)
    state, objective = jax.jit(pop.train)(state, members, train, jnp.int32(0), jnp.int32(30))
    assert np.all(np.isfinite(objective))
    enc, dec = state.params["params"]["encoder"], state.params["params"]["decoder"]
    for leaf in (enc["mean"]["kernel"], enc["log_var"]["kernel"], enc["mean"]["bias"]):
        assert np.all(np.asarray(leaf)[0, ..., 2:] == 0.0) and np.any(leaf[1, ..., 2:] != 0)
    assert np.all(np.asarray(dec["hidden"]["kernel"])[0, 2:] == 0.0)
    assert np.any(np.asarray(dec["hidden"]["kernel"])[0, :2] != 0.0)


def test_schedule_groups_and_selection_helpers():
    steps = population.eval_schedule(10, 4000, 8, (500,))
    assert steps[0] == 10 and steps[-1] == 4000 and 500 in steps
    assert steps == sorted(set(steps))
    assert population.latent_groups([200, 3, 5, 10, 20, 2], 10.0) == [[2, 3, 5, 10, 20], [200]]
    assert population.latent_groups([3, 200], 1e9) == [[3, 200]]
    bounds = np.array([[-30.0, np.nan], [-28.0, -50.0], [np.inf, -40.0]])
    np.testing.assert_array_equal(population.select_step_sizes(bounds), [1, 2])
    with pytest.raises(FloatingPointError, match="arm 1"):
        population.select_step_sizes(np.array([[-1.0, np.nan], [-2.0, -np.inf]]))
    with pytest.raises(ValueError, match="cannot pad"):
        population.pad_params({"w": np.zeros((3, 2))}, {"w": np.zeros((2, 2))})


# --------------------------------------------------------------------------- digits run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("aevb")
    config = aevb_digits.get_config("smoke")
    config.progress = False
    return config, workdir, aevb.run(config, workdir)


def test_writes_four_figures_csvs_json_and_report(smoke):
    config, workdir, summary = smoke
    for figure in ("aevb_fig2", "aevb_fig3", "aevb_fig4", "aevb_fig5"):
        for ext in ("png", "pdf", "csv"):
            assert (workdir / f"{figure}.{ext}").stat().st_size > 0, (figure, ext)
        assert f"]({figure}.png)" in summary["report"]
    saved = json.loads((workdir / "aevb.json").read_text())
    assert "report" not in saved and saved["final"] == summary["final"]
    assert not list(workdir.glob(".*.tmp"))
    assert summary["samples_per_second"] > 0 and summary["wall_seconds"] > 0
    steps = sum((config.num_train_samples // 100) * len(set(p.latent_sizes) | {2})
                for p in config.panels.values())
    assert summary["member_steps"] > steps  # + wake-sleep + selection + figure 3


def test_figure2_curves_and_final_bounds(smoke):
    config, workdir, summary = smoke
    rows = _read(workdir / "aevb_fig2.csv")
    assert list(rows[0]) == list(aevb.FIG2_COLUMNS)
    for name, panel in config.panels.items():
        expected = {("aevb", z) for z in set(panel.latent_sizes) | {config.manifold_latent}
                    | set(config.sample_latents)}
        expected |= {("wake_sleep", z) for z in panel.latent_sizes}
        curves = {}
        for r in rows:
            if r["panel"] == name and r["selected"] == "1":
                curves.setdefault((r["method"], int(r["latent"])), []).append(r)
        assert set(curves) == expected
        for (method, latent), curve in curves.items():
            samples = [int(r["samples"]) for r in curve]
            assert samples == sorted(set(samples))  # one point per evaluation, increasing
            assert all(int(r["samples"]) == 100 * int(r["step"]) for r in curve)
            assert samples[-1] == config.num_train_samples
            assert len({r["learning_rate"] for r in curve}) == 1
            bounds = [float(r[k]) for r in curve for k in ("train_bound", "test_bound")]
            assert np.all(np.isfinite(bounds))
            final = summary["final"][name][method][str(latent)]
            assert final["train"] == pytest.approx(float(curve[-1]["train_bound"]))
            assert final["test"] == pytest.approx(float(curve[-1]["test_bound"]))
            assert f"{final['test']:.4g}" in summary["report"]
    # Bernoulli bounds are log-probabilities of binary images: <= 0.
    assert all(float(r["train_bound"]) <= 0 for r in rows if r["panel"] == "bernoulli")


def test_step_size_is_the_best_training_bound_at_the_selection_step(smoke):
    config, workdir, summary = smoke
    rows = _read(workdir / "aevb_fig2.csv")
    select = config.select_samples
    groups = {}
    for r in rows:
        if int(r["samples"]) == select:
            groups.setdefault((r["panel"], r["method"], r["latent"]), []).append(r)
    assert groups
    for candidates in groups.values():
        assert sorted(float(r["learning_rate"]) for r in candidates) == pytest.approx(
            sorted(config.learning_rates))
        chosen = [r for r in candidates if r["selected"] == "1"]
        assert len(chosen) == 1
        assert float(chosen[0]["train_bound"]) == max(float(r["train_bound"])
                                                      for r in candidates)
    # After the selection only the chosen step size goes on.
    later = [r for r in rows if int(r["samples"]) > select]
    assert later and all(r["selected"] == "1" for r in later)


def test_figure3_iwae_and_train_sizes(smoke):
    config, workdir, summary = smoke
    rows = [r for r in _read(workdir / "aevb_fig3.csv") if r["selected"] == "1"]
    assert {int(r["num_train"]) for r in rows} == {50, 1500}  # 100000 is capped at 1500
    assert {r["method"] for r in rows} == {"aevb", "wake_sleep"}
    assert {int(r["latent"]) for r in rows} == {config.fig3_latent}
    for r in rows:
        assert math.isfinite(float(r["train_iwae"])) and math.isfinite(float(r["test_iwae"]))
    final = summary["fig3"]["final"]
    assert set(final) == {"aevb", "wake_sleep"} and set(final["aevb"]) == {"50", "1500"}
    assert summary["fig3"]["iwae_samples"] == config.fig3_iwae_samples
    assert "HMC" in summary["report"]


def test_figure4_grid_and_figure5_samples(smoke):
    config, workdir, summary = smoke
    rows = _read(workdir / "aevb_fig4.csv")
    n = config.manifold_grid
    values = scipy.stats.norm.ppf((np.arange(n) + 0.5) / n)
    for name in config.panels:
        grid = [r for r in rows if r["panel"] == name]
        assert len(grid) == n * n
        for r in grid:
            i, j = int(r["row"]), int(r["col"])
            assert float(r["z1"]) == pytest.approx(values[j])
            assert float(r["z2"]) == pytest.approx(values[n - 1 - i])  # z2 grows upwards
        pixels = np.array([[float(r[f"x{d}"]) for d in range(64)] for r in grid])
        assert np.all((pixels >= 0) & (pixels <= 1))
    samples = _read(workdir / "aevb_fig5.csv")
    for name in config.panels:
        for latent in config.sample_latents:
            got = [r for r in samples if r["panel"] == name and int(r["latent"]) == latent]
            assert len(got) == config.num_sample_images


# --------------------------------------------------------------------------- other data


def _small_run_config(config):
    config.progress = False
    config.fig3_panel = None  # figure 3 is covered by the digits run
    return config


def test_mnist_config_runs_on_mocked_tfds(tmp_path):
    import tensorflow_datasets as tfds

    def binary_source(builder, split, **kwargs):
        del builder, kwargs
        rng = np.random.default_rng(["train", "validation", "test"].index(split))
        images = rng.integers(0, 2, size=(30, 28, 28, 1), dtype=np.uint8)
        return [{"image": image} for image in images]

    config = _small_run_config(aevb_mnist.get_config("smoke"))
    config.data_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_data_source_fn=binary_source):
        summary = aevb.run(config, tmp_path / "run")
    assert summary["panels"]["mnist"]["dataset"] == "binarized_mnist"
    assert summary["panels"]["mnist"]["num_train"] == 30
    final = summary["final"]["mnist"]
    assert set(final) == {"aevb", "wake_sleep"}
    assert all(np.isfinite(v["test"]) and v["test"] <= 0 for v in final["aevb"].values())
    assert (tmp_path / "run" / "aevb_fig4.png").stat().st_size > 0


def test_frey_config_runs_on_a_written_mat(tmp_path):
    faces = np.random.default_rng(0).integers(0, 256, size=(560, 60), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": faces})
    config = _small_run_config(aevb_frey.get_config("smoke"))
    config.data_path = str(tmp_path / "frey_rawface.mat")
    summary = aevb.run(config, tmp_path / "run")
    info = summary["panels"]["frey"]
    assert (info["dataset"], info["likelihood"], info["num_train"]) == (
        "frey_face", "gaussian_per_pixel", 54)
    assert all(np.isfinite(v["test"]) for m in summary["final"]["frey"].values()
               for v in m.values())
    rows = _read(tmp_path / "run" / "aevb_fig4.csv")
    assert len(rows) == config.manifold_grid**2 and "x559" in rows[0]


def test_configs_keep_the_training_cli_keys_and_follow_overrides():
    config = aevb_digits.get_config("5")
    assert (config.latent, config.dataset, config.binarize) == (5, "digits", "dynamic")
    config.hidden = 33  # a panel that does not set a key follows the top level
    assert config.panels.bernoulli.hidden == 33 and config.panels.gaussian.hidden == 33
    assert config.panels.gaussian.likelihood == "gaussian_per_pixel"
    full = aevb_mnist.get_config(None)
    assert full.num_train_samples == 10**8 and full.fig3_iwae_samples == 5000
    assert tuple(full.learning_rates) == (0.01, 0.02, 0.1)
    assert tuple(aevb_frey.get_config(None).latent_sizes) == (2, 5, 10, 20)
    for variant in ("gpu", "0", "-3"):
        with pytest.raises(ValueError, match=f"variant '{variant}'.*latent size"):
            aevb_digits.get_config(variant)
