"""Every config loads at full and smoke size; AEVB Frey Face trains on a tiny written .mat."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vaejax.train import train_and_evaluate

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "experiments" / "configs").glob(
    "*.py") if not p.stem.startswith("_") and p.stem not in ("__init__", "aevb_common"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    full, smoke = module.get_config(None), module.get_config("smoke")
    assert full.to_dict() and smoke.to_dict()


def test_aevb_configs_follow_the_paper():
    from experiments.configs import aevb_frey, aevb_mnist

    mnist, frey = aevb_mnist.get_config(None), aevb_frey.get_config("5")
    assert (mnist.hidden, mnist.likelihood, mnist.optimizer, mnist.batch_size,
            mnist.num_samples, mnist.init_scale) == (500, "bernoulli", "adagrad", 100, 1, 0.01)
    assert (frey.hidden, frey.latent, frey.likelihood, frey.sigmoid_mean) == (
        200, 5, "gaussian_per_pixel", True)


def test_aevb_frey_smoke_trains_on_a_small_mat(tmp_path):
    from experiments.configs import aevb_frey

    faces = np.random.default_rng(0).integers(0, 256, size=(560, 120), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": faces})
    config = aevb_frey.get_config("smoke")
    config.data_path = str(tmp_path / "frey_rawface.mat")
    config.batch_size = 50
    config.progress = False
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["dataset"] == "frey_face"
    assert np.isfinite(summary["members"][0]["test_elbo"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


EXPERIMENTS = ("gradient_equivalence", "sigma_is_beta", "sigma_sweep", "bernoulli_bce",
               "mc_samples", "learned_variance")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_accelerator_variant_is_bigger_and_unknown_variants_fail(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    cpu, big = module.get_config(None), module.get_config("accelerator")
    assert set(big.keys()) == set(cpu.keys())  # a variant changes values, never the schema
    assert big.dataset == "mnist" and big.hidden > cpu.hidden and big.latent > cpu.latent
    with pytest.raises(ValueError, match="'gpu'.*accelerator"):
        module.get_config("gpu")
