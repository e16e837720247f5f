"""The dictionary of reconstruction losses (experiment 8): each loss, its likelihood, the
constant it drops, its scale <-> beta map and the measured gradient identity.

    ./launch.sh loss_dictionary
    ./launch.sh loss_dictionary --config=experiments/configs/loss_dictionary.py:smoke

Expected (CPU, bundled digits, D = 64, untrained decoder): every identity holds to float
rounding (max relative error <= 1e-5 in float32, <= 1e-12 in float64) except BCE on grey
levels, whose gradient differs from that of the continuous Bernoulli's -log p by the
gradient of the missing log C(lambda) term (relative error of order 1).
"""

import ml_collections

from vaejax.config import (
    BOOL,
    INT,
    REAL,
    Field,
    experiment_config,
    positive_int,
    positive_real,
)

GROUP = {
    "batch_size": Field(100, (INT,), positive_int, "digits in the measured batch"),
    "num_scales": Field(16, (INT,), positive_int, "sigma, b or s values: a vmapped axis"),
    "scale_min": Field(1e-2, (REAL,), positive_real),
    "scale_max": Field(10.0, (REAL,), positive_real),
    "num_samples": Field(4, (INT,), positive_int, "L latent samples per scale"),
    "huber_delta": Field(0.1, (REAL,), positive_real, "the Huber threshold"),
    "num_levels": Field(17, (INT,), positive_int, "grey levels of the data (digits: 17)"),
    "float64": Field(True, (BOOL,), doc="repeat every measurement in float64"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = experiment_config(
        "loss_dictionary", GROUP, arg,
        training={"model": {"hidden": 200, "latent": 8}},
        variants={"smoke": {"model": {"hidden": 16},
                            "loss_dictionary": {"batch_size": 20, "num_scales": 4,
                                                "num_samples": 2}}})
    return config
