"""Static checks of hyperparameters.

Only concrete Python numbers are checked. Arrays (what `optax.inject_hyperparams`
passes in, possibly traced under `jit`) and schedules are never inspected, so
validation can not break hyperparameter injection.
"""

import math
import numbers
from collections.abc import Collection
from typing import Any, Literal

import numpy as np

# Where weight decay enters, one vocabulary for every transform.
WeightDecayMode = Literal["coupled", "decoupled"]


def float32_value(value: float) -> float:
    """A Python number rounded to float32 (0 below its range, inf above).

    Args:
      value: a real number.

    Returns:
      The float32 value, as a Python float; NumPy's overflow warning silenced.
    """
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float32(value))


def is_concrete_number(value: Any) -> bool:
    """A Python or NumPy real number (not a bool, not an array): a value the
    checks can read at construction time without breaking ``jit``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_real(name: str, value: Any) -> float:
    """A real scalar (Python, NumPy or 0-d array, not a bool) as a Python float.

    Raises:
      ValueError: naming ``name``, for anything else (strings, bools, arrays
        with more than one element, complex numbers).
    """
    if is_concrete_number(value):
        return float(value)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # e.g. ragged sequences
        array = np.asarray(None)
    if array.ndim != 0 or array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(array)


def check_interval(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_closed: bool = True,
    high_closed: bool = True,
    allow_inf: bool = False,
) -> None:
    """Raises `ValueError` when a concrete number lies outside an interval.

    NaN is always refused, and so are infinities unless ``allow_inf``.

    Args:
      name: the argument's name, quoted in the message.
      value: the argument; anything but a Python number passes unchecked.
      low: lower bound, or `None` for no lower bound.
      high: upper bound, or `None` for no upper bound.
      low_closed: whether `low` itself is allowed.
      high_closed: whether `high` itself is allowed.
      allow_inf: accept an infinity within the bounds (a "never" setting).

    Returns:
      None.
    """
    if not is_concrete_number(value):
        return
    if allow_inf and math.isinf(value):
        if (value > 0 and high is None) or (value < 0 and low is None):
            return
    if not math.isfinite(value):
        _out_of_interval(name, value, low, high, low_closed, high_closed)
    # Open bounds are also checked in float32, the dtype the value is used in:
    # 1 - 1e-9 rounds to 1 there, 1e-50 to 0, and 1e300 to inf.
    single = float32_value(value)
    if math.isinf(single) and not allow_inf:
        note = f" (it is {single!r} in float32)"
        _out_of_interval(name, value, low, high, low_closed, high_closed, note)
    for x in (value, single):
        too_low = low is not None and (x < low if low_closed else x <= low)
        too_high = high is not None and (x > high if high_closed else x >= high)
        if too_low or too_high:
            note = "" if x == value else f" (it is {single!r} in float32)"
            _out_of_interval(name, value, low, high, low_closed, high_closed, note)


def _out_of_interval(name, value, low, high, low_closed, high_closed, note=""):
    left = "(-inf" if low is None else ("[" if low_closed else "(") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}" + ("]" if high_closed else ")")
    raise ValueError(f"{name} must be in {left}, {right}, got {value!r}{note}")


def check_positive(name: str, value: Any) -> None:
    """Raises `ValueError` when a concrete number is not strictly positive.

    Args:
      name: the argument's name, quoted in the message.
      value: the argument; anything but a Python number passes unchecked.

    Returns:
      None.
    """
    check_interval(name, value, 0.0, None, low_closed=False)


def check_choice(name: str, value: Any, allowed: Collection[Any]) -> None:
    """Raises `ValueError` when a mode is not one of the allowed values.

    Args:
      name: the argument's name, quoted in the message.
      value: the mode given.
      allowed: the allowed values, listed in the message.

    Returns:
      None.
    """
    if isinstance(value, bool) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_integer(name: str, value: Any, low: int) -> None:
    """Raises `ValueError` unless `value` is a Python (or NumPy) integer >= `low`.

    Unlike the numeric checks above, this one also rejects arrays: integers here
    shape Python-side constants (lengths, counts), so they must be concrete.

    Args:
      name: the argument's name, quoted in the message.
      value: the argument.
      low: the smallest allowed value.

    Returns:
      None.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
    ):
        raise ValueError(f"{name} must be an integer in [{low}, inf), got {value!r}")


def check_range(name: str, value: Any) -> tuple[float, float]:
    """Checks a range ``(low, high)`` of positive numbers, finite in float32.

    Args:
      name: the argument's name, quoted in the message.
      value: the argument: a tuple or list of two Python numbers (not bools).

    Returns:
      ``(low, high)`` as Python floats.

    Raises:
      ValueError: unless ``0 < low <= high`` and both are finite in float32.
    """
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(is_concrete_number(v) for v in value)
    )
    if not ok:
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}")
    low, high = (float(v) for v in value)
    check_positive(f"{name}[0]", low)
    check_positive(f"{name}[1]", high)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return low, high
