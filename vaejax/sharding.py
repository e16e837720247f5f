"""Device mesh, population-axis and data-parallel sharding, and multi-host start-up.

Two modes, both plain ``jax.jit`` + ``NamedSharding`` (GSPMD inserts the collectives):

* ``"population"``: the leading [P] axis of the stacked train state is split over the
  devices (P must be a multiple of the device count); every device sees every batch.
* ``"data"``: the population is replicated and each batch is split over the devices
  along its example axis (the batch size must be a multiple of the device count).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "devices"
MODES = ("none", "population", "data")

# Standard variables that mark a multi-host launch (jax.distributed reads them itself).
_MULTI_HOST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when a multi-host environment is configured.

    Triggers on ``JAX_COORDINATOR_ADDRESS``/``COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID``) or a SLURM/Open MPI multi-task job; returns whether it did.
    """
    multi_task = int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(
        os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    if not (any(os.environ.get(v) for v in _MULTI_HOST_ENV) or multi_task):
        return False
    if jax.distributed.is_initialized():
        return True
    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = (os.environ.get("JAX_COORDINATOR_ADDRESS")
                                         or os.environ["COORDINATOR_ADDRESS"])
        if "JAX_NUM_PROCESSES" in os.environ:
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in os.environ:
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    return True


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(
                f"`num_devices`={num_devices} but {len(devices)} devices are available.")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (AXIS,))


def check_mode(mode: str, mesh: Mesh, *, population: int, batch_size: int) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown sharding mode {mode!r}; expected one of {', '.join(MODES)}.")
    n = mesh.size
    if mode == "population" and population % n:
        raise ValueError(f"population sharding needs P={population} divisible by {n} devices.")
    if mode == "data" and batch_size % n:
        raise ValueError(f"data sharding needs batch_size={batch_size} divisible by {n} devices.")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def leading_axis(mesh: Mesh) -> NamedSharding:
    """Splits the leading axis over the mesh."""
    return NamedSharding(mesh, P(AXIS))


def put_population(tree: Any, mesh: Mesh, mode: str) -> Any:
    """Places a stacked [P, ...] pytree: split over devices for "population", else replicated."""
    sharding = leading_axis(mesh) if mode == "population" else replicated(mesh)
    return jax.device_put(tree, sharding)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))


def constrain_batch(batch: jax.Array, mesh: Mesh | None, mode: str) -> jax.Array:
    """Inside jit: split a [B, D] batch over the devices in "data" mode (no-op otherwise)."""
    if mesh is None or mode != "data":
        return batch
    return jax.lax.with_sharding_constraint(batch, leading_axis(mesh))
