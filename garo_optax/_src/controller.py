r"""The GARO controller: a GRU over global gradient statistics and three heads.

GARO ("Global Adaptive Recurrent Optimizer") is specified only by a README
(``theoryjames1-glitch/GLOBAL-ADAPTIVE-RECURRENT-OPTIMIZER``): a GRU whose one
hidden state, driven by statistics of the gradient, emits the learning rate,
momentum and weight decay of every step. This module holds the controller's
weights (:class:`GaroController`), their initialization (:func:`init_controller`)
and the pure functions :func:`features`, :func:`gru_cell` and :func:`heads`
that :func:`garo_optax.scale_by_garo` calls. The design is the project's
(``specs/garo.md`` §4); the structure follows ``nn_adam.py`` of
google/learned_optimization.

Features, in this order (all float32, float64 under x64), from the global
gradient norm :math:`G_t = \sqrt{\sum_k \|g^{(k)}_t\|^2}`:

0. ``f1 = 0.2 * clip(ln(G_t + 1e-12), -10, 10)`` in [-2, 2], the log-norm.
1. ``f2 = 0.5 * clip(ln((G_t + 1e-12) / (Ĝ_{t-1} + 1e-12)), -5, 5)``, the change
   against the bias-corrected EMA :math:`\hat G` (decay 0.9) of the previous
   norms; 0 at the first step.
2. ``f3 = <g_t, v_{t-1}> / (G_t ‖v_{t-1}‖ + 1e-12)`` clipped to [-1, 1], the
   cosine between the gradient and the momentum buffer; 0 at the first step.
3. ``f4 = 0.2 * clip((L_t - μ̂_{t-1}) / sqrt(σ̂²_{t-1} + 1e-8 (1 + μ̂²)), -5, 5)``,
   the loss ``value=`` normalized by bias-corrected EMAs (decay 0.9) of its
   mean and variance from previous finite losses; 0 without a loss or before
   the first finite one. (The spec's floor is ``1e-8``; relative to
   ``1 + μ̂²`` here, so that float32 rounding of a large constant loss is not
   read as a change of the loss.)

Raw gradients never enter the GRU. A norm whose square overflows saturates
:math:`G_t` at ``1e30`` (``f1`` is clipped long before), and a feature that is
still not finite is replaced by 0, so the GRU only ever sees finite inputs.

Per-tensor mode (``granularity="per_tensor"``, spec §4.9): f1–f3 are computed
per leaf from that leaf's norm, norm EMA and cosine (f4 is shared), and the
context ``ctx_w @ mean_k h^{(k)}_{t-1}`` (width 4) is appended, so the GRU input
has 8 entries; the same GRU and heads run on every leaf (``jax.vmap``), giving
one hidden state and one (lr, mom, wd) per leaf, in flatten order.

The GRU uses the PyTorch gate convention (rows ``[r; z; n]`` of ``w_ih``,
``w_hh``, ``b_ih``, ``b_hh``) with :math:`h_0 = 0`, so :math:`|h_i| < 1` always.
The heads are ``lr = softplus(.)``, ``mom = tanh(.)``, ``wd = softplus(.)``
(rows 0, 1, 2 of ``head_w`` and ``head_b``).
"""

import dataclasses
import math
import numbers
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax._src import validate, xla_cpu

Granularity = Literal["global", "per_tensor"]

