"""Experiment: Kingma & Welling's AEVB figures 2-5, with the wake-sleep baseline and IWAE.

Auto-Encoding Variational Bayes (arXiv 1312.6114), section 5 and appendices C-D:

* Figure 2: the lower bound per datapoint (train and test) against the number of training
  samples evaluated, for each latent size, AEVB against wake-sleep (same encoder and
  decoder; :mod:`vaejax.wake_sleep`). All latent sizes of one data set train in one
  process, as padded and masked populations (``experiments/_aevb_population.py``), and
  each model's Adagrad step size is chosen from {0.01, 0.02, 0.1} by its training-set
  bound after the first samples (the three step sizes train side by side as members).
* Figure 3: the marginal log-likelihood, estimated by the IWAE bound with K = 5000
  importance samples (in chunks, the examples split over the devices when there are
  several), of Nz = 3, 100-hidden-unit models trained on 1000 examples and on the whole
  training set, AEVB against wake-sleep. The paper used an HMC-based estimator (and also
  showed Monte-Carlo EM, not reproduced here).
* Figure 4: the learned 2-D manifolds: decoder means E[x|z] on a grid z = Phi^-1(u), u on
  an evenly spaced grid of the unit square.
* Figure 5: random samples (decoder means at z ~ N(0, I)) for latent sizes 2, 5, 10, 20.

    ./launch.sh aevb                                                # digits, CPU, minutes
    python -m experiments.aevb --config=experiments/configs/aevb_mnist.py \\
        --config.data_dir=~/tensorflow_datasets --workdir=results/aevb_mnist
    python -m experiments.aevb --config=experiments/configs/aevb_frey.py \\
        --config.data_path=frey_rawface.mat --workdir=results/aevb_frey
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.stats

from experiments import _aevb_population as population
from experiments import common
from experiments.configs.aevb_common import PANEL_KEYS
from vaejax import plotting  # noqa: F401  (sets the headless matplotlib backend)
from vaejax.data import load_dataset
from vaejax.models import VAE

METHOD_STYLE = {"aevb": dict(color="C3"), "wake_sleep": dict(color="C0")}
PAPER_NOTE = {
    "mnist": "paper: Nz = 20 test about -100 nats at 1e8 samples (wake-sleep about -104)",
    "frey": "paper: Nz = 20 about +1490 train / +1320 test; wake-sleep levels off near +580",
}


# ----------------------------------------------------------------------------- data


def panel_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """The data-set panels; without ``config.panels`` one panel from the top-level keys."""
    if config.panels:
        return {name: config.panels[name] for name in config.panels}
    panel = ml_collections.ConfigDict({key: config[key] for key in PANEL_KEYS})
    panel.label = config.dataset
    return {config.dataset: panel}


def load_panel_data(panel: ml_collections.ConfigDict, config: ml_collections.ConfigDict):
    """(Dataset, PanelData, transform, levels) for a panel; the eval copies are fixed draws."""
    if panel.binarize not in (None, "static", "threshold", "dynamic"):
        raise ValueError(f"panel `binarize` must be None, 'static', 'threshold' or 'dynamic', "
                         f"got {panel.binarize!r}.")
    static = panel.binarize if panel.binarize in ("static", "threshold") else None
    dataset = load_dataset(panel.dataset, data_dir=panel.data_dir, path=panel.data_path,
                           binarize=static, seed=config.seed)
    if panel.binarize == "dynamic":
        transform, levels = "binarize", 2
    elif panel.dequantize_levels:
        transform, levels = "dequantize", int(panel.dequantize_levels)
        if levels < 2:
            raise ValueError(f"`dequantize_levels` must be >= 2, got {levels}.")
    else:
        transform, levels = None, 256
    key = jax.random.key(config.seed + 11)
    train = jnp.asarray(dataset.train)
    limit = config.eval_examples or None
    train_eval = population.transform_batch(jax.random.fold_in(key, 0), train, transform, levels)
    test_eval = population.transform_batch(jax.random.fold_in(key, 1),
                                           jnp.asarray(dataset.test), transform, levels)
    data = population.PanelData(train=train, train_eval=train_eval[:limit],
                                test_eval=test_eval[:limit])
    return dataset, data, transform, levels


def _population(config, panel, dataset, transform, levels, method, *, hidden, latent):
    model = VAE(hidden=hidden, latent=latent, output_dim=dataset.num_dims,
                likelihood=panel.likelihood, sigmoid_mean=panel.sigmoid_mean,
                init_scale=config.init_scale)
    return population.Population(model=model, method=method, batch_size=config.batch_size,
                                 transform=transform, levels=levels,
                                 optimizer=config.optimizer, seed=config.seed)


def _steps(samples: int, batch_size: int) -> int:
    return max(1, int(samples) // batch_size)


# ----------------------------------------------------------------------------- training


def _account(timing: dict, label: str, history: population.History) -> None:
    timing["train_seconds"] += history.train_seconds
    timing["member_steps"] += history.member_steps
    timing["populations"].append({"population": label, "seconds": history.train_seconds,
                                  "iwae_seconds": history.iwae_seconds,
                                  "member_steps": history.member_steps})


def train_panel(name, panel, config, dataset, data, transform, levels, timing) -> dict:
    """Every latent size with AEVB (and wake-sleep): rows of figure 2 and the final models."""
    num_train = int(dataset.train.shape[0])
    total = _steps(config.num_train_samples, config.batch_size)
    select = min(_steps(config.select_samples, config.batch_size), total)
    eval_steps = population.eval_schedule(min(_steps(config.first_eval_samples,
                                                     config.batch_size), total),
                                          total, config.num_eval_points, (select,))
    aevb_sizes = sorted(set(panel.latent_sizes) | {config.manifold_latent}
                        | set(config.sample_latents))
    plan = [("aevb", aevb_sizes)]
    if config.wake_sleep:
        plan.append(("wake_sleep", sorted(set(panel.latent_sizes))))
    rows, models = [], {}
    for method, sizes in plan:
        for group in population.latent_groups(sizes, config.pad_ratio):
            pop = _population(config, panel, dataset, transform, levels, method,
                              hidden=panel.hidden, latent=max(group))
            label = f"{name} {population.METHOD_LABELS[method]} Nz={','.join(map(str, group))}"
            state, members, history = population.train_population(
                pop, [(z, num_train) for z in group], config.learning_rates, data,
                total_steps=total, select_steps=select, eval_steps=eval_steps,
                parameter_prior=config.parameter_prior, eval_chunk=config.eval_chunk,
                label=label, progress=config.progress)
            _account(timing, label, history)
            rows += [[name, method, *row] for row in history.rows]
            for m, latent in enumerate(group):
                models[(method, latent)] = (pop, population.gather(state.params, [m]),
                                            population.gather(members, [m]))
    return {"rows": rows, "models": models, "total_steps": total, "select_steps": select,
            "num_train": num_train}


def train_fig3(name, panel, config, dataset, data, transform, levels, timing) -> dict:
    """Nz = fig3_latent, fig3_hidden units, on the first n training examples for each n."""
    num_train = int(dataset.train.shape[0])
    sizes = sorted({min(int(n), num_train) for n in config.fig3_train_sizes})
    total = _steps(config.fig3_num_train_samples, config.batch_size)
    select = min(_steps(config.select_samples, config.batch_size), total)
    eval_steps = population.eval_schedule(
        min(_steps(config.fig3_first_eval_samples, config.batch_size), total), total,
        config.fig3_num_eval_points, ())
    iwae = {"steps": set(eval_steps) | {total}, "num_samples": config.fig3_iwae_samples,
            "chunk_size": min(config.fig3_iwae_chunk, config.fig3_iwae_samples),
            "num_examples": config.fig3_iwae_examples}
    methods = ["aevb"] + (["wake_sleep"] if config.wake_sleep else [])
    rows = []
    for method in methods:
        pop = _population(config, panel, dataset, transform, levels, method,
                          hidden=config.fig3_hidden, latent=config.fig3_latent)
        _, _, history = population.train_population(
            pop, [(config.fig3_latent, n) for n in sizes], config.learning_rates, data,
            total_steps=total, select_steps=select, eval_steps=eval_steps,
            parameter_prior=config.parameter_prior, eval_chunk=config.eval_chunk, iwae=iwae,
            label=f"fig3 {population.METHOD_LABELS[method]}", progress=config.progress)
        _account(timing, f"fig3 {population.METHOD_LABELS[method]}", history)
        rows += [[name, method, *row] for row in history.rows]
    num_examples = min(config.fig3_iwae_examples, int(data.test_eval.shape[0]), sizes[0])
    return {"rows": rows, "train_sizes": sizes, "total_steps": total, "select_steps": select,
            "iwae_examples": num_examples}


# ----------------------------------------------------------------------------- run


FIG2_COLUMNS = ("panel", "method", "step", "samples", "arm", "latent", "num_train",
                "learning_rate", "selected", "train_bound", "test_bound")
FIG3_COLUMNS = (*FIG2_COLUMNS, "train_iwae", "test_iwae")


def _fig_rows(rows, batch_size, with_iwae):
    """History rows -> CSV rows (samples = step x M)."""
    out = []
    for name, method, step, arm, latent, n, lr, selected, tb, sb, ti, si in rows:
        row = [name, method, step, step * batch_size, arm, latent, n, lr, selected, tb, sb]
        out.append(row + ([ti, si] if with_iwae else []))
    return out


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains every panel and figure 3; writes figures 2-5, CSVs, JSON and the report."""
    wall_start = time.perf_counter()
    workdir = common.prepare_workdir(workdir)
    panels = panel_configs(config)
    timing = {"train_seconds": 0.0, "member_steps": 0, "populations": []}
    phases: dict[str, float] = {}
    results, datasets = {}, {}
    for name, panel in panels.items():
        tic = time.perf_counter()
        dataset, data, transform, levels = load_panel_data(panel, config)
        datasets[name] = (dataset, data, transform, levels)
        results[name] = train_panel(name, panel, config, dataset, data, transform, levels,
                                    timing)
        phases[f"figure 2: {name}"] = time.perf_counter() - tic

    fig2_rows = [r for name in results
                 for r in _fig_rows(results[name]["rows"], config.batch_size, False)]
    common.write_csv(workdir / "aevb_fig2.csv", FIG2_COLUMNS, fig2_rows)
    final = final_bounds(fig2_rows, results)
    common.save_figure(figure2(fig2_rows, panels, results, config), workdir / "aevb_fig2")

    fig3 = None
    fig3_name = config.fig3_panel
    if fig3_name is not None:
        fig3_name = fig3_name or next(iter(panels))
        if fig3_name not in panels:
            raise ValueError(f"config `fig3_panel`={fig3_name!r} is not a panel "
                             f"({', '.join(panels)}).")
        tic = time.perf_counter()
        dataset, data, transform, levels = datasets[fig3_name]
        fig3 = train_fig3(fig3_name, panels[fig3_name], config, dataset, data, transform,
                          levels, timing)
        fig3_rows = _fig_rows(fig3["rows"], config.batch_size, True)
        common.write_csv(workdir / "aevb_fig3.csv", FIG3_COLUMNS, fig3_rows)
        fig3["final"] = fig3_final(fig3_rows)
        common.save_figure(figure3(fig3_rows, fig3, panels[fig3_name], config),
                           workdir / "aevb_fig3")
        phases["figure 3"] = time.perf_counter() - tic

    tic = time.perf_counter()
    manifolds = {name: manifold(results[name], datasets[name][0], config) for name in panels
                 if ("aevb", config.manifold_latent) in results[name]["models"]}
    manifold_rows = [[name, i, j, z1, z2, *pixels] for name, m in manifolds.items()
                     for (i, j, z1, z2), pixels in zip(m["coords"], m["images"], strict=True)]
    max_dims = max(datasets[name][0].num_dims for name in panels)
    common.write_csv(workdir / "aevb_fig4.csv",
                     ["panel", "row", "col", "z1", "z2", *[f"x{d}" for d in range(max_dims)]],
                     manifold_rows)
    common.save_figure(figure4(manifolds, panels, datasets, config), workdir / "aevb_fig4")

    samples = {name: sample_images(results[name], datasets[name][0], config)
               for name in panels}
    sample_rows = [[name, latent, i, *pixels] for name, per_latent in samples.items()
                   for latent, images in per_latent.items()
                   for i, pixels in enumerate(images)]
    common.write_csv(workdir / "aevb_fig5.csv",
                     ["panel", "latent", "sample", *[f"x{d}" for d in range(max_dims)]],
                     sample_rows)
    common.save_figure(figure5(samples, panels, datasets, config), workdir / "aevb_fig5")
    phases["figures 4 and 5"] = time.perf_counter() - tic

    wall = time.perf_counter() - wall_start
    samples_trained = timing["member_steps"] * config.batch_size
    summary = {
        "panels": {name: {"label": panels[name].label, "dataset": panels[name].dataset,
                          "likelihood": panels[name].likelihood, "hidden": panels[name].hidden,
                          "num_train": results[name]["num_train"],
                          "num_test": int(datasets[name][0].test.shape[0]),
                          "transform": datasets[name][2],
                          "total_samples": results[name]["total_steps"] * config.batch_size,
                          "select_samples": results[name]["select_steps"] * config.batch_size}
                   for name in panels},
        "final": final,
        "aevb_beats_wake_sleep": comparison(final),
        "fig3": None if fig3 is None else {
            "panel": fig3_name, "train_sizes": fig3["train_sizes"],
            "iwae_samples": config.fig3_iwae_samples, "iwae_examples": fig3["iwae_examples"],
            "total_samples": fig3["total_steps"] * config.batch_size, "final": fig3["final"]},
        "wall_seconds": wall,
        "train_seconds": timing["train_seconds"],
        "member_steps": timing["member_steps"],
        "phase_seconds": phases,
        "populations": timing["populations"],
        "training_samples": samples_trained,
        "samples_per_second": samples_trained / max(timing["train_seconds"], 1e-9),
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
    }
    common.write_json(workdir / "aevb.json", summary)
    common.save_config(config, workdir / "aevb_config.json")
    summary["report"] = report_section(summary, config)
    print(f"[aevb] wall time {wall:.1f} s; training {samples_trained:,} samples "
          f"({timing['member_steps']:,} model-steps of M = {config.batch_size}) in "
          f"{timing['train_seconds']:.1f} s = {summary['samples_per_second']:,.0f} samples/s "
          f"on {summary['devices']} {summary['platform']} device(s); "
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()), flush=True)
    return summary


