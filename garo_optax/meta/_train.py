r"""Meta-training the GARO controller by unrolling inner training.

The controller :math:`\theta` (a :class:`garo_optax.GaroController`) is an
argument of everything here, never state, so the JAX way applies: unroll inner
training with ``lax.scan`` and differentiate the loss of the unroll with
respect to :math:`\theta`, or estimate that gradient by evolution strategies.

Three estimators of :math:`\nabla_\theta` of the meta-loss:

* ``"tbptt"``, truncated backpropagation through time (the primary one): a
  population of inner runs is carried across meta-steps; each meta-step trains
  every run for ``segment_length`` (K) more steps and backpropagates through
  those K steps only (the incoming inner state is a constant). A run that has
  reached ``horizon`` inner steps is replaced by a fresh task at the start of
  the next segment, and the runs start at random offsets (multiples of K), so
  the population is desynchronized: at any meta-step it holds runs at every
  stage of training. Truncation biases the estimate towards short-horizon
  behaviour.
* ``"pes"``, antithetic Persistent Evolution Strategies (Vicol et al., 2021):
  the same segments, unrolled at :math:`\theta \pm \epsilon_i`; with
  :math:`A_i` the sum of the perturbations since run :math:`i` started,
  :math:`\hat g = \mathrm{mean}_i\, \Delta L_i (A_i + \epsilon_i) / (2\sigma^2)`,
  unbiased for the whole-horizon loss. No backpropagation through the GRU.
* ``"full"``: backpropagation through whole runs of ``horizon`` steps from
  fresh tasks (short horizons only).

The meta-loss of a stretch of inner training is the mean over its steps of
``log(loss)`` (``"mean_log_loss"``: every task and every stage of training
weighs the same whatever its loss scale), or the held-out loss at its end
(``"final_eval_loss"``). Losses are clipped to ``[1e-8, 1e8]`` (a diverged run
costs ``log(1e8)``, not NaN).

Memory: the scan body is checkpointed in nested chunks of about
:math:`\sqrt K` steps (``jax.checkpoint``), so the backward pass keeps
:math:`O(\sqrt K)` inner states instead of the :math:`O(K)` intermediates of
every step.
"""

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax import tasks as tasks_lib
from garo_optax._src import controller as ctl
from garo_optax._src import garo as garo_lib
from garo_optax._src import validate
from garo_optax.tasks import EXTRA_TRAIN_FAMILIES, META_TRAIN_FAMILIES

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


def _train_steps(
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
    state, losses = _train_steps(
        controller,
        family,
        state,
        num_steps,
        optimizer_fn=optimizer_fn,
        checkpoint=checkpoint,
    )
    return UnrollOutput(losses, state)


def _segment_meta_loss(
    controller, family, state: InnerState, num_steps, *, meta_loss, **kw
):
    """(meta-loss, (new state, losses)) of ``num_steps`` steps of one run."""
    state, losses = _train_steps(controller, family, state, num_steps, **kw)
    if meta_loss == "mean_log_loss":
        value = jnp.mean(log_loss(losses))
    elif meta_loss == "mean_log_relative_loss":
        # Relative to the run's first loss: every task and loss scale weighs
        # the same, and the clip acts on progress, not on the loss's units.
        value = jnp.mean(log_loss(losses / state.initial_loss))
    else:
        task = family.task(state.config)
        if task.eval_loss is None:
            raise ValueError(
                f"meta_loss='final_eval_loss' needs a task with eval_loss; family "
                f"{family.name!r} has none"
            )
        value = log_loss(task.eval_loss(state.params))
    return value, (state, losses)


def _clip_members(grads, max_norm: float | None):
    """Each member's gradient (axis 0) scaled to a norm of at most ``max_norm``.

    Backpropagation through a chaotic inner run gives a few members gradients
    many orders of magnitude above the rest; clipped one by one, they cannot
    outvote the population (``None``: no clipping).
    """
    if max_norm is None:
        return grads
    leaves = jax.tree.leaves(grads)
    sq = sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) for g in leaves)
    norm = jnp.sqrt(sq)
    factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1), 1.0)
    return jax.tree.map(
        lambda g: (
            g * factor.reshape(factor.shape + (1,) * (g.ndim - 1)).astype(g.dtype)
        ),
        grads,
    )


