"""Experiment: with a fixed decoder sigma, "SSE + beta KL" IS the Gaussian VAE, beta = 2 sigma^2.

For a Gaussian decoder with fixed sigma and D pixels,

    (a) -log N(x; mu, sigma^2 I) + KL  = SSE / (2 sigma^2) + KL + const     (the -ELBO)
    (b) SSE + beta_b KL,  beta_b = 2 sigma^2        = beta_b * ((a) - const)
    (c) MSE + beta_c KL,  beta_c = 2 sigma^2 / D    = beta_c * ((a) - const)

so grad (b) = beta_b grad (a) and grad (c) = beta_c grad (a). Three copies of one VAE
start from the same weights and see the same batches and the same latent noise; each
is trained on one objective and the largest parameter difference to (a) is recorded at
every step. Plain SGD reproduces the trajectory of (a) only with the rates rescaled,
lr_k = lr_a / beta_k; Adam does without rescaling, up to its eps.

All three objectives go through the same code path: :func:`vaejax.elbo.elbo` with
``recon`` = log N (a), -SSE (b) or -MSE (c), and ``ElboTerms.loss(beta_k)``. One jitted
``lax.scan`` runs every step of all three copies; the sigma grid and the optimiser cases
sharing a code path are a vmapped member axis.

    python -m experiments.sigma_is_beta --workdir=results/sib \
        [--config.sigma_is_beta.sigmas='(0.1,)']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments.configs.sigma_is_beta import GROUP
from vaejax import trainer as trainer_lib
from vaejax.config import validate_group
from vaejax.elbo import elbo
from vaejax.likelihoods import beta_from_sigma, gaussian_log_likelihood, mse, sse
from vaejax.models import VAE

OBJECTIVES = ("a", "b", "c")
OBJECTIVE_LABELS = {
    "a": "(a) -log N + KL",
    "b": r"(b) SSE + $2\sigma^2$ KL",
    "c": r"(c) MSE + $(2\sigma^2/D)$ KL",
}
# (case name, optimiser, whether each objective's rate is rescaled by 1/beta_k)
CASES = (
    ("sgd_rescaled", "sgd", True),
    ("sgd_same_lr", "sgd", False),
    ("adam_same_lr", "adam", False),
    ("adam_same_lr_small_eps", "adam", False),
)
FLOAT64_CASE = "sgd_rescaled_float64"  # the control: rescaled SGD again in float64
BFLOAT16_CASE = "sgd_rescaled_bfloat16"  # rescaled SGD, model computed in bfloat16
CASE_LABELS = {
    "sgd_rescaled": r"SGD, $lr_k = lr_a/\beta_k$",
    "sgd_same_lr": "SGD, one rate $lr_a$ (not rescaled)",
    "adam_same_lr": "Adam, one rate, eps {adam_eps:g}",
    "adam_same_lr_small_eps": "Adam, one rate, eps {adam_small_eps:g}",
    FLOAT64_CASE: r"SGD, $lr_k = lr_a/\beta_k$, float64 (control)",
    BFLOAT16_CASE: r"SGD, $lr_k = lr_a/\beta_k$, model in bfloat16 (float32 weights)",
}
_FLOAT32_EPS = float(np.finfo(np.float32).eps)
_LOG_FLOOR = 1e-18  # exact zeros (bitwise-equal parameters) drawn here on the log axis


def objective_betas(sigma: jax.Array, num_dims: int) -> jax.Array:
    """[3, ...] the factor beta_k with objective_k = beta_k * (-ELBO - const): 1, 2s^2, 2s^2/D."""
    return jnp.stack([jnp.ones_like(sigma), beta_from_sigma(sigma, convention="sse"),
                      beta_from_sigma(sigma, convention="mse", num_dims=num_dims)])


def objective_loss(model: VAE, objective, params, batch: jax.Array, key: jax.Array,
                   sigma: jax.Array) -> jax.Array:
    """Batch mean of objective (a), (b) or (c) for one decoder sigma; a scalar.

    Args:
      model: the VAE (a ``gaussian_fixed`` mean head).
      objective: 0, 1 or 2 for (a), (b), (c); an int or a traced int32 (vmapped axis).
      params: the model parameters.
      batch: [B, D] data.
      key: PRNG key of the latent noise.
      sigma: [] fixed decoder sigma.
    """
    num_dims = batch.shape[-1]
    mean, log_var = model.apply(params, batch, method=VAE.encode)
    recon_terms = (  # x, prediction [B, D] -> [B]: minus each objective's reconstruction loss
        lambda x, prediction: gaussian_log_likelihood(x, prediction, sigma),
        lambda x, prediction: -sse(x, prediction),
        lambda x, prediction: -mse(x, prediction),
    )

    def recon(z):  # z [B, Z] -> [B]
        prediction = model.apply(params, z, method=VAE.decode)["mean"]
        # Under vmap the switch evaluates all three and selects one: its gradient is exact.
        return jax.lax.switch(objective, recon_terms, batch, prediction)

    beta = objective_betas(sigma, num_dims)[objective]
    return elbo(key, mean, log_var, recon, num_samples=1).loss(beta)


def _objective(trainer: trainer_lib.Trainer, params, batch, key, member):
    """The engine objective of member ``member``: objective ``member.tag`` at its sigma."""
    loss = objective_loss(trainer.model, member.tag, params, batch, key, member.sigma)
    zero = jnp.zeros_like(loss)
    return loss, trainer_lib.StepMetrics(loss=loss, recon=zero, kl=zero, weight_decay=zero)


def _objective_bfloat16(trainer: trainer_lib.Trainer, params, batch, key, member):
    """:func:`_objective` with the model run in bfloat16 on float32 weights (mixed precision).

    The weights, their gradients and the optimiser stay float32; the forward and backward
    passes and the data are bfloat16; the likelihood and KL accumulate in float32.
    """
    to_bf16 = lambda a: a.astype(jnp.bfloat16)  # noqa: E731
    return _objective(trainer, jax.tree.map(to_bf16, params), to_bf16(batch), key, member)


def _max_abs(tree) -> jax.Array:
    """[G] max |leaf| over all parameters, per group (leaves [G, ...])."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf).reshape(leaf.shape[0], -1), axis=1)
                              for leaf in jax.tree.leaves(tree)]), axis=0)


