"""The AEVB paper's shared set-up (section 5, appendix C), applied by the aevb_* configs.

The training groups describe one model (``./launch.sh train`` trains it: the paper's
network, Adagrad, M = 100, L = 1, uniform minibatches); the group ``aevb`` configures
``experiments.aevb`` (figures 2-5: every latent size, AEVB against wake-sleep, the
step-size selection, IWAE), and ``aevb.panels`` holds one sub-group per data set whose
keys default to the training keys of the same name (so ``--config.model.hidden=...``
changes every panel that does not set its own).
"""

import ml_collections
from ml_collections import config_dict

from vaejax import config as config_lib
from vaejax.config import BOOL, GROUP, INT, NONE, REAL, STR, TUPLE, Field

# Panel key -> the training key it defaults to (or the aevb key).
PANEL_KEYS = {"dataset": ("data", "dataset"), "data_dir": ("data", "data_dir"),
              "data_path": ("data", "data_path"), "binarize": ("data", "binarize"),
              "dequantize_levels": ("data", "dequantize_levels"),
              "likelihood": ("model", "likelihood"), "sigmoid_mean": ("model", "sigmoid_mean"),
              "hidden": ("model", "hidden"), "latent_sizes": ("aevb", "latent_sizes")}

_positive = config_lib.positive_int
GROUP_FIELDS = {
    # Figure 2: one panel per latent size; every size of a panel trains in one process.
    "latent_sizes": Field((3, 5, 10, 20, 200), (TUPLE,)),
    "manifold_latent": Field(2, (INT,), _positive, "figure 4 (AEVB only)"),
    "sample_latents": Field((2, 5, 10, 20), (TUPLE,), doc="figure 5 (AEVB only)"),
    "wake_sleep": Field(True, (BOOL,), doc="train the wake-sleep baseline too"),
    "learning_rates": Field((0.01, 0.02, 0.1), (TUPLE,),
                            doc="Adagrad step sizes to choose from (ties: the smaller)"),
    "select_samples": Field(100_000, (INT,), _positive,
                            "the choice is made on the training bound after these samples"),
    "num_train_samples": Field(100_000_000, (INT,), _positive, "x axis of figure 2"),
    "first_eval_samples": Field(10_000, (INT,), _positive),
    "num_eval_points": Field(16, (INT,), _positive, "log-spaced evaluations of the bounds"),
    "eval_examples": Field(10_000, (INT,), config_lib.non_negative_int,
                           "examples of each split in the bound curves (0: all)"),
    "eval_chunk": Field(1000, (INT,), _positive, "examples per evaluation chunk"),
    "parameter_prior": Field(True, (BOOL,), doc="N(0, I) prior: weight decay 1 / N_train"),
    "pad_ratio": Field(10.0, (REAL,), config_lib.positive_real,
                       "latent sizes within this ratio share one padded population"),
    "panels": Field(None, (GROUP,), doc="name -> panel keys (PANEL_KEYS) and a `label`"),
    # Figure 3: marginal likelihood (IWAE, K importance samples) of small models against
    # the training-set size, on the panel named here ("" for the first, None to skip).
    "fig3_panel": Field("", (STR, NONE)),
    "fig3_hidden": Field(100, (INT,), _positive),
    "fig3_latent": Field(3, (INT,), _positive),
    "fig3_train_sizes": Field((1000, 50_000), (TUPLE,), doc="each capped at the training set"),
    "fig3_num_train_samples": Field(100_000_000, (INT,), _positive),
    "fig3_first_eval_samples": Field(100_000, (INT,), _positive),
    "fig3_num_eval_points": Field(6, (INT,), _positive),
    "fig3_iwae_samples": Field(5000, (INT,), _positive, "K"),
    "fig3_iwae_chunk": Field(250, (INT,), _positive, "samples per chunk"),
    "fig3_iwae_examples": Field(1000, (INT,), _positive, "train and test examples of the IWAE"),
    # Figures 4 and 5.
    "manifold_grid": Field(20, (INT,), _positive, "the 2-D manifold: grid x grid means"),
    "num_sample_images": Field(100, (INT,), _positive, "figure 5: samples per latent size"),
}

SMOKE = {
    "latent_sizes": (2, 3), "manifold_latent": 2, "sample_latents": (2, 3),
    "learning_rates": (0.02, 0.1), "select_samples": 1000, "num_train_samples": 3000,
    "first_eval_samples": 500, "num_eval_points": 3, "eval_examples": 200, "fig3_hidden": 8,
    "fig3_latent": 2, "fig3_train_sizes": (50, 100_000), "fig3_num_train_samples": 2000,
    "fig3_first_eval_samples": 1000, "fig3_num_eval_points": 2, "fig3_iwae_samples": 64,
    "fig3_iwae_chunk": 16, "fig3_iwae_examples": 8, "manifold_grid": 4, "num_sample_images": 4,
}


def aevb_config(arg: str | None, *, dataset: str, likelihood: str, hidden: int,
                num_train: int, num_epochs: int, eval_every: int,
                ) -> tuple[ml_collections.ConfigDict, bool]:
    """(paper set-up, whether smoke); ``arg`` is 'smoke' (tiny), a latent size ('3',
    'latent=3') or None (20)."""
    variant = config_lib.parse_variant(arg, flags=("smoke",), keys={"latent": int},
                                       positional="latent")
    config = config_lib.default_config()
    smoke = variant.get("smoke", False)
    if smoke:
        config_lib.override(config, config_lib.SMOKE)
    config_lib.override(config, {
        "data": {"dataset": dataset},
        "model": {"likelihood": likelihood, "hidden": 16 if smoke else hidden,
                  "latent": variant.get("latent", 20), "init_scale": 0.01},  # N(0, 0.01^2)
        "train": {"optimizer": "adagrad", "learning_rate": 0.02,  # from {0.01, 0.02, 0.1}
                  "weight_decay": 1.0 / num_train,  # the N(0, I) prior, per datapoint
                  "batch_size": 100, "num_samples": 1, "sampling": "uniform",
                  "num_epochs": 2 if smoke else num_epochs},
        "eval": {"every_epochs": 1 if smoke else eval_every},
        "checkpoint": {"every_epochs": 1 if smoke else eval_every},
    })
    if variant.get("latent", 1) < 1:
        raise ValueError(f"config variant latent={variant['latent']} must be >= 1.")
    config.aevb = ml_collections.ConfigDict({k: config_lib.placeholder(f)
                                             for k, f in GROUP_FIELDS.items()})
    if smoke:
        config_lib.override(config.aevb, SMOKE)
    return config, smoke


def add_panel(config: ml_collections.ConfigDict, name: str, label: str, **values) -> None:
    """Adds panel ``name``; keys not given refer to the training (or aevb) keys."""
    panel = ml_collections.ConfigDict()
    panel.label = label
    for key, (group, field) in PANEL_KEYS.items():
        reference = config[group].get_ref(field)
        if key not in values:
            panel[key] = reference
        elif values[key] is None:  # keep the type, so that --config.aevb.panels.* can set it
            values.pop(key)
            panel[key] = config_dict.FieldReference(None, reference.get_type())
        else:
            panel[key] = values.pop(key)
    if values:
        raise ValueError(f"unknown panel keys {sorted(values)}; expected {list(PANEL_KEYS)}.")
    config.aevb.panels[name] = panel
