"""A catalogue of bad inputs: each raises a stated exception whose message names the culprit.

Users bring their own data, sigmas, configs, files and workdirs. For every kind of mistake
the issue lists, one case here asserts the exception *type* and that the message names the
offending argument (`sigma`), config key (config `batch_size`) or file (its path). The
catalogue is grouped as the library is layered: likelihoods/KL/ELBO (eager calls with
concrete values), data sets and files, training configs, workdirs and checkpoints.

Under `jax.jit` a *value* cannot be inspected, so a value check cannot raise; the last
section tests the documented behaviour instead: the affected examples become NaN (never a
plausible number), and `jax.experimental.checkify` with `nan_checks` turns that NaN into an
error (tests/test_stress.py checks that it stays silent on valid input). Shape, dtype and
static-size errors raise under jit as well.

This is the one catalogue of bad input to the training stack; the value checks of single
functions are tested beside them (tests/test_likelihoods.py, tests/test_data.py,
tests/test_trainer.py) and a resumed run with a different config in tests/test_train.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.io
from jax.experimental import checkify

from experiments.configs.default import get_config
from vaejax import config as config_lib
from vaejax import data as data_lib
from vaejax import io as io_lib
from vaejax import kl as kl_lib
from vaejax import likelihoods as lik
from vaejax import train
from vaejax.elbo import elbo, iwae_bound, reparameterize

X = np.full((2, 3), 0.5, np.float32)  # data in [0, 1]: [B, D]
M = np.full((2, 3), 0.25, np.float32)  # decoder mean or logits
Z_MEAN = np.zeros((2, 4), np.float32)  # posterior mean and log-variance: [B, Z]
KEY = jax.random.key(0)
REPO = Path(__file__).resolve().parents[1]
STEPS = 900 // 50  # steps per epoch of the smoke config on 'synthetic'; checkpoints are per step


def _with(array, index, value):
    array = np.array(array)
    array[index] = value
    return array


def _log_likelihood(z):
    """A decoder closure for the ELBO cases: z [B, Z] -> [B]."""
    return lik.gaussian_log_likelihood(X, jnp.tile(jnp.sum(z, -1, keepdims=True), (1, 3)), 1.0)


def _names(*names: str) -> str:
    """A regex finding each name quoted (`name`, as arguments and config keys are) or as name=."""
    return "".join(f"(?=[\\s\\S]*(`{re.escape(name)}`|\\b{re.escape(name)}=))"
                   for name in names)


# --------------------------------------------------------------------------- 1. the maths


# id: (call, exception type, regex the message must match). Names in backticks are the
# argument names of the function called.
MATHS_CASES = {
    # sigma <= 0, NaN or inf.
    "sigma_zero": (lambda: lik.gaussian_log_likelihood(X, M, 0.0), ValueError, _names("sigma")),
    "sigma_negative_per_pixel": (
        lambda: lik.gaussian_log_likelihood(X, M, np.asarray([0.1, -0.1, 0.1], np.float32)),
        ValueError, _names("sigma")),
    "sigma_nan": (lambda: lik.gaussian_log_likelihood(X, M, np.float32(np.nan)), ValueError,
                  _names("sigma")),
    "sigma_inf": (lambda: lik.gaussian_log_likelihood(X, M, np.inf), ValueError,
                  _names("sigma")),
    "log_sigma_nan": (
        lambda: lik.gaussian_log_likelihood_from_log_sigma(X, M, np.float32(np.nan)),
        ValueError, _names("log_sigma")),
    "beta_from_sigma_negative": (lambda: lik.beta_from_sigma(-0.5), ValueError, _names("sigma")),
    # NaN / inf in the data.
    "gaussian_x_nan": (lambda: lik.gaussian_log_likelihood(_with(X, (1, 2), np.nan), M, 0.1),
                       ValueError, _names("x")),
    "gaussian_x_inf": (lambda: lik.gaussian_log_likelihood(_with(X, (0, 0), -np.inf), M, 0.1),
                       ValueError, _names("x")),
    "bernoulli_x_nan": (lambda: lik.bernoulli_log_likelihood(_with(X, (0, 1), np.nan), M),
                        ValueError, _names("x")),
    "continuous_bernoulli_x_inf": (
        lambda: lik.continuous_bernoulli_log_likelihood(_with(X, (0, 1), np.inf), M),
        ValueError, _names("x")),
    "sse_x_nan": (lambda: lik.sse(_with(X, (0, 1), np.nan), M), ValueError, _names("x")),
    # Integer or boolean data: unscaled pixels are a bug waiting to happen.
    "gaussian_x_uint8": (lambda: lik.gaussian_log_likelihood(np.ones((2, 3), np.uint8), M, 0.1),
                         ValueError, _names("x")),
    "bernoulli_x_bool": (lambda: lik.bernoulli_log_likelihood(np.ones((2, 3), bool), M),
                         ValueError, _names("x")),
    "mse_x_int64": (lambda: lik.mse(np.arange(6).reshape(2, 3), M), ValueError, _names("x")),
    "kl_mean_int": (lambda: kl_lib.kl_standard_normal(np.zeros((2, 4), np.int32), Z_MEAN),
                    ValueError, _names("mean")),
    # x outside [0, 1] where the support is [0, 1].
    "bernoulli_x_above_one": (lambda: lik.bernoulli_log_likelihood(X + 1.0, M), ValueError,
                              _names("x")),
    "bce_x_below_zero": (lambda: lik.bce(X - 1.0, M), ValueError, _names("x")),
    "continuous_bernoulli_x_above_one": (
        lambda: lik.continuous_bernoulli_log_likelihood(_with(X, (1, 1), 1.0001), M),
        ValueError, _names("x")),
    "continuous_bernoulli_x_below_zero": (
        lambda: lik.continuous_bernoulli_log_likelihood(_with(X, (1, 1), -1e-6), M),
        ValueError, _names("x")),
    # Mismatched shapes between x and mean / logits.
    "gaussian_mean_shape": (lambda: lik.gaussian_log_likelihood(X, M.T, 0.1), ValueError,
                            _names("x", "mean")),
    "bernoulli_logits_shape": (lambda: lik.bernoulli_log_likelihood(X, M[:, :2]), ValueError,
                               _names("x", "logits")),
    "continuous_bernoulli_logits_shape": (
        lambda: lik.continuous_bernoulli_log_likelihood(X, M[None]), ValueError,
        _names("x", "logits")),
    "sigma_not_broadcastable": (
        lambda: lik.gaussian_log_likelihood(X, M, np.ones((2,), np.float32)), ValueError,
        _names("sigma", "x")),
    "kl_log_var_shape": (lambda: kl_lib.kl_standard_normal(Z_MEAN, Z_MEAN[:, :3]), ValueError,
                         _names("mean", "log_var")),
    # event_ndims larger than the rank.
    "gaussian_event_ndims": (lambda: lik.gaussian_log_likelihood(X, M, 0.1, event_ndims=3),
                             ValueError, _names("event_ndims")),
    "continuous_bernoulli_event_ndims": (
        lambda: lik.continuous_bernoulli_log_likelihood(X, M, event_ndims=5), ValueError,
        _names("event_ndims")),
    "kl_event_ndims": (lambda: kl_lib.kl_standard_normal(Z_MEAN, Z_MEAN, event_ndims=3),
                       ValueError, _names("event_ndims")),
    # L, K (and the IWAE chunk) < 1.
    "elbo_L_zero": (
        lambda: elbo(KEY, Z_MEAN, Z_MEAN, _log_likelihood, num_samples=0),
        ValueError, _names("num_samples")),
    "iwae_K_zero": (
        lambda: iwae_bound(KEY, Z_MEAN, Z_MEAN, _log_likelihood, num_samples=0),
        ValueError, _names("num_samples")),
    "iwae_chunk_zero": (
        lambda: iwae_bound(KEY, Z_MEAN, Z_MEAN, _log_likelihood, num_samples=4,
                                    chunk_size=0),
        ValueError, _names("chunk_size")),
    "reparameterize_L_negative": (
        lambda: reparameterize(KEY, Z_MEAN, Z_MEAN, num_samples=-2), ValueError,
        _names("num_samples")),
    "kl_monte_carlo_n_zero": (
        lambda: kl_lib.kl_monte_carlo(KEY, Z_MEAN, Z_MEAN, num_samples=0), ValueError,
        _names("num_samples")),
}


@pytest.mark.parametrize("case", sorted(MATHS_CASES))
def test_maths_bad_input(case):
    call, exception, pattern = MATHS_CASES[case]
    with pytest.raises(exception, match=pattern):
        call()


# --------------------------------------------------------------------------- 2. data


def _dataset(train_array):
    return data_lib.Dataset(name="mine", train=train_array,
                            test=np.full((3, 4), 0.5, np.float32), image_shape=(2, 2),
                            binary=False)


DATA_CASES = {
    "unknown_data_set": (lambda: data_lib.load_dataset("cifar10"), ValueError,
                         r"(?=.*name='cifar10')(?=.*digits)"),
    "unknown_binarization": (lambda: data_lib.load_dataset("digits", binarize="otsu"),
                             ValueError, r"binarize='otsu'"),
    "data_set_with_nan": (lambda: _dataset(_with(np.full((5, 4), 0.5, np.float32), (2, 1),
                                                 np.nan)),
                          ValueError, r"mine\.train.*\[0, 1\]"),
    "data_set_of_integers": (lambda: _dataset(np.ones((5, 4), np.uint8)), ValueError,
                             r"mine\.train.*float32"),
    "data_set_outside_unit_interval": (lambda: _dataset(np.full((5, 4), 255.0, np.float32)),
                                       ValueError, r"mine\.train.*\[0, 1\]"),
    "empty_data_set": (lambda: _dataset(np.zeros((0, 4), np.float32)), ValueError,
                       r"mine\.train.*N >= 1"),
    "epoch_batches_empty": (lambda: data_lib.epoch_batches(KEY, np.zeros((0, 4), np.float32), 2),
                            ValueError, _names("data")),
    "epoch_batches_batch_zero": (
        lambda: data_lib.epoch_batches(KEY, np.zeros((5, 4), np.float32), 0), ValueError,
        _names("batch_size")),
    "epoch_batches_batch_above_n": (
        lambda: data_lib.epoch_batches(KEY, np.zeros((5, 4), np.float32), 6), ValueError,
        _names("batch_size") + r"(?=.*N = 5)"),
    "epoch_batches_float_batch": (
        lambda: data_lib.epoch_batches(KEY, np.zeros((5, 4), np.float32), 2.0), TypeError,
        _names("batch_size")),
    "num_batches_batch_zero": (lambda: data_lib.num_batches(100, 0), ValueError,
                               _names("batch_size")),
    "dynamic_binarize_outside_unit_interval": (
        lambda: data_lib.dynamic_binarize(KEY, X * 3), ValueError, _names("x")),
    "dynamic_binarize_integers": (
        lambda: data_lib.dynamic_binarize(KEY, np.ones((2, 3), np.uint8)), ValueError,
        _names("x")),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_bad_input(case):
    call, exception, pattern = DATA_CASES[case]
    with pytest.raises(exception, match=pattern):
        call()


def _write_mat(path, **variables):
    scipy.io.savemat(path, variables)
    return str(path)


FREY_FILES = {
    # id: (make the file in tmp_path -> path, exception type, extra regex)
    "missing": (lambda tmp: str(tmp / "nowhere" / "frey_rawface.mat"), FileNotFoundError,
                r"roweis"),
    "corrupt": (lambda tmp: (tmp / "frey.mat").write_bytes(b"MATLAB? no" * 50)
                and str(tmp / "frey.mat"), ValueError, r"not a readable MATLAB"),
    "truncated": (lambda tmp: _truncated_mat(tmp / "frey.mat"), ValueError, r"frey\.mat"),
    "no_images": (lambda tmp: _write_mat(tmp / "frey.mat", ff=np.zeros((560, 0), np.uint8)),
                  ValueError, r"at least 2 images"),
    "float_pixels": (lambda tmp: _write_mat(tmp / "frey.mat", ff=np.full((560, 5), np.nan)),
                     ValueError, r"uint8"),
    "wrong_variable": (lambda tmp: _write_mat(tmp / "frey.mat", faces=np.zeros((560, 5),
                                                                             np.uint8)),
                       ValueError, r"'ff'"),
}


def _truncated_mat(path):
    faces = np.random.default_rng(0).integers(0, 256, size=(560, 40), dtype=np.uint8)
    scipy.io.savemat(path, {"ff": faces})
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return str(path)


@pytest.mark.parametrize("case", sorted(FREY_FILES))
def test_frey_face_bad_file_names_the_file(tmp_path, case):
    make, exception, pattern = FREY_FILES[case]
    path = make(tmp_path)
    with pytest.raises(exception, match=pattern) as error:
        data_lib.load_dataset("frey_face", path=path)
    assert path in str(error.value)


def test_tfds_not_prepared_names_data_set_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'fashion_mnist'") as error:
        data_lib.load_dataset("fashion_mnist", data_dir=str(tmp_path / "tfds"))
    assert str(tmp_path / "tfds") in str(error.value)
    assert "download_and_prepare" in str(error.value)


def test_tfds_empty_split_names_data_set_and_split(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_data_source_fn=lambda builder, split, **kwargs: []):
        with pytest.raises(ValueError, match=r"mnist\[train\] has no examples"):
            data_lib.load_dataset("mnist", data_dir=str(tmp_path))


# --------------------------------------------------------------------------- 3. configs


def _config(**overrides) -> ml_collections.ConfigDict:
    """The smoke config on 'synthetic'; `a__b=v` sets a.b; values may have any type.

    Built from a plain dict, as a user's own config would be: ConfigDict's own type checks
    on assignment do not apply, so the schema (vaejax.config) has to catch wrong types.
    """
    config = get_config("smoke")
    config.data.dataset = "synthetic"
    config.run.progress = False
    config.eval.iwae_samples = 0
    config.train.num_epochs = 2
    values = config.to_dict()
    for name, value in overrides.items():
        *parents, leaf = name.split("__")
        node = values
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return ml_collections.ConfigDict(values)


CONFIG_CASES = {
    # id: (overrides, exception type, the key the message must name)
    "unknown_data_set": (dict(data__dataset="mnist3d"), ValueError, "data.dataset"),
    "unknown_likelihood": (dict(model__likelihood="poisson"), ValueError, "model.likelihood"),
    "unknown_optimizer": (dict(train__optimizer="rmsprop"), ValueError, "train.optimizer"),
    "unknown_objective": (dict(train__objective="cubo"), ValueError, "train.objective"),
    "unknown_sampling": (dict(train__sampling="stratified"), ValueError, "train.sampling"),
    "unknown_sharding": (dict(run__sharding="model"), ValueError, "run.sharding"),
    "unknown_binarize": (dict(data__binarize="otsu"), ValueError, "data.binarize"),
    "unknown_population_key": (dict(population__gamma=(1.0, 2.0)), ValueError,
                               "population.gamma"),
    "typo_in_a_group": (dict(train__learnin_rate=0.1), ValueError, "train.learnin_rate"),
    "unknown_top_level_key": (dict(learning_rate=0.1), ValueError, "learning_rate"),
    "group_not_a_group": (dict(eval=3), ValueError, "eval"),
    "batch_size_float": (dict(train__batch_size=12.5), ValueError, "train.batch_size"),
    "batch_size_zero": (dict(train__batch_size=0), ValueError, "train.batch_size"),
    "batch_size_above_n": (dict(train__batch_size=901), ValueError, "train.batch_size"),
    "sigma_string": (dict(model__sigma="0.1"), ValueError, "model.sigma"),
    "sigma_negative": (dict(model__sigma=-1.0), ValueError, "model.sigma"),
    "sigma_inf": (dict(model__sigma=float("inf")), ValueError, "model.sigma"),
    "beta_bool": (dict(train__beta=True), ValueError, "train.beta"),
    "weight_decay_string": (dict(train__weight_decay="0"), ValueError, "train.weight_decay"),
    "progress_string": (dict(run__progress="no"), ValueError, "run.progress"),
    "seed_float": (dict(seed=1.5), ValueError, "seed"),
    "population_seed_float": (dict(population__seed=(0, 1.5)), ValueError, "population.seed"),
    "population_sigma_not_a_tuple": (dict(population__sigma=0.1), ValueError,
                                     "population.sigma"),
    "population_sigma_string": (dict(population__sigma=("0.1", "0.2")), ValueError,
                                "population.sigma"),
    "population_sigma_zero": (dict(population__sigma=(0.1, 0.0)), ValueError,
                              "population.sigma"),
    "population_lengths": (dict(population__sigma=(0.1, 0.2), population__seed=(0, 1, 2)),
                           ValueError, "'sigma': 2"),
    "population_learning_rate_negative": (dict(population__learning_rate=(1e-3, -1e-3)),
                                          ValueError, "population.learning_rate"),
    "population_beta_negative": (dict(population__beta=(1.0, -1.0)), ValueError,
                                 "population.beta"),
    "population_latent_too_big": (dict(population__latent=(1, 3)), ValueError,
                                  "population.latent"),
    "init_scale_string": (dict(model__init_scale="small"), ValueError, "model.init_scale"),
    "L_zero": (dict(train__num_samples=0), ValueError, "train.num_samples"),
    "K_negative": (dict(eval__iwae_samples=-1), ValueError, "eval.iwae_samples"),
    "iwae_chunk_zero": (dict(eval__iwae_samples=8, eval__iwae_chunk=0), ValueError,
                        "eval.iwae_chunk"),
    "learning_rate_nan": (dict(train__learning_rate=float("nan")), ValueError,
                          "train.learning_rate"),
    "decay_epochs_negative": (dict(train__decay_epochs=(-1,)), ValueError,
                              "train.decay_epochs"),
    "frey_face_without_path": (dict(data__dataset="frey_face"), FileNotFoundError,
                               "data.data_path"),
    "beta_head_on_data_at_one": (dict(model__likelihood="beta"), ValueError, "data.squeeze"),
    "squeeze_half": (dict(data__squeeze=0.5), ValueError, "data.squeeze"),
    "sigma_floor_unknown": (dict(model__sigma_floor="smooth"), ValueError,
                            "model.sigma_floor"),
    "levels_head_off_the_grid": (dict(model__likelihood="categorical"), ValueError,
                                 "model.num_levels"),
    "levels_head_dequantized": (dict(model__likelihood="discretized_logistic",
                                     data__dequantize_levels=17), ValueError,
                                "data.dequantize_levels"),
    "num_levels_one": (dict(model__num_levels=1), ValueError, "model.num_levels"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_bad_value_names_the_key(tmp_path, case):
    overrides, exception, key = CONFIG_CASES[case]
    with pytest.raises(exception, match=re.escape(key)):
        train.train_and_evaluate(_config(**overrides), tmp_path / "run")
    # Refused before anything is written: the workdir holds no checkpoint or config.
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "config.json").exists()


def test_unknown_key_on_the_command_line_names_it():
    """The training CLI's flags (lock_config) refuse a key the config does not have."""
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()  # not absl's global flags: nothing leaks to other tests
    default = str(REPO / "experiments" / "configs" / "default.py")
    config_flags.DEFINE_config_file("config", default, "config", flag_values=flag_values,
                                    lock_config=True)
    with pytest.raises(flags.UnrecognizedFlagError, match=r"config\.train\.learnin_rate"):
        flag_values(["train", f"--config={default}:smoke", "--config.train.learnin_rate=0.1"])


