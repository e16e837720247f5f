"""Runs every benchmark in order, then prints the key ratios read back from their JSON records.

    python -m benchmarks.run_all [--smoke] [--only NAME ...] [--no-torch] [--out-dir DIR]
    ./launch.sh bench [--smoke] ...          (installs the [bench] extra with PyTorch first)

Benchmarks, each through its ``main(argv)``: train_step, gradient_sweep,
population_training, iwae, scaling. ``--smoke`` is passed through (tiny sizes, seconds
each) and ``--no-torch`` to those with a PyTorch peer. A full run writes the records kept
in git, ``benchmarks/results/<name>.json``; a smoke run never touches them: its records go
to ``--out-dir`` or a fresh temporary directory (printed). One failing benchmark does not
stop the others: its traceback is printed, the summary names it and the exit code is 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS

BENCHMARKS = ("train_step", "gradient_sweep", "population_training", "iwae", "scaling")
TORCH_PEERS = frozenset({"train_step", "gradient_sweep"})  # the ones with --no-torch


def load_benchmark(name: str):
    """The benchmark module ``benchmarks.<name>`` (it has ``main(argv) -> int``)."""
    return importlib.import_module(f"benchmarks.{name}")


def benchmark_argv(name: str, args, out: Path | None) -> list[str]:
    argv = ["--smoke"] if args.smoke else []
    if args.no_torch and name in TORCH_PEERS:
        argv.append("--no-torch")
    if out is not None:
        argv += ["--out", str(out)]
    return argv


def run_one(name: str, argv: list[str]) -> tuple[bool, str]:
    """Runs one benchmark's ``main(argv)``; returns (ok, why not)."""
    try:
        code = load_benchmark(name).main(argv)
    except SystemExit as exit_:  # argparse errors and explicit exits
        code = exit_.code
    except Exception:  # report and go on with the next benchmark
        traceback.print_exc()
        return False, traceback.format_exc().strip().splitlines()[-1]
    if code not in (0, None):
        return False, f"main returned {code}"
    return True, ""


