"""AEVB on Frey Face (Kingma & Welling 2013, section 5, appendix C.2): Gaussian MLP VAE.

    ./launch.sh train --config=experiments/configs/aevb_frey.py \\
        --config.data_path=/path/to/frey_rawface.mat --workdir=workdirs/aevb_frey

Set-up from the paper: 200 tanh hidden units, Gaussian decoder with a learned
per-pixel variance (a second output head) and a sigmoid on the mean, weights from
N(0, 0.01^2), Adagrad, M = 100, L = 1, the N(0, I) prior as weight decay.
Paper (figure 2): Nz = 20 reaches about +1490 (train) / +1320 (test) nats.
The file is public: https://cs.nyu.edu/~roweis/data/frey_rawface.mat
"""

import ml_collections

from experiments.configs import default

NUM_TRAIN = 1769  # our fixed split of the 1965 faces (90 % train)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config("smoke" if arg == "smoke" else None)
    config.dataset = "frey_face"
    config.likelihood = "gaussian_per_pixel"
    config.sigmoid_mean = True
    config.hidden = 200
    config.latent = 20
    config.init_scale = 0.01
    config.optimizer = "adagrad"
    config.learning_rate = 0.02
    config.weight_decay = 1.0 / NUM_TRAIN
    config.batch_size = 100
    config.num_epochs = 5000
    config.eval_every_epochs = 100
    config.checkpoint_every_epochs = 100
    if arg == "smoke":
        config.hidden = 16
        config.num_epochs = 2
        config.eval_every_epochs = 1
        config.checkpoint_every_epochs = 1
    elif arg not in (None, ""):
        config.latent = int(arg)
    return config
