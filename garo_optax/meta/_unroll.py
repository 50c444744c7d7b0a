"""Unrolling inner training: the inner state, the checkpointed scan, log losses.

See :mod:`garo_optax.meta._estimators` for the estimators that differentiate
through :func:`unroll`, and :mod:`garo_optax.meta._train` for the outer loop.
"""

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from garo_optax import tasks as tasks_lib
from garo_optax._src import controller as ctl
from garo_optax._src import garo as garo_lib
from garo_optax._src import validate

Estimator = Literal["tbptt", "pes", "full"]
MetaLoss = Literal["mean_log_loss", "mean_log_relative_loss", "final_eval_loss"]
ESTIMATORS = ("tbptt", "pes", "full")
META_LOSSES = ("mean_log_loss", "mean_log_relative_loss", "final_eval_loss")
OptimizerFactory = Callable[[ctl.GaroController], optax.GradientTransformation]

_LOSS_FLOOR = 1e-8
_LOSS_CEILING = 1e8
POPULATION_AXIS = "population"


def default_optimizer(controller: ctl.GaroController) -> optax.GradientTransformation:
    """``garo_optax.garo(controller)``: the inner optimizer of meta-training.

    Args:
      controller: the controller weights (arrays or tracers).

    Returns:
      The GARO optimizer over these weights.
    """
    return garo_lib.garo(controller)


def log_loss(loss: jax.Array) -> jax.Array:
    """``log(clip(loss, 1e-8, 1e8))``, with NaN counted as the ceiling.

    Args:
      loss: a loss value (any shape).

    Returns:
      Its clipped logarithm, always finite.
    """
    loss = jnp.where(jnp.isnan(loss), _LOSS_CEILING, loss)
    return jnp.log(jnp.clip(loss, _LOSS_FLOOR, _LOSS_CEILING))


class InnerState(NamedTuple):
    """One inner training run: its task, parameters, optimizer state and step."""

    config: Any  # the task configuration (see `TaskFamily.sample`).
    params: Any
    opt_state: Any
    step: jax.Array  # shape=(), dtype=jnp.int32: inner steps taken.
    key: jax.Array  # the run's key, from which its batches are drawn.
    initial_loss: jax.Array | None = None  # the loss at the initial params.


class UnrollOutput(NamedTuple):
    """What :func:`unroll` returns."""

    losses: jax.Array  # shape=(num_steps,): the training loss of every step.
    state: InnerState  # the inner state after the unroll.


def init_inner(
    controller: ctl.GaroController,
    family: tasks_lib.TaskFamily,
    key: jax.Array,
    *,
    optimizer_fn: OptimizerFactory = default_optimizer,
    step: jax.Array | int = 0,
) -> InnerState:
    """A fresh inner run on a task sampled from ``family``.

    Args:
      controller: the controller weights.
      family: the task family.
      key: a PRNG key (task, initialization and batches derive from it).
      optimizer_fn: builds the inner optimizer from the controller.
      step: the inner step counter to start from.

    Returns:
      An :class:`InnerState`.
    """
    k_task, k_init, k_run = jax.random.split(key, 3)
    config = family.sample(k_task)
    task = family.task(config)
    params = task.init(k_init)
    opt_state = optimizer_fn(controller).init(params)
    first_batch = task.batch(jax.random.fold_in(k_run, 0), jnp.zeros([], jnp.int32))
    initial_loss = task.loss(params, first_batch)
    return InnerState(
        config, params, opt_state, jnp.asarray(step, jnp.int32), k_run, initial_loss
    )


def _chunk_size(length: int) -> int:
    """The divisor of ``length`` nearest to its square root."""
    root = math.isqrt(length)
    for d in range(root, 0, -1):
        if length % d == 0:
            best_low = d
            break
    for d in range(root + 1, length + 1):
        if length % d == 0:
            best_high = d
            break
    else:
        best_high = length
    if length / best_low - root > best_high - root:
        return best_high
    return best_low


