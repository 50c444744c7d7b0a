r"""AutoSGM: momentum as a lowpass filter, the learning rate as a ratio.

Somefun et al, `AUTOSGM: A Unified Lowpass Regularization Framework for
Accelerated Learning <https://github.com/somefunAgba/autosgm>`_, ICASSP 2024.

In plain words: AutoSGM reads momentum as a first-order lowpass filter on the
gradient, with a pole :math:`\beta` and a zero :math:`\gamma`. Heavy ball
(:math:`\gamma = 0`) and Nesterov (:math:`\gamma = \beta / (1 + \beta)`) are two
points of that design space. The learning rate is read as an iteration-dependent
ratio of a correlation-type *numerator* over a moment-type *denominator*: Adam
keeps the denominator (the square root of a second-moment estimate) and fixes the
numerator to a constant; AutoSGM also offers four per-tensor numerator
estimators, plus a window (a periodic decay schedule) multiplying the step.

This module implements version D of the original PyTorch code (the reference
semantics of the project's specification): :func:`scale_by_autosgm` (the core,
returning the unsigned step), :func:`autosgm` (the optimizer, returning the signed
update) and :func:`from_asgm_config`, which builds :func:`autosgm` from the
original's configuration tuples. Windows come from
:func:`garo_optax.window_schedule`.

Granularity: the filters, the moment estimate and the numerator pre-filters are
per element; the numerators and the learning rate they produce are per leaf
(a mean or a norm over one leaf, never across leaves); nothing is global except
the step count.
"""

import numbers
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import optax

from garo_optax._src import numerics, schedules, validate, xla_cpu
from garo_optax._src.validate import WeightDecayMode

Numerator = Literal["constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev"]

# In the original's ``num_lrc`` order: the code of a numerator is its index.
NUMERATORS: tuple[str, ...] = get_args(Numerator)
_WEIGHT_DECAY_MODES = get_args(WeightDecayMode)
# Numerators that read the parameters, and those smoothed by the EMA0.1 of L.
_READS_PARAMS = ("max_bound", "markov", "chebyshev")
# The original's fixed constants: the Huber/Chebyshev clip factor (``cf``) and the
# pole of the exponential average that smooths a numerator (``EMA0.1``).
_CLIP_FACTOR = 4.0
_NUMERATOR_POLE = 0.1
# Not in the original: the least b_t of "markov" and "chebyshev", as a fraction of
# lr0. Their correlation w g / d is 0 on an all-zero leaf and their lower clip
# T(d) l is 0 for d >= 1 (and tends to 0 as d -> 0), so without it a zero-initialized
# leaf (a bias) never moves.
_NUMERATOR_FLOOR = 0.01
# Numerators with a complex form; "chebyshev_scalar" subtracts a norm from every
# entry, which has no natural meaning for complex entries.
_COMPLEX_NUMERATORS = ("constant", "max_bound", "markov", "chebyshev")

# State fields holding one scalar per parameter leaf, stacked in a vector.
_PER_LEAF_SCALARS = ("norm_mean", "norm_var", "lr_num", "lr")

_NO_PARAMS_MSG = (
    "You are using a transformation that requires the current value of "
    "parameters, but you are not passing `params` when calling `update`."
)


class ScaleByAutoSgmState(NamedTuple):
    """State of :func:`scale_by_autosgm`; fields a configuration skips are None."""

    count: jax.Array  # shape=(), dtype=jnp.int32.
    # Smoothing filter: s_t / pole (s_t itself when pole = 0); with zero = 0 this
    # is the filter's momentum q_t, Adam's first moment.
    mu: optax.Updates
    # Moment estimator (second moment of |g|, real); None when not adaptive.
    nu: optax.Updates | None
    # Numerator states (leaf-shaped): EMA of w^2 ("markov", "chebyshev").
    w_sq: optax.Updates | None
    # EMA of |w g/d| + eps ("markov") or of w g/d ("chebyshev").
    x_mean: optax.Updates | None
    # EMA of the squared deviation of w g/d from x_mean ("chebyshev").
    x_var: optax.Updates | None
    # The correlation: the EMA of lr0 (w^2 + (g/d)^2) ("max_bound"), or the
    # discounted sum of the clipped partial correlations ("markov", "chebyshev").
    corr: optax.Updates | None
    # Per-leaf scalars are vectors with one entry per parameter leaf, in
    # ``jax.tree.leaves(params)`` order (not params-shaped trees, which
    # ``optax.tree.map_params`` would give the parameters' shardings).
    # "chebyshev_scalar": EMAs of ||v|| and of r^2.
    norm_mean: jax.Array | None  # shape=(num_leaves,)
    norm_var: jax.Array | None  # shape=(num_leaves,)
    # The EMA0.1 numerator L ("max_bound", "markov", "chebyshev").
    lr_num: jax.Array | None  # shape=(num_leaves,)
    # The effective learning rate rho_t a_t of the last step, per leaf.
    lr: jax.Array  # shape=(num_leaves,)
    # The clipped correlation ("markov", "chebyshev"): the per-element terms whose
    # mean is the numerator's b_t, kept as a buffer the step rewrites in place
    # (float32, or float64 for float64 parameters).
    corr_clip: optax.Updates | None = None


def _is_static_zero(value: Any) -> bool:
    # A subnormal double is 0 in float32, where it would divide (the pole).
    return validate.is_concrete_number(value) and validate.float32_value(value) == 0


def _is_complex(dtype) -> bool:
    return jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating)


def _cast(x: jax.Array | float, dtype) -> jax.Array | float:
    # A step coefficient in a leaf's dtype; a Python number stays weakly typed.
    return x.astype(dtype) if isinstance(x, jax.Array) else x


def _over(x: jax.Array, d: jax.Array) -> jax.Array:
    # x / d for a real d; a complex x is divided part by part (strict promotion).
    if jnp.iscomplexobj(x):
        return jax.lax.complex(x.real / d, x.imag / d)
    return x / d


def _tukey(u: jax.Array) -> jax.Array:
    # Tukey's biweight u (1 - u^2)^2 on u clipped to [0, 1].
    u = jnp.minimum(u, 1.0)
    return u * jnp.square(1.0 - u * u)


def _check_complex_leaves(params, numerator: str, mu_dtype) -> None:
    """Raises ValueError for a complex leaf the configuration cannot handle."""
    for path, leaf in jax.tree.leaves_with_path(params):
        name = f"params{jax.tree_util.keystr(path)}"
        if _is_complex(leaf.dtype) and numerator not in _COMPLEX_NUMERATORS:
            raise ValueError(
                f"numerator={numerator!r} does not support complex parameters, got "
                f"{name} of dtype {leaf.dtype}; use one of {_COMPLEX_NUMERATORS}"
            )
        if mu_dtype is not None and _is_complex(mu_dtype) != _is_complex(leaf.dtype):
            raise ValueError(
                f"mu_dtype={jnp.dtype(mu_dtype)} cannot hold the smoothing state of "
                f"{name} of dtype {leaf.dtype}: both must be real or both complex"
            )


# --- The configuration and the coefficients of a step. -----------------------------


class _AutoSgmConfig(NamedTuple):
    """The hyperparameters of one AutoSGM core, as the user passed them.

    The properties are the static special cases, decided on concrete Python
    numbers only: traced hyperparameters (``optax.inject_hyperparams``) take
    the general path, which stores the same state.
    """

    learning_rate: optax.ScalarOrSchedule
    window: optax.ScalarOrSchedule | None
    pole: jax.typing.ArrayLike
    zero: jax.typing.ArrayLike
    gain: jax.typing.ArrayLike | None
    b2: jax.typing.ArrayLike
    beta_n: jax.typing.ArrayLike
    eps: jax.typing.ArrayLike
    weight_decay: jax.typing.ArrayLike
    numerator: str
    weight_decay_mode: str
    debias: bool
    adaptive: bool
    eps_in_sqrt: bool
    mu_dtype: jnp.dtype | None

    @property
    def zero_is_zero(self) -> bool:
        return _is_static_zero(self.zero)

    @property
    def pole_is_zero(self) -> bool:
        return _is_static_zero(self.pole)

    @property
    def coupled(self) -> bool:
        no_decay = _is_static_zero(self.weight_decay)
        return self.weight_decay_mode == "coupled" and not no_decay

    @property
    def decoupled(self) -> bool:
        no_decay = _is_static_zero(self.weight_decay)
        return self.weight_decay_mode == "decoupled" and not no_decay

    @property
    def reads_params(self) -> bool:
        no_decay = _is_static_zero(self.weight_decay)
        return self.numerator in _READS_PARAMS or not no_decay


