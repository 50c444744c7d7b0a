r"""CLARA: cumulative learning-rate adaptation for SGD and Adam.

Atamna, Maus, Kievelitz and Glasmachers, `Cumulative Learning Rate Adaptation:
Revisiting Path-Based Schedules for SGD and Adam
<https://arxiv.org/abs/2508.05408>`_, 2025. The idea goes back to cumulative
step-size adaptation in CMA-ES and to SALeRA (Schoenauer-Sebag et al., 2017).

In plain words: CLARA keeps an exponentially weighted *path* of normalized steps.
When successive steps point the same way the path grows longer than the path of a
random walk and the learning rate is raised; when they oscillate the path is
shorter and the rate is lowered. The rate compounds multiplicatively from step to
step and is one global scalar, kept on the device in the optimizer state.

This module holds the published algorithm (:func:`scale_by_clara`,
:func:`clara_sgd`, :func:`adam_clara`); ``clara_seed.py`` holds the three
exploratory Adam-CLARA variants that preceded it
(:func:`~garo_optax.adam_clara_global`, :func:`~garo_optax.adam_clara_local`,
:func:`~garo_optax.adam_clara_smoothed`), which share this module's state and
rate bookkeeping.

Tensor order: wherever a rule walks over tensors one after another (the local
and smoothed variants), the order is the flatten order of the parameter tree,
``jax.tree.leaves(params)``, which sorts dictionary keys. PyTorch walks
parameters in registration order, so results on a model with several tensors can
differ from a PyTorch run in the per-tensor rates (never in the rules).

The rate in the state: the field ``lr`` is the source of truth. Every update
continues from the state's ``lr``, so writing it, as in
``optax.tree.set(state, lr=x)`` (warm restarts, manual decay, population-based
training), sets the rate of the next update, and the adaptation then multiplies
``x``. A schedule (or a learning rate changed in ``optax.inject_hyperparams``'
state) multiplies the rate by its change: the next update applies
``lr * s(count) / base_lr``, where ``base_lr`` is the value of
``learning_rate`` that ``lr`` was computed with, so without a change it
applies ``lr`` itself. ``lr_factor`` is the adaptation factor; it serves only
while ``base_lr`` is 0 (a schedule at zero), where a written ``lr`` is ignored.
Each CLARA transform holds one ``lr``: with two in one chain, pass
``optax.tree.set`` a ``filtering`` function.

Complex parameters are supported as in optax (pass the conjugate of
``jax.grad``'s gradient, as optax expects): norms and path lengths use
:math:`|x|^2 = x \bar x`, the rate and every statistic (and Adam-CLARA's second
moment) are real, and the path and the step are complex.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from garo_optax._src import numerics, validate, xla_cpu

Normalize = Literal["per_tensor", "global"]

# Floor of the per-tensor norm, as in the reference code: a zero tensor gets a
# zero unit direction instead of NaN.
_NORM_FLOOR = 1e-12


class ScaleByClaraState(NamedTuple):
    """State of :func:`scale_by_clara` and of the seed variants.

    ``lr`` is the source of truth for the rate: write it (``optax.tree.set(state,
    lr=x)``) and the next update continues from ``x``. ``lr_factor`` is the
    adaptation factor the rule keeps on top of ``base_lr``.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    lr_factor: jax.Array  # shape=(), float32: adaptation factor on the schedule.
    lr: jax.Array  # shape=(), float32: the learning rate (see each function).
    base_lr: jax.Array  # shape=(), float32: learning_rate's value behind `lr`.
    path: optax.Updates