NUM_FEATURES = 4
NUM_CONTEXT = 4  # width of the per-tensor mean-context (§4.9).
G_BETA = 0.9  # decay of the EMA of the gradient norm (f2).
LOSS_BETA = 0.9  # decay of the loss EMAs (f4).
_NORM_EPS = 1e-12
_NORM_MAX = 1e30  # saturation of G (and of the momentum norm).
_LOSS_EPS = 1e-8


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class GaroDesign:
    """How GARO turns the controller's outputs into a step (static, no arrays).

    The seed design (``scale_free=False``, ``garo-v1``) takes a heavy-ball step
    along the raw incoming updates with ``lr = softplus(head)``. The scale-free
    design (``scale_free=True``, ``garo-v2``) steps along Adam's normalized
    direction, reads only features that are invariant to the loss scale, and
    moves ``log lr`` by at most ``log(max_lr_change)`` per step.

    Attributes:
      scale_free: the scale-free design.
      b2: decay of the second-moment EMA (scale-free design).
      eps: added to ``sqrt(nu_hat)`` (scale-free design); small, so that the
        direction is invariant to the gradient scale down to gradients of
        about ``eps``.
      max_lr_change: the largest factor by which ``lr`` changes in one step
        (scale-free design).
      min_lr: the smallest learning rate (scale-free design).
      max_lr: the largest learning rate (scale-free design).
      stats_sample: a leaf of more elements reads its statistics (norms, the
        cosine, the direction size) from about this many of its elements,
        evenly spaced rows of its last axis, scaled to the whole leaf, so that
        the statistics pass costs a fraction of a step on large models; 0
        reads every element. The finite check always reads every element.
    """

    scale_free: bool = False
    b2: float = 0.999
    eps: float = 1e-12
    max_lr_change: float = 1.1
    min_lr: float = 1e-7
    max_lr: float = 1.0
    stats_sample: int = 1 << 16

    def __post_init__(self):
        validate.check_interval("b2", self.b2, 0.0, 1.0, high_closed=False)
        validate.check_interval("eps", self.eps, 0.0, None)
        validate.check_interval("max_lr_change", self.max_lr_change, 1.0, None)
        validate.check_positive("min_lr", self.min_lr)
        validate.check_interval("max_lr", self.max_lr, self.min_lr, None)
        validate.check_integer("stats_sample", self.stats_sample, 0)


SEED_DESIGN = GaroDesign()
SCALE_FREE_DESIGN = GaroDesign(scale_free=True)
NUM_SCALE_FREE_FEATURES = 7


def num_features(design: GaroDesign) -> int:
    """The number of features the GRU reads (without the per-tensor context)."""
    return NUM_SCALE_FREE_FEATURES if design.scale_free else NUM_FEATURES


class GaroController(NamedTuple):
    """The weights of the GARO controller: a GRU cell and three heads.

    Shapes for hidden size ``H`` and ``F`` features (4 in the seed design, 7 in
    the scale-free one): ``w_ih`` (3H, F), ``w_hh`` (3H, H), ``b_ih`` and
    ``b_hh`` (3H,) with gate rows ``[r; z; n]``; ``head_w`` (3, H) and
    ``head_b`` (3,) with rows (lr, mom, wd). In per-tensor mode ``ctx_w``
    (C, H) projects the hidden states for the mean-context and ``w_ih`` is
    (3H, F + C); in global mode C = 0. ``log_lr0`` (shape ()) is the log of the
    scale-free design's starting learning rate (``None`` in the seed design),
    and ``design`` (a static :class:`GaroDesign`, no leaves) says which design
    the weights were trained for, so that ``garo(controller)`` needs nothing
    else.
    """

    w_ih: jax.Array
    w_hh: jax.Array
    b_ih: jax.Array
    b_hh: jax.Array
    head_w: jax.Array
    head_b: jax.Array
    ctx_w: jax.Array
    log_lr0: jax.Array | None = None
    design: GaroDesign = SEED_DESIGN


def _inverse_softplus(y) -> float:
    # ln(expm1(y)) in float64; softplus cannot reach 0, so 0 maps to -inf
    # (the head then emits exactly 0).
    if isinstance(y, numbers.Real):
        return -math.inf if y == 0 else math.log(math.expm1(float(y)))
    y = jnp.asarray(y)
    return jnp.where(y == 0, -jnp.inf, jnp.log(jnp.expm1(jnp.where(y == 0, 1.0, y))))


def _atanh(y):
    if isinstance(y, numbers.Real):
        return math.atanh(float(y))
    return jnp.arctanh(jnp.asarray(y))


