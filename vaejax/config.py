"""The training configuration: its schema, defaults and validation, in one place.

A config is an ``ml_collections.ConfigDict`` of nested groups:

=============  =========================================================================
``seed``       the run's seed: data split, data order, and every member's seed unless
               ``population.seed`` sets them
``data``       which data set and how it is read (binarised, dequantised)
``model``      the VAE: likelihood head, fixed sigma, layer sizes, initialisation
``train``      objective, optimiser, schedule, batch size, epochs, sampling of batches
``population`` tuples that make P members trained by one vmapped step
``eval``       test-set evaluation (ELBO, IWAE, active units) during training
``checkpoint`` how often the state is saved, and how many saves are kept
``run``        devices, sharding, progress bars
=============  =========================================================================

Any other top-level entry must be a group (a ``ConfigDict``) of one experiment, e.g.
``config.sigma_sweep``: the experiment reads and checks it, the training job passes it
by. So every experiment config is a training config too:
``./launch.sh train --config=experiments/configs/sigma_sweep.py`` trains its model.

:func:`default_config` returns the defaults; :func:`validate` raises ``ValueError``
naming the key (``config.train.learning_rate``) for a wrong type, value or unknown key;
:func:`parse_variant` reads the ``:variant`` suffix of a config file argument.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

from vaejax import heads

INT, REAL, STR, BOOL, NONE, TUPLE, GROUP = "int", "real", "str", "bool", "None", "tuple", "group"

OPTIMIZERS = ("adam", "adagrad", "sgd")
OBJECTIVES = ("elbo", "wake_sleep")
SAMPLINGS = ("epochs", "uniform")
BINARIZATIONS = (None, "static", "threshold", "dynamic")
SHARDINGS = ("none", "population", "data")
POPULATION_FIELDS = ("sigma", "beta", "learning_rate", "seed", "latent")


@dataclasses.dataclass(frozen=True)
class Field:
    """One config key: its default, the kinds of value it takes, and a value check.

    ``check(value) -> str | None`` returns what is wrong ("must be > 0") or None.
    """

    default: Any
    kinds: tuple[str, ...]
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def positive_int(value):
    """A :class:`Field` check: an int >= 1."""
    return None if value >= 1 else "must be an int >= 1"


def non_negative_int(value):
    """A :class:`Field` check: an int >= 0."""
    return None if value >= 0 else "must be an int >= 0"


def positive_real(value):
    """A :class:`Field` check: finite and > 0."""
    return None if (math.isfinite(value) and value > 0) else "must be finite and > 0"


def non_negative_real(value):
    """A :class:`Field` check: finite and >= 0."""
    return None if (math.isfinite(value) and value >= 0) else "must be finite and >= 0"


def one_of(choices):
    """A :class:`Field` check: one of ``choices``."""
    def check(value):
        return None if value in choices else (
            f"must be one of {', '.join(repr(c) for c in choices)}")
    return check


def _likelihood(value):
    return None if value in heads.NAMES else f"must be one of {', '.join(heads.NAMES)}"


def _dataset(value):
    from vaejax import data as data_lib

    return None if value in data_lib.DATASETS else (
        f"must be one of {', '.join(data_lib.DATASETS)}")


def optional(check):
    """A :class:`Field` check: None, or what ``check`` accepts."""
    return lambda value: None if value is None else check(value)


def _int_tuple(value):
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0
               for v in value):
        return "must be a tuple of ints >= 0"
    return None


# The schema. Defaults: a Gaussian-decoder VAE on the bundled digits (CPU, ~1 minute).
SCHEMA: dict[str, Field | dict[str, Field]] = {
    "seed": Field(0, (INT,), non_negative_int, "data split, data order, member seeds"),
    "data": {
        "dataset": Field("digits", (STR,), _dataset,
                         "digits | mnist | fashion_mnist | binarized_mnist | frey_face | "
                         "synthetic"),
        "data_dir": Field(None, (STR, NONE), doc="TFDS data_dir (prepared array_record files)"),
        "data_path": Field(None, (STR, NONE), doc="path of frey_rawface.mat"),
        "binarize": Field(None, (STR, NONE), one_of(BINARIZATIONS),
                          "None | static | threshold | dynamic (a fresh draw per batch)"),
        "squeeze": Field(0.0, (REAL,),
                         lambda v: None if 0 <= v < 0.5 else "must be in [0, 0.5)",
                         "x -> e + (1 - 2e) x on every split: e > 0 puts the data inside "
                         "(0, 1), as the beta head needs"),
        "dequantize_levels": Field(None, (INT, NONE), optional(
            lambda v: None if v >= 2 else "must be None or an int >= 2"),
            "x = (k + u) / levels for grey level k, per batch (None: off)"),
    },
    "model": {
        "likelihood": Field("gaussian_fixed", (STR,), _likelihood, "decoder head"),
        "sigma": Field(0.1, (REAL,), positive_real,
                       "decoder sigma of gaussian_fixed (b of laplace_fixed)"),
        "sigmoid_mean": Field(False, (BOOL,), doc="sigmoid on a Gaussian mean"),
        "hidden": Field(200, (INT,), positive_int),
        "latent": Field(8, (INT,), positive_int),
        "init_scale": Field(None, (REAL, NONE), optional(positive_real),
                            "weight std (None: LeCun normal; AEVB: 0.01)"),
        "init_log_sigma": Field(0.0, (REAL,), doc="initial shared log sigma (gaussian_shared)"),
        "min_sigma": Field(0.0, (REAL,), non_negative_real,
                           "floor of a learned decoder sigma or scale (0: none)"),
        "sigma_floor": Field("hard", (STR,), one_of(("hard", "soft")),
                             "min_sigma as a hard max or the sigma-VAE's soft clip"),
        "num_levels": Field(17, (INT,), lambda v: None if v >= 2 else "must be an int >= 2",
                            "grey levels of the data for the discretised / categorical heads"),
        "num_mixtures": Field(5, (INT,), positive_int,
                              "components of discretized_logistic_mixture"),
    },
    "train": {
        "objective": Field("elbo", (STR,), one_of(OBJECTIVES), "elbo | wake_sleep"),
        "beta": Field(1.0, (REAL,), non_negative_real, "KL weight"),
        "num_samples": Field(1, (INT,), positive_int, "L, latent samples per example"),
        "optimizer": Field("adam", (STR,), one_of(OPTIMIZERS), "adam | adagrad | sgd"),
        "learning_rate": Field(1e-3, (REAL,), positive_real),
        "adagrad_initial_accumulator": Field(0.1, (REAL,), non_negative_real,
                                             "optax's default 0.1 (AEVB's Adagrad: 0)"),
        "adam_eps": Field(1e-8, (REAL,), positive_real),
        "weight_decay": Field(0.0, (REAL,), non_negative_real,
                              "coefficient of 0.5 ||theta||^2 (AEVB prior: 1 / N_train)"),
        "decay_epochs": Field((), (TUPLE,), _int_tuple,
                              "epochs at which the learning rate is multiplied by decay_factor"),
        "decay_factor": Field(1.0, (REAL,), positive_real),
        "batch_size": Field(100, (INT,), positive_int),
        "num_epochs": Field(100, (INT,), positive_int),
        "sampling": Field("epochs", (STR,), one_of(SAMPLINGS),
                          "epochs (shuffled, without replacement) | uniform (with replacement)"),
    },
    "population": {
        "sigma": Field(None, (TUPLE, NONE), doc="member sigmas"),
        "beta": Field(None, (TUPLE, NONE), doc="member KL weights"),
        "learning_rate": Field(None, (TUPLE, NONE), doc="member learning rates"),
        "seed": Field(None, (TUPLE, NONE), doc="member seeds (initial weights, latent noise)"),
        "latent": Field(None, (TUPLE, NONE), doc="member latent sizes (<= model.latent)"),
    },
    "eval": {
        "every_epochs": Field(10, (INT,), positive_int),
        "iwae_samples": Field(100, (INT,), non_negative_int, "K of the test IWAE (0: off)"),
        "iwae_chunk": Field(100, (INT,), positive_int, "IWAE samples per chunk"),
        "chunk": Field(10_000, (INT,), positive_int, "examples per evaluation chunk"),
    },
    "checkpoint": {
        "every_epochs": Field(10, (INT,), positive_int),
        "keep": Field(2, (INT,), positive_int, "checkpoints kept"),
    },
    "run": {
        "sharding": Field("none", (STR,), one_of(SHARDINGS), "none | population | data"),
        "num_devices": Field(None, (INT, NONE), optional(positive_int), "None: all devices"),
        "progress": Field(True, (BOOL,), doc="progress bars"),
    },
}
GROUPS = tuple(name for name, entry in SCHEMA.items() if isinstance(entry, dict))


def placeholder(field: Field):
    """A field's default as a ConfigDict value (a typed placeholder for None)."""
    if field.default is not None:
        return field.default
    kind = next(k for k in field.kinds if k != NONE)
    if kind == GROUP:
        return ml_collections.ConfigDict()
    return config_dict.placeholder({INT: int, REAL: float, STR: str, TUPLE: tuple}[kind])


