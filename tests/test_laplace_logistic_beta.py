"""Laplace, logistic and Beta decoders, soft clipping of log-scales, and the L1 gradient identity.

References (each test names its own):

* ``scipy.stats.laplace.logpdf``, ``scipy.stats.logistic.logpdf``, ``scipy.stats.beta.logpdf``
  and ``scipy.special`` (betaln, digamma, expit) in float64, evaluated on the very numbers the
  library sees (inputs rounded to the tested dtype first, then widened), so input rounding is
  not part of any error;
* closed forms in numpy float64: the maximum-likelihood Laplace scale b* = mean |x - mu|
  (d/db log p = -D/b + SAE/b^2 = 0), the logistic derivatives d/dmu log p = tanh(z/2)/s and
  d/ds log p = (z tanh(z/2) - 1)/s, the Beta derivatives in digammas, softplus and sigmoid;
* the identities -log Laplace = (D/b) MAE + D log(2b) = SAE/b + D log(2b), and for the
  gradients a linear decoder's gradient written out by hand in numpy.

Tolerances are argued from the dtype (eps = 2^-23 in float32, 2^-52 in float64, unit roundoff
u = eps/2), never fitted to the measurements:

* A value per example is a sum of n elementwise log-densities. Each elementwise value is
  within E eps of the exact one, relative to the sum of the magnitudes of its terms
  (|log 2b| + |z| for the Laplace; |z| + |log s| + 2 softplus(-|z|) for the logistic): a
  subtraction, a division, a log and two additions give E = 4. For the Beta, E = 32: XLA's
  lgamma is accurate to ~21 eps (float32) / ~33 eps (float64) relative to |lgamma(a)| +
  a |digamma(a)| (measured against scipy.special.gammaln on a grid 1e-2..1e3), and the terms
  also carry the rounding of alpha = mean * kappa, which moves the value by at most
  eps alpha (|log x| + |digamma(alpha)|). Summing n values adds at most (n - 1) u < n/2 eps
  relative to the sum of their magnitudes (recursive summation; Higham, Accuracy and Stability
  of Numerical Algorithms, 2nd ed., section 4.2). scipy adds a few float64 roundings of its
  own: negligible against float32, at most another E eps in float64. Hence
  ``|got - ref| <= (2 E + n/2) eps * sum|terms|`` (:func:`assert_within_terms`).
* Gradients of one element are products and quotients of a few rounded numbers: rtol 4 eps.
* compare_laplace_gradients runs at precision="highest" (true float32 products): its two
  gradients share the forward pass and differ by the scalar scaling of the backward
  cotangent, so they agree to a few roundings. As in tests/test_equivalence.py:
  relative error <= 1e-5 in float32 (~100 u), 1e-12 in float64.
* bfloat16 inputs: the result must be the float32 computation on the rounded
  inputs (tests/test_mixed_precision.py's argument: the same float32 operations, which XLA
  may order differently, 16 eps32 relative to max(1, |value|) for sums of <= 20 terms); a
  gradient with respect to a low-precision input is the float32 gradient rounded once to that
  dtype, so within eps_low of it.
"""

from __future__ import annotations

import functools
import inspect
import math
import types

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from helpers import dot_precisions
from jax.lax import Precision
from scipy import special, stats

from vaejax import likelihoods as lik
from vaejax.equivalence import compare_laplace_gradients

NEW_FUNCTIONS = (
    "laplace_log_likelihood",
    "laplace_log_likelihood_from_log_scale",
    "optimal_laplace_scale",
    "laplace_log_likelihood_optimal_scale",
    "logistic_log_likelihood",
    "logistic_log_likelihood_from_log_scale",
    "beta_log_likelihood",
    "mae",
    "sae",
    "soft_clip_log_scale",
)


def _jit_with_static_options(fn):
    """jit with the keyword-only options static: eager JAX compiles every primitive per shape,
    so numerical comparisons run jitted (validation is tested on the eager path)."""
    options = ("event_ndims", "axis", "eps")
    static = [name for name in options if name in inspect.signature(fn).parameters]
    return jax.jit(fn, static_argnames=static)


# Wrapped at import, traced at call time: inside the float64 fixture they trace in float64.
J = types.SimpleNamespace(**{name: _jit_with_static_options(getattr(lik, name))
                             for name in NEW_FUNCTIONS})

E_LOC_SCALE = 4  # roundings per elementwise Laplace / logistic value (module docstring)
E_BETA = 32  # per elementwise Beta value, dominated by XLA's lgamma (module docstring)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """The dtype of a test; float64 runs inside jax.enable_x64(True), left afterwards."""
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param)
    assert not jax.config.jax_enable_x64


def eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def event_sum(values, event_ndims):
    return values if event_ndims == 0 else values.sum(axis=tuple(range(-event_ndims, 0)))


