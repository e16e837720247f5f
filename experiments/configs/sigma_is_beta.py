"""Sigma is beta: -log N + KL, SSE + 2 sigma^2 KL and MSE + (2 sigma^2 / D) KL train identically.

    ./launch.sh sigma_is_beta
    ./launch.sh sigma_is_beta --config=experiments/configs/sigma_is_beta.py:smoke
    python -m experiments.sigma_is_beta --workdir=results/sib --config.sigmas='(0.1,)'

Three copies of one VAE (same initial weights, same batches, same latent noise) are
trained side by side on the bundled digits (D = 64) with (a) the true -ELBO of a
Gaussian decoder with fixed sigma, (b) SSE + beta KL with beta = 2 sigma^2 and (c)
MSE + (2 sigma^2 / D) KL. Each of (b), (c) is beta_k times (a) minus a constant.

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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.dataset = "digits"
    config.seed = 0  # initial weights, data order and latent noise: shared by (a), (b), (c)
    config.hidden = 100
    config.latent = 8
    config.batch_size = 100
    config.num_steps = 600  # 40 epochs of the 1500 digits training images
    config.sigmas = (0.03, 0.1, 0.3)  # the fixed decoder sigmas: a vmapped axis
    # SGD rate of objective (b) "SSE + beta KL", whose gradient scale does not depend on
    # sigma. Rescaled SGD gives objective k the rate lr_a / beta_k with lr_a = 2 sigma^2
    # times this ((a): 2 sigma^2 * lr, (b): lr, (c): D * lr); unrescaled SGD gives all
    # three the rate lr_a of the true -ELBO.
    config.sgd_learning_rate = 0.01
    config.adam_learning_rate = 1e-3  # one shared rate: Adam is scale invariant up to eps
    config.adam_eps = 1e-8  # optax's default
    config.adam_small_eps = 1e-14  # a second Adam case: how much of its gap is eps
    config.float64 = True  # repeat rescaled SGD in float64: the gap is rounding, amplified
    if arg == "smoke":
        config.hidden = 16
        config.latent = 2
        config.num_steps = 40
        config.sigmas = (0.1,)
    elif arg == "accelerator":
        # MNIST (prepared TFDS data), AEVB-sized network, more sigmas and steps.
        config.dataset = "mnist"
        config.hidden = 500
        config.latent = 20
        config.num_steps = 6000
        config.sigmas = (0.01, 0.03, 0.1, 0.3, 1.0)
    elif arg not in (None, ""):
        raise ValueError(
            f"Unknown config variant {arg!r}; expected 'smoke', 'accelerator' or nothing.")
    return config
