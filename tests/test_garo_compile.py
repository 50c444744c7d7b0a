"""GARO's compiled step holds no fusion with a slice (XLA:CPU's slow path).

Every fusion that holds a ``slice`` compiles about 15x slower on XLA:CPU than
an element-wise loop; GARO's controller read its GRU gates, head outputs and
statistics through 10 of them (issue 16). ``xla_cpu.split_along`` reads them
through masked maxima instead, exactly.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax._app import step_time
from garo_optax._src import xla_cpu

_FUSED_SLICE = re.compile(r"=\s*\S+\s+(?:dynamic-)?slice\(")


@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
@pytest.mark.parametrize("pretrained", [False, True])
def test_no_fusion_holds_a_slice(pretrained, granularity):
    controller = garo_optax.pretrained() if pretrained else None
    if pretrained and granularity == "per_tensor":
        pytest.skip("the shipped controller is global")
    if controller is None:
        controller = garo_optax.init_controller(
            jax.random.PRNGKey(0), granularity=granularity
        )
    tx = garo_optax.garo(controller, granularity=granularity)
    params = step_time.flat_params(6, size=8)

    def step(p, s, g):
        updates, s = tx.update(g, s, p, value=jnp.float32(2.0))
        return optax.apply_updates(p, updates), s

    text = jax.jit(step).lower(params, tx.init(params), params).compile().as_text()
    bodies = re.split(r"\n(?=\S)", text)
    assert sum(1 for body in bodies if _FUSED_SLICE.search(body)) == 0


def test_split_along_is_exact():
    x = jnp.array([[1.5, -0.0, jnp.nan], [jnp.inf, -jnp.inf, 3.0]])
    rows = jax.jit(lambda v: xla_cpu.split_along(v, 2, axis=0))(x)
    np.testing.assert_array_equal(np.stack(rows), np.asarray(x))
    columns = jax.jit(lambda v: xla_cpu.split_along(v, 3))(x)
    for k, column in enumerate(columns):
        np.testing.assert_array_equal(column, np.asarray(x)[:, k])
    assert np.signbit(np.asarray(columns[1])[0])
    pieces = xla_cpu.split_along(jnp.arange(6.0), 3)
    np.testing.assert_array_equal(np.stack(pieces), np.arange(6.0).reshape(3, 2))


def test_split_along_refuses_an_uneven_cut():
    with pytest.raises(ValueError, match="parts=4 must divide"):
        xla_cpu.split_along(jnp.arange(6.0), 4)
