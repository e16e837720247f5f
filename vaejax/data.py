"""Data sets as float32 arrays in [0, 1], binarisation, and on-device batching.

Every loader returns a `Dataset` of flattened images: `train` [N_train, D] and
`test` [N_test, D], float32 in [0, 1]. The data sets are small, so a training
loop puts them on the device once (`jnp.asarray(dataset.train)`) and cuts each
epoch into batches there with `epoch_batches`; no host input pipeline is needed.

Sources:
    digits: scikit-learn's bundled `load_digits`, 1797 8x8 images; the default, offline.
    mnist, fashion_mnist, binarized_mnist: prepared tensorflow-datasets array_record
        files read with `tfds.data_source` (no TensorFlow needed); never downloaded here.
    frey_face: the public `frey_rawface.mat` (variable `ff`, 560 x 1965 uint8).
    synthetic: a seeded sigmoid-of-linear-Gaussian model, D = 16, for fast tests.

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", arXiv 1312.6114, section 5
    (MNIST and Frey Face experiments).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import scipy.io
import scipy.special

DATASETS = ("digits", "mnist", "fashion_mnist", "binarized_mnist", "frey_face", "synthetic")
BINARIZATIONS = ("static", "threshold")

_TFDS_DATASETS = ("mnist", "fashion_mnist", "binarized_mnist")
_TFDS_IMAGE_SHAPE = (28, 28)

_DIGITS_NUM_TEST = 297
_DIGITS_MAX_VALUE = 16.0  # load_digits pixels are counts 0..16 in 4x4 blocks

_FREY_FACE_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
_FREY_FACE_IMAGE_SHAPE = (28, 20)
_FREY_FACE_TEST_FRACTION = 0.1

_SYNTHETIC_IMAGE_SHAPE = (4, 4)
_SYNTHETIC_NUM_LATENTS = 2
_SYNTHETIC_NUM_TRAIN = 900
_SYNTHETIC_NUM_TEST = 100
_SYNTHETIC_NOISE_SCALE = 0.3
# The model (weights, bias) is fixed; `seed` only draws the examples and the split.
_SYNTHETIC_MODEL_SEED = 1312_6114

# A separate random stream for static binarisation, so that it does not reuse the
# draws of the train/test permutation made with the same `seed`.
_BINARIZE_STREAM = 1


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays has no truth value
class Dataset:
    """A data set of flattened images in [0, 1].

    Attributes:
        name: the name given to `load_dataset` (one of `DATASETS`).
        train: [N_train, D] float32 in [0, 1].
        test: [N_test, D] float32 in [0, 1].
        image_shape: (H, W) with H * W = D; rows are images flattened in C order.
        binary: True when every value is exactly 0 or 1.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int]
    binary: bool

    def __post_init__(self):
        for split in ("train", "test"):
            _check_images(getattr(self, split), f"{self.name}.{split}", self.image_shape)
        if self.binary and not (_is_binary(self.train) and _is_binary(self.test)):
            raise ValueError(f"{self.name}: binary=True but the values are not all 0 or 1.")

    @property
    def num_dims(self) -> int:
        """D, the number of values per example."""
        return self.train.shape[1]