# ----------------------------------------------------------------------------- numbers


def final_bounds(rows, results) -> dict:
    """{panel: {method: {latent: {train, test, learning_rate}}}} at the last step."""
    final: dict = {}
    for name, result in results.items():
        last = result["total_steps"]
        for r in rows:
            if r[0] == name and r[2] == last and r[8] == 1:
                final.setdefault(name, {}).setdefault(r[1], {})[str(r[5])] = {
                    "train": r[9], "test": r[10], "learning_rate": r[7]}
    return final


def comparison(final: dict) -> dict:
    """AEVB minus wake-sleep test and train bounds, per panel and latent size."""
    out = {}
    for name, methods in final.items():
        if "wake_sleep" not in methods:
            continue
        for latent, ws in methods["wake_sleep"].items():
            ae = methods["aevb"][latent]
            out[f"{name}/{latent}"] = {"test_gap": ae["test"] - ws["test"],
                                       "train_gap": ae["train"] - ws["train"]}
    return out


def fig3_final(rows) -> dict:
    """{method: {num_train: {train_iwae, test_iwae, train_bound, test_bound}}} at the end."""
    last = max(r[2] for r in rows)
    final: dict = {}
    for r in rows:
        if r[2] == last and r[8] == 1:
            final.setdefault(r[1], {})[str(r[6])] = {
                "train_iwae": r[11], "test_iwae": r[12], "train_bound": r[9],
                "test_bound": r[10], "learning_rate": r[7]}
    return final


