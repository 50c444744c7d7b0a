r"""GARO: SGD whose learning rate, momentum and weight decay come from a GRU.

The Global Adaptive Recurrent Optimizer ("Online Recurrent SGD") is specified
only by a README (``theoryjames1-glitch/GLOBAL-ADAPTIVE-RECURRENT-OPTIMIZER``);
the design here is the project's, ``specs/garo.md`` §4. In plain words: each
step reduces the incoming update tree to four global statistics (its log-norm,
the change of that norm, its cosine with the momentum buffer and, when given,
the normalized loss), feeds them to a GRU with one hidden state for the whole
model, and reads the learning rate, momentum and weight decay of the step from
three heads on the hidden state. The parameters then take a heavy-ball step
with decoupled, learning-rate-scaled weight decay.

The controller's weights (:class:`garo_optax.GaroController`) are an argument,
never part of the state: they are frozen during training, and meta-training can
differentiate through them. GARO acts on the *incoming updates*:
``optax.chain(optax.scale_by_rms(), garo_optax.garo())`` runs GARO over a
preconditioned direction.
"""

import dataclasses
import functools
import warnings
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax._src import controller as ctl
from garo_optax._src import numerics, validate, xla_cpu
from garo_optax._src.validate import WeightDecayMode

NO_PARAMS_MSG = (
    "scale_by_garo needs params when weight decay is on (weight_decay_init > 0): "
    "call update(updates, state, params)"
)


class ScaleByGaroState(NamedTuple):
    """State of :func:`scale_by_garo`: hidden state, moments, statistics, hparams.

    ``lr``, ``mom`` and ``wd`` are what the controller emitted and the last step
    applied (not a rate the user sets: the controller decides every step).
    """

    count: jax.Array  # shape=(), dtype=jnp.int32: non-skipped steps.
    h: jax.Array  # shape=(H,) or (K, H): the GRU hidden state(s).
    momentum: optax.Updates  # heavy-ball buffer v (seed), Adam's m (scale-free).
    g_ema: jax.Array  # shape=() or (K,): raw EMA of the gradient norm G.
    loss_mean: jax.Array  # shape=(): raw EMA of the loss.
    loss_var: jax.Array  # shape=(): raw EMA of the squared loss deviation.
    loss_count: jax.Array  # shape=(), dtype=jnp.int32: finite losses seen.
    lr: jax.Array  # shape=() or (K,): learning rate used at the last step.
    mom: jax.Array  # shape=() or (K,): momentum used at the last step.
    wd: jax.Array  # shape=() or (K,): weight decay used at the last step.
    skipped: jax.Array  # shape=(), dtype=jnp.int32: skipped non-finite steps.
    nu: optax.Updates = None  # scale-free: Adam's second moment; else None.
    first_moment_scale: jax.Array | None = None  # scale-free: 1 - prod(mom).
    loss_first: jax.Array | None = None  # scale-free: the first finite loss.


def _is_coupled(weight_decay_mode, coupled_wd) -> bool:
    """``weight_decay_mode == "coupled"``, honouring the deprecated spelling."""
    validate.check_choice(
        "weight_decay_mode", weight_decay_mode, get_args(WeightDecayMode)
    )
    if coupled_wd is None:
        return weight_decay_mode == "coupled"
    warnings.warn(
        "coupled_wd is deprecated: use weight_decay_mode='coupled' (coupled_wd=True)"
        " or 'decoupled' (False)",
        DeprecationWarning,
        stacklevel=3,
    )
    return bool(coupled_wd)


def _build_controller(controller, granularity, seed, options) -> ctl.GaroController:
    """The given controller, or one drawn from ``seed`` and ``options``."""
    options = {k: v for k, v in options.items() if v is not None}
    ctl.check_options(granularity=granularity, **options)
    if controller is None:
        return ctl.init_controller(
            jax.random.PRNGKey(seed), granularity=granularity, **options
        )
    if options:
        raise ValueError(
            "pass either a controller or init_controller options, not both; got "
            f"options {sorted(options)}"
        )
    return controller


def _cast(controller: ctl.GaroController, dtype) -> ctl.GaroController:
    return jax.tree.map(lambda w: w.astype(dtype), controller)


def _mean_over(h: jax.Array, weights: jax.Array) -> jax.Array:
    """The mean of the rows of ``h`` whose weight is 1 (0 if there is none)."""
    total = jnp.maximum(jnp.sum(weights), 1)
    return jnp.sum(h * weights[:, None], axis=0) / total


_NU_FLOOR = 1e-18