def default_dtype() -> jnp.dtype:
    """float32, or float64 when x64 is enabled."""
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def check_options(
    *,
    hidden_size=32,
    head_init_scale=0.1,
    learning_rate_init=None,
    momentum_init=None,
    weight_decay_init=1e-6,
    granularity="global",
    scale_free=False,
) -> None:
    """Raises `ValueError` for a bad controller option (see `init_controller`).

    Args:
      hidden_size: see `init_controller`.
      head_init_scale: see `init_controller`.
      learning_rate_init: see `init_controller`.
      momentum_init: see `init_controller`.
      weight_decay_init: see `init_controller`.
      granularity: see `init_controller`.
      scale_free: see `init_controller`.

    Returns:
      None.
    """
    validate.check_integer("hidden_size", hidden_size, 1)
    validate.check_interval("head_init_scale", head_init_scale, 0.0, None)
    if learning_rate_init is not None:
        validate.check_positive("learning_rate_init", learning_rate_init)
    if momentum_init is not None:
        validate.check_interval(
            "momentum_init",
            momentum_init,
            -1.0,
            1.0,
            low_closed=False,
            high_closed=False,
        )
    validate.check_interval("weight_decay_init", weight_decay_init, 0.0, None)
    validate.check_choice("granularity", granularity, ("global", "per_tensor"))
    if not isinstance(scale_free, bool):
        raise ValueError(f"scale_free must be True or False, got {scale_free!r}")


def default_learning_rate_init(scale_free: bool) -> float:
    """0.01 for the seed design (a raw-gradient step), 1e-3 for the scale-free one."""
    return 1e-3 if scale_free else 0.01


def default_momentum_init(scale_free: bool) -> float:
    """0 for the seed design, Adam's 0.9 for the scale-free one."""
    return 0.9 if scale_free else 0.0


def init_controller(
    key: jax.Array,
    *,
    hidden_size: int = 32,
    head_init_scale: float = 0.1,
    learning_rate_init: float | None = None,
    momentum_init: float | None = None,
    weight_decay_init: float = 1e-6,
    granularity: Granularity = "global",
    scale_free: bool = False,
) -> GaroController:
    r"""Draws the weights of a GARO controller (``specs/garo.md`` §4.3–§4.4).

    GRU weights and biases are drawn from
    :math:`U(-1/\sqrt H, 1/\sqrt H)` (PyTorch's ``nn.GRUCell`` default), head
    weights from :math:`N(0, (s/\sqrt H)^2)` with :math:`s` = ``head_init_scale``.
    At :math:`h = 0` the heads emit the ``*_init`` values. Seed design: the
    head biases are ``softplus⁻¹(learning_rate_init)``, ``atanh(momentum_init)``
    and ``softplus⁻¹(weight_decay_init)`` (``-inf`` for 0, which turns weight
    decay off exactly). Scale-free design: the lr head's bias is 0 (no change
    of ``log lr``) and ``log_lr0 = log(learning_rate_init)``.
    ``head_init_scale=0`` makes the heads ignore the hidden state: GARO is then
    SGD with momentum (seed design) or Adam (scale-free design) with constant
    hyperparameters.

    Args:
      key: a PRNG key.
      hidden_size: hidden size ``H`` >= 1 of the GRU.
      head_init_scale: scale ``s`` >= 0 of the head weights.
      learning_rate_init: learning rate > 0 emitted at :math:`h = 0`;
        ``None``: 0.01 (seed design) or 1e-3 (scale-free design).
      momentum_init: momentum in (-1, 1) emitted at :math:`h = 0`; ``None``:
        0 (seed design) or 0.9 (scale-free design).
      weight_decay_init: weight decay >= 0 emitted at :math:`h = 0`.
      granularity: ``"global"`` (one hidden state) or ``"per_tensor"`` (one
        per leaf, with a mean-context of width 4 appended to the features;
        ``ctx_w`` is then (4, H) instead of (0, H)).
      scale_free: draw a controller of the scale-free design
        (:class:`GaroDesign`), else of the seed design.

    Returns:
      A :class:`GaroController` of float32 arrays (float64 under x64).

    Examples:
      >>> import jax
      >>> import garo_optax
      >>> theta = garo_optax.init_controller(jax.random.key(0), hidden_size=8)
      >>> theta.w_hh.shape
      (24, 8)
    """
    check_options(
        hidden_size=hidden_size,
        head_init_scale=head_init_scale,
        learning_rate_init=learning_rate_init,
        momentum_init=momentum_init,
        weight_decay_init=weight_decay_init,
        granularity=granularity,
        scale_free=scale_free,
    )
    if learning_rate_init is None:
        learning_rate_init = default_learning_rate_init(scale_free)
    if momentum_init is None:
        momentum_init = default_momentum_init(scale_free)
    design = SCALE_FREE_DESIGN if scale_free else SEED_DESIGN
    dtype = default_dtype()
    h = hidden_size
    bound = 1.0 / math.sqrt(h)
    keys = jax.random.split(key, 6)
    context = NUM_CONTEXT if granularity == "per_tensor" else 0
    uniform = lambda k, shape: jax.random.uniform(k, shape, dtype, -bound, bound)
    head_w = jax.random.normal(keys[4], (3, h), dtype) * jnp.asarray(
        head_init_scale / math.sqrt(h), dtype
    )
    lr_bias = 0.0 if scale_free else _inverse_softplus(learning_rate_init)
    head_b = jnp.stack(
        [
            jnp.asarray(lr_bias, dtype),
            jnp.asarray(_atanh(momentum_init), dtype),
            jnp.asarray(_inverse_softplus(weight_decay_init), dtype),
        ]
    )
    log_lr0 = jnp.log(jnp.asarray(learning_rate_init, dtype)) if scale_free else None
    return GaroController(
        w_ih=uniform(keys[0], (3 * h, num_features(design) + context)),
        w_hh=uniform(keys[1], (3 * h, h)),
        b_ih=uniform(keys[2], (3 * h,)),
        b_hh=uniform(keys[3], (3 * h,)),
        head_w=head_w,
        head_b=head_b,
        ctx_w=uniform(keys[5], (context, h)),
        log_lr0=log_lr0,
        design=design,
    )


