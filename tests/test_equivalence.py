"""grad(-log N) = D/(2 sigma^2) grad(MSE) = grad(SSE)/(2 sigma^2) = grad(SSE/2)/sigma^2, measured.

References: the identities are closed forms (d/dmu of -log N(x; mu, sigma^2 I) is
(mu - x) / sigma^2, of MSE 2 (mu - x) / D, of SSE 2 (mu - x), so the chain rule gives the
factors for every parameter); the independent gradient reference for the linear decoder is
its analytic gradient written by hand in numpy.

Tolerances are argued from the dtype and the matmul precision. `compare_gradients` runs at
precision="highest" by default (true float32 products on every backend; the matmul
precision is checked in the jaxpr by test_precision.py). The two gradients then share the
forward pass and differ only in the scalar scaling of the backward cotangent, so they agree
to a few float32 roundings, u = 2^-24 = 6e-8 (measured on CPU: relative error 1.5e-7,
1 - cosine 3e-7, ratio 2.4e-7). FLOAT32_RTOL = 1e-5 leaves a margin of ~60x and still fails
at a TF32-like default matmul (10-bit mantissa, u = 2^-11 = 4.9e-4: 1.7e-4 measured on a
GPU), i.e. the tests assert the precision they need instead of the backend's default.
Float64: u = 1.1e-16, measured 3.4e-16; FLOAT64_RTOL = 1e-12.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax.data import load_dataset
from vaejax.elbo import reparameterize
from vaejax.equivalence import compare_gradients, log_log_slope
from vaejax.models import VAE

compare = jax.jit(compare_gradients, static_argnames=("decode_fn", "event_ndims",
                                                      "sigma_chunk_size", "precision"))
SIGMAS = np.logspace(-3, 2, 64)
FLOAT32_RTOL = 1e-5  # float32 at precision="highest": see the module docstring
FLOAT32_COSINE_TOL = 1e-6  # 1 - cosine, ~15 u at float32 (measured 3e-7)
FLOAT64_RTOL = 1e-12


def _decode(decoder_params, z):
    return _MODEL.apply({"params": {"decoder": decoder_params}}, z, method=VAE.decode)["mean"]


def _decode_full(params, z):
    return _MODEL.apply(params, z, method=VAE.decode)["mean"]


_MODEL = VAE(hidden=32, latent=4, output_dim=64, likelihood="gaussian_fixed")


@pytest.fixture(scope="module")
def digits_setup():
    x = jnp.asarray(load_dataset("digits").train[:50])
    params = _MODEL.init(jax.random.key(0), x, jax.random.key(1))
    mu, logvar = _MODEL.apply(params, x, method=VAE.encode)
    latents = reparameterize(jax.random.key(2), mu, logvar, num_samples=16)
    return params["params"]["decoder"], x, latents


def test_identities_float32_real_decoder(digits_setup):
    params, x, latents = digits_setup
    report = compare(_decode, params, latents, x, jnp.asarray(SIGMAS, jnp.float32))
    assert report.mse.ratio.shape == (64, 16)
    assert report.num_dims == 64
    for name in ("mse", "sse", "sse_half"):
        comparison = getattr(report, name)
        assert float(jnp.min(comparison.cosine)) >= 1 - FLOAT32_COSINE_TOL, name
        assert float(jnp.max(comparison.relative_error)) <= FLOAT32_RTOL, name
        np.testing.assert_allclose(comparison.ratio, comparison.factor[:, None] * np.ones((1, 16)),
                                   rtol=FLOAT32_RTOL)
        for leaf_error in comparison.per_leaf_relative_error.values():
            assert float(jnp.max(leaf_error)) <= FLOAT32_RTOL
    np.testing.assert_allclose(report.mse.factor, 64 / (2 * SIGMAS**2), rtol=1e-6)
    np.testing.assert_allclose(report.sse.factor, 1 / (2 * SIGMAS**2), rtol=1e-6)
    np.testing.assert_allclose(report.sse_half.factor, 1 / SIGMAS**2, rtol=1e-6)
    assert abs(float(log_log_slope(SIGMAS, report.mse.ratio)) + 2) < 1e-5
    assert len(report.mse.per_leaf_ratio) == 4  # hidden/out kernel and bias


def test_unused_leaves_are_nan_per_leaf_but_totals_finite(digits_setup):
    # Encoder parameters get exactly zero gradient through the decoder: their per-leaf
    # ratio is 0/0 and reported as NaN (documented), while the totals stay exact.
    decoder_params, x, latents = digits_setup
    full = _MODEL.init(jax.random.key(0), x, jax.random.key(1))
    full = {"params": {**full["params"], "decoder": decoder_params}}
    report = compare(_decode_full, full, latents[:2], x, jnp.asarray([0.5, 2.0]))
    encoder_keys = [k for k in report.mse.per_leaf_ratio if "encoder" in k]
    assert len(encoder_keys) == 6
    assert all(bool(jnp.all(jnp.isnan(report.mse.per_leaf_ratio[k]))) for k in encoder_keys)
    assert float(jnp.max(report.mse.relative_error)) <= FLOAT32_RTOL


def test_identities_float64_real_decoder(digits_setup):
    params, x, latents = digits_setup
    with jax.enable_x64(True):
        to64 = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
        report = compare(_decode, jax.tree.map(to64, params), to64(latents), to64(x),
                         to64(SIGMAS))
        assert report.mse.ratio.dtype == jnp.float64
        for name in ("mse", "sse", "sse_half"):
            comparison = getattr(report, name)
            assert float(jnp.max(comparison.relative_error)) <= FLOAT64_RTOL, name
            assert float(jnp.min(comparison.cosine)) >= 1 - FLOAT64_RTOL, name


def test_vmapped_grid_equals_python_loop(digits_setup):
    # The same float32 numbers batched differently (both at precision="highest"): a few
    # roundings (u = 6e-8) apart at most, so rtol 1e-6 (~16 u).
    params, x, latents = digits_setup
    sigmas = jnp.asarray(SIGMAS[::8], jnp.float32)
    full = compare(_decode, params, latents[:4], x, sigmas)
    for s_idx in range(len(sigmas)):
        for l_idx in range(4):
            single = compare(_decode, params, latents[l_idx : l_idx + 1], x,
                             sigmas[s_idx : s_idx + 1])
            np.testing.assert_allclose(single.mse.ratio[0, 0], full.mse.ratio[s_idx, l_idx],
                                       rtol=1e-6)
            np.testing.assert_allclose(single.nll_grad_norm[0, 0],
                                       full.nll_grad_norm[s_idx, l_idx], rtol=1e-6)


def test_sigma_chunking_matches_vmap(digits_setup):
    # As above: lax.map over chunks against one vmap, float32 at precision="highest".
    params, x, latents = digits_setup
    sigmas = jnp.asarray(SIGMAS[:12], jnp.float32)
    full = compare(_decode, params, latents[:3], x, sigmas)
    chunked = compare(_decode, params, latents[:3], x, sigmas, sigma_chunk_size=5)
    np.testing.assert_allclose(chunked.mse.ratio, full.mse.ratio, rtol=1e-6)
    np.testing.assert_allclose(chunked.sse.relative_error, full.sse.relative_error, atol=1e-6)


def test_gradient_norms_match_hand_derived_linear_decoder():
    # mean = z @ W: d(-mean_b log N)/dW = z^T (mean - x) / (sigma^2 B), d(mean_b MSE)/dW
    # = 2 z^T (mean - x) / (D B). Written by hand in numpy float64, not with jax.grad.
    # Float32 at precision="highest" against float64: inputs rounded at u = 6e-8 and sums of
    # <= 8 products, so ~1e-6 relative; rtol 1e-5. (At a TF32-like default matmul the
    # rounding of z and W to a 10-bit mantissa alone would be ~5e-4.)
    rng = np.random.default_rng(0)
    b, z_dim, d = 8, 3, 5
    w = rng.normal(size=(z_dim, d))
    z = rng.normal(size=(1, b, z_dim))
    x = rng.uniform(size=(b, d))
    sigmas = np.array([0.1, 1.0, 7.0])
    residual = z[0] @ w - x
    nll_grad = z[0].T @ residual / b  # times 1/sigma^2
    mse_grad = 2 * z[0].T @ residual / (d * b)
    report = compare(lambda p, zz: zz @ p, jnp.asarray(w, jnp.float32), jnp.asarray(z, jnp.float32),
                     jnp.asarray(x, jnp.float32), jnp.asarray(sigmas, jnp.float32))
    np.testing.assert_allclose(report.nll_grad_norm[:, 0],
                               np.linalg.norm(nll_grad) / sigmas**2, rtol=1e-5)
    np.testing.assert_allclose(report.mse.ratio[:, 0],
                               np.linalg.norm(nll_grad) / sigmas**2 / np.linalg.norm(mse_grad),
                               rtol=1e-5)


def test_metrics_detect_a_wrong_factor():
    # A decoder whose output is scaled by sigma-independent 2 still satisfies the identity;
    # but comparing against a loss with a different scale must show up as relative error:
    # the "sse" comparison uses factor 1/(2 sigma^2); SSE is D times MSE, so feeding the
    # MSE gradients' factor to SSE gradients would be off by D. Check the metric sees it.
    from vaejax.equivalence import _leaf_stats, _summarise

    g = {"w": jnp.arange(1.0, 5.0)}
    stats = _leaf_stats(g, {"w": g["w"] / 3.0}, jnp.asarray(6.0))  # true factor 3, claimed 6
    summary = _summarise(jax.tree.map(lambda a: a[None], stats), jnp.asarray([6.0]))
    np.testing.assert_allclose(summary.relative_error, [1.0], rtol=1e-6)
    np.testing.assert_allclose(summary.ratio, [3.0], rtol=1e-6)
    np.testing.assert_allclose(summary.cosine, [1.0], rtol=1e-6)


def test_log_log_slope_of_a_power_law():
    s = np.logspace(-2, 1, 20)
    assert abs(float(log_log_slope(s, 3.0 * s**-2.0)) + 2.0) < 1e-5
    assert abs(float(log_log_slope(s, s**0.5)) - 0.5) < 1e-5


@pytest.mark.parametrize("bad, match", [
    (dict(sigmas=jnp.ones((2, 2))), "sigmas"),
    (dict(latents=jnp.ones(3)), "latents"),
])
def test_bad_grid_shapes(bad, match):
    args = dict(decode_fn=lambda p, z: z @ p, params=jnp.ones((2, 3)),
                latents=jnp.ones((1, 4, 2)), x=jnp.ones((4, 3)), sigmas=jnp.ones(2))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        compare_gradients(**args)