def assert_within_terms(got, expected, terms, dtype, *, e, event_ndims, label=""):
    """|got - expected| <= (2 e + n/2) eps sum|terms| per example (module docstring).

    ``terms`` is the [..., *event] sum of the magnitudes of each element's terms.
    """
    got, expected = f64(got), f64(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    n = math.prod(terms.shape[terms.ndim - event_ndims:]) if event_ndims else 1
    bound = (2 * e + n / 2) * eps(dtype) * event_sum(terms, event_ndims)
    error = np.abs(got - expected)
    assert np.all(np.isfinite(got)), label
    assert np.all(error <= bound), (label, float(np.max(error / bound)))


def assert_rtol(got, expected, rtol, label=""):
    """Elementwise |got - expected| <= rtol |expected| (exact where expected is 0)."""
    got, expected = f64(got), f64(expected)
    assert got.shape == expected.shape, (label, got.shape, expected.shape)
    assert np.all(np.isfinite(got)), label
    error = np.abs(got - expected)
    assert np.all(error <= rtol * np.abs(expected)), (label, float(np.max(error)))


def laplace_terms(x, loc, b):
    return np.log(2.0) + np.abs(np.log(b)) + np.abs(x - loc) / b


def logistic_terms(x, loc, s):
    z = np.abs(x - loc) / s
    return z + np.abs(np.log(s)) + 2.0 * np.logaddexp(0.0, -z)


# --------------------------------------------------------------------------- Laplace, logistic

FAMILIES = {
    # name: (from scale, from log scale, scipy.stats reference, term magnitudes)
    "laplace": (J.laplace_log_likelihood, J.laplace_log_likelihood_from_log_scale,
                stats.laplace, laplace_terms),
    "logistic": (J.logistic_log_likelihood, J.logistic_log_likelihood_from_log_scale,
                 stats.logistic, logistic_terms),
}
SHAPES = [  # x shape, scale shape, event_ndims (None: the default for rank <= 2)
    ((5, 7), (), None),  # one fixed scale
    ((5, 7), (7,), None),  # per pixel, shared over the batch
    ((3, 8, 8, 1), (8, 8, 1), 3),  # [B, H, W, C] images: nats per image
    ((3, 8, 8, 1), (3, 1, 1, 1), 3),  # per example
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("x_shape, scale_shape, event_ndims", SHAPES)
def test_location_scale_values_match_scipy(dtype, family, x_shape, scale_shape, event_ndims):
    # Reference: scipy.stats.{laplace,logistic}.logpdf in float64 on the rounded inputs,
    # summed over the event axes in numpy.
    from_scale, from_log_scale, reference, terms = FAMILIES[family]
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape).astype(dtype)
    loc = (x + rng.normal(scale=0.5, size=x_shape)).astype(dtype)
    scale = rng.uniform(0.05, 3.0, size=scale_shape).astype(dtype)
    log_scale = rng.uniform(-3.0, 1.0, size=scale_shape).astype(dtype)
    nd = 1 if event_ndims is None else event_ndims

    got = from_scale(x, loc, scale, event_ndims=event_ndims)
    assert got.dtype == dtype and got.shape == x_shape[: len(x_shape) - nd]
    expected = event_sum(reference.logpdf(f64(x), f64(loc), f64(scale)), nd)
    assert_within_terms(got, expected, terms(f64(x), f64(loc), f64(scale) + 0 * f64(x)), dtype,
                        e=E_LOC_SCALE, event_ndims=nd, label=family)

    got = from_log_scale(x, loc, log_scale, event_ndims=event_ndims)
    b = np.exp(f64(log_scale)) + 0 * f64(x)
    expected = event_sum(reference.logpdf(f64(x), f64(loc), b), nd)
    assert_within_terms(got, expected, terms(f64(x), f64(loc), b), dtype, e=E_LOC_SCALE,
                        event_ndims=nd, label=family + "_from_log_scale")


def test_images_need_event_ndims_for_every_new_function():
    x = jnp.full((2, 8, 8, 1), 0.5)
    calls = {
        "laplace_log_likelihood": lambda **k: lik.laplace_log_likelihood(x, x, 1.0, **k),
        "laplace_log_likelihood_from_log_scale":
            lambda **k: lik.laplace_log_likelihood_from_log_scale(x, x, 0.0, **k),
        "optimal_laplace_scale": lambda **k: lik.optimal_laplace_scale(x, x, **k),
        "laplace_log_likelihood_optimal_scale":
            lambda **k: lik.laplace_log_likelihood_optimal_scale(x, x, eps=1.0, **k),
        "logistic_log_likelihood": lambda **k: lik.logistic_log_likelihood(x, x, 1.0, **k),
        "logistic_log_likelihood_from_log_scale":
            lambda **k: lik.logistic_log_likelihood_from_log_scale(x, x, 0.0, **k),
        "beta_log_likelihood": lambda **k: lik.beta_log_likelihood(x, x, 2.0, **k),
        "mae": lambda **k: lik.mae(x, x, **k),
        "sae": lambda **k: lik.sae(x, x, **k),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"event_ndims=3"):
            call()
        # With it: one value per image (traced abstractly, validation skipped).
        assert jax.eval_shape(functools.partial(call, event_ndims=3)).shape == (2,), name


# --------------------------------------------------------------------------- optimal scale


def test_optimal_laplace_scale_maximises_the_likelihood(dtype):
    # Reference: b* = mean |x - mu| (closed form, numpy float64); that it is the maximum is
    # checked on a grid of b* (1 + delta) and by the derivative vanishing.
    rng = np.random.default_rng(1)
    b_true = np.array([0.05, 0.3, 1.0, 4.0])[:, None, None, None]
    x = rng.normal(size=(4, 8, 8, 1)).astype(dtype)
    loc = (x + rng.laplace(scale=b_true, size=x.shape)).astype(dtype)
    num_dims, e = 64, eps(dtype)
    abs_err = np.abs(f64(x) - f64(loc))

    b_star = J.optimal_laplace_scale(x, loc, event_ndims=3)
    assert b_star.dtype == dtype and b_star.shape == (4,)
    # A sum of 64 non-negative terms and one division: (64/2 + 2) eps relative.
    assert_rtol(b_star, abs_err.mean(axis=(1, 2, 3)), (num_dims / 2 + 2) * e)

    # Grid: log p(b* (1 + delta)) - log p(b*) = -D (delta - log(1 + delta)) ~ -D delta^2 / 2
    # is 3.2e-3 at the nearest grid points (delta = +-0.01), more than twice the worst-case
    # rounding of a value: (2 E + D/2) eps sum|terms| = 40 eps32 * 300 = 1.4e-3 (sum|terms|
    # = D (log 2 + |log b| + 1) <= 300 for b >= 0.05).
    deltas = np.linspace(-0.5, 0.5, 101)
    scales = (f64(b_star)[None, :] * (1.0 + deltas)[:, None]).astype(dtype)  # [G, B]
    grid = jax.jit(jax.vmap(lambda s: lik.laplace_log_likelihood(
        x, loc, s[:, None, None, None], event_ndims=3)))(scales)
    np.testing.assert_array_equal(np.argmax(np.asarray(grid), axis=0), [50] * 4)

    # Derivative at b*: sum_i (|u_i|/b^2 - 1/b) of magnitude sum 2D/b, rounded in the sum and
    # in b* itself (f''(b*) = -D/b^2 times the (D/2 + 2) eps relative error of b*):
    # |d/db| <= 2 (E + D/2) eps 2D / b*.
    grad = jax.jit(jax.grad(lambda s: jnp.sum(lik.laplace_log_likelihood(
        x, loc, s, event_ndims=3))))(b_star[:, None, None, None])
    bound = 2 * (E_LOC_SCALE + num_dims / 2) * e * 2 * num_dims / f64(b_star)
    assert np.all(np.abs(f64(grad).ravel()) <= bound), (f64(grad).ravel(), bound)
    # ... while 1% away the derivative is ~D/b* * 0.01, well outside the bound.
    assert np.all(np.abs(num_dims / f64(b_star) * 0.01) > 10 * bound)

    # axis="batch": one scalar b* = mean over everything maximises the batch's total.
    b_batch = J.optimal_laplace_scale(x, loc, axis="batch", event_ndims=3)
    assert b_batch.shape == ()
    assert_rtol(b_batch, abs_err.mean(), (abs_err.size / 2 + 2) * e)
    total = jax.jit(jax.vmap(lambda s: jnp.sum(lik.laplace_log_likelihood(
        x, loc, s, event_ndims=3))))((f64(b_batch) * (1 + deltas)).astype(dtype))
    assert int(np.argmax(np.asarray(total))) == 50


@pytest.mark.parametrize("axis", ["example", "batch"])
def test_optimal_scale_log_likelihood_is_the_likelihood_at_b_star(dtype, axis):
    # References: the closed form -D (1 + log(2 b*)) (numpy float64 with b* = MAE) for
    # axis="example"; laplace_log_likelihood at b* for both axes (values), and its gradient at
    # fixed b = b* (the envelope theorem: the gradient through b* vanishes).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 9)).astype(dtype)
    loc = (x + rng.laplace(scale=0.4, size=x.shape)).astype(dtype)
    abs_err = np.abs(f64(x) - f64(loc))
    got = J.laplace_log_likelihood_optimal_scale(x, loc, axis=axis)
    assert got.dtype == dtype and got.shape == (5,)
    b_star = abs_err.mean(axis=1, keepdims=True) if axis == "example" else abs_err.mean()
    terms = laplace_terms(f64(x), f64(loc), b_star + 0 * abs_err)
    if axis == "example":  # the closed form at the exact b*; b*'s rounding is within bound
        assert_within_terms(got, -9 * (1 + np.log(2 * b_star[:, 0])), terms, dtype,
                            e=E_LOC_SCALE, event_ndims=1)
    # scipy at the library's own b* (with axis="batch" each example's value is not stationary
    # in b, so b*'s rounding, over all 45 elements, would add to the error).
    b = J.optimal_laplace_scale(x, loc, axis=axis)
    b = b[:, None] if axis == "example" else b
    expected = stats.laplace.logpdf(f64(x), f64(loc), f64(b)).sum(axis=1)
    assert_within_terms(got, expected, terms, dtype, e=E_LOC_SCALE, event_ndims=1)

    grad_opt = jax.jit(jax.grad(lambda m: jnp.sum(
        lik.laplace_log_likelihood_optimal_scale(x, m, axis=axis))))(loc)
    grad_fixed = jax.jit(jax.grad(lambda m: jnp.sum(lik.laplace_log_likelihood(x, m, b))))(loc)
    # Equal elementwise up to the rounding of b* through two paths: (D/2 + 8) eps relative.
    assert_rtol(grad_opt, grad_fixed, (x.size / 2 + 8) * eps(dtype))


def test_optimal_scale_at_zero_error():
    # Closed forms: b* = 0 and log p = +inf for a perfect reconstruction (the likelihood is
    # unbounded); with eps the value is -D (1 + log(2 eps)); the gradient of b* is finite
    # (sign(0) = 0, documented), unlike sqrt(MSE)'s at 0.
    x = jnp.linspace(0.0, 1.0, 12).reshape(3, 4)
    assert np.all(np.asarray(J.optimal_laplace_scale(x, x)) == 0.0)
    assert float(J.optimal_laplace_scale(x, x, axis="batch")) == 0.0
    assert np.all(np.isposinf(np.asarray(J.laplace_log_likelihood_optimal_scale(x, x))))
    np.testing.assert_allclose(J.laplace_log_likelihood_optimal_scale(x, x, eps=1e-3),
                               -4 * (1 + np.log(2e-3)) * np.ones(3), rtol=4 * eps(np.float32))
    grad = jax.jit(jax.grad(lambda m: jnp.sum(lik.optimal_laplace_scale(x, m))))(x)
    np.testing.assert_array_equal(grad, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="`axis`"):
        lik.optimal_laplace_scale(x, x, axis="pixel")
    with pytest.raises(ValueError, match="`axis`"):
        lik.laplace_log_likelihood_optimal_scale(x, x, axis="pixel")


# --------------------------------------------------------------------------- MAE and SAE


def test_mae_sae_values_and_the_laplace_identity(dtype):
    # References: sum / mean of |x - loc| in numpy float64; the identity
    # -log Laplace(x; loc, b) = (D/b) MAE + D log(2b) = SAE/b + D log(2b) for a scalar b.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 10)).astype(dtype)
    loc = (x + rng.normal(size=x.shape)).astype(dtype)
    loc[:, :3] = x[:, :3]  # ties: x == loc exactly
    b, num_dims = dtype.type(0.7), 10
    abs_err = np.abs(f64(x) - f64(loc))
    got_sae, got_mae = J.sae(x, loc), J.mae(x, loc)
    assert got_sae.dtype == got_mae.dtype == dtype
    assert_within_terms(got_sae, abs_err.sum(axis=1), abs_err, dtype, e=1, event_ndims=1)
    assert_within_terms(got_mae, abs_err.mean(axis=1), abs_err / num_dims, dtype, e=2,
                        event_ndims=1)

    nll = -J.laplace_log_likelihood(x, loc, b)
    terms = laplace_terms(f64(x), f64(loc), f64(b))
    const = num_dims * np.log(2 * f64(b))
    for view in (num_dims / f64(b) * f64(got_mae) + const, f64(got_sae) / f64(b) + const):
        assert_within_terms(nll, view, 2 * terms, dtype, e=E_LOC_SCALE, event_ndims=1)


def test_mae_sae_gradients_and_the_subgradient_at_ties(dtype):
    # grad(-log Laplace) = (D/b) grad(MAE) = grad(SAE)/b elementwise (the identity), all
    # finite, and exactly 0 where x == loc (sign(0) = 0, documented). The closed form is
    # d/dloc -log Laplace = sign(loc - x)/b.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 10)).astype(dtype)
    loc = (x + rng.normal(size=x.shape)).astype(dtype)
    loc[:, :3] = x[:, :3]
    b, num_dims = dtype.type(0.7), 10

    def grad(fn):
        return f64(jax.jit(jax.grad(lambda m: jnp.sum(fn(m))))(loc))

    g_nll = grad(lambda m: -lik.laplace_log_likelihood(x, m, b))
    g_mae = grad(lambda m: lik.mae(x, m))
    g_sae = grad(lambda m: lik.sae(x, m))
    expected = np.sign(f64(loc) - f64(x)) / f64(b)
    assert_rtol(g_nll, expected, 4 * eps(dtype))
    assert_rtol(num_dims / f64(b) * g_mae, g_nll, 4 * eps(dtype))
    assert_rtol(g_sae / f64(b), g_nll, 4 * eps(dtype))
    for g in (g_nll, g_mae, g_sae):
        np.testing.assert_array_equal(g[:, :3], 0.0)
    # Also with respect to x, and through the learned-scale form (d/dlog b = |z| - 1 finite).
    g_x = jax.jit(jax.grad(lambda xx: jnp.sum(lik.laplace_log_likelihood(xx, loc, b))))(x)
    np.testing.assert_array_equal(f64(g_x)[:, :3], 0.0)
    g_log_b = jax.jit(jax.grad(lambda lb: jnp.sum(
        lik.laplace_log_likelihood_from_log_scale(x, loc, lb))))(jnp.zeros((10,), dtype))
    assert np.all(np.isfinite(f64(g_log_b)))
    # What this replaces: jnp.abs differentiates to +1 at 0, so the gradient at a tie
    # depends on how the difference is written.
    plain = [float(jax.grad(fn)(1.0)) for fn in (lambda m: jnp.abs(1.0 - m),
                                                 lambda m: jnp.abs(m - 1.0))]
    assert plain == [-1.0, 1.0]


# --------------------------------------------------------------------------- gradient identity


def _mlp_decode(params, z):
    """z [B, Z] -> loc [B, D]: a two-hidden-layer tanh MLP in plain jax."""
    h = jnp.tanh(z @ params["w1"] + params["b1"])
    h = jnp.tanh(h @ params["w2"] + params["b2"])
    return h @ params["w3"] + params["b3"]


def _mlp_setup(dtype, d=12):
    rng = np.random.default_rng(5)
    sizes = [(3, 16), (16, 16), (16, d)]
    params = {}
    for i, (n_in, n_out) in enumerate(sizes, start=1):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), dtype)
        params[f"b{i}"] = jnp.asarray(0.1 * rng.normal(size=(n_out,)), dtype)
    latents = jnp.asarray(rng.normal(size=(4, 16, 3)), dtype)  # [L, B, Z]
    x = jnp.asarray(rng.normal(size=(16, d)), dtype)
    return params, latents, x