def _check_arguments(c: _AutoSgmConfig) -> None:
    """Raises ValueError for an argument out of range (concrete values only)."""
    if not callable(c.learning_rate):
        validate.check_positive("learning_rate", c.learning_rate)
    validate.check_interval("pole", c.pole, 0.0, 1.0, high_closed=False)
    validate.check_interval("zero", c.zero, 0.0, 1.0, high_closed=False)
    if c.gain is not None:
        validate.check_interval("gain", c.gain, 0.0, None)
    validate.check_interval("b2", c.b2, 0.0, 1.0, high_closed=False)
    validate.check_interval("beta_n", c.beta_n, 0.0, 1.0, high_closed=False)
    validate.check_choice("numerator", c.numerator, NUMERATORS)
    validate.check_interval("eps", c.eps, 0.0, None)
    validate.check_interval("weight_decay", c.weight_decay, 0.0, None)
    validate.check_choice("weight_decay_mode", c.weight_decay_mode, _WEIGHT_DECAY_MODES)
    if c.window is not None and not callable(c.window):
        validate.check_interval("window", c.window, 0.0, None)
    if not c.adaptive and c.numerator != "constant":
        raise ValueError(
            f"numerator={c.numerator!r} needs adaptive=True (the numerator "
            "estimators use the moment estimator); with adaptive=False the "
            "numerator must be 'constant'"
        )


class _StepCoefficients(NamedTuple):
    """The scalars of one step that every leaf reads (the statistics' dtype).

    ``None`` marks a term the configuration does not use.
    """

    count: jax.Array  # the 1-based step count (int32)
    lr0: jax.Array  # alpha_t, the learning rate at the 0-based count
    rho: jax.Array | None  # the window rho_t
    eps: jax.Array
    beta: jax.Array  # the smoothing filter's pole
    in_gain: jax.Array  # its input gain eta
    # With a zero gamma: s_t / beta~ = beta mu + state_gain g, with beta~ = beta
    # (1 for beta = 0), and q_t = beta~ mu + eta g, which is s_t / beta~ +
    # lookahead g when beta~ is known to be beta (a concrete non-zero pole).
    state_gain: jax.Array | None
    beta_state: jax.Array | None
    lookahead: jax.Array | None
    out_scale: jax.Array | None  # kappa_1 / (1 - gamma)
    beta2: jax.Array | None  # the moment filter's pole
    moment_gain: jax.Array | None  # eta_2
    moment_scale: jax.Array | None  # kappa_2
    coupled_decay: jax.Array | None  # lambda, added to the gradient
    decoupled_decay: jax.Array | None  # lambda (1 - beta) / (1 - gamma)
    beta_n: jax.Array | None  # the numerators' pole
    # kappa_2 (1 without debiasing) for the non-constant numerators, one copy
    # per loop that reads d: see _Denominators.
    d_scales: tuple[jax.Array, ...] | None


def _input_gain(config: _AutoSgmConfig, default: jax.Array, dtype) -> jax.Array:
    # A filter's input gain: `gain`, or its default 1 - pole for None or 0.
    gain = config.gain
    if config.debias or gain is None or _is_static_zero(gain):
        return default  # Debiasing cancels any gain.
    if validate.is_concrete_number(gain):
        return jnp.asarray(gain, dtype)
    return jnp.where(jnp.asarray(gain, dtype) == 0, default, jnp.asarray(gain, dtype))


def _step_coefficients(
    config: _AutoSgmConfig, count: jax.Array, dtype
) -> _StepCoefficients:
    """The coefficients of the step at the 0-based ``count``, in ``dtype``."""

    def scalar(x):
        return jnp.asarray(x, dtype)

    step = optax.safe_increment(count)
    t = step.astype(dtype)
    beta = scalar(config.pole)
    in_gain = _input_gain(config, 1.0 - beta, dtype)
    out_scale = 1.0 / (1.0 - beta**t) if config.debias else None
    state_gain = beta_state = lookahead = None
    if not config.zero_is_zero:
        gamma = scalar(config.zero)
        if validate.is_concrete_number(config.pole):
            beta_state = scalar(1.0 if config.pole_is_zero else config.pole)
            if not config.pole_is_zero:
                lookahead = gamma * in_gain / beta
        else:
            beta_state = jnp.where(beta == 0, 1.0, beta)
        state_gain = (beta - gamma) * in_gain / beta_state
        zero_scale = 1.0 / (1.0 - gamma)
        out_scale = zero_scale if out_scale is None else out_scale * zero_scale
    beta2, moment_gain, moment_scale, d_scales = _moment_coefficients(
        config, step, dtype
    )
    decay = scalar(config.weight_decay)
    return _StepCoefficients(
        count=step,
        lr0=scalar(numerics.as_schedule(config.learning_rate)(count)),
        rho=(
            None
            if config.window is None
            else scalar(numerics.as_schedule(config.window)(count))
        ),
        eps=scalar(config.eps),
        beta=beta,
        in_gain=in_gain,
        state_gain=state_gain,
        beta_state=beta_state,
        lookahead=lookahead,
        out_scale=out_scale,
        beta2=beta2,
        moment_gain=moment_gain,
        moment_scale=moment_scale,
        coupled_decay=decay if config.coupled else None,
        # The original scales decoupled decay by (1 - beta) / (1 - gamma).
        decoupled_decay=(
            decay * (1.0 - beta) / (1.0 - scalar(config.zero))
            if config.decoupled
            else None
        ),
        beta_n=None if d_scales is None else scalar(config.beta_n),
        d_scales=d_scales,
    )


def _moment_coefficients(config: _AutoSgmConfig, step: jax.Array, dtype) -> tuple:
    r"""``(beta_2, eta_2, kappa_2, d_scales)``: the moment filter's pole, input
    gain and debiasing factor (``None`` without debiasing), and the copies of
    :math:`\kappa_2` of the non-constant numerators (``None`` otherwise); all
    ``None`` when not adaptive."""
    if not config.adaptive:
        return None, None, None, None
    beta2 = jnp.asarray(config.b2, dtype)
    gain = _input_gain(config, 1.0 - beta2, dtype)
    scale = 1.0 / (1.0 - beta2 ** step.astype(dtype)) if config.debias else None
    if config.numerator == "constant":
        return beta2, gain, scale, None
    # One copy per loop that reads d (see _Denominators).
    kappa = jnp.asarray(1.0 if scale is None else scale, dtype)
    copies = (
        xla_cpu.private_copy(kappa, step, k)
        for k, _ in enumerate(_Denominators._fields)
    )
    return beta2, gain, scale, tuple(copies)


# --- One leaf's state and the math of its step. -------------------------------------


class _LeafState(NamedTuple):
    """One leaf's part of :class:`ScaleByAutoSgmState` (its fields but ``count``).

    Tree fields hold the leaf's array; ``None`` where the configuration keeps
    no such state, and for the per-leaf scalar fields, which the step reads
    and writes as vectors over the leaves (:func:`_numerators`).
    """

    mu: jax.Array
    nu: jax.Array | None
    w_sq: jax.Array | None
    x_mean: jax.Array | None
    x_var: jax.Array | None
    corr: jax.Array | None
    norm_mean: jax.Array | None
    norm_var: jax.Array | None
    lr_num: jax.Array | None
    lr: jax.Array | None
    corr_clip: jax.Array | None


