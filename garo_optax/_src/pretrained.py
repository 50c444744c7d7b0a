"""Meta-trained GARO controllers shipped inside the package.

Each controller is a small ``.npz`` file under ``garo_optax/weights/`` (package
data: no download), with a ``.json`` file beside it that records how it was
trained (the ``garo-optax meta-train`` command and configuration) and how it
evaluated.
"""

import dataclasses
import json
import pathlib

import jax.numpy as jnp
import numpy as np

from garo_optax._src import controller as ctl

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "weights"
DEFAULT = "garo-v2"
"""The best shipped controller: the scale-free design, what ``pretrained()`` loads."""


def available() -> tuple[str, ...]:
    """The names of the shipped controllers.

    Returns:
      The names (file stems under ``garo_optax/weights``), sorted.
    """
    return tuple(sorted(p.stem for p in WEIGHTS.glob("*.npz")))


def controller_arrays(controller: ctl.GaroController) -> dict[str, np.ndarray]:
    """The ``.npz`` fields of a controller: its weights and its design as JSON.

    Args:
      controller: the controller.

    Returns:
      A dict of NumPy arrays (the design as a 0-d string array).
    """
    arrays = {
        k: np.asarray(v)
        for k, v in controller._asdict().items()
        if k != "design" and v is not None
    }
    arrays["design"] = np.asarray(json.dumps(dataclasses.asdict(controller.design)))
    return arrays


def read_controller(path) -> ctl.GaroController:
    """Reads a controller from an ``.npz`` file of its fields.

    A file without a ``design`` field (``garo-v1``) is of the seed design and
    reads every element for its statistics (``stats_sample=0``), as it did when
    it was trained.

    Args:
      path: the file.

    Returns:
      The :class:`garo_optax.GaroController` (float32, float64 under x64).
    """
    try:
        with np.load(path) as data:
            fields = {k: data[k] for k in data.files}
        design = dataclasses.replace(ctl.SEED_DESIGN, stats_sample=0)
        if "design" in fields:
            design = ctl.GaroDesign(**json.loads(str(fields.pop("design"))))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"cannot read a controller from {path}: {error}") from error
    optional = {"log_lr0", "design"}
    missing = sorted(set(ctl.GaroController._fields) - set(fields) - optional)
    if missing:
        raise ValueError(f"{path} is not a GARO controller: missing {missing}")
    dtype = ctl.default_dtype()
    weights = {k: jnp.asarray(v, dtype) for k, v in fields.items()}
    return ctl.GaroController(**weights, design=design)


def pretrained(name: str = DEFAULT) -> ctl.GaroController:
    """A meta-trained GARO controller shipped with the package.

    ``garo_optax.garo(garo_optax.pretrained())`` is GARO with the best shipped
    controller, ``garo-v2`` (the scale-free design, meta-trained on
    ``garo_optax.meta.META_TRAIN_FAMILIES`` and ``EXTRA_TRAIN_FAMILIES`` under
    random loss and parameter scales); the controller carries its design, so
    nothing else needs to be passed. ``pretrained("garo-v1")`` is the seed
    design's controller, unchanged. ``pretrained_info(name)`` tells how each
    was trained and how it evaluated.

    Args:
      name: one of :func:`available` (default ``"garo-v2"``).

    Returns:
      The :class:`garo_optax.GaroController`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import garo_optax
      >>> tx = garo_optax.garo(garo_optax.pretrained())
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params), params, value=3.0)
      >>> sorted(garo_optax.hyperparams(state))
      ['lr', 'mom', 'wd']
    """
    names = available()
    if name not in names:
        raise ValueError(f"unknown pretrained controller {name!r}; available: {names}")
    return read_controller(WEIGHTS / f"{name}.npz")


def pretrained_info(name: str = DEFAULT) -> dict:
    """How the shipped controller ``name`` was trained and evaluated.

    Args:
      name: one of :func:`available`.

    Returns:
      The metadata dict (``command``, ``config``, ``meta_eval``, ...).
    """
    if name not in available():
        raise ValueError(
            f"unknown pretrained controller {name!r}; available: {available()}"
        )
    meta = WEIGHTS / f"{name}.json"
    return json.loads(meta.read_text()) if meta.exists() else {}
