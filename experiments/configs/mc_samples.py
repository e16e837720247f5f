"""How many Monte-Carlo samples L per datapoint? Gradient variance against L and batch size M.

    ./launch.sh mc_samples
    ./launch.sh mc_samples --config=experiments/configs/mc_samples.py:smoke
    python -m experiments.mc_samples --workdir=results/mc --config.num_repeats=400

For every batch size M, ``num_repeats`` draws of the ELBO gradient (a fresh random
minibatch of M digits and fresh latent noise each; every L of the grid from the same
draw) are taken in one jitted call, and the total variance E||g - E g||^2 over all
parameters is measured, at the epochs listed in ``measure_at_epochs`` (0 = untrained).
The time per training step against L is a measurement in this process (median over
epochs interleaved across L), not a test.

Expected (CPU, bundled digits, gaussian_fixed sigma = 0.1, hidden 200, 8 latents,
64 draws, seed 0; about 50 s on 2 CPU cores): after 20 epochs, at M = 100 the variance
with L = 1 is 1.18x that with L = 16; log-log slope -0.05 against L (M = 100) but -1.02
against M (L = 1); the fit Var = A (N-M)/((N-1) M) + B/(M L) puts 82% of the L = 1,
M = 100 variance in the minibatch term A. Untrained, the ratio is 8.8 and the minibatch
share 6% (the latent noise dominates). At M x L = 100, (M, L) = (100, 1) has the lowest
variance in both. A training step with L = 16 took 4.4x one with L = 1 (machine-dependent).
"""

import ml_collections

from experiments.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config("smoke" if arg == "smoke" else None)
    config.likelihood = "gaussian_fixed"
    config.sigma = 0.1
    config.num_samples = 1  # L of the warm-up training
    config.progress = False
    # The grid: every (M, L) pair is one jitted call over `num_repeats` vmapped draws.
    config.num_samples_grid = (1, 2, 4, 8, 16, 32)
    config.batch_sizes = (10, 25, 50, 100)
    config.num_repeats = 64
    config.repeat_chunk = 16  # draws per vmapped chunk (lax.map): bounds the memory
    config.measure_at_epochs = (0, 20)  # training epochs (L = 1, batch 100) before measuring
    # Timing of a training step (batch config.batch_size) with L samples: epoch time / steps,
    # median over `timing_epochs` epochs interleaved across L.
    config.timing_epochs = 7
    if arg == "smoke":
        config.num_samples_grid = (1, 4)
        config.batch_sizes = (10, 50)
        config.num_repeats = 64
        config.repeat_chunk = 32
        config.measure_at_epochs = (0, 1)
        config.timing_epochs = 2
    elif arg == "accelerator":
        # MNIST (prepared TFDS data), AEVB-sized network, a wider grid and more draws.
        config.dataset = "mnist"
        config.hidden = 500
        config.latent = 20
        config.num_samples_grid = (1, 2, 4, 8, 16, 32, 64, 128)
        config.batch_sizes = (10, 25, 50, 100, 200, 400)
        config.num_repeats = 256
        config.repeat_chunk = 64
        config.measure_at_epochs = (0, 10)
    elif arg not in (None, ""):
        raise ValueError(
            f"Unknown config variant {arg!r}; expected 'smoke', 'accelerator' or nothing.")
    return config