COMPARE = jax.jit(compare_laplace_gradients,
                  static_argnames=("decode_fn", "event_ndims", "scale_chunk_size", "precision"))
SCALES = np.logspace(-3, 2, 16)
IDENTITY_RTOL = {np.dtype("float32"): 1e-5, np.dtype("float64"): 1e-12}


def test_laplace_gradient_identity_on_an_mlp(dtype):
    # grad(-log Laplace) = (D/b) grad(MAE) = grad(SAE)/b for every parameter of the decoder,
    # measured by compare_laplace_gradients (tolerances: module docstring).
    params, latents, x = _mlp_setup(dtype)
    report = COMPARE(_mlp_decode, params, latents, x, jnp.asarray(SCALES, dtype))
    rtol = IDENTITY_RTOL[dtype]
    assert report.num_dims == 12 and report.scales.dtype == dtype
    assert report.mae.ratio.shape == report.nll_grad_norm.shape == (16, 4)
    assert_rtol(report.mae.factor, 12 / SCALES, 2 * eps(dtype))
    assert_rtol(report.sae.factor, 1 / SCALES, 2 * eps(dtype))
    for name in ("mae", "sae"):
        comparison = getattr(report, name)
        assert float(jnp.max(comparison.relative_error)) <= rtol, name
        assert float(jnp.min(comparison.cosine)) >= 1 - rtol, name
        assert_rtol(comparison.ratio, np.broadcast_to(f64(comparison.factor)[:, None], (16, 4)),
                    rtol, name)
        assert len(comparison.per_leaf_relative_error) == 6
        for leaf_error in comparison.per_leaf_relative_error.values():
            assert float(jnp.max(leaf_error)) <= rtol, name
    # ||grad(-log Laplace)|| scales exactly as 1/b (the MAE gradient does not depend on b).
    assert_rtol(f64(report.nll_grad_norm) * SCALES[:, None],
                np.broadcast_to(f64(report.nll_grad_norm)[:1] * SCALES[0], (16, 4)), rtol)