def sampled_rows(x: jax.Array, sample: int) -> tuple[jax.Array, float]:
    """Evenly spaced rows of ``x``'s last axis, about ``sample`` elements.

    Returns ``(rows, scale)``, where ``scale`` (a Python float) times a sum over
    ``rows`` estimates the sum over ``x``. ``x`` itself (scale 1) when it has
    fewer than ``2 * sample`` elements or ``sample`` is 0. Whole rows of the last
    axis, so the pass reads whole cache lines of only those rows.
    """
    stride = x.size // sample if sample else 0
    if stride < 2:
        return x, 1.0
    rows = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(-1, 1)
    picked = rows[::stride]
    return picked, x.size / picked.size


def _leaf_sums(g, m, nu, work, dtype, design, skip_nonfinite):
    """The statistics of a leaf (a vector of sums, the finite probe last).

    A small leaf: one fused pass over it. A large leaf estimates the
    statistics from ``sampled_rows`` and reads all of ``g`` only for the finite
    probe, ``sum |g|`` (see ``_finite_probe``).
    """
    terms = lambda g, m, nu: _stat_terms(
        g.astype(work), m.astype(work), nu, dtype, design
    )
    g_rows, scale = sampled_rows(g, design.stats_sample)
    if scale == 1.0:
        probe = (jnp.real(g * 0),) if skip_nonfinite else ()  # NaN iff not finite.
        return jnp.stack(numerics.fused_sums(*terms(g, m, nu), *probe, dtype=dtype))
    rows = lambda x: sampled_rows(x, design.stats_sample)[0]
    stats = numerics.fused_sums(*terms(g_rows, rows(m), rows(nu)), dtype=dtype)
    stats = [s * jnp.asarray(scale, dtype) for s in stats]
    probe = [_finite_probe(g, dtype)] if skip_nonfinite else []
    return jnp.stack([*stats, *probe])


def _finite_probe(g, dtype):
    """``sum |g|``: not finite exactly when an element of ``g`` is not.

    (It overflows only for a sum of magnitudes above 3e38, far beyond any
    gradient.) A one-term ``jnp.sum`` of one array, unlike the variadic
    reduction of the small leaves: XLA:CPU runs it as a multithreaded library
    kernel (4.5x faster than the variadic loop at 100M parameters, ``garo-optax
    bench --speed``), and ``g * 0`` would make it materialize a zero array.
    """
    if jnp.iscomplexobj(g):
        return _finite_probe(jnp.real(g), dtype) + _finite_probe(jnp.imag(g), dtype)
    return jnp.sum(jnp.abs(g), dtype=dtype)


def _stat_terms(g, m, nu, dtype, design):
    """The element-wise terms whose sums are the controller's statistics."""
    terms = (
        numerics.abs_square(g),
        numerics.real_product(g, m),
        numerics.abs_square(m),
    )
    if design.scale_free:
        # |m|^2 / nu, the size of the last normalized direction: no sqrt in
        # the reduction (the element-wise sqrt made the step 3x slower on
        # XLA:CPU), and a floor whose square is a normal float32, so that the
        # meta-gradient stays finite; it differs from (m / (sqrt(nu) + eps))^2
        # only where |g| < 1e-9.
        floor = jnp.asarray(_NU_FLOOR, dtype)
        terms += (numerics.abs_square(m).astype(dtype) / jnp.maximum(nu, floor),)
    return terms


def _tree_sums(leaves, dtype, design, skip_nonfinite, per_tensor):
    """The per-leaf sums stacked as (K, T), summed over leaves unless per tensor."""
    num_terms = 3 + design.scale_free + skip_nonfinite
    per_leaf = list(zip(leaves.grads, leaves.moms, leaves.nus, leaves.work))
    groups = [] if per_tensor else _tiny_leaf_groups(per_leaf)
    grouped = {k for group in groups for k in group}
    exact = dataclasses.replace(design, stats_sample=0)
    rows = [
        _leaf_sums(*_concatenated(per_leaf, group), dtype, exact, skip_nonfinite)
        for group in groups
    ]
    rows += [
        _leaf_sums(g, m, nu, w, dtype, design, skip_nonfinite)
        for k, (g, m, nu, w) in enumerate(per_leaf)
        if k not in grouped
    ]
    table = jnp.stack(rows) if rows else jnp.zeros([0, num_terms], dtype)
    # Computed once: XLA would else copy the sum over leaves into every
    # per-leaf loop that reads a statistic derived from it (xla_cpu).
    return xla_cpu.computed_once(table if per_tensor else jnp.sum(table, axis=0))


# Leaves of fewer elements share one statistics reduction (global mode).
_TINY_LEAF = 4096


