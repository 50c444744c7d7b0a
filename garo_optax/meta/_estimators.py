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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax import tasks as tasks_lib
from garo_optax._src import controller as ctl
from garo_optax._src import validate
from garo_optax.meta._unroll import (
    META_LOSSES,
    POPULATION_AXIS,
    Estimator,
    InnerState,
    MetaLoss,
    OptimizerFactory,
    default_optimizer,
    init_inner,
    log_loss,
    train_steps,
)


def _segment_meta_loss(
    controller, family, state: InnerState, num_steps, *, meta_loss, **kw
):
    """(meta-loss, (new state, losses)) of ``num_steps`` steps of one run."""
    state, losses = train_steps(controller, family, state, num_steps, **kw)
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


def check_segments(segment_length: int, horizon: int) -> None:
    """Refuses a horizon that is not a whole number of segments."""
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
    check_segments(segment_length, horizon)
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
    check_segments(segment_length, horizon)
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


def is_population_leaf(x) -> bool:
    """Whether a leaf of a meta-state carries the population axis first."""
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
