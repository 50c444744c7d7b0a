r"""AutoSGM windows as optax schedules.

O. A. Somefun et al., `AutoSGM: A Unified Lowpass Regularization Framework for
Accelerated Learning <https://github.com/somefunAgba/autosgm>`_, ICASSP 2024.

In plain words: AutoSGM multiplies its learning rate by a *window*, a decay shape
that starts at 1 and falls towards a floor over a frame of ``length`` steps, then
starts again (warm restarts). A full window first rises from the floor to 1 and
then falls back. Raised cosine with order 2 is cosine annealing; polynomial with
order 1 is linear decay. The windows here are ordinary :class:`optax.Schedule`
functions of the step count, so any optax optimizer can use them, and
:func:`garo_optax.autosgm` takes one as its ``window``.

The original is a stateful object of the 1-based step ``t``; a schedule here is a
pure function of optax's 0-based ``count``, with ``t = count + 1``, so the
original's position in the frame ``(t - 1) mod length`` is ``count mod length``.
"""

import fractions
import math
import numbers
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax._src import validate

Shape = Literal[
    "raised_cosine",
    "polynomial",
    "exponential",
    "simple_polynomial",
    "logistic",
    "late_logistic",
]
Mode = Literal["half", "full"]
Sequence = Literal["uniform", "kronecker"]
Normalization = Literal["original", "exact"]

# The original's rc_cfg ``rcm`` code of each shape is its position here plus one.
SHAPES: tuple[str, ...] = get_args(Shape)
_MODES = get_args(Mode)
_SEQUENCES = get_args(Sequence)
_NORMALIZATIONS = get_args(Normalization)

# Kronecker sequence step: the fractional part of the golden ratio.
_GOLDEN_FRACTION = (math.sqrt(5.0) - 1.0) / 2.0


def _as_static_float(value: Any) -> Any:
    # Python and NumPy numbers become Python floats (weakly typed in jnp, so strict
    # dtype promotion accepts them); arrays pass through unchanged.
    return float(value) if validate.is_concrete_number(value) else value


def _float_dtype() -> jnp.dtype:
    # float32, or float64 when x64 is enabled.
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _sigmoid(f, order, center, rate=1.0):
    # 1 / (1 + 2^(2 n rate (f - center))): falls from ~1 to ~0 around `center`.
    exponent = 2.0 * rate * order * (f - center)
    if isinstance(exponent, float):  # Python floats raise on overflow.
        return 0.0 if exponent > 1000.0 else 1.0 / (1.0 + 2.0**exponent)
    return 1.0 / (1.0 + 2.0**exponent)


def _single_shape(xp, shape: str, u, order, normalization: str):
    """The decay z(u) of one shape on u in [0, 1], in NumPy or jax.numpy."""
    if shape == "raised_cosine":
        # The clamp keeps cos(pi/2) (-4e-8 in float32) from making a NaN power.
        return xp.maximum(xp.cos(0.5 * xp.pi * u), 0.0) ** order
    if shape == "polynomial":
        return xp.maximum(1.0 - u, 0.0) ** order
    if shape == "exponential":
        return (order**u - order) / (1.0 - order)
    if shape == "simple_polynomial":
        return (1.0 - u**order) ** 2
    if shape == "logistic":
        top, bottom = _sigmoid(0.0, order, 0.5), _sigmoid(1.0, order, 0.5)
        return (_sigmoid(u, order, 0.5) - bottom) / (top - bottom)
    # late_logistic: the inflection sits at 7/8 of the frame.
    if normalization == "original":
        # The original normalizes with the logistic shape's constants.
        top, bottom = _sigmoid(0.0, order, 0.5), _sigmoid(1.0, order, 0.5)
    else:
        top, bottom = _sigmoid(0.0, order, 0.875), _sigmoid(1.0, order, 0.875)
    return (_sigmoid(u, order, 0.875) - bottom) / (top - bottom)


