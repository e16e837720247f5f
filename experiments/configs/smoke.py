"""The tiny size used by tests and CPUs: the default config at its `smoke` variant.

    ./launch.sh train --config=experiments/configs/smoke.py --workdir=/tmp/smoke
"""

import ml_collections

from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    return default.get_config("smoke")
