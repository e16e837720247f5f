"""The learned-variance trap: per-pixel sigma collapses on the near-constant digits pixels.

    ./launch.sh learned_variance
    ./launch.sh learned_variance --config=experiments/configs/learned_variance.py:smoke
    python -m experiments.learned_variance --workdir=results/lv --config.train.num_epochs=200

Four VAEs are trained on the bundled digits (D = 64), one engine run each: a learned
per-pixel log-sigma head (``gaussian_per_pixel``), the same head with sigma floored at
``learned_variance.min_sigma`` (the fix: the head's ``model.min_sigma`` option), one
learned shared sigma (``gaussian_shared``) and the analytic sigma* = sqrt(batch MSE)
(``gaussian_optimal``). The Adam rate drops by ``train.decay_factor`` at
``train.decay_epochs`` (an optax schedule).

Expected (CPU, default config, about 60 s): the per-pixel model's mean predicted sigma
is ~0.001 on the 3 always-zero pixels (min ~1e-3, 10 to 15 pixels below 0.01, all in the
border columns), against a median ~0.2; its test ELBO is the highest (~70 nats against
~30 for the shared and optimal sigma), and that lead comes from the collapsed pixels,
each worth ~+5 nats of log-density. With sigma floored at 0.02 the collapse and most of
the lead are gone.
"""

import ml_collections

from vaejax.config import (
    INT,
    REAL,
    Field,
    experiment_config,
    non_negative_real,
    positive_int,
    positive_real,
)

GROUP = {
    "eval_every_epochs": Field(5, (INT,), positive_int, "the training curves of the figure"),
    "min_sigma": Field(0.02, (REAL,), non_negative_real, "floor of the floored model (0: skip)"),
    "collapsed_sigma": Field(0.01, (REAL,), positive_real,
                             "'collapsed': mean predicted sigma below this"),
    "near_constant_std": Field(0.02, (REAL,), positive_real,
                               "'near-constant': training-set pixel std below this"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = experiment_config(
        "learned_variance", GROUP, arg,
        training={"model": {"hidden": 200, "latent": 8},
                  "train": {"batch_size": 100, "learning_rate": 1e-3, "num_epochs": 150,
                            "decay_epochs": (100,), "decay_factor": 0.1},
                  "eval": {"iwae_samples": 0}},
        variants={
            "smoke": {"model": {"hidden": 32, "latent": 2},
                      "train": {"num_epochs": 24, "decay_epochs": (16,), "batch_size": 100},
                      "learned_variance": {"eval_every_epochs": 4}},
            "accelerator": {"data": {"dataset": "mnist"}, "model": {"hidden": 500, "latent": 20},
                            "train": {"num_epochs": 100, "decay_epochs": (70,)},
                            "learned_variance": {"min_sigma": 1 / 255 / 12**0.5,
                                                 "collapsed_sigma": 1e-3}},
        })
    return config