class ScaleByAdamClaraState(NamedTuple):
    """State of :func:`adam_clara`: Adam's moments and CLARA's path and rate.

    ``lr`` is the source of truth for the rate, as in :class:`ScaleByClaraState`.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    mu: optax.Updates  # Adam's first moment.
    nu: optax.Updates  # Adam's second moment (real, also for complex params).
    lr_factor: jax.Array  # shape=(), float32: adaptation factor on the schedule.
    lr: jax.Array  # shape=(), float32: the learning rate of the next update.
    base_lr: jax.Array  # shape=(), float32: learning_rate's value behind `lr`.
    path: optax.Updates


def adam_clara_reference(c: jax.typing.ArrayLike, b1: jax.typing.ArrayLike):
    r"""Expected squared path length per tensor of Adam-CLARA under pure noise.

    When Adam is fed independent Gaussian gradients, its normalized direction
    behaves like a normalized AR(1) process with lag correlation :math:`\beta_1^k`,
    so the path of normalized steps is longer than a random walk's. Its expected
    squared length per tensor is

    .. math::
      \mu_A = \frac{c}{2 - c} \, \frac{1 + (1 - c)\beta_1}{1 - (1 - c)\beta_1},

    which for ``b1=0`` falls back to SGD-CLARA's random-walk value
    :math:`c / (2 - c)`.

    Args:
      c: cumulation constant in (0, 1].
      b1: Adam's first-moment decay in [0, 1).

    Returns:
      The reference :math:`\mu_A` (a Python float for Python inputs, else an array).

    Examples:
      >>> round(adam_clara_reference(0.2, 0.9), 5)
      0.68254
    """
    damped = (1.0 - c) * b1
    return c / (2.0 - c) * (1.0 + damped) / (1.0 - damped)


def _check_common(learning_rate, c, damping) -> None:
    if not callable(learning_rate):
        validate.check_positive("learning_rate", learning_rate)
    validate.check_interval("c", c, 0.0, 1.0, low_closed=False)
    validate.check_positive("damping", damping)


def _check_adam(b1, b2, eps) -> None:
    validate.check_interval("b1", b1, 0.0, 1.0, high_closed=False)
    validate.check_interval("b2", b2, 0.0, 1.0, high_closed=False)
    validate.check_interval("eps", eps, 0.0, None)


def _compute_dtype(leaf: jax.Array) -> jnp.dtype:
    # Element-wise work runs in float32 (float64 for float64 leaves, complex64
    # or complex128 for complex ones), then the result is cast back, so
    # low-precision leaves never see coarse scalars.
    return numerics.compute_dtype(leaf.dtype)


def _scaled(leaf: jax.Array, factor: jax.Array) -> jax.Array:
    dtype = _compute_dtype(leaf)
    return (leaf.astype(dtype) * factor.astype(dtype)).astype(leaf.dtype)


def _init_state(params, schedule, path_dtype) -> ScaleByClaraState:
    dtype = numerics.scalar_dtype(params)
    count = jnp.zeros([], jnp.int32)
    base_lr = numerics.as_real(schedule(count), dtype)

    def zeros(p):
        # A real `path_dtype` sets the precision; complex leaves stay complex.
        if path_dtype is None or not jnp.iscomplexobj(p):
            return jnp.zeros_like(p, path_dtype)
        return jnp.zeros_like(p, numerics.complex_dtype(path_dtype))

    return ScaleByClaraState(
        count=count,
        lr_factor=jnp.ones([], dtype),
        lr=base_lr,
        base_lr=jnp.copy(base_lr),  # its own buffer, so the state can be donated
        path=jax.tree.map(zeros, params),
    )


# --- The rate: `lr` in the state is the source of truth. ---
#
# After every update lr = base_lr * factor, with base_lr the value of
# `learning_rate` (the schedule at that count) it was computed with. A later
# update reads the factor back as lr / base_lr and rescales lr by the
# schedule's change, s(count) / base_lr. So a written lr is what the next
# update continues from, and a changed learning rate (a schedule, or one
# written into `optax.inject_hyperparams`' state) still multiplies it.
# `lr_factor` serves only while base_lr is 0 (a schedule at zero), where
# lr / base_lr is undefined; there a written lr is ignored.


def _read_rate(state, base: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(factor, rate)``: the factor the state's ``lr`` implies, and the rate
    of this update at schedule value ``base`` (``lr`` itself while ``base``
    equals ``base_lr``)."""
    dtype = base.dtype
    lr = numerics.as_real(state.lr, dtype)  # A written Python float is fine.
    known = state.base_lr != 0
    safe = jnp.where(known, state.base_lr, 1).astype(dtype)
    factor = jnp.where(known, lr / safe, state.lr_factor)
    rate = jnp.where(known, lr * (base / safe), base * state.lr_factor)
    return factor, rate


def _next_lr(state, ratio: jax.Array, base: jax.Array, factor: jax.Array):
    """The ``lr`` to store: ``base * factor``, continued from the state's ``lr``.

    Computed as ``lr * ratio * base / base_lr`` with ``ratio`` the change of the
    factor, so that an unchanged factor and a constant learning rate keep
    ``lr`` bit for bit; ``base * factor`` where that is undefined.
    """
    dtype = base.dtype
    lr = numerics.as_real(state.lr, dtype)
    known = (state.base_lr != 0) & jnp.isfinite(ratio)
    safe = jnp.where(state.base_lr != 0, state.base_lr, 1).astype(dtype)
    return jnp.where(known, lr * ratio * (base / safe), base * factor)


class _ClaraConfig(NamedTuple):
    """The static and numeric hyperparameters of one CLARA core."""

    schedule: Callable[[jax.Array], jax.Array]
    c: jax.typing.ArrayLike
    damping: jax.typing.ArrayLike
    mu: jax.typing.ArrayLike | None
    unit_step: bool
    normalize: Normalize
    adapt: bool


