"""AutoSGM's compiled step reads no per-leaf vector entry through a slice.

XLA:CPU compiles every fusion that holds a ``slice`` (or ``dynamic-slice``)
through its slow fusion-emitter path, about 30 ms each against 1-2 ms for an
element-wise loop. The non-constant numerators keep per-leaf scalars in
vectors (``lr_num``, ``norm_mean``, ``norm_var``); reading entry k of one in
leaf k's loops put two such fusions in every leaf and made the step compile
8-15x slower than ``optax.adam``'s (issue 16). The scalar math now runs on the
vectors and each leaf reads its numerator through
``xla_cpu.vector_entries``. Imports ``garo_optax._src`` for the helper.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import garo_optax
from garo_optax._app import step_time
from garo_optax._src import autosgm, xla_cpu

_FUSED_SLICE = re.compile(r"=\s*\S+\s+(?:dynamic-)?slice\(")


def _fusions_with_slices(num_leaves: int, numerator: str) -> int:
    params = step_time.flat_params(num_leaves, size=4)
    tx = garo_optax.autosgm(1e-3, numerator=numerator)
    text = step_time.compile_step(tx, params, params).as_text()
    bodies = re.split(r"\n(?=\S)", text)
    return sum(1 for body in bodies if _FUSED_SLICE.search(body))


@pytest.mark.parametrize("numerator", autosgm.NUMERATORS)
def test_no_fusion_holds_a_slice(numerator):
    assert _fusions_with_slices(6, numerator) == 0


def test_vector_entries_are_exact():
    values = jnp.array([1.5, -0.0, jnp.nan, jnp.inf, -jnp.inf, 1e-30])
    entries = jax.jit(xla_cpu.vector_entries)(values)
    got = np.array([float(x) for x in entries], np.float32)
    np.testing.assert_array_equal(got, np.asarray(values))
    assert np.signbit(got[1])


def test_vector_entries_index_past_the_mask_limit(monkeypatch):
    """Above MASKED_READ_LIMIT the n**2 masks would cost memory and work:
    plain indexing, same values."""
    monkeypatch.setattr(xla_cpu, "MASKED_READ_LIMIT", 4)
    values = jnp.arange(6, dtype=jnp.float32) - 2.5
    text = jax.jit(lambda v: xla_cpu.vector_entries(v)).lower(values).as_text()
    assert "select" not in text and "slice" in text
    got = np.array([float(x) for x in xla_cpu.vector_entries(values)])
    np.testing.assert_array_equal(got, np.asarray(values))
