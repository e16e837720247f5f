"""Experiment 7 (AEVB figures 2-5 with wake-sleep): padding is exact, and the numbers written.

* On the engine, a member padded to a larger latent size and masked
  (``Trainer(mask_latents=True)``, ``Members.latent``) has the loss and the gradients of
  the smaller model (reference: a Trainer whose model has the smaller latent size, with
  the same draws), for AEVB and wake-sleep, Bernoulli and per-pixel Gaussian decoders;
  its padding starts at zero, gets an exactly-zero gradient and stays zero.
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
from helpers import record_fits

from experiments import aevb, common
from experiments.aevb import training
from experiments.configs import aevb_digits, aevb_frey, aevb_mnist
from vaejax import trainer as trainer_lib
from vaejax.models import VAE

B, D, H, SMALL, BIG = 8, 12, 6, 3, 7
LIKELIHOODS = ("bernoulli", "gaussian_per_pixel")  # the two decoders of the AEVB panels


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- padding


def _pad(params, axes, latent: int):
    """The small model's parameters zero-padded to ``latent`` along each leaf's latent axes."""
    def pad(leaf, leaf_axes):
        widths = [(0, latent - n if i in leaf_axes else 0) for i, n in enumerate(leaf.shape)]
        return jnp.pad(leaf, widths)

    return jax.tree.map(pad, params, axes, is_leaf=lambda x: isinstance(x, tuple))


def _used(leaf_small):
    return tuple(slice(0, n) for n in leaf_small.shape)


@pytest.mark.parametrize("objective", ("elbo", "wake_sleep"))
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_padded_masked_member_is_the_smaller_model(objective, likelihood, monkeypatch):
    def make(latent, mask_latents):
        model = VAE(hidden=H, latent=latent, output_dim=D, likelihood=likelihood,
                    sigmoid_mean=likelihood != "bernoulli", init_scale=0.3)
        return trainer_lib.Trainer(model=model, batch_size=B, objective=objective,
                                   weight_decay=True, mask_latents=mask_latents)

    small, big = make(SMALL, False), make(BIG, True)
    # The padding (zeros) adds nothing to the prior term either.
    member = common.first_member(trainer_lib.make_members(
        latent=SMALL, num_train=B, seed=1, weight_decay=0.01))
    params_small = small.init_member(member).params
    params_big = _pad(params_small, trainer_lib.latent_axes(big.model), BIG)
    shapes = jax.tree.map(jnp.shape, big.init_member(member).params)
    assert jax.tree.map(jnp.shape, params_big) == shapes
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((B, D)) < 0.5, jnp.float32)
    key = jax.random.key(3)

    # The same draws: a latent-shaped draw of the small model is the first SMALL columns
    # of the big model's draw from the same key (q(z|x) noise, wake eps, dream z); the
    # pixel-shaped draws ([B, D], the dreamt x) are shared as they are.
    normal = jax.random.normal

    def leading_columns(key, shape=(), dtype=jnp.float32):
        shape = tuple(shape)
        if shape and shape[-1] == SMALL:
            return normal(key, (*shape[:-1], BIG), dtype)[..., :SMALL]
        return normal(key, shape, dtype)

    monkeypatch.setattr(jax.random, "normal", leading_columns)

    def value_and_grad(trainer, params):
        fn = jax.jit(lambda p: jax.value_and_grad(trainer.member_loss, has_aux=True)(
            p, x, key, member))
        return fn(params)

    (loss_s, aux_s), grad_s = value_and_grad(small, params_small)
    (loss_b, aux_b), grad_b = value_and_grad(big, params_big)
    np.testing.assert_allclose(loss_b, loss_s, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(aux_b), jax.tree.leaves(aux_s), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(aux_b.weight_decay) > 0
    for g_small, g_big in zip(jax.tree.leaves(grad_s), jax.tree.leaves(grad_b), strict=True):
        used = _used(g_small)
        np.testing.assert_allclose(g_big[used], g_small, rtol=2e-5, atol=1e-7)
        padding = np.asarray(g_big).copy()
        padding[used] = 0.0
        assert np.all(padding == 0.0)  # exactly zero: the padding never moves


def _padding(leaf, axes, latent: int) -> np.ndarray:
    """The entries of one member's leaf outside its first ``latent`` latent dimensions."""
    leaf = np.asarray(leaf)
    outside = np.zeros(leaf.shape, bool)
    for axis in axes:
        index = [slice(None)] * leaf.ndim
        index[axis] = slice(latent, None)
        outside[tuple(index)] = True
    return leaf[outside]