def test_laplace_gradient_norm_matches_a_hand_derived_linear_decoder():
    # loc = z @ W: d/dW mean_b(-log Laplace) = z^T sign(z W - x) / (b B), written by hand in
    # numpy float64 (not jax.grad). float32 at "highest": z W rounds at u per product of a
    # sum of 3, and sign() is exact unless a residual is within ~1e-7 of 0 (none is here), so
    # the norm is within ~1e-6 relative; rtol 1e-5.
    rng = np.random.default_rng(6)
    b_size, z_dim, d = 8, 3, 5
    w = rng.normal(size=(z_dim, d))
    z = rng.normal(size=(1, b_size, z_dim))
    x = rng.uniform(size=(b_size, d))
    scales = np.array([0.1, 1.0, 7.0])
    w32, z32, x32 = (a.astype(np.float32) for a in (w, z, x))
    residual = f64(z32[0]) @ f64(w32) - f64(x32)
    assert np.min(np.abs(residual)) > 1e-3
    nll_grad = f64(z32[0]).T @ np.sign(residual) / b_size  # times 1/b
    mae_grad = nll_grad / d
    report = COMPARE(lambda p, zz: zz @ p, jnp.asarray(w32), jnp.asarray(z32), jnp.asarray(x32),
                     jnp.asarray(scales, jnp.float32))
    assert_rtol(report.nll_grad_norm[:, 0], np.linalg.norm(nll_grad) / scales, 1e-5)
    assert_rtol(report.mae.ratio[:, 0], np.linalg.norm(nll_grad) / scales
                / np.linalg.norm(mae_grad), 1e-5)


def test_laplace_comparison_images_and_bad_grids():
    # Images: [B, 4, 4, 1] with event_ndims=3 gives D = 16. (Chunking the scales runs the
    # measurement code shared with compare_gradients, tested in tests/test_equivalence.py.)
    params, latents, x = _mlp_setup(np.dtype("float32"), d=16)

    def decode_image(p, z):
        return _mlp_decode(p, z).reshape(z.shape[0], 4, 4, 1)

    x_img = x.reshape(16, 4, 4, 1)
    scales = jnp.asarray(SCALES[:6], jnp.float32)
    full = COMPARE(decode_image, params, latents[:2], x_img, scales, event_ndims=3)
    assert full.num_dims == 16
    assert_rtol(full.mae.factor, 16 / SCALES[:6], 2 * eps(np.float32))
    for comparison in (full.mae, full.sae):
        assert float(jnp.max(comparison.relative_error)) <= 1e-5
    with pytest.raises(ValueError, match="event_ndims"):
        compare_laplace_gradients(decode_image, params, latents[:1], x_img, scales)
    with pytest.raises(ValueError, match="`scales`"):
        compare_laplace_gradients(_mlp_decode, params, latents, x, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="`latents`"):
        compare_laplace_gradients(_mlp_decode, params, jnp.ones(3), x, scales)
    with pytest.raises(ValueError, match="`precision`"):
        compare_laplace_gradients(_mlp_decode, params, latents, x, scales, precision="fast")


@pytest.mark.parametrize("precision, expected", [("highest", (Precision.HIGHEST,) * 2),
                                                 (None, None)])
def test_laplace_comparison_runs_every_matmul_at_the_requested_precision(precision, expected):
    # On a CPU every float32 matmul is exact whatever it is asked, so the precision is read off
    # the jaxpr: forward and backward passes of the NLL and both references.
    params, latents, x = _mlp_setup(np.dtype("float32"))
    fn = functools.partial(compare_laplace_gradients, _mlp_decode, precision=precision)
    precisions = dot_precisions(jax.make_jaxpr(fn)(params, latents, x, SCALES[:2]).jaxpr)
    assert len(precisions) >= 12, precisions
    assert all(p == expected for p in precisions), precisions


# --------------------------------------------------------------------------- logistic stability