def default_config() -> ml_collections.ConfigDict:
    """The defaults of every training key, as a nested ConfigDict (see :data:`SCHEMA`)."""
    config = ml_collections.ConfigDict()
    for name, entry in SCHEMA.items():
        if isinstance(entry, Field):
            config[name] = placeholder(entry)
        else:
            config[name] = ml_collections.ConfigDict(
                {key: placeholder(field) for key, field in entry.items()})
    return config


def _has_kind(value, kind: str) -> bool:
    if kind == NONE:
        return value is None
    if kind == BOOL:
        return isinstance(value, bool | np.bool_)
    if isinstance(value, bool | np.bool_):  # bool is an int to Python, never to a config
        return False
    if kind == INT:
        return isinstance(value, int | np.integer)
    if kind == REAL:
        return isinstance(value, int | float | np.integer | np.floating)
    if kind == STR:
        return isinstance(value, str)
    if kind == GROUP:
        return isinstance(value, ml_collections.ConfigDict)
    return isinstance(value, tuple | list)


def check_field(path: str, field: Field, value) -> None:
    """Raises ValueError naming ``path`` when ``value`` has the wrong kind or fails the check."""
    if not any(_has_kind(value, kind) for kind in field.kinds):
        raise ValueError(f"config `{path}` must be {' or '.join(field.kinds)}, got {value!r} "
                         f"({type(value).__name__}).")
    problem = field.check(value) if (field.check and value is not None) else None
    if problem:
        raise ValueError(f"config `{path}` {problem}, got {value!r}.")


