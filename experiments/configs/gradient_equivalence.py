"""Gradient equivalence of -log N and MSE on real digits batches.

    ./launch.sh gradient_equivalence
    ./launch.sh gradient_equivalence --config=experiments/configs/gradient_equivalence.py:smoke

Expected (CPU, bundled digits, D = 64): fitted log-log slope of the gradient ratio
-2 to within 1e-5, cosine >= 1 - 1e-6 and relative error <= 1e-5 in float32,
<= 1e-12 in float64, for every sigma in [1e-3, 1e2] and every sample; the same for the
L-sample estimator (L = 1..64), a trained decoder and the encoder's reparameterised
path, while the full -ELBO gradient of the encoder departs from D/(2 sigma^2) once the
KL gradient is comparable (sigma around 0.1-1 here).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.dataset = "digits"
    config.seed = 0
    config.batch_size = 100
    config.hidden = 200
    config.latent = 8
    config.num_sigmas = 64
    config.sigma_min = 1e-3
    config.sigma_max = 1e2
    config.num_samples = 16  # L latent samples per sigma: a vmapped axis
    config.float64 = True  # also repeat the measurement in float64
    # The L-sample estimator (gradient of the mean over L samples), R independent draws each,
    # for the untrained decoder and one trained for `train_epochs` at sigma = train_sigma.
    config.estimator_samples = (1, 4, 16, 64)
    config.num_repeats = 4
    config.train_epochs = 30
    config.train_sigma = 0.1
    if arg == "smoke":
        config.batch_size = 20
        config.hidden = 16
        config.num_sigmas = 8
        config.num_samples = 2
        config.estimator_samples = (1, 2)
        config.num_repeats = 2
        config.train_epochs = 1
    elif arg == "accelerator":
        # MNIST (prepared TFDS data), the AEVB network, 256 sigmas x 64 samples per call.
        config.dataset = "mnist"
        config.hidden = 500
        config.latent = 20
        config.num_sigmas = 256
        config.num_samples = 64
        config.estimator_samples = (1, 4, 16, 64, 256)
        config.num_repeats = 16
        config.train_epochs = 50
    elif arg not in (None, ""):
        raise ValueError(
            f"Unknown config variant {arg!r}; expected 'smoke', 'accelerator' or nothing.")
    return config
