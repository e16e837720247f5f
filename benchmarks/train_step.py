"""Train step of the AEVB MNIST-size VAE: vaejax against PyTorch (eager and torch.compile).

    python -m benchmarks.train_step [--batch-sizes 100 1000] [--steps 100] [--repeats 5]
                                    [--threads N] [--no-torch] [--smoke] [--out PATH]

Model: 784-500-20 MLP VAE, tanh, Bernoulli decoder, L = 1, closed-form KL, Adam 1e-3
(AEVB appendix C), on random binary data (speed does not depend on the pixel values).
vaejax is the library's own path: ``Trainer.jit.run`` (the state donated), one
``lax.fori_loop`` over ``--steps`` batches per dispatch (shuffle and gather included). PyTorch
runs the same model and loss (``benchmarks/torch_vae.py``, started from the same weights,
checked to give the same loss) with the same shuffle per epoch, eagerly and under
``torch.compile`` (loss+backward and the Adam step), with as many threads as JAX uses.
A jitted 2048^3 float32 matmul runs interleaved with them: its GFLOP/s is the machine's
measured peak, against which the train step's matmul GFLOP/s is reported.

Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments.configs import default
from vaejax import trainer as trainer_lib
from vaejax.data import Dataset
from vaejax.kl import kl_standard_normal
from vaejax.likelihoods import bernoulli_log_likelihood
from vaejax.models import VAE

PEAK_MATMUL_SIZE = 2048


def matmul_flops_per_step(batch: int, num_dims: int, hidden: int, latent: int) -> int:
    """Matmul flops of one training step (forward, and backward without dL/dx).

    Layers D->H, H->Z (twice), Z->H, H->D: 2 flops per multiply-add; the forward and the
    weight gradients cost B*in*out each, the input gradients too except for the first layer.
    """
    first = batch * num_dims * hidden
    others = batch * (2 * hidden * latent + latent * hidden + hidden * num_dims)
    return 2 * (2 * first + 3 * others)


def _config(batch_size: int, smoke: bool):
    config = default.get_config()
    config.model.likelihood = "bernoulli"
    config.model.hidden, config.model.latent = (16, 2) if smoke else (500, 20)
    config.train.batch_size = batch_size
    config.train.learning_rate = 1e-3
    config.train.optimizer = "adam"
    config.train.num_samples = 1
    config.train.weight_decay = 0.0
    return config


def same_loss_check(torch, vae: VAE, params, x: np.ndarray) -> float:
    """|loss_torch - loss_vaejax| / |loss_vaejax| on one batch with the same noise eps.

    The vaejax side is built from the library's functions (encoder, the reparameterisation
    z = mean + exp(log_var / 2) eps, decoder, Bernoulli log-likelihood, closed-form KL).
    """
    from benchmarks.torch_vae import from_flax

    eps = np.random.default_rng(1).standard_normal((x.shape[0], vae.latent)).astype(np.float32)
    mean, log_var = vae.apply(params, jnp.asarray(x), method=VAE.encode)
    z = mean + jnp.exp(0.5 * log_var) * eps
    logits = vae.apply(params, z, method=VAE.decode)["logits"]
    ours = float(-jnp.mean(bernoulli_log_likelihood(x, logits)
                           - kl_standard_normal(mean, log_var)))
    model = from_flax(params, vae.output_dim, vae.hidden, vae.latent)
    with torch.no_grad():
        theirs = float(model.loss(torch.from_numpy(x), torch.from_numpy(eps)))
    return abs(ours - theirs) / abs(ours)


def bench_batch_size(batch_size: int, args, torch) -> dict:
    config = _config(batch_size, args.smoke)
    num_dims = 784
    steps = args.steps
    rng = np.random.default_rng(0)
    data_np = (rng.random((steps * batch_size, num_dims)) < 0.3).astype(np.float32)

    dataset = Dataset(name="synthetic", train=data_np, test=data_np[:batch_size],
                      image_shape=(28, 28), binary=True)
    trainer, members = trainer_lib.build(config, dataset)
    data = jnp.asarray(data_np)
    vaejax_epoch = common.EpochRunner(trainer, members, data)
    params0 = jax.tree.map(lambda leaf: np.asarray(leaf[0]), vaejax_epoch.state.params)

    sides = {"vaejax": vaejax_epoch}
    loss_mismatch = math.nan
    if torch is not None:
        from benchmarks.torch_vae import TorchTrainer, from_flax

        loss_mismatch = same_loss_check(torch, trainer.model, params0, data_np[:batch_size])
        data_t = torch.from_numpy(data_np)
        hidden, latent = config.model.hidden, config.model.latent
        eager = TorchTrainer(from_flax(params0, num_dims, hidden, latent), batch_size)
        sides["torch_eager"] = lambda: eager.epoch(data_t)
        if not args.no_compile:
            compiled = TorchTrainer(from_flax(params0, num_dims, hidden, latent), batch_size,
                                    compile=True)
            sides["torch_compile"] = lambda: compiled.epoch(data_t)
    peak_size = 256 if args.smoke else PEAK_MATMUL_SIZE
    sides["peak_matmul"] = common.time_large_matmul(peak_size)

    times = common.interleaved(sides, repeats=args.repeats, warmup=1)
    # Where vaejax's step spends its time, by kind of operation (one traced epoch).
    profile = {} if args.no_profile else common.profile_by_kind(vaejax_epoch, steps)
    flops_step = matmul_flops_per_step(batch_size, num_dims, config.model.hidden,
                                       config.model.latent)
    peak = 2 * peak_size**3 / float(np.median(times["peak_matmul"]))
    # XLA's own count for one step (matmuls and elementwise), for comparison.
    step_cost = jax.jit(trainer.population_step).lower(
        vaejax_epoch.state, data[:batch_size], members).compile().cost_analysis()
    xla_flops = float(step_cost.get("flops", math.nan)) if step_cost else math.nan
    row = {"batch_size": batch_size, "steps_per_dispatch": steps,
           "matmul_flops_per_step": flops_step, "xla_flops_per_step": xla_flops,
           "peak_matmul_gflops": peak / 1e9, "relative_loss_mismatch_vs_torch": loss_mismatch,
           "vaejax_profile_us_per_step": profile,
           "sides": {}}
    for name, seconds in times.items():
        if name == "peak_matmul":
            continue
        stats = common.summary(seconds)
        gflops = flops_step * steps / stats["median_s"] / 1e9
        row["sides"][name] = {**stats, "examples_per_second": steps * batch_size /
                              stats["median_s"], "matmul_gflops": gflops,
                              "fraction_of_peak": gflops * 1e9 / peak}
    ours = row["sides"]["vaejax"]["examples_per_second"]
    row["speedup_vs_torch_eager"] = common.ratio(
        ours, row["sides"].get("torch_eager", {}).get("examples_per_second", math.nan))
    row["speedup_vs_torch_compile"] = common.ratio(
        ours, row["sides"].get("torch_compile", {}).get("examples_per_second", math.nan))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per dispatch (default 100; 20 for batch >= 1000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPUs to use (default all)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-profile", action="store_true", help="skip the traced epoch")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 3 steps (CI)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    threads = common.use_threads(args.threads)
    torch = None if args.no_torch else common.import_torch(threads)
    rows = []
    for batch_size in args.batch_sizes:
        run_args = argparse.Namespace(**vars(args))
        run_args.steps = args.steps or (3 if args.smoke else (20 if batch_size >= 1000 else 100))
        rows.append(bench_batch_size(batch_size, run_args, torch))
    record = {"model": "AEVB MLP VAE 784-500-20, tanh, Bernoulli, L=1, Adam 1e-3",
              "threads": threads, "torch_available": torch is not None, "rows": rows,
              "targets": {"speedup_vs_torch_eager": 1.8, "speedup_vs_torch_compile": 1.2,
                          "fraction_of_peak_at_batch_ge_1000": 0.75}}
    if args.smoke:
        record["model"] = "smoke: 784-16-2"
    path = common.write_record("train_step", record, args.out, argv)
    print(f"train step, {record['model']}; {threads} threads (JAX and torch); "
          f"medians of {args.repeats} interleaved repeats")
    table = []
    for row in rows:
        for name, side in row["sides"].items():
            table.append([row["batch_size"], name, side["examples_per_second"],
                          side["matmul_gflops"], side["fraction_of_peak"],
                          row["speedup_vs_torch_eager"] if name == "vaejax" else "",
                          row["speedup_vs_torch_compile"] if name == "vaejax" else ""])
    common.print_table(["batch", "side", "examples/s", "GFLOP/s", "of peak", "x eager",
                        "x compile"], table)
    for row in rows:
        print(f"batch {row['batch_size']}: peak matmul {row['peak_matmul_gflops']:.1f} GFLOP/s "
              f"(jitted {PEAK_MATMUL_SIZE}^3 float32, interleaved); vaejax/torch eager "
              f"{row['speedup_vs_torch_eager']:.2f}x (target 1.8x), vaejax/torch.compile "
              f"{row['speedup_vs_torch_compile']:.2f}x (target 1.2x), vaejax at "
              f"{row['sides']['vaejax']['fraction_of_peak']:.0%} of peak")
    if not args.no_profile:
        print("vaejax step profile: microseconds per step by kind of operation (one traced epoch)")
        common.print_table(["batch", *common.OP_KINDS, "total"],
                           [[r["batch_size"], *[r["vaejax_profile_us_per_step"].get(k, 0.0)
                                                for k in common.OP_KINDS],
                             sum(r["vaejax_profile_us_per_step"].values())] for r in rows])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
