"""AEVB on MNIST (Kingma & Welling 2013, section 5 and appendix C): Bernoulli MLP VAE.

    ./launch.sh train --config=experiments/configs/aevb_mnist.py --workdir=workdirs/aevb_mnist
    ./launch.sh train --config=experiments/configs/aevb_mnist.py:3 ...   # latent size 3

Set-up from the paper: one tanh hidden layer of 500 units in encoder and decoder,
Bernoulli decoder, weights from N(0, 0.01^2), Adagrad (step size from {0.01, 0.02, 0.1};
0.02 here), minibatch M = 100, L = 1, weight decay = the N(0, I) prior per datapoint.
Needs prepared TFDS data (`binarized_mnist`); 1e8 training samples = 1667 epochs of 60k.
Paper (figure 2): Nz = 20 reaches a test lower bound of about -100 nats at 1e8 samples.
"""

import ml_collections

from experiments.configs.aevb_common import aevb_config

NUM_TRAIN = 50_000  # binarized_mnist's train split, as in the paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return aevb_config(arg, dataset="binarized_mnist", likelihood="bernoulli", hidden=500,
                         num_train=NUM_TRAIN, num_epochs=2000, eval_every=50)