def _finite_mean(grads):
    """The mean over members (axis 0) of the finite per-member gradients.

    A member whose inner run diverged can give a non-finite meta-gradient; it
    is left out rather than poisoning the whole population's estimate.

    Returns:
      ``(mean, finite)``: the mean (zeros if no member is finite) and the
      per-member flags.
    """
    leaves = jax.tree.leaves(grads)
    finite = jnp.ones(leaves[0].shape[:1], bool)
    for g in leaves:
        finite &= jnp.all(jnp.isfinite(g.reshape(g.shape[0], -1)), axis=1)
    count = jnp.maximum(jnp.sum(finite), 1)

    def mean(g):
        mask = finite.reshape(finite.shape + (1,) * (g.ndim - 1))
        return jnp.sum(jnp.where(mask, g, 0), axis=0) / count.astype(g.dtype)

    return jax.tree.map(mean, grads), finite


class TruncatedState(NamedTuple):
    """The carried population of :func:`truncated_step` (leading axis: members)."""

    inner: InnerState  # for "pes": the +epsilon runs.
    antithetic: InnerState | None  # "pes" only: the -epsilon runs.
    accumulated: Any  # "pes" only: sum of the perturbations since each reset.


def _check_segments(segment_length: int, horizon: int) -> None:
    validate.check_integer("segment_length", segment_length, 1)
    validate.check_integer("horizon", horizon, 1)
    if horizon % segment_length:
        raise ValueError(
            f"horizon must be a multiple of segment_length, got horizon={horizon} "
            f"and segment_length={segment_length}"
        )


def truncated_init(
    controller: ctl.GaroController,
    family: tasks_lib.TaskFamily,
    key: jax.Array,
    population: int,
    *,
    segment_length: int,
    horizon: int,
    estimator: Estimator = "tbptt",
    optimizer_fn: OptimizerFactory = default_optimizer,
) -> TruncatedState:
    """A desynchronized population of fresh inner runs.

    Each member's step counter starts at a random multiple of
    ``segment_length`` in ``[0, horizon)``, so its first run is shorter and
    the members reset at different meta-steps.

    Args:
      controller: the controller weights.
      family: the task family.
      key: a PRNG key.
      population: the number of inner runs (>= 1).
      segment_length: inner steps per meta-step (K).
      horizon: inner steps per run (a multiple of K).
      estimator: ``"tbptt"`` or ``"pes"`` (which also carries the antithetic
        runs and the perturbation sums).
      optimizer_fn: builds the inner optimizer from the controller.

    Returns:
      A :class:`TruncatedState` whose leaves have a leading population axis.
    """
    validate.check_integer("population", population, 1)
    _check_segments(segment_length, horizon)
    validate.check_choice("estimator", estimator, ("tbptt", "pes"))
    k_runs, k_offsets = jax.random.split(key)
    segments = horizon // segment_length
    offsets = segment_length * jax.random.randint(
        k_offsets, (population,), 0, segments, jnp.int32
    )
    inner = jax.vmap(
        lambda k, step: init_inner(
            controller, family, k, optimizer_fn=optimizer_fn, step=step
        )
    )(jax.random.split(k_runs, population), offsets)
    if estimator == "tbptt":
        return TruncatedState(inner, None, None)
    zeros = jax.tree.map(
        lambda w: jnp.zeros((population,) + w.shape, w.dtype), controller
    )
    # Distinct buffers for the antithetic runs, so that the state can be donated.
    return TruncatedState(inner, jax.tree.map(jnp.copy, inner), zeros)


def _reset_finished(controller, family, state: InnerState, key, horizon, optimizer_fn):
    """Replaces every member that has reached ``horizon`` by a fresh run."""
    keys = jax.random.split(key, state.step.shape[0])
    fresh = jax.vmap(
        lambda k: init_inner(controller, family, k, optimizer_fn=optimizer_fn)
    )(keys)
    done = state.step >= horizon

    def pick(new, old):
        mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
        return jnp.where(mask, new, old)

    return jax.tree.map(pick, fresh, state), done