def test_init_zeroes_the_padding_and_members_of_one_seed_start_alike():
    model = VAE(hidden=H, latent=4, output_dim=D, likelihood="bernoulli", init_scale=0.01)
    trainer = trainer_lib.Trainer(model=model, batch_size=B, objective="wake_sleep",
                                  optimizer="adagrad", sampling="uniform", binarize=True,
                                  weight_decay=True, mask_latents=True)
    seeds = [training.member_seed(2, z) for z in (2, 4, 2)]
    members = trainer_lib.make_members(latent=[2, 4, 2], num_train=40, seed=seeds,
                                       learning_rate=[0.1, 0.1, 0.02], weight_decay=1 / 40)
    state = trainer.jit.init(members)
    other = trainer.jit.init(trainer_lib.make_members(latent=2, num_train=40, seed=seeds[0],
                                                      learning_rate=0.01))
    axes = trainer_lib.latent_axes(model)
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
    initial = [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)]
    for a, b in zip(initial, jax.tree.leaves(other.params), strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # same latent size and seed: same weights
    for leaf in initial:
        np.testing.assert_array_equal(leaf[2], leaf[0])  # the step-size candidates too
    assert any(ax for ax in flat_axes)
    for leaf, leaf_axes in zip(initial, flat_axes, strict=True):
        if leaf_axes:
            assert np.all(_padding(leaf[0], leaf_axes, 2) == 0.0)
            assert np.any(_padding(leaf[1], leaf_axes, 2) != 0.0)  # member 1 uses all 4

    train = jnp.asarray(np.random.default_rng(1).random((40, D)), jnp.float32)
    state, block = trainer.jit.run(state, train, members, jnp.int32(0), jnp.int32(30))
    assert np.all(np.isfinite(np.asarray(block.loss)))
    assert np.all(np.asarray(block.first_bad_step) == -1)
    trained = [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)]
    for leaf, before, leaf_axes in zip(trained, initial, flat_axes, strict=True):
        assert not np.array_equal(leaf[0], before[0])  # the used weights moved ...
        if leaf_axes:
            assert np.all(_padding(leaf[0], leaf_axes, 2) == 0.0)  # ... the padding did not
    dec = state.params["params"]["decoder"]["hidden"]["kernel"]
    assert np.all(np.asarray(dec)[0, 2:] == 0.0) and np.any(np.asarray(dec)[0, :2] != 0.0)


