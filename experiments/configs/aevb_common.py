"""The AEVB paper's shared set-up (section 5, appendix C), applied by the aevb_* configs.

The keys of :mod:`experiments.configs.default` configure ``experiments.train`` (one model);
the keys added by :func:`add_experiment_keys` configure ``experiments.aevb`` (figures
2-5: every latent size, AEVB against wake-sleep, the step-size selection, IWAE).
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import default

# Keys of one data-set panel of experiments.aevb; a panel that does not set one refers to
# the top-level key of the same name (so --config.hidden=... changes both).
PANEL_KEYS = ("dataset", "data_dir", "data_path", "binarize", "dequantize_levels", "likelihood",
              "sigmoid_mean", "hidden", "latent_sizes")


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
    add_experiment_keys(config)
    if arg == "smoke":
        config.hidden = 16
        config.num_epochs = 2
        config.eval_every_epochs = 1
        config.checkpoint_every_epochs = 1
        smoke_experiment_keys(config)
    elif arg not in (None, ""):
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"Unknown config variant {arg!r}; expected 'smoke', a latent size "
                             "(e.g. '20') or nothing.")
        config.latent = int(arg)
    return config


def add_experiment_keys(config: ml_collections.ConfigDict) -> None:
    """The keys of experiments.aevb, at the paper's sizes (section 5, figures 2-5)."""
    # Figure 2: one panel per latent size; every size of a panel trains in one process.
    config.latent_sizes = (3, 5, 10, 20, 200)
    config.manifold_latent = 2  # figure 4 (AEVB only)
    config.sample_latents = (2, 5, 10, 20)  # figure 5 (AEVB only)
    config.wake_sleep = True  # train the wake-sleep baseline for every latent_sizes entry
    config.learning_rates = (0.01, 0.02, 0.1)  # Adagrad step sizes to choose from ...
    config.select_samples = 100_000  # ... by the training-set bound after these samples
    config.num_train_samples = 100_000_000  # x axis of figure 2: training samples evaluated
    config.first_eval_samples = 10_000
    config.num_eval_points = 16  # log-spaced evaluations of the train and test bounds
    config.eval_examples = 10_000  # examples of each split in the bound curves (0: all)
    config.eval_chunk = 1000
    config.parameter_prior = True  # N(0, I) prior on the parameters: weight decay 1/N_train
    config.pad_ratio = 10.0  # latent sizes within this ratio share one padded population
    # Dequantise grey levels (x = (k + u)/levels) for a Gaussian decoder on quantised data.
    config.dequantize_levels = config_dict.placeholder(int)
    # Panels: name -> the PANEL_KEYS that differ from the top level, plus a `label`.
    config.panels = ml_collections.ConfigDict()
    # Figure 3: marginal likelihood (IWAE, K importance samples) of small models against
    # the training-set size, on the panel named here ("" for the first, None to skip).
    config.fig3_panel = ""
    config.fig3_hidden = 100
    config.fig3_latent = 3
    config.fig3_train_sizes = (1000, 50_000)  # each capped at the training-set size
    config.fig3_num_train_samples = 100_000_000
    config.fig3_first_eval_samples = 100_000
    config.fig3_num_eval_points = 6
    config.fig3_iwae_samples = 5000  # K
    config.fig3_iwae_chunk = 250  # samples per chunk (memory: chunk x examples x D)
    config.fig3_iwae_examples = 1000  # train and test examples of the IWAE estimate
    # Figures 4 and 5.
    config.manifold_grid = 20  # the 2-D manifold: grid x grid decoder means
    config.num_sample_images = 100  # figure 5: samples per latent size (a square grid)


def add_panel(config: ml_collections.ConfigDict, name: str, label: str, **values) -> None:
    """Adds panel ``name``; keys not given refer to the top-level keys."""
    panel = ml_collections.ConfigDict()
    panel.label = label
    for key in PANEL_KEYS:
        if key not in values:
            panel[key] = config.get_ref(key)
        elif values[key] is None:  # keep the type, so that --config.panels.* can set it
            values.pop(key)
            panel[key] = config_dict.FieldReference(None, config.get_ref(key).get_type())
        else:
            panel[key] = values.pop(key)
    if values:
        raise ValueError(f"unknown panel keys {sorted(values)}; expected {PANEL_KEYS}.")
    config.panels[name] = panel


def smoke_experiment_keys(config: ml_collections.ConfigDict) -> None:
    """Seconds-sized experiments.aevb: tiny networks, few steps, small K."""
    config.latent_sizes = (2, 3)
    config.manifold_latent = 2
    config.sample_latents = (2, 3)
    config.learning_rates = (0.02, 0.1)
    config.select_samples = 1000
    config.num_train_samples = 3000
    config.first_eval_samples = 500
    config.num_eval_points = 3
    config.eval_examples = 200
    config.pad_ratio = 10.0
    config.fig3_hidden = 8
    config.fig3_latent = 2
    config.fig3_train_sizes = (50, 100_000)
    config.fig3_num_train_samples = 2000
    config.fig3_first_eval_samples = 1000
    config.fig3_num_eval_points = 2
    config.fig3_iwae_samples = 64
    config.fig3_iwae_chunk = 16
    config.fig3_iwae_examples = 8
    config.manifold_grid = 4
    config.num_sample_images = 4