def _clara_step(
    config: _ClaraConfig,
    state: ScaleByClaraState | ScaleByAdamClaraState,
    squared_norms: xla_cpu.LeafSums,
    step_directions: Sequence[Callable[[], jax.Array]],
    path_directions: Sequence[Callable[[], jax.Array]],
    paths: Sequence[jax.Array],
    update_dtypes: Sequence[jnp.dtype],
) -> tuple[list[jax.Array], list[jax.Array], jax.Array, jax.Array, jax.Array]:
    """One CLARA step over the flattened leaves, given their directions.

    Shared by :func:`scale_by_clara` and the fused Adam-CLARA core. Leaf ``k``'s
    direction is described three times: its squared norm (in
    ``squared_norms``, scalars in the dtype of ``state.lr_factor``; small
    leaves' summed together, see :func:`xla_cpu.leaf_sums`), and
    ``step_directions[k]()`` and
    ``path_directions[k]()``, which return the same values in a compute dtype
    (float, or complex for complex leaves). The two callables are separate so
    that a caller may write them as different expressions (see
    :func:`_scale_by_adam_clara`).

    The update applies the state's ``lr`` (rescaled by the schedule's change
    since it was stored), and the adaptation multiplies it: a written ``lr`` is
    where the rate continues from.

    Returns:
      ``(updates, paths, lr_factor, lr, base_lr)``: the scaled directions
      (without the sign flip) in ``update_dtypes``, the new paths, the new
      adaptation factor, the rate of the next update,
      ``schedule(count + 1) * lr_factor``, and that ``schedule(count + 1)``.
    """
    dtype = state.lr_factor.dtype
    cum = numerics.as_real(config.c, dtype)
    # Global scalars are computed once for all leaves, and the per-leaf
    # scalar math runs on the vectors of small leaves' sums (xla_cpu).
    total = squared_norms.total(dtype)
    # NaN/Inf anywhere in the direction shows up in the norms, which are
    # computed before anything is written: the path and the rate keep their
    # old values instead of being poisoned.
    finite = jnp.isfinite(total)
    inverse_norms = _inverse_norms(config.normalize, squared_norms, total)

    base = numerics.as_real(config.schedule(state.count), dtype)
    next_base = numerics.as_real(
        config.schedule(optax.safe_increment(state.count)), dtype
    )
    factor, rate = _read_rate(state, base)
    new_updates = []
    for direction, n, out in zip(step_directions, inverse_norms, update_dtypes):
        a = direction()
        scale = rate * n if config.unit_step else rate
        new_updates.append((a * scale.astype(a.dtype)).astype(out))

    new_paths = [
        jnp.where(finite, _path_step(p, direction(), 1.0 - cum, cum * n), p)
        for direction, p, n in zip(path_directions, paths, inverse_norms)
    ]
    change = _rate_change(config, new_paths, finite, dtype)
    lr_factor = factor * change
    lr = _next_lr(state, change, next_base, lr_factor)
    return new_updates, new_paths, lr_factor, lr, next_base


def _inverse_norms(
    normalize: Normalize, squared_norms: xla_cpu.LeafSums, total
) -> list[jax.Array]:
    """``1 / max(norm, floor)`` per leaf: its own norm's, or the tree's."""
    inverse = lambda s: jax.lax.rsqrt(jnp.maximum(s, _NORM_FLOOR**2))
    if normalize == "global":
        return [inverse(total)] * len(squared_norms.scalars)
    return squared_norms.map(inverse).entries()


def _squared_terms(x: jax.Array, dtype) -> jax.Array:
    """The terms :math:`|x_i|^2` whose sum is ``numerics.squared_norm(x,
    dtype)``, in ``dtype`` (real)."""
    dtype = numerics.real_dtype(dtype)
    if jnp.iscomplexobj(x):
        return numerics.abs_square(x.astype(numerics.complex_dtype(dtype)))
    return jnp.square(x.astype(dtype))


def _path_step(path: jax.Array, direction: jax.Array, keep, gain) -> jax.Array:
    """``keep * path + gain * direction`` in the path's compute dtype, stored in
    the path's dtype (``keep`` and ``gain`` are real scalars)."""
    work = _compute_dtype(path)
    stepped = keep.astype(work) * path.astype(work) + gain.astype(
        work
    ) * direction.astype(work)
    return stepped.astype(path.dtype)


