"""Tests for vaejax.data: loaders, binarisation and on-device batching.

The TFDS loaders are tested offline with `tfds.testing.mock_data(policy=USE_CODE)`, which
replaces `DatasetBuilder.as_data_source` so that `tfds.data_source` returns generated
examples with the real feature specs (uint8 28x28x1 images) and touches no files.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
import sklearn.datasets
import tensorflow_datasets as tfds

from vaejax import data

# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def test_digits_is_the_default_with_the_documented_shapes(digits):
    default = data.load_dataset()
    assert default.name == "digits"
    np.testing.assert_array_equal(default.train, digits.train)
    assert digits.train.shape == (1500, 64)
    assert digits.test.shape == (297, 64)
    assert digits.num_dims == 64
    assert digits.image_shape == (8, 8)
    assert digits.train.dtype == np.float32 and digits.test.dtype == np.float32
    assert not digits.binary


def test_digits_scaled_to_unit_interval_from_0_to_16(digits):
    for split in (digits.train, digits.test):
        assert split.min() == 0.0 and split.max() == 1.0
    # load_digits pixels are integers 0..16, so 16 * x must be integral.
    np.testing.assert_array_equal(16 * digits.train, np.round(16 * digits.train))


def test_digits_split_is_the_seeded_permutation_of_load_digits(digits):
    # Reference: the raw scikit-learn array, split by the public index helper.
    raw = sklearn.datasets.load_digits().data / 16.0
    train_indices, test_indices = data.split_indices(1797, 297, seed=0)
    assert len(set(train_indices) & set(test_indices)) == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train_indices, test_indices])), np.arange(1797)
    )
    np.testing.assert_allclose(digits.train, raw[train_indices], rtol=0, atol=0)
    np.testing.assert_allclose(digits.test, raw[test_indices], rtol=0, atol=0)


def test_digits_split_deterministic_per_seed(digits):
    again = data.load_dataset("digits", seed=0)
    other = data.load_dataset("digits", seed=1)
    np.testing.assert_array_equal(again.train, digits.train)
    np.testing.assert_array_equal(again.test, digits.test)
    assert not np.array_equal(other.test, digits.test)
    assert other.test.shape == digits.test.shape


def test_split_indices_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="num_test"):
        data.split_indices(10, 10, seed=0)
    with pytest.raises(ValueError, match="num_test"):
        data.split_indices(10, 0, seed=0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_small_deterministic_in_unit_interval():
    first = data.load_dataset("synthetic", seed=3)
    second = data.load_dataset("synthetic", seed=3)
    other = data.load_dataset("synthetic", seed=4)
    assert first.train.shape == (900, 16) and first.test.shape == (100, 16)
    assert first.image_shape == (4, 4) and first.train.dtype == np.float32
    assert 0.0 <= first.train.min() and first.train.max() <= 1.0
    np.testing.assert_array_equal(first.train, second.train)
    assert not np.array_equal(first.train, other.train)
    # Not degenerate: the pixels vary across examples.
    assert first.train.std(axis=0).min() > 0.01


# --------------------------------------------------------------------------- name checks


def test_unknown_name_is_named_with_the_known_names():
    with pytest.raises(ValueError, match="'cifar10'") as info:
        data.load_dataset("cifar10")
    for name in data.DATASETS:
        assert name in str(info.value)


def test_unknown_binarize_is_named():
    with pytest.raises(ValueError, match="binarize='dynamic'"):
        data.load_dataset("digits", binarize="dynamic")


def test_datasets_tuple_lists_every_loader():
    assert data.DATASETS == (
        "digits",
        "mnist",
        "fashion_mnist",
        "binarized_mnist",
        "frey_face",
        "synthetic",
    )


# --------------------------------------------------------------------------- TFDS (mocked)

_MOCK_EXAMPLES = 6


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tfds_grey_sets_load_through_data_source(name, tmp_path):
    with tfds.testing.mock_data(
        num_examples=_MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        dataset = data.load_dataset(name, data_dir=str(tmp_path))
        # Reference: the same mocked examples, read straight from tfds.
        source = tfds.data_source(name, split="train", data_dir=str(tmp_path), download=False)
        raw = np.stack([source[i]["image"] for i in range(len(source))])
    assert dataset.train.shape == (_MOCK_EXAMPLES, 784)
    assert dataset.test.shape == (_MOCK_EXAMPLES, 784)
    assert dataset.image_shape == (28, 28) and dataset.num_dims == 784
    assert dataset.train.dtype == np.float32
    assert 0.0 <= dataset.train.min() and dataset.train.max() <= 1.0
    # uint8 0..255 -> /255, flattened in C order.
    np.testing.assert_allclose(dataset.train, raw.reshape(_MOCK_EXAMPLES, 784) / 255.0, rtol=1e-6)
    assert dataset.train.max() > 0.5  # really scaled by 255, not by 1
    assert not dataset.binary


def _binary_mnist_source(builder, split, **kwargs):
    """Stands in for `DatasetBuilder.as_data_source`: 0/1 uint8 images per split."""
    del kwargs
    rng = np.random.default_rng(["train", "validation", "test"].index(split))
    images = rng.integers(0, 2, size=(_MOCK_EXAMPLES, 28, 28, 1), dtype=np.uint8)
    return [{"image": image} for image in images]


def test_tfds_binarized_mnist_keeps_0_1_pixels(tmp_path):
    # The default mock draws uint8 0..255 for every image (its data-source path ignores
    # max_value), so the 0/1 pixels that binarized_mnist stores come from as_data_source_fn.
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=_binary_mnist_source
    ):
        dataset = data.load_dataset("binarized_mnist", data_dir=str(tmp_path))
    assert dataset.train.shape == (_MOCK_EXAMPLES, 784)
    assert dataset.test.shape == (_MOCK_EXAMPLES, 784)
    assert dataset.train.dtype == np.float32
    assert set(np.unique(dataset.train)) == {0.0, 1.0}
    assert dataset.binary
    # Not divided by 255: the stored 0/1 values come through unchanged.
    expected = _binary_mnist_source(None, "test")
    np.testing.assert_array_equal(
        dataset.test, np.stack([ex["image"] for ex in expected]).reshape(-1, 784)
    )


def test_tfds_binarized_mnist_rejects_grey_pixels(tmp_path):
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="binarized_mnist"):
            data.load_dataset("binarized_mnist", data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "binarized_mnist"])
def test_tfds_not_prepared_says_how_to_prepare(name, tmp_path):
    # No mock: a real, empty data_dir.
    with pytest.raises(FileNotFoundError) as info:
        data.load_dataset(name, data_dir=str(tmp_path))
    message = str(info.value)
    assert repr(name) in message
    assert str(tmp_path) in message
    assert f"tfds.builder('{name}'" in message
    assert "download_and_prepare(file_format='array_record')" in message


def test_tfds_missing_package_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tfds(module, *args, **kwargs):
        if module.startswith("tensorflow_datasets"):
            raise ImportError("No module named 'tensorflow_datasets'")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tfds)
    with pytest.raises(ImportError, match=r"pip install 'vaejax\[tfds\]'"):
        data.load_dataset("mnist")


# --------------------------------------------------------------------------- Frey Face


def _write_frey_face(path, num_images=50, **variables):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(560, num_images), dtype=np.uint8)
    faces[0, 0], faces[1, 0] = 0, 255  # both ends of the range
    scipy.io.savemat(path, variables or {"ff": faces})
    return faces


def test_frey_face_loads_scaled_split_images(tmp_path):
    path = tmp_path / "frey_rawface.mat"
    faces = _write_frey_face(path)
    dataset = data.load_dataset("frey_face", path=str(path))
    assert dataset.image_shape == (28, 20) and dataset.num_dims == 560
    assert dataset.train.shape == (45, 560) and dataset.test.shape == (5, 560)
    assert dataset.train.dtype == np.float32
    # Each column of ff is one image; /255 puts it in [0, 1].
    train_indices, test_indices = data.split_indices(50, 5, seed=0)
    np.testing.assert_allclose(dataset.train, faces.T[train_indices] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(dataset.test, faces.T[test_indices] / 255.0, rtol=1e-6)
    everything = np.concatenate([dataset.train, dataset.test])
    assert everything.min() == 0.0 and everything.max() == 1.0
    again = data.load_dataset("frey_face", path=str(path))
    np.testing.assert_array_equal(again.test, dataset.test)


def test_frey_face_missing_file_names_path_and_source(tmp_path):
    path = str(tmp_path / "nowhere" / "frey_rawface.mat")
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        data.load_dataset("frey_face", path=path)
    assert "https://cs.nyu.edu/~roweis/data/frey_rawface.mat" in str(info.value)
    with pytest.raises(FileNotFoundError, match="frey_rawface.mat"):
        data.load_dataset("frey_face")


def test_frey_face_wrong_shape_names_file(tmp_path):
    path = tmp_path / "faces.mat"
    scipy.io.savemat(path, {"ff": np.zeros((28, 50), dtype=np.uint8)})
    with pytest.raises(ValueError, match="faces.mat.*shape"):
        data.load_dataset("frey_face", path=str(path))


def test_frey_face_missing_variable_names_file(tmp_path):
    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"faces": np.zeros((560, 5), dtype=np.uint8)})
    with pytest.raises(ValueError, match="other.mat.*'ff'"):
        data.load_dataset("frey_face", path=str(path))


def test_frey_face_corrupt_file_names_file(tmp_path):
    path = tmp_path / "corrupt.mat"
    path.write_bytes(b"not a mat file" * 20)
    with pytest.raises(ValueError, match="corrupt.mat"):
        data.load_dataset("frey_face", path=str(path))


# --------------------------------------------------------------------------- binarisation


@pytest.mark.parametrize("method", ["static", "threshold"])
def test_static_binarisations_are_binary_and_deterministic(method, digits):
    first = data.load_dataset("digits", binarize=method)
    second = data.load_dataset("digits", binarize=method)
    assert first.binary
    for split in (first.train, first.test):
        assert split.dtype == np.float32
        assert set(np.unique(split)) == {0.0, 1.0}
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.test, second.test)


def test_threshold_binarisation_is_x_above_half(digits):
    dataset = data.load_dataset("digits", binarize="threshold")
    np.testing.assert_array_equal(dataset.train, (digits.train > 0.5).astype(np.float32))


def test_static_binarisation_is_bernoulli_of_the_grey_values(digits):
    dataset = data.load_dataset("digits", binarize="static")
    # Exact 0 and 1 pixels stay as they are.
    assert np.all(dataset.train[digits.train == 0] == 0)
    assert np.all(dataset.train[digits.train == 1] == 1)
    # Monte-Carlo bound: the mean of n Bernoulli(x) draws is within 5 sigma of mean(x).
    n = digits.train.size
    sigma = np.sqrt(np.mean(digits.train * (1 - digits.train)) / n)
    assert abs(dataset.train.mean() - digits.train.mean()) < 5 * sigma
    other_seed = data.load_dataset("digits", binarize="static", seed=1)
    assert not np.array_equal(other_seed.train, dataset.train)


def test_dynamic_binarize_mean_matches_x():
    x = jnp.linspace(0.0, 1.0, 11)
    n = 20_000
    keys = jax.random.split(jax.random.key(0), n)
    samples = jax.jit(jax.vmap(data.dynamic_binarize, in_axes=(0, None)))(keys, x)
    assert samples.shape == (n, 11) and samples.dtype == jnp.float32
    assert set(np.unique(np.asarray(samples))) <= {0.0, 1.0}
    # Per pixel: |mean - x| < 5 sqrt(x (1 - x) / n); at x = 0 and 1 the draws are exact.
    bound = 5 * np.sqrt(np.asarray(x * (1 - x)) / n)
    np.testing.assert_array_less(np.abs(np.asarray(samples.mean(axis=0) - x)), bound + 1e-7)


def test_dynamic_binarize_same_key_same_draw_new_key_new_draw():
    x = jnp.full((64,), 0.5)
    key = jax.random.key(1)
    np.testing.assert_array_equal(data.dynamic_binarize(key, x), data.dynamic_binarize(key, x))
    assert not np.array_equal(
        data.dynamic_binarize(key, x), data.dynamic_binarize(jax.random.key(2), x)
    )


def test_dynamic_binarize_rejects_values_outside_unit_interval_and_ints():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.dynamic_binarize(key, jnp.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="dtype"):
        data.dynamic_binarize(key, jnp.array([0, 1]))


# --------------------------------------------------------------------------- batching


def test_num_batches():
    assert data.num_batches(10, 3) == 3
    assert data.num_batches(10, 3, drop_remainder=False) == 4
    assert data.num_batches(9, 3, drop_remainder=False) == 3
    assert data.num_batches(0, 3) == 0
    with pytest.raises(ValueError, match="batch_size"):
        data.num_batches(10, 0)
    with pytest.raises(ValueError, match="num_examples"):
        data.num_batches(-1, 2)


def _rows_as_ids(batches):
    # Row i of `_indexed_data` holds the value i in every column.
    rows = np.asarray(batches).reshape(-1, batches.shape[-1])
    assert np.all(rows == rows[:, :1])
    return rows[:, 0].astype(int)


def _indexed_data(num_examples=103, num_dims=5):
    return jnp.tile(jnp.arange(num_examples, dtype=jnp.float32)[:, None], (1, num_dims))


def test_epoch_batches_is_a_permutation_cut_into_full_batches():
    values = _indexed_data()
    batches = data.epoch_batches(jax.random.key(0), values, 10)
    assert batches.shape == (10, 10, 5) and batches.dtype == jnp.float32
    ids = _rows_as_ids(batches)
    assert len(set(ids)) == 100  # no repetition within the epoch
    assert set(ids) <= set(range(103))  # every row comes from the data
    assert not np.array_equal(ids, np.arange(100))  # shuffled


def test_epoch_batches_keys():
    values = _indexed_data()
    key = jax.random.key(0)
    np.testing.assert_array_equal(
        data.epoch_batches(key, values, 10), data.epoch_batches(key, values, 10)
    )
    other = data.epoch_batches(jax.random.key(1), values, 10)
    assert not np.array_equal(
        _rows_as_ids(other), _rows_as_ids(data.epoch_batches(key, values, 10))
    )


def test_epoch_batches_under_jit_matches_eager():
    values = _indexed_data()
    jitted = jax.jit(data.epoch_batches, static_argnames="batch_size")
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        jitted(key, values, batch_size=7), data.epoch_batches(key, values, 7)
    )
    assert jitted(key, values, batch_size=7).shape == (14, 7, 5)
    with pytest.raises(ValueError, match="batch_size"):
        jitted(key, values, batch_size=104)


def test_epoch_batches_traced_batch_size_is_a_clear_type_error():
    values = _indexed_data()
    with pytest.raises(TypeError, match="static_argnames='batch_size'"):
        jax.jit(data.epoch_batches)(jax.random.key(0), values, 7)


def test_epoch_batches_on_a_loaded_dataset(digits):
    train = jnp.asarray(digits.train)
    batches = data.epoch_batches(jax.random.key(0), train, 100)
    assert batches.shape == (15, 100, 64)
    # Every batch row is a row of the data set.
    matches = (np.asarray(batches).reshape(-1, 1, 64) == digits.train[None]).all(axis=-1)
    assert matches.any(axis=1).all()


@pytest.mark.parametrize("batch_size", [0, -1, 104])
def test_epoch_batches_bad_batch_size_names_it_and_n(batch_size):
    with pytest.raises(ValueError, match=rf"batch_size={batch_size}") as info:
        data.epoch_batches(jax.random.key(0), _indexed_data(), batch_size)
    assert "103" in str(info.value)


def test_epoch_batches_empty_data():
    with pytest.raises(ValueError, match="empty"):
        data.epoch_batches(jax.random.key(0), jnp.zeros((0, 5)), 1)


# --------------------------------------------------------------------------- Dataset


def test_dataset_rejects_inconsistent_arrays():
    good = np.zeros((4, 4), dtype=np.float32)
    make = functools.partial(data.Dataset, name="x", image_shape=(2, 2), binary=False)
    make(train=good, test=good)
    with pytest.raises(ValueError, match="float32"):
        make(train=good.astype(np.float64), test=good)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make(train=good + 2, test=good)
    with pytest.raises(ValueError, match="shape"):
        make(train=np.zeros((4, 5), dtype=np.float32), test=good)
    with pytest.raises(ValueError, match="binary"):
        data.Dataset("x", good + 0.5, good, (2, 2), binary=True)


def test_dataset_is_frozen(digits):
    with pytest.raises(AttributeError):
        digits.name = "other"