def truncated_step(
    controller: ctl.GaroController,
    family: tasks_lib.TaskFamily,
    state: TruncatedState,
    key: jax.Array,
    *,
    segment_length: int,
    horizon: int,
    estimator: Estimator = "tbptt",
    pes_std: float = 0.01,
    meta_loss: MetaLoss = "mean_log_loss",
    optimizer_fn: OptimizerFactory = default_optimizer,
    checkpoint: bool = True,
    member_clip: float | None = None,
):
    """One meta-gradient estimate from one segment of the carried population.

    Members that reached ``horizon`` are first replaced by fresh runs; then
    every member trains ``segment_length`` more steps.

    Args:
      controller: the controller weights.
      family: the task family of the population.
      state: the carried population (:func:`truncated_init`).
      key: a PRNG key (fresh tasks, PES perturbations).
      segment_length: inner steps per meta-step (K).
      horizon: inner steps per run.
      estimator: ``"tbptt"`` (backpropagation through the segment) or
        ``"pes"`` (antithetic persistent evolution strategies).
      pes_std: the standard deviation :math:`\\sigma` of the PES perturbation.
      meta_loss: ``"mean_log_loss"`` or ``"final_eval_loss"``.
      optimizer_fn: builds the inner optimizer from the controller.
      checkpoint: rematerialize the segment's scan (``"tbptt"``).
      member_clip: clip each member's estimate to this norm before the mean
        (``None``: no clipping).

    Returns:
      ``(meta_loss, grad, state, metrics)``: the population's mean meta-loss,
      the gradient estimate (a :class:`garo_optax.GaroController`: the mean
      over the members whose estimate is finite), the new population and a
      dict of scalars (``mean_loss``, ``resets``, ``nonfinite``: members left
      out).
    """
    _check_segments(segment_length, horizon)
    validate.check_choice("estimator", estimator, ("tbptt", "pes"))
    validate.check_choice("meta_loss", meta_loss, META_LOSSES)
    k_reset, k_eps = jax.random.split(key)
    inner, done = _reset_finished(
        controller, family, state.inner, k_reset, horizon, optimizer_fn
    )
    kw = dict(
        num_steps=segment_length,
        meta_loss=meta_loss,
        optimizer_fn=optimizer_fn,
        checkpoint=checkpoint,
    )
    if estimator == "tbptt":
        member = jax.value_and_grad(
            lambda theta, s: _segment_meta_loss(theta, family, s, **kw), has_aux=True
        )
        (values, (new, losses)), grads = jax.vmap(member, (None, 0))(controller, inner)
        grad, finite = _finite_mean(_clip_members(grads, member_clip))
        metrics = {
            "mean_loss": jnp.mean(losses),
            "resets": jnp.sum(done),
            "nonfinite": jnp.sum(~finite),
        }
        return jnp.mean(values), grad, TruncatedState(new, None, None), metrics

    # PES: the antithetic runs restart with the positive ones.
    anti = jax.tree.map(
        lambda new, old: jnp.where(
            done.reshape(done.shape + (1,) * (old.ndim - 1)), new, old
        ),
        inner,
        state.antithetic,
    )
    accumulated = jax.tree.map(
        lambda a: jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), 0, a),
        state.accumulated,
    )
    population = done.shape[0]
    leaves, treedef = jax.tree.flatten(controller)
    eps_keys = jax.random.split(k_eps, len(leaves))
    eps = treedef.unflatten(
        [
            pes_std * jax.random.normal(k, (population,) + w.shape, w.dtype)
            for k, w in zip(eps_keys, leaves)
        ]
    )
    no_ckpt = dict(kw, checkpoint=False)

    def member(e, pos, neg):
        plus = jax.tree.map(jnp.add, controller, e)
        minus = jax.tree.map(jnp.subtract, controller, e)
        v_plus, (pos, l_plus) = _segment_meta_loss(plus, family, pos, **no_ckpt)
        v_minus, (neg, _) = _segment_meta_loss(minus, family, neg, **no_ckpt)
        return v_plus, v_minus, pos, neg, l_plus

    v_plus, v_minus, pos, neg, losses = jax.vmap(member)(eps, inner, anti)
    accumulated = jax.tree.map(jnp.add, accumulated, eps)
    scale = (v_plus - v_minus) / (2 * pes_std**2)
    grads = jax.tree.map(
        lambda a: scale.reshape(scale.shape + (1,) * (a.ndim - 1)) * a, accumulated
    )
    grad, finite = _finite_mean(_clip_members(grads, member_clip))
    value = jnp.mean(0.5 * (v_plus + v_minus))
    metrics = {
        "mean_loss": jnp.mean(losses),
        "resets": jnp.sum(done),
        "nonfinite": jnp.sum(~finite),
    }
    return value, grad, TruncatedState(pos, neg, accumulated), metrics


