"""The matmul precision of `vaejax.equivalence.compare_gradients`, read off its jaxpr and HLO.

On a CPU every float32 matmul is computed exactly whatever its precision attribute says, so a
numerical test could not fail here; the precision is instead asserted where XLA receives it:
the `precision` parameter of every `dot_general` equation in the jaxpr (sub-jaxprs of jit,
scan, custom_jvp ... included) and the `precision = [...]` attribute of every
`stablehlo.dot_general` in the lowered module. With the default (precision="highest") every
matmul of the forward and backward passes must be HIGHEST; with precision=None none may carry
a precision (the backend's default, TF32-like on a GPU). `jax_default_matmul_precision` is
trace-time configuration: these tests also check that it applies when `compare_gradients`
is traced inside the caller's `jax.jit`, overrides a caller's context, and reaches a
`decode_fn` that was jitted (and cached) at the default precision beforehand.
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from helpers import dot_precisions
from jax.lax import Precision

from vaejax.equivalence import compare_gradients

HIGHEST = (Precision.HIGHEST, Precision.HIGHEST)


class MLPDecoder(nn.Module):
    """z [B, Z] -> mean [B, D] through two tanh hidden layers."""

    @nn.compact
    def __call__(self, z):
        h = nn.tanh(nn.Dense(16)(z))
        h = nn.tanh(nn.Dense(16)(h))
        return nn.Dense(12)(h)


_DECODER = MLPDecoder()


def _decode(params, z):
    return _DECODER.apply(params, z)


def _setup():
    z = jax.random.normal(jax.random.key(0), (3, 5, 4))  # [L, B, Z]
    x = jax.random.uniform(jax.random.key(1), (5, 12))
    params = _DECODER.init(jax.random.key(2), z[0])
    return params, z, x, jnp.asarray([0.1, 1.0, 10.0])


def _hlo_dot_precisions(lowered_text: str) -> list[str]:
    """The precision attribute of every stablehlo.dot_general ('' where there is none)."""
    lines = [line for line in lowered_text.splitlines() if "stablehlo.dot_general" in line]
    return [(re.search(r"precision = \[([A-Z_, ]+)\]", line) or [None, ""])[1] for line in lines]


def _traced_precisions(fn, *args, **static) -> list:
    """Dot precisions in the jaxpr of ``fn(*args, **static)``; ``args[0]`` (decode_fn) static."""
    jaxpr = jax.make_jaxpr(functools.partial(fn, **static), static_argnums=(0,))(*args)
    return dot_precisions(jaxpr.jaxpr)


JITTED = jax.jit(compare_gradients, static_argnames=("decode_fn",))
JITTED_ALL_STATIC = jax.jit(compare_gradients,
                            static_argnames=("decode_fn", "precision", "sigma_chunk_size"))


@pytest.mark.parametrize("sigma_chunk_size", [None, 2])
def test_default_is_highest_for_every_matmul_in_jaxpr_and_hlo(sigma_chunk_size):
    # The jit of the docstring, decode_fn static; sigma_chunk_size=2 puts the per-sigma
    # gradients inside a lax.map (a scan sub-jaxpr).
    params, z, x, sigmas = _setup()
    args = (_decode, params, z, x, sigmas)
    fn = JITTED if sigma_chunk_size is None else JITTED_ALL_STATIC
    kwargs = {} if sigma_chunk_size is None else {"sigma_chunk_size": sigma_chunk_size}
    precisions = _traced_precisions(fn, *args, **kwargs)
    # 3 Dense layers: forward, and backward w.r.t. the input and the kernel, for the NLL and
    # the three references: dozens of dots, all of them HIGHEST.
    assert len(precisions) >= 12, precisions
    assert all(p == HIGHEST for p in precisions), precisions
    hlo = _hlo_dot_precisions(fn.lower(*args, **kwargs).as_text())
    assert len(hlo) >= 12 and all(p == "HIGHEST, HIGHEST" for p in hlo), hlo


def test_precision_none_leaves_the_backend_default():
    params, z, x, sigmas = _setup()
    args = (_decode, params, z, x, sigmas)
    for fn in (JITTED, JITTED_ALL_STATIC):  # None is an empty pytree: static or not
        precisions = _traced_precisions(fn, *args, precision=None)
        assert len(precisions) >= 12 and all(p is None for p in precisions), precisions
        hlo = _hlo_dot_precisions(fn.lower(*args, precision=None).as_text())
        assert len(hlo) >= 12 and all(p in ("", "DEFAULT, DEFAULT") for p in hlo), hlo


def test_precision_is_applied_when_traced_inside_the_callers_jit():
    # A caller's own jit around a function that calls compare_gradients: the context is
    # entered while that outer trace runs, which is when every dot_general reads it.
    params, z, x, sigmas = _setup()

    @jax.jit
    def caller(p, latents, data, grid):
        return compare_gradients(_decode, p, latents, data, grid).mse.relative_error

    assert all(p == HIGHEST for p in dot_precisions(jax.make_jaxpr(caller)(params, z, x,
                                                                              sigmas).jaxpr))
    hlo = _hlo_dot_precisions(caller.lower(params, z, x, sigmas).as_text())
    assert len(hlo) >= 12 and all(p == "HIGHEST, HIGHEST" for p in hlo), hlo


def test_default_overrides_a_callers_context_and_none_inherits_it():
    params, z, x, sigmas = _setup()
    args = (_decode, params, z, x, sigmas)
    with jax.default_matmul_precision("bfloat16"):  # a fast training setting at the call site
        overridden = _traced_precisions(JITTED, *args)
    assert all(p == HIGHEST for p in overridden), overridden
    with jax.default_matmul_precision("highest"):
        inherited = _traced_precisions(JITTED, *args, precision=None)
    assert all(p == HIGHEST for p in inherited), inherited


def test_a_decode_fn_jitted_beforehand_is_retraced_at_highest():
    # The jit cache key includes jax_default_matmul_precision, so a decode_fn already traced
    # and compiled at the default precision is traced again inside compare_gradients.
    params, z, x, sigmas = _setup()
    jitted_decode = jax.jit(_decode)
    jitted_decode(params, z[0]).block_until_ready()
    before = dot_precisions(jax.make_jaxpr(jitted_decode)(params, z[0]).jaxpr)
    assert before and all(p is None for p in before)
    precisions = _traced_precisions(JITTED, jitted_decode, params, z, x, sigmas)
    assert len(precisions) >= 12 and all(p == HIGHEST for p in precisions), precisions


@pytest.mark.parametrize("precision, expected", [
    ("highest", HIGHEST),
    ("HIGHEST", HIGHEST),
    (Precision.HIGHEST, HIGHEST),
    ("float32", HIGHEST),  # the legacy name of HIGHEST
    ("high", (Precision.HIGH, Precision.HIGH)),
    (Precision.DEFAULT, (Precision.DEFAULT, Precision.DEFAULT)),
    ("F32_F32_F32", jax.lax.DotAlgorithmPreset.F32_F32_F32),
])
def test_precision_values(precision, expected):
    params, z, x, sigmas = _setup()
    precisions = _traced_precisions(JITTED_ALL_STATIC, _decode, params, z, x, sigmas,
                                    precision=precision)
    assert precisions and all(p == expected for p in precisions), precisions


def test_a_matmul_with_its_own_precision_keeps_it():
    # Documented limit: the context sets the default, it does not override an explicit
    # precision= (here DEFAULT) in decode_fn; its backward-pass dots inherit it too.
    params, z, x, sigmas = _setup()

    def decode_default(w, latents):
        return jnp.matmul(latents, w, precision=Precision.DEFAULT)

    w = jnp.ones((4, 12))
    precisions = _traced_precisions(JITTED, decode_default, w, z, x, sigmas)
    assert precisions and all(p == (Precision.DEFAULT, Precision.DEFAULT) for p in precisions)


@pytest.mark.parametrize("precision", ["fastest", 3, 1.5])
def test_bad_precision_raises(precision):
    params, z, x, sigmas = _setup()
    with pytest.raises(ValueError, match="`precision`"):
        compare_gradients(_decode, params, z, x, sigmas, precision=precision)
