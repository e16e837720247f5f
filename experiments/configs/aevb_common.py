"""The AEVB paper's shared set-up (section 5, appendix C), applied by the aevb_* configs."""

import ml_collections

from experiments.configs import default


def aevb_config(arg: str | None, *, dataset: str, likelihood: str, hidden: int,
                num_train: int, num_epochs: int, eval_every: int) -> ml_collections.ConfigDict:
    """Paper set-up; ``arg`` is 'smoke' (tiny), a latent size ('3', '20', ...) or None (20)."""
    config = default.get_config("smoke" if arg == "smoke" else None)
    config.dataset = dataset
    config.likelihood = likelihood
    config.hidden = hidden
    config.latent = 20
    config.init_scale = 0.01  # N(0, 0.01^2) weights
    config.optimizer = "adagrad"
    config.learning_rate = 0.02  # chosen from {0.01, 0.02, 0.1} in the paper
    config.weight_decay = 1.0 / num_train  # the N(0, I) prior, per datapoint
    config.batch_size = 100  # M
    config.num_samples = 1  # L
    config.num_epochs = num_epochs
    config.eval_every_epochs = eval_every
    config.checkpoint_every_epochs = eval_every
    if arg == "smoke":
        config.hidden = 16
        config.num_epochs = 2
        config.eval_every_epochs = 1
        config.checkpoint_every_epochs = 1
    elif arg not in (None, ""):
        config.latent = int(arg)
    return config