# ----------------------------------------------------------------------------- images


def manifold(result, dataset, config) -> dict:
    """Decoder means on the grid z = Phi^-1(u) of the AEVB model with 2 latents."""
    pop, params, member = result["models"][("aevb", config.manifold_latent)]
    n = config.manifold_grid
    u = (np.arange(n) + 0.5) / n  # evenly spaced inside the unit square (Phi^-1(0) = -inf)
    values = scipy.stats.norm.ppf(u)
    # Row i from the top holds z2 = values[n-1-i]; column j holds z1 = values[j].
    coords = [(i, j, float(values[j]), float(values[n - 1 - i]))
              for i in range(n) for j in range(n)]
    z = np.zeros((n * n, pop.max_latent), np.float32)
    z[:, :2] = [(c[2], c[3]) for c in coords]
    images = _expected_pixels(pop, params, member, z)
    return {"coords": coords, "images": images, "grid": n, "values": values}


def sample_images(result, dataset, config) -> dict:
    """{latent: [N, D]} decoder means at z ~ N(0, I) for each of config.sample_latents."""
    out = {}
    for latent in config.sample_latents:
        if ("aevb", latent) not in result["models"]:
            continue
        pop, params, member = result["models"][("aevb", latent)]
        z = np.asarray(jax.random.normal(jax.random.key(config.seed + 5),
                                         (config.num_sample_images, pop.max_latent)))
        out[latent] = _expected_pixels(pop, params, member, z)
    return out