def test_logistic_is_stable_for_large_z(dtype):
    # Values: scipy.stats.logistic.logpdf (float64), and at |z| = 1e4 the asymptotic form
    # -|z| - log s (the neglected 2 log1p(exp(-|z|)) is ~1e-4343). Gradients: the closed forms
    # d/dloc = tanh(z/2)/s, d/dx = -tanh(z/2)/s, d/ds = (z tanh(z/2) - 1)/s,
    # d/dlog s = z tanh(z/2) - 1, which at |z| = 1e4 are sign(z)/s and (|z| - 1)/s.
    z_grid = np.array([-1e4, -1e3, -30.0, -1.0, -1e-6, 0.0, 1e-6, 1.0, 30.0, 1e3, 1e4])
    s_grid = np.array([1e-3, 1.0, 10.0])
    z_mesh, s_mesh = (a.ravel() for a in np.meshgrid(z_grid, s_grid))
    x = (z_mesh * s_mesh).astype(dtype)
    s = s_mesh.astype(dtype)
    loc = np.zeros_like(x)
    z = f64(x) / f64(s)  # the z of the rounded inputs
    e = eps(dtype)

    value = J.logistic_log_likelihood(x, loc, s, event_ndims=0)
    terms = logistic_terms(f64(x), 0.0, f64(s))
    assert_within_terms(value, stats.logistic.logpdf(f64(x), 0.0, f64(s)), terms, dtype,
                        e=E_LOC_SCALE, event_ndims=0)
    far = np.abs(z_mesh) == 1e4
    assert_within_terms(f64(value)[far], -np.abs(z[far]) - np.log(f64(s)[far]), terms[far],
                        dtype, e=E_LOC_SCALE, event_ndims=0)

    def grads(fn, *args):
        return [f64(g) for g in jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, event_ndims=0)),
                                                 argnums=(0, 1, 2)))(*args)]

    g_x, g_loc, g_s = grads(lik.logistic_log_likelihood, x, loc, s)
    t = np.tanh(z / 2)
    assert_rtol(g_loc, t / f64(s), 4 * e, "d/dloc")
    assert_rtol(g_x, -t / f64(s), 4 * e, "d/dx")
    # d/ds = (z t - 1)/s: z t >= 0 and the subtraction of 1 cancels where z t ~ 1 (|z| ~ 1.5,
    # not on the grid): relative to (|z t| + 1)/s.
    np.testing.assert_array_less(np.abs(g_s - (z * t - 1) / f64(s)),
                                 4 * e * (np.abs(z * t) + 1) / f64(s) + 1e-300)
    assert_rtol(g_loc[far], np.sign(z[far]) / f64(s)[far], 4 * e)
    assert_rtol(g_s[far], (np.abs(z[far]) - 1) / f64(s)[far], 4 * e)

    log_s = np.log(f64(s)).astype(dtype)
    value = J.logistic_log_likelihood_from_log_scale(x, loc, log_s, event_ndims=0)
    s_of_log = np.exp(f64(log_s))
    assert_within_terms(value, stats.logistic.logpdf(f64(x), 0.0, s_of_log),
                        logistic_terms(f64(x), 0.0, s_of_log), dtype, e=E_LOC_SCALE,
                        event_ndims=0)
    g_x, g_loc, g_log_s = grads(lik.logistic_log_likelihood_from_log_scale, x, loc, log_s)
    z = f64(x) / s_of_log
    t = np.tanh(z / 2)
    # log s is an input here (exact), so z = x exp(-log s) carries only the roundings of exp
    # and of the product, a few u; rtol 8 eps.
    assert_rtol(g_loc, t / s_of_log, 8 * e, "d/dloc (log scale)")
    np.testing.assert_array_less(np.abs(g_log_s - (z * t - 1)), 8 * e * (np.abs(z * t) + 1))
    assert all(np.all(np.isfinite(g)) for g in (g_x, g_loc, g_log_s))


# --------------------------------------------------------------------------- Beta


def beta_terms(x, mean, kappa):
    """Magnitudes bounding each Beta element's rounding (module docstring)."""
    a, b = mean * kappa, (1 - mean) * kappa
    log_x, log_1mx = np.log(x), np.log1p(-x)
    return (np.abs((a - 1) * log_x) + np.abs((b - 1) * log_1mx)
            + a * np.abs(log_x) + b * np.abs(log_1mx)
            + np.abs(special.gammaln(a)) + np.abs(special.gammaln(b))
            + np.abs(special.gammaln(a + b))
            + a * np.abs(special.digamma(a)) + b * np.abs(special.digamma(b))
            + (a + b) * np.abs(special.digamma(a + b)) + 1.0)


def _beta_inputs(dtype, shape=(4, 9)):
    rng = np.random.default_rng(7)
    x = rng.uniform(0.01, 0.99, size=shape)
    mean = rng.uniform(0.02, 0.98, size=shape)
    kappa = np.exp(rng.uniform(np.log(0.3), np.log(1e3), size=shape))  # both lgamma branches
    # Near the ends of (0, 1): representable in float32 (1 - 2^-20) and float64 (1e-12).
    tiny = [1e-6, 1e-4, 1e-12 if dtype == np.float64 else 1e-7]
    high = [1 - 2.0**-20, 1 - 1e-4, 1 - 2.0**-40 if dtype == np.float64 else 1 - 2.0**-23]
    x.reshape(-1)[:6] = tiny + high
    mean.reshape(-1)[6:10] = [1e-3, 0.999, 0.5, 0.5]
    kappa.reshape(-1)[8:12] = [8.0, 16.3, 0.3, 900.0]
    return x.astype(dtype), mean.astype(dtype), kappa.astype(dtype)


@jax.jit
def beta_values_and_grads(x, mean, concentration):
    """Elementwise log-densities [N] and the gradients of their sum w.r.t. the three inputs.

    The sum is NaN when an element is; its gradient must still be finite (invalid elements
    get a zero cotangent, and the library evaluates them at a safe point).
    """
    def total(*args):
        values = lik.beta_log_likelihood(*args, event_ndims=0)
        return jnp.sum(values), values

    grads, values = jax.grad(total, argnums=(0, 1, 2), has_aux=True)(x, mean, concentration)
    return values, grads


