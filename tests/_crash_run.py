"""``python -m experiments.train`` with one injected fault, for tests/test_crash_safety.py.

    python tests/_crash_run.py --config=... --workdir=... [--config.key=value ...]

The fault comes from the environment; the process dies by SIGKILL, as on a pre-empted
machine: no ``finally``, no atexit, no flushing.

    VAEJAX_KILL=checkpoint_begin:<step>     after orbax has created the temporary folder of
                                            checkpoint <step>, before any array is written
    VAEJAX_KILL=checkpoint_commit:<step>    once every file of checkpoint <step> is written,
                                            just before the rename that commits it
    VAEJAX_KILL=file:<name>:<k>             in the k-th (1-based) crash-safe write of <name>
                                            (metrics.csv, config.json, ...): half of the new
                                            bytes are in the temporary file when it dies
    VAEJAX_POISON_STEP=<t>                  the loss of member 1 at global step t (0-based)
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


def _kill_in_checkpoint(phase: str, step: int) -> None:
    from orbax.checkpoint._src.path import atomicity

    cls = atomicity.AtomicRenameTemporaryPath  # orbax's default on a local file system
    original = getattr(cls, "create" if phase == "begin" else "finalize")

    async def create(self, *args, **kwargs):
        path = await original(self, *args, **kwargs)
        if self.get_final().name == str(step):
            _die()
        return path

    async def finalize(self, *args, **kwargs):
        if self.get_final().name == str(step):
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


def _poison(step: int) -> None:
    import jax.numpy as jnp

    from vaejax import trainer

    original = trainer.Trainer.member_step

    def member_step(self, state, batch, member):
        new, metrics = original(self, state, batch, member)
        # Member 1 of the population: the one with the second-smallest sigma of the test's.
        nan = jnp.where((state.step == step) & (member.sigma > 0.2), jnp.nan, 0.0)
        return new, metrics.replace(loss=metrics.loss + nan, recon=metrics.recon + nan)

    trainer.Trainer.member_step = member_step


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
        phase, step = kill.removeprefix("checkpoint_").split(":")
        _kill_in_checkpoint(phase, int(step))
    elif kill.startswith("file:"):
        _, name, count = kill.split(":")
        _kill_in_file_write(name, int(count))
    elif kill:
        raise SystemExit(f"unknown VAEJAX_KILL={kill!r}")
    if "VAEJAX_POISON_STEP" in os.environ:
        _poison(int(os.environ["VAEJAX_POISON_STEP"]))

    from absl import app

    from experiments import train as cli

    app.run(cli.main)


if __name__ == "__main__":
    main()
