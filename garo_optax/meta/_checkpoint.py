"""Checkpoints of meta-training runs (orbax), and the shipped controllers.

A checkpoint holds the whole :class:`garo_optax.meta.MetaState` (controller,
outer optimizer state, carried inner populations, step) and the
:class:`garo_optax.meta.MetaConfig` as JSON. orbax writes each step into a
temporary folder and renames it when complete, so a run killed mid-save leaves
the previous checkpoint intact; restoring that and stepping on reproduces the
uninterrupted run exactly (the step's randomness is a function of the step
number).

Controllers alone (the result of meta-training) are small ``.npz`` files;
:func:`garo_optax.pretrained` loads the ones shipped in the package.
"""

import pathlib
from typing import Any

import jax
import numpy as np

from garo_optax._src import controller as ctl
from garo_optax._src import pretrained
from garo_optax.meta import _train


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            'checkpoints need orbax: pip install "garo_optax[meta]"'
        ) from error
    return ocp


def config_to_json(config: _train.MetaConfig) -> dict[str, Any]:
    """A :class:`MetaConfig` as a JSON-ready dict (family names only).

    Args:
      config: the configuration; its families must be registered names.

    Returns:
      The dict of its fields.
    """
    fields = config._asdict()
    if not all(isinstance(f, str) for f in config.families):
        raise ValueError(
            "only configs whose families are registered names can be saved, got "
            f"{config.families!r}"
        )
    for name in ("families", "loss_scale", "param_scale"):
        fields[name] = list(getattr(config, name))
    return fields


def config_from_json(fields: dict[str, Any]) -> _train.MetaConfig:
    """The inverse of :func:`config_to_json`; unknown fields raise.

    Args:
      fields: a dict of :class:`MetaConfig` fields.

    Returns:
      The configuration.
    """
    unknown = sorted(set(fields) - set(_train.MetaConfig._fields))
    if unknown:
        raise ValueError(
            f"unknown MetaConfig fields {unknown}; allowed: {_train.MetaConfig._fields}"
        )
    fields = dict(fields)
    for name in ("families", "loss_scale", "param_scale"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return _train.MetaConfig(**fields)


def _flat_nonempty(tree) -> dict[str, Any]:
    """The leaves of ``tree`` with at least one element, by flatten index.

    orbax cannot store zero-size arrays (the global controller's ``ctx_w``);
    they are rebuilt from the target's structure on restore.
    """
    leaves = jax.tree.leaves(tree)
    return {str(i): x for i, x in enumerate(leaves) if np.size(x) > 0}


def _empty_like(x) -> jax.Array:
    """A zero-size array of ``x``'s shape and dtype, placed as ``x`` is.

    With ``x``'s sharding (when it has one) the rebuilt leaf is committed like
    the restored ones, so the jitted step reuses its program on the restored
    state instead of compiling another.
    """
    zeros = jax.numpy.zeros(x.shape, x.dtype)
    sharding = getattr(x, "sharding", None)
    return zeros if sharding is None else jax.device_put(zeros, sharding)


def _unflatten_like(like, stored: dict[str, Any]):
    leaves, treedef = jax.tree.flatten(like)
    rebuilt = [
        stored[str(i)] if str(i) in stored else _empty_like(x)
        for i, x in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, rebuilt)


class Checkpointer:
    """Saves and restores the states of one meta-training run in a folder.

    Args:
      directory: the run's checkpoint folder (created if missing).
      config: the run's configuration; restoring a checkpoint written under
        another configuration raises `ValueError`.
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory, config: _train.MetaConfig, *, max_to_keep: int = 2):
        ocp = _orbax()
        self.directory = pathlib.Path(directory).absolute()
        self.config = config
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False
            ),
            item_names=("state", "config"),
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None``."""
        return self._manager.latest_step()

    def save(self, state: _train.MetaState) -> int:
        """Writes ``state`` as the checkpoint of its step; returns the step."""
        ocp = _orbax()
        step = int(state.step)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_flat_nonempty(state)),
                config=ocp.args.JsonSave(config_to_json(self.config)),
            ),
        )
        self._manager.wait_until_finished()
        return step

    def restore(self, like: _train.MetaState, step: int | None = None):
        """Restores the checkpoint of ``step`` (default: the newest).

        Args:
          like: a state of the same structure (e.g. ``init()`` of the run), or
            its ``jax.ShapeDtypeStruct`` tree; the restored arrays take its
            shardings.
          step: the step to restore.

        Returns:
          The restored :class:`MetaState`, or ``None`` when there is none.
        """
        ocp = _orbax()
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        try:
            saved = self._manager.restore(
                step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
            )["config"]
        except Exception as error:
            raise ValueError(
                f"checkpoint {self.directory}/{step} is unreadable: {error}"
            ) from error
        mine = config_to_json(self.config)
        # Only the length of the run may differ (resuming to train longer).
        diff = sorted(k for k in mine if k != "steps" and saved.get(k) != mine.get(k))
        if diff:
            raise ValueError(
                f"checkpoint {self.directory}/{step} was written by another "
                f"configuration (fields {diff} differ)"
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _flat_nonempty(like))
        try:
            stored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )["state"]
            restored = _unflatten_like(like, stored)
        except Exception as error:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not match this run's "
                f"state: {error}"
            ) from error
        return restored

    def close(self) -> None:
        """Waits for pending writes and releases the folder."""
        self._manager.close()


def save_controller(path, controller: ctl.GaroController) -> None:
    """Writes a controller's weights to an ``.npz`` file.

    In a multi-process run only process 0 writes: every process holds the same
    (replicated) weights, and several writers would race on one file.

    Args:
      path: the file.
      controller: the weights.

    Returns:
      None.
    """
    if jax.process_index() != 0:
        return
    with open(path, "wb") as f:
        np.savez(f, **pretrained.controller_arrays(controller))


def load_controller(path) -> ctl.GaroController:
    """Reads a controller written by :func:`save_controller`.

    Args:
      path: the ``.npz`` file.

    Returns:
      The :class:`garo_optax.GaroController` (float32 arrays, float64 under
      x64).
    """
    return pretrained.read_controller(path)
