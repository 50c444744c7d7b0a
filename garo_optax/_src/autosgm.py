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

from garo_optax._src import numerics, schedules, validate

Numerator = Literal["constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev"]
WeightDecayMode = Literal["coupled", "decoupled"]

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


def _is_concrete(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_static_zero(value: Any) -> bool:
    # A subnormal double is 0 in float32, where it would divide (the pole).
    return _is_concrete(value) and validate.float32_value(value) == 0


def _tukey(u: jax.Array) -> jax.Array:
    # Tukey's biweight u (1 - u^2)^2 on u clipped to [0, 1].
    u = jnp.minimum(u, 1.0)
    return u * jnp.square(1.0 - u * u)


def _real_dtype(dtype) -> jnp.dtype:
    # complex64 -> float32, complex128 -> float64; a real dtype is kept.
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if _is_complex(dtype) else dtype


def _is_complex(dtype) -> bool:
    return jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating)


def _compute_dtypes(*dtypes) -> tuple[jnp.dtype, jnp.dtype]:
    # (real, leaf) compute dtypes: float32 or float64, and its complex twin when a
    # dtype is complex. Not jnp.promote_types: it raises under strict promotion.
    real = numerics.widest_float(*map(_real_dtype, dtypes))
    if any(map(_is_complex, dtypes)):
        return real, jnp.dtype(jnp.complex128 if real.itemsize > 4 else jnp.complex64)
    return real, real


def _abs_sq(x: jax.Array) -> jax.Array:
    # |x|^2 = x conj(x), real (jnp.square(x) would square the complex number).
    return (x.conj() * x).real if jnp.iscomplexobj(x) else jnp.square(x)


def _real_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    # Re(conj(a) b) elementwise, the inner product of C read as R^2; a b if real.
    if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        return a.real * b.real + a.imag * b.imag
    return a * b


def _over(x: jax.Array, d: jax.Array) -> jax.Array:
    # x / d for a real d; a complex x is divided part by part (strict promotion).
    if jnp.iscomplexobj(x):
        return jax.lax.complex(x.real / d, x.imag / d)
    return x / d


def _leaf_mean(x: jax.Array, dtype) -> jax.Array:
    if x.size == 0:
        return jnp.zeros([], dtype)
    return jnp.mean(x, dtype=dtype).astype(dtype)


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