def test_beta_matches_scipy_including_near_0_and_1(dtype):
    # Reference: scipy.stats.beta.logpdf(x, mean kappa, (1 - mean) kappa) in float64, on the
    # rounded inputs; with kappa up to 1e3 both of log B's branches (max(a, b) < 8 and >= 8)
    # are covered. jax.scipy.special.betaln would fail the float64 case (its algdiv series
    # is off by up to ~1e-6), which is why the library evaluates log B itself. Elementwise
    # (event_ndims=0), so that no error hides in a sum; the event sum is tested on images.
    x, mean, kappa = (a.ravel() for a in _beta_inputs(dtype))
    got, _ = beta_values_and_grads(x, mean, kappa)
    assert got.dtype == dtype and got.shape == (36,)
    expected = stats.beta.logpdf(f64(x), f64(mean) * f64(kappa), (1 - f64(mean)) * f64(kappa))
    assert_within_terms(got, expected, beta_terms(f64(x), f64(mean), f64(kappa)), dtype,
                        e=E_BETA, event_ndims=0)

    # [B, 8, 8, 1] images with a per-pixel concentration, nats per image.
    rng = np.random.default_rng(8)
    x_img = rng.uniform(1e-3, 1 - 1e-3, size=(2, 8, 8, 1)).astype(dtype)
    mean_img = rng.uniform(0.05, 0.95, size=(2, 8, 8, 1)).astype(dtype)
    kappa_img = rng.uniform(0.5, 50.0, size=(8, 8, 1)).astype(dtype)
    got = J.beta_log_likelihood(x_img, mean_img, kappa_img, event_ndims=3)
    assert got.dtype == dtype and got.shape == (2,)
    k = f64(kappa_img)[None]
    expected = stats.beta.logpdf(f64(x_img), f64(mean_img) * k, (1 - f64(mean_img)) * k)
    assert_within_terms(got, expected.sum(axis=(1, 2, 3)),
                        beta_terms(f64(x_img), f64(mean_img), k + 0 * f64(x_img)), dtype,
                        e=E_BETA, event_ndims=3)


def test_beta_gradients_match_the_digamma_closed_forms(dtype):
    # Reference: with a = mean k, b = (1 - mean) k and psi = scipy.special.digamma,
    # d/dmean = k (log x - log1p(-x) - psi(a) + psi(b)),
    # d/dk = mean (log x - psi(a)) + (1 - mean)(log1p(-x) - psi(b)) + psi(k),
    # d/dx = (a - 1)/x - (b - 1)/(1 - x). Tolerance: E_BETA eps relative to the magnitudes
    # of the summed terms (the autodiff of lgamma and of log B's series is accurate to ~20 eps
    # of them, measured against digamma).
    x, mean, kappa = (a.ravel() for a in _beta_inputs(dtype))
    g_x, g_mean, g_kappa = (f64(g) for g in beta_values_and_grads(x, mean, kappa)[1])
    x, m, k = f64(x), f64(mean), f64(kappa)
    a, b = m * k, (1 - m) * k
    lx, l1x = np.log(x), np.log1p(-x)
    psi_a, psi_b, psi_k = special.digamma(a), special.digamma(b), special.digamma(k)
    e = E_BETA * eps(dtype)
    mags = np.abs(lx) + np.abs(l1x) + np.abs(psi_a) + np.abs(psi_b) + 1 / a + 1 / b + 1
    np.testing.assert_array_less(np.abs(g_mean - k * (lx - l1x - psi_a + psi_b)), e * k * mags)
    np.testing.assert_array_less(
        np.abs(g_kappa - (m * (lx - psi_a) + (1 - m) * (l1x - psi_b) + psi_k)),
        e * (mags + np.abs(psi_k) + 1 / k))
    np.testing.assert_array_less(np.abs(g_x - ((a - 1) / x - (b - 1) / (1 - x))),
                                 e * (a + 1) / x + e * (b + 1) / (1 - x))


@pytest.mark.parametrize("bad_x", [0.0, 1.0, -0.2, 1.5, np.nan])
def test_beta_refuses_x_outside_the_open_interval(bad_x):
    x = np.full((2, 3), 0.5, np.float32)
    x[1, 2] = bad_x
    with pytest.raises(ValueError, match=r"`x` must lie in the open interval \(0, 1\)") as info:
        lik.beta_log_likelihood(x, np.full((2, 3), 0.5, np.float32), 2.0)
    assert "dequantise" in str(info.value) and "x * (1 - 2 * eps) + eps" in str(info.value)


@pytest.mark.parametrize("arg, bad, match", [
    ("mean", 0.0, "`mean`"), ("mean", 1.0, "`mean`"), ("mean", 1.2, "`mean`"),
    ("concentration", 0.0, "`concentration`"), ("concentration", -1.0, "`concentration`"),
    ("concentration", np.inf, "`concentration`"), ("concentration", np.nan, "`concentration`"),
])
def test_beta_refuses_bad_mean_and_concentration(arg, bad, match):
    args = {"x": np.full((2, 3), 0.3, np.float32), "mean": np.full((2, 3), 0.4, np.float32),
            "concentration": np.full((3,), 5.0, np.float32)}
    args[arg].reshape(-1)[-1] = bad
    with pytest.raises(ValueError, match=match):
        lik.beta_log_likelihood(args["x"], args["mean"], args["concentration"])


# --------------------------------------------------------------------------- NaN under jit


def _grad_of_first_example(fn, *args):
    """Gradients of example 0's value w.r.t. every argument: must be finite everywhere."""
    return jax.jit(jax.grad(lambda *a: fn(*a)[0], argnums=tuple(range(len(args)))))(*args)


@pytest.mark.parametrize("name", ["laplace_log_likelihood", "logistic_log_likelihood"])
def test_invalid_scale_under_jit_is_nan_for_that_example_only(name):
    fn = getattr(lik, name)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    loc = rng.normal(size=(5, 4)).astype(np.float32)
    scale = np.array([[0.5], [-1.0], [0.0], [np.inf], [np.nan]], np.float32)  # per example
    out = np.asarray(jax.jit(fn)(x, loc, scale))
    assert np.isfinite(out[0]) and np.all(np.isnan(out[1:])), out
    terms = (laplace_terms if name.startswith("laplace") else logistic_terms)(
        f64(x[:1]), f64(loc[:1]), 0.5)
    assert_within_terms(out[:1], getattr(J, name)(x[:1], loc[:1], 0.5), 2 * terms, np.float32,
                        e=E_LOC_SCALE, event_ndims=1)
    for g in _grad_of_first_example(fn, x, loc, scale):
        assert np.all(np.isfinite(np.asarray(g))), name
    # The learned-scale form: a non-finite log-scale gives a non-finite value, there only.
    log_scale = np.array([[0.0], [np.inf], [-np.inf], [np.nan], [1.0]], np.float32)
    out = np.asarray(jax.jit(getattr(lik, name + "_from_log_scale"))(x, loc, log_scale))
    assert np.all(np.isfinite(out[[0, 4]])) and not np.any(np.isfinite(out[1:4])), out


def test_invalid_beta_values_under_jit_are_nan_for_those_examples_only():
    # Rows of 9 elements as examples: row 1 has a bare 0 pixel (not dequantised), row 2 a mean
    # of 1, row 3 a concentration <= 0. Only those rows are NaN; row 0 equals the valid
    # computation, and the gradient of the valid values is finite everywhere.
    x, mean, kappa = _beta_inputs(np.dtype("float32"))
    valid_values, _ = beta_values_and_grads(x.ravel(), mean.ravel(), kappa.ravel())
    x[1, 4], mean[2, 5], kappa[3, 6] = 0.0, 1.0, -2.0
    values, grads = beta_values_and_grads(x.ravel(), mean.ravel(), kappa.ravel())
    per_example = f64(values).reshape(4, 9).sum(axis=1)
    assert np.isfinite(per_example[0]) and np.all(np.isnan(per_example[1:])), per_example
    np.testing.assert_array_equal(f64(values).reshape(4, 9)[0],
                                  f64(valid_values).reshape(4, 9)[0])
    assert np.sum(np.isnan(f64(values))) == 3
    for g in grads:
        assert np.all(np.isfinite(f64(g)))


