"""Gradient-equivalence sweep: one fused jit(vmap) against a loop of per-sigma calls and torch.func.

    python -m benchmarks.gradient_sweep [--sigmas 64] [--samples 16] [--batch 100] [--dims 784]
                                        [--decoders mlp linear] [--sigma-chunk 8] [--repeats 3]
                                        [--threads N] [--no-torch] [--smoke] [--out PATH]

The computation is :func:`vaejax.equivalence.compare_gradients`: grad(-log N) against
D/(2 sigma^2) grad(MSE), grad(SSE)/(2 sigma^2) and grad(SSE/2)/sigma^2, every parameter,
over S sigmas x L latent samples on a [B, D] batch (default 64 x 16 x 100 x 784). Sides:

* ``fused``: ONE ``jax.jit(compare_gradients)`` call, sigma and samples vmapped;
* ``fused_chunked``: the same call with ``sigma_chunk_size`` (``lax.map`` over chunks);
* ``loop``: a Python loop over the sigmas calling the same jitted function on one sigma
  (the samples still vmapped inside each call), blocking once at the end;
* ``torch_func``: the same computation in PyTorch, ``torch.func.vmap`` + ``grad`` over
  sigmas and samples (``benchmarks/torch_vae.py``), checked to give the same ratios.

Decoders: ``mlp`` is vaejax's Gaussian decoder at AEVB's MNIST size (Z=20 -> 500 tanh ->
D); ``linear`` is the README tour's ``z @ W`` (W [Z, D]), where a call does little work
and per-call overhead dominates. Writes benchmarks/results/gradient_sweep.json.
"""

from __future__ import annotations

import argparse
import math
import resource

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from vaejax.equivalence import compare_gradients
from vaejax.models import Decoder

LATENT = 20
HIDDEN = 500

_compare = jax.jit(compare_gradients, static_argnames=("decode_fn", "event_ndims",
                                                       "sigma_chunk_size"))


def _problem(decoder: str, args):
    keys = jax.random.split(jax.random.key(0), 4)
    latent, hidden = (2, 8) if args.smoke else (LATENT, HIDDEN)
    x = jax.random.uniform(keys[0], (args.batch, args.dims))
    latents = jax.random.normal(keys[1], (args.samples, args.batch, latent))
    sigmas = jnp.logspace(-3, 2, args.sigmas)
    if decoder == "mlp":
        module = Decoder(hidden=hidden, output_dim=args.dims, likelihood="gaussian_fixed")
        params = module.init(keys[2], jnp.zeros((1, latent)))

        def decode(p, z):
            return module.apply(p, z)["mean"]
    elif decoder == "linear":
        params = 0.1 * jax.random.normal(keys[2], (latent, args.dims))

        def decode(p, z):
            return z @ p
    else:
        raise ValueError(f"unknown decoder {decoder!r}; expected 'mlp' or 'linear'.")
    return decode, params, latents, x, sigmas, latent, hidden


def _torch_model(torch, decoder, params, latent, hidden, dims):
    from benchmarks import torch_vae

    if decoder == "mlp":
        return torch_vae.decoder_from_flax(params, latent, hidden, dims)
    return torch_vae.LinearDecoder(np.asarray(params))