# --------------------------------------------------------------------------- summaries
def _x(value) -> str:
    """A ratio as "1.23x"; "-" where the record has none (a missing peer: null in JSON)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.2f}x"


def summarize_train_step(record: dict) -> list[str]:
    return [f"batch {row['batch_size']}: vaejax vs torch eager "
            f"{_x(row.get('speedup_vs_torch_eager'))}, vs torch.compile "
            f"{_x(row.get('speedup_vs_torch_compile'))}, "
            f"{row['sides']['vaejax']['fraction_of_peak']:.0%} of peak matmul"
            for row in record["rows"]]


def summarize_gradient_sweep(record: dict) -> list[str]:
    return [f"{row['decoder']}: fused vs loop {_x(row.get('speedup_fused_vs_loop'))} (best "
            f"{_x(row.get('speedup_best_fused_vs_loop'))}), fused vs torch.func "
            f"{_x(row.get('speedup_fused_vs_torch_func'))}" for row in record["rows"]]


def summarize_population_training(record: dict) -> list[str]:
    return [f"P={row['population']}: {_x(row['speedup_vs_sequential'])} vs P sequential "
            f"single-model epochs, {row['model_steps_per_second']:.0f} model-steps/s"
            for row in record["rows"]]


def summarize_iwae(record: dict) -> list[str]:
    ratios, search, k = record["ratios"], record["oom_search"], record["num_samples"]
    lines = [f"K={k} x {record['num_examples']}: unchunked "
             f"{'fits' if ratios['unchunked_fits_at_k'] else 'does not fit'} in "
             f"{record['memory_cap_gib']:g} GiB; XLA estimate unchunked/chunked "
             + ", ".join(f"{name[8:]}: {_x(value)}" for name, value in
                         ratios["unchunked_over_chunked_xla_total_at_k"].items())]
    at = ratios["measured_at_k"]
    lines += [f"K={at}: peak RSS unchunked/{name} {_x(value)}, speed {name}/unchunked "
              f"{_x(ratios['speedup_vs_unchunked'].get(name))}"
              for name, value in ratios["unchunked_over_chunked_peak_rss"].items()]
    if "first_failing_num_samples" in search:
        failing = search["first_failing_num_samples"]
        oom = (f"unchunked out of memory from K={failing}" if failing is not None
               else "unchunked never out of memory")
        lines.append(f"{oom} (last ran: K={search['last_running_num_samples']}); chunk "
                     f"{search['chunk_size']} runs up to K={search['chunked_largest_k_that_ran']}"
                     f" (peak RSS largest/smallest K "
                     f"{_x(search.get('chunked_peak_rss_ratio_largest_vs_smallest_k'))})")
    agree = record["timing"]["agreement"]
    if agree.get("reference"):
        lines.append(f"max relative difference between sides "
                     f"{agree['worst_relative_difference']:.1e}")
    return lines


def summarize_scaling(record: dict) -> list[str]:
    lines = []
    for row in record["rows"]:
        if "error" in row:
            lines.append(f"{row['platform']} {row['mode']} x{row['devices']}: FAILED")
        else:
            lines.append(f"{row['platform']} {row['mode']} x{row['devices']}: "
                         f"{_x(row['ratio_examples_per_second_vs_1_device'])} of 1 device")
    return lines + [f"({record['note']})"]


SUMMARIES: dict[str, Callable[[dict], list[str]]] = {
    "train_step": summarize_train_step,
    "gradient_sweep": summarize_gradient_sweep,
    "population_training": summarize_population_training,
    "iwae": summarize_iwae,
    "scaling": summarize_scaling,
}


def summary_lines(name: str, path: Path) -> list[str]:
    """The key ratios of one record, or why they cannot be read."""
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return [f"no record at {path} ({type(err).__name__})"]
    try:
        return SUMMARIES.get(name, lambda _: ["(no summary for this benchmark)"])(record)
    except (KeyError, TypeError, IndexError) as err:
        return [f"record {path} lacks {err!r}"]


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (never overwrites "
                        "benchmarks/results/)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, metavar="NAME",
                        help=f"a subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    parser.add_argument("--out-dir", default=None,
                        help="directory of the JSON records (default: benchmarks/results/; "
                             "smoke: a new temporary directory)")
    args = parser.parse_args(argv)
    names = [name for name in BENCHMARKS if args.only is None or name in args.only]
    if args.out_dir:
        out_dir = Path(args.out_dir)
    elif args.smoke:
        out_dir = Path(tempfile.mkdtemp(prefix="vaejax-bench-smoke-"))
    else:
        out_dir = RESULTS
    if args.smoke and out_dir.resolve() == RESULTS.resolve():
        parser.error("smoke records must not overwrite benchmarks/results/; pick another "
                     "--out-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmarks: {', '.join(names)}; records in {out_dir}", flush=True)

    outcomes: dict[str, tuple[bool, str, float]] = {}
    for index, name in enumerate(names, 1):
        print(f"\n{'=' * 78}\n[{index}/{len(names)}] {name}\n{'=' * 78}", flush=True)
        tic = time.perf_counter()
        ok, why = run_one(name, benchmark_argv(name, args, out_dir / f"{name}.json"))
        outcomes[name] = (ok, why, time.perf_counter() - tic)
        if not ok:
            print(f"[{name}] FAILED: {why}", flush=True)

    kind = "smoke run: sizes too small for the numbers to mean anything" if args.smoke else (
        "full run")
    print(f"\n{'=' * 78}\nsummary ({kind})\n{'=' * 78}")
    for name, (ok, why, seconds) in outcomes.items():
        print(f"{name} ({seconds:.0f} s){'' if ok else f': FAILED ({why})'}")
        for line in summary_lines(name, out_dir / f"{name}.json") if ok else []:
            print(f"  {line}")
    failed = [name for name, (ok, _, _) in outcomes.items() if not ok]
    if failed:
        print(f"\n{len(failed)} of {len(names)} benchmarks failed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(names)} benchmarks ran; records in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