# --------------------------------------------------------------------------- soft clipping


def test_soft_clip_log_scale_is_smooth_bounded_and_near_identity(dtype):
    # Reference: min + softplus(d), d = log_scale - min, as np.logaddexp(0, d) (float64), and
    # its derivative sigmoid(d) = scipy.special.expit(d). Tolerance: d = log_scale - min is
    # exact here (multiples of 1/2), softplus rounds at a few u, the sum at u: 4 eps (|min| +
    # |log_scale| + softplus(d)). jax.nn.softplus differentiates as exp(d - softplus(d)), so
    # the exponent's rounding, u |d|, is a relative error of the slope: 4 eps (1 + |d|).
    min_log_scale = dtype.type(-6.0)
    log_scale = np.concatenate([np.linspace(-46.0, 34.0, 161), [-6.0, -1.0]]).astype(dtype)
    d = f64(log_scale) - f64(min_log_scale)
    got = f64(J.soft_clip_log_scale(log_scale, min_log_scale))
    softplus = np.logaddexp(0.0, d)
    np.testing.assert_array_less(np.abs(got - (f64(min_log_scale) + softplus)),
                                 4 * eps(dtype) * (6.0 + np.abs(f64(log_scale)) + softplus))
    assert np.all(got >= -6.0)
    far_above = d >= 5
    assert np.all(got[far_above] - f64(log_scale)[far_above] < 0.0068)
    grad = f64(jax.jit(jax.vmap(jax.grad(lambda ls: lik.soft_clip_log_scale(ls, -6.0))))(
        log_scale))
    assert_rtol(grad, special.expit(d), 4 * eps(dtype) * (1 + np.abs(d)))
    assert np.all(grad > 0)  # down to d = -40: sigmoid = 4e-18, where a hard floor gives 0
    hard = f64(jax.vmap(jax.grad(lambda ls: jnp.maximum(ls, -6.0)))(log_scale))
    assert np.all(hard[d < 0] == 0)

    # Per-pixel bounds broadcast; composed with a learned-sigma Gaussian, a collapsed head
    # (log sigma = -1e3) gives the likelihood at log sigma = min, finite, with finite gradients.
    per_pixel = J.soft_clip_log_scale(np.zeros((2, 3), dtype), np.array([-1.0, 0.0, 1.0], dtype))
    assert per_pixel.shape == (2, 3)
    x = np.linspace(0.1, 0.9, 6).reshape(2, 3).astype(dtype)

    def clipped_nll(ls):
        return -jnp.sum(lik.gaussian_log_likelihood_from_log_sigma(
            x, x + 0.01, lik.soft_clip_log_scale(ls, -6.0)))

    value, grad = jax.jit(jax.value_and_grad(clipped_nll))(dtype.type(-1e3))
    assert np.isfinite(float(value)) and np.isfinite(float(grad))
    expected = -np.sum(stats.norm.logpdf(f64(x), f64(x + 0.01), np.exp(-6.0)))
    np.testing.assert_allclose(float(value), expected, rtol=64 * eps(dtype))


# --------------------------------------------------------------------------- bad inputs

X = np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(3, 5)
X01 = np.linspace(0.1, 0.9, 15, dtype=np.float32).reshape(3, 5)
BAD_INPUTS = [
    # (function, args, kwargs, the argument the error must name)
    (lik.laplace_log_likelihood, (X, X, -1.0), {}, "`scale`"),
    (lik.laplace_log_likelihood, (X, X, 0.0), {}, "`scale`"),
    (lik.laplace_log_likelihood, (X, X, np.inf), {}, "`scale`"),
    (lik.laplace_log_likelihood, (X, X, True), {}, "`scale`"),
    (lik.laplace_log_likelihood, (X, X, np.ones(3, np.float32)), {}, "`scale`"),
    (lik.laplace_log_likelihood, (np.arange(15).reshape(3, 5), X, 1.0), {}, "`x`"),
    (lik.laplace_log_likelihood, (np.where(X > 0, np.nan, X), X, 1.0), {}, "`x`"),
    (lik.laplace_log_likelihood, (X, X[0], 1.0), {}, "`loc`"),
    (lik.laplace_log_likelihood, (X, X[:, :2], 1.0), {}, "`loc`"),
    (lik.laplace_log_likelihood, (X, X, 1.0), {"event_ndims": 3}, "`event_ndims`"),
    (lik.laplace_log_likelihood_from_log_scale, (X, X, np.inf), {}, "`log_scale`"),
    (lik.laplace_log_likelihood_from_log_scale, (X, X.astype(np.int32), 0.0), {}, "`loc`"),
    (lik.logistic_log_likelihood, (X, X, -1.0), {}, "`scale`"),
    (lik.logistic_log_likelihood, (X, X[0], 1.0), {}, "`loc`"),
    (lik.logistic_log_likelihood, (X.astype(np.int32), X, 1.0), {}, "`x`"),
    (lik.logistic_log_likelihood_from_log_scale, (X, X, np.nan), {}, "`log_scale`"),
    (lik.logistic_log_likelihood_from_log_scale, (X, X, np.ones((2, 5), np.float32)), {},
     "`log_scale`"),
    (lik.mae, (X.astype(np.int32), X), {}, "`x`"),
    (lik.sae, (X, X[0]), {}, "`loc`"),
    (lik.optimal_laplace_scale, (X, X[:, :1, None]), {}, "`loc`"),
    (lik.laplace_log_likelihood_optimal_scale, (X, X), {"axis": "all"}, "`axis`"),
    (lik.beta_log_likelihood, (X01.astype(np.int32), X01, 2.0), {}, "`x`"),
    (lik.beta_log_likelihood, (X01, X01[0], 2.0), {}, "`mean`"),
    (lik.beta_log_likelihood, (X01, X01, np.ones(4, np.float32)), {}, "`concentration`"),
    (lik.soft_clip_log_scale, (np.arange(3), -6.0), {}, "`log_scale`"),
    (lik.soft_clip_log_scale, (X, np.nan), {}, "`min_log_scale`"),
    (lik.soft_clip_log_scale, (X, np.ones(4, np.float32)), {}, "`min_log_scale`"),
    (lik.soft_clip_log_scale, (np.array([np.inf], np.float32), -6.0), {}, "`log_scale`"),
]


@pytest.mark.parametrize("fn, args, kwargs, name", BAD_INPUTS,
                         ids=[f"{case[0].__name__}-{case[3]}-{i}"
                              for i, case in enumerate(BAD_INPUTS)])