def test_experiment_groups_pass_and_a_missing_key_is_named():
    """A top-level group outside the schema belongs to an experiment; a missing training
    key is an error naming it."""
    config = _config()
    config.my_experiment = ml_collections.ConfigDict({"anything": 1})
    config_lib.validate(config)
    config = _config()
    del config.run["progress"]
    with pytest.raises(ValueError, match=re.escape("run.progress")):
        config_lib.validate(config)


def test_experiment_group_bad_value_names_the_key():
    from experiments.configs import sigma_sweep

    config = sigma_sweep.get_config("smoke")
    config.sigma_sweep.num_sigmas = 1
    with pytest.raises(ValueError, match=re.escape("sigma_sweep.num_sigmas")):
        config_lib.validate_group(config, "sigma_sweep", sigma_sweep.GROUP)
    config.sigma_sweep.num_sigmas = 8
    config.sigma_sweep.typo = 3
    with pytest.raises(ValueError, match=re.escape("sigma_sweep.typo")):
        config_lib.validate_group(config, "sigma_sweep", sigma_sweep.GROUP)


@pytest.mark.parametrize("variant, message", [
    ("tiny", "Unknown config variant 'tiny'"), ("smoke,latent=x", "latent must be int"),
])
def test_bad_config_variant_is_named(variant, message):
    from experiments.configs import aevb_digits

    with pytest.raises(ValueError, match=re.escape(message)):
        aevb_digits.get_config(variant)