def full_meta_gradient(
    controller: ctl.GaroController,
    family: tasks_lib.TaskFamily,
    key: jax.Array,
    population: int,
    horizon: int,
    *,
    meta_loss: MetaLoss = "mean_log_loss",
    optimizer_fn: OptimizerFactory = default_optimizer,
    checkpoint: bool = True,
):
    """Backpropagation through whole runs of ``horizon`` steps on fresh tasks.

    Args:
      controller: the controller weights.
      family: the task family.
      key: a PRNG key (tasks, initialization, batches).
      population: the number of runs averaged.
      horizon: the inner steps of each run.
      meta_loss: ``"mean_log_loss"`` or ``"final_eval_loss"``.
      optimizer_fn: builds the inner optimizer from the controller.
      checkpoint: rematerialize the scan (see :func:`checkpointed_scan`).

    Returns:
      ``(meta_loss, grad, metrics)``.
    """
    validate.check_integer("population", population, 1)
    validate.check_integer("horizon", horizon, 1)
    validate.check_choice("meta_loss", meta_loss, META_LOSSES)
    kw = dict(
        num_steps=horizon,
        meta_loss=meta_loss,
        optimizer_fn=optimizer_fn,
        checkpoint=checkpoint,
    )

    inner = jax.vmap(
        lambda k: init_inner(controller, family, k, optimizer_fn=optimizer_fn)
    )(jax.random.split(key, population))
    member = jax.value_and_grad(
        lambda theta, s: _segment_meta_loss(theta, family, s, **kw), has_aux=True
    )
    (values, (_, losses)), grads = jax.vmap(member, (None, 0))(controller, inner)
    grad, finite = _finite_mean(grads)
    metrics = {"mean_loss": jnp.mean(losses), "nonfinite": jnp.sum(~finite)}
    return jnp.mean(values), grad, metrics


def _is_population_leaf(x) -> bool:
    return hasattr(x, "ndim") and x.ndim >= 1


