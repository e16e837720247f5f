"""Default training config: a Gaussian-decoder VAE on the bundled digits (CPU, ~1 minute).

    ./launch.sh train --config=experiments/configs/default.py --workdir=workdirs/default
    ./launch.sh train --config=experiments/configs/default.py:smoke --workdir=/tmp/smoke
    ./launch.sh train --config=experiments/configs/default.py --workdir=workdirs/pop \\
        --config.population.sigma='(0.05, 0.1, 0.2, 0.4)'

Population training: any non-empty tuple in ``config.population`` (sigma, beta,
learning_rate, seed) makes a population of P members trained by one vmapped step;
tuples of length 1 broadcast. Rerunning the same command resumes from the last
checkpoint in the workdir.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Data.
    # digits | mnist | fashion_mnist | binarized_mnist | frey_face | synthetic
    config.dataset = "digits"
    config.data_dir = config_dict.placeholder(str)  # TFDS data_dir
    config.data_path = config_dict.placeholder(str)  # frey_rawface.mat
    config.binarize = config_dict.placeholder(str)  # None | static | threshold | dynamic
    # Model.
    config.likelihood = "gaussian_fixed"
    config.sigma = 0.1  # decoder sigma for gaussian_fixed
    config.sigmoid_mean = False
    config.hidden = 200
    config.latent = 8
    config.init_scale = config_dict.placeholder(float)  # None: LeCun normal; AEVB: 0.01
    config.init_log_sigma = 0.0  # initial shared log sigma (gaussian_shared)
    # Objective and optimiser.
    config.beta = 1.0
    config.num_samples = 1  # L
    config.optimizer = "adam"  # adam | adagrad | sgd
    config.learning_rate = 1e-3
    config.weight_decay = 0.0  # coefficient of 0.5 ||theta||^2 (AEVB prior: 1 / N_train)
    config.batch_size = 100
    config.num_epochs = 100
    config.seed = 0
    # Population: non-empty tuples define P members (length 1 broadcasts).
    config.population = ml_collections.ConfigDict()
    config.population.sigma = config_dict.placeholder(tuple)
    config.population.beta = config_dict.placeholder(tuple)
    config.population.learning_rate = config_dict.placeholder(tuple)
    config.population.seed = config_dict.placeholder(tuple)
    # Evaluation, checkpoints, devices.
    config.eval_every_epochs = 10
    config.eval_iwae_samples = 100  # K for the test IWAE bound (0 disables)
    config.eval_iwae_chunk = 100
    config.checkpoint_every_epochs = 10
    config.keep_checkpoints = 2
    config.sharding = "none"  # none | population | data
    config.num_devices = config_dict.placeholder(int)  # None: all devices
    config.progress = True

    if arg == "smoke":
        config.hidden = 16
        config.latent = 2
        config.num_epochs = 3
        config.batch_size = 50
        config.eval_every_epochs = 1
        config.checkpoint_every_epochs = 1
        config.eval_iwae_samples = 8
        config.eval_iwae_chunk = 4
    elif arg not in (None, ""):
        raise ValueError(f"Unknown config variant {arg!r}; expected 'smoke' or nothing.")
    return config