def test_latent_mask_and_axes():
    np.testing.assert_array_equal(trainer_lib.latent_mask(3, 5), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(trainer_lib.latent_mask(jnp.array([1, 4]), 4),
                                  [[1, 0, 0, 0], [1, 1, 1, 1]])
    model = VAE(hidden=H, latent=BIG, output_dim=D, likelihood="gaussian_per_pixel")
    axes = trainer_lib.latent_axes(model)["params"]
    assert axes["encoder"]["mean"] == {"kernel": (1,), "bias": (0,)}
    assert axes["encoder"]["log_var"] == {"kernel": (1,), "bias": (0,)}
    assert axes["encoder"]["hidden"] == {"kernel": (), "bias": ()}
    assert axes["decoder"]["hidden"] == {"kernel": (0,), "bias": ()}
    assert axes["decoder"]["log_sigma"] == {"kernel": (), "bias": ()}


def test_schedule_groups_and_selection_helpers():
    steps = training.eval_schedule(10, 4000, 8, (500,))
    assert steps[0] == 10 and steps[-1] == 4000 and 500 in steps
    assert steps == sorted(set(steps))
    with pytest.raises(ValueError, match="first_step"):
        training.eval_schedule(0, 10, 3)
    assert training.latent_groups([200, 3, 5, 10, 20, 2], 10.0) == [[2, 3, 5, 10, 20], [200]]
    assert training.latent_groups([3, 200], 1e9) == [[3, 200]]
    bounds = np.array([[-30.0, np.nan], [-28.0, -50.0], [np.inf, -40.0]])
    np.testing.assert_array_equal(training.select_step_sizes(bounds), [1, 2])
    # A tie goes to the smaller step size (the candidates are in ascending order).
    np.testing.assert_array_equal(training.select_step_sizes(
        np.array([[-5.0, -7.0], [-5.0, -6.0], [-6.0, -6.0]])), [0, 1])
    with pytest.raises(FloatingPointError, match="arm 1"):
        training.select_step_sizes(np.array([[-1.0, np.nan], [-2.0, -np.inf]]))
    # One seed per latent size: a latent size's members start alike, other sizes differ.
    assert training.member_seed(0, 3) == training.member_seed(0, 3)
    assert len({training.member_seed(s, z) for s in (0, 1) for z in (2, 3, 5)}) == 6


# --------------------------------------------------------------------------- digits run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, compilation_cache):  # the cache: the rerun compiles alike
    workdir = tmp_path_factory.mktemp("aevb")
    config = aevb_digits.get_config("smoke")
    config.run.progress = False
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
    exp = config.aevb
    steps = sum((exp.num_train_samples // 100) * len(set(p.latent_sizes) | {2})
                for p in exp.panels.values())
    assert summary["member_steps"] > steps  # + wake-sleep + selection + figure 3


def test_figure2_curves_and_final_bounds(smoke):
    config, workdir, summary = smoke
    rows = _read(workdir / "aevb_fig2.csv")
    assert list(rows[0]) == list(aevb.FIG2_COLUMNS)
    assert list(aevb.FIG2_COLUMNS) == [k for k in training.RECORD_KEYS if "iwae" not in k]
    exp = config.aevb
    for name, panel in exp.panels.items():
        expected = {("aevb", z) for z in set(panel.latent_sizes) | {exp.manifold_latent}
                    | set(exp.sample_latents)}
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
            assert samples[-1] == exp.num_train_samples
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
    select = config.aevb.select_samples
    groups = {}
    for r in rows:
        if int(r["samples"]) == select:
            groups.setdefault((r["panel"], r["method"], r["latent"]), []).append(r)
    assert groups
    for candidates in groups.values():
        assert sorted(float(r["learning_rate"]) for r in candidates) == pytest.approx(
            sorted(config.aevb.learning_rates))
        chosen = [r for r in candidates if r["selected"] == "1"]
        assert len(chosen) == 1
        assert float(chosen[0]["train_bound"]) == max(float(r["train_bound"])
                                                      for r in candidates)
    # After the selection only the chosen step size goes on.
    later = [r for r in rows if int(r["samples"]) > select]
    assert later and all(r["selected"] == "1" for r in later)


def test_figure3_iwae_and_train_sizes(smoke):
    config, workdir, summary = smoke
    all_rows = _read(workdir / "aevb_fig3.csv")
    assert list(all_rows[0]) == list(aevb.FIG3_COLUMNS) == list(training.RECORD_KEYS)
    rows = [r for r in all_rows if r["selected"] == "1"]
    assert {int(r["num_train"]) for r in rows} == {50, 1500}  # 100000 is capped at 1500
    assert {r["method"] for r in rows} == {"aevb", "wake_sleep"}
    assert {int(r["latent"]) for r in rows} == {config.aevb.fig3_latent}
    for r in rows:
        assert math.isfinite(float(r["train_iwae"])) and math.isfinite(float(r["test_iwae"]))
    final = summary["fig3"]["final"]
    assert set(final) == {"aevb", "wake_sleep"} and set(final["aevb"]) == {"50", "1500"}
    assert summary["fig3"]["iwae_samples"] == config.aevb.fig3_iwae_samples
    assert "HMC" in summary["report"]


def test_figure4_grid_and_figure5_samples(smoke):
    config, workdir, summary = smoke
    rows = _read(workdir / "aevb_fig4.csv")
    exp = config.aevb
    n = exp.manifold_grid
    values = scipy.stats.norm.ppf((np.arange(n) + 0.5) / n)
    for name in exp.panels:
        grid = [r for r in rows if r["panel"] == name]
        assert len(grid) == n * n
        for r in grid:
            i, j = int(r["row"]), int(r["col"])
            assert float(r["z1"]) == pytest.approx(values[j])
            assert float(r["z2"]) == pytest.approx(values[n - 1 - i])  # z2 grows upwards
        pixels = np.array([[float(r[f"x{d}"]) for d in range(64)] for r in grid])
        assert np.all((pixels >= 0) & (pixels <= 1))
    samples = _read(workdir / "aevb_fig5.csv")
    for name in exp.panels:
        for latent in exp.sample_latents:
            got = [r for r in samples if r["panel"] == name and int(r["latent"]) == latent]
            assert len(got) == exp.num_sample_images


def test_rerun_in_the_same_workdir_resumes_every_training(smoke, monkeypatch):
    """Every population (the step-size candidates, the training after the choice, figure 3)
    is restored from its checkpoint with its records: the same curves and bounds come out
    without a training step."""
    config, workdir, summary = smoke
    csvs = {f: (workdir / f"{f}.csv").read_text() for f in ("aevb_fig2", "aevb_fig3",
                                                             "aevb_fig4", "aevb_fig5")}
    fits = record_fits(monkeypatch)
    again = aevb.run(config, workdir)
    assert fits and all(f.resumed_from is not None and f.block_steps == [] for f in fits)
    assert again["member_steps"] == 0  # no step was taken in this process
    for key in ("panels", "final", "aevb_beats_wake_sleep", "fig3"):
        assert again[key] == summary[key], key
    for name, text in csvs.items():
        assert (workdir / f"{name}.csv").read_text() == text, name


# --------------------------------------------------------------------------- other data


def _small_run_config(config):
    config.run.progress = False
    config.aevb.fig3_panel = None  # figure 3 is covered by the digits run
    return config


def test_mnist_config_runs_on_mocked_tfds(tmp_path):
    import tensorflow_datasets as tfds

    def binary_source(builder, split, **kwargs):
        del builder, kwargs
        rng = np.random.default_rng(["train", "validation", "test"].index(split))
        images = rng.integers(0, 2, size=(30, 28, 28, 1), dtype=np.uint8)
        return [{"image": image} for image in images]

    config = _small_run_config(aevb_mnist.get_config("smoke"))
    config.data.data_dir = str(tmp_path / "tfds")  # the panel refers to this key
    assert config.aevb.panels.mnist.data_dir == str(tmp_path / "tfds")
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
    config.data.data_path = str(tmp_path / "frey_rawface.mat")  # the panel refers to it
    assert config.aevb.panels.frey.data_path == config.data.data_path
    summary = aevb.run(config, tmp_path / "run")
    info = summary["panels"]["frey"]
    assert (info["dataset"], info["likelihood"], info["num_train"]) == (
        "frey_face", "gaussian_per_pixel", 54)
    assert all(np.isfinite(v["test"]) for m in summary["final"]["frey"].values()
               for v in m.values())
    rows = _read(tmp_path / "run" / "aevb_fig4.csv")
    assert len(rows) == config.aevb.manifold_grid**2 and "x559" in rows[0]


def test_configs_keep_the_training_cli_keys_and_follow_overrides():
    config = aevb_digits.get_config("5")
    assert (config.model.latent, config.data.dataset, config.data.binarize) == (
        5, "digits", "dynamic")
    assert aevb_digits.get_config("latent=3").model.latent == 3
    panels = config.aevb.panels
    config.model.hidden = 33  # a panel that does not set a key follows the training key
    assert panels.bernoulli.hidden == 33 and panels.gaussian.hidden == 33
    assert panels.gaussian.likelihood == "gaussian_per_pixel"
    assert panels.bernoulli.likelihood == config.model.likelihood == "bernoulli"
    full = aevb_mnist.get_config(None)
    assert full.aevb.num_train_samples == 10**8 and full.aevb.fig3_iwae_samples == 5000
    assert tuple(full.aevb.learning_rates) == (0.01, 0.02, 0.1)
    assert tuple(aevb_frey.get_config(None).aevb.latent_sizes) == (2, 5, 10, 20)
    # The variant is parsed by vaejax.config.parse_variant: a flag, a latent size or
    # latent=N; a size below 1 is refused by the AEVB config.
    with pytest.raises(ValueError, match="Unknown config variant 'gpu'.*latent"):
        aevb_digits.get_config("gpu")
    for variant in ("0", "-3", "latent=0"):
        with pytest.raises(ValueError, match=r"variant latent=-?\d+ must be >= 1"):
            aevb_digits.get_config(variant)
    with pytest.raises(ValueError, match="latent must be int"):
        aevb_digits.get_config("latent=x")


def test_bad_panels_and_groups_are_rejected(tmp_path):
    config = aevb_digits.get_config("smoke")
    config.aevb.panels.bernoulli.no_such_key = 1
    with pytest.raises(ValueError, match="aevb.panels.bernoulli.no_such_key"):
        aevb.run(config, tmp_path)
    config = aevb_digits.get_config("smoke")
    config.aevb.panels.gaussian.binarize = "sometimes"
    with pytest.raises(ValueError, match="aevb.panels.gaussian.binarize"):
        aevb.run(config, tmp_path)
    config = aevb_digits.get_config("smoke")
    config.aevb.no_such_key = 1
    with pytest.raises(ValueError, match="aevb.no_such_key"):
        aevb.run(config, tmp_path)