def _tiny_leaf_groups(per_leaf) -> list[list[int]]:
    """Indices of the tiny leaves, grouped by dtypes (groups of 2 or more).

    Works around XLA:CPU's compile time: each multi-term reduction compiles
    to its own kernel at about 16 ms (260 leaves of 1,000 elements: 4.1 s
    one reduction per leaf, 0.4 s one over their concatenation). Copying a
    leaf of under 4,096 elements costs nothing measurable at run time. Check
    that it still pays: ``garo-optax bench --speed --compile-leaves 52 260``
    with ``_TINY_LEAF = 0``.
    """
    groups = {}
    for k, (g, m, nu, w) in enumerate(per_leaf):
        if 0 < g.size < _TINY_LEAF and not _explicitly_sharded(g, m, nu):
            groups.setdefault((g.dtype, m.dtype, nu.dtype, w), []).append(k)
    return [group for group in groups.values() if len(group) > 1]


def _explicitly_sharded(*arrays) -> bool:
    """Whether an array's type names a mesh axis (explicit sharding), which
    forbids raveling it into a concatenation."""
    for x in arrays:
        spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
        if spec is not None and any(axis is not None for axis in spec):
            return True
    return False


def _concatenated(per_leaf, group):
    """The leaves of ``group`` raveled and concatenated: ``(g, m, nu, work)``."""
    columns = zip(*(per_leaf[k][:3] for k in group))
    g, m, nu = (jnp.concatenate([x.ravel() for x in column]) for column in columns)
    return g, m, nu, per_leaf[group[0]][3]


def _loss_moments(loss, loss_ok, state: ScaleByGaroState):
    """The loss EMAs after this step's loss (unchanged for a non-finite one)."""
    dtype = state.loss_mean.dtype
    beta = jnp.asarray(ctl.LOSS_BETA, dtype)
    new_mean = beta * state.loss_mean + (1 - beta) * loss
    t = (state.loss_count + 1).astype(dtype)
    deviation = loss - new_mean / (1 - beta**t)
    # Capped, so that an absurd loss cannot overflow the variance.
    squared = jnp.minimum(deviation**2, jnp.asarray(1e30, dtype))
    new_var = beta * state.loss_var + (1 - beta) * squared
    mean = jnp.where(loss_ok, new_mean, state.loss_mean)
    var = jnp.where(loss_ok, new_var, state.loss_var)
    return mean, var


def _seed_leaf_step(g, v, theta, hp, work, finite, coupled):
    """Heavy ball with decoupled (or coupled) weight decay: (update, new v)."""
    lr, mom, wd = (x.astype(work) for x in hp)
    gw = g.astype(work)
    decay = None if theta is None else wd * theta.astype(work)
    if coupled and decay is not None:
        gw = gw + decay
    v_w = v.astype(work)
    v_new = jnp.where(finite, mom * v_w + gw, v_w).astype(v.dtype)
    # The step reads the stored buffer, not a recomputation from the old one,
    # so that XLA can overwrite the donated buffer without a copy.
    step = v_new.astype(work)
    if decay is not None and not coupled:
        step = step + decay
    return jnp.where(finite, lr * step, 0).astype(g.dtype), v_new


def _second_moment_dtype(param_dtype):
    """f32 for 16-bit floats, else the real dtype of the leaf.

    In 16 bits the EMA cannot work: b2 = 0.999 rounds to 1 in bfloat16 (so
    ``1 - b2`` is 0 and nu stays 0), and increments of 0.1% fall below half an
    ulp in either format.
    """
    return numerics.real_dtype(jnp.promote_types(param_dtype, jnp.float32))


class _AdamScales(NamedTuple):
    """Per-step scalars of the scale-free leaf step."""

    first: jax.Array  # 1 - prod(mom), including this step.
    second: jax.Array  # 1 - b2^t.


def _scale_free_leaf_step(g, m, nu, theta, hp, scales, design, work, finite, coupled):
    """Adam's normalized direction at the controller's rate: (update, m, nu)."""
    lr, mom, wd = hp
    gw = g.astype(work)
    decay = None if theta is None else wd.astype(work) * theta.astype(work)
    if coupled and decay is not None:
        gw = gw + decay
    b2 = jnp.asarray(design.b2, nu.dtype)
    m_new = mom.astype(work) * m.astype(work) + (1 - mom).astype(work) * gw
    nu_new = b2 * nu + (1 - b2) * numerics.abs_square(gw).astype(nu.dtype)
    m_new = jnp.where(finite, m_new, m.astype(work)).astype(m.dtype)
    nu_new = jnp.where(finite, nu_new, nu)
    # sqrt with a zero derivative at 0: a never-touched element (nu = 0) must
    # not turn a meta-gradient into inf * 0.
    denominator = ctl.safe_sqrt(nu_new / scales.second) + jnp.asarray(
        design.eps, nu.dtype
    )
    step = (m_new.astype(work) / scales.first.astype(work)) / denominator.astype(work)
    if decay is not None and not coupled:
        step = step + decay
    update = jnp.where(finite, lr.astype(work) * step, 0).astype(g.dtype)
    return update, m_new, nu_new