def check_controller(controller: GaroController, granularity: str) -> int:
    """Raises `ValueError` when the controller's shapes do not fit the options.

    Args:
      controller: a :class:`GaroController` (arrays or tracers).
      granularity: ``"global"`` or ``"per_tensor"``.

    Returns:
      The hidden size ``H``.
    """
    if not isinstance(controller, GaroController):
        raise ValueError(
            f"controller must be a GaroController, got {type(controller).__name__}"
        )
    design = controller.design
    if not isinstance(design, GaroDesign):
        raise ValueError(
            f"controller.design must be a GaroDesign, got {type(design).__name__}"
        )
    h = np.shape(controller.w_hh)[-1] if np.ndim(controller.w_hh) == 2 else -1
    context = NUM_CONTEXT if granularity == "per_tensor" else 0
    expected = {
        "w_ih": (3 * h, num_features(design) + context),
        "w_hh": (3 * h, h),
        "b_ih": (3 * h,),
        "b_hh": (3 * h,),
        "head_w": (3, h),
        "head_b": (3,),
        "ctx_w": (context, h),
    }
    if design.scale_free:
        expected["log_lr0"] = ()
    elif controller.log_lr0 is not None:
        raise ValueError("controller.log_lr0 must be None in the seed design")
    for name, shape in expected.items():
        got = tuple(np.shape(getattr(controller, name)))
        if h < 1 or got != shape:
            raise ValueError(
                f"controller.{name} must have shape {shape} for a {granularity} "
                "controller "
                f"with hidden size {h}, got {got}"
            )
    return h


def weight_decay_is_off(controller: GaroController) -> bool:
    """Whether the wd head is statically off (bias -inf on a concrete array).

    Args:
      controller: a :class:`GaroController`.

    Returns:
      ``True`` only when it is known at trace time that ``wd`` is always 0.
    """
    bias = controller.head_b
    if isinstance(bias, jax.core.Tracer):
        return False
    return bool(np.isneginf(np.asarray(bias)[2]))


