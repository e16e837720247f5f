"""Scaling of the sharded training epoch over 1, 2, 4, 8 devices: data-parallel and population.

    python -m benchmarks.scaling [--devices 1 2 4 8] [--modes data population] [--epochs 20]
                                 [--population 16] [--batch-size 128] [--jobs 1] [--no-gpu]
                                 [--smoke] [--out PATH]

The computation is the library's own training epoch, the engine's jitted ``Trainer.run``
over one epoch (one ``lax.fori_loop`` over the digits training set), with the trainer
given a device mesh and the state placed as ``vaejax.train.train_and_evaluate`` does:

* ``data``: ``config.run.sharding = "data"``, one model (P = 1) replicated, each batch
  split over the devices along its example axis (GSPMD all-reduces the gradients);
* ``population``: ``config.run.sharding = "population"``, P members (sigmas) split over
  the devices, every device sees every batch.

Model: the default config (digits, D = 64, hidden 200, latent 8, Gaussian decoder with a
fixed sigma, Adam). XLA reads ``--xla_force_host_platform_device_count`` once at start-up,
so each device count runs in a fresh child process (``XLA_FLAGS``, ``JAX_PLATFORMS=cpu``)
that compiles the epoch, runs ``--epochs`` more and reports the median seconds per epoch.
Reported: examples/s (data mode), model-steps/s and examples/s (population mode), the ratio
to the 1-device run, and the relative difference of the final loss to the 1-device run
(sharding must not change the numbers beyond float32 round-off).

Forced host devices are not more hardware: on the 2-core development machine every
"device" shares the same 2 cores, so ratios near or below 1 are expected (above 1 only where
a single device leaves a core idle: small ops run on one thread) and what is measured is
the overhead of the sharding (collectives, partitioned scheduling), not a speed-up. When
GPUs are present (``jax.devices("gpu")``) the same runs are repeated on the real devices.
Writes benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import common

MODES = ("data", "population")
HOST_NOTE = ("forced host devices (--xla_force_host_platform_device_count) share this "
             "machine's {cpus} CPU cores: no device count adds hardware, so ratios near or below "
             "1 are expected (above 1 only where one device left a core idle); they measure the "
             "overhead of the sharding, not a speed-up")


# --------------------------------------------------------------------------- child side
def _config(mode: str, spec: dict):
    from experiments.configs import default

    config = default.get_config("smoke" if spec["smoke"] else None)
    config.run.sharding = mode
    config.run.num_devices = spec["devices"]
    config.train.batch_size = spec["batch_size"]
    config.run.progress = False
    if mode == "population":
        size = spec["population"]
        config.population.sigma = tuple(np.logspace(-1.5, 0, size).tolist())
        config.population.seed = tuple(range(size))
    return config


def measure_mode(mode: str, spec: dict, train_np: np.ndarray) -> dict:
    """Seconds per sharded epoch of ``mode`` on ``spec["devices"]`` devices (this process)."""
    import jax
    import jax.numpy as jnp

    from vaejax import sharding
    from vaejax import trainer as trainer_lib
    from vaejax.data import Dataset

    config = _config(mode, spec)
    size = spec["population"] if mode == "population" else 1
    mesh = sharding.make_mesh(config.run.num_devices)
    sharding.check_mode(mode, mesh, population=size, batch_size=config.train.batch_size)
    side = int(round(train_np.shape[1] ** 0.5))
    dataset = Dataset(name="synthetic", train=train_np, test=train_np[:1],
                      image_shape=(side, train_np.shape[1] // side), binary=False)
    trainer, members = trainer_lib.build(config, dataset, mesh=mesh)
    # Placement as in train_and_evaluate: state and members split ("population") or replicated.
    members = sharding.put_population(members, mesh, mode)
    state = sharding.put_population(trainer.jit.init(members), mesh, mode)
    train_data = sharding.put_replicated(jnp.asarray(train_np), mesh)
    steps = trainer.steps_per_epoch(train_np.shape[0])
    tic = time.perf_counter()
    run = jax.jit(trainer.run, donate_argnums=(0,)).lower(
        state, train_data, members, jnp.int32(0), jnp.int32(steps)).compile()
    compile_s = time.perf_counter() - tic
    all_reduces = run.as_text().count("all-reduce")
    params_devices = len(jax.tree.leaves(state.params)[0].sharding.device_set)
    state, metrics = run(state, train_data, members, jnp.int32(0), jnp.int32(steps))  # warm-up
    jax.block_until_ready(metrics)
    seconds = []
    for epoch in range(1, spec["epochs"] + 1):
        tic = time.perf_counter()
        state, metrics = run(state, train_data, members, jnp.int32(epoch * steps),
                             jnp.int32((epoch + 1) * steps))
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - tic)
    median = float(np.median(seconds))
    return {"mode": mode, "devices": spec["devices"], "population": size,
            "batch_size": config.train.batch_size, "steps_per_epoch": steps,
            "hidden": config.model.hidden, "latent": config.model.latent,
            "compile_seconds": compile_s, **common.summary(seconds),
            "examples_per_second": size * steps * config.train.batch_size / median,
            "model_steps_per_second": size * steps / median,
            "final_loss": float(np.mean(np.asarray(metrics.loss))),
            "params_on_devices": params_devices, "all_reduce_ops_in_hlo": all_reduces}


def child_main(spec_json: str) -> None:
    """Runs every mode of ``spec`` on this process's devices; prints one JSON line."""
    import jax

    spec = json.loads(spec_json)
    out = {"devices": spec["devices"], "device_count": jax.device_count(),
           "platform": jax.devices()[0].platform,
           "device_kind": jax.devices()[0].device_kind, "modes": {}}
    train_np = np.load(spec["data_path"])
    for mode in spec["modes"]:
        try:
            out["modes"][mode] = measure_mode(mode, spec, train_np)
        except Exception as err:  # reported per mode: one mode failing keeps the other
            import traceback

            out["modes"][mode] = {"error": f"{type(err).__name__}: {err}",
                                  "traceback": traceback.format_exc()[-1500:]}
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- parent side
def run_devices(devices: int, spec: dict, platform: str, timeout: float) -> dict:
    """One child process with ``devices`` devices (forced host devices on "cpu")."""
    import os

    spec = {**spec, "devices": devices}
    if platform == "cpu":
        flags = os.environ.get("XLA_FLAGS", "")
        env = {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
               "JAX_PLATFORMS": "cpu"}
    else:
        env = {"JAX_PLATFORMS": platform}
    code = f"from benchmarks.scaling import child_main; child_main({json.dumps(spec)!r})"
    tic = time.perf_counter()
    result = common.run_child(code, env=env, timeout=timeout)
    result["child_wall_seconds"] = time.perf_counter() - tic
    if result.get("returncode") != 0 and "modes" not in result:
        result["error"] = result.get("error") or (result.get("stderr_tail") or "")[-1500:]
    return result


