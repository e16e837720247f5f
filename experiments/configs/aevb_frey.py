"""AEVB on Frey Face (Kingma & Welling 2013, section 5, appendix C.2): Gaussian MLP VAE.

    ./launch.sh train --config=experiments/configs/aevb_frey.py \\
        --config.data.data_path=/path/to/frey_rawface.mat --workdir=workdirs/aevb_frey
    python -m experiments.aevb --config=experiments/configs/aevb_frey.py \\
        --config.data.data_path=/path/to/frey_rawface.mat --workdir=results/aevb_frey

Set-up from the paper: 200 tanh hidden units, Gaussian decoder with a learned
per-pixel variance (a second output head) and a sigmoid on the mean, weights from
N(0, 0.01^2), Adagrad, M = 100, L = 1, the N(0, I) prior as weight decay.
``experiments.aevb`` trains Nz in {2, 5, 10, 20} with AEVB and wake-sleep up to 1e8
samples (figures 2, 4, 5) and figure 3 on 1000 and all 1769 training faces.
Paper (figure 2): Nz = 20 reaches about +1490 (train) / +1320 (test) nats; wake-sleep
levels off near +580.
The file is public: https://cs.nyu.edu/~roweis/data/frey_rawface.mat
"""

import ml_collections

from experiments.configs.aevb_common import add_panel, aevb_config

NUM_TRAIN = 1769  # our fixed split of the 1965 faces (90 % train)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, smoke = aevb_config(arg, dataset="frey_face", likelihood="gaussian_per_pixel",
                                hidden=200, num_train=NUM_TRAIN, num_epochs=5000, eval_every=100)
    config.model.sigmoid_mean = True
    if not smoke:
        config.aevb.latent_sizes = (2, 5, 10, 20)
    add_panel(config, "frey", "Frey Face")
    return config