def test_tfds_config_not_prepared_names_the_data_dir_key(tmp_path):
    config = _config(data__dataset="mnist", data__data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match=re.escape("data.data_dir")) as error:
        train.train_and_evaluate(config, tmp_path / "run")
    assert str(tmp_path / "tfds") in str(error.value)


# --------------------------------------------------------------------------- 4. workdirs


def test_workdir_inside_a_file_names_the_workdir(tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    workdir = blocker / "run"
    with pytest.raises(ValueError, match=re.escape(str(workdir))):
        train.train_and_evaluate(_config(), workdir)
    assert blocker.read_text() == "not a folder"


def test_workdir_not_writable_names_the_workdir(tmp_path, monkeypatch):
    workdir = tmp_path / "read_only"
    workdir.mkdir()
    workdir.chmod(0o555)
    try:
        writable = _can_write(workdir)
        if writable:  # root ignores permission bits: refuse the write probe as the OS would
            real_write_bytes = Path.write_bytes

            def refuse(self, data):
                if self.parent == workdir:
                    raise PermissionError(13, "Permission denied", str(self))
                return real_write_bytes(self, data)

            monkeypatch.setattr(Path, "write_bytes", refuse)
        with pytest.raises(ValueError, match=rf"{re.escape(str(workdir))}.*not writable"):
            io_lib.prepare_workdir(workdir)
    finally:
        workdir.chmod(0o755)


def _can_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


# --------------------------------------------------------------------------- 5. checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, compilation_cache):  # the cache: every run compiles alike
    """A 2-epoch run with checkpoints after epochs 1 and 2 (orbax step folders 18 and 36)."""
    workdir = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_write_images", lambda *args: None)  # figures: not needed here
        train.train_and_evaluate(_config(checkpoint__every_epochs=1, eval__every_epochs=2),
                                 workdir)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(STEPS),
                                                                          str(2 * STEPS)]
    return workdir