def _rate_change(config: _ClaraConfig, new_paths, finite, dtype) -> jax.Array:
    """The factor ``exp(d (|p|^2 / reference - 1))`` the rate changes by (1
    when not adapting, without non-empty leaves or for a non-finite step)."""
    change = jnp.ones([], dtype)
    num_tensors = sum(1 for p in new_paths if p.size > 0)
    if not config.adapt or num_tensors == 0:
        return change
    cum = numerics.as_real(config.c, dtype)
    mu = cum / (2.0 - cum) if config.mu is None else config.mu
    reference = numerics.as_real(mu, dtype) * (
        num_tensors if config.normalize == "per_tensor" else 1
    )
    square = functools.partial(_squared_terms, dtype=dtype)
    path_length = xla_cpu.leaf_sums([square] * len(new_paths), new_paths).total(dtype)
    damping = numerics.as_real(config.damping, dtype)
    return jnp.where(finite, jnp.exp(damping * (path_length / reference - 1)), change)


def scale_by_clara(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    c: jax.typing.ArrayLike = 0.2,
    damping: jax.typing.ArrayLike = 1e-3,
    mu: jax.typing.ArrayLike | None = None,
    unit_step: bool = True,
    normalize: Normalize = "per_tensor",
    adapt: bool = True,
    path_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales the incoming direction by a cumulatively adapted learning rate.

    The learning-rate-owning core of CLARA. It normalizes the incoming direction
    (a gradient, or Adam's direction when chained after
    :func:`optax.scale_by_adam`), accumulates the path of normalized steps, and
    adapts one global learning rate from the path's squared length. It returns
    the direction scaled by the current rate *without* the sign flip; chain
    :func:`optax.scale_by_learning_rate` ``(1.0)`` after it for a descent step, as
    :func:`clara_sgd` and :func:`adam_clara` do.

    See :func:`clara_sgd` for the update equations.

    Args:
      learning_rate: the initial learning rate :math:`\eta_0` (> 0), or a schedule
        that the adaptation factor multiplies.
      c: cumulation constant in (0, 1]; the path forgets at rate ``1 - c``.
      damping: damping :math:`d` > 0 of the multiplicative rate change.
      mu: expected squared path length per normalized tensor under noise.
        ``None`` means the random-walk value :math:`c / (2 - c)`; use
        :func:`adam_clara_reference` after Adam.
      unit_step: step along the normalized direction (``True``) or along the raw
        incoming direction (``False``).
      normalize: ``"per_tensor"`` normalizes each leaf separately and compares the
        path with ``K * mu`` for ``K`` non-empty leaves; ``"global"`` normalizes by
        the norm of the whole tree and compares with ``mu``.
      adapt: adapt the rate; ``False`` keeps :math:`\eta_t = \eta_0`.
      path_dtype: dtype of the path; ``None`` uses the parameters' dtypes.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> tx = optax.chain(garo_optax.scale_by_clara(0.1),
      ...                  optax.scale_by_learning_rate(1.0))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state)
      >>> print(optax.tree.get(state, "lr") < 0.1)  # a first step shrinks the rate
      True
    """
    _check_common(learning_rate, c, damping)
    validate.check_choice("normalize", normalize, ("per_tensor", "global"))
    if mu is not None:
        validate.check_positive("mu", mu)
    schedule = numerics.as_schedule(learning_rate)

    def init_fn(params):
        return _init_state(params, schedule, path_dtype)

    config = _ClaraConfig(schedule, c, damping, mu, unit_step, normalize, adapt)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dtype = state.lr_factor.dtype
        directions, treedef = jax.tree.flatten(updates)
        paths = treedef.flatten_up_to(state.path)
        # One materialized direction serves every consumer here: it is this
        # transform's input. (The fused Adam-CLARA recomputes it instead.)
        as_compute = [functools.partial(_as_compute, a) for a in directions]
        new_updates, new_paths, lr_factor, lr, base_lr = _clara_step(
            config,
            state,
            xla_cpu.leaf_sums(
                [functools.partial(_squared_terms, dtype=dtype)] * len(directions),
                directions,
            ),
            as_compute,
            as_compute,
            paths,
            [a.dtype for a in directions],
        )
        new_state = ScaleByClaraState(
            count=optax.safe_increment(state.count),
            lr_factor=lr_factor,
            lr=lr,
            base_lr=base_lr,
            path=treedef.unflatten(new_paths),
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _as_compute(leaf: jax.Array) -> jax.Array:
    return leaf.astype(_compute_dtype(leaf))


def clara_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    c: jax.typing.ArrayLike = 0.2,
    damping: jax.typing.ArrayLike = 1e-3,
    unit_step: bool = True,
    normalize: Normalize = "per_tensor",
    adapt: bool = True,
    mu: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with cumulative learning-rate adaptation (SGD-CLARA).

    Plain SGD along the normalized gradient, with a learning rate that grows
    while successive normalized gradients agree and shrinks while they
    oscillate. Useful when the right learning rate is unknown: a rate several
    orders of magnitude too small or too large is corrected over the run.

    Let :math:`\eta_t` be the learning rate, :math:`c` the cumulation constant
    ``c``, :math:`d` the ``damping``, :math:`K` the number of non-empty leaves and
    :math:`\mu` the reference ``mu``. For each leaf :math:`k` with gradient
    :math:`g^{(k)}_t`:

    .. math::
      \begin{align*}
        u^{(k)}_t &\leftarrow g^{(k)}_t / \max(\|g^{(k)}_t\|, 10^{-12}) \\
        \theta^{(k)}_t &\leftarrow \theta^{(k)}_{t-1} - \eta_t\, u^{(k)}_t
          \quad (\text{or } - \eta_t\, g^{(k)}_t \text{ if not unit\_step}) \\
        p^{(k)}_t &\leftarrow (1 - c)\, p^{(k)}_{t-1} + c\, u^{(k)}_t \\
        \eta_{t+1} &\leftarrow \eta_t \exp\Big(d \Big(
          \frac{\sum_k \|p^{(k)}_t\|^2}{K \mu} - 1\Big)\Big),
          \qquad \mu = \frac{c}{2 - c}.
      \end{align*}

    With ``normalize="global"`` the norm is the whole tree's and the test is
    :math:`\|p_t\|^2 / \mu - 1`. The path :math:`p` is per element; the rate is
    global. The state field ``lr`` is :math:`\eta_{t+1}`, the rate the next
    update applies, and where it continues from: write it to set the rate (see
    the module notes). With a schedule :math:`s`, :math:`\eta_t = s(t)\, f_t`
    where the adaptation factor :math:`f_t` is ``lr_factor``; a written ``lr``
    sets :math:`f_t = \eta_t / s(t)`.

    A non-finite gradient leaves the path and the rate unchanged (the update
    itself is non-finite, as with :func:`optax.sgd`); wrap the optimizer in
    :func:`optax.apply_if_finite` to skip such steps.

    The rate changes by at most a factor :math:`\exp(d (1/\mu - 1))` per step
    (:math:`e^{8d}` for :math:`c = 0.2`), and grows while the steps agree. With
    raw steps (``unit_step=False``) a rate past 2 / curvature diverges faster
    than the then shorter path brings it back: keep :math:`d / c` small (the
    published :math:`d` is 1e-3).

    Args:
      learning_rate: the initial learning rate :math:`\eta_0` > 0, or a schedule
        that the adaptation factor multiplies.
      c: cumulation constant in (0, 1].
      damping: damping :math:`d` > 0 of the rate change per step.
      unit_step: step along :math:`u` (``True``) or along the raw gradient.
      normalize: ``"per_tensor"`` or ``"global"`` normalization.
      adapt: adapt the rate; with ``adapt=False`` and ``unit_step=False`` this is
        :func:`optax.sgd`.
      mu: reference squared path length per tensor; ``None`` gives
        :math:`c/(2-c)`.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import garo_optax
      >>> f = lambda x: jnp.sum(x ** 2)
      >>> solver = garo_optax.clara_sgd(learning_rate=0.1)
      >>> params = jnp.array([1., 2., 3.])
      >>> opt_state = solver.init(params)
      >>> for _ in range(3):
      ...   grad = jax.grad(f)(params)
      ...   updates, opt_state = solver.update(grad, opt_state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.3f}")
      11.846

    References:
      Atamna et al, `Cumulative Learning Rate Adaptation: Revisiting Path-Based
      Schedules for SGD and Adam <https://arxiv.org/abs/2508.05408>`_, 2025
    """
    return optax.chain(
        scale_by_clara(
            learning_rate,
            c=c,
            damping=damping,
            mu=mu,
            unit_step=unit_step,
            normalize=normalize,
            adapt=adapt,
        ),
        optax.scale_by_learning_rate(1.0),
    )