def _shape_value(xp, shape, numerator, span, order, sub_shapes, normalization):
    """z(f) at f = numerator / span, with `sub_shapes` sub-shapes."""
    if sub_shapes == 1 or shape == "polynomial":
        return _single_shape(xp, shape, numerator / span, order, normalization)
    m = float(sub_shapes)
    if shape == "logistic":
        # A sum of M sigmoids of rate 2 M n centred at (j + 1/2) / M, min/max
        # normalized over f = 0 and f = 1.
        def total(v):
            return sum(
                _sigmoid(v, order, (j + 0.5) / m, rate=m) for j in range(sub_shapes)
            )

        top, bottom = total(0.0), total(1.0)
        return (total(numerator / span) - bottom) / (top - bottom)
    # A staircase of M decays, each 1/M high: i = max(1, ceil(M f)) and
    # u = M f - i + 1. Where M f is a whole number (e.g. M = 3, f = 1/3) XLA's
    # division by a constant can land an ulp above it and pick the next step,
    # which matters where z(0) != 1 or z(1) != 0 (late_logistic, original
    # normalization). So ceil(M f) is corrected by comparing products, which
    # are exact for the integer offsets and Python-float spans used here.
    scaled = m * numerator  # M f * span
    i = xp.ceil(scaled / span)
    i = xp.where((i - 1.0) * span >= scaled, i - 1.0, i)
    i = xp.where(i * span < scaled, i + 1.0, i)
    i = xp.maximum(1.0, i)
    u = (scaled - (i - 1.0) * span) / span
    return (m - i + _single_shape(xp, shape, u, order, normalization)) / m


def _kronecker_table(shape, length, order, mode, flat_top, sub_shapes, normalization):
    """The z values of one frame of the Kronecker window, in step order."""
    half_length = length if mode == "half" else length / 2.0
    cove = math.floor(flat_top * half_length)
    size = math.floor(half_length - cove)
    if (size + cove) * (1 if mode == "half" else 2) < length:
        cove += 1
    if shape == "polynomial":  # The original samples `length` points here.
        size = length
    points = np.mod(np.arange(size, dtype=np.float64) * _GOLDEN_FRACTION, 1.0)
    order = float(np.asarray(order, np.float64))
    with np.errstate(over="ignore"):  # 2^large is inf, and its sigmoid 0.
        values = _shape_value(np, shape, points, 1.0, order, sub_shapes, normalization)
    stack = list(np.sort(values)) + [1.0] * cove
    if mode == "full":
        stack = stack + stack[::-1]
    # The original pops one value per step from the end of the stack and rebuilds
    # it when the frame ends, so a frame uses the last `length` values, reversed.
    return np.asarray(stack[::-1][:length], dtype=np.float64)


def _frame_position(count, length: int) -> jax.Array:
    """``count mod length``: the original's ``(t - 1) mod length`` at t = count + 1."""
    count = jnp.asarray(count)
    if not jnp.issubdtype(count.dtype, jnp.integer):
        count = jnp.floor(count).astype(jnp.int32)
    return jnp.remainder(count, length)


