"""Bernoulli, BCE and the continuous Bernoulli on the bundled digits (experiment 4).

    ./launch.sh bernoulli_bce
    ./launch.sh bernoulli_bce --config=experiments/configs/bernoulli_bce.py:smoke

The training keys are those of ``default.py`` (200 hidden units, 8 latents, Adam 1e-3,
batch 100, 100 epochs, seed 0); ``likelihood`` is set per model by the experiment.

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

from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config("smoke" if arg == "smoke" else None)
    config.progress = False
    # (a) a Bernoulli VAE on statically binarised digits, for log p = -BCE on real outputs.
    config.binary_num_epochs = 50
    # (b) grids for log C(lambda) and the integral of exp(-BCE) over x in [0, 1].
    config.num_lambdas = 199  # lambda in [lambda_min, 1 - lambda_min], odd: includes 1/2
    config.lambda_min = 1e-3
    config.logit_max = 12.0  # the logit axis of the log C panel: [-logit_max, logit_max]
    config.num_quadrature_nodes = 64  # Gauss-Legendre nodes on [0, 1]
    config.integration_lambdas = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)  # also checked by quad
    # (c) images and the per-grey-level bias of the decoder outputs.
    config.num_images = 12
    config.num_bias_bins = 17  # digits pixels take the 17 values k/16: one bin each
    if arg == "smoke":
        config.binary_num_epochs = 2
        config.num_lambdas = 33
        config.num_quadrature_nodes = 32
        config.num_images = 4
        config.eval_iwae_samples = 0  # smoke runs are compile-bound: the IWAE scan is skipped
    elif arg == "accelerator":
        # MNIST (prepared TFDS data), AEVB-sized network.
        config.dataset = "mnist"
        config.hidden = 500
        config.latent = 20
        config.num_epochs = 100
        config.binary_num_epochs = 100
        config.num_bias_bins = 32
    elif arg not in (None, ""):
        raise ValueError(
            f"Unknown config variant {arg!r}; expected 'smoke', 'accelerator' or nothing.")
    return config
