"""garo_optax.meta: meta-training the GARO controller by unrolled training.

:func:`unroll`, :func:`truncated_step`, :func:`full_meta_gradient` and
:func:`make_meta_train` turn inner training into meta-gradients with respect to
a :class:`garo_optax.GaroController`; :class:`Checkpointer` saves and resumes
meta-training runs.

The inner problems live in :mod:`garo_optax.tasks` and are re-exported here:
tasks are tuples of pure functions (:class:`Task`); task families sample
populations of them that share one computation graph (:class:`TaskFamily`,
built-in ones in :data:`FAMILIES`, split into :data:`META_TRAIN_FAMILIES`,
the training-only :data:`EXTRA_TRAIN_FAMILIES` and :data:`HELD_OUT_FAMILIES`;
:func:`augmented` and :func:`rescaled` randomise or fix their loss and
parameter scales).
"""

from garo_optax.meta._checkpoint import Checkpointer as Checkpointer
from garo_optax.meta._checkpoint import load_controller as load_controller
from garo_optax.meta._checkpoint import save_controller as save_controller
from garo_optax.meta._estimators import TruncatedState as TruncatedState
from garo_optax.meta._estimators import full_meta_gradient as full_meta_gradient
from garo_optax.meta._estimators import population_sharding as population_sharding
from garo_optax.meta._estimators import truncated_init as truncated_init
from garo_optax.meta._estimators import truncated_step as truncated_step
from garo_optax.meta._train import MetaConfig as MetaConfig
from garo_optax.meta._train import MetaState as MetaState
from garo_optax.meta._train import check_config as check_config
from garo_optax.meta._train import initial_controller as initial_controller
from garo_optax.meta._train import make_meta_train as make_meta_train
from garo_optax.meta._train import meta_train as meta_train
from garo_optax.meta._train import resolve_family as resolve_family
from garo_optax.meta._unroll import InnerState as InnerState
from garo_optax.meta._unroll import UnrollOutput as UnrollOutput
from garo_optax.meta._unroll import checkpointed_scan as checkpointed_scan
from garo_optax.meta._unroll import init_inner as init_inner
from garo_optax.meta._unroll import log_loss as log_loss
from garo_optax.meta._unroll import unroll as unroll
from garo_optax.tasks import EXTRA_TRAIN_FAMILIES as EXTRA_TRAIN_FAMILIES
from garo_optax.tasks import FAMILIES as FAMILIES
from garo_optax.tasks import HELD_OUT_FAMILIES as HELD_OUT_FAMILIES
from garo_optax.tasks import LATE_HELD_OUT_FAMILIES as LATE_HELD_OUT_FAMILIES
from garo_optax.tasks import META_TRAIN_FAMILIES as META_TRAIN_FAMILIES
from garo_optax.tasks import Task as Task
from garo_optax.tasks import TaskFamily as TaskFamily
from garo_optax.tasks import augmented as augmented
from garo_optax.tasks import autoencoder_digits_family as autoencoder_digits_family
from garo_optax.tasks import char_transformer_family as char_transformer_family
from garo_optax.tasks import cnn_digits_family as cnn_digits_family
from garo_optax.tasks import format_scale as format_scale
from garo_optax.tasks import get_family as get_family
from garo_optax.tasks import logistic_family as logistic_family
from garo_optax.tasks import mlp_breast_cancer_family as mlp_breast_cancer_family
from garo_optax.tasks import mlp_diabetes_family as mlp_diabetes_family
from garo_optax.tasks import mlp_digits_family as mlp_digits_family
from garo_optax.tasks import mlp_synthetic_family as mlp_synthetic_family
from garo_optax.tasks import mnist1d_cnn_family as mnist1d_cnn_family
from garo_optax.tasks import mnist1d_mlp_family as mnist1d_mlp_family
from garo_optax.tasks import noisy_quadratic_family as noisy_quadratic_family
from garo_optax.tasks import quadratic_family as quadratic_family
from garo_optax.tasks import rescaled as rescaled
from garo_optax.tasks import rnn_sequence_family as rnn_sequence_family
from garo_optax.tasks import rosenbrock_family as rosenbrock_family

__all__ = (
    "Checkpointer",
    "EXTRA_TRAIN_FAMILIES",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "LATE_HELD_OUT_FAMILIES",
    "InnerState",
    "META_TRAIN_FAMILIES",
    "MetaConfig",
    "MetaState",
    "Task",
    "TaskFamily",
    "TruncatedState",
    "UnrollOutput",
    "augmented",
    "autoencoder_digits_family",
    "char_transformer_family",
    "check_config",
    "checkpointed_scan",
    "cnn_digits_family",
    "format_scale",
    "full_meta_gradient",
    "get_family",
    "init_inner",
    "initial_controller",
    "load_controller",
    "log_loss",
    "logistic_family",
    "make_meta_train",
    "meta_train",
    "mlp_diabetes_family",
    "mlp_digits_family",
    "mlp_breast_cancer_family",
    "mlp_synthetic_family",
    "mnist1d_cnn_family",
    "mnist1d_mlp_family",
    "noisy_quadratic_family",
    "population_sharding",
    "quadratic_family",
    "rescaled",
    "resolve_family",
    "rnn_sequence_family",
    "rosenbrock_family",
    "save_controller",
    "truncated_init",
    "truncated_step",
    "unroll",
)
