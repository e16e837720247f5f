"""Gradient equivalence of -log N and MSE on real digits batches (experiment 1).

    ./launch.sh gradient_equivalence
    ./launch.sh gradient_equivalence --config=experiments/configs/gradient_equivalence.py:smoke
    ./launch.sh gradient_equivalence --config.gradient_equivalence.num_samples=64

The group ``gradient_equivalence`` sets the measurement; the training keys (model size,
``model.sigma``, ``train.num_epochs``) set the decoder trained for the second part.

Expected (CPU, bundled digits, D = 64): fitted log-log slope of the gradient ratio
-2 to within 1e-5, cosine >= 1 - 1e-6 and relative error <= 1e-5 in float32,
<= 1e-12 in float64, for every sigma in [1e-3, 1e2] and every sample; the same for the
L-sample estimator (L = 1..64), a trained decoder and the encoder's reparameterised
path, while the full -ELBO gradient of the encoder departs from D/(2 sigma^2) once the
KL gradient is comparable (sigma around 0.1-1 here). With the decoder computed in bfloat16
(``gradient_equivalence.bfloat16``) the identity holds only to bfloat16 rounding: relative
errors of a few 1e-3 (eps = 7.8e-3).
"""

import ml_collections

from vaejax.config import (
    BOOL,
    INT,
    REAL,
    TUPLE,
    Field,
    experiment_config,
    positive_int,
    positive_real,
)

GROUP = {
    "batch_size": Field(100, (INT,), positive_int, "digits in the measured batch"),
    "num_sigmas": Field(64, (INT,), positive_int),
    "sigma_min": Field(1e-3, (REAL,), positive_real),
    "sigma_max": Field(1e2, (REAL,), positive_real),
    "num_samples": Field(16, (INT,), positive_int, "L latent samples per sigma: a vmapped axis"),
    "float64": Field(True, (BOOL,), doc="repeat the measurement in float64"),
    "bfloat16": Field(True, (BOOL,), doc="repeat it with the decoder computed in bfloat16"),
    "estimator_samples": Field((1, 4, 16, 64), (TUPLE,), doc="L of the L-sample estimator"),
    "num_repeats": Field(4, (INT,), positive_int, "independent draws per estimator L"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = experiment_config(
        "gradient_equivalence", GROUP, arg,
        training={"model": {"likelihood": "gaussian_fixed", "sigma": 0.1, "hidden": 200,
                            "latent": 8},
                  "train": {"num_epochs": 30, "batch_size": 100}},
        variants={
            "smoke": {"model": {"hidden": 16}, "train": {"num_epochs": 1},
                      "gradient_equivalence": {"batch_size": 20, "num_sigmas": 8,
                                               "num_samples": 2, "estimator_samples": (1, 2),
                                               "num_repeats": 2}},
            "accelerator": {"data": {"dataset": "mnist"}, "model": {"hidden": 500, "latent": 20},
                            "train": {"num_epochs": 50},
                            "gradient_equivalence": {"num_sigmas": 256, "num_samples": 64,
                                                     "estimator_samples": (1, 4, 16, 64, 256),
                                                     "num_repeats": 16}},
        })
    return config
