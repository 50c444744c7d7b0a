"""Degenerate parameter trees, for every registry entry.

* an empty tree: ``init`` and ``update`` work and give an empty update;
* a single scalar leaf: finite, non-zero updates of shape ``()``;
* ``None`` leaves and zero-size arrays next to a real leaf: they come back as
  they went in, and the real leaf's updates equal those of the tree without
  them (an empty leaf must not count as a tensor, e.g. in GARO's per-tensor
  mean or Adam-CLARA-local's product over tensors);
* ``optax.masked`` with every leaf masked out: the gradients pass through.

Eager, three steps each: the arrays are tiny and eager dispatch compiles each
primitive once.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from registry import VALUE, cases

pytestmark = pytest.mark.usefixtures("fast_compile")

STEPS = 3


def run(opt, entry, params, grads_fn):
    state = opt.init(params)
    history = []
    for t in range(STEPS):
        updates, state = opt.update(grads_fn(t), state, params, **entry.extra(VALUE))
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return history, state


def _grads(tree, t):
    return jax.tree.map(lambda p: jnp.full_like(p, 0.5 - 0.2 * t) + p, tree)


REAL = {"w": jnp.asarray([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])}


@pytest.mark.parametrize("entry", cases("empty_tree"))
def test_empty_tree(entry):
    for empty in ({}, (), []):
        updates, state = run(entry.make(), entry, empty, lambda t: empty)  # noqa: B023
        assert all(u == empty for u in updates)
        assert helpers.tree_all_finite(state)


@pytest.mark.parametrize("entry", cases("scalar_tree"))
def test_single_scalar_leaf(entry):
    params = jnp.asarray(1.5)
    updates, state = run(entry.make(), entry, params, lambda t: _grads(params, t))
    for u in updates:
        assert u.shape == () and u.dtype == params.dtype and np.isfinite(u)
    assert any(u != 0 for u in updates)
    assert helpers.tree_all_finite(state)


@pytest.mark.parametrize("entry", cases("none_and_zero_size"))
def test_none_and_zero_size_leaves_change_nothing(entry):
    alone, _ = run(entry.make(), entry, REAL, lambda t: _grads(REAL, t))
    params = {
        **REAL,
        "none": None,
        "empty": jnp.zeros((0, 3)),
        "nested": {"z": jnp.zeros((4, 0), jnp.bfloat16), "n": None},
    }

    def grads_fn(t):
        return {**_grads(params, t), "none": None}

    updates, state = run(entry.make(), entry, params, grads_fn)
    for u, ref in zip(updates, alone):
        assert u["none"] is None and u["nested"]["n"] is None
        assert u["empty"].shape == (0, 3) and u["empty"].dtype == jnp.float32
        assert u["nested"]["z"].shape == (4, 0)
        assert u["nested"]["z"].dtype == jnp.bfloat16
        helpers.tree_allclose(u["w"], ref["w"], rtol=1e-6)
    assert helpers.tree_all_finite(state)
    assert np.any(np.asarray(updates[-1]["w"]) != 0)


@pytest.mark.parametrize("entry", cases("all_masked"))
def test_everything_masked_out(entry):
    params = {"w": REAL["w"], "b": jnp.ones(2)}
    mask = {"w": False, "b": False}
    opt = optax.masked(entry.make(), mask)
    updates, state = run(opt, entry, params, lambda t: _grads(params, t))
    for t, u in enumerate(updates):
        helpers.tree_allclose(u, _grads(params, t), rtol=0)
    assert helpers.tree_all_finite(state)