def _init_state(params, controller, heads, hidden_size, per_tensor) -> ScaleByGaroState:
    """The state before the first step; ``lr, mom, wd`` from the heads at h = 0."""
    design = controller.design
    dtype = numerics.widest_float(numerics.scalar_dtype(params), ctl.default_dtype())
    theta = _cast(controller, dtype)
    shape = [len(jax.tree.leaves(params))] if per_tensor else []
    h = jnp.zeros([*shape, hidden_size], dtype)
    if design.scale_free:
        lr0 = jnp.exp(jnp.broadcast_to(theta.log_lr0, shape))
    else:
        lr0 = jnp.ones(shape, dtype)
    lr, mom, wd = heads(theta, h, lr0)
    zero = lambda: jnp.zeros([], dtype)  # distinct buffers, for donation.
    scale_free_fields = {}
    if design.scale_free:
        lr = lr0  # the rate the first step starts from.
        scale_free_fields = dict(
            nu=jax.tree.map(
                lambda p: jnp.zeros_like(p, dtype=_second_moment_dtype(p.dtype)),
                params,
            ),
            first_moment_scale=jnp.zeros(shape, dtype),
            loss_first=zero(),
        )
    return ScaleByGaroState(
        count=jnp.zeros([], jnp.int32),
        h=h,
        momentum=optax.tree.zeros_like(params),
        g_ema=jnp.zeros(shape, dtype),
        loss_mean=zero(),
        loss_var=zero(),
        loss_count=jnp.zeros([], jnp.int32),
        lr=lr,
        mom=mom,
        wd=wd,
        skipped=jnp.zeros([], jnp.int32),
        **scale_free_fields,
    )


def _read_loss(value, dtype):
    """``(loss, finite)``: the loss as a scalar, 0 where it is not finite."""
    if value is None:
        return None, jnp.zeros([], bool)
    loss = jnp.asarray(value).astype(dtype)
    loss_ok = jnp.isfinite(loss)
    return jnp.where(loss_ok, loss, 0), loss_ok


def _features(theta, sums, sizes, state, loss, loss_ok, design):
    """The GRU's inputs of the controller's design and the norm(s) ``G``.

    The loss features are 0 for a non-finite loss.
    """
    columns = xla_cpu.split_along(sums, sums.shape[-1])
    if design.scale_free:
        history = ctl.LossHistory(
            state.loss_mean, state.loss_var, state.loss_count, state.loss_first
        )
        x, norm = ctl.scale_free_features(
            ctl.TreeSums(*columns[:4]),
            size=sizes,
            g_ema=state.g_ema,
            count=state.count,
            loss=loss,
            history=history,
            lr_prev=state.lr,
            log_lr0=theta.log_lr0,
            first_moment_scale=state.first_moment_scale,
            b2=design.b2,
        )
        loss_columns = (2, 3)
    else:
        x, norm = ctl.features(
            sq_norm=columns[0],
            dot_gv=columns[1],
            v_sq_norm=columns[2],
            g_ema=state.g_ema,
            count=state.count,
            loss=loss,
            loss_mean=state.loss_mean,
            loss_var=state.loss_var,
            loss_count=state.loss_count,
        )
        loss_columns = (3,)
    if loss is not None:  # a mask, not x.at[...].set: see xla_cpu.split_along
        is_loss_column = np.isin(np.arange(x.shape[-1]), loss_columns)
        x = jnp.where(loss_ok | ~is_loss_column, x, 0)
    return x, norm


def _with_context(x, theta, h, nonempty):
    """Per tensor: every leaf's features and the DeepSets context, the mean over
    (non-empty) leaves of a projection of the previous hidden states."""
    context = ctl.matvec(theta.ctx_w, _mean_over(h, nonempty))
    context = jnp.broadcast_to(context, (x.shape[0], context.shape[0]))
    return jnp.concatenate([x, context], axis=-1)


