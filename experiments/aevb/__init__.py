"""Experiment: Kingma & Welling's AEVB figures 2-5, with the wake-sleep baseline and IWAE.

Auto-Encoding Variational Bayes (arXiv 1312.6114), section 5 and appendices C-D:

* Figure 2: the lower bound per datapoint (train and test) against the number of training
  samples evaluated, for each latent size, AEVB against wake-sleep (same encoder and
  decoder; :mod:`vaejax.wake_sleep`). All latent sizes of one data set train in one
  process, as padded and masked populations of the engine (:mod:`.training`), and each
  model's Adagrad step size is chosen from {0.01, 0.02, 0.1} by its training-set bound
  after the first samples (the candidates train side by side as members).
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
        --config.data.data_dir=~/tensorflow_datasets --workdir=results/aevb_mnist
    python -m experiments.aevb --config=experiments/configs/aevb_frey.py \\
        --config.data.data_path=frey_rawface.mat --workdir=results/aevb_frey
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import ml_collections

from experiments import common
from experiments.aevb import figures, training
from experiments.configs.aevb_common import GROUP_FIELDS, PANEL_KEYS
from vaejax.config import validate_group

FIG2_COLUMNS = training.RECORD_KEYS[:-2]
FIG3_COLUMNS = training.RECORD_KEYS


def _steps(samples: int, batch_size: int) -> int:
    return max(1, int(samples) // batch_size)


def check_panels(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """The data-set panels (name -> panel); ValueError naming a bad panel key."""
    panels = config.aevb.panels
    if not panels:
        raise ValueError("config `aevb.panels` is empty: add a panel (aevb_common.add_panel).")
    for name in panels:
        unknown = sorted(set(panels[name].keys()) - set(PANEL_KEYS) - {"label"})
        if unknown:
            keys = ", ".join(f"`aevb.panels.{name}.{k}`" for k in unknown)
            raise ValueError(f"unknown config keys {keys}; a panel sets "
                             f"{', '.join(PANEL_KEYS)} and `label`.")
        if panels[name].binarize not in (None, "static", "threshold", "dynamic"):
            raise ValueError(f"config `aevb.panels.{name}.binarize` must be None, 'static', "
                             f"'threshold' or 'dynamic', got {panels[name].binarize!r}.")
    return {name: panels[name] for name in panels}


def _train(timing: dict, label: str, *args, **kwargs):
    """:func:`.training.train_arms`, its seconds and model-steps added to ``timing``."""
    trained = training.train_arms(*args, label=label, **kwargs)
    timing["train_seconds"] += trained.train_seconds
    timing["member_steps"] += trained.member_steps
    timing["populations"].append({"population": label, "seconds": trained.train_seconds,
                                  "iwae_seconds": trained.iwae_seconds,
                                  "member_steps": trained.member_steps})
    return trained


def train_panel(name, panel, config, data, workdir, timing) -> dict:
    """Every latent size with AEVB (and wake-sleep): records of figure 2 and the models."""
    exp, batch = config.aevb, config.train.batch_size
    num_train = int(data.train.shape[0])
    total = _steps(exp.num_train_samples, batch)
    select = min(_steps(exp.select_samples, batch), total)
    first = min(_steps(exp.first_eval_samples, batch), total)
    eval_steps = training.eval_schedule(first, total, exp.num_eval_points, (select,))
    plan = [("aevb", sorted(set(panel.latent_sizes) | {exp.manifold_latent}
                            | set(exp.sample_latents)))]
    if exp.wake_sleep:
        plan.append(("wake_sleep", sorted(set(panel.latent_sizes))))
    records, models = [], {}
    for method, sizes in plan:
        for group in training.latent_groups(sizes, exp.pad_ratio):
            nz = [str(z) for z in group]
            trained = _train(
                timing, f"{name} {training.METHOD_LABELS[method]} Nz={','.join(nz)}", config,
                panel, data, workdir, panel_name=name, name=f"{name}/{method}-{'-'.join(nz)}",
                method=method, hidden=panel.hidden, arms=[(z, num_train) for z in group],
                total_steps=total, select_steps=select, eval_steps=eval_steps)
            records += trained.records
            for m, latent in enumerate(group):
                models[(method, latent)] = (trained.trainer, *trained.member(m))
    return {"records": records, "models": models, "total_steps": total, "select_steps": select,
            "num_train": num_train}


def train_fig3(name, panel, config, data, workdir, timing) -> dict:
    """Nz = fig3_latent, fig3_hidden units, on the first n training examples for each n."""
    exp, batch = config.aevb, config.train.batch_size
    sizes = sorted({min(int(n), int(data.train.shape[0])) for n in exp.fig3_train_sizes})
    total = _steps(exp.fig3_num_train_samples, batch)
    select = min(_steps(exp.select_samples, batch), total)
    first = min(_steps(exp.fig3_first_eval_samples, batch), total)
    eval_steps = training.eval_schedule(first, total, exp.fig3_num_eval_points, ())
    iwae = {"steps": set(eval_steps) | {total}, "num_samples": exp.fig3_iwae_samples,
            "chunk_size": min(exp.fig3_iwae_chunk, exp.fig3_iwae_samples),
            "num_examples": exp.fig3_iwae_examples}
    records = []
    for method in ["aevb"] + (["wake_sleep"] if exp.wake_sleep else []):
        records += _train(
            timing, f"fig3 {training.METHOD_LABELS[method]}", config, panel, data, workdir,
            panel_name=name, name=f"fig3/{method}", method=method, hidden=exp.fig3_hidden,
            arms=[(exp.fig3_latent, n) for n in sizes], total_steps=total, select_steps=select,
            eval_steps=eval_steps, iwae=iwae).records
    num_examples = min(exp.fig3_iwae_examples, int(data.test_eval.shape[0]), sizes[0])
    return {"records": records, "train_sizes": sizes, "total_steps": total,
            "select_steps": select, "iwae_examples": num_examples}


def final_bounds(records, results) -> dict:
    """{panel: {method: {latent: {train, test, learning_rate}}}} at the last step."""
    final: dict = {}
    for r in records:
        if r["selected"] and r["step"] == results[r["panel"]]["total_steps"]:
            final.setdefault(r["panel"], {}).setdefault(r["method"], {})[str(r["latent"])] = {
                "train": r["train_bound"], "test": r["test_bound"],
                "learning_rate": r["learning_rate"]}
    return final


def comparison(final: dict) -> dict:
    """AEVB minus wake-sleep test and train bounds, per panel and latent size."""
    return {f"{name}/{latent}": {f"{split}_gap": methods["aevb"][latent][split] - ws[split]
                                 for split in ("test", "train")}
            for name, methods in final.items()
            for latent, ws in methods.get("wake_sleep", {}).items()}


def fig3_final(records) -> dict:
    """{method: {num_train: {train_iwae, test_iwae, train_bound, test_bound}}} at the end."""
    last = max(r["step"] for r in records)
    keys = ("train_iwae", "test_iwae", "train_bound", "test_bound", "learning_rate")
    final: dict = {}
    for r in records:
        if r["step"] == last and r["selected"]:
            final.setdefault(r["method"], {})[str(r["num_train"])] = {k: r[k] for k in keys}
    return final


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains every panel and figure 3; writes figures 2-5, CSVs, JSON and the report."""
    wall_start = time.perf_counter()
    workdir = common.prepare_workdir(workdir)
    exp = validate_group(config, "aevb", GROUP_FIELDS)
    panels = check_panels(config)
    timing = {"train_seconds": 0.0, "member_steps": 0, "populations": []}
    phases: dict[str, float] = {}
    results, data = {}, {}

    def save(stem, columns, rows, fig):
        common.write_csv(workdir / f"{stem}.csv", columns, rows)
        common.save_figure(fig, workdir / stem)

    for name, panel in panels.items():
        tic = time.perf_counter()
        data[name] = training.load_panel(config, panel)
        results[name] = train_panel(name, panel, config, data[name], workdir, timing)
        phases[f"figure 2: {name}"] = time.perf_counter() - tic

    fig2_rows = [r for name in results for r in results[name]["records"]]
    final = final_bounds(fig2_rows, results)
    save("aevb_fig2", FIG2_COLUMNS, [[r[k] for k in FIG2_COLUMNS] for r in fig2_rows],
         figures.figure2(fig2_rows, panels, results, config))

    fig3 = None
    fig3_name = exp.fig3_panel
    if fig3_name is not None:
        fig3_name = fig3_name or next(iter(panels))
        if fig3_name not in panels:
            raise ValueError(f"config `aevb.fig3_panel`={fig3_name!r} is not a panel "
                             f"({', '.join(panels)}).")
        tic = time.perf_counter()
        fig3 = train_fig3(fig3_name, panels[fig3_name], config, data[fig3_name], workdir, timing)
        fig3["final"] = fig3_final(fig3["records"])
        save("aevb_fig3", FIG3_COLUMNS, [[r[k] for k in FIG3_COLUMNS] for r in fig3["records"]],
             figures.figure3(fig3["records"], fig3, panels[fig3_name], config))
        phases["figure 3"] = time.perf_counter() - tic

    tic = time.perf_counter()
    datasets = {name: data[name].dataset for name in panels}
    pixels = [f"x{d}" for d in range(max(d.num_dims for d in datasets.values()))]
    key = ("aevb", exp.manifold_latent)
    manifolds = {name: figures.manifold(results[name]["models"][key], config)
                 for name in panels if key in results[name]["models"]}
    save("aevb_fig4", ["panel", "row", "col", "z1", "z2", *pixels],
         [[name, *coords, *image] for name, m in manifolds.items()
          for coords, image in zip(m["coords"], m["images"], strict=True)],
         figures.figure4(manifolds, panels, datasets, config))
    samples = {name: figures.sample_images(results[name]["models"], config) for name in panels}
    save("aevb_fig5", ["panel", "latent", "sample", *pixels],
         [[name, latent, i, *image] for name, per_latent in samples.items()
          for latent, images in per_latent.items() for i, image in enumerate(images)],
         figures.figure5(samples, panels, datasets, config))
    phases["figures 4 and 5"] = time.perf_counter() - tic

    wall = time.perf_counter() - wall_start
    batch = config.train.batch_size
    samples_trained = timing["member_steps"] * batch
    summary = {
        "panels": {name: {"label": panels[name].label, "dataset": panels[name].dataset,
                          "likelihood": panels[name].likelihood, "hidden": panels[name].hidden,
                          "num_train": results[name]["num_train"],
                          "num_test": int(datasets[name].test.shape[0]),
                          "transform": data[name].transform,
                          "total_samples": results[name]["total_steps"] * batch,
                          "select_samples": results[name]["select_steps"] * batch}
                   for name in panels},
        "final": final,
        "aevb_beats_wake_sleep": comparison(final),
        "fig3": None if fig3 is None else {
            "panel": fig3_name, "train_sizes": fig3["train_sizes"],
            "iwae_samples": exp.fig3_iwae_samples, "iwae_examples": fig3["iwae_examples"],
            "total_samples": fig3["total_steps"] * batch, "final": fig3["final"]},
        "wall_seconds": wall, "phase_seconds": phases, **timing,
        "training_samples": samples_trained,
        "samples_per_second": samples_trained / max(timing["train_seconds"], 1e-9),
        "devices": jax.device_count(), "platform": jax.devices()[0].platform,
    }
    common.write_json(workdir / "aevb.json", summary)
    common.save_config(config, workdir / "aevb_config.json")
    summary["report"] = figures.report_section(summary, config)
    print(f"[aevb] wall time {wall:.1f} s; training {samples_trained:,} samples "
          f"({timing['member_steps']:,} model-steps of M = {batch}) in "
          f"{timing['train_seconds']:.1f} s = {summary['samples_per_second']:,.0f} samples/s "
          f"on {summary['devices']} {summary['platform']} device(s); "
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()), flush=True)
    return summary


def main() -> None:
    common.cli_main("aevb", run)
