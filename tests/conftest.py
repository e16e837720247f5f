"""Fixtures shared by the tests; plain helpers are in tests/helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` from any test


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for one test module.

    Modules whose runs compile identical programs (a run and its resumption or repeat)
    load them from the cache; the cached executables are those a fresh compile produces.
    """
    from jax.experimental.compilation_cache import compilation_cache as cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: jax.config.values[name] for name in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0.0)
    cache.reset_cache()  # the cache is set up once per process, at the first compile
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cache.reset_cache()


@pytest.fixture(scope="session")
def digits():
    from vaejax import data as data_lib

    return data_lib.load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def synthetic():
    from vaejax import data as data_lib

    return data_lib.load_dataset("synthetic", seed=0)
