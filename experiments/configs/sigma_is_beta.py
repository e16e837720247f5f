"""Sigma is beta: -log N + KL, SSE + 2 sigma^2 KL and MSE + (2 sigma^2 / D) KL train identically.

    ./launch.sh sigma_is_beta
    ./launch.sh sigma_is_beta --config=experiments/configs/sigma_is_beta.py:smoke
    python -m experiments.sigma_is_beta --workdir=results/sib --config.sigma_is_beta.sigmas='(0.1,)'

Three copies of one VAE (same initial weights, same batches, same latent noise: one
``seed``) are trained side by side on the bundled digits (D = 64) with (a) the true
-ELBO of a Gaussian decoder with fixed sigma, (b) SSE + beta KL with beta = 2 sigma^2 and
(c) MSE + (2 sigma^2 / D) KL. Each of (b), (c) is beta_k times (a) minus a constant.

Expected (CPU, default config: 3 sigmas x 600 steps, hidden 100, about 40 s on 2 cores):
the largest difference between any parameter of (a) and of (b) or (c), over all sigmas,
after 600 steps, is
  * SGD with the rates rescaled by 1/beta_k: ~6e-7 (bound 1e-6, i.e. about 1e-6 of the
    largest parameter ~0.8); float64 control: ~6e-16; (b) and (c) bitwise identical
    (D = 64 is a power of two);
  * SGD with one rate lr_a: 0.15 to 0.23, the whole distance (a) travelled;
  * Adam with one rate: ~7e-3 with optax's eps = 1e-8, which is not negligible next to
    sqrt(v) of (c) (gradients 2 sigma^2 / D = 3e-5 to 3e-3 times those of (a)); ~2e-7
    with eps = 1e-14.
With hidden = 200 training is more sensitive to rounding: the rescaled-SGD float32
differences grow from one ulp to 5e-6 to 3e-4 over 600 steps (it depends on the order
of float operations), and the float64 ones to ~3e-13: rounding carried along by training.
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
    "num_steps": Field(600, (INT,), positive_int, "40 epochs of the 1500 training digits"),
    "sigmas": Field((0.03, 0.1, 0.3), (TUPLE,), doc="the fixed decoder sigmas: a vmapped axis"),
    "sgd_learning_rate": Field(0.01, (REAL,), positive_real),
    "adam_learning_rate": Field(1e-3, (REAL,), positive_real,
                                "one shared rate: Adam is scale invariant up to eps"),
    "adam_eps": Field(1e-8, (REAL,), positive_real, "optax's default"),
    "adam_small_eps": Field(1e-14, (REAL,), positive_real,
                            "a second Adam case: how much of its gap is eps"),
    "float64": Field(True, (BOOL,), doc="repeat rescaled SGD in float64: the gap is rounding"),
    "bfloat16": Field(True, (BOOL,), doc="repeat rescaled SGD with the model in bfloat16"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = experiment_config(
        "sigma_is_beta", GROUP, arg,
        training={"model": {"likelihood": "gaussian_fixed", "hidden": 100, "latent": 8},
                  "train": {"batch_size": 100}},
        variants={
            "smoke": {"model": {"hidden": 16, "latent": 2}, "train": {"batch_size": 100},
                      "sigma_is_beta": {"num_steps": 40, "sigmas": (0.1,)}},
            "accelerator": {"data": {"dataset": "mnist"}, "model": {"hidden": 500, "latent": 20},
                            "sigma_is_beta": {"num_steps": 6000,
                                              "sigmas": (0.01, 0.03, 0.1, 0.3, 1.0)}},
        })
    return config
