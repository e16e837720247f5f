"""Default training config: a Gaussian-decoder VAE on the bundled digits (CPU, ~1 minute).

    ./launch.sh train --config=experiments/configs/default.py --workdir=workdirs/default
    ./launch.sh train --config=experiments/configs/default.py:smoke --workdir=/tmp/smoke
    ./launch.sh train --config=experiments/configs/default.py --workdir=workdirs/pop \\
        --config.population.sigma='(0.05, 0.1, 0.2, 0.4)'

The keys, their meaning and their checks live in :mod:`vaejax.config` (groups ``data``,
``model``, ``train``, ``population``, ``eval``, ``checkpoint``, ``run``). Population
training: any non-empty tuple in ``config.population`` (sigma, beta, learning_rate, seed,
latent) makes a population of P members trained by one vmapped step; tuples of length 1
broadcast. Rerunning the same command resumes from the last checkpoint in the workdir.
"""

import ml_collections

from vaejax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = config_lib.parse_variant(arg, flags=("smoke",))
    config = config_lib.default_config()
    if variant.get("smoke"):
        config_lib.override(config, config_lib.SMOKE)
    return config