class _Leaves(NamedTuple):
    """A step's per-leaf inputs, in the order of the flattened updates."""

    treedef: jax.tree_util.PyTreeDef
    grads: list[jax.Array]
    moms: list[jax.Array]
    nus: list[jax.Array]  # Adam's second moments; the momenta again (seed).
    thetas: list[jax.Array] | None  # the params, where weight decay needs them.
    work: list[jnp.dtype]  # each leaf's compute dtype.


def _flatten(updates, state, params, design, dtype) -> _Leaves:
    grads, treedef = jax.tree.flatten(updates)
    moms = treedef.flatten_up_to(state.momentum)
    return _Leaves(
        treedef=treedef,
        grads=grads,
        moms=moms,
        nus=treedef.flatten_up_to(state.nu) if design.scale_free else moms,
        thetas=None if params is None else treedef.flatten_up_to(params),
        work=[numerics.compute_dtype(g.dtype, dtype) for g in grads],
    )


class _Hyperparams(NamedTuple):
    """What the controller emitted for this step (scalars, or one per leaf)."""

    lr: jax.Array
    mom: jax.Array
    wd: jax.Array


def _leaf_updates(leaves, hp, state, design, finite, coupled, per_tensor):
    """Every leaf's ``(update, momentum[, nu])`` and the new first-moment scale."""
    num_leaves = len(leaves.grads)

    def of_leaf(x):  # per tensor: entry k without a slice (xla_cpu.vector_entries)
        return xla_cpu.vector_entries(x) if per_tensor else [x] * num_leaves

    leaf_hps = [_Hyperparams(*entries) for entries in zip(*map(of_leaf, hp))]
    hp_of = lambda k: leaf_hps[k]
    theta_of = lambda k: None if leaves.thetas is None else leaves.thetas[k]
    per_leaf = zip(leaves.grads, leaves.moms, leaves.nus, leaves.work)
    if not design.scale_free:
        outs = [
            _seed_leaf_step(g, v, theta_of(k), hp_of(k), w, finite, coupled)
            for k, (g, v, _, w) in enumerate(per_leaf)
        ]
        return outs, None
    dtype = state.h.dtype
    first_scale = hp.mom * state.first_moment_scale + (1 - hp.mom)
    second_scale = 1 - jnp.asarray(design.b2, dtype) ** (state.count + 1).astype(dtype)
    first_scale, second_scale = xla_cpu.computed_once((first_scale, second_scale))
    leaf_first_scales = of_leaf(first_scale)
    outs = [
        _scale_free_leaf_step(
            g,
            m,
            nu,
            theta_of(k),
            hp_of(k),
            _AdamScales(leaf_first_scales[k], second_scale),
            design,
            w,
            finite,
            coupled,
        )
        for k, (g, m, nu, w) in enumerate(per_leaf)
    ]
    return outs, first_scale


def _next_scalars(state, h, norm, hp, loss, loss_ok, design) -> ScaleByGaroState:
    """The state's scalars after a step that is not skipped (buffers unchanged)."""
    dtype = state.h.dtype
    beta_g = jnp.asarray(ctl.G_BETA, dtype)
    loss_mean, loss_var = state.loss_mean, state.loss_var
    loss_first = state.loss_first
    if loss is not None:
        loss_mean, loss_var = _loss_moments(loss, loss_ok, state)
        if design.scale_free:
            first_loss = (state.loss_count == 0) & loss_ok
            loss_first = jnp.where(first_loss, loss, state.loss_first)
    return state._replace(
        count=optax.safe_increment(state.count),
        h=h,
        g_ema=beta_g * state.g_ema + (1 - beta_g) * norm,
        loss_mean=loss_mean,
        loss_var=loss_var,
        loss_count=state.loss_count + loss_ok.astype(jnp.int32),
        lr=hp.lr,
        mom=hp.mom,
        wd=hp.wd,
        loss_first=loss_first,
    )


def _controller_fns(design, per_tensor: bool, momentum_nonneg: bool):
    """The GRU step and the heads ``(theta, h, lr_prev) -> (lr, mom, wd)`` of
    ``design``, mapped over the leaves' rows per tensor."""
    over_leaves = (
        (lambda f, axes: jax.vmap(f, axes)) if per_tensor else (lambda f, axes: f)
    )
    gru = over_leaves(ctl.gru_cell, (None, 0, 0))
    if design.scale_free:
        return gru, over_leaves(ctl.scale_free_heads, (None, 0, 0))
    seed_heads = functools.partial(ctl.heads, momentum_nonneg=momentum_nonneg)
    return gru, over_leaves(lambda theta, h, _: seed_heads(theta, h), (None, 0, 0))


