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

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from garo_optax._src import numerics, validate, xla_cpu
from garo_optax._src.clara import (
    _NORM_FLOOR,
    ScaleByClaraState,
    _check_adam,
    _check_common,
    _coupled_weight_decay,
    _init_state,
    _next_lr,
    _path_step,
    _read_rate,
    _scaled,
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


def _scale_by_clara_seed(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rule: SeedRule,
    version: int,
    faithful: bool,
    c: jax.typing.ArrayLike,
    damping: jax.typing.ArrayLike,
    adapt: bool,
) -> optax.GradientTransformationExtraArgs:
    """The rate rules of the seed variants, applied to an incoming direction."""
    validate.check_choice("version", version, (1, 2))
    _check_common(learning_rate, c, damping)
    schedule = numerics.as_schedule(learning_rate)
    config = _SeedConfig(schedule, rule, version, faithful, c, damping, adapt)

    def init_fn(params):
        return _init_state(params, schedule, None)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        directions, treedef = jax.tree.flatten(updates)
        paths = treedef.flatten_up_to(state.path)
        new_updates, new_paths, new_factor, lr, base = _seed_step(
            config, state, directions, paths
        )
        new_state = ScaleByClaraState(
            count=optax.safe_increment(state.count),
            lr_factor=new_factor,
            lr=lr,
            base_lr=base,
            path=treedef.unflatten(new_paths),
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _seed_step(
    config: _SeedConfig,
    state: ScaleByClaraState,
    directions: Sequence[jax.Array],
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
    finite = jnp.ones([], bool)
    if config.version == 1 and config.adapt:
        # v1 steps along (and accumulates) unit directions per tensor.
        directions, finite = _unit_directions(directions, dtype)

    coefficient = path_boost * jnp.sqrt(cum * (2.0 - cum))
    new_paths = _stepped_paths(directions, paths, cum, coefficient)
    path_norms = [numerics.squared_norm(p, dtype) for p in new_paths]
    finite &= jnp.isfinite(xla_cpu.sum_once(path_norms, dtype))
    new_paths = [jnp.where(finite, q, p) for q, p in zip(new_paths, paths)]

    base = numerics.as_real(config.schedule(state.count), dtype)
    sizes = [a.size for a in directions]
    scale, rates, new_factor, start = _seed_rates(
        config, state, base, path_norms, sizes
    )
    new_factor = jnp.where(finite, new_factor, start)
    new_updates = [_scaled(a, scale * r) for a, r in zip(directions, rates)]
    lr = _next_lr(state, new_factor / start, base, new_factor)
    return new_updates, new_paths, new_factor, lr, base


def _unit_directions(directions, dtype) -> tuple[list[jax.Array], jax.Array]:
    """Version 1's unit directions per tensor, and whether all were finite."""
    squared_norms = [numerics.squared_norm(a, dtype) for a in directions]
    finite = jnp.isfinite(xla_cpu.sum_once(squared_norms, dtype))
    units = [
        _scaled(a, jax.lax.rsqrt(jnp.maximum(s, _NORM_FLOOR**2)))
        for a, s in zip(directions, squared_norms)
    ]
    return units, finite


def _stepped_paths(directions, paths, cum, coefficient) -> list[jax.Array]:
    """``(1 - c) p + coefficient * a`` per leaf, in each path's dtype."""
    return [_path_step(p, a, 1.0 - cum, coefficient) for a, p in zip(directions, paths)]


def _seed_rates(config: _SeedConfig, state, base, path_norms, sizes):
    """The rule's rates: ``(scale, rates, factor, start)``.

    Leaf ``k`` steps with ``scale * rates[k]`` times its direction; ``factor``
    is the factor to keep and ``start`` the one the step started from (kept
    when the step is not finite).
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
        start = state.lr_factor
        scale = base * _written_scale(implied, start)
        new_factor = jnp.ones([], dtype)
        if config.adapt and active:
            new_factor = factor(
                xla_cpu.sum_once([path_norms[k] for k in active], dtype),
                sum(sizes[k] for k in active),
            )
        return scale, [new_factor] * len(sizes), new_factor, start
    # Local compounds like the published rate and continues from the factor
    # the state's (maybe written) lr implies; Smoothed's average is relative
    # to the base rate, which a written lr rescales.
    local = config.rule == "local"
    start = implied if local else state.lr_factor
    scale = base if local else base * _written_scale(implied, start)
    factors = {k: factor(path_norms[k], sizes[k]) for k in active}
    rates, new_factor = _tensor_by_tensor(
        config.rule, config.faithful, config.adapt, start, factors, len(sizes)
    )
    return scale, rates, new_factor, start


def _written_scale(implied: jax.Array, lr_factor: jax.Array) -> jax.Array:
    # lr / (base_lr * lr_factor): 1 up to rounding unless lr was written.
    scale = implied / lr_factor
    return jnp.where(jnp.isfinite(scale), scale, 1).astype(implied.dtype)


def _tensor_by_tensor(rule, faithful, adapt, start, factors, num_leaves):
    """Local's and Smoothed's per-leaf rates (in units of the base rate) and
    the factor they keep, from the kept factor ``start`` and each non-empty
    leaf's path factor ``factors[k]``."""

    def link(running, f):
        if rule == "local":
            if adapt:
                running = running * f
                if not faithful:
                    running = jnp.clip(running, *_LOCAL_RATE_RANGE)
            return running
        # The original steps its moving average once per tensor.
        return _SMOOTHING * running + (1 - _SMOOTHING) * f

    # Each link computed once: leaf k's update would else recompute the k
    # links before it (see xla_cpu.running).
    states = xla_cpu.running(link, start, list(factors.values()))
    rates = [start] * num_leaves
    for k, state in zip(factors, states):
        rates[k] = state
    running = states[-1] if states else start
    if rule == "smoothed" and not adapt:
        # The original only moves parameters inside `if adapt_lr`.
        rates = [jnp.full([], 0.0 if faithful else 1.0, start.dtype)] * num_leaves
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
        return optax.chain(
            _coupled_weight_decay(weight_decay, None),
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
            _scale_by_clara_seed(
                learning_rate,
                rule=rule,
                version=version,
                faithful=faithful,
                c=c,
                damping=damping,
                adapt=adapt,
            ),
            optax.scale_by_learning_rate(1.0),
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