def population_sharding(num_devices: int | None):
    """A 1-D mesh over the first ``num_devices`` devices, axis ``"population"``.

    The devices are the first of :func:`jax.devices`, the global list (process
    0's first). With several processes (:func:`jax.distributed.initialize`),
    pass ``None``: a mesh that leaves out a process's devices gives that
    process arrays it cannot read.

    Args:
      num_devices: how many devices split the population (``None``: all, of
        every process).

    Returns:
      ``(mesh, sharded, replicated)``: the mesh and the
      :class:`jax.sharding.NamedSharding` of population-batched and of
      replicated arrays.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    validate.check_integer("num_devices", num_devices, 1)
    if num_devices > len(devices):
        raise ValueError(
            f"num_devices must be at most the {len(devices)} available devices, "
            f"got {num_devices}"
        )
    mesh = jax.sharding.Mesh(np.array(devices[:num_devices]), (POPULATION_AXIS,))
    spec = jax.sharding.PartitionSpec
    return (
        mesh,
        jax.sharding.NamedSharding(mesh, spec(POPULATION_AXIS)),
        jax.sharding.NamedSharding(mesh, spec()),
    )


class MetaConfig(NamedTuple):
    """A meta-training run: tasks, estimator, outer optimizer, controller.

    Attributes:
      families: the task families: names of :data:`garo_optax.meta.FAMILIES`
        or :class:`TaskFamily` objects; every meta-step averages their
        meta-gradients.
      population: inner runs per family and meta-step (>= 1).
      segment_length: inner steps per meta-step (K, >= 1).
      horizon: inner steps of a whole inner run (a multiple of K).
      estimator: ``"tbptt"``, ``"pes"`` or ``"full"`` (whole runs of
        ``horizon`` steps, backpropagated).
      outer_learning_rate: Adam's learning rate on the controller (> 0).
      steps: meta-steps (>= 1).
      clip: the global-norm clip of the meta-gradient (> 0).
      pes_std: the PES perturbation scale (> 0).
      meta_loss: ``"mean_log_loss"`` or ``"final_eval_loss"``.
      num_devices: devices that split the population (``None``: all); the
        population must be divisible by it. Multi-host meta-training (one
        process per host, after :func:`jax.distributed.initialize`, every
        process running the same :func:`meta_train`) needs ``None``: the
        mesh takes the first ``num_devices`` of the *global*
        :func:`jax.devices`, so the default 1 places the whole run on process
        0's first device, and every other process fails reading its step
        ("Fetching value for `jax.Array` that spans non-addressable (non
        process local) devices is not possible").
      seed: the seed of the controller's meta-initialization and of the run.
      granularity: the inner GARO's granularity.
      lagged: the inner GARO's ordering.
      hidden_size: the controller's hidden size.
      head_init_scale: the controller's meta-initial head scale.
      learning_rate_init: the controller's meta-initial learning rate.
      momentum_init: the controller's meta-initial momentum.
      weight_decay_init: the controller's meta-initial weight decay.
      scale_free: meta-train a controller of the scale-free design.
      loss_scale: task augmentation: every inner run multiplies its loss by a
        factor drawn log-uniformly from this range (``(1, 1)``: off).
      param_scale: task augmentation: every inner run reparametrizes each
        tensor by a factor drawn log-uniformly from this range (Celo's
        augmentation; ``(1, 1)``: off).
      member_clip: clip every member's meta-gradient estimate to this norm
        before the population mean (``None``: off).
    """

    families: tuple[str, ...] = ("quadratic",)
    population: int = 8
    segment_length: int = 20
    horizon: int = 200
    estimator: str = "tbptt"
    outer_learning_rate: float = 1e-3
    steps: int = 100
    clip: float = 1.0
    pes_std: float = 0.01
    meta_loss: str = "mean_log_loss"
    num_devices: int | None = 1
    seed: int = 0
    granularity: str = "global"
    lagged: bool = False
    hidden_size: int = 32
    head_init_scale: float = 0.1
    learning_rate_init: float = 0.01
    momentum_init: float = 0.5
    weight_decay_init: float = 0.0
    scale_free: bool = False
    loss_scale: tuple[float, float] = (1.0, 1.0)
    param_scale: tuple[float, float] = (1.0, 1.0)
    member_clip: float | None = None


def resolve_family(entry: "str | tasks_lib.TaskFamily") -> tasks_lib.TaskFamily:
    """A :class:`TaskFamily` from a registered name, or the family itself.

    Args:
      entry: a name of :data:`garo_optax.meta.FAMILIES` or a
        :class:`TaskFamily`.

    Returns:
      The family.
    """
    if isinstance(entry, tasks_lib.TaskFamily):
        return entry
    return tasks_lib.get_family(entry)


def augment(family: tasks_lib.TaskFamily, config: MetaConfig) -> tasks_lib.TaskFamily:
    """``family`` with the loss and parameter rescaling of ``config`` (if any).

    Args:
      family: the task family.
      config: the configuration (``loss_scale``, ``param_scale``).

    Returns:
      The family itself when both ranges are ``(1, 1)``, else the augmented one.
    """
    if tuple(config.loss_scale) == (1.0, 1.0) and tuple(config.param_scale) == (
        1.0,
        1.0,
    ):
        return family
    return tasks_lib.augmented(
        family,
        loss_scale=tuple(config.loss_scale),
        param_scale=tuple(config.param_scale),
    )


def check_config(config: MetaConfig) -> None:
    """Raises `ValueError` for a bad :class:`MetaConfig`, naming the field.

    Args:
      config: the configuration.

    Returns:
      None.
    """
    if not isinstance(config.families, tuple | list) or not config.families:
        raise ValueError(
            f"families must be a non-empty sequence of names, got {config.families!r}"
        )
    names = [resolve_family(entry).name for entry in config.families]
    if len(set(names)) != len(names):
        raise ValueError(f"families must not repeat a name, got {names}")
    validate.check_integer("population", config.population, 1)
    validate.check_integer("steps", config.steps, 1)
    validate.check_choice("estimator", config.estimator, ESTIMATORS)
    validate.check_choice("meta_loss", config.meta_loss, META_LOSSES)
    _check_segments(config.segment_length, config.horizon)
    validate.check_positive("outer_learning_rate", config.outer_learning_rate)
    validate.check_positive("clip", config.clip)
    validate.check_positive("pes_std", config.pes_std)
    validate.check_range("loss_scale", config.loss_scale)
    validate.check_range("param_scale", config.param_scale)
    if config.member_clip is not None:
        validate.check_positive("member_clip", config.member_clip)
    if config.num_devices is not None:
        validate.check_integer("num_devices", config.num_devices, 1)
        available = len(jax.devices())
        if config.num_devices > available:
            raise ValueError(
                f"num_devices must be at most the {available} available devices, "
                f"got {config.num_devices}"
            )
    devices = config.num_devices or len(jax.devices())
    if config.population % devices:
        raise ValueError(
            f"population must be divisible by the {devices} devices that split it, "
            f"got population={config.population}"
        )
    ctl.check_options(**_controller_options(config))


_CONTROLLER_OPTIONS = (
    "hidden_size",
    "head_init_scale",
    "learning_rate_init",
    "momentum_init",
    "weight_decay_init",
    "granularity",
    "scale_free",
)


def _controller_options(config: MetaConfig) -> dict:
    """The fields of ``config`` that are options of `init_controller`."""
    return {name: getattr(config, name) for name in _CONTROLLER_OPTIONS}


class MetaState(NamedTuple):
    """The state of a meta-training run: everything needed to resume it."""

    controller: ctl.GaroController
    opt_state: Any  # the outer optimizer's state.
    populations: dict  # family name -> TruncatedState (absent for "full").
    step: jax.Array  # shape=(), dtype=jnp.int32: meta-steps taken.


def initial_controller(config: MetaConfig) -> ctl.GaroController:
    """The meta-initial controller of ``config`` (seeded by ``config.seed``).

    Args:
      config: the configuration.

    Returns:
      A :class:`garo_optax.GaroController`.
    """
    return ctl.init_controller(
        jax.random.PRNGKey(config.seed), **_controller_options(config)
    )


def inner_optimizer_fn(config: MetaConfig) -> OptimizerFactory:
    """The inner optimizer factory of ``config``: GARO with its options.

    Args:
      config: the configuration.

    Returns:
      ``controller -> garo_optax.garo(controller, granularity=..., lagged=...)``.
    """
    return lambda theta: garo_lib.garo(
        theta, granularity=config.granularity, lagged=config.lagged
    )


def outer_optimizer(config: MetaConfig) -> optax.GradientTransformation:
    """Adam on the controller after global-norm clipping of the meta-gradient.

    Args:
      config: the configuration.

    Returns:
      ``chain(clip_by_global_norm(clip), adam(outer_learning_rate))``.
    """
    return optax.chain(
        optax.clip_by_global_norm(config.clip), optax.adam(config.outer_learning_rate)
    )


def make_meta_train(
    config: MetaConfig,
    *,
    outer: optax.GradientTransformation | None = None,
) -> tuple[Callable[[], MetaState], Callable[[MetaState], tuple[MetaState, dict]]]:
    """The pure ``init`` and jitted ``step`` functions of a meta-training run.

    ``step(state) -> (state, metrics)`` draws its randomness from
    ``fold_in(PRNGKey(config.seed), state.step)``, so a run resumed from a
    saved state continues exactly as the uninterrupted run. With several
    devices the population axis is sharded over a 1-D mesh (axis
    ``"population"``); the controller and the outer state are replicated.

    Args:
      config: the configuration (checked here).
      outer: the outer optimizer; ``None`` is :func:`outer_optimizer`.

    ``step`` donates its argument: keep only the state it returns.

    Returns:
      ``(init, step)``. ``metrics`` holds the scalars ``meta_loss`` (mean over
      the families), ``grad_norm`` (before clipping), ``mean_loss`` (mean inner
      training loss), ``resets``, and ``meta_loss/<family>`` per family.
    """
    check_config(config)
    families = {
        f.name: augment(f, config) for f in map(resolve_family, config.families)
    }
    optimizer_fn = inner_optimizer_fn(config)
    outer = outer_optimizer(config) if outer is None else outer
    devices = config.num_devices or len(jax.devices())
    _, sharded, replicated = population_sharding(devices)
    root = jax.random.PRNGKey(config.seed)

    def shard_population(tree):
        return jax.tree.map(
            lambda x: (
                jax.lax.with_sharding_constraint(x, sharded)
                if _is_population_leaf(x)
                else x
            ),
            tree,
        )

    def init() -> MetaState:
        controller = initial_controller(config)
        populations = {}
        if config.estimator != "full":
            for i, (name, family) in enumerate(families.items()):
                key = jax.random.fold_in(jax.random.fold_in(root, 1), i)
                populations[name] = truncated_init(
                    controller,
                    family,
                    key,
                    config.population,
                    segment_length=config.segment_length,
                    horizon=config.horizon,
                    estimator=config.estimator,
                    optimizer_fn=optimizer_fn,
                )
        state = MetaState(
            controller, outer.init(controller), populations, jnp.zeros([], jnp.int32)
        )
        state = jax.device_put(state, replicated)
        return state._replace(
            populations=jax.device_put(
                state.populations,
                jax.tree.map(
                    lambda x: sharded if _is_population_leaf(x) else replicated,
                    state.populations,
                ),
            )
        )

    def step(state: MetaState):
        key = jax.random.fold_in(jax.random.fold_in(root, 2), state.step)
        grads, values, inner_losses, resets, nonfinite = [], {}, [], [], []
        populations = {}
        for i, (name, family) in enumerate(families.items()):
            k = jax.random.fold_in(key, i)
            if config.estimator == "full":
                value, grad, metrics = full_meta_gradient(
                    state.controller,
                    family,
                    k,
                    config.population,
                    config.horizon,
                    meta_loss=config.meta_loss,
                    optimizer_fn=optimizer_fn,
                )
                metrics["resets"] = jnp.asarray(config.population, jnp.int32)
            else:
                value, grad, new, metrics = truncated_step(
                    state.controller,
                    family,
                    state.populations[name],
                    k,
                    segment_length=config.segment_length,
                    horizon=config.horizon,
                    estimator=config.estimator,
                    pes_std=config.pes_std,
                    meta_loss=config.meta_loss,
                    optimizer_fn=optimizer_fn,
                    member_clip=config.member_clip,
                )
                populations[name] = shard_population(new)
            grads.append(grad)
            values[f"meta_loss/{name}"] = value
            inner_losses.append(metrics["mean_loss"])
            nonfinite.append(metrics["nonfinite"])
            resets.append(metrics["resets"])
        grad = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
        grad_norm = optax.tree.norm(grad)
        # A non-finite estimate is skipped (the populations still advance).
        finite = jnp.isfinite(grad_norm)
        grad = optax.tree.where(finite, grad, optax.tree.zeros_like(grad))
        updates, opt_state = outer.update(grad, state.opt_state, state.controller)
        controller = optax.apply_updates(state.controller, updates)
        controller = optax.tree.where(finite, controller, state.controller)
        opt_state = optax.tree.where(finite, opt_state, state.opt_state)
        metrics = {
            "meta_loss": sum(values.values()) / len(values),
            "grad_norm": grad_norm,
            "mean_loss": sum(inner_losses) / len(inner_losses),
            "resets": sum(resets),
            "nonfinite": sum(nonfinite),
            **values,
        }
        new_state = MetaState(
            controller, opt_state, populations, optax.safe_increment(state.step)
        )
        return new_state, metrics

    return init, jax.jit(step, donate_argnums=0)


def meta_train(
    config: MetaConfig,
    *,
    state: MetaState | None = None,
    callback: Callable[[MetaState, dict], None] | None = None,
) -> tuple[ctl.GaroController, list[dict]]:
    """Meta-trains a GARO controller for ``config.steps`` meta-steps.

    Args:
      config: the configuration.
      state: resume from this state (e.g. a restored checkpoint); ``None``
        starts afresh.
      callback: called after every meta-step with the new state and its
        metrics (as Python floats) — e.g. to log or checkpoint; nothing is
        logged from inside the jitted step.

    Returns:
      ``(controller, history)``: the meta-trained controller and the metrics of
      every step taken in this call.

    Examples:
      >>> from garo_optax import meta
      >>> config = meta.MetaConfig(
      ...     families=("quadratic",), population=1, segment_length=1,
      ...     horizon=2, steps=2, hidden_size=2)
      >>> controller, history = meta.meta_train(config)
      >>> len(history), sorted(history[0])[:2]
      (2, ['grad_norm', 'mean_loss'])
    """
    init, step = make_meta_train(config)
    if state is None:
        state = init()
    history = []
    while int(state.step) < config.steps:
        state, metrics = step(state)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["step"] = int(state.step)
        history.append(metrics)
        if callback is not None:
            callback(state, metrics)
    return state.controller, history


_GARO_V2 = MetaConfig(
    families=META_TRAIN_FAMILIES + EXTRA_TRAIN_FAMILIES,
    population=8,
    segment_length=25,
    horizon=1000,
    steps=3000,
    outer_learning_rate=1e-3,
    clip=1.0,
    meta_loss="mean_log_relative_loss",
    scale_free=True,
    learning_rate_init=1e-3,
    momentum_init=0.9,
    weight_decay_init=0.0,
    loss_scale=(1e-3, 1e3),
    param_scale=(1 / 3, 3.0),
    member_clip=1.0,
)

CONFIGS: dict[str, MetaConfig] = {
    # Seconds: a quadratic family, a few meta-steps (tests, a first look).
    "smoke": MetaConfig(
        families=("quadratic",),
        population=4,
        segment_length=5,
        horizon=20,
        steps=6,
        hidden_size=8,
        outer_learning_rate=3e-3,
    ),
    # The recipe of the shipped controller `garo-v1` (about 0.35 s per
    # meta-step on 2 CPU cores): the cheap meta-training families, truncated
    # backprop.
    "garo-v1": MetaConfig(
        families=(
            "quadratic",
            "noisy_quadratic",
            "logistic_breast_cancer",
            "mlp_digits",
        ),
        population=8,
        segment_length=20,
        horizon=400,
        steps=3000,
        outer_learning_rate=3e-3,
        clip=1.0,
    ),
    # The recipe of `garo-v2`, the scale-free controller: every meta-training
    # family plus the training-only ones, each inner run under a random loss
    # scale in [1e-3, 1e3] and per-tensor parameter scales in [1/3, 3], runs
    # of 1000 steps in segments of 25, a meta-loss relative to each run's
    # first loss, every member's estimate clipped to norm 1 (about 1 s per
    # meta-step on 2 busy CPU cores).
    "garo-v2": _GARO_V2,
    # The same with antithetic PES instead of truncated backprop (the
    # comparison that chose truncated backprop for garo-v2: README).
    "garo-v2-pes": _GARO_V2._replace(estimator="pes", pes_std=0.01),
}
"""Named meta-training configurations (``garo-optax meta-train --config NAME``)."""


def get_config(name: str) -> MetaConfig:
    """The named configuration ``name`` of :data:`CONFIGS`.

    Args:
      name: a key of :data:`CONFIGS`.

    Returns:
      The :class:`MetaConfig`.
    """
    validate.check_choice("config", name, tuple(CONFIGS))
    return CONFIGS[name]
