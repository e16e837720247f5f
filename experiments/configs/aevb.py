"""``./launch.sh aevb`` and section 7 of the main report: the digits AEVB reproduction.

    ./launch.sh aevb
    python -m experiments.aevb --config=experiments/configs/aevb.py:smoke --workdir=/tmp/aevb

The same as :mod:`experiments.configs.aevb_digits`; MNIST and Frey Face use
``--config=experiments/configs/aevb_mnist.py`` / ``aevb_frey.py``.
"""

import ml_collections

from experiments.configs import aevb_digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return aevb_digits.get_config(arg)