def _probe_is_finite(sums: jax.Array) -> jax.Array:
    """Whether every leaf's finite probe (the last column of the sums) is finite.

    A mask rather than ``sums[..., -1]``: see :func:`xla_cpu.split_along`.
    """
    columns = sums.shape[-1]
    is_probe = (np.arange(columns) == columns - 1).reshape(
        (1,) * (sums.ndim - 1) + (-1,)
    )
    return jnp.all(jnp.isfinite(sums) | ~is_probe)


def scale_by_garo(
    controller: ctl.GaroController | None = None,
    *,
    granularity: Literal["global", "per_tensor"] = "global",
    lagged: bool = False,
    weight_decay_mode: WeightDecayMode = "decoupled",
    momentum_nonneg: bool = False,
    skip_nonfinite: bool = True,
    seed: int = 0,
    hidden_size: int | None = None,
    head_init_scale: float | None = None,
    learning_rate_init: float | None = None,
    momentum_init: float | None = None,
    weight_decay_init: float | None = None,
    scale_free: bool | None = None,
    coupled_wd: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The GARO step without the sign flip (see :func:`garo`).

    See :func:`garo` for the update equations and the arguments. Chain
    :func:`optax.scale_by_learning_rate` ``(1.0)`` after it for a descent step,
    as :func:`garo` does.

    Args:
      controller: the controller weights; ``None`` draws them with
        :func:`garo_optax.init_controller` from ``seed`` and the options.
      granularity: ``"global"`` or ``"per_tensor"`` (see :func:`garo`).
      lagged: take the hyperparameters of step :math:`t` from
        :math:`h_{t-1}` (step 1 then uses exactly the ``*_init`` values).
      weight_decay_mode: ``"decoupled"`` (``wd * params`` added to the step,
        AdamW's) or ``"coupled"`` (added to the gradient before the moments,
        L2), as in :func:`garo_optax.autosgm`.
      momentum_nonneg: clip the momentum to [0, 0.99] (always so in the
        scale-free design).
      skip_nonfinite: on a non-finite incoming update, emit zeros and keep the
        state (only ``skipped`` counts the step).
      seed: seed of the controller drawn when ``controller`` is ``None``.
      hidden_size: option of :func:`garo_optax.init_controller` (``None``: its
        default); static.
      head_init_scale: option of :func:`garo_optax.init_controller`.
      learning_rate_init: option of :func:`garo_optax.init_controller`.
      momentum_init: option of :func:`garo_optax.init_controller`.
      weight_decay_init: option of :func:`garo_optax.init_controller`.
      scale_free: option of :func:`garo_optax.init_controller`.
      coupled_wd: deprecated: ``weight_decay_mode="coupled"`` (``True``) or
        ``"decoupled"`` (``False``).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> tx = garo_optax.scale_by_garo(head_init_scale=0.0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> print(f"{float(state.lr):.4f}")
      0.0100
    """
    options = dict(
        hidden_size=hidden_size,
        head_init_scale=head_init_scale,
        learning_rate_init=learning_rate_init,
        momentum_init=momentum_init,
        weight_decay_init=weight_decay_init,
        scale_free=scale_free,
    )
    coupled = _is_coupled(weight_decay_mode, coupled_wd)
    controller = _build_controller(controller, granularity, seed, options)
    hidden_size = ctl.check_controller(controller, granularity)
    design = controller.design
    wd_off = ctl.weight_decay_is_off(controller)
    per_tensor = granularity == "per_tensor"
    gru, heads = _controller_fns(design, per_tensor, momentum_nonneg)

    def init_fn(params):
        return _init_state(params, controller, heads, hidden_size, per_tensor)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None and not wd_off:
            raise ValueError(NO_PARAMS_MSG)
        dtype = state.h.dtype
        theta = _cast(controller, dtype)
        leaves = _flatten(updates, state, None if wd_off else params, design, dtype)
        sizes = jnp.asarray([g.size for g in leaves.grads], dtype)
        # Zero-size leaves get hyperparameters but stay out of the context.
        nonempty = (sizes > 0).astype(dtype)
        sizes = sizes if per_tensor else jnp.sum(sizes)
        sums = _tree_sums(leaves, dtype, design, skip_nonfinite, per_tensor)
        finite = _probe_is_finite(sums) if skip_nonfinite else jnp.ones([], bool)

        loss, loss_ok = _read_loss(value, dtype)
        x, norm = _features(theta, sums, sizes, state, loss, loss_ok, design)
        if per_tensor:
            x = _with_context(x, theta, state.h, nonempty)
        x = jnp.where(finite, x, jnp.zeros_like(x))
        h = gru(theta, x, state.h)
        lr, mom, wd = heads(theta, state.h if lagged else h, state.lr)
        if wd_off:
            wd = jnp.zeros_like(wd)
        # What every leaf's loop reads, computed once (xla_cpu.computed_once).
        hp = xla_cpu.computed_once(_Hyperparams(lr, mom, wd))
        finite = xla_cpu.computed_once(finite)
        outs, first_scale = _leaf_updates(
            leaves, hp, state, design, finite, coupled, per_tensor
        )
        candidate = _next_scalars(state, h, norm, hp, loss, loss_ok, design)
        if design.scale_free:
            candidate = candidate._replace(first_moment_scale=first_scale)
        # The buffers already keep their old values on a skipped step.
        scalars = lambda s: s._replace(momentum=None, nu=None)
        new_state = optax.tree.where(finite, scalars(candidate), scalars(state))
        unflatten = lambda i: leaves.treedef.unflatten([o[i] for o in outs])
        new_state = new_state._replace(
            momentum=unflatten(1),
            nu=unflatten(2) if design.scale_free else None,
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return unflatten(0), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def garo(
    controller: ctl.GaroController | None = None,
    *,
    granularity: Literal["global", "per_tensor"] = "global",
    lagged: bool = False,
    weight_decay_mode: WeightDecayMode = "decoupled",
    momentum_nonneg: bool = False,
    skip_nonfinite: bool = True,
    seed: int = 0,
    hidden_size: int | None = None,
    head_init_scale: float | None = None,
    learning_rate_init: float | None = None,
    momentum_init: float | None = None,
    weight_decay_init: float | None = None,
    scale_free: bool | None = None,
    coupled_wd: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""GARO: a frozen GRU emits the learning rate, momentum and weight decay.

    Each step reduces the incoming updates :math:`g_t` (and the loss
    ``value=``, optional) to a few global features :math:`x_t`, runs
    :math:`h_t = \mathrm{GRU}(x_t, h_{t-1})` (:math:`h_0 = 0`) and reads
    :math:`(\eta_t, \mu_t, \lambda_t)` from three heads on :math:`h_t`
    (:math:`h_{t-1}` if ``lagged``). The controller's ``design`` decides the
    rest.

    **Scale-free design** (``garo-v2``, :func:`garo_optax.pretrained`'s
    default): Adam's normalized direction at a rate that moves in log space,

    .. math::
      \begin{align*}
        \log \eta_t &= \log \eta_{t-1} + \log(\rho) \tanh(w_\eta^\top h_t + b_\eta),
          \qquad \eta_0 = e^{\texttt{log\_lr0}} \\
        m_t &= \mu_t m_{t-1} + (1 - \mu_t) g_t, \qquad
          \nu_t = \beta_2 \nu_{t-1} + (1 - \beta_2) |g_t|^2 \\
        \theta_t &= \theta_{t-1} - \eta_t \Big(\frac{m_t / (1 - \textstyle\prod_{s
          \le t} \mu_s)}{\sqrt{\nu_t / (1 - \beta_2^t)} + \epsilon}
          + \lambda_t \theta_{t-1}\Big),
      \end{align*}

    with :math:`\rho` = 1.1 (the rate changes by at most 10% per step),
    :math:`\mu_t \in [0, 0.99]` and features that are invariant to the loss
    scale (:func:`garo_optax.controller.scale_free_features`): multiplying the
    loss by any :math:`c > 0` leaves the iterates unchanged up to rounding and
    :math:`\epsilon = 10^{-12}`.

    **Seed design** (``garo-v1`` and ``init_controller``'s default): heavy ball
    along the raw updates with
    :math:`(\eta_t, \mu_t, \lambda_t) = (\mathrm{softplus}, \tanh,
    \mathrm{softplus})(W h_t + b)`,
    :math:`v_t = \mu_t v_{t-1} + g_t` and
    :math:`\theta_t = \theta_{t-1} - \eta_t (v_t + \lambda_t \theta_{t-1})`; its
    features (log-norm, norm change, cosine, normalized loss) depend on the
    gradient scale.

    With ``weight_decay_mode="coupled"``, :math:`g_t + \lambda_t \theta_{t-1}`
    enters the moments instead. With ``granularity="per_tensor"`` (spec §4.9) the
    features are computed per leaf (the loss is shared), each leaf has its own
    hidden state and hyperparameters, and the mean over leaves of ``ctx_w``
    times the previous hidden states is appended to every leaf's features. The
    state fields ``lr``, ``mom`` and ``wd`` hold what the controller emitted for
    the last step (read them with :func:`garo_optax.hyperparams`); unlike
    CLARA's ``lr``, writing them does not set a rate, since the controller
    decides every step. The loss is read from ``value=`` (optional; without it
    the loss features are 0): pass it on every step or never. A non-finite
    incoming update gives a zero update and leaves the state unchanged but for
    the ``skipped`` counter (``skip_nonfinite=True``). Complex parameters are
    supported (:math:`|g|^2 = g \bar g`, real statistics and rates). The
    second moment :math:`\nu` of a 16-bit leaf is kept in float32 (in 16 bits
    :math:`\beta_2` = 0.999 rounds to 1 in bfloat16).

    A leaf of at least ``2 * design.stats_sample`` elements (131,072 for
    ``garo-v2``) gives the features its statistics estimated from evenly
    spaced rows (about 65,536 elements), so that they cost a small fraction of
    the step on large models; the finite check still reads every element.
    Smaller leaves, which include every leaf of the tasks ``garo-v2`` was
    trained and evaluated on, are read whole.

    Flax NNX's ``nnx.Optimizer.update(model, grads, value=loss)`` forwards the
    loss. Linen's ``TrainState.apply_gradients`` does not: call
    ``state.tx.update(grads, state.opt_state, state.params, value=loss)``,
    ``optax.apply_updates`` and ``state.replace(step=state.step + 1,
    params=..., opt_state=...)`` instead.

    Under :func:`optax.inject_hyperparams` the float options
    (``head_init_scale``, ``learning_rate_init``, ``momentum_init``,
    ``weight_decay_init``) are injectable; ``hidden_size`` and ``seed`` fix
    shapes and must be named in ``static_args``.

    .. note::
      With ``head_init_scale=0`` the heads ignore the hidden state: the seed
      design is ``optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.01))``
      and the scale-free design (``scale_free=True``) is
      ``optax.adam(1e-3, b1=momentum_init, eps=1e-12)``.

    Args:
      controller: the controller weights (they carry their design); ``None``
        draws them with :func:`garo_optax.init_controller` from ``seed`` and
        the options below.
      granularity: ``"global"``: one hidden state and scalar hyperparameters;
        ``"per_tensor"``: one hidden state and one (lr, mom, wd) per leaf, from
        the same GRU applied to per-leaf features plus a mean-context.
      lagged: take the hyperparameters of step :math:`t` from :math:`h_{t-1}`.
      weight_decay_mode: ``"decoupled"`` or ``"coupled"`` (see above).
      momentum_nonneg: clip the momentum to [0, 0.99] (seed design).
      skip_nonfinite: skip steps whose incoming update is not finite.
      seed: seed of the controller drawn when ``controller`` is ``None``.
      hidden_size: option of :func:`garo_optax.init_controller`.
      head_init_scale: option of :func:`garo_optax.init_controller`.
      learning_rate_init: option of :func:`garo_optax.init_controller`.
      momentum_init: option of :func:`garo_optax.init_controller`.
      weight_decay_init: option of :func:`garo_optax.init_controller`.
      scale_free: option of :func:`garo_optax.init_controller`.
      coupled_wd: deprecated: ``weight_decay_mode="coupled"`` (``True``) or
        ``"decoupled"`` (``False``).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import garo_optax
      >>> solver = garo_optax.garo(momentum_init=0.5)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = solver.init(params)
      >>> loss_fn = lambda p: jnp.sum(p["w"] ** 2)
      >>> for _ in range(3):
      ...     loss, grads = jax.value_and_grad(loss_fn)(params)
      ...     updates, state = solver.update(grads, state, params, value=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> print(sorted(garo_optax.hyperparams(state)))
      ['lr', 'mom', 'wd']

    References:
      ``theoryjames1-glitch/GLOBAL-ADAPTIVE-RECURRENT-OPTIMIZER`` (README, 2025);
      Wichrowska et al, `Learned optimizers that scale and generalize
      <https://arxiv.org/abs/1703.04813>`_, 2017; Moudgil et al, `Learning
      versatile optimizers on a compute diet <https://arxiv.org/abs/2501.12670>`_,
      2025
    """
    return optax.chain(
        scale_by_garo(
            controller,
            granularity=granularity,
            lagged=lagged,
            weight_decay_mode=weight_decay_mode,
            coupled_wd=coupled_wd,
            momentum_nonneg=momentum_nonneg,
            skip_nonfinite=skip_nonfinite,
            seed=seed,
            hidden_size=hidden_size,
            head_init_scale=head_init_scale,
            learning_rate_init=learning_rate_init,
            momentum_init=momentum_init,
            weight_decay_init=weight_decay_init,
            scale_free=scale_free,
        ),
        optax.scale_by_learning_rate(1.0),
    )