def _copy(finished_run, tmp_path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    return workdir


def _data_files(step_dir: Path) -> list[Path]:
    files = sorted((step_dir / "state" / "d").iterdir())
    assert files, step_dir
    return files


def _truncate(step_dir):
    for path in _data_files(step_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit(step_dir):
    for path in _data_files(step_dir):
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0x10
        path.write_bytes(bytes(blob))


def _garble_metadata(step_dir):
    (step_dir / "state" / "_METADATA").write_text('{"tree_metadata": [')


def _remove_item(step_dir):
    shutil.rmtree(step_dir / "state")


CORRUPTIONS = {
    "truncated_data": _truncate,
    "flipped_bit": _flip_a_bit,
    "garbled_metadata": _garble_metadata,
    "missing_item": _remove_item,
}


# A failed orbax restore leaves coroutines of its reader behind; they are collected later.
_ORBAX_LEFTOVERS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_ORBAX_LEFTOVERS
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_names_it(finished_run, tmp_path, corruption):
    """Decision: a corrupt committed checkpoint is an error, not a silent fallback.

    Orbax commits a step folder by renaming it when complete, so a kill never leaves one
    half-written (tests/test_crash_safety.py); a committed one that does not restore was
    damaged afterwards. The message names the folder and says how to resume from the
    previous checkpoint; nothing is deleted or overwritten.
    """
    workdir = _copy(finished_run, tmp_path)
    step_dir = workdir / "checkpoints" / str(2 * STEPS)
    CORRUPTIONS[corruption](step_dir)
    before = sorted(p.name for p in step_dir.rglob("*"))
    with pytest.raises(ValueError, match=r"corrupt or truncated") as error:
        train.train_and_evaluate(_config(train__num_epochs=3), workdir)
    message = str(error.value)
    assert str(step_dir) in message, message
    assert f"step {STEPS})" in message, message  # where a resumption would restart
    assert len(message) < 1500, message  # the cause, not a tensorstore spec dump
    assert sorted(p.name for p in step_dir.rglob("*")) == before
    assert not (workdir / "checkpoints" / str(3 * STEPS)).exists()


@_ORBAX_LEFTOVERS
def test_empty_step_folder_names_it(finished_run, tmp_path):
    workdir = _copy(finished_run, tmp_path)
    step_dir = workdir / "checkpoints" / str(7 * STEPS)
    step_dir.mkdir()
    with pytest.raises(ValueError, match=r"corrupt or truncated") as error:
        train.train_and_evaluate(_config(train__num_epochs=8), workdir)
    assert str(step_dir) in str(error.value)


@_ORBAX_LEFTOVERS
@pytest.mark.parametrize("overrides, detail", [
    (dict(model__hidden=17), r"is \(1, (16|\d+, 16)\b.*but \(1, (17|\d+, 17)\b"),
    (dict(population__sigma=(0.1, 0.2)), r"is \(1\b.*but \(2\b"),
], ids=["hidden_size", "population_size"])
def test_checkpoint_of_a_different_model_shape_names_it(finished_run, tmp_path, overrides,
                                                        detail):
    # Without config.json (copied checkpoints only) the config check cannot catch it.
    workdir = _copy(finished_run, tmp_path)
    (workdir / "config.json").unlink()
    with pytest.raises(ValueError, match=r"different model") as error:
        train.train_and_evaluate(_config(train__num_epochs=3, **overrides), workdir)
    message = str(error.value)
    assert str(workdir / "checkpoints" / str(2 * STEPS)) in message, message
    assert re.search(detail, message), message


def test_corrupt_config_json_names_it(finished_run, tmp_path):
    workdir = _copy(finished_run, tmp_path)
    (workdir / "config.json").write_text('{"dataset": "synth')
    with pytest.raises(ValueError, match=re.escape(str(workdir / "config.json"))):
        train.train_and_evaluate(_config(train__num_epochs=3), workdir)


def test_damaged_metrics_csv_is_rewritten_from_the_checkpoint(finished_run, tmp_path):
    """Decision: metrics.csv is an output; the checkpoints keep the records, so a damaged
    CSV (a truncated last row) loses nothing: the resumed run rewrites it whole."""
    workdir = _copy(finished_run, tmp_path)
    rows = (workdir / "metrics.csv").read_text().splitlines()
    (workdir / "metrics.csv").write_text("\n".join([*rows[:-1], rows[-1][:5]]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_write_images", lambda *args: None)
        train.train_and_evaluate(_config(train__num_epochs=3, checkpoint__every_epochs=1,
                                         eval__every_epochs=2), workdir)
    repaired = (workdir / "metrics.csv").read_text().splitlines()
    assert repaired[:len(rows)] == rows  # the damaged row is whole again
    assert [line.split(",")[0] for line in repaired[1:]] == ["2", "3"]


# --------------------------------------------------------------------------- 6. under jit


def test_under_jit_invalid_values_give_nan_for_the_affected_examples_only():
    """Documented: a value check cannot raise under jit; bad values give NaN, never a number."""
    gaussian = jax.jit(lambda x, s: lik.gaussian_log_likelihood(x, M, s))
    sigma = np.asarray([[0.1], [-0.1]], np.float32)  # per example: the second is invalid
    out = np.asarray(gaussian(X, sigma))
    assert np.isfinite(out[0]) and np.isnan(out[1])

    bernoulli = jax.jit(lik.continuous_bernoulli_log_likelihood)
    out = np.asarray(bernoulli(_with(X, (0, 2), 1.5), M))
    assert np.isnan(out[0]) and np.isfinite(out[1])

    # NaN data propagates; infinite data gives a non-finite log-likelihood.
    out = np.asarray(gaussian(_with(_with(X, (0, 0), np.nan), (1, 1), np.inf),
                              np.float32(0.1)))
    assert np.isnan(out[0]) and not np.isfinite(out[1])


def test_under_jit_shape_and_static_errors_still_raise():
    with pytest.raises(ValueError, match=_names("x", "mean")):
        jax.jit(lambda x, m: lik.gaussian_log_likelihood(x, m, 1.0))(X, M.T)
    with pytest.raises(ValueError, match=_names("event_ndims")):
        jax.jit(lambda x, m: lik.bernoulli_log_likelihood(x, m, event_ndims=4))(X, M)
    with pytest.raises(ValueError, match=_names("x")):
        jax.jit(lambda x, m: lik.bernoulli_log_likelihood(x, m))(X.astype(np.int32), M)


@pytest.mark.parametrize("call", [
    lambda: (lik.gaussian_log_likelihood, (X, M, np.float32(-0.1))),
    lambda: (lik.bernoulli_log_likelihood, (X + 1.0, M)),
    lambda: (lik.continuous_bernoulli_log_likelihood, (_with(X, (0, 0), -0.5), M)),
], ids=["sigma_negative", "bernoulli_x_above_one", "cb_x_below_zero"])
def test_checkify_turns_the_nan_into_an_error_under_jit(call):
    fn, args = call()
    checked = jax.jit(checkify.checkify(fn, errors=checkify.nan_checks))
    error, out = checked(*args)
    assert np.any(np.isnan(np.asarray(out)))
    with pytest.raises(checkify.JaxRuntimeError, match="nan generated"):
        error.throw()


def _collected_cases(namespace: dict) -> int:
    """How many cases pytest collects from the test functions in ``namespace``."""
    total = 0
    for name, fn in namespace.items():
        if not name.startswith("test_") or name == "test_catalogue_has_at_least_25_cases":
            continue
        cases = 1
        for mark in getattr(fn, "pytestmark", []):
            if mark.name == "parametrize":
                cases *= len(mark.args[1])
        total += cases
    return total


def test_catalogue_has_at_least_25_cases():
    """Counts this module's cases from its definitions (at least 25 are asked for)."""
    cases = _collected_cases(globals())
    print(f"\n[bad inputs] {cases} cases in {__name__}")
    assert cases >= 25