def matvec(a, b):
    """``a @ b`` at full float32 precision, for every product of the controller:
    the default precision is lower on TPUs (bfloat16 passes) and on GPUs that
    use TF32, which would make the emitted rates depend on the backend."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def gru_cell(controller: GaroController, x: jax.Array, h: jax.Array) -> jax.Array:
    r"""One GRU step in the PyTorch gate convention.

    .. math::
      \begin{align*}
        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' &= (1 - z) \odot n + z \odot h
      \end{align*}

    Args:
      controller: the weights; its dtype is the compute dtype.
      x: the features, shape (4,).
      h: the previous hidden state, shape (H,).

    Returns:
      The new hidden state, shape (H,).
    """
    gi = matvec(controller.w_ih, x) + controller.b_ih
    gh = matvec(controller.w_hh, h) + controller.b_hh
    i_r, i_z, i_n = xla_cpu.split_along(gi, 3)
    h_r, h_z, h_n = xla_cpu.split_along(gh, 3)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def heads(
    controller: GaroController, h: jax.Array, *, momentum_nonneg: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The hyperparameters ``(lr, mom, wd)`` emitted from a hidden state.

    Args:
      controller: the weights.
      h: the hidden state, shape (H,).
      momentum_nonneg: clip the momentum to [0, 0.99].

    Returns:
      Three scalars: ``softplus``, ``tanh`` and ``softplus`` of the head rows.
    """
    raw = xla_cpu.split_along(matvec(controller.head_w, h) + controller.head_b, 3)
    lr = jax.nn.softplus(raw[0])
    mom = jnp.tanh(raw[1])
    if momentum_nonneg:
        mom = jnp.clip(mom, 0.0, 0.99)
    wd = jax.nn.softplus(raw[2])
    return lr, mom, wd


