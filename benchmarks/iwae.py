"""IWAE evaluation with K importance samples: the chunked bound against one vmap over all K.

    python -m benchmarks.iwae [--samples 5000] [--examples 1000] [--chunk-sizes 50 250 1000]
                              [--dims 64|784] [--repeats 3] [--memory-cap-gib 8]
                              [--oom-samples 1000 2000 5000 10000 20000 50000 100000]
                              [--oom-chunk 250] [--jobs 1] [--threads N] [--smoke]
                              [--out PATH]

The computation is :func:`vaejax.elbo.iwae_bound` of vaejax's VAE (Bernoulli decoder)
on ``--examples`` inputs, jitted: the per-example bound log 1/K sum_k p(x, z_k)/q(z_k|x).
Model: the bundled-digits size by default (D = 64, hidden 200, latent 8; the digits,
statically binarised), or ``--dims 784`` (MNIST size: hidden 500, latent 20, random
binary inputs; speed does not depend on the pixel values). Sides:

* ``chunked_<C>``: the library's ``lax.scan`` over chunks of C samples with a running
  log-sum-exp (memory of C decoder passes);
* ``unchunked``: the same function with ``chunk_size = K``: one vmap over all K samples
  (memory of K decoder passes, the [K, B, hidden] and [K, B, D] activations).

Measured:

* speed: examples/s of each side, medians of ``--repeats`` interleaved calls in this
  process (only sides that ran under the memory cap in a child are run here);
* peak memory: each (K, chunk size) runs once in a fresh child process whose address space
  is capped at ``--memory-cap-gib`` (RLIMIT_AS, so the shared machine is safe); it reports
  its peak RSS (VmHWM) after compiling and after the run, and XLA's own estimate
  (``jax.jit(f).lower(...).compile().memory_analysis()``: arguments + outputs + temporaries);
* the out-of-memory point: the unchunked side runs at increasing K (``--oom-samples``) until
  a child fails (MemoryError, an XLA allocation error, or a non-zero exit), and the chunked
  side (``--oom-chunk``) runs at the same K values, its memory flat in K;
* agreement: the library documents that the bound does not depend on ``chunk_size`` (sample
  k always uses ``fold_in(key, k)``), so every side must give the same values up to float32
  summation order. When the unchunked side does not fit at K, speed and agreement against
  it are measured again at the largest K where it ran.

Writes benchmarks/results/iwae.json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from vaejax import heads
from vaejax.elbo import iwae_bound
from vaejax.models import VAE

# D -> (hidden, latent): the bundled digits and AEVB's MNIST network.
MODEL_SIZES = {64: (200, 8), 784: (500, 20)}
SMOKE_SIZE = (16, 2)
GIB = 2**30
MIB = 2**20
BOUND_KEY = 1  # every side uses the same key, hence the same K samples


# --------------------------------------------------------------------------- the problem
def make_problem(spec: dict) -> tuple[VAE, dict, jax.Array]:
    """The VAE, its (untrained, seeded) parameters and the [B, D] inputs of ``spec``."""
    dims, examples = spec["dims"], spec["examples"]
    vae = VAE(hidden=spec["hidden"], latent=spec["latent"], output_dim=dims,
              likelihood="bernoulli")
    if spec["data"] == "digits":
        from vaejax import data as data_lib

        digits = data_lib.load_dataset("digits", binarize="static")
        rows = np.concatenate([digits.train, digits.test])
        x_np = np.resize(rows, (examples, dims))  # cycles through the 1797 digits if needed
    else:
        rng = np.random.default_rng(0)
        x_np = (rng.random((examples, dims)) < 0.3).astype(np.float32)
    x = jnp.asarray(x_np, jnp.float32)
    params = jax.jit(vae.init)(jax.random.key(0), x[:1], jax.random.key(0))
    return vae, params, x


def save_problem(problem, path: str) -> None:
    """Writes the parameters and inputs for the children (same numbers, no re-init there)."""
    from flax import serialization

    _, params, x = problem
    blob = {"params": jax.tree.map(np.asarray, params), "x": np.asarray(x)}
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(blob))


def load_problem(spec: dict) -> tuple[VAE, dict, jax.Array]:
    """The problem ``save_problem`` wrote to ``spec["problem_path"]``."""
    from flax import serialization

    with open(spec["problem_path"], "rb") as f:
        blob = serialization.msgpack_restore(f.read())
    vae = VAE(hidden=spec["hidden"], latent=spec["latent"], output_dim=spec["dims"],
              likelihood="bernoulli")
    return vae, jax.tree.map(jnp.asarray, blob["params"]), jnp.asarray(blob["x"])


def iwae_per_example(params, x: jax.Array, key: jax.Array, *, vae: VAE, num_samples: int,
                     chunk_size: int) -> jax.Array:
    """[B] IWAE bound of ``vae`` at x [B, D] with K samples in chunks (the library's path)."""
    mean, log_var = vae.apply(params, x, method=VAE.encode)

    def log_likelihood(z):
        return heads.log_likelihood("bernoulli", x, vae.apply(params, z, method=VAE.decode))

    return iwae_bound(key, mean, log_var, log_likelihood, num_samples=num_samples,
                      chunk_size=chunk_size)


_iwae = jax.jit(iwae_per_example, static_argnames=("vae", "num_samples", "chunk_size"))


def side_name(chunk_size: int, num_samples: int) -> str:
    return "unchunked" if chunk_size >= num_samples else f"chunked_{chunk_size}"


# --------------------------------------------------------------------------- memory (child)
def xla_memory(compiled) -> dict:
    """XLA's buffer estimate of a compiled function, in MiB (empty where not provided)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return {}
    if stats is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes", "generated_code_size_in_bytes")
    values = {f: getattr(stats, f, None) for f in fields}
    out = {f.replace("_in_bytes", "_mib"): v / MIB for f, v in values.items() if v is not None}
    if all(values[f] is not None for f in fields[:4]):
        total = (values["argument_size_in_bytes"] + values["output_size_in_bytes"]
                 - values["alias_size_in_bytes"] + values["temp_size_in_bytes"])
        out["total_mib"] = total / MIB
    return out


def _max_rss_mib() -> float:
    """This process's peak resident memory (MiB).

    /proc's VmHWM belongs to the process's own address space; ``ru_maxrss`` can carry the
    peak of the parent that spawned it (subprocess's vfork/posix_spawn path), which made
    every child report the parent's 9 GiB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_main(spec_json: str) -> None:
    """Runs one (K, chunk size) once in this fresh process; prints JSON lines.

    A line after compiling (so a child killed by the allocator still reports XLA's
    estimate) and a last line after the run with the peak resident memory.
    """
    spec = json.loads(spec_json)
    common.use_threads(spec.get("threads"))
    out = {"num_samples": spec["num_samples"], "chunk_size": spec["chunk_size"]}
    try:
        vae, params, x = load_problem(spec)
        key = jax.random.key(BOUND_KEY)
        compiled = _iwae.lower(params, x, key, vae=vae, num_samples=spec["num_samples"],
                               chunk_size=spec["chunk_size"]).compile()
        out.update(stage="compiled", xla=xla_memory(compiled),
                   rss_after_compile_mib=_max_rss_mib())
        print(json.dumps(out), flush=True)
        tic = time.perf_counter()
        bound = np.asarray(jax.block_until_ready(compiled(params, x, key)))
        out.update(stage="ran", seconds=time.perf_counter() - tic, peak_rss_mib=_max_rss_mib(),
                   mean_bound=float(np.mean(bound)), finite=bool(np.all(np.isfinite(bound))))
    except Exception as err:  # MemoryError, XlaRuntimeError RESOURCE_EXHAUSTED, ...
        out.update(stage="failed", error=f"{type(err).__name__}: {str(err)[:500]}")
        print(json.dumps(out), flush=True)
        sys.exit(1)
    print(json.dumps(out), flush=True)


def _failure_reason(result: dict) -> str:
    if result.get("error"):
        return result["error"]
    tail = (result.get("stderr_tail") or "").strip().splitlines()
    return f"exit code {result.get('returncode')}" + (f": {tail[-1][:300]}" if tail else "")


class MemoryProbe:
    """Measures configurations in capped child processes; each (K, chunk) runs once.

    ``jobs`` children may run at once (each has its own peak; only their wall time
    interferes): keep jobs * cap within the machine's memory.
    """

    def __init__(self, spec: dict, cap_bytes: int, *, jobs: int = 1,
                 timeout: float | None = None):
        self.spec, self.cap_bytes, self.jobs, self.timeout = spec, cap_bytes, jobs, timeout
        self.results: dict[tuple[int, int], dict] = {}

    def measure(self, num_samples: int, chunk_size: int) -> dict:
        """{ok, peak_rss_mib, run_rss_increase_mib, xla..., seconds} or {ok: False, reason}."""
        return self.measure_all([(num_samples, chunk_size)])[0]

    def measure_all(self, configs: list[tuple[int, int]]) -> list[dict]:
        """``measure`` of each (K, chunk size), up to ``jobs`` children at a time."""
        configs = [(k, min(c, k)) for k, c in configs]
        todo = list(dict.fromkeys(c for c in configs if c not in self.results))
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
                for config, result in zip(todo, pool.map(lambda c: self._run(*c), todo),
                                          strict=True):
                    self.results[config] = result
        return [self.results[c] for c in configs]

    def _run(self, num_samples: int, chunk_size: int) -> dict:
        spec = {**self.spec, "num_samples": num_samples, "chunk_size": chunk_size}
        code = f"from benchmarks.iwae import child_main; child_main({json.dumps(spec)!r})"
        raw = common.run_child(code, memory_limit_bytes=self.cap_bytes, timeout=self.timeout)
        ok = raw.get("returncode") == 0 and raw.get("stage") == "ran"
        result = {"num_samples": num_samples, "chunk_size": chunk_size,
                  "side": side_name(chunk_size, num_samples), "ok": ok,
                  "xla": raw.get("xla", {}),
                  "rss_after_compile_mib": raw.get("rss_after_compile_mib", math.nan)}
        if ok:
            result.update(peak_rss_mib=raw["peak_rss_mib"], seconds=raw["seconds"],
                          run_rss_increase_mib=raw["peak_rss_mib"]
                          - raw["rss_after_compile_mib"], finite=raw["finite"])
        else:
            result.update(peak_rss_mib=math.nan, reason=_failure_reason(raw),
                          failed_after_compile=raw.get("stage") == "compiled")
        status = (f"peak RSS {result['peak_rss_mib']:.0f} MiB" if ok
                  else f"FAILED ({result['reason'][:120]})")
        print(f"  memory K={num_samples} chunk={chunk_size}: {status}; XLA estimate "
              f"{result['xla'].get('total_mib', math.nan):.0f} MiB", flush=True)
        return result


# --------------------------------------------------------------------------- speed (parent)
def time_sides(problem, num_samples: int, chunk_sizes: list[int], repeats: int):
    """Medians of interleaved calls of each side; returns ({name: stats}, {name: [B] values}).

    The first call of each side (compile + run) gives its values and is the warm-up.
    """
    vae, params, x = problem
    key = jax.random.key(BOUND_KEY)
    examples = int(x.shape[0])
    sides, values = {}, {}
    for chunk in chunk_sizes:
        name = side_name(chunk, num_samples)

        def call(chunk=chunk):
            return common.block(_iwae(params, x, key, vae=vae, num_samples=num_samples,
                                      chunk_size=chunk))

        values[name] = np.asarray(call())
        sides[name] = call
    times = common.interleaved(sides, repeats=repeats, warmup=0)
    stats = {}
    for name, seconds in times.items():
        summary = common.summary(seconds)
        stats[name] = {**summary, "examples_per_second": examples / summary["median_s"]}
    return stats, values


def agreement(values: dict[str, np.ndarray]) -> dict:
    """Max |difference| of every side's [B] bound against the reference side (nats)."""
    reference = "unchunked" if "unchunked" in values else next(iter(values), None)
    if reference is None:
        return {"reference": None}
    ref = values[reference].astype(np.float64)
    out = {"reference": reference, "mean_bound_nats": float(np.mean(ref)),
           "max_abs_difference_nats": {}, "max_relative_difference": {}}
    for name, value in values.items():
        if name == reference:
            continue
        diff = np.abs(value.astype(np.float64) - ref)
        out["max_abs_difference_nats"][name] = float(np.max(diff))
        out["max_relative_difference"][name] = float(np.max(diff / np.abs(ref)))
    diffs = list(out["max_relative_difference"].values())
    out["worst_relative_difference"] = max(diffs) if diffs else 0.0
    return out


def timed_comparison(problem, probe: MemoryProbe, num_samples: int, chunk_sizes: list[int],
                     repeats: int) -> dict:
    """Speed and agreement at K of the sides (chunk sizes < K, and unchunked) that fit."""
    wanted = sorted({min(c, num_samples) for c in chunk_sizes} | {num_samples})
    probe.measure_all([(num_samples, c) for c in wanted])
    fitting = [c for c in wanted if probe.measure(num_samples, c)["ok"]]
    skipped = {side_name(c, num_samples): probe.measure(num_samples, c)["reason"]
               for c in wanted if c not in fitting}
    stats, values = time_sides(problem, num_samples, fitting, repeats) if fitting else ({}, {})
    for chunk in fitting:
        stats[side_name(chunk, num_samples)]["chunk_size"] = chunk
    memory = {side_name(c, num_samples): probe.measure(num_samples, c) for c in wanted}
    result = {"num_samples": num_samples, "sides": stats, "skipped_over_memory_cap": skipped,
              "agreement": agreement(values), "memory": memory}
    if "unchunked" in stats:
        base = stats["unchunked"]["examples_per_second"]
        result["speedup_vs_unchunked"] = {
            name: common.ratio(side["examples_per_second"], base)
            for name, side in stats.items() if name != "unchunked"}
    return result


# --------------------------------------------------------------------------- OOM search
def oom_search(probe: MemoryProbe, ladder: list[int], chunk_size: int) -> dict:
    """Unchunked at increasing K until a child fails under the cap; chunked at the same K."""
    rows, first_failing, last_running = [], None, None
    for num_samples in ladder:
        unchunked, chunked = probe.measure_all([(num_samples, num_samples),
                                                (num_samples, chunk_size)])
        rows.append({"num_samples": num_samples, "unchunked": unchunked, "chunked": chunked})
        if not unchunked["ok"]:
            first_failing = num_samples
            break
        last_running = num_samples
    beyond = [n for n in ladder if first_failing is not None and n > first_failing][:1]
    for num_samples in beyond:  # chunked only: memory stays flat past the unchunked limit
        rows.append({"num_samples": num_samples, "unchunked": None,
                     "chunked": probe.measure(num_samples, chunk_size)})
    chunked_ok = [r["chunked"] for r in rows if r["chunked"]["ok"]]
    result = {"ladder": ladder, "chunk_size": chunk_size, "rows": rows,
              "first_failing_num_samples": first_failing,
              "last_running_num_samples": last_running,
              "chunked_runs_at_first_failing": next(
                  (r["chunked"]["ok"] for r in rows if r["num_samples"] == first_failing), None),
              "chunked_largest_k_that_ran": chunked_ok[-1]["num_samples"] if chunked_ok else None}
    if len(chunked_ok) >= 2:  # about 1: memory flat in K
        result["chunked_peak_rss_ratio_largest_vs_smallest_k"] = common.ratio(
            chunked_ok[-1]["peak_rss_mib"], chunked_ok[0]["peak_rss_mib"])
    if first_failing is None:
        result["note"] = (f"the unchunked side ran at every K up to {ladder[-1]} under the "
                          f"cap: no out-of-memory point in this ladder")
    return result


# --------------------------------------------------------------------------- report
def _memory_ratios(memory: dict) -> tuple[dict, dict]:
    """unchunked / chunked of the peak RSS and of XLA's estimate, per chunked side."""
    unchunked = memory.get("unchunked", {})
    rss, xla = {}, {}
    for name, side in memory.items():
        if name == "unchunked":
            continue
        rss[name] = common.ratio(unchunked.get("peak_rss_mib", math.nan), side["peak_rss_mib"])
        xla[name] = common.ratio(unchunked.get("xla", {}).get("total_mib", math.nan),
                                 side["xla"].get("total_mib", math.nan))
    return rss, xla


def _ratios(memory: dict, timing: dict, comparison: dict | None, num_samples: int) -> dict:
    """Memory and speed ratios of the chunked sides against the unchunked one.

    Measured at K when the unchunked side fits there, else at the comparison K (the
    largest where it ran); XLA's estimate is given at K in any case.
    """
    fits = bool(memory.get("unchunked", {}).get("ok"))
    source = timing if fits else comparison
    rss, _ = _memory_ratios(memory if fits else (comparison or {}).get("memory", {}))
    _, xla_at_k = _memory_ratios(memory)
    return {"unchunked_fits_at_k": fits,
            "measured_at_k": num_samples if fits else (comparison or {}).get("num_samples"),
            "unchunked_over_chunked_peak_rss": rss,
            "unchunked_over_chunked_xla_total_at_k": xla_at_k,
            "speedup_vs_unchunked": (source or {}).get("speedup_vs_unchunked", {})}


def _memory_table(memory: dict, sides: dict) -> None:
    rows = [[name, mem["chunk_size"], sides.get(name, {}).get("examples_per_second", math.nan),
             sides.get(name, {}).get("median_s", math.nan), mem["peak_rss_mib"],
             mem.get("run_rss_increase_mib", math.nan), mem["xla"].get("total_mib", math.nan),
             "ok" if mem["ok"] else "OOM/failed"] for name, mem in memory.items()]
    common.print_table(["side", "chunk", "examples/s", "s/call", "peak RSS MiB", "run +MiB",
                        "XLA est MiB", "status"], rows)


def _mib_or_oom(result: dict | None):
    if result is None:
        return "not tried"
    return result["peak_rss_mib"] if result["ok"] else "OOM"


def print_report(record: dict) -> None:
    """The tables and ratios of a record on stdout."""
    k, b = record["num_samples"], record["num_examples"]
    print(f"\nIWAE bound, {record['model']}; {b} examples; {record['threads']} threads; "
          f"medians of {record['repeats']} interleaved repeats; memory of one call in a fresh "
          f"child capped at {record['memory_cap_gib']:g} GiB (address space)")
    print(f"K = {k}:")
    _memory_table(record["memory"], record["timing"]["sides"])
    comparison = record.get("unchunked_comparison")
    if comparison:
        print(f"\nthe unchunked side does not fit at K={k}; K={comparison['num_samples']}, the "
              "largest where it ran:")
        _memory_table(comparison["memory"], comparison["sides"])
    search = record["oom_search"]
    if search.get("rows"):
        print(f"\nout-of-memory search, unchunked against chunk {search['chunk_size']} "
              "(peak RSS MiB; XLA's estimate):")
        common.print_table(["K", "unchunked", "XLA est", "chunked", "XLA est"], [
            [r["num_samples"], _mib_or_oom(r["unchunked"]),
             (r["unchunked"] or {}).get("xla", {}).get("total_mib", math.nan),
             _mib_or_oom(r["chunked"]), r["chunked"]["xla"].get("total_mib", math.nan)]
            for r in search["rows"]])
        print(f"unchunked: first failing K = {search['first_failing_num_samples']}, last K "
              f"that ran = {search['last_running_num_samples']}; chunked runs at the failing "
              f"K: {search['chunked_runs_at_first_failing']}, up to K = "
              f"{search['chunked_largest_k_that_ran']} (peak RSS largest/smallest K "
              f"{search.get('chunked_peak_rss_ratio_largest_vs_smallest_k', math.nan):.2f}x)")
    if search.get("note"):
        print(f"note: {search['note']}")
    ratios = record["ratios"]
    for name, value in ratios["unchunked_over_chunked_xla_total_at_k"].items():
        print(f"K={k}: XLA estimate unchunked/{name} {value:.1f}x")
    at = ratios["measured_at_k"]
    for name, value in ratios["unchunked_over_chunked_peak_rss"].items():
        print(f"K={at}: peak RSS unchunked/{name} {value:.2f}x; speed {name}/unchunked "
              f"{ratios['speedup_vs_unchunked'].get(name, math.nan):.2f}x")
    for section in (record["timing"], comparison):
        if section and section["agreement"].get("reference"):
            agree = section["agreement"]
            print(f"K={section['num_samples']}: agreement with {agree['reference']}: max |diff| "
                  f"{max(agree['max_abs_difference_nats'].values(), default=0.0):.2e} nats "
                  f"(mean bound {agree['mean_bound_nats']:.3f} nats), max relative "
                  f"{agree['worst_relative_difference']:.1e}")


# --------------------------------------------------------------------------- main
def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5000, help="K")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[50, 250, 1000])
    parser.add_argument("--dims", type=int, choices=sorted(MODEL_SIZES), default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-cap-gib", type=float, default=8.0,
                        help="address-space cap of each memory child")
    parser.add_argument("--oom-samples", type=int, nargs="+",
                        default=[1000, 2000, 5000, 10000, 20000, 50000, 100000],
                        help="increasing K for the unchunked out-of-memory search")
    parser.add_argument("--oom-chunk", type=int, default=250, help="chunk size in the search")
    parser.add_argument("--no-oom-search", action="store_true")
    parser.add_argument("--jobs", type=int, default=1,
                        help="memory children at a time (jobs x cap must fit the machine)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="K=16, 8 examples, 64-16-2, chunk 4, search over K=16, 32 (CI)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.examples, args.dims = 16, 8, 64
        # Each (K, chunk) is a child process (seconds of start-up): four in all.
        args.chunk_sizes, args.repeats = [4], min(args.repeats, 2)
        args.oom_samples, args.oom_chunk = [16, 32], 4
        args.jobs = max(args.jobs, 2)  # tiny children: two at a time is safe
    if sorted(args.oom_samples) != args.oom_samples:
        parser.error("--oom-samples must be increasing")
    return args


def run(args, spec: dict, problem, probe: MemoryProbe, threads: int) -> dict:
    """Memory children, the out-of-memory search, then the timings here: the record."""
    hidden, latent = spec["hidden"], spec["latent"]
    k = args.samples
    print(f"IWAE benchmark: K={k}, {args.examples} examples, D={args.dims}-{hidden}-{latent}; "
          f"measuring memory in capped children first", flush=True)
    chunks = sorted({min(c, k) for c in args.chunk_sizes} | {k})
    memory = {side_name(c, k): m for c, m in zip(chunks, probe.measure_all(
        [(k, c) for c in chunks]), strict=True)}
    search = (oom_search(probe, args.oom_samples, args.oom_chunk) if not args.no_oom_search
              else {"note": "skipped (--no-oom-search)"})
    if args.smoke and search.get("first_failing_num_samples") is None:
        search["note"] = ("smoke run: the ladder K=16, 32 is far below the cap, so no "
                          "out-of-memory point is expected; the full run finds it")
    print("timing in this process ...", flush=True)
    timing = timed_comparison(problem, probe, k, args.chunk_sizes, args.repeats)
    timing.pop("memory")  # the record's "memory" already
    comparison = None
    fit_k = search.get("last_running_num_samples")
    if not memory["unchunked"]["ok"] and fit_k:
        comparison = timed_comparison(problem, probe, fit_k,
                                      [c for c in args.chunk_sizes if c < fit_k], args.repeats)
    record = {
        "model": f"VAE {args.dims}-{hidden}-{latent}, tanh MLPs, Bernoulli decoder, untrained",
        "data": spec["data"], "num_samples": k, "num_examples": args.examples,
        "dims": args.dims, "hidden": hidden, "latent": latent, "chunk_sizes": chunks,
        "threads": threads, "repeats": args.repeats, "memory_cap_gib": args.memory_cap_gib,
        "memory_jobs": args.jobs,
        "memory_measure": "VmHWM (peak RSS) of a fresh child (RLIMIT_AS capped); XLA: "
                          "compile().memory_analysis() arguments + outputs - aliases + temps",
        "timing": timing, "memory": memory, "unchunked_comparison": comparison,
        "oom_search": search, "ratios": _ratios(memory, timing, comparison, k),
    }
    if args.smoke:
        record["model"] = f"smoke: {record['model']}"
    return record


def main(argv=None) -> int:
    args = _parse(argv)
    threads = common.use_threads(args.threads)
    hidden, latent = SMOKE_SIZE if args.smoke else MODEL_SIZES[args.dims]
    spec = {"dims": args.dims, "examples": args.examples, "hidden": hidden, "latent": latent,
            "data": "digits" if args.dims == 64 else "random_binary", "threads": args.threads}
    cap = int(args.memory_cap_gib * GIB)
    problem = make_problem(spec)
    with tempfile.TemporaryDirectory(prefix="vaejax-iwae-") as tmp:
        spec["problem_path"] = str(Path(tmp) / "problem.msgpack")
        save_problem(problem, spec["problem_path"])
        probe = MemoryProbe(spec, cap, jobs=args.jobs, timeout=600)
        record = run(args, spec, problem, probe, threads)
    path = common.write_record("iwae", record, args.out, argv)
    print_report(record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
