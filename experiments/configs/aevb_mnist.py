"""AEVB on MNIST (Kingma & Welling 2013, section 5 and appendix C): Bernoulli MLP VAE.

    ./launch.sh train --config=experiments/configs/aevb_mnist.py --workdir=workdirs/aevb_mnist
    ./launch.sh train --config=experiments/configs/aevb_mnist.py:3 ...   # latent size 3
    python -m experiments.aevb --config=experiments/configs/aevb_mnist.py \\
        --config.data.data_dir=/path/to/tensorflow_datasets --workdir=results/aevb_mnist

Set-up from the paper: one tanh hidden layer of 500 units in encoder and decoder,
Bernoulli decoder, weights from N(0, 0.01^2), Adagrad (step size from {0.01, 0.02, 0.1};
0.02 for ``experiments.train``, chosen by ``experiments.aevb``), minibatch M = 100, L = 1,
weight decay = the N(0, I) prior per datapoint.
Needs prepared TFDS data (`binarized_mnist`); 1e8 training samples = 2000 epochs of 50k.
``experiments.aevb`` trains Nz in {2, 3, 5, 10, 20, 200} with AEVB and {3, 5, 10, 20, 200}
with wake-sleep up to 1e8 samples, plus figure 3 (Nz = 3, 100 hidden units, 1000 and 50000
training examples, IWAE with K = 5000 on 1000 examples): an accelerator job.
Paper (figure 2): Nz = 20 reaches a test lower bound of about -100 nats at 1e8 samples
(wake-sleep about -104).
"""

import ml_collections

from experiments.configs.aevb_common import add_panel, aevb_config

NUM_TRAIN = 50_000  # binarized_mnist's train split, as in the paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config, _ = aevb_config(arg, dataset="binarized_mnist", likelihood="bernoulli",
                            hidden=500, num_train=NUM_TRAIN, num_epochs=2000, eval_every=50)
    add_panel(config, "mnist", "MNIST")
    return config
