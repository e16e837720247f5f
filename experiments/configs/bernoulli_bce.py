"""Bernoulli, BCE and the continuous Bernoulli on the bundled digits (experiment 4).

    ./launch.sh bernoulli_bce
    ./launch.sh bernoulli_bce --config=experiments/configs/bernoulli_bce.py:smoke

The training keys are the defaults (200 hidden units, 8 latents, Adam 1e-3, batch 100,
100 epochs, seed 0); ``model.likelihood`` is set per model by the experiment.

Expected (CPU, bundled digits, D = 64; 39 s on 2 shared, busy cores): on statically
binarised digits max |log Bernoulli(x; sigmoid(l)) + BCE| = 2.6e-6 nats (1.3e-7 relative;
float32 library against a float64 reference); the integral of exp(-BCE(x; lambda)) over
[0, 1] equals 1/C(lambda) to 4.7e-16 (float64) and 7.7e-8 (float32), at most 0.5 (lambda
= 1/2). Grey digits, test ELBO / IWAE K=100 in nats: BCE model as a Bernoulli "likelihood"
-24.64 / -24.32 (no density), the same model as a continuous-Bernoulli density 54.02 / 56.33
(mean log C 1.262 nats per pixel at its outputs), the continuous-Bernoulli model
118.22 / 119.67.
"""

import ml_collections

from vaejax.config import INT, REAL, TUPLE, Field, experiment_config, positive_int, positive_real

GROUP = {
    "binary_num_epochs": Field(50, (INT,), positive_int, "the Bernoulli model on binary digits"),
    "num_lambdas": Field(199, (INT,), positive_int,
                         "lambda in [lambda_min, 1 - lambda_min], odd: includes 1/2"),
    "lambda_min": Field(1e-3, (REAL,), positive_real),
    "logit_max": Field(12.0, (REAL,), positive_real, "the logit axis of the log C panel"),
    "num_quadrature_nodes": Field(64, (INT,), positive_int, "Gauss-Legendre nodes on [0, 1]"),
    "integration_lambdas": Field((0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99), (TUPLE,),
                                 doc="also checked by scipy quad"),
    "num_images": Field(12, (INT,), positive_int),
    "num_bias_bins": Field(17, (INT,), positive_int,
                           "digits pixels take the 17 values k/16: one bin each"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = experiment_config(
        "bernoulli_bce", GROUP, arg,
        variants={
            # Smoke runs are compile-bound: the IWAE scan is skipped.
            "smoke": {"eval": {"iwae_samples": 0},
                      "bernoulli_bce": {"binary_num_epochs": 2, "num_lambdas": 33,
                                        "num_quadrature_nodes": 32, "num_images": 4}},
            "accelerator": {"data": {"dataset": "mnist"}, "model": {"hidden": 500, "latent": 20},
                            "bernoulli_bce": {"binary_num_epochs": 100, "num_bias_bins": 32}},
        })
    return config