def population_size(config: ml_collections.ConfigDict) -> int:
    """P: the longest non-empty ``config.population.<field>`` tuple (1 if none)."""
    sizes = {name: len(config.population[name]) for name in POPULATION_FIELDS
             if config.population.get(name)}
    if not sizes:
        return 1
    size = max(sizes.values())
    bad = {k: v for k, v in sizes.items() if v not in (1, size)}
    if bad:
        raise ValueError(
            f"config.population fields must have length 1 or P={size}; got lengths {bad}.")
    return size


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the key: a missing or unknown key, a wrong type or value.

    Top-level entries outside :data:`SCHEMA` must be experiment groups (ConfigDicts); they
    are the experiment's to check.
    """
    for name, entry in SCHEMA.items():
        if name not in config:
            raise ValueError(f"config lacks `{name}`; start from "
                             "vaejax.config.default_config().")
        if isinstance(entry, Field):
            check_field(name, entry, config[name])
            continue
        group = config[name]
        if not isinstance(group, ml_collections.ConfigDict):
            raise ValueError(f"config `{name}` must be a group of keys, got {group!r}.")
        unknown = sorted(set(group.keys()) - set(entry))
        if unknown:
            raise ValueError(f"unknown config key{'s' * (len(unknown) > 1)} "
                             f"{', '.join(f'`{name}.{k}`' for k in unknown)}; the keys of "
                             f"`{name}` are {', '.join(entry)}.")
        for key, field in entry.items():
            if key not in group:
                raise ValueError(f"config lacks `{name}.{key}`; start from "
                                 "vaejax.config.default_config().")
            check_field(f"{name}.{key}", field, group[key])
    for name in sorted(set(config.keys()) - set(SCHEMA)):
        if not isinstance(config[name], ml_collections.ConfigDict):
            raise ValueError(
                f"unknown config key `{name}`: the top-level keys are "
                f"{', '.join(SCHEMA)} and experiment groups (ConfigDicts).")
    _check_population(config)


def _check_population(config) -> None:
    for key in POPULATION_FIELDS:
        values = config.population[key]
        if values is None:
            continue
        kind = INT if key in ("seed", "latent") else REAL
        if not values or not all(_has_kind(v, kind) for v in values):
            raise ValueError(f"config `population.{key}` must be None or a non-empty tuple of "
                             f"{kind}s, got {values!r}.")
        if key in ("sigma", "learning_rate") and not all(
                math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"config `population.{key}` must hold finite values > 0, got "
                             f"{list(values)}.")
        if key == "beta" and not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"config `population.beta` must hold finite values >= 0, got "
                             f"{list(values)}.")
        if key == "latent" and not all(1 <= v <= config.model.latent for v in values):
            raise ValueError(f"config `population.latent` must hold sizes in [1, "
                             f"model.latent={config.model.latent}], got {list(values)}.")
    population_size(config)


def member_values(config: ml_collections.ConfigDict) -> dict[str, list]:
    """The [P] per-member settings: ``config.population`` tuples, else the scalar keys."""
    size = population_size(config)
    scalar = {"sigma": config.model.sigma, "beta": config.train.beta,
              "learning_rate": config.train.learning_rate, "seed": config.seed,
              "latent": config.model.latent}
    values = {}
    for key, default in scalar.items():
        column = list(config.population[key] or ()) or [default]
        values[key] = column * size if len(column) == 1 else column
    return values


# --------------------------------------------------------------------------- variants


def parse_variant(arg: str | None, *, flags: tuple[str, ...] = ("smoke",),
                  keys: Mapping[str, type] | None = None,
                  positional: str | None = None) -> dict[str, Any]:
    """Reads the ``:variant`` of ``--config=file.py:variant``.

    A variant is comma-separated tokens: a flag name (``smoke``), ``key=value`` for a key
    of ``keys`` (``latent=3``), or, with ``positional``, a bare value for that key (``3``).

    Args:
      arg: the variant string ('' or None: none).
      flags: the names that may appear alone.
      keys: name -> type of the ``key=value`` tokens.
      positional: the key a bare non-flag token sets.

    Returns:
      {flag: True for each flag given, key: value for each key given}.

    Raises:
      ValueError: an unknown token, naming what is allowed.
    """
    keys = dict(keys or {})
    allowed = [*flags, *(f"{k}=..." for k in keys)]
    if positional:
        allowed.append(f"a bare {positional}")
    unknown = f"; expected {', '.join(allowed) or 'nothing'}."
    out: dict[str, Any] = {}
    for token in (t.strip() for t in (arg or "").split(",")):
        if not token:
            continue
        name, sep, text = token.partition("=")
        if not sep and name in flags:
            out[name] = True
            continue
        bare = not sep and positional is not None
        if bare:
            name, text = positional, token
        if name not in keys:
            raise ValueError(f"Unknown config variant {token!r}{unknown}")
        try:
            out[name] = keys[name](text)
        except ValueError:
            if bare:  # a word that is neither a flag nor a value
                raise ValueError(f"Unknown config variant {token!r}{unknown}") from None
            raise ValueError(f"config variant {token!r}: {name} must be "
                             f"{keys[name].__name__}.") from None
    return out


SMOKE = {
    "model": {"hidden": 16, "latent": 2},
    "train": {"num_epochs": 3, "batch_size": 50},
    "eval": {"every_epochs": 1, "iwae_samples": 8, "iwae_chunk": 4},
    "checkpoint": {"every_epochs": 1},
}


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
    """Sets nested keys from a {group: {key: value}} mapping; a key must already exist."""
    for name, value in values.items():
        if isinstance(value, Mapping):
            override(config[name], value)
        elif name not in config:
            raise KeyError(f"config has no key `{name}` to override.")
        else:
            config[name] = value


# --------------------------------------------------------------------------- experiments


def experiment_config(name: str, group: Mapping[str, Field], arg: str | None, *,
                      flags: tuple[str, ...] = ("smoke", "accelerator"),
                      training: Mapping[str, Any] | None = None,
                      variants: Mapping[str, Mapping[str, Any]] | None = None,
                      ) -> tuple[ml_collections.ConfigDict, dict]:
    """The training defaults + ``training`` overrides + the group ``config.<name>``.

    ``variants`` maps a flag of the ``:variant`` suffix to nested overrides (applied after
    the smoke sizes of :data:`vaejax.config.SMOKE` for ``smoke``). Returns the config and
    the parsed variant.
    """
    variant = parse_variant(arg, flags=flags)
    config = default_config()
    config.run.progress = False  # experiments run inside the main job's progress bar
    if variant.get("smoke"):
        override(config, SMOKE)
    override(config, training or {})
    config[name] = ml_collections.ConfigDict({k: placeholder(f) for k, f in group.items()})
    for flag, values in (variants or {}).items():
        if variant.get(flag):
            override(config, values)
    return config, variant


def validate_group(config: ml_collections.ConfigDict, name: str,
                   group: Mapping[str, Field]) -> ml_collections.ConfigDict:
    """Validates the training keys and the experiment group ``config.<name>``; returns it."""
    validate(config)
    if name not in config:
        raise ValueError(f"config lacks the experiment group `{name}`.")
    values = config[name]
    unknown = sorted(set(values.keys()) - set(group))
    if unknown:
        raise ValueError(f"unknown config key{'s' * (len(unknown) > 1)} "
                         f"{', '.join(f'`{name}.{k}`' for k in unknown)}.")
    for key, field in group.items():
        check_field(f"{name}.{key}", field, values[key])
    return values


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The training keys as a plain nested dict (what a run's config.json records)."""
    plain = config.to_dict()
    return {name: plain[name] for name in SCHEMA}