def bench_decoder(decoder: str, args, torch) -> dict:
    decode, params, latents, x, sigmas, latent, hidden = _problem(decoder, args)
    num_sigmas = int(sigmas.shape[0])
    chunk = min(args.sigma_chunk, num_sigmas)
    results = {}

    def fused():
        results["fused"] = common.block(_compare(decode, params, latents, x, sigmas))

    def fused_chunked():
        common.block(_compare(decode, params, latents, x, sigmas, sigma_chunk_size=chunk))

    def loop():
        reports = [_compare(decode, params, latents, x, sigmas[i:i + 1])
                   for i in range(num_sigmas)]
        common.block(reports)

    sides = {"fused": fused, "fused_chunked": fused_chunked, "loop": loop}
    agreement = math.nan
    if torch is not None:
        from benchmarks.torch_vae import compare_gradients as torch_compare

        model = _torch_model(torch, decoder, params, latent, hidden, args.dims)
        x_t = torch.from_numpy(np.asarray(x))
        latents_t = torch.from_numpy(np.asarray(latents))
        sigmas_t = torch.from_numpy(np.asarray(sigmas))

        def torch_func():
            results["torch"] = torch_compare(model, latents_t, x_t, sigmas_t)

        sides["torch_func"] = torch_func
    times = common.interleaved(sides, repeats=args.repeats, warmup=1)
    if torch is not None:
        ours = np.asarray(results["fused"].mse.ratio)
        theirs = results["torch"]["mse_ratio"].numpy()
        agreement = float(np.max(np.abs(theirs / ours - 1)))
    report = results["fused"]
    row = {"decoder": decoder, "num_sigmas": num_sigmas, "num_samples": args.samples,
           "batch_size": args.batch, "num_dims": args.dims, "sigma_chunk_size": chunk,
           "num_parameters": int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
           "max_relative_error_mse": float(np.max(report.mse.relative_error)),
           "max_relative_difference_of_mse_ratio_torch_vs_vaejax": agreement,
           "sides": {name: common.summary(seconds) for name, seconds in times.items()}}
    medians = {name: side["median_s"] for name, side in row["sides"].items()}
    best_fused = min(medians["fused"], medians["fused_chunked"])
    row["speedup_fused_vs_loop"] = common.ratio(medians["loop"], medians["fused"])
    row["speedup_best_fused_vs_loop"] = common.ratio(medians["loop"], best_fused)
    row["speedup_fused_vs_torch_func"] = common.ratio(medians.get("torch_func", math.nan),
                                                      medians["fused"])
    row["speedup_best_fused_vs_torch_func"] = common.ratio(
        medians.get("torch_func", math.nan), best_fused)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", type=int, default=64)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--dims", type=int, default=784)
    parser.add_argument("--decoders", nargs="+", default=["mlp", "linear"])
    parser.add_argument("--sigma-chunk", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="4 x 2 x 8 x 16, hidden 8 (CI)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sigmas, args.samples, args.batch, args.dims = 4, 2, 8, 16
        args.sigma_chunk = min(args.sigma_chunk, 2)
    threads = common.use_threads(args.threads)
    torch = None if args.no_torch else common.import_torch(threads)
    rows = [bench_decoder(decoder, args, torch) for decoder in args.decoders]
    record = {"threads": threads, "torch_available": torch is not None, "rows": rows,
              "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "targets": {"speedup_fused_vs_loop": 20.0, "speedup_fused_vs_torch_func": 2.0}}
    path = common.write_record("gradient_sweep", record, args.out, argv)
    print(f"gradient sweep {args.sigmas} sigmas x {args.samples} samples x batch {args.batch} x "
          f"{args.dims}; {threads} threads; medians of {args.repeats} interleaved repeats")
    common.print_table(
        ["decoder", "params", "fused s", f"chunk{rows[0]['sigma_chunk_size']} s", "loop s",
         "torch s", "loop/fused", "torch/fused"],
        [[r["decoder"], r["num_parameters"], r["sides"]["fused"]["median_s"],
          r["sides"]["fused_chunked"]["median_s"], r["sides"]["loop"]["median_s"],
          r["sides"].get("torch_func", {}).get("median_s", math.nan),
          r["speedup_best_fused_vs_loop"], r["speedup_best_fused_vs_torch_func"]]
         for r in rows])
    for r in rows:
        print(f"{r['decoder']}: fused vs loop {r['speedup_fused_vs_loop']:.2f}x "
              f"(best fused {r['speedup_best_fused_vs_loop']:.2f}x; target 20x), fused vs "
              f"torch.func {r['speedup_fused_vs_torch_func']:.2f}x (best fused "
              f"{r['speedup_best_fused_vs_torch_func']:.2f}x; target 2x); torch agrees to "
              f"{r['max_relative_difference_of_mse_ratio_torch_vs_vaejax']:.1e}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