def _check_arguments(
    learning_rate,
    pole,
    zero,
    gain,
    adaptive,
    b2,
    beta_n,
    numerator,
    eps,
    weight_decay,
    weight_decay_mode,
    window,
) -> None:
    if not callable(learning_rate):
        validate.check_positive("learning_rate", learning_rate)
    validate.check_interval("pole", pole, 0.0, 1.0, high_closed=False)
    validate.check_interval("zero", zero, 0.0, 1.0, high_closed=False)
    if gain is not None:
        validate.check_interval("gain", gain, 0.0, None)
    validate.check_interval("b2", b2, 0.0, 1.0, high_closed=False)
    validate.check_interval("beta_n", beta_n, 0.0, 1.0, high_closed=False)
    validate.check_choice("numerator", numerator, NUMERATORS)
    validate.check_interval("eps", eps, 0.0, None)
    validate.check_interval("weight_decay", weight_decay, 0.0, None)
    validate.check_choice("weight_decay_mode", weight_decay_mode, _WEIGHT_DECAY_MODES)
    if window is not None and not callable(window):
        validate.check_interval("window", window, 0.0, None)
    if not adaptive and numerator != "constant":
        raise ValueError(
            f"numerator={numerator!r} needs adaptive=True (the numerator estimators "
            "use the moment estimator); with adaptive=False the numerator must be "
            "'constant'"
        )


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
    _check_arguments(
        learning_rate,
        pole,
        zero,
        gain,
        adaptive,
        b2,
        beta_n,
        numerator,
        eps,
        weight_decay,
        weight_decay_mode,
        window,
    )
    schedule = numerics.as_schedule(learning_rate)
    window_fn = None if window is None else numerics.as_schedule(window)
    if mu_dtype is not None:
        mu_dtype = jax.dtypes.canonicalize_dtype(mu_dtype)

    # Static special cases, decided on concrete Python numbers only: traced
    # hyperparameters (inject_hyperparams) take the general path, which stores the
    # same state.
    zero_is_zero = _is_static_zero(zero)
    pole_is_zero = _is_static_zero(pole)
    gain_is_default = gain is None or _is_static_zero(gain)
    no_weight_decay = _is_static_zero(weight_decay)
    coupled = weight_decay_mode == "coupled" and not no_weight_decay
    decoupled = weight_decay_mode == "decoupled" and not no_weight_decay
    reads_params = numerator in _READS_PARAMS or not no_weight_decay
    uses_lr_num = numerator in _READS_PARAMS

    def init_fn(params):
        _check_complex_leaves(params, numerator, mu_dtype)
        leaves = jax.tree.leaves(params)
        sdt = numerics.widest_float(*(_real_dtype(p.dtype) for p in leaves))

        def zeros(dtype=None):
            return jax.tree.map(lambda p: jnp.zeros_like(p, dtype or p.dtype), params)

        def real_zeros():  # moments of |g| are real, also for complex parameters
            return jax.tree.map(
                lambda p: jnp.zeros_like(p, _real_dtype(p.dtype)), params
            )

        def scalars():  # one entry per leaf: not a params-shaped tree (map_params)
            return jnp.zeros([len(leaves)], sdt)

        def leaf_state(*names):
            # Numerator averages decay by beta_n (0.9999 by default): bfloat16
            # could not represent their steps, so they are at least float32.
            if numerator not in names:
                return None
            return jax.tree.map(
                lambda p: jnp.zeros_like(p, _compute_dtypes(p.dtype)[0]), params
            )

        def clip_state():  # in the step's compute dtype, which its sum reads
            def clip(p):
                return jnp.zeros_like(
                    p, _compute_dtypes(p.dtype, mu_dtype or p.dtype)[0]
                )

            return jax.tree.map(clip, params)

        return ScaleByAutoSgmState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros(mu_dtype),
            nu=real_zeros() if adaptive else None,
            w_sq=leaf_state("markov", "chebyshev"),
            x_mean=leaf_state("markov", "chebyshev"),
            x_var=leaf_state("chebyshev"),
            corr=leaf_state("max_bound", "markov", "chebyshev"),
            norm_mean=scalars() if numerator == "chebyshev_scalar" else None,
            norm_var=scalars() if numerator == "chebyshev_scalar" else None,
            lr_num=scalars() if uses_lr_num else None,
            corr_clip=clip_state() if numerator in ("markov", "chebyshev") else None,
            lr=scalars(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if reads_params and params is None:
            raise ValueError(_NO_PARAMS_MSG)
        grads, treedef = jax.tree.flatten(updates)
        num = len(grads)

        def leaves(tree):
            return [None] * num if tree is None else treedef.flatten_up_to(tree)

        ws = leaves(params if reads_params else None)
        mus, nus = leaves(state.mu), leaves(state.nu)
        w_sqs, x_means = leaves(state.w_sq), leaves(state.x_mean)
        x_vars, corrs = leaves(state.x_var), leaves(state.corr)
        corr_clips = leaves(state.corr_clip)
        sdt = state.lr.dtype

        def scalar(x):
            return jnp.asarray(x, sdt)

        count = optax.safe_increment(state.count)
        t = count.astype(sdt)
        lr0 = scalar(schedule(state.count))
        rho = None if window_fn is None else scalar(window_fn(state.count))
        eps_ = scalar(eps)

        # Smoothing filter F(beta, gamma, eta): q_t = s_{t-1} + eta x_t,
        # y_t = q_t / (1 - gamma), s_t = beta q_t - gamma eta x_t. The state is
        # s_t / beta~ with beta~ = beta (1 if beta = 0), i.e. q_t when gamma = 0.
        beta = scalar(pole)
        if debias or gain_is_default:
            in_gain = 1.0 - beta  # Debiasing cancels any gain.
        elif _is_concrete(gain):
            in_gain = scalar(gain)
        else:
            in_gain = jnp.where(scalar(gain) == 0, 1.0 - beta, scalar(gain))
        out_scale = 1.0 / (1.0 - beta**t) if debias else None
        if not zero_is_zero:
            gamma = scalar(zero)
            if _is_concrete(pole):
                beta_state = scalar(1.0 if pole_is_zero else pole)
            else:
                beta_state = jnp.where(beta == 0, 1.0, beta)
            state_gain = (beta - gamma) * in_gain / beta_state
            zero_scale = 1.0 / (1.0 - gamma)
            out_scale = zero_scale if out_scale is None else out_scale * zero_scale

        if adaptive:
            beta2 = scalar(b2)
            if debias or gain_is_default:
                moment_gain = 1.0 - beta2
            elif _is_concrete(gain):
                moment_gain = scalar(gain)
            else:
                moment_gain = jnp.where(scalar(gain) == 0, 1.0 - beta2, scalar(gain))
            moment_scale = 1.0 / (1.0 - beta2**t) if debias else None

        lam = None if no_weight_decay else scalar(weight_decay)
        if decoupled:
            # The original scales decoupled decay by (1 - beta) / (1 - gamma).
            wd_scale = lam * (1.0 - beta) / (1.0 - scalar(zero))
        if numerator != "constant":
            bn = scalar(beta_n)
            # XLA:CPU fuses each output array into its own loop and stores an
            # expensive value (a root, a quotient) that several loops read in a
            # temporary array, which costs more than recomputing it: every step
            # allocates it afresh (a page fault per 4 KiB) and writes and reads it
            # back. Each consumer of d therefore scales the moment by its own copy
            # of kappa_2, copies the optimization barrier keeps XLA from merging,
            # so that no two loops share the root.
            d_scales = jax.lax.optimization_barrier(
                (scalar(1.0 if moment_scale is None else moment_scale),) * 5
            )

        new = {k: [] for k in ScaleByAutoSgmState._fields}
        out = []
        for i in range(num):
            g_in, w, mu = grads[i], ws[i], mus[i]
            dtypes = [g_in.dtype, mu.dtype] + ([] if w is None else [w.dtype])
            # rd: the statistics' dtype; cd: the leaf's (complex for complex leaves).
            rd, cd = _compute_dtypes(*dtypes)

            def c(x, cd=cd):  # a scalar in the leaf's compute dtype
                return x.astype(cd) if isinstance(x, jax.Array) else x

            def r(x, rd=rd):  # a scalar in the statistics' (real) dtype
                return x.astype(rd) if isinstance(x, jax.Array) else x

            g = g_in.astype(cd)
            if w is not None:
                w = w.astype(cd)
            if coupled:
                g = g + c(lam) * w

            # Moment estimator and denominator d.
            d = None
            if adaptive:
                nu = nus[i]
                nu_new = r(beta2) * nu.astype(rd) + r(moment_gain) * _abs_sq(g)
                new["nu"].append(nu_new.astype(nu.dtype))

                def denominator(scale, nu_new=nu_new, rd=rd):
                    p = nu_new if scale is None else r(scale, rd) * nu_new
                    if eps_in_sqrt:
                        p = p + r(eps_, rd)
                    return jnp.sqrt(p) + r(eps_, rd)

                if numerator == "constant":
                    d = denominator(moment_scale)
                else:
                    d = denominator(d_scales[0])  # the step's own copy

            # Smoothing filter: q (the filter output before 1/(1-gamma) and debias).
            mu_c = mu.astype(cd)
            if zero_is_zero and pole_is_zero:
                q = c(in_gain) * g
                mu_new = mu  # s_t = 0 for a zero pole and zero.
            elif zero_is_zero:
                q = c(beta) * mu_c + c(in_gain) * g
                mu_new = q
            else:
                mu_new = c(beta) * mu_c + c(state_gain) * g
                if _is_concrete(pole) and not pole_is_zero and numerator != "constant":
                    # q = mu + eta g from the new state (beta~ = beta here): the
                    # step, which waits for the numerator, then reads mu_new, so
                    # mu is updated in place instead of copied first.
                    q = mu_new + c(gamma * in_gain / beta) * g
                else:
                    q = c(beta_state) * mu_c + c(in_gain) * g
            new["mu"].append(mu_new.astype(mu.dtype))

            def direction(scale_q, scale_w, q=q, d=d, w=w, cd=cd):
                # scale_q q / d + scale_w w, without a materialized copy of v.
                v = q if scale_q is None else c(scale_q, cd) * q
                if d is not None:
                    v = _over(v, d)
                if scale_w is not None:
                    v = v + c(scale_w, cd) * w
                return v

            # Numerator a (a per-leaf scalar).
            if numerator == "constant":
                a = lr0
            elif numerator == "chebyshev_scalar":
                v = direction(out_scale, wd_scale if decoupled else None)
                norm = jnp.sqrt(numerics.squared_norm(v, sdt))
                mean = bn * state.norm_mean[i] + (1.0 - bn) * norm
                dev = jnp.sqrt(numerics.squared_norm(v - c(mean), sdt)) + eps_
                var = bn * state.norm_var[i] + (1.0 - bn) * jnp.square(dev)
                sigma = jnp.sqrt(var) + eps_
                a = lr0 * jnp.minimum(dev, _CLIP_FACTOR * sigma) / dev
                new["norm_mean"].append(mean)
                new["norm_var"].append(var)
            else:
                # Each loop below (one per state array, then the sum) computes the
                # quotient x = w g / d with its own d (see d_scales).
                # The statistics are real: |.|^2 and Re(conj(w) g / d) for
                # complex leaves.
                bn_c, lr0_c, rest = r(bn), r(lr0), r(1.0 - bn)
                corr = corrs[i]

                def ratio(k, g=g):  # g / d with the k-th copy of d
                    return _over(g, denominator(d_scales[k]))

                if numerator == "max_bound":
                    corr_new = bn_c * corr.astype(rd) + r((1.0 - bn) * lr0) * (
                        _abs_sq(w) + _abs_sq(ratio(1))
                    )
                    # XLA:CPU sums in a library (YNNPACK) fusion that stores a
                    # broadcast scalar which another leaf of the same shape also
                    # uses as a full array: sign(t + i) = 1 makes lr0 this leaf's.
                    o = jnp.minimum(corr_new, r(lr0 * jnp.sign(t + i)))
                else:
                    w_sq = w_sqs[i]
                    w_sq_new = bn_c * w_sq.astype(rd) + rest * _abs_sq(w)
                    new["w_sq"].append(w_sq_new.astype(w_sq.dtype))
                    # 1 + omega; markov: omega is the post-state beta_n EMA.
                    one_omega = 1.0 + (
                        bn_c * w_sq_new if numerator == "markov" else w_sq_new
                    )
                    x_mean = x_means[i]
                    x = _real_dot(w, ratio(2))  # w g / d in the correlation's loop
                    if numerator == "markov":
                        mag = jnp.abs(_real_dot(w, ratio(1))) + r(eps_)
                        x_mean_new = bn_c * x_mean.astype(rd) + rest * mag
                        mag = jnp.abs(x) + r(eps_)
                        h = x * jnp.minimum(mag, _CLIP_FACTOR * x_mean_new) / mag
                    else:
                        x_mean_new = bn_c * x_mean.astype(rd) + rest * _real_dot(
                            w, ratio(1)
                        )
                        x_var = x_vars[i]
                        dev = jnp.abs(_real_dot(w, ratio(4)) - x_mean_new) + r(eps_)
                        x_var_new = bn_c * x_var.astype(rd) + rest * jnp.square(dev)
                        new["x_var"].append(x_var_new.astype(x_var.dtype))
                        dev = jnp.abs(x - x_mean_new) + r(eps_)
                        sigma = jnp.sqrt(x_var_new) + r(eps_)
                        h = x * jnp.minimum(dev, sigma) / dev
                    new["x_mean"].append(x_mean_new.astype(x_mean.dtype))
                    # c_t = beta_n c_{t-1} + ell h with ell = lr0 / (1 + omega).
                    corr_new = bn_c * corr.astype(rd) + lr0_c * h / one_omega
                    o = jnp.minimum(
                        jnp.maximum(
                            jnp.abs(corr_new),
                            _tukey(denominator(d_scales[3])) * lr0_c / one_omega,
                        ),
                        lr0_c * one_omega,
                    )
                    # o goes to the state's corr_clip buffer, then a plain sum
                    # reads it back: XLA:CPU's library fusion is slow on the sum of
                    # an expression (about one pass per operation), and a fresh
                    # temporary array would cost page faults. The select (t >= 1)
                    # reads the old buffer, so that jit keeps it and reuses it.
                    o = jnp.where(t < 0, corr_clips[i].astype(rd), o)
                    new["corr_clip"].append(o.astype(corr_clips[i].dtype))
                new["corr"].append(corr_new.astype(corr.dtype))
                b = _leaf_mean(o, sdt)
                if numerator != "max_bound":
                    b = jnp.maximum(b, _NUMERATOR_FLOOR * lr0)
                a = _NUMERATOR_POLE * state.lr_num[i] + (1.0 - _NUMERATOR_POLE) * b
                new["lr_num"].append(a)

            lr = a if rho is None else rho * a
            new["lr"].append(lr)
            scale_q = lr if out_scale is None else lr * out_scale
            scale_w = lr * wd_scale if decoupled else None
            out.append(direction(scale_q, scale_w).astype(g_in.dtype))

        def tree(name):
            old = getattr(state, name)
            if old is None and name not in ("mu", "lr"):
                return None
            if name in _PER_LEAF_SCALARS:  # a vector, one entry per leaf
                if not new[name]:
                    return old
                if name == "lr":
                    # Nothing else reads the old lr; the select (t >= 1) does, so
                    # jit keeps it and a donated state reuses its buffer.
                    return jnp.where(t < 0, old, jnp.stack(new[name]))
                return jnp.stack(new[name])
            return treedef.unflatten(new[name])

        fields = {k: tree(k) for k in ScaleByAutoSgmState._fields if k != "count"}
        return treedef.unflatten(out), ScaleByAutoSgmState(count=count, **fields)

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
