"""Shared helpers of the benchmarks: interleaved timing, medians, machine facts, JSON records.

Timing rules (the development machine is 2 shared cores, so single timings are noise):

* every side is compiled and run once before timing (``warmup``);
* the sides run interleaved, round after round (A, B, C, A, B, C, ...), with the order
  rotated each round, so a burst of load from another process hits all of them alike;
* a timing ends with ``jax.block_until_ready`` (or the PyTorch call returning);
* the reported number is the median over rounds, with the spread (min, max) beside it,
  and every speed-up is a ratio of two medians measured in the same run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def num_threads() -> int:
    """Threads one process may use: the CPUs in its affinity mask (XLA's pool size)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_threads(threads: int | None) -> int:
    """Restricts this process (JAX's and PyTorch's pools) to ``threads`` CPUs; returns the count.

    Call before the first JAX computation. ``None`` keeps every usable CPU (JAX's default).
    """
    if threads is not None and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:threads])
        if threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false").strip()
    return num_threads()


def import_torch(threads: int | None = None):
    """torch with ``threads`` intra-op threads (default: as many as JAX uses), or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads or num_threads())
    return torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Facts that make a record interpretable: CPU, cores, load, library versions."""
    import jax

    info = {
        "cpu": cpu_model(),
        "cpus_usable": num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def block(value):
    """Waits for JAX arrays anywhere in ``value`` (PyTorch CPU calls are synchronous)."""
    import jax

    return jax.block_until_ready(value)


def interleaved(sides: dict[str, Callable[[], Any]], *, repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each side, timed round-robin; returns {name: [repeats floats]}.

    Each callable must do its own synchronisation (``block``) before returning.
    """
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            tic = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - tic)
    return times


def summary(seconds: list[float]) -> dict[str, float]:
    """Median and spread of a list of timings."""
    values = np.asarray(seconds, dtype=np.float64)
    return {"median_s": float(np.median(values)), "min_s": float(values.min()),
            "max_s": float(values.max()), "repeats": int(values.size)}


def ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else math.nan


def time_large_matmul(size: int = 2048) -> Callable[[], Any]:
    """A jitted float32 [size, size] @ [size, size] (2 size^3 flops) ready to time."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return lambda: block(matmul(a, b))


# Names XLA:CPU gives the operations of a compiled program (thunks) in a profiler trace.
_KINDS = (
    ("matmul", re.compile(r"^(dot|ynn_fusion|.*dot_general|.*convolution)")),
    ("random numbers", re.compile(r"(threefry|rng|random)", re.I)),
    ("copy / transpose", re.compile(r"(copy|transpose)")),
    ("elementwise fusion", re.compile(r"fusion")),
)
_PROGRAM_EVENTS = re.compile(r"^(ThunkExecutor|\$|while|conditional|call)")


OP_KINDS = [kind for kind, _ in _KINDS] + ["other"]


def op_kind(name: str) -> str | None:
    """The kind of a traced operation (None for the enclosing program events)."""
    if _PROGRAM_EVENTS.match(name):
        return None
    for kind, pattern in _KINDS:
        if pattern.search(name):
            return kind
    return "other"


def profile_by_kind(call: Callable[[], Any], per: int) -> dict[str, float]:
    """Traces one ``call()`` with ``jax.profiler``; microseconds per unit by kind of operation.

    The compiled program's operations (XLA:CPU thunks) are summed by kind (matrix products,
    random numbers, copies and transposes, elementwise fusions, the rest) and divided by
    ``per`` (e.g. the steps the call ran). Tracing adds a little time to every operation.
    """
    import glob
    import gzip
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as log_dir:
        jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
        try:
            call()
        finally:
            jax.profiler.stop_trace()
        paths = glob.glob(f"{log_dir}/**/*.trace.json.gz", recursive=True)
        if not paths:
            return {}
        with gzip.open(paths[0]) as f:
            events = json.load(f)["traceEvents"]
    totals = dict.fromkeys(OP_KINDS, 0.0)
    for event in events:
        if event.get("ph") == "X" and (kind := op_kind(event.get("name", ""))):
            totals[kind] += event.get("dur", 0.0)
    return {kind: value / per for kind, value in totals.items()}


class EpochRunner:
    """Calls of the engine's jitted ``run`` for one epoch each, on a live (donated) state.

    ``runner()`` trains one more epoch and waits for it; ``runner.trainer``,
    ``runner.members``, ``runner.state``, ``runner.steps`` (steps per epoch) are public.
    """

    def __init__(self, trainer, members, data, state=None):
        import jax.numpy as jnp

        self.trainer, self.members, self.data = trainer, members, data
        self.steps = trainer.steps_per_epoch(int(data.shape[0]))
        self.size = members.size
        self.state = trainer.jit.init(members) if state is None else state
        self.epoch = 0
        self._int = jnp.int32

    def __call__(self):
        start = self.epoch * self.steps
        self.state, metrics = self.trainer.jit.run(self.state, self.data, self.members,
                                                   self._int(start), self._int(start + self.steps))
        self.epoch += 1
        block(metrics)
        return metrics


def write_record(name: str, record: dict[str, Any], out: str | os.PathLike | None = None,
                 argv: list[str] | None = None) -> Path:
    """Writes ``record`` (with the machine facts) as JSON to ``out`` or results/<name>.json.

    ``argv`` (the arguments ``main`` was given; None: the command line) goes into the
    record as the command that reproduces it.
    """
    from vaejax.io import write_json

    argv = sys.argv[1:] if argv is None else list(argv)
    record = {"benchmark": name, "machine": machine(),
              "command": " ".join([Path(sys.executable).name, "-m", f"benchmarks.{name}",
                                   *argv]),
              **record}
    path = Path(out) if out else RESULTS / f"{name}.json"
    write_json(path, _finite_or_none(record))
    return path


def _finite_or_none(value):
    """JSON has no NaN/inf: write null instead (a missing peer, an OOM size)."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _finite_or_none(value.item())
    return value


def run_child(code: str, *, env: dict[str, str] | None = None,
              memory_limit_bytes: int | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """Runs ``python -c code`` in a fresh process; the code prints one JSON line last.

    ``memory_limit_bytes`` caps the child's address space (RLIMIT_AS) so that a run that
    would exhaust the shared machine fails alone. Returns the parsed JSON plus ``returncode``
    (and ``stderr_tail`` on failure).
    """
    if memory_limit_bytes is not None:
        # Set by the child itself: a preexec_fn would fork a process that runs JAX threads.
        code = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, "
                f"({int(memory_limit_bytes)}, {int(memory_limit_bytes)}))\n{code}")
    full_env = {**os.environ, **(env or {})}
    repo = str(Path(__file__).resolve().parents[1])
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, full_env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=repo)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "error": f"timed out after {timeout} s"}
    result: dict[str, Any] = {"returncode": proc.returncode}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        result.update(json.loads(lines[-1]))
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-2000:]
    return result


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _fmt(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
