"""How many Monte-Carlo samples L per datapoint? Gradient variance against L and batch size M.

    ./launch.sh mc_samples
    ./launch.sh mc_samples --config=experiments/configs/mc_samples.py:smoke
    python -m experiments.mc_samples --workdir=results/mc --config.mc_samples.num_repeats=400

For every batch size M, ``num_repeats`` draws of the ELBO gradient (a fresh random
minibatch of M digits and fresh latent noise each; every L of the grid from the same
draw) are taken in one jitted call, and the total variance E||g - E g||^2 over all
parameters is measured, at the epochs listed in ``measure_at_epochs`` (0 = untrained;
the warm-up training uses the training keys, L = ``train.num_samples``). The time per
training step against L is a measurement in this process (median over epochs
interleaved across L), not a test.

Expected (CPU, bundled digits, gaussian_fixed sigma = 0.1, hidden 200, 8 latents,
64 draws, seed 0; about 50 s on 2 CPU cores): after 20 epochs, at M = 100 the variance
with L = 1 is 1.18x that with L = 16; log-log slope -0.05 against L (M = 100) but -1.02
against M (L = 1); the fit Var = A (N-M)/((N-1) M) + B/(M L) puts 82% of the L = 1,
M = 100 variance in the minibatch term A. Untrained, the ratio is 8.8 and the minibatch
share 6% (the latent noise dominates). At M x L = 100, (M, L) = (100, 1) has the lowest
variance in both. A training step with L = 16 took 4.4x one with L = 1 (machine-dependent).
"""

import ml_collections

from vaejax.config import INT, TUPLE, Field, experiment_config, positive_int

GROUP = {
    "num_samples_grid": Field((1, 2, 4, 8, 16, 32), (TUPLE,), doc="the L values"),
    "batch_sizes": Field((10, 25, 50, 100), (TUPLE,), doc="the M values"),
    "num_repeats": Field(64, (INT,), lambda v: None if v >= 2 else "must be an int >= 2"),
    "repeat_chunk": Field(16, (INT,), positive_int,
                          "draws per vmapped chunk (lax.map): bounds the memory"),
    "measure_at_epochs": Field((0, 20), (TUPLE,), doc="training epochs before measuring"),
    "timing_epochs": Field(7, (INT,), positive_int),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = experiment_config(
        "mc_samples", GROUP, arg,
        training={"model": {"likelihood": "gaussian_fixed", "sigma": 0.1},
                  "train": {"num_samples": 1}},
        variants={
            "smoke": {"mc_samples": {"num_samples_grid": (1, 4), "batch_sizes": (10, 50),
                                     "repeat_chunk": 32, "measure_at_epochs": (0, 1),
                                     "timing_epochs": 2}},
            "accelerator": {"data": {"dataset": "mnist"}, "model": {"hidden": 500, "latent": 20},
                            "mc_samples": {"num_samples_grid": (1, 2, 4, 8, 16, 32, 64, 128),
                                           "batch_sizes": (10, 25, 50, 100, 200, 400),
                                           "num_repeats": 256, "repeat_chunk": 64,
                                           "measure_at_epochs": (0, 10)}},
        })
    return config
