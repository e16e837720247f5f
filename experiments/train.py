"""Train a VAE (or a population of VAEs) from a config file.

    python -m experiments.train --config=experiments/configs/default.py --workdir=DIR \\
        [--config.model.likelihood=bernoulli --config.population.sigma='(0.05,0.1)' ...]
    ./launch.sh train --config=experiments/configs/default.py:smoke --workdir=/tmp/smoke

Any experiment config works too (its experiment group is the experiment's, not the
training job's). Rerunning the same command resumes from the newest checkpoint in
``--workdir``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from vaejax import sharding
from vaejax.train import train_and_evaluate
from vaejax.trainer import NonFiniteLossError

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).parent / "configs" / "default.py"), "Training config.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.",
                               required=True)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax/absl INFO chatter hides the progress bar
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    sharding.maybe_initialize_distributed()
    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    for m in summary["members"]:
        print(f"[train] sigma={m['sigma']:<8.4g} beta={m['beta']:<6.3g} test ELBO "
              f"{m['test_elbo']:.2f} nats (recon {m['test_recon']:.2f}, KL {m['test_kl']:.2f}),"
              f" IWAE {m['test_iwae']:.2f}, active units {m['active_units']}")
    print(f"[train] {summary['model_steps_per_second']:.1f} model-steps/s, "
          f"{summary['examples_per_second']:.0f} examples/s; wrote {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
