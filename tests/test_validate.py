"""``garo_optax._src.validate``: the construction-time checks every factory uses."""

import math

import jax.numpy as jnp
import pytest

import garo_optax
from garo_optax._src import validate


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (math.nan, dict(low=0.0), r"lr must be in \[0, inf\), got nan"),
        (math.inf, dict(low=0.0), r"got inf"),
        (-math.inf, dict(high=1.0), r"got -inf"),
        (-math.inf, dict(low=1.0, allow_inf=True), r"got -inf"),
        (math.nan, dict(low=1.0, allow_inf=True), r"got nan"),
        # Open bounds are checked in float32 too: what the value is used as.
        (1 - 1e-9, dict(low=0.0, high=1.0, high_closed=False), r"1.0 in float32"),
        (1e-50, dict(low=0.0, low_closed=False), r"0.0 in float32"),
        (1e300, dict(low=0.0, low_closed=False), r"inf in float32"),
    ],
)
def test_check_interval_refuses(value, bounds, message):
    with pytest.raises(ValueError, match=message):
        validate.check_interval("lr", value, **bounds)


@pytest.mark.parametrize(
    "value, bounds",
    [
        (0.999, dict(low=0.0, high=1.0, high_closed=False)),
        (1e-30, dict(low=0.0, low_closed=False)),
        (2.2e-309, dict(low=0.0)),  # closed bound: 0 in float32 is allowed
        (jnp.float32(math.nan), dict(low=0.0)),  # arrays are never inspected
        (math.inf, dict(low=1.0, allow_inf=True)),  # "never", where documented
    ],
)
def test_check_interval_accepts(value, bounds):
    validate.check_interval("lr", value, **bounds)


def test_pole_rounding_to_one_is_refused_by_name():
    with pytest.raises(ValueError, match="pole.*float32"):
        garo_optax.autosgm(1e-2, pole=1 - 1e-9)
    with pytest.raises(ValueError, match="momentum_init.*float32"):
        garo_optax.garo(momentum_init=1 - 1e-9)


def test_subnormal_pole_is_a_zero_pole():
    """2.2e-309 passes the [0, 1) check but is 0 in float32: the filter must
    treat it as the zero pole it is used as, not divide by it."""
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.asarray([1.0, -2.0, 0.5])}
    runs = []
    for pole in (2.2e-309, 0.0):
        opt = garo_optax.autosgm(0.05, pole=pole, zero=0.5, debias=False)
        state, history = opt.init(params), []
        for t in range(3):
            updates, state = opt.update({"w": grads["w"] * (t + 1)}, state, params)
            history.append(updates["w"])
        runs.append(jnp.stack(history))
    assert bool(jnp.isfinite(runs[0]).all())
    assert bool((runs[0] == runs[1]).all())