def checkpointed_scan(body, carry, length: int, *, checkpoint: bool = True):
    """``lax.scan(body, carry, None, length)``, rematerialized in nested chunks.

    With ``checkpoint=True`` the steps run in chunks of about ``sqrt(length)``;
    each chunk is a ``jax.checkpoint``: the backward pass stores one carry per
    chunk and recomputes each chunk once, so its memory grows as
    ``O(sqrt(length))`` carries instead of ``O(length)`` steps' intermediates.

    Args:
      body: ``body(carry, None) -> (carry, output)``.
      carry: the initial carry.
      length: the number of steps (static, >= 1).
      checkpoint: rematerialize (else a plain scan). A prime ``length`` has
        no chunks of about its square root and falls back to one step per
        chunk (memory linear in ``length``, still without the intermediates).

    Returns:
      ``(carry, outputs)`` as ``lax.scan`` returns them.
    """
    if not checkpoint:
        return jax.lax.scan(body, carry, None, length=length)
    inner = _chunk_size(length)
    outer = length // inner
    step = jax.checkpoint(body)

    @jax.checkpoint
    def chunk(carry, _):
        return jax.lax.scan(step, carry, None, length=inner)

    carry, outputs = jax.lax.scan(chunk, carry, None, length=outer)
    outputs = jax.tree.map(lambda x: x.reshape((length,) + x.shape[2:]), outputs)
    return carry, outputs


def train_steps(
    controller,
    family: tasks_lib.TaskFamily,
    state: InnerState,
    num_steps: int,
    *,
    optimizer_fn: OptimizerFactory,
    checkpoint: bool,
):
    """``num_steps`` inner steps of one run; returns (state, losses)."""
    task = family.task(state.config)
    opt = optimizer_fn(controller)

    def body(state, _):
        batch_key = jax.random.fold_in(state.key, state.step)
        batch = task.batch(batch_key, state.step)
        loss, grads = jax.value_and_grad(task.loss)(state.params, batch)
        updates, opt_state = opt.update(
            grads, state.opt_state, state.params, value=loss
        )
        params = optax.apply_updates(state.params, updates)
        new = state._replace(
            params=params, opt_state=opt_state, step=optax.safe_increment(state.step)
        )
        return new, loss

    return checkpointed_scan(body, state, num_steps, checkpoint=checkpoint)


def unroll(
    controller: ctl.GaroController,
    task: tasks_lib.Task,
    key: jax.Array,
    num_steps: int,
    *,
    optimizer_fn: OptimizerFactory = default_optimizer,
    checkpoint: bool = True,
    state: InnerState | None = None,
) -> UnrollOutput:
    """Trains ``task`` for ``num_steps`` inner steps with GARO under ``controller``.

    Pure and differentiable in ``controller``: ``jax.grad`` of any function of
    the output is a meta-gradient. Batches are drawn inside the scan from
    ``fold_in(key, step)``.

    Args:
      controller: the controller weights.
      task: the inner problem.
      key: a PRNG key (initialization and batches), unused when ``state`` is
        given.
      num_steps: the number of inner steps (static, >= 1).
      optimizer_fn: builds the inner optimizer from the controller.
      checkpoint: rematerialize the scan in chunks (see
        :func:`checkpointed_scan`).
      state: continue this inner run instead of starting a fresh one.

    Returns:
      An :class:`UnrollOutput`: the loss of every step and the final state.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import garo_optax
      >>> from garo_optax import meta
      >>> task = meta.Task(
      ...     init=lambda key: jnp.ones(2),
      ...     loss=lambda p, batch: jnp.sum(p**2),
      ...     batch=lambda key, step: None,
      ... )
      >>> theta = garo_optax.init_controller(jax.random.key(0))
      >>> out = meta.unroll(theta, task, jax.random.key(1), 10)
      >>> bool(out.losses[-1] < out.losses[0])
      True
    """
    validate.check_integer("num_steps", num_steps, 1)
    if state is None:
        k_init, k_run = jax.random.split(key)
        params = task.init(k_init)
        opt_state = optimizer_fn(controller).init(params)
        state = InnerState(None, params, opt_state, jnp.zeros([], jnp.int32), k_run)
    family = tasks_lib.TaskFamily("task", lambda key: None, lambda config: task)
    state, losses = train_steps(
        controller,
        family,
        state,
        num_steps,
        optimizer_fn=optimizer_fn,
        checkpoint=checkpoint,
    )
    return UnrollOutput(losses, state)
