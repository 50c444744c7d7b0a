r"""The three exploratory Adam-CLARA variants that preceded the published one.

:func:`adam_clara_global`, :func:`adam_clara_local` and
:func:`adam_clara_smoothed` reproduce the seed code of Atamna, Maus,
Kievelitz and Glasmachers, `Cumulative Learning Rate Adaptation: Revisiting
Path-Based Schedules for SGD and Adam <https://arxiv.org/abs/2508.05408>`_,
2025: Adam followed by a CSA-style path of its direction and a rate rule that
treats the path's coordinates as i.i.d. standard normal. The published
algorithm (:func:`garo_optax.adam_clara`) lives in ``clara.py``, whose state
(:class:`garo_optax.ScaleByClaraState`), rate bookkeeping and tensor order
these variants share (see the notes of that module).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax._src import numerics, validate, xla_cpu
from garo_optax._src.clara import (
    _NORM_FLOOR,
    ScaleByClaraState,
    _check_adam,
    _check_common,
    _compute_dtype,
    _coupled_weight_decay,
    _init_state,
    _next_lr,
    _path_step,
    _read_rate,
    _scaled,
    _squared_terms,
)

SeedRule = Literal["global", "local", "smoothed"]

# Per version: (path coefficient multiplier, exponent multiplier, factor clip).
_SEED_CONSTANTS = {
    ("global", 1): (1.0, 1.0, None),
    ("global", 2): (1.0, 1.0, (0.1, 10.0)),
    ("local", 1): (1.0, 1.0, None),
    ("local", 2): (1.0, 1.0, (0.1, 10.0)),
    ("smoothed", 1): (1.0, 1.0, (0.5, 2.0)),
    ("smoothed", 2): (2.0, 5.0, (0.01, 10.0)),
}
# The rate range that `faithful=False` imposes on the local variant's rate.
_LOCAL_RATE_RANGE = (0.1, 10.0)
_SMOOTHING = 0.9


class _SeedConfig(NamedTuple):
    """The static and numeric hyperparameters of one seed rate rule."""

    schedule: Callable[[jax.Array], jax.Array]
    rule: SeedRule
    version: int
    faithful: bool
    c: jax.typing.ArrayLike
    damping: jax.typing.ArrayLike
    adapt: bool


def _adam_then_seed_rule(
    config: _SeedConfig, *, b1, b2, eps, weight_decay
) -> optax.GradientTransformationExtraArgs:
    """Coupled weight decay, Adam and a seed rate rule in one update.

    The chain ``optax.chain(optax.add_decayed_weights(weight_decay),
    optax.scale_by_adam(b1, b2, eps), <the rule>,
    optax.scale_by_learning_rate(1.0))`` with its state (the tuple of the four
    states) and its outputs, except that Adam's direction is never stored:
    each of its consumers recomputes it from the moments
    (:func:`_adam_directions`). Step time over ``optax.adam``'s (2 cores,
    interleaved with the chain in one process): 3.6-3.7x -> 2.2x at 10M
    parameters, 4.0-6.3x -> 2.2x at 100M.
    """
    decay = _coupled_weight_decay(weight_decay, None)
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    descent = optax.scale_by_learning_rate(1.0)

    def init_fn(params):
        clara = _init_state(params, config.schedule, None)
        return decay.init(params), adam.init(params), clara, descent.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        decay_state, adam_state, clara, descent_state = state
        grads, decay_state = decay.update(updates, decay_state, params)
        adam_state, directions = _adam_directions(grads, adam_state, b1, b2, eps)
        treedef = jax.tree.structure(grads)
        new_updates, new_paths, new_factor, lr, base = _seed_step(
            config, clara, directions, treedef.flatten_up_to(clara.path)
        )
        clara = ScaleByClaraState(
            count=optax.safe_increment(clara.count),
            lr_factor=new_factor,
            lr=lr,
            base_lr=base,
            path=treedef.unflatten(new_paths),
        )
        updates, descent_state = descent.update(
            treedef.unflatten(new_updates), descent_state
        )
        return updates, (decay_state, adam_state, clara, descent_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# The loops that read Adam's direction.
_PATH, _STEP = 0, 1
# Copies of scalars (xla_cpu.private_copy) for the step loop, and for the
# sums where the loops read the same scalar; copies >= 1 are the sums' of
# further leaves of one shape.
_STEP_COPY, _SUM_COPY = -1, -2


class _AdamDirection(NamedTuple):
    """Adam's direction of one leaf, ``a = m_hat / (sqrt(v_hat) + eps)``.

    Never stored: each consumer writes its own expression (see
    :func:`xla_cpu.private_copy`), so that XLA:CPU recomputes ``a`` from the
    new moments ``m`` and ``v`` in each loop, and sums it in a multi-threaded
    kernel, instead of writing it to a temporary array.
    """

    m: jax.Array
    v: jax.Array
    correction1: jax.Array  # 1 - b1**t, as in `optax.tree.bias_correction`.
    correction2: jax.Array
    eps: jax.typing.ArrayLike
    count: jax.Array  # The run-time anchor of the private copies.
    copy: int | None  # The sums' copy of their scalars (`xla_cpu.sum_copies`).
    # Whether the consumers recompute `a` (see `_adam_directions`).
    recomputed: bool

    def loop_form(self, loop: int) -> jax.Array:
        """``a`` as optax computes it, for the path (0) or the step (1) loop."""
        m, v = self.m, self.v
        # The step loop's own copies of the corrections: see private_copy.
        copy = _STEP_COPY if loop == _STEP and self.recomputed else None
        own = lambda x: xla_cpu.private_copy(x, self.count, copy)
        m_hat = m / own(self.correction1).astype(m.dtype)
        v_hat = v / own(self.correction2).astype(v.dtype)
        return m_hat / (jnp.sqrt(v_hat) + _leaf_eps(self.eps, v_hat.dtype))

    # The sums over a leaf read `a` in forms with one divide (fewer than
    # `loop_form`: the sums' kernels pay for each operation) and scalars
    # that no loop and no other leaf's sum reads (see xla_cpu.private_copy).
    # Equal to `a` up to rounding.

    def ratio(self) -> jax.Array:
        """``a / s`` as ``m / (sqrt(v) + eps * sqrt(bc2))`` in the compute
        dtype, with ``s = sqrt(bc2) / bc1`` (:meth:`scale`)."""
        work, real = self._dtypes()
        root = jnp.sqrt(numerics.as_real(self.correction2, real))
        offset = self.own(numerics.as_real(self.eps, real) * root).astype(work)
        return self.m.astype(work) / (jnp.sqrt(self.v.astype(work)) + offset)

    def scale(self) -> jax.Array:
        """``s = sqrt(bc2) / bc1``, so that ``a = s * ratio()``."""
        _, real = self._dtypes()
        correction1 = numerics.as_real(self.correction1, real)
        return jnp.sqrt(numerics.as_real(self.correction2, real)) / correction1

    def scaled(self, gain: jax.Array) -> jax.Array:
        """``gain * a`` as ``(gain / bc1) m / (sqrt(v (1 / bc2)) + eps)``,
        which shares no ``sqrt(v)`` with :meth:`ratio` (XLA would else store
        it for the two sums of version 1)."""
        work, real = self._dtypes()
        correction1 = numerics.as_real(self.correction1, real)
        inverse2 = 1 / numerics.as_real(self.correction2, real)
        eps = _sum_copy(numerics.as_real(self.eps, real), self.count)
        numerator = self.own(gain / correction1).astype(work) * self.m.astype(work)
        v = self.v.astype(work) * self.own(inverse2).astype(work)
        return numerator / (jnp.sqrt(v) + self.own(eps).astype(work))

    def own(self, x: jax.Array) -> jax.Array:
        """``x`` as this leaf's sums' copy (see :func:`xla_cpu.sum_copies`)."""
        return xla_cpu.private_copy(x, self.count, self.copy)

    def _dtypes(self) -> tuple[jnp.dtype, jnp.dtype]:
        work = _compute_dtype(self.m)
        return work, numerics.real_dtype(work)


def _sum_copy(x: jax.Array, anchor: jax.Array) -> jax.Array:
    return xla_cpu.private_copy(x, anchor, _SUM_COPY)


def _leaf_eps(eps, dtype):
    # A Python eps is rounded to the leaf's dtype, as a weakly typed one.
    return jnp.asarray(eps, dtype) if isinstance(eps, float) else eps


def _adam_directions(grads, state, b1, b2, eps):
    """``optax.scale_by_adam``'s new state and, per flattened leaf, its
    direction as an :class:`_AdamDirection`.

    The moments and the direction's loops are optax's expressions, so the
    values are too, up to XLA's rewriting (it computes ``(m / bc1) / d`` as
    ``m / (bc1 * d)`` where the direction is not stored).
    """
    mu = optax.tree.update_moment(grads, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(grads, state.nu, b2, 2)
    count = optax.safe_increment(state.count)
    corrections = 1 - b1**count, 1 - b2**count
    mus, nus = jax.tree.leaves(mu), jax.tree.leaves(nu)
    # A leaf summed without a YNN kernel is small: it stores its direction,
    # whose traffic is negligible, as the chain of transforms did; its
    # consumers then compile to fewer instructions (recomputing it took 3.45 s
    # instead of 2.6 s to compile 260 leaves of 1,000 elements).
    directions = [
        _AdamDirection(
            m, v, *corrections, eps, count, copy, m.size >= xla_cpu.YNN_SUM_MIN_SIZE
        )
        for m, v, copy in zip(mus, nus, xla_cpu.sum_copies(mus))
    ]
    new_state = optax.ScaleByAdamState(
        count=count, mu=mu, nu=optax.tree.cast_like(nu, state.nu)
    )
    return new_state, directions


def _seed_step(
    config: _SeedConfig,
    state: ScaleByClaraState,
    directions: Sequence[_AdamDirection],
    paths: Sequence[jax.Array],
) -> tuple[list[jax.Array], list[jax.Array], jax.Array, jax.Array, jax.Array]:
    """One step of a seed rule over the flattened leaves.

    Returns:
      ``(updates, paths, lr_factor, lr, base_lr)``: the scaled directions
      (without the sign flip), the new paths, the factor to keep, the ``lr`` to
      store and the schedule's value this step used.
    """
    dtype = state.lr_factor.dtype
    cum = numerics.as_real(config.c, dtype)
    path_boost, _, _ = _SEED_CONSTANTS[(config.rule, config.version)]
    unit = config.version == 1 and config.adapt
    finite = jnp.ones([], bool)
    inverse_norms = [None] * len(paths)
    if unit:
        # v1 steps along (and accumulates) unit directions per tensor.
        inverse_norms, finite = _inverse_norms(directions, dtype)

    keep = 1.0 - cum
    coefficient = path_boost * jnp.sqrt(cum * (2.0 - cum))
    loops = [_Loops(a, n) for a, n in zip(directions, inverse_norms)]
    # Small leaves' norms are summed together and their scalar math runs on
    # vectors (xla_cpu.leaf_sums); the total is computed once.
    path_norms = _path_norms(loops, paths, keep, coefficient, dtype)
    path_total = path_norms.total(dtype)
    finite &= jnp.isfinite(path_total)
    new_paths = [
        jnp.where(finite, _path_step(p, a.form(_PATH), keep, coefficient), p)
        for a, p in zip(loops, paths)
    ]

    base = numerics.as_real(config.schedule(state.count), dtype)
    sizes = [p.size for p in paths]
    scale, rates, new_factor, start = _seed_rates(
        config, state, base, path_norms, path_total, sizes
    )
    new_factor = jnp.where(finite, new_factor, start)
    new_updates = [_scaled(a.form(_STEP), scale * r) for a, r in zip(loops, rates)]
    lr = _next_lr(state, new_factor / start, base, new_factor)
    return new_updates, new_paths, new_factor, lr, base


class _Loops(NamedTuple):
    """The direction the path and the step loops read: Adam's, or (v1) its
    unit direction, rounded as the original rounds it."""

    direction: _AdamDirection
    inverse_norm: jax.Array | None

    def form(self, loop: int) -> jax.Array:
        a = self.direction.loop_form(loop)
        return a if self.inverse_norm is None else _scaled(a, self.inverse_norm)


def _inverse_norms(directions, dtype) -> tuple[list[jax.Array], jax.Array]:
    """Version 1's ``1 / max(|a|, floor)`` per tensor, and whether every
    norm was finite."""
    square = functools.partial(_squared_terms, dtype=dtype)
    sums = xla_cpu.leaf_sums(
        [square] * len(directions), [_stored_form(a) for a in directions]
    )
    # A recomputed direction's norm: in a sum that reads no scalar a loop
    # reads (its own copies; see _AdamDirection).
    sums = sums._replace(
        scalars=tuple(
            _recomputed_norm(a, dtype) if a.recomputed else s
            for a, s in zip(directions, sums.scalars)
        )
    )
    finite = jnp.isfinite(sums.total(dtype))
    inverse = lambda s: jax.lax.rsqrt(jnp.maximum(s, _NORM_FLOOR**2))
    return sums.map(inverse).entries(), finite


def _recomputed_norm(a: _AdamDirection, dtype) -> jax.Array:
    # |a|^2 = s^2 |ratio|^2 (see _AdamDirection.ratio).
    return jnp.square(a.scale()).astype(dtype) * numerics.squared_norm(a.ratio(), dtype)


def _stored_form(a: _AdamDirection) -> jax.Array:
    # The direction a small leaf stores; a recomputed one's sums read its
    # moments instead (and `m` stands in for it, unread).
    return a.m if a.recomputed else a.loop_form(_PATH)


def _path_norms(loops, paths, keep, coefficient, dtype) -> xla_cpu.LeafSums:
    """``|keep * path + coefficient * u|^2`` per leaf, the squared norms of
    the new paths, with ``u`` the direction of the ``loops``: small leaves'
    summed as the rows of one matrix per size (:func:`xla_cpu.leaf_sums`)."""
    columns = [paths, [_stored_form(a.direction) for a in loops]]
    unit = any(a.inverse_norm is not None for a in loops)
    if unit:  # Each row's own 1 / |a|, as a column.
        columns.append([a.inverse_norm for a in loops])

    def terms(path, direction, *inverse_norm):
        u = _scaled(direction, inverse_norm[0]) if unit else direction
        return _squared_terms(_path_step(path, u, keep, coefficient), dtype)

    sums = xla_cpu.leaf_sums([terms] * len(loops), *columns)
    return sums._replace(
        scalars=tuple(
            _recomputed_path_norm(a, p, keep, coefficient, dtype)
            if a.direction.recomputed
            else s
            for a, p, s in zip(loops, paths, sums.scalars)
        )
    )


def _recomputed_path_norm(loops: _Loops, path, keep, coefficient, dtype):
    """:func:`_path_norms` of a leaf whose direction is recomputed, in sums
    that read no scalar a loop or another leaf reads."""
    a = loops.direction
    work = _compute_dtype(path)
    if loops.inverse_norm is None:
        # keep^2 |path + (coefficient * s / keep) * ratio|^2: two scalars.
        gain = a.own(coefficient * a.scale() / keep).astype(work)
        stepped = path.astype(work) + gain * a.ratio()
        return jnp.square(keep) * numerics.squared_norm(stepped, dtype)
    own_keep = a.own(_sum_copy(keep, a.count)).astype(work)
    stepped = own_keep * path.astype(work) + a.scaled(coefficient * loops.inverse_norm)
    return numerics.squared_norm(stepped, dtype)


def _seed_rates(config: _SeedConfig, state, base, path_norms, path_total, sizes):
    """The rule's rates: ``(scale, rates, factor, start)``.

    ``path_norms`` (a :class:`xla_cpu.LeafSums`) holds each leaf's squared
    path norm and ``path_total`` their sum. Leaf ``k`` steps with ``scale *
    rates[k]`` times its direction; ``factor`` is the factor to keep and
    ``start`` the one the step started from (kept when the step is not
    finite).
    """
    dtype = state.lr_factor.dtype
    cum = numerics.as_real(config.c, dtype)
    gain = cum / (2.0 * numerics.as_real(config.damping, dtype))
    _, exponent_boost, clip = _SEED_CONSTANTS[(config.rule, config.version)]
    active = [k for k, size in enumerate(sizes) if size > 0]

    def factor(squared_norm, size):
        f = jnp.exp(exponent_boost * (gain * (squared_norm / size - 1)))
        return f if clip is None else jnp.clip(f, *clip)

    implied, _ = _read_rate(state, base)
    if config.rule == "global":
        # Not cumulative: one factor of the whole path, relative to the
        # base rate, which a written lr rescales by lr / (base_lr * f).
        # Empty leaves add 0 to the total.
        start = state.lr_factor
        scale = base * _written_scale(implied, start)
        new_factor = jnp.ones([], dtype)
        if config.adapt and active:
            new_factor = factor(path_total, sum(sizes[k] for k in active))
        return scale, [new_factor] * len(sizes), new_factor, start
    # Local compounds like the published rate and continues from the factor
    # the state's (maybe written) lr implies; Smoothed's average is relative
    # to the base rate, which a written lr rescales.
    local = config.rule == "local"
    start = implied if local else state.lr_factor
    scale = base if local else base * _written_scale(implied, start)
    # One factor per non-empty leaf, in leaf order, as one vector.
    active_sizes = np.asarray([sizes[k] for k in active], np.float64)
    factors = factor(
        xla_cpu.leaf_vector(path_norms, active), active_sizes.astype(dtype)
    )
    rates, new_factor = _tensor_by_tensor(
        config.rule, config.faithful, config.adapt, start, factors, active, len(sizes)
    )
    return scale, rates, new_factor, start


def _written_scale(implied: jax.Array, lr_factor: jax.Array) -> jax.Array:
    # lr / (base_lr * lr_factor): 1 up to rounding unless lr was written.
    scale = implied / lr_factor
    return jnp.where(jnp.isfinite(scale), scale, 1).astype(implied.dtype)


def _tensor_by_tensor(rule, faithful, adapt, start, factors, active, num_leaves):
    """Local's and Smoothed's per-leaf rates (in units of the base rate) and
    the factor they keep, from the kept factor ``start`` and the vector
    ``factors`` of the path factors of the non-empty leaves ``active``."""

    def link(running, f):
        if rule == "local":
            if adapt:
                running = running * f
                if not faithful:
                    running = jnp.clip(running, *_LOCAL_RATE_RANGE)
            return running
        # The original steps its moving average once per tensor.
        return _SMOOTHING * running + (1 - _SMOOTHING) * f

    if rule == "smoothed" and not adapt:
        # The original only moves parameters inside `if adapt_lr`.
        rate = jnp.full([], 0.0 if faithful else 1.0, start.dtype)
        _, running = xla_cpu.running_on_vector(link, start, factors)
        return [rate] * num_leaves, running
    # The chain runs on the vector (one loop, not one kernel per link) and
    # each leaf reads its state without a slice (see xla_cpu).
    states, running = xla_cpu.running_on_vector(link, start, factors)
    rates = [start] * num_leaves
    for k, state in zip(active, xla_cpu.vector_entries(states)):
        rates[k] = state
    return rates, running


def _adam_clara_seed(rule: SeedRule):
    def factory(
        learning_rate: optax.ScalarOrSchedule = 1e-3,
        *,
        b1: jax.typing.ArrayLike = 0.9,
        b2: jax.typing.ArrayLike = 0.999,
        eps: jax.typing.ArrayLike = 1e-8,
        c: jax.typing.ArrayLike = 0.2,
        damping: jax.typing.ArrayLike = 1.0,
        weight_decay: jax.typing.ArrayLike = 0.0,
        version: Literal[1, 2] = 2,
        faithful: bool = True,
        adapt: bool = True,
    ) -> optax.GradientTransformationExtraArgs:
        _check_adam(b1, b2, eps)
        validate.check_interval("weight_decay", weight_decay, 0.0, None)
        validate.check_choice("version", version, (1, 2))
        _check_common(learning_rate, c, damping)
        schedule = numerics.as_schedule(learning_rate)
        config = _SeedConfig(schedule, rule, version, faithful, c, damping, adapt)
        return _adam_then_seed_rule(
            config, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
        )

    factory.__name__ = factory.__qualname__ = f"adam_clara_{rule}"
    return factory


_SEED_ARGS = r"""
    Args:
      learning_rate: the base learning rate > 0 (default 1e-3), or a schedule.
      b1: Adam's first-moment decay in [0, 1).
      b2: Adam's second-moment decay in [0, 1).
      eps: Adam's :math:`\epsilon` >= 0, outside the square root.
      c: cumulation constant in (0, 1].
      damping: damping :math:`d` > 0 (default 1, as in the original).
      weight_decay: coupled L2 weight decay >= 0 added to the gradient.
      version: ``2`` (default) or ``1``, the two recorded versions of the code.
      faithful: ``True`` reproduces the original exactly; ``False`` applies the
        fixes listed above.
      adapt: adapt the rate (the original's ``adapt_lr``).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.
"""

_SEED_EXAMPLE = r"""
    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import garo_optax
      >>> solver = garo_optax.{name}(learning_rate=1e-3)
      >>> params = {{"w": jnp.ones(3), "b": jnp.zeros(2)}}
      >>> opt_state = solver.init(params)
      >>> grads = {{"w": jnp.array([1., -1., 2.]), "b": jnp.array([.5, .5])}}
      >>> updates, opt_state = solver.update(grads, opt_state, params)
      >>> print(f"{{optax.tree.get(opt_state, 'lr'):.4e}}")
      {lr}

    References:
      Atamna et al, `Cumulative Learning Rate Adaptation: Revisiting Path-Based
      Schedules for SGD and Adam <https://arxiv.org/abs/2508.05408>`_, 2025
"""

_COMMON_SEED = r"""
    All three seed variants run Adam (:math:`\epsilon` outside the square root)
    and accumulate a CSA-style path of its direction
    :math:`a_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)`:
    :math:`p^{(k)} \leftarrow (1 - c) p^{(k)} + \alpha a^{(k)}` with
    :math:`\alpha = \sqrt{c (2 - c)}`, then compare :math:`\|p\|^2 / N` with 1 as
    if the coordinates were i.i.d. standard normal (they are not, which is what
    the published :func:`adam_clara` fixes). Version 1 normalizes :math:`a` to a
    unit vector per tensor when adapting. Tensors are visited in the flatten
    order of the parameter tree (PyTorch uses registration order). The state
    field ``lr`` is the rate the original writes back into its parameter group.
    Writing it (``optax.tree.set(state, lr=x)``) scales every rate of the next
    update by ``x`` over the stored value: Local's rate continues from ``x``,
    and Global's and Smoothed's base rate is scaled by that ratio from then on.
    A non-finite direction leaves the path and the rate unchanged.
"""

adam_clara_global = _adam_clara_seed("global")
adam_clara_global.__doc__ = (
    r"""Adam-CLARA seed variant "global": Adam times a bounded path factor.

    Let :math:`S = \sum_k \|p^{(k)}_t\|^2` and :math:`N` the number of elements.
    Each step

    .. math::
      \begin{align*}
        f_t &= \mathrm{clip}\Big(\exp\Big(\frac{c}{2d}\Big(\frac{S}{N} - 1\Big)
          \Big), 0.1, 10\Big) \quad (\text{v1: no clip}) \\
        \theta_t &\leftarrow \theta_{t-1} - \eta\, f_t\, a_t .
      \end{align*}

    The factor depends only on the current path: the rate does not compound.
    With :math:`c = 0.2, d = 1` it stays in about [0.905, 2.23], so the clip never
    binds. The original computes the direction twice; here it is computed once,
    so ``faithful`` changes nothing for this variant.
"""
    + _COMMON_SEED
    + _SEED_ARGS
    + _SEED_EXAMPLE.format(name="adam_clara_global", lr="9.3800e-04")
)

adam_clara_local = _adam_clara_seed("local")
adam_clara_local.__doc__ = (
    r"""Adam-CLARA seed variant "local": a rate compounded tensor by tensor.

    For each tensor :math:`k` in flatten order, with :math:`D_k` elements:

    .. math::
      \begin{align*}
        f_k &= \mathrm{clip}\Big(\exp\Big(\frac{c}{2d}\Big(
          \frac{\|p^{(k)}_t\|^2}{D_k} - 1\Big)\Big), 0.1, 10\Big)
          \quad (\text{v1: no clip}) \\
        \eta &\leftarrow \eta\, f_k, \qquad
        \theta^{(k)}_t \leftarrow \theta^{(k)}_{t-1} - \eta\, a^{(k)}_t .
      \end{align*}

    The rate persists, so it compounds over tensors and steps and depends on
    the tensor order; under noise it decays geometrically, under a constant
    gradient it overflows. ``faithful=False`` clamps the rate to
    [0.1, 10] times the base rate after every tensor (a written ``lr`` too).
"""
    + _COMMON_SEED
    + _SEED_ARGS
    + _SEED_EXAMPLE.format(name="adam_clara_local", lr="8.7985e-04")
)

adam_clara_smoothed = _adam_clara_seed("smoothed")
adam_clara_smoothed.__doc__ = (
    r"""Adam-CLARA seed variant "smoothed": a moving average of path factors.

    Version 2 boosts the path coefficient by 2 and the exponent by 5. For each
    tensor :math:`k` in flatten order:

    .. math::
      \begin{align*}
        p^{(k)} &\leftarrow (1 - c)\, p^{(k)} + 2 \sqrt{c (2 - c)}\, a^{(k)} \\
        f_k &= \mathrm{clip}\Big(\exp\Big(5\,\frac{c}{2d}\Big(
          \frac{\|p^{(k)}\|^2}{D_k} - 1\Big)\Big), 0.01, 10\Big) \\
        \ell &\leftarrow 0.9\, \ell + 0.1\, \eta\, f_k, \qquad
        \theta^{(k)} \leftarrow \theta^{(k)} - \ell\, a^{(k)} .
      \end{align*}

    Version 1 has neither boost, clips to [0.5, 2] and normalizes :math:`a` per
    tensor. The average is stepped once per tensor, so its smoothing depends on
    the number of tensors. As in the original, with ``adapt=False`` and
    ``faithful=True`` the parameters never move; ``faithful=False`` then steps
    with the base rate (plain Adam).
"""
    + _COMMON_SEED
    + _SEED_ARGS
    + _SEED_EXAMPLE.format(name="adam_clara_smoothed", lr="1.0468e-03")
)