def window_schedule(
    shape: Shape,
    *,
    length: int,
    floor: jax.typing.ArrayLike = 0.0,
    order: jax.typing.ArrayLike = 2.0,
    mode: Mode = "half",
    flat_top: float = 0.0,
    sub_shapes: int = 1,
    sequence: Sequence = "uniform",
    normalization: Normalization = "original",
) -> optax.Schedule:
    r"""An AutoSGM window: a periodic decay from 1 to a floor, as an optax schedule.

    The window multiplies a learning rate. Over a frame of ``length`` steps it
    decays from 1 towards the floor (``mode="half"``) or rises from the floor to 1
    and decays back (``mode="full"``), optionally after a flat top, and then
    restarts (warm restarts every ``length`` steps; it is never clamped).

    Let :math:`L, x, n, e, M` represent the arguments ``length``, ``floor``,
    ``order``, ``flat_top`` and ``sub_shapes``, and :math:`c` optax's 0-based step
    count. The original's 1-based step is :math:`t = c + 1`, and the position in
    the current frame is :math:`\tau = (t - 1) \bmod L = c \bmod L`. Then

    .. math::
      \begin{align*}
        f &= \tau / L \quad \text{(half)}, \qquad
        f = |2 \tau / L - 1| \quad \text{(full)}, \\
        \rho_c &= 1 \quad \text{if } f < e, \quad \text{else} \quad
        \rho_c = x + (1 - x)\, z\!\left(\tfrac{f - e}{1 - e}\right),
      \end{align*}

    with the decay :math:`z` on :math:`[0, 1]`, :math:`z(0) = 1`:

    * ``"raised_cosine"`` (``rcm=1``): :math:`z = \cos(\pi f / 2)^n`; :math:`n = 2`
      is cosine annealing :math:`(1 + \cos \pi f) / 2`.
    * ``"polynomial"`` (``rcm=2``): :math:`z = (1 - f)^n`; :math:`n = 1` is linear
      decay (triangular as a full window). It ignores :math:`M`.
    * ``"exponential"`` (``rcm=3``, :math:`0 < n < 1`):
      :math:`z = (n^f - n) / (1 - n)`.
    * ``"simple_polynomial"`` (``rcm=4``): :math:`z = (1 - f^n)^2`, best with
      :math:`1 < n < 20`.
    * ``"logistic"`` (``rcm=5``): :math:`\sigma(f) = 1 / (1 + 2^{2n(f - 1/2)})`,
      :math:`z = (\sigma(f) - \sigma(1)) / (\sigma(0) - \sigma(1))`.
    * ``"late_logistic"`` (``rcm=6``): :math:`\sigma_6(f) = 1 / (1 +
      2^{2n(f - 7/8)})`. ``normalization="original"`` divides like the original,
      with the logistic constants: :math:`z = (\sigma_6(f) - \sigma(1)) /
      (\sigma(0) - \sigma(1))`, so :math:`z(0) > 1` and :math:`z(1) > 0` (for
      :math:`n = 4` the window starts at 1.057881 and ends near 0.3111, never
      reaching the floor). ``normalization="exact"`` uses :math:`\sigma_6(0)` and
      :math:`\sigma_6(1)`, so :math:`z(0) = 1` and :math:`z(1) = 0`.

    With :math:`M > 1` sub-shapes the decay is a staircase of :math:`M` decays,
    :math:`i = \max(1, \lceil M f \rceil)`, :math:`u = M f - i + 1`,
    :math:`z = (M - i + z_1(u)) / M`, except for ``"logistic"``, which sums
    :math:`M` sigmoids of rate :math:`2 M n` centred at :math:`(j + 1/2) / M`,
    :math:`j = 0, \dots, M - 1`, min/max-normalized over :math:`f = 0` and
    :math:`f = 1`.

    ``sequence="kronecker"`` samples the shape at the golden-ratio points
    :math:`f_j = \operatorname{frac}(j (\sqrt 5 - 1) / 2)` instead: with
    :math:`h = L` (half) or :math:`L / 2` (full), :math:`\lfloor e h \rfloor` ones
    (one more if the frame would fall short of :math:`L`) follow the
    :math:`\lfloor h - \lfloor e h \rfloor \rfloor` sampled values sorted in
    ascending order; a full window appends a descending copy of that list, and a
    frame walks the list from its end. ``"polynomial"`` samples :math:`L` points
    whatever :math:`e` and the mode, as the original does, so its list is longer
    than a frame and only the first :math:`L` values are used. The frame is built
    once with NumPy (float64) and indexed by :math:`c \bmod L`.

    The window is global (one scalar per step) and stateless: a pure, jittable
    function of the count.

    .. note::
      With ``order=2`` and ``mode="half"``, ``"raised_cosine"`` equals
      ``optax.cosine_decay_schedule(1.0, length, alpha=floor)`` and
      ``"polynomial"`` with ``order=p`` and ``floor=0`` equals
      ``optax.polynomial_schedule(1.0, 0.0, p, length)``, for counts
      ``0 .. length - 1`` (after that these windows restart).

    .. note::
      The original's ``cfact=0`` epoch mode, which (through a bug) holds each
      value for ``tau`` steps with ``length = tau``, is
      ``lambda count: window(count // tau)`` for ``tau >= 2``.

    .. note::
      One deviation: on a flat-top step the original returns before its
      end-of-frame check, so when the flat top covers the frame's last step
      (``flat_top > (length - 1) / length`` for a half window, ``> 1 - 2 /
      length`` for a full one) it never restarts and runs past its frame. Here
      every frame restarts after ``length`` steps.

    Args:
      shape: the decay, one of ``"raised_cosine"``, ``"polynomial"``,
        ``"exponential"``, ``"simple_polynomial"``, ``"logistic"`` and
        ``"late_logistic"`` (the original's ``rcm`` 1 to 6).
      length: the frame length :math:`L`, an integer >= 1; the window restarts
        every ``length`` steps.
      floor: the floor :math:`x` in [0, 1) the window decays towards (the
        original's ``x``).
      order: the shape's order :math:`n` > 0, in (0, 1) for ``"exponential"`` (the
        original's ``n``). Must be a concrete number when
        ``sequence="kronecker"``.
      mode: ``"half"`` decays only (the original's ``m=1``); ``"full"`` rises
        from the floor to 1 at mid-frame, then decays (``m=0``). With
        ``floor=0`` a full window's first value is 0.
      flat_top: the fraction :math:`e` in [0, 1) of the (half-)frame held at 1
        before the decay starts (the original's ``e``).
      sub_shapes: the number :math:`M` >= 1 of sub-shapes (the original's
        ``cfact`` when it is >= 3).
      sequence: ``"uniform"`` samples the frame at evenly spaced points
        (``inseq=0``); ``"kronecker"`` at sorted golden-ratio points
        (``inseq=1``).
      normalization: how ``"late_logistic"`` is normalized: ``"original"``
        reproduces the original's constants (the window then starts above 1:
        at 1.198 for ``order=2``, up to 1.375 as the order tends to 0),
        ``"exact"`` makes it fall from 1 to the floor. Other shapes ignore it.

    Returns:
      An :class:`optax.Schedule`: a function of the 0-based step count returning
      the window value, float32 (float64 when x64 is enabled).

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> window = garo_optax.window_schedule("raised_cosine", length=10)
      >>> [round(float(window(c)), 4) for c in (0, 5, 9, 10)]
      [1.0, 0.5, 0.0245, 1.0]
      >>> tx = optax.sgd(learning_rate=lambda count: 0.1 * window(count))
      >>> params = jnp.array([1.0, 2.0])
      >>> updates, _ = tx.update(params, tx.init(params))
      >>> print(updates)
      [-0.1 -0.2]

    References:
      Somefun et al, `AutoSGM: A Unified Lowpass Regularization Framework for
      Accelerated Learning <https://github.com/somefunAgba/autosgm>`_, ICASSP 2024
    """
    validate.check_choice("shape", shape, SHAPES)
    validate.check_choice("mode", mode, _MODES)
    validate.check_choice("sequence", sequence, _SEQUENCES)
    validate.check_choice("normalization", normalization, _NORMALIZATIONS)
    validate.check_integer("length", length, 1)
    validate.check_integer("sub_shapes", sub_shapes, 1)
    validate.check_interval("floor", floor, 0.0, 1.0, high_closed=False)
    if not isinstance(flat_top, numbers.Real) or isinstance(flat_top, bool):
        raise ValueError(f"flat_top must be a Python number, got {flat_top!r}")
    validate.check_interval("flat_top", flat_top, 0.0, 1.0, high_closed=False)
    if shape == "exponential":
        validate.check_interval(
            "order for shape='exponential'",
            order,
            0.0,
            1.0,
            low_closed=False,
            high_closed=False,
        )
    else:
        validate.check_interval("order", order, 0.0, None, low_closed=False)
    length, sub_shapes = int(length), int(sub_shapes)
    flat_top = float(flat_top)
    floor, order = _as_static_float(floor), _as_static_float(order)

    def apply_floor(z, dtype):
        x = floor if isinstance(floor, float) else jnp.asarray(floor, dtype)
        return x + (1.0 - x) * z

    if sequence == "kronecker":
        table = _kronecker_table(
            shape, length, order, mode, flat_top, sub_shapes, normalization
        )

        def kronecker_schedule(count: jax.typing.ArrayLike) -> jax.Array:
            dtype = _float_dtype()
            z = jnp.asarray(table, dtype)[_frame_position(count, length)]
            return apply_floor(z, dtype)

        return kronecker_schedule

    # f = offset / length, with the offset an integer; the flat top holds while
    # offset < flat_top * length in exact arithmetic (as f < e in the original),
    # i.e. while offset < flat_steps.
    flat_steps = math.ceil(fractions.Fraction(flat_top) * length)
    start = flat_top * length  # The decay runs over f' = (offset - start) / span.
    span = length - start

    def window(count: jax.typing.ArrayLike) -> jax.Array:
        dtype = _float_dtype()
        tc = _frame_position(count, length)
        offset = tc if mode == "half" else jnp.abs(2 * tc - length)
        numerator = offset.astype(dtype) - start
        z_order = order if isinstance(order, float) else jnp.asarray(order, dtype)
        z = _shape_value(
            jnp, shape, numerator, span, z_order, sub_shapes, normalization
        )
        rho = apply_floor(z, dtype)
        return jnp.where(offset < flat_steps, jnp.ones_like(rho), rho)

    return window
