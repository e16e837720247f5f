"""Each benchmark runs once at a tiny size (a smoke test: no timing assertions).

gradient_sweep, iwae and scaling run once, together, through
``benchmarks.run_all --smoke --no-torch`` (a module fixture); each test then checks its
benchmark's JSON record. train_step and population_training run on their own, at one or two
sizes (their --smoke defaults compile several). The PyTorch peers are skipped with
``--no-torch`` (the test extra has no torch), so their ratios are null.
"""

import contextlib
import io
import json
import math
import types

import pytest

from benchmarks import population_training, run_all, train_step
from benchmarks.common import RESULTS

RUN_ALL_SMOKE = ("gradient_sweep", "iwae", "scaling")


def _positive_finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One ``run_all --smoke`` over the benchmarks above; its exit code, output and records."""
    out_dir = tmp_path_factory.mktemp("benchmarks")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run_all.main(["--smoke", "--no-torch", "--out-dir", str(out_dir),
                             "--only", *RUN_ALL_SMOKE])
    return types.SimpleNamespace(code=code, out_dir=out_dir, output=buffer.getvalue())


def _record(path, name: str, output: str = "") -> dict:
    assert path.exists(), f"{name} wrote no record; it printed:\n{output[-5000:]}"
    record = json.loads(path.read_text())
    assert record["benchmark"] == name and record["machine"]["jax"]
    assert record["command"].split()[1:3] == ["-m", f"benchmarks.{name}"]
    assert "--smoke" in record["command"]
    return record


def _smoke_record(smoke, name: str) -> dict:
    return _record(smoke.out_dir / f"{name}.json", name, smoke.output)


def test_run_all_smoke(smoke):
    assert smoke.code == 0, smoke.output[-5000:]
    assert f"all {len(RUN_ALL_SMOKE)} benchmarks ran" in smoke.output
    summary = smoke.output.split("summary (smoke run", 1)[1]
    for name in RUN_ALL_SMOKE:
        assert f"[{RUN_ALL_SMOKE.index(name) + 1}/{len(RUN_ALL_SMOKE)}] {name}" in smoke.output
        assert f"\n{name} (" in summary
    assert "fused vs loop" in summary and "fused vs torch.func -" in summary  # no torch
    assert "K=16: peak RSS unchunked/chunked_4" in summary
    assert "population x2" in summary and "data x2" in summary


def test_train_step_benchmark_smoke(tmp_path):
    out = tmp_path / "train_step.json"
    argv = ["--smoke", "--no-torch", "--batch-sizes", "100", "--repeats", "1", "--out", str(out)]
    assert train_step.main(argv) == 0
    record = _record(out, "train_step")
    assert record["torch_available"] is False
    assert [row["batch_size"] for row in record["rows"]] == [100]
    for row in record["rows"]:
        assert list(row["sides"]) == ["vaejax"]  # --no-torch: no peer sides
        side = row["sides"]["vaejax"]
        assert _positive_finite(side["median_s"]) and _positive_finite(side["examples_per_second"])
        assert _positive_finite(side["fraction_of_peak"])
        assert _positive_finite(row["peak_matmul_gflops"])
        assert row["speedup_vs_torch_eager"] is None and row["speedup_vs_torch_compile"] is None
    lines = run_all.summary_lines("train_step", out)
    assert lines[0].startswith("batch 100: vaejax vs torch eager -, vs torch.compile -")


def test_gradient_sweep_benchmark_smoke(smoke):
    record = _smoke_record(smoke, "gradient_sweep")
    assert [row["decoder"] for row in record["rows"]] == ["mlp", "linear"]
    for row in record["rows"]:
        assert set(row["sides"]) == {"fused", "fused_chunked", "loop"}
        assert all(_positive_finite(side["median_s"]) for side in row["sides"].values())
        assert _positive_finite(row["speedup_fused_vs_loop"])
        assert row["speedup_fused_vs_torch_func"] is None
        # The benchmarked computation is the equivalence itself: it must hold.
        assert row["max_relative_error_mse"] < 1e-4


def test_iwae_benchmark_smoke(smoke):
    record = _smoke_record(smoke, "iwae")
    assert (record["num_samples"], record["num_examples"]) == (16, 8)
    timing = record["timing"]
    assert set(timing["sides"]) == {"chunked_4", "unchunked"}
    for side in timing["sides"].values():
        assert _positive_finite(side["median_s"]) and _positive_finite(side["examples_per_second"])
    # The library's contract: the bound does not depend on chunk_size (same fold_in draws).
    agree = timing["agreement"]
    assert agree["reference"] == "unchunked" and math.isfinite(agree["mean_bound_nats"])
    assert agree["max_abs_difference_nats"]["chunked_4"] < 1e-3
    assert agree["worst_relative_difference"] < 1e-5
    for name, memory in record["memory"].items():
        assert memory["ok"] and memory["finite"], (name, memory)
        assert _positive_finite(memory["peak_rss_mib"])
        assert _positive_finite(memory["xla"]["total_mib"])
    search = record["oom_search"]
    assert [row["num_samples"] for row in search["rows"]] == [16, 32]
    assert search["first_failing_num_samples"] is None  # the cap is far away at this size
    assert search["last_running_num_samples"] == 32 and "smoke" in search["note"]
    assert search["chunked_largest_k_that_ran"] == 32
    ratios = record["ratios"]
    assert ratios["unchunked_fits_at_k"] and ratios["measured_at_k"] == 16
    assert _positive_finite(ratios["unchunked_over_chunked_peak_rss"]["chunked_4"])
    assert _positive_finite(ratios["unchunked_over_chunked_xla_total_at_k"]["chunked_4"])
    assert _positive_finite(ratios["speedup_vs_unchunked"]["chunked_4"])


def test_scaling_benchmark_smoke(smoke):
    record = _smoke_record(smoke, "scaling")
    assert record["device_counts"] == [1, 2] and record["num_failed"] == 0
    assert "share" in record["note"]
    rows = {(row["mode"], row["devices"]): row for row in record["rows"]}
    assert set(rows) == {(mode, n) for mode in ("data", "population") for n in (1, 2)}
    for (mode, devices), row in rows.items():
        assert "error" not in row, row
        assert row["device_count_in_child"] == devices and row["params_on_devices"] == devices
        assert _positive_finite(row["median_s"]) and _positive_finite(row["examples_per_second"])
        assert _positive_finite(row["ratio_examples_per_second_vs_1_device"])
        assert row["population"] == (8 if mode == "population" else 1)
        # Sharding changes the float32 summation order only.
        assert row["final_loss_relative_difference_vs_1_device"] < 1e-4
    assert rows[("data", 2)]["all_reduce_ops_in_hlo"] > 0  # the batch really was split


def test_run_all_reports_a_failure_and_runs_the_others(tmp_path, monkeypatch, capsys):
    """A benchmark that raises is reported, the next still runs, the exit code is 1."""
    calls = []

    def fake(name):
        def main(argv):
            calls.append((name, argv))
            if name == "train_step":
                raise RuntimeError("boom")
            out = argv[argv.index("--out") + 1]
            rows = [{"population": 4, "speedup_vs_sequential": 2.5,
                     "model_steps_per_second": 100.0}]
            with open(out, "w") as f:
                json.dump({"rows": rows}, f)
            return 0
        return types.SimpleNamespace(main=main)

    monkeypatch.setattr(run_all, "load_benchmark", fake)
    code = run_all.main(["--smoke", "--only", "train_step", "population_training",
                         "--out-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert code == 1
    assert [name for name, _ in calls] == ["train_step", "population_training"]
    assert calls[1][1] == ["--smoke", "--out", str(tmp_path / "population_training.json")]
    assert "train_step (0 s): FAILED (RuntimeError: boom)" in output
    assert "P=4: 2.50x vs P sequential" in output
    assert "1 of 2 benchmarks failed: train_step" in output


def test_run_all_smoke_never_writes_the_kept_records(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(run_all, "load_benchmark", lambda name: types.SimpleNamespace(
        main=lambda argv: seen.append(argv) or 0))
    smoke_dir = tmp_path / "smoke"
    monkeypatch.setattr(run_all.tempfile, "mkdtemp", lambda prefix: str(smoke_dir))
    assert run_all.main(["--smoke", "--only", "iwae"]) == 0
    assert seen == [["--smoke", "--out", str(smoke_dir / "iwae.json")]]
    with pytest.raises(SystemExit):
        run_all.main(["--smoke", "--out-dir", str(RESULTS)])
    capsys.readouterr()


def test_population_training_benchmark_smoke(tmp_path):
    out = tmp_path / "population.json"
    argv = ["--smoke", "--repeats", "1", "--out", str(out)]
    assert population_training.main(argv) == 0
    record = _record(out, "population_training")
    assert [row["population"] for row in record["rows"]] == [1, 3]  # the smoke sizes
    for row in record["rows"]:
        assert row["seconds_per_epoch"] > 0 and row["speedup_vs_sequential"] > 0
        profile = row["profile_us_per_member_step"]
        assert profile["matmul"] > 0 and sum(profile.values()) > profile["matmul"]
    assert run_all.summary_lines("population_training", out)[0].startswith("P=1: ")
