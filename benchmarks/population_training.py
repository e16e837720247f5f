"""Population training: P models in one vmapped jitted epoch against one model at a time.

    python -m benchmarks.population_training [--sizes 1 4 16 64] [--repeats 5]
                                             [--no-profile] [--smoke] [--out PATH]

The default digits model (64-200-8, Gaussian decoder with a fixed sigma per member,
batch 100, Adam): one population of P members (sigmas on a log grid) trained by ONE call
of the engine's jitted ``Trainer.run`` (a ``lax.fori_loop`` over the epoch's 15 batches,
the member step vmapped), against the same epoch of a single model. The two sides run
interleaved, repeat by repeat, so machine noise hits them alike; the ratio is P x (seconds
per single-model epoch) / (seconds per population epoch), i.e. the speed-up over P
sequential runs.

With the profile on (the default), one epoch of each size is traced with
``jax.profiler`` and the time of the compiled program's operations is summed by kind
(matrix products, elementwise fusions, random numbers, copies and transposes, the rest),
per member-step: where the time goes, and why a larger P does or does not amortise it.

Writes benchmarks/results/population_training.json.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments.configs import default
from vaejax import data as data_lib
from vaejax import trainer as trainer_lib


def _runner(size: int, config) -> common.EpochRunner:
    """A compiled epoch of a population of ``size`` (one sigma per member)."""
    config = config.copy_and_resolve_references()
    config.population.sigma = tuple(np.logspace(-1.5, 0, size).tolist()) if size > 1 else None
    dataset = data_lib.load_dataset(config.data.dataset)
    trainer, members = trainer_lib.build(config, dataset)
    return common.EpochRunner(trainer, members, jnp.asarray(dataset.train))


def profile_epoch(runner: common.EpochRunner) -> dict[str, float]:
    """Microseconds per member-step spent in each kind of operation, from one traced epoch."""
    return common.profile_by_kind(runner, runner.size * runner.steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="population sizes (default 1 4 16 64; smoke: 1 3)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-profile", action="store_true", help="skip the traced epochs")
    parser.add_argument("--smoke", action="store_true", help="tiny model (CI smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1, 3] if args.smoke else [1, 4, 16, 64])
    config = default.get_config("smoke" if args.smoke else None)
    single = _runner(1, config)
    single()  # compile
    rows = []
    for size in sizes:
        pop = _runner(size, config)
        pop()  # compile
        times = common.interleaved({"population": pop, "single": single},
                                   repeats=args.repeats, warmup=0)
        pop_s = common.summary(times["population"])
        one_s = common.summary(times["single"])
        row = {"population": size, "seconds_per_epoch": pop_s["median_s"],
               "single_seconds_per_epoch": one_s["median_s"], "population_timing": pop_s,
               "single_timing": one_s,
               "model_steps_per_second": size * pop.steps / pop_s["median_s"],
               "single_model_steps_per_second": pop.steps / one_s["median_s"],
               "speedup_vs_sequential": common.ratio(size * one_s["median_s"],
                                                     pop_s["median_s"])}
        if not args.no_profile:
            row["profile_us_per_member_step"] = profile_epoch(pop)
        rows.append(row)
    model, train = config.model, config.train
    record = {"model": f"digits {model.hidden}-{model.latent}, batch {train.batch_size}, "
                       f"{train.optimizer}, one sigma per member",
              "steps_per_epoch": single.steps, "batch_size": train.batch_size,
              "hidden": model.hidden, "latent": model.latent, "rows": rows,
              "targets": {"speedup_vs_sequential_at_16": 3.0}}
    path = common.write_record("population_training", record, args.out, argv)
    print(f"population training, {record['model']}; medians of {args.repeats} interleaved "
          "epochs (population, single, ...)")
    common.print_table(["P", "s/epoch(P)", "s/epoch(1)", "model-steps/s", "x sequential"],
                       [[r["population"], r["seconds_per_epoch"], r["single_seconds_per_epoch"],
                         r["model_steps_per_second"], r["speedup_vs_sequential"]]
                        for r in rows])
    if not args.no_profile:
        kinds = common.OP_KINDS
        print("profile: microseconds per member-step by kind of operation (one traced epoch)")
        common.print_table(["P", *kinds, "total"],
                           [[r["population"], *[r["profile_us_per_member_step"].get(k, 0.0)
                                                for k in kinds],
                             sum(r["profile_us_per_member_step"].values())] for r in rows])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
