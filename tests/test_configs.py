"""Every config loads and validates at full and smoke size; AEVB Frey Face trains on a tiny .mat.

Configs are nested groups (:mod:`vaejax.config`): the training groups plus one group per
experiment, named after it, whose schema is the config module's ``GROUP``; a variant
(``file.py:variant``) is parsed by :func:`vaejax.config.parse_variant`.
"""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vaejax import config as config_lib
from vaejax.train import train_and_evaluate

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "experiments" / "configs").glob(
    "*.py") if not p.stem.startswith("_") and p.stem not in ("__init__", "aevb_common"))
EXPERIMENTS = ("gradient_equivalence", "sigma_is_beta", "sigma_sweep", "bernoulli_bce",
               "mc_samples", "learned_variance")


def _validate(name, config):
    """The training groups, and the experiment group against its module's schema."""
    config_lib.validate(config)
    if name in EXPERIMENTS:
        group = importlib.import_module(f"experiments.configs.{name}").GROUP
        config_lib.validate_group(config, name, group)
    elif name.startswith("aevb"):
        from experiments.configs.aevb_common import GROUP_FIELDS

        config_lib.validate_group(config, "aevb", GROUP_FIELDS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    full, smoke = module.get_config(None), module.get_config("smoke")
    assert full.to_dict() and smoke.to_dict()
    for config in (full, smoke):
        _validate(name, config)
    # Smoke is smaller: fewer epochs and hidden units (the SMOKE sizes of vaejax.config).
    assert smoke.train.num_epochs <= full.train.num_epochs
    assert smoke.model.hidden <= full.model.hidden
    extra = set(full.keys()) - set(config_lib.SCHEMA)
    assert extra == set(smoke.keys()) - set(config_lib.SCHEMA)
    if name in EXPERIMENTS:
        assert extra == {name}  # one group, named after the experiment


def test_smoke_config_module_is_gone_and_default_has_the_smoke_variant():
    assert not (Path(__file__).parents[1] / "experiments" / "configs" / "smoke.py").exists()
    from experiments.configs import default

    smoke = default.get_config("smoke")
    for group, values in config_lib.SMOKE.items():
        for key, value in values.items():
            assert smoke[group][key] == value, f"{group}.{key}"
    assert default.get_config(None).to_dict() == config_lib.default_config().to_dict()
    with pytest.raises(ValueError, match="Unknown config variant 'huge'"):
        default.get_config("huge")


def test_aevb_configs_follow_the_paper():
    from experiments.configs import aevb_frey, aevb_mnist

    mnist, frey = aevb_mnist.get_config(None), aevb_frey.get_config("5")
    assert (mnist.model.hidden, mnist.model.likelihood, mnist.train.optimizer,
            mnist.train.batch_size, mnist.train.num_samples, mnist.model.init_scale) == (
        500, "bernoulli", "adagrad", 100, 1, 0.01)
    assert mnist.train.sampling == "uniform"
    assert mnist.train.weight_decay == pytest.approx(1 / 50_000)  # the N(0, I) prior
    assert (frey.model.hidden, frey.model.latent, frey.model.likelihood,
            frey.model.sigmoid_mean) == (200, 5, "gaussian_per_pixel", True)
    assert set(mnist.aevb.panels) == {"mnist"} and set(frey.aevb.panels) == {"frey"}


def test_aevb_frey_smoke_trains_on_a_small_mat(tmp_path):
    from experiments.configs import aevb_frey

    faces = np.random.default_rng(0).integers(0, 256, size=(560, 120), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": faces})
    config = aevb_frey.get_config("smoke")
    config.data.data_path = str(tmp_path / "frey_rawface.mat")
    config.train.batch_size = 50
    config.run.progress = False
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["dataset"] == "frey_face"
    assert np.isfinite(summary["members"][0]["test_elbo"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    # The run records the training keys only (the aevb group is the experiment's).
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(saved) == set(config_lib.SCHEMA)
    assert saved["data"]["data_path"] == config.data.data_path


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_accelerator_variant_is_bigger_and_unknown_variants_fail(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    cpu, big = module.get_config(None), module.get_config("accelerator")
    # A variant changes values, never the schema.
    assert set(big.keys()) == set(cpu.keys())
    for group in big.keys():
        if hasattr(big[group], "keys"):
            assert set(big[group].keys()) == set(cpu[group].keys()), group
    assert big.data.dataset == "mnist"
    assert big.model.hidden > cpu.model.hidden and big.model.latent > cpu.model.latent
    with pytest.raises(ValueError, match="'gpu'.*accelerator"):
        module.get_config("gpu")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_group_rejects_unknown_and_bad_keys(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    config = module.get_config("smoke")
    config[name].no_such_key = 1
    with pytest.raises(ValueError, match=f"`{name}.no_such_key`"):
        config_lib.validate_group(config, name, module.GROUP)
    # A value the key's check refuses (ConfigDicts refuse a value of another type already).
    key, field = next((k, f) for k, f in module.GROUP.items()
                      if f.check is not None and f.kinds[0] in (config_lib.INT, config_lib.REAL))
    config = module.get_config("smoke")
    config[name][key] = -1 if field.kinds[0] == config_lib.INT else -1.0
    with pytest.raises(ValueError, match=f"`{name}.{key}`"):
        config_lib.validate_group(config, name, module.GROUP)
    config = module.get_config("smoke")
    config.train.no_such_key = 1  # the training groups are checked as well
    with pytest.raises(ValueError, match="`train.no_such_key`"):
        config_lib.validate_group(config, name, module.GROUP)