def _expected_pixels(pop, params, member, z) -> np.ndarray:
    one = jax.tree.map(lambda a: a[0], params)
    member = jax.tree.map(lambda a: a[0], member)
    return np.asarray(jax.jit(pop.expected_pixels)(one, member, jnp.asarray(z)))


def _tile(images: np.ndarray, image_shape, cols: int) -> np.ndarray:
    """[N, D] -> one image of rows x cols tiles with 1-pixel white gaps."""
    h, w = image_shape
    n = images.shape[0]
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = \
            np.clip(images[k].reshape(h, w), 0, 1)
    return canvas


# ----------------------------------------------------------------------------- figures


def _curves(rows, name, method, latent, column):
    sel = [r for r in rows if r[0] == name and r[1] == method and r[5] == latent and r[8] == 1]
    sel.sort(key=lambda r: r[3])
    return np.array([r[3] for r in sel]), np.array([r[column] for r in sel])


def figure2(rows, panels, results, config):
    """Figure 2: lower bound against training samples, one panel per (data set, Nz)."""
    import matplotlib.pyplot as plt

    names = list(panels)
    cols = max(len(panels[n].latent_sizes) for n in names)
    fig, axes = plt.subplots(len(names), cols, figsize=(3.3 * cols, 3.0 * len(names) + 0.6),
                             squeeze=False)
    methods = ["aevb"] + (["wake_sleep"] if config.wake_sleep else [])
    for r, name in enumerate(names):
        panel, result = panels[name], results[name]
        finals = [v for m in methods for lat in panel.latent_sizes
                  for v in (_curves(rows, name, m, lat, 10)[1][-1:].tolist())]
        values = [v for m in methods for lat in panel.latent_sizes for col in (9, 10)
                  for v in _curves(rows, name, m, lat, col)[1].tolist() if np.isfinite(v)]
        top = max(values)
        span = max(top - min(finals), 5.0)
        bottom = max(min(values), min(finals) - 1.5 * span)
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(panel.latent_sizes):
                ax.axis("off")
                continue
            latent = panel.latent_sizes[c]
            for method in methods:
                label = "AEVB" if method == "aevb" else "WS"
                for column, ls, split in ((9, "-", "train"), (10, "--", "test")):
                    x, y = _curves(rows, name, method, latent, column)
                    ax.semilogx(x, y, ls, marker="o", ms=2.5, lw=1.3,
                                label=f"{label} ({split})", **METHOD_STYLE[method])
            ax.axvline(result["select_steps"] * config.batch_size, color="gray", lw=0.8,
                       ls=":", label="step size chosen")
            ax.set_ylim(bottom, top + 0.08 * (top - bottom))
            ax.set_title(f"{panel.label}, $N_z$ = {latent}", fontsize=8)
            ax.set_xlabel("# training samples evaluated", fontsize=8)
            if c == 0:
                ax.set_ylabel(r"lower bound $\mathcal{L}$ per datapoint (nats)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.25)
            if c == 0:
                ax.legend(fontsize=6, loc="lower right")
        note = PAPER_NOTE.get(name)
        if note:
            axes[r, 0].text(0.02, 0.98, note, transform=axes[r, 0].transAxes, fontsize=6,
                            va="top")
    fig.suptitle("Figure 2 (Kingma & Welling 2013): AEVB vs wake-sleep, lower bound per "
                 f"datapoint; Adagrad step size from {tuple(config.learning_rates)} by the "
                 "training bound, M = 100, L = 1", fontsize=9)
    fig.tight_layout()
    return fig


def figure3(rows, fig3, panel, config):
    """Figure 3: estimated marginal log-likelihood against training samples, per N_train."""
    import matplotlib.pyplot as plt

    sizes = fig3["train_sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.9), squeeze=False)
    methods = sorted({r[1] for r in rows}, key=lambda m: population.METHODS.index(m))
    for c, n in enumerate(sizes):
        ax = axes[0, c]
        for method in methods:
            label = population.METHOD_LABELS[method]
            for column, ls, split in ((11, "-", "train"), (12, "--", "test")):
                sel = sorted((r for r in rows if r[1] == method and r[6] == n and r[8] == 1
                              and np.isfinite(r[column])), key=lambda r: r[3])
                ax.semilogx([r[3] for r in sel], [r[column] for r in sel], ls, marker="o",
                            ms=3, lw=1.3, label=f"{label} ({split})", **METHOD_STYLE[method])
        ax.set_title(f"{panel.label}, $N_{{train}}$ = {n}", fontsize=9)
        ax.set_xlabel("# training samples evaluated", fontsize=8)
        ax.set_ylabel("marginal log-likelihood (nats)", fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="lower right")
        ax.tick_params(labelsize=7)
    fig.text(0.5, -0.02,
             f"log p(x) estimated by the IWAE bound with K = {config.fig3_iwae_samples} "
             f"importance samples on {fig3['iwae_examples']} train and test examples; "
             f"Nz = {config.fig3_latent}, {config.fig3_hidden} hidden units. The paper used "
             "an HMC-based estimator (and also showed Monte-Carlo EM).",
             ha="center", fontsize=7, wrap=True)
    fig.suptitle("Figure 3 (Kingma & Welling 2013): AEVB vs wake-sleep, estimated marginal "
                 "likelihood", fontsize=9)
    fig.tight_layout()
    return fig


def figure4(manifolds, panels, datasets, config):
    """Figure 4: learned 2-D manifolds, one per data set."""
    import matplotlib.pyplot as plt

    names = list(manifolds)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5.2 * max(len(names), 1), 5.4),
                             squeeze=False)
    for c, name in enumerate(names):
        m, shape = manifolds[name], datasets[name][0].image_shape
        ax = axes[0, c]
        ax.imshow(_tile(np.asarray(m["images"]), shape, m["grid"]), cmap="gray", vmin=0,
                  vmax=1, interpolation="nearest")
        n, (h, w) = m["grid"], shape
        ticks = [0, n // 2, n - 1]
        ax.set_xticks([t * (w + 1) + w / 2 for t in ticks],
                      [f"{m['values'][t]:.2f}" for t in ticks], fontsize=7)
        ax.set_yticks([t * (h + 1) + h / 2 for t in ticks],
                      [f"{m['values'][n - 1 - t]:.2f}" for t in ticks], fontsize=7)
        ax.set_xlabel(r"$z_1 = \Phi^{-1}(u_1)$", fontsize=8)
        ax.set_ylabel(r"$z_2 = \Phi^{-1}(u_2)$", fontsize=8)
        ax.set_title(f"({'abcdefgh'[c]}) Learned {panels[name].label} manifold", fontsize=9)
    fig.suptitle("Figure 4 (Kingma & Welling 2013): decoder means E[x|z] of 2-D latent AEVB "
                 f"models on a {config.manifold_grid}x{config.manifold_grid} grid, u evenly "
                 "spaced in the unit square", fontsize=9)
    fig.tight_layout()
    return fig


def figure5(samples, panels, datasets, config):
    """Figure 5: random samples (decoder means, z ~ N(0, I)) for each latent size."""
    import matplotlib.pyplot as plt

    names = [n for n in samples if samples[n]]
    cols = max(len(samples[n]) for n in names)
    fig, axes = plt.subplots(len(names), cols, figsize=(3.2 * cols, 3.6 * len(names) + 0.4),
                             squeeze=False)
    per_row = max(1, int(math.ceil(math.sqrt(config.num_sample_images))))
    for r, name in enumerate(names):
        shape = datasets[name][0].image_shape
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(samples[name]):
                ax.axis("off")
                continue
            latent = list(samples[name])[c]
            ax.imshow(_tile(samples[name][latent], shape, per_row), cmap="gray", vmin=0,
                      vmax=1, interpolation="nearest")
            ax.set_title(f"({'abcdefgh'[c]}) {latent}-D latent space", fontsize=8)
            if c == 0:
                ax.set_ylabel(panels[name].label, fontsize=8)
    fig.suptitle("Figure 5 (Kingma & Welling 2013): random samples from AEVB models, decoder "
                 "means E[x|z] at z ~ N(0, I)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- report


def report_section(summary: dict, config) -> str:
    lines = ["![figure 2: lower bound against training samples](aevb_fig2.png)", ""]
    for name, info in summary["panels"].items():
        methods = summary["final"].get(name, {})
        lines.append(
            f"**{info['label']}** ({info['dataset']}, {info['likelihood']} decoder, "
            f"{info['hidden']} hidden units, {info['num_train']} train / {info['num_test']} "
            f"test, data transform: {info['transform'] or 'none'}): bounds per datapoint in "
            f"nats after {info['total_samples']:,} training samples (step size chosen "
            f"after {info['select_samples']:,}).")
        lines.append("")
        header = ["Nz", "AEVB train", "AEVB test", "AEVB step size"]
        if "wake_sleep" in methods:
            header += ["WS train", "WS test", "WS step size", "AEVB - WS (test)"]
        table = []
        for latent in sorted(methods.get("aevb", {}), key=int):
            ae = methods["aevb"][latent]
            row = [latent, ae["train"], ae["test"], ae["learning_rate"]]
            if "wake_sleep" in methods:
                ws = methods["wake_sleep"].get(latent)
                row += ([ws["train"], ws["test"], ws["learning_rate"], ae["test"] - ws["test"]]
                        if ws else ["-"] * 4)
            table.append(row)
        lines += [common.markdown_table(header, table), ""]
    gaps = summary["aevb_beats_wake_sleep"]
    if gaps:
        wins = sum(g["test_gap"] > 0 for g in gaps.values())
        lines.append(f"AEVB ends above wake-sleep on the test bound for **{wins} of "
                     f"{len(gaps)}** (data set, Nz) pairs (test gap from "
                     f"{min(g['test_gap'] for g in gaps.values()):+.1f} to "
                     f"{max(g['test_gap'] for g in gaps.values()):+.1f} nats).")
        lines.append("")
    if summary["fig3"]:
        f3 = summary["fig3"]
        lines += [
            "![figure 3: marginal likelihood](aevb_fig3.png)", "",
            f"Figure 3: Nz = {config.fig3_latent}, {config.fig3_hidden} hidden units, "
            f"{f3['total_samples']:,} training samples; log p(x) estimated by the IWAE bound "
            f"with K = {f3['iwae_samples']} on {f3['iwae_examples']} train and test examples "
            "(the paper used an HMC-based estimator).", ""]
        table = []
        for method, per_n in f3["final"].items():
            for n, v in sorted(per_n.items(), key=lambda kv: int(kv[0])):
                table.append([population.METHOD_LABELS[method], n, v["train_iwae"],
                              v["test_iwae"], v["train_bound"], v["test_bound"]])
        lines += [common.markdown_table(["method", "N_train", "train log p(x)", "test log p(x)",
                                         "train ELBO", "test ELBO"], table), ""]
    lines += ["![figure 4: learned 2-D manifolds](aevb_fig4.png)", "",
              "![figure 5: random samples](aevb_fig5.png)", "",
              f"Wall time {summary['wall_seconds']:.1f} s; training "
              f"{summary['training_samples']:,} samples in {summary['train_seconds']:.1f} s = "
              f"{summary['samples_per_second']:,.0f} samples/s on {summary['devices']} "
              f"{summary['platform']} device(s). Every plotted number is in `aevb_fig2.csv` ... "
              "`aevb_fig5.csv`; the final numbers in `aevb.json`."]
    return "\n".join(lines)


if __name__ == "__main__":
    common.cli_main("aevb", run)
