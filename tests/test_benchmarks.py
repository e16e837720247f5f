"""Each benchmark runs once at a tiny size (a smoke test: no timing assertions)."""

import json

from benchmarks import population_training


def test_population_training_benchmark_smoke(tmp_path):
    out = tmp_path / "population.json"
    population_training.main(["--smoke", "--sizes", "1", "3", "--repeats", "1", "--out", str(out)])
    record = json.loads(out.read_text())
    assert [row["population"] for row in record["rows"]] == [1, 3]
    for row in record["rows"]:
        assert row["seconds_per_epoch"] > 0 and row["speedup_vs_sequential"] > 0
