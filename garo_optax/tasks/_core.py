"""Inner training problems for meta-training: `Task` and `TaskFamily`.

A :class:`Task` is a tuple of pure functions (no state, no Python side effects),
so that an unrolled training run over it can be jitted, differentiated and
vmapped. A :class:`TaskFamily` samples task *configurations*: pytrees of arrays
of static shapes, so that a population of tasks drawn from one family shares a
computation graph and runs as one ``jax.vmap``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any
Batch = Any
TaskConfig = Any


class Task(NamedTuple):
    """An inner training problem as pure functions.

    Attributes:
      init: ``init(key) -> params``, the initial parameters.
      loss: ``loss(params, batch) -> scalar``, the training loss on a batch.
      batch: ``batch(key, step) -> batch``, the mini-batch of inner step
        ``step`` (an int32 scalar); traceable, so batches are drawn inside
        ``jit``.
      eval_loss: ``eval_loss(params) -> scalar``, the loss on held-out data, or
        ``None`` where the task has none.
    """

    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, Batch], jax.Array]
    batch: Callable[[jax.Array, jax.Array], Batch]
    eval_loss: Callable[[Params], jax.Array] | None = None


class TaskFamily(NamedTuple):
    """A distribution over tasks of one computation graph.

    Attributes:
      name: the family's name (the key of :data:`garo_optax.tasks.FAMILIES`).
      sample: ``sample(key) -> config``, a pytree of arrays whose shapes and
        dtypes do not depend on ``key``.
      task: ``task(config) -> Task``, traceable in ``config``: a population is
        ``jax.vmap`` over stacked configs.
    """

    name: str
    sample: Callable[[jax.Array], TaskConfig]
    task: Callable[[TaskConfig], Task]
