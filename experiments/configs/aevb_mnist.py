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

from experiments.configs import default

NUM_TRAIN = 50_000  # binarized_mnist's train split, as in the paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config("smoke" if arg == "smoke" else None)
    config.dataset = "binarized_mnist"
    config.likelihood = "bernoulli"
    config.hidden = 500
    config.latent = 20
    config.init_scale = 0.01
    config.optimizer = "adagrad"
    config.learning_rate = 0.02
    config.weight_decay = 1.0 / NUM_TRAIN
    config.batch_size = 100
    config.num_samples = 1
    config.num_epochs = 2000
    config.eval_every_epochs = 50
    config.checkpoint_every_epochs = 50
    if arg == "smoke":
        config.hidden = 16
        config.num_epochs = 2
        config.eval_every_epochs = 1
        config.checkpoint_every_epochs = 1
    elif arg not in (None, ""):
        config.latent = int(arg)
    return config
