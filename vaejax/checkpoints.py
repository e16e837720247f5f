"""Checkpoints of a training run: the stacked state and the run's history, saved together.

:class:`Checkpointer` wraps an orbax ``CheckpointManager``. A step folder holds the
:class:`vaejax.trainer.TrainState` and the history (the records that :func:`vaejax.trainer.fit`'s
hooks produced up to that step, as JSON), so a resumed run has both. Orbax commits a step
folder by renaming it once complete: a run killed while saving leaves the previous
checkpoint. A committed folder that does not restore was damaged afterwards; the error
names it and says which folder to delete (training is deterministic, so resuming from an
earlier checkpoint gives the same result).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


class Checkpointer:
    """Saves and restores (step, state, history) under ``directory``.

    Args:
      directory: the checkpoint folder (created when needed).
      keep: how many checkpoints are kept (the newest).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2):
        ocp = _ocp()
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False))

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, history: list[dict]) -> None:
        """Saves ``state`` and ``history`` as step ``step`` (synchronously)."""
        ocp = _ocp()
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), history=ocp.args.JsonSave({"records": history})))
        self._manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> tuple[int, Any, list[dict]]:
        """(step, state, history) of checkpoint ``step`` (default: the newest).

        ``template`` gives the shapes, dtypes and shardings of the state.

        Raises:
          ValueError: the folder holds another model (different arrays or shapes), or is
            corrupt or truncated; the message names the folder and what to do.
        """
        ocp = _ocp()
        step = self.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {str(self.directory)!r}.")
        step_dir = self.directory / str(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()))
            history = restored.history["records"]
            if not isinstance(history, list):
                raise ValueError("its history is not a list of records")
            return step, restored.state, history
        # orbax and tensorstore raise ValueError, KeyError, TypeError, RuntimeError, OSError...
        except Exception as err:
            mismatch = model_mismatch(step_dir, abstract)
            if mismatch is not None:
                raise ValueError(
                    f"checkpoint {str(step_dir)!r} was written by a different model: "
                    f"{mismatch}. Use a new --workdir, or the config that wrote it.") from err
            earlier = [s for s in self.all_steps() if s < step]
            resume = (f"delete that folder to resume from the previous checkpoint (step "
                      f"{max(earlier)})" if earlier else "delete it to start again from step 0")
            raise ValueError(
                f"checkpoint {str(step_dir)!r} is corrupt or truncated ({_short(err)}); "
                f"{resume} (training is deterministic: the result is the same), or use a new "
                "--workdir.") from err

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def named_shapes(tree) -> dict[str, tuple[int, ...]]:
    """{'params.params.decoder.out.kernel': shape, ...} for a state or orbax metadata."""
    def name(path):
        return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                        for k in path)
    return {name(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def model_mismatch(step_dir: Path, abstract) -> str | None:
    """How the state saved in ``step_dir`` differs from ``abstract`` in names or shapes.

    None when they agree, or when the metadata cannot be read (then the checkpoint is
    corrupt, not of another model).
    """
    ocp = _ocp()
    try:
        stored = named_shapes(ocp.StandardCheckpointer().metadata(step_dir / "state")
                              .item_metadata.tree)
    except Exception:  # unreadable metadata: reported as corrupt by the caller
        return None
    expected = named_shapes(abstract)

    def params_first(names):  # parameters say more to a user than optimiser moments
        return sorted(names, key=lambda name: (not name.startswith("params"), name))

    if stored.keys() != expected.keys():
        parts = []
        for names, what in ((expected.keys() - stored.keys(), "lacks {} arrays this model has"),
                            (stored.keys() - expected.keys(), "holds {} arrays this model lacks")):
            if names:
                shown = ", ".join(f"`{name}`" for name in params_first(names)[:2])
                parts.append(f"it {what.format(len(names))} ({shown}, ...)")
        return "; ".join(parts)
    differing = params_first(name for name in expected if stored[name] != expected[name])
    if not differing:
        return None
    first = differing[0]
    return (f"{len(differing)} arrays differ in shape, e.g. `{first}` is {stored[first]} there "
            f"but {expected[first]} for this config (population size P and the layer sizes "
            "set these shapes)")


def _short(err: BaseException) -> str:
    """The gist of an orbax/tensorstore error: its first line without the spec dump, and
    of a long one its start (the kind of error) and end (the innermost cause)."""
    lines = str(err).split("[tensorstore_spec", 1)[0].strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 320 else f"{text[:100]} ... {text[-200:]}"