def _smoothing_filter(
    config: _AutoSgmConfig, coef: _StepCoefficients, mu: jax.Array, g: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""The filter :math:`F(\beta, \gamma, \eta)`: ``(q_t, state)``.

    :math:`q_t = s_{t-1} + \eta g_t` (the output before :math:`1 / (1 -
    \gamma)` and debiasing) and :math:`s_t = \beta q_t - \gamma \eta g_t`. The
    state is :math:`s_t / \tilde\beta` with :math:`\tilde\beta = \beta` (1 for
    :math:`\beta = 0`), i.e. :math:`q_t` when :math:`\gamma = 0`. ``g`` is in
    the leaf's compute dtype; the state is returned in ``mu``'s dtype.
    """
    work = g.dtype
    old = mu.astype(work)
    if config.zero_is_zero and config.pole_is_zero:
        return _cast(coef.in_gain, work) * g, mu  # s_t = 0 for a zero pole and zero.
    if config.zero_is_zero:
        q = _cast(coef.beta, work) * old + _cast(coef.in_gain, work) * g
        return q, q.astype(mu.dtype)
    state = _cast(coef.beta, work) * old + _cast(coef.state_gain, work) * g
    if coef.lookahead is not None:
        # q from the new state, as optax's Nesterov: read from the old state, q
        # and the new state are two loops that both read mu, so XLA copies mu
        # before the one that overwrites it (a third pass over memory).
        q = state + _cast(coef.lookahead, work) * g
    else:
        q = _cast(coef.beta_state, work) * old + _cast(coef.in_gain, work) * g
    return q, state.astype(mu.dtype)


def _second_moment(coef: _StepCoefficients, nu: jax.Array, g: jax.Array) -> jax.Array:
    r""":math:`\nu_t = \beta_2 \nu_{t-1} + \eta_2 |g_t|^2`, real, in the
    statistics' dtype of the leaf."""
    real = numerics.real_dtype(g.dtype)
    return _cast(coef.beta2, real) * nu.astype(real) + _cast(
        coef.moment_gain, real
    ) * numerics.abs_square(g)


def _denominator(
    config: _AutoSgmConfig, coef: _StepCoefficients, nu: jax.Array, scale
) -> jax.Array:
    r"""The moment denominator :math:`d_t = \sqrt{\kappa_2 \nu_t + \epsilon} +
    \epsilon` (no :math:`\epsilon` inside without ``eps_in_sqrt``), with
    :math:`\kappa_2` = ``scale`` (``None``: 1)."""
    eps = _cast(coef.eps, nu.dtype)
    p = nu if scale is None else _cast(scale, nu.dtype) * nu
    if config.eps_in_sqrt:
        p = p + eps
    return jnp.sqrt(p) + eps


def _direction(q, d, w, scale_q, scale_w) -> jax.Array:
    r"""``scale_q q / d + scale_w w``: :math:`v_t` times a scale, computed where
    it is read, without a materialized copy (``None`` terms are skipped)."""
    v = q if scale_q is None else _cast(scale_q, q.dtype) * q
    if d is not None:
        v = _over(v, d)
    if scale_w is not None:
        v = v + _cast(scale_w, q.dtype) * w
    return v


class _Denominators(NamedTuple):
    r"""The denominator :math:`d_t` of a non-constant numerator, once per loop.

    Every field is the same value, computed from its own copy of
    :math:`\kappa_2` (:func:`xla_cpu.private_copy`), so that each loop that
    reads :math:`d_t` computes it: XLA:CPU would otherwise store one
    :math:`d_t` (a square root) in a fresh temporary array that every loop
    reads. Measured (10M parameters, interleaved): ``"markov"`` 30 ms a step
    with the copies, 50 ms with one :math:`d_t`; ``"max_bound"`` 24 against
    41 ms. To check that it still pays, make the copies one value and run
    ``tests/test_autosgm_structure.py`` (the step's temporary memory).
    """

    step: jax.Array  # the update (and "chebyshev_scalar"'s v)
    average: jax.Array  # the average of x ("max_bound": its correlation)
    correlation: jax.Array  # the correlation c, through x
    lower_clip: jax.Array  # T(d) in the clip of c
    deviation: jax.Array  # "chebyshev"'s variance of x


def _max_bound_terms(
    coef: _StepCoefficients, copy: int | None, w: jax.Array, g_hat: jax.Array, corr
) -> tuple[jax.Array, jax.Array]:
    r"""``"max_bound"``: ``(terms, corr)``, the terms
    :math:`\min(E[\alpha_t (|w|^2 + |\hat g|^2)], \alpha_t)` whose mean is
    :math:`b_t`, and the new average."""
    real = numerics.real_dtype(w.dtype)
    corr = _cast(coef.beta_n, real) * corr.astype(real) + _cast(
        (1.0 - coef.beta_n) * coef.lr0, real
    ) * (numerics.abs_square(w) + numerics.abs_square(g_hat))
    # The leaf's own copy of lr0 (xla_cpu.sum_copies): XLA:CPU writes a
    # broadcast scalar that the sums of two leaves of one shape share out as an
    # array (private_copy). Measured at 100M: 194 ms a step with it, 234 ms
    # without. A copy per leaf cost 13 ms of compile time each.
    bound = xla_cpu.private_copy(coef.lr0, coef.count, copy)
    return jnp.minimum(corr, _cast(bound, real)), corr


def _markov_clip(coef: _StepCoefficients, x: jax.Array, x_avg: jax.Array, x_mean):
    r"""``"markov"``: ``(h, E[|x| + eps])`` with :math:`h = x \min(|x| +
    \epsilon, 4 E[|x| + \epsilon]) / (|x| + \epsilon)`; ``x_avg`` is ``x``
    computed in the average's loop."""
    real = x.dtype
    bn, rest = _cast(coef.beta_n, real), _cast(1.0 - coef.beta_n, real)
    eps = _cast(coef.eps, real)
    x_mean = bn * x_mean.astype(real) + rest * (jnp.abs(x_avg) + eps)
    mag = jnp.abs(x) + eps
    return x * jnp.minimum(mag, _CLIP_FACTOR * x_mean) / mag, x_mean


def _chebyshev_clip(coef: _StepCoefficients, x, x_avg, x_dev, x_mean, x_var):
    r"""``"chebyshev"``: ``(h, E[x], E[r^2])`` with :math:`r = |x - E[x]| +
    \epsilon` and :math:`h = x \min(r, \sqrt{E[r^2]} + \epsilon) / r`;
    ``x_avg`` and ``x_dev`` are ``x`` computed in the averages' loops."""
    real = x.dtype
    bn, rest = _cast(coef.beta_n, real), _cast(1.0 - coef.beta_n, real)
    eps = _cast(coef.eps, real)
    x_mean = bn * x_mean.astype(real) + rest * x_avg
    dev = jnp.abs(x_dev - x_mean) + eps
    x_var = bn * x_var.astype(real) + rest * jnp.square(dev)
    dev = jnp.abs(x - x_mean) + eps
    sigma = jnp.sqrt(x_var) + eps
    return x * jnp.minimum(dev, sigma) / dev, x_mean, x_var


def _correlation_terms(
    config: _AutoSgmConfig,
    coef: _StepCoefficients,
    g: jax.Array,
    w: jax.Array,
    ds: _Denominators,
    old: _LeafState,
) -> tuple[jax.Array, _LeafState]:
    r"""``"markov"`` and ``"chebyshev"``: ``(terms, state)``, the terms
    :math:`\operatorname{clip}(|c|, T(d)\,\ell, \alpha_t (1 + \omega))` whose
    mean is :math:`b_t` (before the floor), and the leaf's new numerator states.

    The statistics are real: :math:`|w|^2` and :math:`x = \operatorname{Re}(\bar
    w \hat g)` for complex leaves.
    """
    real = numerics.real_dtype(w.dtype)
    bn, lr0 = _cast(coef.beta_n, real), _cast(coef.lr0, real)
    w_sq = bn * old.w_sq.astype(real) + _cast(
        1.0 - coef.beta_n, real
    ) * numerics.abs_square(w)
    # 1 + omega; markov: omega is the post-state beta_n EMA.
    one_omega = 1.0 + (bn * w_sq if config.numerator == "markov" else w_sq)
    x, x_avg, x_dev = (
        numerics.real_product(w, _over(g, d))
        for d in (ds.correlation, ds.average, ds.deviation)
    )
    if config.numerator == "markov":
        (h, x_mean), x_var = _markov_clip(coef, x, x_avg, old.x_mean), None
    else:
        h, x_mean, x_var = _chebyshev_clip(coef, x, x_avg, x_dev, old.x_mean, old.x_var)
    # c_t = beta_n c_{t-1} + ell h with ell = lr0 / (1 + omega).
    corr = bn * old.corr.astype(real) + lr0 * h / one_omega
    terms = jnp.minimum(
        jnp.maximum(jnp.abs(corr), _tukey(ds.lower_clip) * lr0 / one_omega),
        lr0 * one_omega,
    )
    # The terms go to the corr_clip buffer, which a plain sum then reads.
    terms = xla_cpu.reused_buffer(old.corr_clip.astype(real), terms, coef.count)
    return terms, old._replace(
        w_sq=w_sq.astype(old.w_sq.dtype),
        x_mean=x_mean.astype(old.x_mean.dtype),
        x_var=None if x_var is None else x_var.astype(old.x_var.dtype),
        corr=corr.astype(old.corr.dtype),
        corr_clip=terms.astype(old.corr_clip.dtype),
    )


class _LeafWork(NamedTuple):
    """A leaf's filtered arrays, which its numerator and update read (in the
    leaf's compute dtype); ``None`` where the configuration has none."""

    g: jax.Array  # the gradient, with coupled weight decay
    w: jax.Array | None  # the parameters
    q: jax.Array  # the smoothing filter's output
    d: jax.Array | None  # the step's denominator
    ds: _Denominators | None  # the copies of d of a non-constant numerator


def _numerator_terms(
    config: _AutoSgmConfig,
    coef: _StepCoefficients,
    copy: int | None,
    work: _LeafWork,
    old: _LeafState,
) -> tuple[jax.Array, _LeafState]:
    r"""``"max_bound"``, ``"markov"`` and ``"chebyshev"``: ``(terms, state)``, the
    terms whose mean is the leaf's :math:`b_t` and its new numerator states;
    ``copy`` is the :func:`xla_cpu.private_copy` of :math:`\alpha_t` that
    ``"max_bound"``'s sum reads."""
    if config.numerator == "max_bound":
        g_hat = _over(work.g, work.ds.average)
        terms, corr = _max_bound_terms(coef, copy, work.w, g_hat, old.corr)
        return terms, old._replace(corr=corr.astype(old.corr.dtype))
    return _correlation_terms(config, coef, work.g, work.w, work.ds, old)


def _leaf_means(arrays: list[jax.Array], dtype) -> jax.Array:
    # The mean of each array (0 for an empty one) as one vector: the sums
    # stacked, then one division (jnp.mean's sum / n, entry by entry).
    sums = jnp.stack([jnp.sum(x, dtype=dtype).astype(dtype) for x in arrays])
    return sums / jnp.asarray([max(x.size, 1) for x in arrays], dtype)


def _chebyshev_scalar_numerators(
    coef: _StepCoefficients, works: list[_LeafWork], norm_mean, norm_var
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""``"chebyshev_scalar"``: ``(a, E[||v||], E[r^2])``, vectors over the
    leaves, with :math:`a = \alpha_t \min(r, 4 \sigma) / r`, :math:`r = \|v -
    E[\|v\|]\| + \epsilon` and :math:`\sigma = \sqrt{E[r^2]} + \epsilon`."""
    dtype, bn, eps = coef.lr0.dtype, coef.beta_n, coef.eps
    vs = [
        _direction(w.q, w.d, w.w, coef.out_scale, coef.decoupled_decay) for w in works
    ]
    norm = jnp.sqrt(jnp.stack([numerics.squared_norm(v, dtype) for v in vs]))
    mean = bn * norm_mean + (1.0 - bn) * norm
    # Each leaf's sum reads its entry of the mean (xla_cpu.vector_entries).
    centered = zip(vs, xla_cpu.vector_entries(mean))
    dev = jnp.stack(
        [numerics.squared_norm(v - _cast(m, v.dtype), dtype) for v, m in centered]
    )
    dev = jnp.sqrt(dev) + eps
    var = bn * norm_var + (1.0 - bn) * jnp.square(dev)
    sigma = jnp.sqrt(var) + eps
    return coef.lr0 * jnp.minimum(dev, _CLIP_FACTOR * sigma) / dev, mean, var


def _numerators(
    config: _AutoSgmConfig,
    coef: _StepCoefficients,
    state: ScaleByAutoSgmState,
    works: list[_LeafWork],
    news: list[_LeafState],
) -> tuple[jax.Array, list[_LeafState], dict[str, jax.Array]]:
    r"""The numerators :math:`a_t` of a non-constant numerator: ``(a, leaves,
    vectors)``, ``a`` a vector over the leaves, the leaves' new numerator
    states and the new per-leaf scalar fields.

    The scalar math runs once on vectors over the leaves, not in each leaf's
    loops: see :func:`xla_cpu.vector_entries` for why a leaf reads no entry
    of a per-leaf vector but its :math:`a_t`.
    """
    if config.numerator == "chebyshev_scalar":
        a, mean, var = _chebyshev_scalar_numerators(
            coef, works, state.norm_mean, state.norm_var
        )
        return a, news, {"norm_mean": mean, "norm_var": var}
    # Copies of lr0 for the sums of further leaves of one shape (private_copy).
    copies = xla_cpu.sum_copies([w.g for w in works])
    rows = [
        _numerator_terms(config, coef, copy, work, new)
        for copy, work, new in zip(copies, works, news)
    ]
    b = _leaf_means([terms for terms, _ in rows], coef.lr0.dtype)
    if config.numerator != "max_bound":
        b = jnp.maximum(b, _NUMERATOR_FLOOR * coef.lr0)
    # L_t = 0.1 L_{t-1} + 0.9 b_t, the original's EMA0.1.
    a = _NUMERATOR_POLE * state.lr_num + (1.0 - _NUMERATOR_POLE) * b
    return a, [new for _, new in rows], {"lr_num": a}


def _leaf_filters(
    config: _AutoSgmConfig,
    coef: _StepCoefficients,
    grad: jax.Array,
    param: jax.Array | None,
    old: _LeafState,
) -> tuple[_LeafWork, _LeafState]:
    r"""One leaf's filters: ``(work, state)``, with the new ``mu`` and ``nu``.

    Element-wise work runs in float32 at least (complex for complex leaves).
    ``param`` is ``None`` when the configuration does not read it.
    """
    dtypes = (grad.dtype, old.mu.dtype) + (() if param is None else (param.dtype,))
    work = numerics.compute_dtype(*dtypes)
    g = grad.astype(work)
    w = None if param is None else param.astype(work)
    if coef.coupled_decay is not None:
        g = g + _cast(coef.coupled_decay, work) * w
    q, mu = _smoothing_filter(config, coef, old.mu, g)
    new, d, ds = old._replace(mu=mu), None, None
    if config.adaptive:
        nu = _second_moment(coef, old.nu, g)
        new = new._replace(nu=nu.astype(old.nu.dtype))
        if coef.d_scales is None:
            d = _denominator(config, coef, nu, coef.moment_scale)
        else:
            ds = _Denominators(
                *(_denominator(config, coef, nu, s) for s in coef.d_scales)
            )
            d = ds.step
    return _LeafWork(g, w, q, d, ds), new


def _leaf_update(coef: _StepCoefficients, work: _LeafWork, a, dtype) -> jax.Array:
    r"""One leaf's update :math:`\rho_t a_t v_t` in ``dtype`` (without the sign
    flip), for its numerator ``a``."""
    lr = a if coef.rho is None else coef.rho * a
    scale_q = lr if coef.out_scale is None else lr * coef.out_scale
    scale_w = None if coef.decoupled_decay is None else lr * coef.decoupled_decay
    return _direction(work.q, work.d, work.w, scale_q, scale_w).astype(dtype)


def _autosgm_step(
    config: _AutoSgmConfig, coef: _StepCoefficients, state, grads, params, olds
) -> tuple[list[jax.Array], list[_LeafState], dict[str, jax.Array]]:
    """The step of every leaf: ``(updates, leaves, vectors)``, the leaves' new
    states and the new per-leaf scalar fields (``lr`` and the numerator's)."""
    filtered = [
        _leaf_filters(config, coef, g, w, old) for g, w, old in zip(grads, params, olds)
    ]
    works, news = [w for w, _ in filtered], [n for _, n in filtered]
    if coef.d_scales is None:  # the constant numerator: a_t = alpha_t
        a = coef.lr0
        lr = jnp.stack([a if coef.rho is None else coef.rho * a] * len(grads))
        numerators, vectors = [a] * len(grads), {}
    else:
        a, news, vectors = _numerators(config, coef, state, works, news)
        lr = a if coef.rho is None else coef.rho * a
        numerators = xla_cpu.vector_entries(a)
    updates = [
        _leaf_update(coef, work, a_k, g.dtype)
        for work, a_k, g in zip(works, numerators, grads)
    ]
    return updates, news, {**vectors, "lr": lr}


# --- The state: init, and split into leaves and joined back. ------------------------


def _init_state(config: _AutoSgmConfig, params) -> ScaleByAutoSgmState:
    """The state before the first step: zeros, and None for unused fields."""
    _check_complex_leaves(params, config.numerator, config.mu_dtype)
    numerator, mu_dtype = config.numerator, config.mu_dtype

    def zeros(dtype_of):
        return jax.tree.map(lambda p: jnp.zeros_like(p, dtype_of(p.dtype)), params)

    def averages(*names):
        # Numerator averages decay by beta_n (0.9999 by default): bfloat16 could
        # not represent their steps, so they are at least float32.
        return zeros(numerics.widest_float) if numerator in names else None

    def per_leaf(used: bool):  # a vector, not a params-shaped tree (map_params)
        return jnp.zeros([len(jax.tree.leaves(params))], scalar) if used else None

    scalar = numerics.scalar_dtype(params)
    clipped = numerator in ("markov", "chebyshev")
    return ScaleByAutoSgmState(
        count=jnp.zeros([], jnp.int32),
        mu=zeros(lambda dtype: mu_dtype or dtype),
        # Moments of |g| are real, also for complex parameters.
        nu=zeros(numerics.real_dtype) if config.adaptive else None,
        w_sq=averages("markov", "chebyshev"),
        x_mean=averages("markov", "chebyshev"),
        x_var=averages("chebyshev"),
        corr=averages("max_bound", "markov", "chebyshev"),
        norm_mean=per_leaf(numerator == "chebyshev_scalar"),
        norm_var=per_leaf(numerator == "chebyshev_scalar"),
        lr_num=per_leaf(numerator in _READS_PARAMS),
        lr=per_leaf(True),
        # In the step's compute dtype, which its sum reads.
        corr_clip=(
            zeros(lambda dtype: numerics.widest_float(dtype, mu_dtype or dtype))
            if clipped
            else None
        ),
    )


def _split_state(state: ScaleByAutoSgmState, treedef, num: int) -> list[_LeafState]:
    """The leaves' parts of ``state``, in ``treedef``'s leaf order (``None`` for
    the per-leaf scalar fields, which the step reads as vectors)."""

    def column(name: str) -> list:
        value = getattr(state, name)
        if value is None or name in _PER_LEAF_SCALARS:
            return [None] * num
        return treedef.flatten_up_to(value)

    columns = [column(name) for name in _LeafState._fields]
    return [_LeafState(*row) for row in zip(*columns)]


def _joined_state(
    state: ScaleByAutoSgmState,
    treedef,
    leaves: list[_LeafState],
    vectors: dict[str, jax.Array],
    count: jax.Array,
) -> ScaleByAutoSgmState:
    """The new state from the leaves' new parts and the new per-leaf scalar
    fields ``vectors`` (the old state for no leaves)."""
    if not leaves:
        return state._replace(count=optax.safe_increment(state.count))

    def field(name: str, values: tuple):
        if getattr(state, name) is None:
            return None
        if name in _PER_LEAF_SCALARS:
            return vectors[name]
        return treedef.unflatten(values)

    new = _LeafState(*map(field, _LeafState._fields, zip(*leaves)))
    # No leaf reads the old lr: this read keeps its donated buffer in use.
    new = new._replace(lr=xla_cpu.reused_buffer(state.lr, new.lr, count))
    return ScaleByAutoSgmState(optax.safe_increment(state.count), *new)


def scale_by_autosgm(
    learning_rate: optax.ScalarOrSchedule,
    *,
    pole: jax.typing.ArrayLike = 0.9,
    zero: jax.typing.ArrayLike = 0.0,
    gain: jax.typing.ArrayLike | None = None,
    debias: bool = True,
    adaptive: bool = True,
    b2: jax.typing.ArrayLike = 0.999,
    beta_n: jax.typing.ArrayLike = 0.9999,
    numerator: Numerator = "constant",
    eps: jax.typing.ArrayLike = 1e-10,
    eps_in_sqrt: bool = True,
    weight_decay: jax.typing.ArrayLike = 0.0,
    weight_decay_mode: WeightDecayMode = "coupled",
    window: optax.ScalarOrSchedule | None = None,
    mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The AutoSGM step :math:`\rho_t a_t v_t`, without the sign flip.

    The core of :func:`autosgm`: it returns the step *before* the sign flip, like
    optax's ``scale_by_*`` transforms, so
    ``optax.chain(scale_by_autosgm(...), optax.scale_by_learning_rate(1.0))`` is
    :func:`autosgm`. See :func:`autosgm` for the update equations and the
    arguments.

    Args:
      learning_rate: the learning rate :math:`\alpha` > 0 (the original's
        ``lr_init``), or a schedule of the 0-based step count.
      pole: the smoothing filter's pole :math:`\beta` in [0, 1) (``beta_i``).
      zero: the smoothing filter's zero :math:`\gamma` in [0, 1) (``gamma_i``).
      gain: the filters' input gain :math:`\eta` >= 0 (``eta_i``); ``None`` or 0
        means :math:`1 - \beta` (:math:`1 - \beta_2` for the moment filter).
        Debiasing cancels it.
      debias: bias-correct the smoothing and moment filters.
      adaptive: divide by the moment estimate (``aoptlr``).
      b2: the moment filter's pole :math:`\beta_2` in [0, 1) (``beta_a``).
      beta_n: the pole :math:`\beta_n` in [0, 1) of the numerators' averages.
      numerator: ``"constant"``, ``"chebyshev_scalar"``, ``"max_bound"``,
        ``"markov"`` or ``"chebyshev"`` (``num_lrc`` 0 to 4).
      eps: :math:`\epsilon` >= 0.
      eps_in_sqrt: also add :math:`\epsilon` inside the square root
        (``repeat_eps``).
      weight_decay: :math:`\lambda` >= 0 (``wd_cte``).
      weight_decay_mode: ``"coupled"`` (L2, ``wd_lvl=0``) or ``"decoupled"``
        (``wd_lvl=1``).
      window: the window :math:`\rho`, a schedule of the 0-based step count
        (e.g. :func:`garo_optax.window_schedule`) or a number; ``None`` is 1.
      mu_dtype: dtype of the smoothing state; ``None`` uses the parameters'.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> tx = garo_optax.scale_by_autosgm(0.1, numerator="markov", beta_n=0.99)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
      >>> print(f"{optax.tree.get(state, 'lr')[0]:.5f}")
      0.02471
    """
    config = _AutoSgmConfig(
        learning_rate=learning_rate,
        window=window,
        pole=pole,
        zero=zero,
        gain=gain,
        b2=b2,
        beta_n=beta_n,
        eps=eps,
        weight_decay=weight_decay,
        numerator=numerator,
        weight_decay_mode=weight_decay_mode,
        debias=debias,
        adaptive=adaptive,
        eps_in_sqrt=eps_in_sqrt,
        mu_dtype=None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype),
    )
    _check_arguments(config)

    def init_fn(params):
        return _init_state(config, params)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if config.reads_params and params is None:
            raise ValueError(_NO_PARAMS_MSG)
        grads, treedef = jax.tree.flatten(updates)
        num = len(grads)
        params = treedef.flatten_up_to(params) if config.reads_params else [None] * num
        coef = _step_coefficients(config, state.count, state.lr.dtype)
        olds = _split_state(state, treedef, num)
        if not num:
            return updates, _joined_state(state, treedef, [], {}, coef.count)
        steps, leaves, vectors = _autosgm_step(config, coef, state, grads, params, olds)
        new_state = _joined_state(state, treedef, leaves, vectors, coef.count)
        return treedef.unflatten(steps), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def autosgm(
    learning_rate: optax.ScalarOrSchedule,
    *,
    pole: jax.typing.ArrayLike = 0.9,
    zero: jax.typing.ArrayLike = 0.0,
    gain: jax.typing.ArrayLike | None = None,
    debias: bool = True,
    adaptive: bool = True,
    b2: jax.typing.ArrayLike = 0.999,
    beta_n: jax.typing.ArrayLike = 0.9999,
    numerator: Numerator = "constant",
    eps: jax.typing.ArrayLike = 1e-10,
    eps_in_sqrt: bool = True,
    weight_decay: jax.typing.ArrayLike = 0.0,
    weight_decay_mode: WeightDecayMode = "coupled",
    window: optax.ScalarOrSchedule | None = None,
    mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AutoSGM: lowpass-filtered gradients and an iteration-dependent learning rate.

    Momentum is a first-order lowpass filter on the gradient with a pole
    :math:`\beta` and a zero :math:`\gamma`; the learning rate is a numerator
    :math:`a_t` over a moment-type denominator :math:`d_t`, times a window
    :math:`\rho_t`. The defaults are Adam with :math:`\epsilon` inside and outside
    the square root. Special cases (each checked against optax in the tests):

    * ``adaptive=False, pole=0``: :func:`optax.sgd`;
    * ``adaptive=False, gain=1, debias=False``: heavy ball,
      ``optax.sgd(lr, momentum=pole)``; with ``zero = pole / (1 + pole)``:
      ``optax.sgd(lr, momentum=pole, nesterov=True)``;
    * ``adaptive=False`` with debias: bias-corrected EMA momentum,
      ``chain(optax.ema(pole, debias=True), scale(-lr))``;
    * ``numerator="constant"``: ``optax.adam(lr, b1=pole, b2=b2, eps=eps,
      eps_root=eps)`` (``eps_root=0`` with ``eps_in_sqrt=False``); with
      ``weight_decay_mode="decoupled"`` and ``weight_decay = mu / (1 - pole)``:
      ``optax.adamw(..., weight_decay=mu)``; coupled: L2-Adam;
    * a window from :func:`garo_optax.window_schedule`: cosine or polynomial
      decay (within the first frame; windows restart every ``length`` steps).

    Let :math:`\alpha_t` (at the 0-based count :math:`t - 1`), :math:`\beta`,
    :math:`\gamma`, :math:`\eta`, :math:`\beta_2`, :math:`\epsilon`,
    :math:`\lambda` and :math:`\rho_t` represent the arguments
    ``learning_rate``, ``pole``, ``zero``, ``gain``, ``b2``, ``eps``,
    ``weight_decay`` and ``window``, :math:`w_{t-1}` the parameters and
    :math:`g_t` the gradient at step :math:`t = 1, 2, \dots` Per element,

    .. math::
      \begin{align*}
        \tilde g_t &= g_t + \lambda w_{t-1} \quad (\text{coupled; else }
          \tilde g_t = g_t) \\
        \nu_t &\leftarrow \beta_2 \nu_{t-1} + \eta_2 \tilde g_t^2, \qquad
        d_t = \sqrt{\kappa_2 \nu_t + \epsilon} + \epsilon
          \quad (d_t = 1 \text{ if not adaptive}) \\
        q_t &= s_{t-1} + \eta \tilde g_t, \qquad
        s_t \leftarrow \beta q_t - \gamma \eta \tilde g_t, \qquad
        m_t = \kappa_1 q_t / (1 - \gamma) \\
        v_t &= m_t / d_t + \tfrac{1 - \beta}{1 - \gamma} \lambda w_{t-1}
          \quad (\text{decoupled only}) \\
        w_t &= w_{t-1} - \rho_t a_t v_t ,
      \end{align*}

    with :math:`\eta_2 = 1 - \beta_2` when ``gain`` is ``None`` (and
    :math:`\eta = 1 - \beta`), the debiasing factors
    :math:`\kappa_1 = (1 - \beta) / (\eta (1 - \beta^t))` and
    :math:`\kappa_2 = (1 - \beta_2) / (\eta_2 (1 - \beta_2^t))` (1 without
    ``debias``), and no :math:`+\epsilon` inside the root without
    ``eps_in_sqrt``. The numerator :math:`a_t` is one scalar per leaf, with
    :math:`\hat g = \tilde g / d`, :math:`x = w_{t-1} \hat g`,
    :math:`\ell = \alpha_t / (1 + \omega)`,
    :math:`T(u) = \bar u (1 - \bar u^2)^2` with :math:`\bar u = \min(u, 1)`,
    :math:`E_{\beta_n}[z]_t = \beta_n E_{t-1} + (1 - \beta_n) z_t` (zero-started,
    not debiased), :math:`S_{\beta_n}[z]_t = \beta_n S_{t-1} + z_t`, means and
    norms over the leaf, and :math:`a_t = L_t = 0.1 L_{t-1} + 0.9 b_t` for the
    last three:

    * ``"constant"``: :math:`a_t = \alpha_t`;
    * ``"chebyshev_scalar"``: :math:`\mu = E[\|v\|]`,
      :math:`r = \|v - \mu\| + \epsilon`,
      :math:`\sigma = \sqrt{E[r^2]} + \epsilon`,
      :math:`a_t = \alpha_t \min(r, 4 \sigma) / r \le \alpha_t`;
    * ``"max_bound"``: :math:`b_t = \operatorname{mean}
      \min(E[\alpha_t (w^2 + \hat g^2)], \alpha_t)`;
    * ``"markov"``: :math:`\omega = \beta_n E[w^2]`,
      :math:`h = x \min(|x| + \epsilon, 4 E[|x| + \epsilon]) / (|x| + \epsilon)`;
    * ``"chebyshev"``: :math:`\omega = E[w^2]`, :math:`r = |x - E[x]| + \epsilon`,
      :math:`h = x \min(r, \sqrt{E[r^2]} + \epsilon) / r`;

    and for the last two :math:`c = S[\ell h]`,
    :math:`b_t = \max(\operatorname{mean} \operatorname{clip}(|c|, T(d)\,\ell,
    \alpha_t (1 + \omega)), 0.01\,\alpha_t)`. The floor :math:`0.01\,\alpha_t`
    is not in the original: there :math:`x = 0` on an all-zero leaf and
    :math:`T(d) = 0` for :math:`d \ge 1` (and :math:`T(d) \to 0` as
    :math:`d \to 0`), so a zero-initialized leaf (a bias) would never move,
    whatever the loss scale. On other leaves it only lifts the first steps of
    the warm-up, where :math:`b_t` is still small.

    The state field ``lr`` holds :math:`\rho_t a_t` of each leaf, a vector with
    one entry per leaf in ``jax.tree.leaves(params)`` order (zero before the
    first step); ``jax.tree.unflatten(jax.tree.structure(params), lr)`` makes it a
    tree. Memory: two parameter-sized states (``mu``, and ``nu`` when
    adaptive), plus one for
    ``"max_bound"``, four for ``"markov"`` and five for ``"chebyshev"`` (one of
    them, ``corr_clip``, holds the terms whose mean is :math:`b_t`: it buys a
    faster step on XLA:CPU); the ``"constant"`` numerator costs what
    :func:`optax.adam` costs per step.
    ``params`` are required with weight decay and with the ``"max_bound"``,
    ``"markov"`` and ``"chebyshev"`` numerators (and under
    :func:`optax.inject_hyperparams`, where ``weight_decay`` is an array whose
    value is not known when the transform is built). No extra arguments are read.
    The numerator averages are kept in float32 at least, whatever the parameters'
    dtype. The per-leaf scalar fields (``lr``, ``lr_num``, ``norm_mean``,
    ``norm_var``) are such vectors, not trees shaped like the parameters, so
    :func:`optax.tree.map_params` treats them as non-parameters (replicated in
    the multi-device recipe). Next to another transform with an ``lr`` field (two
    AutoSGM groups in :func:`optax.partition`, or CLARA in the same chain), read
    it with ``optax.tree.get(state, "lr", filtering=...)`` or from the sub-state.

    .. note::
      Differences from the PyTorch original (version D): the original keeps a
      master copy of the parameters and shifts entries with
      :math:`|w| < \epsilon` by :math:`+\epsilon` at its first step; this
      transform emits updates and does not shift parameters. The difference is
      not bounded by :math:`\epsilon`: the shift lets an all-zero leaf of
      ``"markov"`` or ``"chebyshev"`` creep up from :math:`\epsilon` (1e-9 after
      500 steps at lr 1e-3), while here the numerator floor above moves it. The
      original's scalar statistics are float32 even
      for float64 parameters; here they are float32, or float64 when a parameter
      leaf is float64. The original's per-tensor step counters are one global
      count (the same when every leaf gets a gradient every step). A schedule
      ``learning_rate`` plays the role of ``lr_init`` at each step, inside the
      numerators too. The original ignores ``num_lrc`` without ``aoptlr``; here a
      non-constant ``numerator`` with ``adaptive=False`` raises ``ValueError``
      (:func:`from_asgm_config` keeps the original's behaviour).

    Complex parameters are supported as in :func:`optax.adam` (pass the
    conjugate of JAX's gradient, as for any optax optimizer): squares are
    :math:`|z|^2 = z \bar z`, so ``nu``, :math:`d_t`, the numerator statistics
    and ``lr`` are real, and the correlation of ``"markov"`` and ``"chebyshev"``
    is :math:`x = \operatorname{Re}(\bar w \hat g)`, the inner product of
    :math:`\mathbb{C}` read as :math:`\mathbb{R}^2`. ``"chebyshev_scalar"``
    subtracts a norm from every entry, which has no complex form: ``init``
    raises ``ValueError`` naming the first complex leaf; so does a real
    ``mu_dtype`` for a complex leaf (and a complex one for a real leaf).

    A non-finite gradient is not skipped: it reaches the moments and the
    numerator states, as in :func:`optax.adam`, and that step's update is
    non-finite. Wrap the optimizer in :func:`optax.apply_if_finite` to skip such
    steps (the state then stays that of the run without them).

    Args:
      learning_rate: the learning rate :math:`\alpha` > 0 (``lr_init``), or a
        schedule of the 0-based step count. With a non-constant numerator it is
        the trust-region constant bounding the numerator.
      pole: the smoothing filter's pole :math:`\beta` in [0, 1) (``beta_i``).
      zero: the smoothing filter's zero :math:`\gamma` in [0, 1) (``gamma_i``);
        0 is heavy ball, :math:`\beta / (1 + \beta)` Nesterov.
      gain: the filters' input gain :math:`\eta` >= 0 (``eta_i``); ``None`` or 0
        means :math:`1 - \beta` (and :math:`1 - \beta_2` for the moment filter).
        Debiasing cancels it, so it only matters with ``debias=False``.
      debias: bias-correct the smoothing and moment filters (exact only for
        ``zero=0``, as in the original).
      adaptive: divide by the moment estimate :math:`d_t` (``aoptlr``).
      b2: the moment filter's pole :math:`\beta_2` in [0, 1) (``beta_a``).
      beta_n: the pole :math:`\beta_n` in [0, 1) of the numerators' long-memory
        averages.
      numerator: ``"constant"``, ``"chebyshev_scalar"``, ``"max_bound"``,
        ``"markov"`` or ``"chebyshev"`` (the original's ``num_lrc`` 0 to 4). A
        non-constant numerator needs ``adaptive=True``.
      eps: :math:`\epsilon` >= 0, added after the square root and used in the
        numerators' magnitudes.
      eps_in_sqrt: also add :math:`\epsilon` inside the square root
        (``repeat_eps``).
      weight_decay: :math:`\lambda` >= 0 (``wd_cte``).
      weight_decay_mode: ``"coupled"`` adds :math:`\lambda w` to the gradient
        (``wd_lvl=0``); ``"decoupled"`` adds
        :math:`\frac{1 - \beta}{1 - \gamma} \lambda w` to the step direction
        (``wd_lvl=1``).
      window: the window :math:`\rho` >= 0 multiplying the step, a schedule of
        the 0-based step count (:func:`garo_optax.window_schedule`) or a number;
        ``None`` means 1.
      mu_dtype: dtype of the smoothing state ``mu``; ``None`` uses the
        parameters' dtypes.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import garo_optax
      >>> f = lambda x: jnp.sum(x ** 2)
      >>> solver = garo_optax.autosgm(learning_rate=0.1, zero=0.9 / 1.9)
      >>> params = jnp.array([1., 2., 3.])
      >>> opt_state = solver.init(params)
      >>> for _ in range(3):
      ...   grad = jax.grad(f)(params)
      ...   updates, opt_state = solver.update(grad, opt_state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.3f}")
      9.182

    References:
      Somefun et al, `AUTOSGM: A Unified Lowpass Regularization Framework for
      Accelerated Learning <https://github.com/somefunAgba/autosgm>`_, ICASSP 2024
    """
    return optax.chain(
        scale_by_autosgm(
            learning_rate,
            pole=pole,
            zero=zero,
            gain=gain,
            debias=debias,
            adaptive=adaptive,
            b2=b2,
            beta_n=beta_n,
            numerator=numerator,
            eps=eps,
            eps_in_sqrt=eps_in_sqrt,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            window=window,
            mu_dtype=mu_dtype,
        ),
        optax.scale_by_learning_rate(1.0),
    )


def _unpack(name: str, value: Any, sizes: tuple[int, ...]) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) not in sizes:
        allowed = " or ".join(str(s) for s in sizes)
        raise ValueError(f"{name} must be a tuple of {allowed} elements, got {value!r}")
    return tuple(value)


def _check_code(name: str, value: Any, allowed: tuple[int, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        ok = False
    else:
        ok = int(value) in allowed
    if not ok:
        choices = ", ".join(str(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return int(value)


def _window_from_rc_cfg(rc_cfg) -> optax.Schedule | None:
    rcm, inseq, floor, order, m, tau, spe, cfact, flat_top = _unpack(
        "rc_cfg", rc_cfg, (9,)
    )
    rcm = _check_code("rc_cfg rcm", rcm, tuple(range(len(schedules.SHAPES) + 1)))
    if rcm == 0:
        return None  # rho = 1; the original ignores the other fields.
    inseq = _check_code("rc_cfg inseq", inseq, (0, 1))
    m = _check_code("rc_cfg m", m, (0, 1))
    for name, value in (("tau", tau), ("spe", spe), ("cfact", cfact)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value < 0
        ):
            raise ValueError(f"rc_cfg {name} must be an integer >= 0, got {value!r}")
    tau, spe, cfact = int(tau), int(spe), int(cfact)
    if tau * spe < 2:
        raise ValueError(
            f"rc_cfg needs tau * spe >= 2 for a window, got tau={tau}, spe={spe}"
        )
    if cfact == 0 and tau <= 1:
        raise ValueError(f"rc_cfg with cfact=0 needs tau >= 2, got tau={tau}")
    if cfact == 0 and inseq == 1:
        raise ValueError(
            "rc_cfg with cfact=0 (epoch mode) and inseq=1 (Kronecker sequence) is "
            "not supported: the original's behaviour there is unspecified"
        )
    validate.check_interval("rc_cfg e", flat_top, 0.0, 1.0)
    if flat_top == 1:
        return None  # The original returns rho = 1 at every step.
    length = {0: tau, 2: spe}.get(cfact, tau * spe)
    window = schedules.window_schedule(
        schedules.SHAPES[rcm - 1],
        length=length,
        floor=floor,
        order=order,
        mode="half" if m == 1 else "full",
        flat_top=flat_top,
        sub_shapes=cfact if cfact >= 3 else 1,
        sequence="kronecker" if inseq == 1 else "uniform",
        normalization="original",
    )
    if cfact != 0:
        return window

    def staircase(count: jax.typing.ArrayLike) -> jax.Array:
        # The original's epoch counter advances every tau steps (instead of every
        # spe steps), so the window holds each value for tau steps.
        return window(jnp.asarray(count) // tau)

    return staircase


def from_asgm_config(
    *,
    lr_cfg: tuple = (True, 1e-3, 0),
    beta_cfg: tuple = (0.9999, 0.999, 0.9, 0.0, 0.0, True),
    rc_cfg: tuple = (0, 0, 0, 2, 1, 1000, 1, 1, 0),
    wd_cfg: tuple = (0.0, 0),
    eps_cfg: tuple = (1e-10, True),
    miscs: tuple = (1,),
) -> optax.GradientTransformationExtraArgs:
    r"""Builds :func:`autosgm` from the PyTorch original's configuration tuples.

    For porting a configuration of the original ``AutoSGM`` optimizer (version D,
    December 2025) unchanged. The defaults are the original's. The tuples map to
    :func:`autosgm`'s arguments as follows:

    * ``lr_cfg = (aoptlr, lr_init, num_lrc)``: ``adaptive``, ``learning_rate``,
      ``numerator`` (``num_lrc`` 0 to 4 is ``"constant"``,
      ``"chebyshev_scalar"``, ``"max_bound"``, ``"markov"``, ``"chebyshev"``;
      ignored, as in the original, when ``aoptlr`` is false);
    * ``beta_cfg = (beta_n, beta_a, beta_i, gamma_i, eta_i, debias)``:
      ``beta_n``, ``b2``, ``pole``, ``zero``, ``gain`` (``eta_i = 0`` is
      ``None``), ``debias``;
    * ``rc_cfg = (rcm, inseq, x, n, m, tau, spe, cfact, e)``: the ``window``,
      ``None`` for ``rcm = 0``, else :func:`garo_optax.window_schedule` with the
      shape ``rcm`` (1 to 6: ``"raised_cosine"``, ``"polynomial"``,
      ``"exponential"``, ``"simple_polynomial"``, ``"logistic"``,
      ``"late_logistic"``), ``floor=x``, ``order=n``, ``mode`` ``"half"``
      (``m = 1``) or ``"full"`` (``m = 0``), ``flat_top=e``, ``sequence``
      ``"uniform"`` (``inseq = 0``) or ``"kronecker"`` (``inseq = 1``), the
      original's normalization, and a frame ``length`` of ``tau * spe``
      (``cfact = 1``), ``spe`` (``cfact = 2``) or ``tau * spe`` with
      ``sub_shapes=cfact`` (``cfact >= 3``). ``cfact = 0`` reproduces the
      original's epoch-mode quirk: ``length = tau`` and each value held for
      ``tau`` steps (a staircase), because the original's epoch counter
      advances every ``tau`` steps rather than every ``spe``; from the second
      frame on, the staircase restarts at the window's first value (the closed
      form ``shape(((k - 1) mod L) / L)``), where a literal reading of the
      original's frame-advance rule would evaluate the shape outside [0, 1].
      ``e = 1`` is a window of 1;
    * ``wd_cfg = (wd_cte, wd_lvl)``: ``weight_decay`` and
      ``weight_decay_mode`` (``"coupled"`` for ``wd_lvl = 0``, else
      ``"decoupled"``, scaled by ``(1 - beta_i) / (1 - gamma_i)`` as in the
      original: AdamW's ``mu`` is ``wd_cte = mu (1 - gamma_i) / (1 - beta_i)``);
    * ``eps_cfg = (eps, repeat_eps)``: ``eps``, ``eps_in_sqrt`` (a 1-tuple keeps
      ``repeat_eps=True``);
    * ``miscs = (per_lay,)``: only ``per_lay = 1`` (per-tensor numerators).

    Deviations from the original, besides those listed in :func:`autosgm`:

    * no master weights: parameters with :math:`|w| < \epsilon` are not shifted
      by :math:`+\epsilon` at the first step, and external edits of the
      parameters are kept (the original overwrites them with its master copy);
    * ``miscs = (0,)`` (element-wise numerators) raises ``ValueError``;
    * ``cfact = 0`` with ``inseq = 1`` raises ``ValueError`` (unspecified);
    * the window checks (``tau * spe >= 2``; ``tau >= 2`` when ``cfact = 0``)
      run only when ``rcm != 0``, since the original ignores ``rc_cfg`` then;
    * ``maximize`` is not a configuration here: chain ``optax.scale(-1.0)``
      instead; the Huber/Chebyshev constant ``cf`` is fixed at 4 as in the
      original's default; complex parameters are handled as in
      :func:`autosgm` (the original uses their real part).

    Args:
      lr_cfg: ``(aoptlr, lr_init, num_lrc)``.
      beta_cfg: ``(beta_n, beta_a, beta_i, gamma_i, eta_i, debias)``.
      rc_cfg: ``(rcm, inseq, x, n, m, tau, spe, cfact, e)``.
      wd_cfg: ``(wd_cte, wd_lvl)``.
      eps_cfg: ``(eps, repeat_eps)`` or ``(eps,)``.
      miscs: ``(per_lay,)``; only ``(1,)`` is supported.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object: :func:`autosgm`
      with the mapped arguments (signed updates).

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> solver = garo_optax.from_asgm_config(
      ...     lr_cfg=(True, 0.125, 3), beta_cfg=(0.99, 0.999, 0.9, 0.0, 0.0, True))
      >>> params = jnp.array([1.0])
      >>> updates, _ = solver.update(params, solver.init(params), params)
      >>> print(f"{optax.apply_updates(params, updates)[0]:.5f}")
      0.99554

    References:
      Somefun et al, `AUTOSGM: A Unified Lowpass Regularization Framework for
      Accelerated Learning <https://github.com/somefunAgba/autosgm>`_, ICASSP 2024
    """
    aoptlr, lr_init, num_lrc = _unpack("lr_cfg", lr_cfg, (3,))
    beta_n, beta_a, beta_i, gamma_i, eta_i, debias = _unpack("beta_cfg", beta_cfg, (6,))
    wd_cte, wd_lvl = _unpack("wd_cfg", wd_cfg, (2,))
    eps_cfg = _unpack("eps_cfg", eps_cfg, (1, 2))
    (per_lay,) = _unpack("miscs", miscs, (1,))
    if per_lay != 1:
        raise ValueError(
            f"miscs=(per_lay,) with per_lay={per_lay!r} is not supported: only "
            "per_lay=1 (one numerator per tensor) is implemented"
        )
    if aoptlr:
        num_lrc = _check_code("lr_cfg num_lrc", num_lrc, tuple(range(len(NUMERATORS))))
        numerator = NUMERATORS[num_lrc]
    else:
        numerator = "constant"  # The original ignores num_lrc without aoptlr.
    return autosgm(
        lr_init,
        pole=beta_i,
        zero=gamma_i,
        gain=None if _is_static_zero(eta_i) else eta_i,
        debias=bool(debias),
        adaptive=bool(aoptlr),
        b2=beta_a,
        beta_n=beta_n,
        numerator=numerator,
        eps=eps_cfg[0],
        eps_in_sqrt=bool(eps_cfg[1]) if len(eps_cfg) == 2 else True,
        weight_decay=wd_cte,
        weight_decay_mode="coupled" if wd_lvl == 0 else "decoupled",
        window=_window_from_rc_cfg(rc_cfg),
    )