def _probe(initial):
    """Per-step record of groups of three members (a), (b), (c): [G] each."""

    def probe(state, metrics):
        grouped = jax.tree.map(lambda leaf: leaf.reshape(-1, 3, *leaf.shape[1:]), state.params)
        pa, pb, pc = (jax.tree.map(lambda leaf, k=k: leaf[:, k], grouped) for k in range(3))
        diff = lambda x, y: _max_abs(jax.tree.map(jnp.subtract, x, y))  # noqa: E731
        return {"diff_ab": diff(pa, pb), "diff_ac": diff(pa, pc), "diff_bc": diff(pb, pc),
                "scale": _max_abs(pa), "displacement": diff(pa, initial),
                "loss_a": metrics.loss.reshape(-1, 3)[:, 0]}

    return probe


def _check_config(exp: ml_collections.ConfigDict) -> None:
    sigmas = np.asarray(exp.sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size == 0 or not np.all(np.isfinite(sigmas) & (sigmas > 0)):
        raise ValueError(f"config `sigma_is_beta.sigmas` must be a non-empty tuple of finite "
                         f"values > 0, got {exp.sigmas!r}.")


def _case_rates(sigmas: np.ndarray, num_dims: int, exp) -> dict[str, np.ndarray]:
    """case -> [S, 3] learning rates of objectives (a), (b), (c) per sigma."""
    # float64 here (not the library's float32 default), so that the float64 control
    # run gets rates that match its own betas to float64 rounding.
    betas = np.stack([np.ones_like(sigmas), 2 * sigmas**2, 2 * sigmas**2 / num_dims], axis=1)
    lr_a = exp.sgd_learning_rate * betas[:, 1]  # 2 sigma^2 * (the SSE-scale rate)
    rates = {}
    for name, optimizer, rescaled in CASES:
        if optimizer == "adam":
            rates[name] = np.full_like(betas, exp.adam_learning_rate)
        elif rescaled:
            rates[name] = lr_a[:, None] / betas
        else:
            rates[name] = np.repeat(lr_a[:, None], 3, axis=1)
    return rates


def _rates(rates: dict[str, np.ndarray], name: str) -> np.ndarray:
    return rates["sgd_rescaled" if name in (FLOAT64_CASE, BFLOAT16_CASE) else name]


def _run_cases(config, dataset, sigmas, rates, names, dtype, objective=_objective) -> dict:
    """case -> dict of [S, T] metrics for the cases ``names``, computed in ``dtype``.

    The members of one optimiser (its cases x sigmas x the three objectives) train as one
    population: one jitted scan of the engine's vmapped step, recording the probe.
    """
    exp = config.sigma_is_beta
    optimizer = {name: opt for name, opt, _ in CASES}
    groups = (("sgd", exp.adam_eps, [n for n in names if optimizer[n] == "sgd"]),
              ("adam", exp.adam_eps, [n for n in names if n == "adam_same_lr"]),
              ("adam", exp.adam_small_eps, [n for n in names if n == "adam_same_lr_small_eps"]))
    size, out = len(sigmas), {}
    for opt, eps, group in groups:
        if not group:
            continue
        trainer, _ = trainer_lib.build(config, dataset)
        trainer = dataclasses.replace(trainer, objective=objective, optimizer=opt,
                                      adam_eps=float(eps), dtype=jnp.dtype(dtype).name)
        members = trainer_lib.make_members(  # member ((case * S) + sigma) * 3 + objective
            latent=config.model.latent, num_train=dataset.train.shape[0], seed=config.seed,
            sigma=np.repeat(np.tile(sigmas, len(group)), 3),
            learning_rate=np.concatenate([rates[n] for n in group]).reshape(-1),
            tag=np.tile(np.arange(3), size * len(group)), dtype=dtype)
        state = trainer.jit.init(members)
        initial = jax.tree.map(lambda leaf: leaf[::3], state.params)
        _, metrics = trainer.jit.trace(state, jnp.asarray(dataset.train, dtype), members,
                                       start=0, num_steps=exp.num_steps, probe=_probe(initial))
        metrics = {k: np.asarray(v).T for k, v in metrics.items()}  # [G, T]
        out.update({name: {k: v[i * size:(i + 1) * size] for k, v in metrics.items()}
                    for i, name in enumerate(group)})
    return out


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains (a), (b), (c) side by side; writes figure, CSV, JSON and a report section."""
    workdir = common.prepare_workdir(workdir)
    exp = validate_group(config, "sigma_is_beta", GROUP)
    _check_config(exp)
    data = common.load_data(config)
    num_dims = data.num_dims
    sigmas = np.asarray(exp.sigmas, dtype=np.float64)
    rates = _case_rates(sigmas, num_dims, exp)

    # One compiled scan per optimiser for every case and sigma, one for float64.
    results = _run_cases(config, data, sigmas, rates, [name for name, _, _ in CASES],
                         jnp.float32)
    if exp.float64:  # The control: rescaled SGD with 2^29 times finer rounding.
        with jax.enable_x64(True):
            results[FLOAT64_CASE] = _run_cases(config, data, sigmas, rates, ["sgd_rescaled"],
                                               jnp.float64)["sgd_rescaled"]
    if exp.bfloat16:  # Mixed precision: how far the identity holds with a bfloat16 model.
        results[BFLOAT16_CASE] = _run_cases(config, data, sigmas, rates, ["sgd_rescaled"],
                                            jnp.float32, _objective_bfloat16)["sgd_rescaled"]
    cases = [name for name, _, _ in CASES] + ([FLOAT64_CASE] if exp.float64 else [])
    cases += [BFLOAT16_CASE] if exp.bfloat16 else []

    summary = _summarise(config, num_dims, sigmas, rates, results, cases)
    rows = []
    for name in cases:
        r = results[name]
        for s_idx, sigma in enumerate(sigmas):
            for t in range(exp.num_steps):
                rows.append([name, float(sigma), t + 1, *(float(_rates(rates, name)[s_idx, k])
                                                          for k in range(3)),
                             float(r["diff_ab"][s_idx, t]), float(r["diff_ac"][s_idx, t]),
                             float(r["diff_bc"][s_idx, t]),
                             float(r["scale"][s_idx, t]), float(r["displacement"][s_idx, t]),
                             float(r["loss_a"][s_idx, t])])
    common.write_csv(workdir / "sigma_is_beta.csv",
                     ["case", "sigma", "step", "lr_a", "lr_b", "lr_c", "max_abs_diff_a_b",
                      "max_abs_diff_a_c", "max_abs_diff_b_c", "max_abs_param_a",
                      "max_abs_displacement_a", "loss_a_before_step"], rows)
    common.write_json(workdir / "sigma_is_beta.json", summary)
    common.save_config(config, workdir / "sigma_is_beta_config.json")
    common.save_figure(sigma_is_beta_figure(sigmas, results, num_dims, config),
                       workdir / "sigma_is_beta")
    summary["report"] = _report_section(summary, config)
    return summary


def _case_label(name: str, config) -> str:
    return CASE_LABELS[name].format(adam_eps=config.sigma_is_beta.adam_eps,
                                    adam_small_eps=config.sigma_is_beta.adam_small_eps)


def _summarise(config, num_dims, sigmas, rates, results, cases) -> dict:
    summary = {"num_dims": num_dims, "num_steps": config.sigma_is_beta.num_steps,
               "batch_size": config.train.batch_size, "sigmas": sigmas.tolist(),
               "adam_eps": config.sigma_is_beta.adam_eps,
               "adam_small_eps": config.sigma_is_beta.adam_small_eps,
               "cases": {}}
    for name in cases:
        r = results[name]
        final = np.maximum(r["diff_ab"][:, -1], r["diff_ac"][:, -1])  # [S]
        summary["cases"][name] = {
            "learning_rates_a_b_c": _rates(rates, name).tolist(),
            "final_max_diff_a_b": r["diff_ab"][:, -1].tolist(),
            "final_max_diff_a_c": r["diff_ac"][:, -1].tolist(),
            "final_max_diff_b_c": r["diff_bc"][:, -1].tolist(),
            "final_param_scale": r["scale"][:, -1].tolist(),
            "final_displacement_a": r["displacement"][:, -1].tolist(),
            "final_loss_a": r["loss_a"][:, -1].tolist(),
        }
        summary[f"{name}_final_max_diff"] = float(final.max())
        summary[f"{name}_final_max_relative_diff"] = float((final / r["scale"][:, -1]).max())
        summary[f"{name}_max_diff_any_step"] = float(
            max(r["diff_ab"].max(), r["diff_ac"].max()))
    summary["sgd_rescaled_max_diff_b_c_any_step"] = float(
        results["sgd_rescaled"]["diff_bc"].max())
    summary["sgd_rescaled_min_displacement"] = float(
        results["sgd_rescaled"]["displacement"][:, -1].min())
    return summary


def sigma_is_beta_figure(sigmas: np.ndarray, results: dict, num_dims: int, config):
    """One panel per sigma: max |theta_a - theta_k| against step, per case, log y-axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.6 * len(sigmas) + 0.8, 4.2),
                             squeeze=False, sharey=True)
    steps = np.arange(1, config.sigma_is_beta.num_steps + 1)
    for s_idx, (ax, sigma) in enumerate(zip(axes[0], sigmas, strict=True)):
        for c_idx, name in enumerate(results):
            r, label = results[name], _case_label(name, config)
            for key, style, pair in (("diff_ab", "-", "(a)-(b)"), ("diff_ac", "--", "(a)-(c)")):
                ax.semilogy(steps, np.maximum(r[key][s_idx], _LOG_FLOOR), style,
                            color=f"C{c_idx}", lw=1.2, label=f"{label}: {pair}")
        for name, style in (("sgd_rescaled", ":"), ("adam_same_lr", "-.")):
            ax.semilogy(steps, results[name]["displacement"][s_idx], style, color="gray", lw=1,
                        label=f"(a) under {name.split('_')[0].upper()}: max|theta(t) - theta(0)|"
                              " (distance travelled)")
        ax.axhline(_FLOAT32_EPS * float(results["sgd_rescaled"]["scale"][s_idx, -1]),
                   color="black", lw=0.6, ls="-",
                   label=r"float32 eps $\times$ max|theta| (one rounding step)")
        ax.set_title(rf"$\sigma$ = {sigma:g}: $\beta_b$ = {2 * sigma**2:.3g}, "
                     rf"$\beta_c$ = {2 * sigma**2 / num_dims:.3g}", fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(r"max $|\theta_a - \theta_k|$ over all parameters")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=2, fontsize=7,
               frameon=False)
    conventions = (
        "(a) $-\\log\\mathcal{N}(x;\\mu,\\sigma^2 I)$ + KL  (the -ELBO, nats, batch mean)\n"
        "(b) SSE + $\\beta_b$ KL,  $\\beta_b = 2\\sigma^2$,  SSE = $\\sum_i (x_i-\\mu_i)^2$\n"
        f"(c) MSE + $\\beta_c$ KL,  $\\beta_c = 2\\sigma^2/D$,  MSE = SSE/D,  D = {num_dims}\n"
        "(k) = $\\beta_k$ [(a) - const], so rescaled SGD uses $lr_k = lr_a/\\beta_k$\n"
        f"$lr_a = 2\\sigma^2 \\times$ {config.sigma_is_beta.sgd_learning_rate:g}; Adam lr "
        f"{config.sigma_is_beta.adam_learning_rate:g}\n"
        "same initial weights, batches and latent noise for (a), (b), (c)\n"
        f"a difference of exactly 0 is drawn at {_LOG_FLOOR:g}")
    fig.text(0.99, -0.02, conventions, fontsize=7.5, ha="right", va="top", multialignment="left",
             bbox={"boxstyle": "round", "fc": "white", "ec": "gray"})
    fig.suptitle(f"Sigma is beta: three objectives trained side by side on {config.data.dataset} "
                 f"(batch {config.train.batch_size}, {config.model.hidden} hidden, "
                 f"{config.model.latent} latents)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def _report_section(summary: dict, config) -> str:
    rows = []
    for name, case in summary["cases"].items():
        label = _case_label(name, config).replace("$", "").replace("\\beta", "beta")
        for s_idx, sigma in enumerate(summary["sigmas"]):
            lrs = case["learning_rates_a_b_c"][s_idx]
            rows.append([label, sigma, ", ".join(f"{v:.3g}" for v in lrs),
                         case["final_max_diff_a_b"][s_idx], case["final_max_diff_a_c"][s_idx],
                         case["final_displacement_a"][s_idx]])
    table = common.markdown_table(
        ["case", "sigma", "lr (a), (b), (c)", "max abs(a - b) at end", "max abs(a - c) at end",
         "max abs(theta_a(T) - theta(0))"], rows)
    float64 = ""
    if FLOAT64_CASE in summary["cases"]:
        float64 = (
            f" The same comparison in float64 (same weights and batches; its latent noise is "
            f"drawn in float64, so its trajectory is its own) ends at "
            f"**{summary[FLOAT64_CASE + '_final_max_diff']:.2g}**: the float32 gap is rounding "
            "(a ulp at the first step, then carried along by training), not a difference "
            "between the objectives.")
    if BFLOAT16_CASE in summary["cases"]:
        float64 += (
            f" With the model computed in bfloat16 (float32 weights and optimiser, float32 "
            f"accumulation of the loss, the data in bfloat16) the rescaled-SGD gap ends at "
            f"**{summary[BFLOAT16_CASE + '_final_max_diff']:.2g}** "
            f"({summary[BFLOAT16_CASE + '_final_max_relative_diff']:.2g} of the largest "
            f"parameter; bfloat16 eps = 7.8e-3): there sigma = beta holds only to bfloat16 "
            "rounding, because the three backward passes round gradients of different scales.")
    b_c = summary["sgd_rescaled_max_diff_b_c_any_step"]
    if b_c == 0 and summary["num_dims"] & (summary["num_dims"] - 1) == 0:
        b_versus_c = (f"(b) and (c) stay bitwise identical: with D = {summary['num_dims']} a "
                      "power of two, MSE = SSE/D, beta_c = beta_b/D and lr_c = D lr_b are exact "
                      "in binary floating point.")
    else:
        b_versus_c = f"(b) and (c) differ from each other by at most {b_c:.2g}."
    return f"""
![parameter differences between the three objectives](sigma_is_beta.png)

With a fixed decoder sigma, (b) SSE + 2 sigma^2 KL and (c) MSE + (2 sigma^2/D) KL
(D = {summary['num_dims']}) are the -ELBO (a) times beta_b = 2 sigma^2 and beta_c =
2 sigma^2/D, minus a constant. Three copies of one VAE, with the same initial weights,
batches and latent noise, were trained for {summary['num_steps']} steps, one per objective,
for sigma in {summary['sigmas']}. The figure shows, at every step and on a log scale, the
largest difference between any parameter of (a) and the same parameter of (b) (solid) or
(c) (dashed).

* **SGD with the rates rescaled**, lr_k = lr_a / beta_k: the three trajectories coincide.
  The largest difference at the end is **{summary['sgd_rescaled_final_max_diff']:.2g}**
  (**{summary['sgd_rescaled_final_max_relative_diff']:.2g}** of the largest parameter),
  while (a) itself moved by at least {summary['sgd_rescaled_min_displacement']:.2g}.{float64}
  {b_versus_c}
* **SGD with one rate** lr_a for all three: the difference reaches
  **{summary['sgd_same_lr_final_max_diff']:.2g}**, about the whole distance (a) travelled,
  because (b) and (c) take steps beta_k times smaller.
* **Adam with one rate** needs no rescaling (its update m/sqrt(v) does not change when the
  loss is multiplied by a constant), up to its eps: the largest difference is
  **{summary['adam_same_lr_final_max_diff']:.2g}** with eps = {summary['adam_eps']:g} and
  **{summary['adam_same_lr_small_eps_final_max_diff']:.2g}** with eps =
  {summary['adam_small_eps']:g}. eps = {summary['adam_eps']:g} is not negligible next to
  sqrt(v) of (c), whose gradients are 2 sigma^2/D times those of (a).

{table}

Every step's numbers are in `sigma_is_beta.csv`; the summary is `sigma_is_beta.json`.
"""



if __name__ == "__main__":
    common.cli_main("sigma_is_beta", run)
