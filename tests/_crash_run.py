"""``python -m experiments.train`` with one injected fault, for tests/test_crash_safety.py.

    python tests/_crash_run.py --config=... --workdir=... [--config.key=value ...]

The fault comes from the environment; the process dies by SIGKILL, as on a pre-empted
machine: no ``finally``, no atexit, no flushing.

    VAEJAX_KILL=checkpoint_begin:<epoch>    after orbax has created the temporary folder of
                                            checkpoint <epoch>, before any array is written
    VAEJAX_KILL=checkpoint_commit:<epoch>   once every file of checkpoint <epoch> is written,
                                            just before the rename that commits it
    VAEJAX_KILL=file:<name>:<k>             in the k-th (1-based) crash-safe write of <name>
                                            (metrics.csv, config.json, ...): half of the new
                                            bytes are in the temporary file when it dies
    VAEJAX_POISON_EPOCH=<e>                 the loss of step 5, member 1, epoch e (0-based)
                                            becomes NaN: the NaN guard stops the run

Only this test process is patched; the library has no test hooks.
"""

from __future__ import annotations

import importlib.abc
import os
import signal
import sys
import tempfile
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_checkpoint(phase: str, epoch: int) -> None:
    from orbax.checkpoint._src.path import atomicity

    cls = atomicity.AtomicRenameTemporaryPath  # orbax's default on a local file system
    original = getattr(cls, "create" if phase == "begin" else "finalize")

    async def create(self, *args, **kwargs):
        path = await original(self, *args, **kwargs)
        if self.get_final().name == str(epoch):
            _die()
        return path

    async def finalize(self, *args, **kwargs):
        if self.get_final().name == str(epoch):
            _die()
        return await original(self, *args, **kwargs)

    if phase == "begin":
        cls.create = create
    else:
        cls.finalize = finalize


def _kill_in_file_write(name: str, count: int) -> None:
    from vaejax import io as io_lib

    original = io_lib.atomic_write_bytes
    seen = {"writes": 0}

    def atomic_write_bytes(path, data):
        path = Path(path)
        if path.name == name:
            seen["writes"] += 1
            if seen["writes"] == count:  # the same temporary file the real write would use
                fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                os.write(fd, data[: len(data) // 2])
                os.fsync(fd)
                _die()
        return original(path, data)

    io_lib.atomic_write_bytes = atomic_write_bytes


def _poison(epoch: int) -> None:
    import jax.numpy as jnp

    from vaejax import train

    original = train.Trainer.epoch

    def epoch_with_nan(self, state, train_data, epoch_index, hyper):
        state, metrics = original(self, state, train_data, epoch_index, hyper)
        steps, size = metrics.loss.shape
        bad = ((epoch_index == epoch) & (jnp.arange(steps)[:, None] == 4)
               & (jnp.arange(size)[None, :] == min(1, size - 1)))
        return state, metrics.replace(loss=jnp.where(bad, jnp.nan, metrics.loss),
                                      recon=jnp.where(bad, jnp.nan, metrics.recon))

    train.Trainer.epoch = epoch_with_nan


class _NoTorch(importlib.abc.MetaPathFinder):
    """tensorboardX imports torch when it is installed (the [bench] extra), seconds per
    process for nothing here (the scalars are floats); without it, it uses numpy. A failing
    import, not ``sys.modules["torch"] = None``: scipy looks torch up in sys.modules."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by {__file__})")
        return None


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.meta_path.insert(0, _NoTorch())
    kill = os.environ.get("VAEJAX_KILL", "")
    if kill.startswith("checkpoint_"):
        phase, epoch = kill.removeprefix("checkpoint_").split(":")
        _kill_in_checkpoint(phase, int(epoch))
    elif kill.startswith("file:"):
        _, name, count = kill.split(":")
        _kill_in_file_write(name, int(count))
    elif kill:
        raise SystemExit(f"unknown VAEJAX_KILL={kill!r}")
    if "VAEJAX_POISON_EPOCH" in os.environ:
        _poison(int(os.environ["VAEJAX_POISON_EPOCH"]))

    from absl import app

    from experiments import train as cli

    app.run(cli.main)


if __name__ == "__main__":
    main()