def test_bad_inputs_raise_naming_the_argument(fn, args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fn(*args, **kwargs)


# --------------------------------------------------------------------------- low precision

# bfloat16, the training dtype; float16 goes through the same _promote (its plumbing and
# ranges are tested for the Gaussian and Bernoulli in tests/test_mixed_precision.py).
LOW = {"bfloat16": jnp.bfloat16}
_rng = np.random.default_rng(10)
MODERATE = {
    "x": _rng.normal(size=(3, 5)),
    "loc": _rng.normal(size=(3, 5)),
    "scale": _rng.uniform(0.1, 2.0, size=(5,)),
    "log_scale": _rng.uniform(-2.0, 1.0, size=(3, 5)),
    "x01": _rng.uniform(0.05, 0.95, size=(3, 5)),
    "mean01": _rng.uniform(0.1, 0.9, size=(3, 5)),
    "concentration": _rng.uniform(1.0, 30.0, size=(3, 1)),
    "min_log_scale": np.array(-1.0),
}
LOW_CASES = {
    "laplace_log_likelihood": (lik.laplace_log_likelihood, ("x", "loc", "scale")),
    "laplace_log_likelihood_from_log_scale": (
        lik.laplace_log_likelihood_from_log_scale, ("x", "loc", "log_scale")),
    "optimal_laplace_scale[example]": (lik.optimal_laplace_scale, ("x", "loc")),
    "optimal_laplace_scale[batch]": (
        functools.partial(lik.optimal_laplace_scale, axis="batch"), ("x", "loc")),
    "laplace_log_likelihood_optimal_scale[example]": (
        lik.laplace_log_likelihood_optimal_scale, ("x", "loc")),
    "laplace_log_likelihood_optimal_scale[batch]": (
        functools.partial(lik.laplace_log_likelihood_optimal_scale, axis="batch"), ("x", "loc")),
    "mae": (lik.mae, ("x", "loc")),
    "sae": (lik.sae, ("x", "loc")),
    "logistic_log_likelihood": (lik.logistic_log_likelihood, ("x", "loc", "scale")),
    "logistic_log_likelihood_from_log_scale": (
        lik.logistic_log_likelihood_from_log_scale, ("x", "loc", "log_scale")),
    "beta_log_likelihood": (lik.beta_log_likelihood, ("x01", "mean01", "concentration")),
    "soft_clip_log_scale": (lik.soft_clip_log_scale, ("log_scale", "min_log_scale")),
}


def _values_and_grads(inputs):
    """Every case's value and gradient (w.r.t. every input) in one jitted program."""
    out = {}
    for name, (fn, names) in LOW_CASES.items():
        args = [inputs[n] for n in names]
        total = lambda *a, fn=fn: jnp.sum(fn(*a))  # noqa: E731
        out[name] = (fn(*args), jax.grad(total, argnums=tuple(range(len(args))))(*args))
    return out


VALUES_AND_GRADS = jax.jit(_values_and_grads)


@pytest.mark.parametrize("low_name", LOW)
def test_low_precision_inputs_compute_in_float32_with_gradients_in_the_input_dtype(low_name):
    low = LOW[low_name]
    inputs_low = {k: jnp.asarray(v, jnp.float32).astype(low) for k, v in MODERATE.items()}
    inputs_32 = {k: v.astype(jnp.float32) for k, v in inputs_low.items()}
    got, expected = VALUES_AND_GRADS(inputs_low), VALUES_AND_GRADS(inputs_32)
    eps_low = float(ml_dtypes.finfo(low).eps)
    tiny = float(ml_dtypes.finfo(low).smallest_subnormal)
    eps32 = eps(np.float32)
    for name, (value, grads) in got.items():
        ref_value, ref_grads = expected[name]
        assert value.dtype == jnp.float32, name
        assert value.shape == ref_value.shape, name
        ref = f64(ref_value)
        np.testing.assert_allclose(f64(value), ref, rtol=16 * eps32,
                                   atol=16 * eps32 * max(1.0, float(np.max(np.abs(ref)))),
                                   err_msg=name)
        for grad, ref_grad in zip(grads, ref_grads, strict=True):
            assert grad.dtype == low, (name, grad.dtype)
            np.testing.assert_allclose(f64(grad.astype(jnp.float32)), f64(ref_grad),
                                       rtol=eps_low, atol=tiny, err_msg=name)


def test_new_functions_document_shapes_jit_behaviour_and_dtype():
    # The contract tests/test_public_api.py applies to the exported functions, applied here
    # before export: Args / Returns with a shape, "Under jit:", the float32 result dtype.
    for name in NEW_FUNCTIONS:
        doc = inspect.getdoc(getattr(lik, name))
        assert "Under jit:" in " ".join(doc.split()), name
        args, returns = doc.split("Args:", 1)[1].split("Returns:", 1)
        assert "[" in args and "[" in returns and "float32" in returns, name


# --------------------------------------------------------------------------- Huber


@pytest.mark.parametrize("delta", [0.05, 1.0, 3.0])
def test_huber_density_integrates_to_one_and_is_the_huber_loss(delta):
    """exp(log p) integrates to 1 over the real line (scipy quad, float64), and
    -log p = huber / s + log Z with huber equal to optax's huber_loss."""
    import optax
    import scipy.integrate

    with jax.enable_x64(True):
        for s in (1e-3, 0.3, 5.0):
            def p(u, s=s):
                return float(np.exp(lik.huber_log_likelihood(
                    jnp.asarray([u]), jnp.zeros(1), s, delta=delta)))
            total = sum(scipy.integrate.quad(p, a, b, limit=200)[0]
                        for a, b in ((-np.inf, -delta), (-delta, delta), (delta, np.inf)))
            assert total == pytest.approx(1.0, abs=1e-9), (delta, s)
    x = jax.random.uniform(jax.random.key(0), (4, 7))
    mean = jax.random.normal(jax.random.key(1), (4, 7))
    reference = np.sum(optax.huber_loss(mean, x, delta=delta), -1)
    np.testing.assert_allclose(lik.huber(x, mean, delta=delta), reference, rtol=2e-6)
    ll = lik.huber_log_likelihood(x, mean, 0.2, delta=delta)
    expected = -reference / 0.2 - 7 * lik.huber_log_normalizer(0.2, delta)
    np.testing.assert_allclose(ll, expected, rtol=2e-6)


def test_huber_bad_inputs_are_named_and_nan_under_jit():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="delta"):
        lik.huber(x, x, delta=0.0)
    with pytest.raises(ValueError, match="scale"):
        lik.huber_log_likelihood(x, x, -1.0)
    scale = jnp.array([[0.1], [-0.1]])
    out = jax.jit(lambda s: lik.huber_log_likelihood(x, x, s))(scale)
    assert np.isfinite(out[0]) and np.isnan(out[1])
