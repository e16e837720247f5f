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

from experiments.configs.aevb_common import aevb_config

NUM_TRAIN = 1769  # our fixed split of the 1965 faces (90 % train)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = aevb_config(arg, dataset="frey_face", likelihood="gaussian_per_pixel", hidden=200,
                         num_train=NUM_TRAIN, num_epochs=5000, eval_every=100)
    config.sigmoid_mean = True
    return config
