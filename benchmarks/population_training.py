"""Population training: P models in one vmapped jitted epoch against one model at a time.

    python -m benchmarks.population_training [--sizes 1 4 16 64] [--repeats 5] [--smoke]

Both sides run in this one process, alternating, so machine noise hits them alike.
Prints the median seconds per epoch, model-steps/s and the ratio to P sequential
single-model epochs; writes benchmarks/results/population_training.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import default
from vaejax import data as data_lib
from vaejax.io import write_json
from vaejax.train import Trainer, make_hyper, make_model


def _trainer(size: int, config):
    config = config.copy_and_resolve_references()
    config.population.sigma = tuple(np.logspace(-1.5, 0, size).tolist()) if size > 1 else None
    dataset = data_lib.load_dataset(config.dataset)
    trainer = Trainer(make_model(config, dataset.num_dims), config, dataset.num_dims)
    hyper = make_hyper(config)
    return trainer, hyper, jnp.asarray(dataset.train)


class _Runner:
    """A compiled epoch and its live state; ``time_one()`` times one more epoch."""

    def __init__(self, trainer, hyper, train_data):
        self.epoch = jax.jit(trainer.epoch, donate_argnums=(0,))
        self.hyper, self.data, self.index = hyper, train_data, 0
        self.state = jax.jit(trainer.init)(hyper)
        self.time_one()  # compile

    def time_one(self) -> float:
        tic = time.perf_counter()
        self.state, metrics = self.epoch(self.state, self.data, jnp.int32(self.index), self.hyper)
        jax.block_until_ready(metrics)
        self.index += 1
        return time.perf_counter() - tic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model (CI smoke run)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "population_training.json"))
    args = parser.parse_args(argv)
    config = default.get_config("smoke" if args.smoke else None)
    steps = data_lib.num_batches(1500, config.batch_size)
    single = _Runner(*_trainer(1, config))
    results = {"device": str(jax.devices()[0]), "machine": platform.machine(),
               "steps_per_epoch": steps, "batch_size": config.batch_size,
               "hidden": config.hidden, "latent": config.latent, "rows": []}
    print(f"{'P':>4} {'s/epoch(P)':>11} {'s/epoch(1)':>11} {'model-steps/s':>14} {'ratio':>7}")
    for size in args.sizes:
        pop = _Runner(*_trainer(size, config))
        # Alternate the two sides repeat by repeat so both see the same machine load.
        pop_times, one_times = [], []
        for _ in range(args.repeats):
            pop_times.append(pop.time_one())
            one_times.append(single.time_one())
        pop_s, one_s = float(np.median(pop_times)), float(np.median(one_times))
        ratio = (size * one_s) / pop_s  # P sequential single-model epochs vs one population epoch
        row = {"population": size, "seconds_per_epoch": pop_s, "single_seconds_per_epoch": one_s,
               "model_steps_per_second": size * steps / pop_s,
               "single_model_steps_per_second": steps / one_s, "speedup_vs_sequential": ratio}
        results["rows"].append(row)
        print(f"{size:>4} {pop_s:>11.4f} {one_s:>11.4f} {row['model_steps_per_second']:>14.0f} "
              f"{ratio:>6.2f}x")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