def run_all_devices(counts: list[int], spec: dict, platform: str, args) -> dict[int, dict]:
    """{devices: child result} for each count, ``args.jobs`` children at a time."""
    def one(devices):
        result = run_devices(devices, spec, platform, args.timeout)
        print(f"  {platform} x{devices}: {result['child_wall_seconds']:.0f} s", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        return dict(zip(counts, pool.map(one, counts), strict=True))


def gpu_count(timeout: float = 120) -> int:
    """GPUs visible to a fresh JAX process (0 when no CUDA plugin or driver is present).

    Probed in a child so that this process never claims the GPU memory the runs need.
    """
    plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins.xla_cuda12")
    has_plugin = any(_find_spec(name) for name in plugins)
    if not (has_plugin or shutil.which("nvidia-smi")):
        return 0
    code = ("import json, jax\ntry:\n    n = len(jax.devices('gpu'))\nexcept RuntimeError:\n"
            "    n = 0\nprint(json.dumps({'gpus': n}))")
    return int(common.run_child(code, timeout=timeout).get("gpus", 0) or 0)


def _find_spec(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def collect(results: dict[int, dict], modes: list[str], platform: str) -> list[dict]:
    """Rows (mode x devices) with the ratio of each throughput to the 1-device run."""
    rows = []
    for mode in modes:
        base = results.get(1, {}).get("modes", {}).get(mode, {})
        for devices, result in sorted(results.items()):
            side = result.get("modes", {}).get(mode)
            if side is None or "error" in side:
                reason = (side or {}).get("error") or result.get("error", "no result")
                rows.append({"platform": platform, "mode": mode, "devices": devices,
                             "error": reason})
                continue
            row = {"platform": platform, "device_kind": result.get("device_kind"),
                   "device_count_in_child": result.get("device_count"), **side}
            row["ratio_examples_per_second_vs_1_device"] = common.ratio(
                side["examples_per_second"], base.get("examples_per_second", math.nan))
            row["ratio_model_steps_per_second_vs_1_device"] = common.ratio(
                side["model_steps_per_second"], base.get("model_steps_per_second", math.nan))
            reference = base.get("final_loss", math.nan)
            row["final_loss_relative_difference_vs_1_device"] = (
                abs(side["final_loss"] - reference) / abs(reference) if reference else math.nan)
            rows.append(row)
    return rows


def print_rows(rows: list[dict]) -> None:
    common.print_table(
        ["platform", "mode", "devices", "P", "s/epoch", "examples/s", "model-steps/s",
         "x 1 device", "compile s", "loss rel diff"],
        [[r["platform"], r["mode"], r["devices"], r.get("population", "-"),
          r.get("median_s", math.nan), r.get("examples_per_second", math.nan),
          r.get("model_steps_per_second", math.nan),
          r.get("ratio_examples_per_second_vs_1_device", math.nan),
          r.get("compile_seconds", math.nan),
          r.get("final_loss_relative_difference_vs_1_device", math.nan)] for r in rows])
    for r in rows:
        if "error" in r:
            print(f"FAILED {r['platform']} {r['mode']} on {r['devices']} devices: "
                  f"{r['error'][-300:]}")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=None,
                        help="device counts (default 1 2 4 8; smoke: 1 2)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs after the warm-up (default 20; smoke: 2)")
    parser.add_argument("--population", type=int, default=None,
                        help="P in population mode, a multiple of every device count "
                             "(default 16; smoke: 8)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="a multiple of every device count (default 128; smoke: 48)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="device counts run at once (default 1; smoke: 2). Above 1 the "
                             "children share the cores: timings interfere")
    parser.add_argument("--no-gpu", action="store_true", help="skip the real-GPU runs")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child")
    parser.add_argument("--smoke", action="store_true", help="smoke config, P=8, 2 epochs (CI)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    smoke = args.smoke
    args.devices = args.devices or ([1, 2] if smoke else [1, 2, 4, 8])
    args.epochs = args.epochs or (2 if smoke else 20)
    args.population = args.population or (8 if smoke else 16)
    args.batch_size = args.batch_size or (48 if smoke else 128)
    args.jobs = args.jobs or (2 if smoke else 1)
    for devices in args.devices:
        if devices < 1:
            parser.error(f"--devices must be >= 1, got {devices}")
        if "population" in args.modes and args.population % devices:
            parser.error(f"--population {args.population} is not a multiple of {devices} "
                         "devices")
        if "data" in args.modes and args.batch_size % devices:
            parser.error(f"--batch-size {args.batch_size} is not a multiple of {devices} "
                         "devices")
    if 1 not in args.devices:
        args.devices = [1, *args.devices]  # the reference of every ratio
    args.devices = sorted(set(args.devices))
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    from vaejax import data as data_lib

    cpus = common.num_threads()
    note = HOST_NOTE.format(cpus=cpus)
    rows, children = [], {}
    with tempfile.TemporaryDirectory(prefix="vaejax-scaling-") as tmp:
        data_path = str(Path(tmp) / "digits_train.npy")
        np.save(data_path, data_lib.load_dataset("digits").train)
        spec = {"modes": args.modes, "epochs": args.epochs, "population": args.population,
                "batch_size": args.batch_size, "smoke": args.smoke, "data_path": data_path}
        print(f"scaling: {', '.join(args.modes)} on {args.devices} forced host devices "
              f"(one child each), {args.epochs} timed epochs; note: {note}", flush=True)
        host = run_all_devices(args.devices, spec, "cpu", args)
        children["cpu"] = host
        rows += collect(host, args.modes, "cpu")
        gpus = 0 if args.no_gpu else gpu_count()
        if gpus:
            counts = [n for n in (1, 2, 4, 8, 16) if n <= gpus and args.population % n == 0
                      and args.batch_size % n == 0]
            real = run_all_devices(counts, spec, "cuda", args)
            children["gpu"] = real
            rows += collect(real, args.modes, "gpu")
    failed = [r for r in rows if "error" in r]
    record = {"modes": args.modes, "device_counts": args.devices, "epochs": args.epochs,
              "population": args.population, "batch_size": args.batch_size,
              "cpus_usable": cpus, "gpus": gpus, "note": note, "rows": rows,
              "jobs": args.jobs, "timings_interfere": args.jobs > 1,
              "num_failed": len(failed),
              "child_wall_seconds": {p: {str(n): c["child_wall_seconds"] for n, c in r.items()}
                                     for p, r in children.items()},
              "model": "smoke config (digits 64-16-2)" if args.smoke
              else "default config (digits 64-200-8, gaussian_fixed, Adam)"}
    path = common.write_record("scaling", record, args.out, argv)
    print(f"\nsharded epoch scaling, {record['model']}; median of {args.epochs} epochs per "
          "device count")
    print_rows(rows)
    print(f"note: {note}.")
    if args.jobs > 1:
        print(f"note: {args.jobs} children ran at once (--jobs): the timings interfere.")
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