def _scale_by_adam_clara(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: jax.typing.ArrayLike,
    b2: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
    c: jax.typing.ArrayLike,
    damping: jax.typing.ArrayLike,
    mu: jax.typing.ArrayLike,
    unit_step: bool,
    mu_dtype: jax.typing.DTypeLike | None,
    adapt: bool,
) -> optax.GradientTransformationExtraArgs:
    """Adam's moments and CLARA's path and rate in one transform.

    Equals ``optax.chain(optax.scale_by_adam(b1, b2, eps, mu_dtype=mu_dtype),
    scale_by_clara(learning_rate, c=c, damping=damping, mu=mu, ...))`` except in
    rounding: Adam's direction is computed in float32 (float64 for float64
    leaves) for low-precision leaves too, and is never stored.
    """
    schedule = numerics.as_schedule(learning_rate)
    config = _ClaraConfig(schedule, c, damping, mu, unit_step, "per_tensor", adapt)
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def init_fn(params):
        return _init_adam_clara_state(params, schedule, mu_dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        grads, treedef = jax.tree.flatten(updates)
        mus = treedef.flatten_up_to(state.mu)
        nus = treedef.flatten_up_to(state.nu)
        count = optax.safe_increment(state.count)
        scalars = _adam_scalars(b1, b2, eps, count, state.lr_factor.dtype)
        moments = [_adam_moments(scalars, g, m, v) for g, m, v in zip(grads, mus, nus)]
        copies = xla_cpu.sum_copies(grads)
        forms = [
            _AdamDirection(scalars, m, v, count, k)
            for (m, v), k in zip(moments, copies)
        ]
        new_updates, new_paths, lr_factor, lr, base_lr = _clara_step(
            config,
            state,
            _adam_squared_norms(scalars, forms),
            [a.step_form for a in forms],
            [a.path_form for a in forms],
            treedef.flatten_up_to(state.path),
            [g.dtype for g in grads],
        )
        unflatten_like = lambda new, old: treedef.unflatten(
            [x.astype(o.dtype) for x, o in zip(new, old)]
        )
        new_state = ScaleByAdamClaraState(
            count=count,
            mu=unflatten_like([m for m, _ in moments], mus),
            nu=unflatten_like([v for _, v in moments], nus),
            lr_factor=lr_factor,
            lr=lr,
            base_lr=base_lr,
            path=treedef.unflatten(new_paths),
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _init_adam_clara_state(params, schedule, mu_dtype) -> ScaleByAdamClaraState:
    clara = _init_state(params, schedule, None)
    return ScaleByAdamClaraState(
        count=clara.count,
        mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        # Real: |g|^2 of a complex gradient is real (optax keeps it complex).
        nu=jax.tree.map(
            lambda p: jnp.zeros_like(p, numerics.real_dtype(p.dtype)), params
        ),
        lr_factor=clara.lr_factor,
        lr=clara.lr,
        base_lr=clara.base_lr,
        path=clara.path,
    )


class _AdamScalars(NamedTuple):
    """Adam's scalars at one step, in the scalar dtype (float32 at least)."""

    beta1: jax.Array
    beta2: jax.Array
    rest1: jax.Array  # 1 - b1, rounded once (1 - f32(0.999) is not f32(0.001)).
    rest2: jax.Array
    epsilon: jax.Array
    correction1: jax.Array  # 1 - b1**t, as `optax.tree.bias_correction`.
    correction2: jax.Array


def _adam_scalars(b1, b2, eps, count: jax.Array, dtype) -> _AdamScalars:
    """Adam's decay rates, epsilon and bias corrections after ``count`` steps,
    computed in ``dtype`` and cast to a leaf's dtype only where used."""
    beta1, beta2 = numerics.as_real(b1, dtype), numerics.as_real(b2, dtype)
    return _AdamScalars(
        beta1=beta1,
        beta2=beta2,
        # 1 - b before the cast, as in optax.
        rest1=numerics.as_real(1 - b1, dtype),
        rest2=numerics.as_real(1 - b2, dtype),
        epsilon=numerics.as_real(eps, dtype),
        correction1=1 - beta1 ** count.astype(dtype),
        correction2=1 - beta2 ** count.astype(dtype),
    )


def _adam_moments(s: _AdamScalars, g, m, v) -> tuple[jax.Array, jax.Array]:
    """Adam's new moments of one leaf in its compute dtype: ``m`` complex for
    complex leaves, ``v`` (of :math:`|g|^2`) real."""
    work = numerics.compute_dtype(g.dtype, m.dtype, v.dtype)
    real = numerics.real_dtype(work)
    g = g.astype(work)
    m = s.rest1.astype(work) * g + s.beta1.astype(work) * m.astype(work)
    v = s.rest2.astype(real) * numerics.abs_square(g) + s.beta2.astype(real) * v.astype(
        real
    )
    return m, v


class _AdamDirection(NamedTuple):
    """Adam's direction ``a = (m / bc1) / (sqrt(v / bc2) + eps)`` of one leaf,
    written three ways for its three consumers.

    ``a``'s per-tensor norm, the parameter step and the path each read it.
    XLA:CPU neither copies an expensive fusion (divide, sqrt) into several
    consumers nor fuses loops with several outputs, so one shared ``a`` (as in
    the chain scale_by_adam -> scale_by_clara) is written to a fresh temporary
    buffer on every step: 4 B/param more traffic and a page fault per 1000
    params. The three forms are equal but different expressions, which CSE
    cannot merge back into one stored value, so each loop recomputes ``a``
    from ``m`` and ``v`` in registers. 10M and 100M params, 52 leaves, 2 CPU
    cores, one run: the chain took 3.6x optax.adam's step time, this 2.2-2.3x
    (temporary 4.0 -> 0.5 B/param); sharing ``a`` through an
    optimization_barrier instead took 4.7x. The norm's ``eps * sqrt(bc2)``
    is each leaf's own where leaves share a shape (``xla_cpu.sum_copies``):
    temporary 0.5 -> 0 B/param, and 2.05x -> 1.85x at 10M, 2.6x -> 1.9x at
    100M (interleaved with the previous version in one process).

    ``m`` is complex for complex leaves, ``v`` real; the denominators are real
    and cast to ``m``'s dtype (a no-op for real leaves).
    """

    s: _AdamScalars
    m: jax.Array
    v: jax.Array
    count: jax.Array  # The run-time anchor of `xla_cpu.private_copy`.
    copy: int | None  # The norm's copy of its scalar (`xla_cpu.sum_copies`).

    def norm_terms(self, m: jax.Array, v: jax.Array) -> jax.Array:
        """``|m / (sqrt(v) + eps * sqrt(bc2))|^2`` (element-wise, of this
        leaf's moments or of rows stacked from several), whose sum times
        ``bc2 / bc1^2`` is ``|a|^2``."""
        s = self.s
        dtype = s.epsilon.dtype
        # The sum's own copy: leaves of one shape would else share one
        # broadcast, which XLA:CPU then writes out as an array.
        offset = xla_cpu.private_copy(
            s.epsilon * jnp.sqrt(s.correction2), self.count, self.copy
        )
        denominator = jnp.sqrt(v) + offset.astype(v.dtype)
        x = m / denominator.astype(m.dtype)
        return numerics.abs_square(x).astype(dtype)

    def step_form(self) -> jax.Array:
        """``a`` as ``(m * (1 / bc1)) / (sqrt(v * (1 / bc2)) + eps)``."""
        s, m, v = self.s, self.m, self.v
        real = v.dtype
        inverse1, inverse2 = 1 / s.correction1, 1 / s.correction2
        denominator = jnp.sqrt(v * inverse2.astype(real)) + s.epsilon.astype(real)
        return (m * inverse1.astype(m.dtype)) / denominator.astype(m.dtype)

    def path_form(self) -> jax.Array:
        """``a`` as ``(m / bc1) / (sqrt(v / bc2) + eps)``."""
        s, m, v = self.s, self.m, self.v
        real = v.dtype
        denominator = jnp.sqrt(v / s.correction2.astype(real)) + s.epsilon.astype(real)
        return (m / s.correction1.astype(m.dtype)) / denominator.astype(m.dtype)


def _adam_squared_norms(
    s: _AdamScalars, forms: Sequence[_AdamDirection]
) -> xla_cpu.LeafSums:
    """``|a|^2`` per leaf: ``bc2 / bc1^2`` times the sum of its norm terms."""
    sums = xla_cpu.leaf_sums(
        [a.norm_terms for a in forms], [a.m for a in forms], [a.v for a in forms]
    )
    norm_scale = s.correction2 / jnp.square(s.correction1)
    return sums.map(lambda total: norm_scale * total)


def _coupled_weight_decay(weight_decay, mask) -> optax.GradientTransformation:
    # A concrete zero skips the extra read of the parameters.
    if isinstance(weight_decay, (int, float)) and weight_decay == 0 and mask is None:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay, mask)


def adam_clara(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    c: jax.typing.ArrayLike = 0.2,
    damping: jax.typing.ArrayLike = 1e-3,
    unit_step: bool = True,
    mu: jax.typing.ArrayLike | None = None,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask=None,
    mu_dtype: jax.typing.DTypeLike | None = None,
    adapt: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with cumulative learning-rate adaptation (Adam-CLARA).

    SGD-CLARA (:func:`clara_sgd`) applied to Adam's direction
    :math:`a_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)` instead of the
    gradient, with the reference path length corrected for Adam's momentum.

    Let :math:`\eta_t` be the learning rate, :math:`c`, :math:`d` the ``c`` and
    ``damping``, :math:`K` the number of non-empty leaves. For each leaf
    :math:`k`, after Adam's moments :math:`m_t, v_t` (:func:`optax.adam`, with
    coupled L2 weight decay :math:`g_t + \lambda \theta_{t-1}` when
    ``weight_decay`` :math:`\lambda` > 0):

    .. math::
      \begin{align*}
        a^{(k)}_t &\leftarrow \hat m^{(k)}_t / (\sqrt{\hat v^{(k)}_t} + \epsilon),
        \qquad u^{(k)}_t \leftarrow a^{(k)}_t / \max(\|a^{(k)}_t\|, 10^{-12}) \\
        \theta^{(k)}_t &\leftarrow \theta^{(k)}_{t-1} - \eta_t\, u^{(k)}_t
          \quad (\text{or } - \eta_t\, a^{(k)}_t \text{ if not unit\_step}) \\
        p^{(k)}_t &\leftarrow (1 - c)\, p^{(k)}_{t-1} + c\, u^{(k)}_t \\
        \eta_{t+1} &\leftarrow \eta_t \exp\Big(d \Big(
          \frac{\sum_k \|p^{(k)}_t\|^2}{K \mu_A} - 1\Big)\Big),
          \qquad \mu_A = \frac{c}{2 - c}\,
          \frac{1 + (1 - c)\beta_1}{1 - (1 - c)\beta_1}.
      \end{align*}

    :math:`\mu_A` (:func:`adam_clara_reference`) is the closed form of the
    expected squared path length when Adam sees pure noise; it replaces the
    original's Monte Carlo table and holds for any model size. The state field
    ``lr`` is :math:`\eta_{t+1}`; write it to set the rate, as for
    :func:`clara_sgd`.

    The implementation fuses Adam and CLARA into one transform (state
    :class:`ScaleByAdamClaraState`, holding ``count``, ``mu``, ``nu``,
    ``lr_factor``, ``lr``, ``base_lr`` and ``path``). Up to rounding it equals
    the chain ::

      optax.chain(
          optax.add_decayed_weights(weight_decay, mask),  # if weight_decay > 0
          optax.scale_by_adam(b1, b2, eps, mu_dtype=mu_dtype),
          scale_by_clara(learning_rate, c=c, damping=damping,
                         mu=adam_clara_reference(c, b1),  # or `mu`
                         unit_step=unit_step, adapt=adapt),
          optax.scale_by_learning_rate(1.0),
      )

    but never stores Adam's direction: on CPU a step takes about 1.9x as long
    as :func:`optax.adam`'s instead of 3.6x (10M to 100M parameters). Adam's
    direction is computed in float32 for bfloat16 and float16 leaves too.

    Args:
      learning_rate: the initial learning rate :math:`\eta_0` > 0, or a schedule
        that the adaptation factor multiplies.
      b1: Adam's first-moment decay in [0, 1).
      b2: Adam's second-moment decay in [0, 1).
      eps: Adam's :math:`\epsilon` >= 0, added outside the square root.
      c: cumulation constant in (0, 1].
      damping: damping :math:`d` > 0.
      unit_step: step along :math:`u` (``True``) or along Adam's direction.
      mu: reference :math:`\mu_A`; ``None`` uses the closed form above.
      weight_decay: coupled L2 weight decay :math:`\lambda` >= 0 added to the
        gradient before the moments, as in the reference code.
      mask: optional mask (or function of the params) selecting the leaves that
        receive weight decay.
      mu_dtype: dtype of Adam's first moment; ``None`` uses the params' dtypes.
      adapt: adapt the rate; with ``adapt=False`` and ``unit_step=False`` this is
        :func:`optax.adam`.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import garo_optax
      >>> f = lambda x: jnp.sum(x ** 2)
      >>> solver = garo_optax.adam_clara(learning_rate=0.1)
      >>> params = jnp.array([1., 2., 3.])
      >>> opt_state = solver.init(params)
      >>> for _ in range(3):
      ...   grad = jax.grad(f)(params)
      ...   updates, opt_state = solver.update(grad, opt_state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.3f}")
      12.013

    References:
      Atamna et al, `Cumulative Learning Rate Adaptation: Revisiting Path-Based
      Schedules for SGD and Adam <https://arxiv.org/abs/2508.05408>`_, 2025
    """
    _check_common(learning_rate, c, damping)
    _check_adam(b1, b2, eps)
    validate.check_interval("weight_decay", weight_decay, 0.0, None)
    if mu is None:
        mu = adam_clara_reference(c, b1)
    return optax.chain(
        _coupled_weight_decay(weight_decay, mask),
        _scale_by_adam_clara(
            learning_rate,
            b1=b1,
            b2=b2,
            eps=eps,
            c=c,
            damping=damping,
            mu=mu,
            unit_step=unit_step,
            mu_dtype=mu_dtype,
            adapt=adapt,
        ),
        optax.scale_by_learning_rate(1.0),
    )