def load_dataset(
    name: str = "digits",
    *,
    data_dir: str | None = None,
    path: str | None = None,
    binarize: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Loads a data set by name, scaled to float32 in [0, 1] and flattened.

    Args:
        name: one of `DATASETS`.
        data_dir: tensorflow-datasets data directory holding prepared array_record files
            (mnist, fashion_mnist, binarized_mnist; None: the TFDS default). Ignored by the
            other data sets.
        path: path of `frey_rawface.mat` (frey_face only; ignored by the others).
        binarize: None keeps grey values; "static" samples Bernoulli(x) once with `seed`
            (a fixed binary data set); "threshold" sets x > 0.5 to 1.
        seed: seeds the train/test split (digits, frey_face, synthetic), the synthetic
            examples and static binarisation. The same seed gives the same arrays.

    Returns:
        A `Dataset`; `binary` is True when every value is 0 or 1.

    Raises:
        ValueError: unknown `name` or `binarize`, or a malformed file.
        FileNotFoundError: the files of a TFDS set or of Frey Face are absent; the message
            says how to get them.
        ImportError: a TFDS set is asked for and tensorflow-datasets is not installed.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown data set name={name!r}; known names: {', '.join(DATASETS)}.")
    if binarize is not None and binarize not in BINARIZATIONS:
        raise ValueError(
            f"Unknown binarize={binarize!r}; use None or one of: {', '.join(BINARIZATIONS)}."
        )
    if name == "digits":
        train, test, image_shape = _load_digits(seed)
    elif name in _TFDS_DATASETS:
        train, test, image_shape = _load_tfds(name, data_dir)
    elif name == "frey_face":
        train, test, image_shape = _load_frey_face(path, seed)
    else:
        train, test, image_shape = _make_synthetic(seed)
    if binarize is not None:
        train, test = _binarize_static(train, test, method=binarize, seed=seed)
    return Dataset(
        name=name,
        train=train,
        test=test,
        image_shape=image_shape,
        binary=_is_binary(train) and _is_binary(test),
    )


def split_indices(num_examples: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of `range(num_examples)`.

    Args:
        num_examples: N, the number of examples to split.
        num_test: how many go to the test split, 0 < num_test < N.
        seed: seed of `np.random.default_rng`; the same seed gives the same split.

    Returns:
        (train_indices [N - num_test] int, test_indices [num_test] int): disjoint, and
        together a permutation of range(N); the test indices are the last `num_test` of a
        seeded permutation.
    """
    if not 0 < num_test < num_examples:
        raise ValueError(f"Need 0 < num_test < num_examples, got {num_test=}, {num_examples=}.")
    order = np.random.default_rng(seed).permutation(num_examples)
    return order[: num_examples - num_test], order[num_examples - num_test :]


def dynamic_binarize(key: jax.Array, x: jax.typing.ArrayLike) -> jax.Array:
    """Draws binary images x_b ~ Bernoulli(x), a fresh draw for every call.

    Pure and jittable; call it on each batch with a new key ("dynamic binarisation").
    Eagerly, x outside [0, 1] raises; under jit it acts as x clipped to [0, 1] (NaN gives 0).

    Args:
        key: a JAX PRNG key.
        x: [...] floating grey values in [0, 1], the Bernoulli means.

    Returns:
        [...] float32 samples, each exactly 0 or 1.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"dynamic_binarize needs floating `x` in [0, 1], got dtype {x.dtype}.")
    if not isinstance(x, jax.core.Tracer) and x.size and not (jnp.min(x) >= 0 and jnp.max(x) <= 1):
        raise ValueError("dynamic_binarize needs `x` in [0, 1] (the Bernoulli means).")
    return jax.random.bernoulli(key, x).astype(jnp.float32)


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """Number of batches of `batch_size` in `num_examples` examples.

    Args:
        num_examples: N >= 0.
        batch_size: examples per batch, >= 1.
        drop_remainder: True counts full batches only; False counts a last partial batch.

    Returns:
        floor(N / batch_size), or ceil(N / batch_size) when `drop_remainder` is False.
    """
    _check_static_int(batch_size, "batch_size")
    _check_static_int(num_examples, "num_examples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}.")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got num_examples={num_examples}.")
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def epoch_batches(key: jax.Array, data: jax.typing.ArrayLike, batch_size: int) -> jax.Array:
    """One epoch of `data` in a random order, cut into full batches on the device.

    Pure; jit it with `static_argnames="batch_size"`. Each example appears at most once;
    the N mod batch_size examples left over by the permutation are dropped this epoch.
    The checks use shapes only, so they raise under jit as well.

    Args:
        key: a JAX PRNG key; the same key gives the same batches.
        data: [N, D] the whole data set, ideally already a device array.
        batch_size: B, a Python int with 1 <= B <= N.

    Returns:
        [N // B, B, D] batches, rows of `data` in a seeded permuted order.
    """
    data = jnp.asarray(data)
    _check_static_int(batch_size, "batch_size")
    if data.ndim < 1:
        raise ValueError(f"epoch_batches needs `data` [N, D], got a scalar of shape {data.shape}.")
    num_examples = data.shape[0]
    if num_examples == 0:
        raise ValueError("epoch_batches got an empty data set: `data` has N = 0 examples.")
    if not 1 <= batch_size <= num_examples:
        raise ValueError(
            f"batch_size must be in [1, N] with N = {num_examples} examples, "
            f"got batch_size={batch_size}."
        )
    count = num_examples // batch_size
    order = jax.random.permutation(key, num_examples)[: count * batch_size]
    return data[order].reshape(count, batch_size, *data.shape[1:])


# ----------------------------------------------------------------------------- loaders


def _load_digits(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """scikit-learn's bundled 8x8 digits: [1500, 64] train and [297, 64] test."""
    import sklearn.datasets  # 2 s to import: only when the digits are asked for

    images = sklearn.datasets.load_digits().data.astype(np.float32) / _DIGITS_MAX_VALUE
    train_indices, test_indices = split_indices(len(images), _DIGITS_NUM_TEST, seed)
    return images[train_indices], images[test_indices], (8, 8)


def _import_tfds():
    """Imports tensorflow_datasets, which is an optional dependency."""
    try:
        import tensorflow_datasets as tfds  # optional, slow to import: only when asked for
    except ImportError as error:
        raise ImportError(
            "Loading mnist, fashion_mnist or binarized_mnist needs tensorflow-datasets: "
            "pip install 'vaejax[tfds]'"
        ) from error
    return tfds


def _load_tfds(name: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A prepared TFDS image set as [N_train, 784] and [N_test, 784] in [0, 1]."""
    tfds = _import_tfds()
    # binarized_mnist stores 0/1 pixels; the others store 0..255.
    max_value = 1.0 if name == "binarized_mnist" else 255.0
    splits = []
    for split in ("train", "test"):
        source = _tfds_source(tfds, name, split, data_dir)
        splits.append(_images_from_source(source, f"{name}[{split}]", max_value))
    return splits[0], splits[1], _TFDS_IMAGE_SHAPE


def _tfds_source(tfds, name: str, split: str, data_dir: str | None):
    """`tfds.data_source` without downloading; absent files become FileNotFoundError."""
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    # tfds 4.9 raises NotImplementedError ("file format TFRECORD is not supported") when
    # nothing is prepared, and OSError/ValueError for partial or unreadable directories.
    except (NotImplementedError, OSError, ValueError) as error:
        raise FileNotFoundError(_tfds_not_prepared_message(name, data_dir, error)) from error


def _tfds_not_prepared_message(name: str, data_dir: str | None, error: Exception) -> str:
    """How to prepare `name` on a machine with network and bring it here."""
    shown_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return (
        f"The tensorflow-datasets data set {name!r} is not prepared as array_record files "
        f"in data_dir={shown_dir!r} (tfds said: {error}). vaejax never downloads. "
        "On a machine with network access and `pip install tensorflow tensorflow-datasets`, "
        "run:\n"
        '  python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}', data_dir='{shown_dir}')"
        ".download_and_prepare(file_format='array_record')\"\n"
        f"then copy the directory {shown_dir}/{name} into data_dir here and pass "
        "data_dir to load_dataset."
    )


def _images_from_source(source, label: str, max_value: float) -> np.ndarray:
    """Reads every `image` of a TFDS data source as [N, H*W] float32 in [0, 1].

    Reads one index at a time through the Sequence protocol: it works for real array_record
    sources and for `tfds.testing.mock_data`, whose batched `__getitems__` is broken in
    tensorflow-datasets 4.9.10.
    """
    if len(source) == 0:
        raise ValueError(f"{label} has no examples.")
    images = np.stack([np.asarray(source[index]["image"]) for index in range(len(source))])
    if images.shape[1:] not in ((*_TFDS_IMAGE_SHAPE, 1), _TFDS_IMAGE_SHAPE):
        raise ValueError(f"{label}: expected 28x28 images, got shape {images.shape[1:]}.")
    if images.min() < 0 or images.max() > max_value:
        raise ValueError(f"{label}: pixel values must lie in [0, {max_value:g}].")
    return (images.reshape(len(images), -1) / max_value).astype(np.float32)


def _load_frey_face(path: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Frey Face from `frey_rawface.mat`: 28x20 images, the last ~10% of a permutation test."""
    images = _read_frey_face(path).T.astype(np.float32) / 255.0  # columns are images
    if len(images) < 2:
        raise ValueError(f"{path}: Frey Face needs at least 2 images, got {len(images)}.")
    num_test = max(1, round(_FREY_FACE_TEST_FRACTION * len(images)))
    train_indices, test_indices = split_indices(len(images), num_test, seed)
    return images[train_indices], images[test_indices], _FREY_FACE_IMAGE_SHAPE


def _read_frey_face(path: str | None) -> np.ndarray:
    """The `ff` array [560, N] uint8 of a `frey_rawface.mat` file, checked."""
    how_to_get = (
        f"The public file is frey_rawface.mat from Sam Roweis' data page ({_FREY_FACE_URL}); "
        "pass its location as path=..."
    )
    if path is None:
        raise FileNotFoundError(f"frey_face needs path=..., got path=None. {how_to_get}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Frey Face file not found: {path!r}. {how_to_get}")
    try:
        contents = scipy.io.loadmat(path, variable_names=["ff"])
    except (PermissionError, IsADirectoryError):
        raise  # not a malformed file; the message already names the path
    # scipy raises MatReadError, ValueError, IndexError, OSError("could not read bytes") for
    # a truncated file, ...: all mean the same to a user: not a MATLAB v4-v7.2 .mat file.
    except Exception as error:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({error!r}).") from error
    if "ff" not in contents:
        raise ValueError(f"{path}: no variable 'ff' (expected 560 x N uint8 Frey Face images).")
    faces = contents["ff"]
    size = _FREY_FACE_IMAGE_SHAPE[0] * _FREY_FACE_IMAGE_SHAPE[1]
    if faces.ndim != 2 or faces.shape[0] != size:
        raise ValueError(f"{path}: 'ff' must have shape ({size}, N), got {faces.shape}.")
    if faces.dtype != np.uint8:
        raise ValueError(f"{path}: 'ff' must be uint8 pixels 0..255, got dtype {faces.dtype}.")
    return faces


def _make_synthetic(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """x = sigmoid(W z + b + noise), z ~ N(0, I_2): [900, 16] train, [100, 16] test."""
    num_dims = _SYNTHETIC_IMAGE_SHAPE[0] * _SYNTHETIC_IMAGE_SHAPE[1]
    model_rng = np.random.default_rng(_SYNTHETIC_MODEL_SEED)
    weights = model_rng.normal(scale=2.0, size=(_SYNTHETIC_NUM_LATENTS, num_dims))
    bias = model_rng.normal(size=num_dims)
    rng = np.random.default_rng(seed)
    num_examples = _SYNTHETIC_NUM_TRAIN + _SYNTHETIC_NUM_TEST
    latents = rng.normal(size=(num_examples, _SYNTHETIC_NUM_LATENTS))
    noise = _SYNTHETIC_NOISE_SCALE * rng.normal(size=(num_examples, num_dims))
    images = scipy.special.expit(latents @ weights + bias + noise).astype(np.float32)
    train_indices, test_indices = split_indices(num_examples, _SYNTHETIC_NUM_TEST, seed)
    return images[train_indices], images[test_indices], _SYNTHETIC_IMAGE_SHAPE


# ----------------------------------------------------------------------------- helpers


def _binarize_static(
    train: np.ndarray, test: np.ndarray, *, method: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Binarises both splits once: Bernoulli(x) draws ("static") or x > 0.5 ("threshold")."""
    if method == "threshold":
        return (train > 0.5).astype(np.float32), (test > 0.5).astype(np.float32)
    rng = np.random.default_rng((seed, _BINARIZE_STREAM))
    # u < x with u ~ U[0, 1) is Bernoulli(x), and keeps exact 0s and 1s unchanged.
    return tuple((rng.random(split.shape) < split).astype(np.float32) for split in (train, test))


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def _check_images(images: np.ndarray, label: str, image_shape: tuple[int, int]) -> None:
    """Raises ValueError unless `images` is [N, H*W] float32 in [0, 1] with N >= 1."""
    if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 2:
        raise ValueError(f"{label} must be a 2-D float32 numpy array [N, D].")
    if images.shape[0] == 0 or images.shape[1] != image_shape[0] * image_shape[1]:
        raise ValueError(f"{label} has shape {images.shape}; expected [N >= 1, {image_shape}].")
    if not (images.min() >= 0 and images.max() <= 1):  # also rejects NaN
        raise ValueError(f"{label} must lie in [0, 1].")


def _check_static_int(value, argument: str) -> None:
    """Raises TypeError unless `value` is a concrete Python or numpy integer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"`{argument}` must be a Python int (static under jit: "
            f"static_argnames='{argument}'), got {type(value).__name__}."
        )
