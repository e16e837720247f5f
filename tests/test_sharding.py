"""Tests for vaejax.sharding and the sharded paths of the engine and the training job.

Multi-device behaviour runs in subprocesses (tests/_sharding_check.py) with 8 forced host CPU
devices: XLA reads ``--xla_force_host_platform_device_count`` once, when jax starts. The
reference for every sharded run is the same computation with no mesh (``mesh=None``,
``config.run.sharding="none"``), which must agree to float32 round-off: sharding may reorder
reductions (data mode sums gradients across devices) but must not change the maths.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from vaejax import sharding

REPO = Path(__file__).resolve().parents[1]
CHECK_SCRIPT = REPO / "tests" / "_sharding_check.py"
NUM_DEVICES = 8
# float32 round-off accumulated over 2 epochs (~60 Adam steps); measured ~3e-7.
RELATIVE_TOLERANCE = 1e-5
# Two processes so the two CPU cores compile in parallel; sections as in _sharding_check.py.
SUBPROCESS_SECTIONS = (("divisibility", "population", "data"), ("end_to_end",))

# -------------------------------------------------------------------- 8-device subprocesses


@pytest.fixture(scope="module")
def multi_device() -> dict:
    """Runs tests/_sharding_check.py on 8 forced CPU devices; its merged JSON results."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        # Optimisation level 0 only shortens LLVM code generation (compilation dominates these
        # tiny runs); sharded and reference runs share the flag, so the comparisons hold.
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES} "
                     "--xla_backend_optimization_level=0",
    }
    processes = [
        subprocess.Popen([sys.executable, str(CHECK_SCRIPT), *sections], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for sections in SUBPROCESS_SECTIONS
    ]
    results = {}
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            pytest.fail(f"{CHECK_SCRIPT.name} failed (rc={process.returncode}):\n"
                        f"{stdout[-2000:]}\n{stderr[-4000:]}")
        results.update(json.loads(lines[-1]))
    return results


def _section(results: dict, name: str) -> dict:
    section = results[name]
    if "error" in section:
        pytest.fail(f"section {name!r} of {CHECK_SCRIPT.name} raised:\n{section['error']}")
    return section


def test_subprocess_sees_eight_cpu_devices(multi_device):
    assert multi_device["device_count"] == NUM_DEVICES
    assert multi_device["platform"] == "cpu"


@pytest.mark.parametrize("field", ["params_layout", "opt_state_layout"])
def test_population_mode_splits_every_leaf_over_eight_devices(multi_device, field):
    # Every leaf of the train state is stacked [P=8, ...]: one member per device.
    layout = _section(multi_device, "population")["meshes"][str(NUM_DEVICES)][field]
    n = layout["num_leaves"]
    assert n > 0
    expected_spec = str(PartitionSpec(sharding.AXIS))
    assert layout["spec"] == [expected_spec] * n
    assert layout["num_devices"] == [NUM_DEVICES] * n
    assert layout["num_addressable_shards"] == [NUM_DEVICES] * n
    assert layout["shard_leading_dims"] == [[1]] * n
    assert layout["shard_trailing_dims_whole"] == [True] * n
    assert layout["distinct_shard_indices"] == [NUM_DEVICES] * n
    assert layout["fully_replicated"] == [False] * n


@pytest.mark.parametrize("mesh_size", [2, 4])
def test_population_mode_smaller_meshes_split_the_population(multi_device, mesh_size):
    layout = _section(multi_device, "population")["meshes"][str(mesh_size)]["params_layout"]
    n = layout["num_leaves"]
    assert layout["num_addressable_shards"] == [mesh_size] * n
    assert layout["shard_leading_dims"] == [[NUM_DEVICES // mesh_size]] * n


@pytest.mark.parametrize("mesh_size", [8, 1, 2, 4])
def test_population_mode_matches_unsharded_run(multi_device, mesh_size):
    section = _section(multi_device, "population")
    assert section["population"] == NUM_DEVICES
    assert section["reference_loss_finite"]
    run = section["meshes"][str(mesh_size)]
    assert run["mesh_size"] == mesh_size
    assert run["params_relative_error"] <= RELATIVE_TOLERANCE
    assert run["loss_relative_error"] <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("mesh_size", [8, 2, 4])
def test_population_mode_needs_no_cross_device_reduction(multi_device, mesh_size):
    # Members are independent: GSPMD must not reduce (or gather) across the population axis.
    assert _section(multi_device, "population")["meshes"][str(mesh_size)]["all_reduce"] == 0


@pytest.mark.parametrize("mesh_size", [8, 2, 4])
def test_data_mode_matches_unsharded_run(multi_device, mesh_size):
    section = _section(multi_device, "data")
    assert (section["population"], section["batch_size"]) == (2, 48)
    assert section["reference_loss_finite"]
    run = section["meshes"][str(mesh_size)]
    assert run["mesh_size"] == mesh_size
    assert run["params_relative_error"] <= RELATIVE_TOLERANCE
    assert run["loss_relative_error"] <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("mesh_size", [8, 2, 4])
def test_data_mode_replicates_state_and_splits_the_batch(multi_device, mesh_size):
    section = _section(multi_device, "data")
    run = section["meshes"][str(mesh_size)]
    layout = run["params_layout"]
    n = layout["num_leaves"]
    assert layout["fully_replicated"] == [True] * n
    assert layout["num_devices"] == [mesh_size] * n
    # A split batch needs its gradient sum all-reduced across devices; unsharded, none.
    assert run["all_reduce"] > 0
    assert section["reference_all_reduce"] == 0


def test_check_mode_on_eight_devices(multi_device):
    messages = _section(multi_device, "divisibility")
    assert "P=6" in messages["population"]
    assert "batch_size=50" in messages["data"]
    assert messages["population_ok"] is None
    assert messages["data_ok"] is None
    assert messages["none_ok"] is None


def test_train_and_evaluate_sharded_matches_unsharded(multi_device):
    section = _section(multi_device, "end_to_end")
    assert section["population"] == {"none": 8, "population": 8, "data": 8}
    reference = section["test_elbo"]["none"]
    assert np.all(np.isfinite(reference))
    for mode in ("population", "data"):
        np.testing.assert_allclose(section["test_elbo"][mode], reference, rtol=1e-4,
                                   err_msg=mode)
        np.testing.assert_allclose(section["test_iwae"][mode], section["test_iwae"]["none"],
                                   rtol=1e-4, err_msg=mode)


def test_train_and_evaluate_refuses_indivisible_or_unknown_sharding(multi_device):
    refused = _section(multi_device, "end_to_end")["refused"]
    assert refused["population"] is not None and "P=3" in refused["population"]
    assert refused["data"] is not None and "batch_size=50" in refused["data"]
    assert refused["unknown"] is not None and "'model'" in refused["unknown"]


# ---------------------------------------------------------------------- in-process (1 device)


def test_make_mesh_uses_all_devices_by_default():
    mesh = sharding.make_mesh()
    assert mesh.size == jax.device_count()
    assert mesh.axis_names == (sharding.AXIS,)
    assert sharding.make_mesh(num_devices=1).size == 1


@pytest.mark.parametrize("num_devices", [0, -1, "too_many"])
def test_make_mesh_rejects_bad_device_counts(num_devices):
    if num_devices == "too_many":
        num_devices = jax.device_count() + 1
    with pytest.raises(ValueError, match="num_devices"):
        sharding.make_mesh(num_devices=num_devices)


def test_check_mode_rejects_unknown_mode():
    mesh = sharding.make_mesh(num_devices=1)
    with pytest.raises(ValueError, match="'model'"):
        sharding.check_mode("model", mesh, population=1, batch_size=1)


@pytest.mark.parametrize("mode", sharding.MODES)
def test_check_mode_accepts_any_size_on_one_device(mode):
    mesh = sharding.make_mesh(num_devices=1)
    sharding.check_mode(mode, mesh, population=7, batch_size=13)


def test_put_population_and_put_replicated_placements():
    mesh = sharding.make_mesh(num_devices=1)
    tree = {"w": jnp.arange(6.0).reshape(3, 2)}
    split = sharding.put_population(tree, mesh, "population")
    assert split["w"].sharding.spec == PartitionSpec(sharding.AXIS)
    for mode in ("data", "none"):
        assert sharding.put_population(tree, mesh, mode)["w"].sharding.spec == PartitionSpec()
    assert sharding.put_replicated(tree, mesh)["w"].sharding.spec == PartitionSpec()
    np.testing.assert_array_equal(split["w"], tree["w"])


def test_constrain_batch_is_identity_unless_data_mode():
    batch = jnp.ones((4, 3))
    mesh = sharding.make_mesh(num_devices=1)
    assert sharding.constrain_batch(batch, None, "data") is batch
    assert sharding.constrain_batch(batch, mesh, "population") is batch
    constrained = jax.jit(lambda b: sharding.constrain_batch(b, mesh, "data"))(batch)
    np.testing.assert_array_equal(constrained, batch)


# ------------------------------------------------------------------------- multi-host start-up

_LAUNCH_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS",
                     "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@pytest.fixture
def distributed_calls(monkeypatch):
    """Clears launch variables and records calls to jax.distributed.initialize (never real)."""
    for name in _LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    return calls


def test_maybe_initialize_distributed_does_nothing_on_a_single_host(distributed_calls):
    assert sharding.maybe_initialize_distributed() is False
    assert distributed_calls == []


def test_maybe_initialize_distributed_single_task_scheduler_is_single_host(
        distributed_calls, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert sharding.maybe_initialize_distributed() is False
    assert distributed_calls == []


def test_maybe_initialize_distributed_passes_coordinator_settings(distributed_calls,
                                                                  monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    assert sharding.maybe_initialize_distributed() is True
    assert distributed_calls == [
        {"coordinator_address": "localhost:1234", "num_processes": 1, "process_id": 0}]


def test_maybe_initialize_distributed_reads_coordinator_address(distributed_calls,
                                                                monkeypatch):
    monkeypatch.setenv("COORDINATOR_ADDRESS", "10.0.0.1:8476")
    assert sharding.maybe_initialize_distributed() is True
    assert distributed_calls == [{"coordinator_address": "10.0.0.1:8476"}]


@pytest.mark.parametrize("variable", ["SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"])
def test_maybe_initialize_distributed_lets_jax_detect_a_cluster(distributed_calls,
                                                                monkeypatch, variable):
    monkeypatch.setenv(variable, "4")
    assert sharding.maybe_initialize_distributed() is True
    assert distributed_calls == [{}]


def test_maybe_initialize_distributed_is_idempotent(distributed_calls, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert sharding.maybe_initialize_distributed() is True
    assert distributed_calls == []