def safe_sqrt(x):
    """sqrt(x) for x >= 0, with a finite derivative (0) at x = 0."""
    # sqrt with a finite gradient at 0 (the momentum norm is 0 at the first
    # step): the unselected branch of a `where` must not produce inf * 0.
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def _finite_or_zero(x):
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def features(
    *,
    sq_norm: jax.Array,
    dot_gv: jax.Array,
    v_sq_norm: jax.Array,
    g_ema: jax.Array,
    count: jax.Array,
    loss: jax.Array | None,
    loss_mean: jax.Array,
    loss_var: jax.Array,
    loss_count: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The four GRU inputs of one step (see the module docstring).

    All arguments are scalars in the compute dtype (``count`` is int32), or,
    in per-tensor mode, ``sq_norm``, ``dot_gv``, ``v_sq_norm`` and ``g_ema`` are
    vectors with one entry per leaf.

    Args:
      sq_norm: :math:`G_t^2 = \\sum_k \\|g^{(k)}_t\\|^2`.
      dot_gv: :math:`\\sum_k \\langle g^{(k)}_t, v^{(k)}_{t-1} \\rangle`.
      v_sq_norm: :math:`\\|v_{t-1}\\|^2`.
      g_ema: the raw EMA of previous norms (not bias-corrected).
      count: the number of previous (non-skipped) steps, ``t - 1``.
      loss_count: the number of previous losses in the loss EMAs (finite ones
        only); ``None`` means ``count``.
      loss: the loss :math:`L_t`, or ``None``.
      loss_mean: the raw EMA of previous losses.
      loss_var: the raw EMA of previous squared loss deviations.

    Returns:
      ``(x, G)``: the features, shape (4,) (or (K, 4)), and the (saturated)
      norm :math:`G_t` (or one per leaf).
    """
    dtype = g_ema.dtype
    eps = jnp.asarray(_NORM_EPS, dtype)
    big = jnp.asarray(_NORM_MAX, dtype)
    norm = jnp.minimum(safe_sqrt(sq_norm), big)
    v_norm = jnp.minimum(safe_sqrt(v_sq_norm), big)
    first = count == 0
    t = count.astype(dtype)
    one = jnp.ones([], dtype)
    g_corr = jnp.where(first, one, one - jnp.asarray(G_BETA, dtype) ** t)
    g_hat = g_ema / g_corr
    f1 = 0.2 * jnp.clip(jnp.log(norm + eps), -10.0, 10.0)
    f2 = 0.5 * jnp.clip(jnp.log((norm + eps) / (g_hat + eps)), -5.0, 5.0)
    f2 = jnp.where(first, jnp.zeros([], dtype), f2)
    f3 = jnp.clip(dot_gv / (norm * v_norm + eps), -1.0, 1.0)
    f3 = jnp.where(first, jnp.zeros([], dtype), f3)
    if loss is None:
        f4 = jnp.zeros([], dtype)
    else:
        loss_count = count if loss_count is None else loss_count
        no_history = loss_count == 0
        n = loss_count.astype(dtype)
        l_corr = jnp.where(no_history, one, one - jnp.asarray(LOSS_BETA, dtype) ** n)
        mean = loss_mean / l_corr
        # The floor is relative to the loss scale: in float32 a constant loss
        # L leaves the corrected mean a few ulps of L away from L, which an
        # absolute floor of 1e-8 would turn into a spurious signal for L >> 1.
        floor = _LOSS_EPS * (1 + mean**2)
        z = (loss - mean) / jnp.sqrt(loss_var / l_corr + floor)
        f4 = 0.2 * jnp.clip(z, -5.0, 5.0)
        f4 = jnp.where(no_history, jnp.zeros([], dtype), f4)
    f4 = jnp.broadcast_to(f4, f1.shape)
    x = jnp.stack([f1, f2, f3, f4], axis=-1).astype(dtype)
    return _finite_or_zero(x), norm


MAX_SCALE_FREE_MOMENTUM = 0.99


def _ratio(a: jax.Array, b: jax.Array) -> jax.Array:
    """a / b, and 0 where b <= 0, with finite derivatives everywhere.

    No absolute epsilon (it would set a gradient scale); the inner ``where``
    keeps the unselected branch's derivative finite (no inf * 0).
    """
    ok = b > 0
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def _log_ratio(a: jax.Array, b: jax.Array) -> jax.Array:
    """ln(a / b) where a > 0 and b > 0, else 0, with finite derivatives."""
    ok = (a > 0) & (b > 0)
    return jnp.where(ok, jnp.log(jnp.where(ok, a, 1) / jnp.where(ok, b, 1)), 0)


def scale_free_heads(
    controller: GaroController, h: jax.Array, lr_prev: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The scale-free design's ``(lr, mom, wd)`` from a hidden state.

    .. math::
      \log \eta_t = \mathrm{clip}\big(\log \eta_{t-1}
        + \log(\rho)\, \tanh(w_0^\top h + b_0),\ \log \eta_{\min},
        \log \eta_{\max}\big)

    with :math:`\rho` = ``design.max_lr_change``, so that
    :math:`\eta_t / \eta_{t-1} \in [1/\rho, \rho]`; ``mom = clip(tanh(.), 0,
    0.99)`` (the decay of Adam's first moment) and ``wd = softplus(.)``.

    Args:
      controller: the weights (scale-free design).
      h: the hidden state, shape (H,).
      lr_prev: the previous learning rate :math:`\eta_{t-1}` (shape ()).

    Returns:
      Three scalars ``(lr, mom, wd)``.
    """
    design = controller.design
    raw = xla_cpu.split_along(matvec(controller.head_w, h) + controller.head_b, 3)
    log_step = math.log(design.max_lr_change) * jnp.tanh(raw[0])
    log_lr = jnp.clip(
        jnp.log(lr_prev) + log_step, math.log(design.min_lr), math.log(design.max_lr)
    )
    mom = jnp.clip(jnp.tanh(raw[1]), 0.0, MAX_SCALE_FREE_MOMENTUM)
    return jnp.exp(log_lr), mom, jax.nn.softplus(raw[2])


class TreeSums(NamedTuple):
    """Sums over the elements of the incoming updates and Adam's buffers.

    Scalars (global mode) or one entry per leaf (per-tensor mode).
    """

    sq_norm: jax.Array  # |g|^2
    dot_gm: jax.Array  # Re <g, m_{t-1}>
    m_sq_norm: jax.Array  # |m_{t-1}|^2
    direction_sq: jax.Array  # sum |m_{t-1}|^2 / (nu_{t-1} + eps^2)


class LossHistory(NamedTuple):
    """What the scale-free features know of the losses (see ``GaroState``)."""

    mean: jax.Array  # raw EMA of previous finite losses.
    var: jax.Array  # raw EMA of their squared deviations.
    count: jax.Array  # finite losses seen.
    first: jax.Array  # the first finite loss (0 before it).


def scale_free_features(
    sums: TreeSums,
    *,
    size: jax.Array,
    g_ema: jax.Array,
    count: jax.Array,
    loss: jax.Array | None,
    history: LossHistory,
    lr_prev: jax.Array,
    log_lr0: jax.Array,
    first_moment_scale: jax.Array,
    b2: float,
) -> tuple[jax.Array, jax.Array]:
    r"""The seven GRU inputs of the scale-free design, each invariant to c·loss.

    0. ``0.5 clip(ln(G_t / Ĝ_{t-1}), ±5)``: the norm against its own EMA.
    1. the cosine of :math:`g_t` and Adam's first moment :math:`m_{t-1}`.
    2. ``0.2 clip((L_t - μ̂)/sqrt(σ̂² + 1e-8 μ̂²), ±5)``: the loss against its
       running mean and deviation.
    3. ``0.2 clip(ln(L_t / L_1), ±10)``: progress against the first loss (0
       unless both are positive).
    4. ``0.2 clip(ln(η_{t-1}) - ln(η_0), ±10)``: where the rate is.
    5. ``ln(1 + t) / 7``: the step count (no horizon).
    6. ``0.2 clip(ln mean(m̂²/ν̂), ±10)``: the squared size of the last
       normalized direction, a signal-to-noise ratio of the gradients.

    Features 0, 1 and 6 are 0 at the first step, 2 and 3 until a loss is
    known. Every ratio has numerator and denominator of one scale, so
    multiplying the loss by c changes no feature (up to float rounding).

    Args:
      sums: the element sums of this step (:class:`TreeSums`).
      size: the element counts (scalar, or one per leaf).
      g_ema: the raw EMA of previous norms (decay 0.9).
      count: the number of previous (non-skipped) steps.
      loss: the loss of this step (finite or replaced), or ``None``.
      history: the previous losses (:class:`LossHistory`).
      lr_prev: the previous learning rate.
      log_lr0: the controller's starting log learning rate.
      first_moment_scale: ``1 - prod(mom)``, the bias correction of
        :math:`m_{t-1}`.
      b2: the second moment's decay.

    Returns:
      ``(x, G)``: the features, shape (7,) (or (K, 7)), and the norm(s).
    """
    dtype = g_ema.dtype
    zero = jnp.zeros([], dtype)
    first = count == 0
    t = count.astype(dtype)
    norm = jnp.minimum(safe_sqrt(sums.sq_norm), _NORM_MAX)
    m_norm = jnp.minimum(safe_sqrt(sums.m_sq_norm), _NORM_MAX)
    g_hat = g_ema / jnp.where(first, 1.0, 1.0 - jnp.asarray(G_BETA, dtype) ** t)
    f0 = 0.5 * jnp.clip(_log_ratio(norm, g_hat), -5.0, 5.0)
    f1 = jnp.clip(_ratio(sums.dot_gm, norm * m_norm), -1.0, 1.0)
    nu_scale = 1.0 - jnp.asarray(b2, dtype) ** t
    mean_sq = _ratio(
        sums.direction_sq * nu_scale, jnp.square(first_moment_scale) * size
    )
    f6 = 0.2 * jnp.clip(_log_ratio(mean_sq, jnp.ones_like(mean_sq)), -10.0, 10.0)
    f0, f1, f6 = (jnp.where(first, zero, f) for f in (f0, f1, f6))
    f2 = f3 = zero
    if loss is not None:
        no_history = history.count == 0
        n = history.count.astype(dtype)
        corr = jnp.where(no_history, 1.0, 1.0 - jnp.asarray(LOSS_BETA, dtype) ** n)
        mean = history.mean / corr
        spread = safe_sqrt(history.var / corr + _LOSS_EPS * mean**2)
        f2 = 0.2 * jnp.clip(_ratio(loss - mean, spread), -5.0, 5.0)
        f2 = jnp.where(no_history, zero, f2)
        f3 = 0.2 * jnp.clip(_log_ratio(loss, history.first), -10.0, 10.0)
    f4 = 0.2 * jnp.clip(jnp.log(lr_prev) - log_lr0, -10.0, 10.0)
    f5 = jnp.log1p(t) / 7.0
    shape = jnp.shape(f0)
    x = jnp.stack(
        [jnp.broadcast_to(f, shape) for f in (f0, f1, f2, f3, f4, f5, f6)], axis=-1
    ).astype(dtype)
    return _finite_or_zero(x), norm
