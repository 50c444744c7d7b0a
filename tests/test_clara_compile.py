"""CLARA's compiled step sums small leaves together (issue 16).

Each per-leaf sum of a small leaf compiled to its own XLA:CPU kernels (the
terms, a ``reduce-window`` and a ``reduce``), twice per leaf (the direction's
norm and the path's), and each per-leaf scalar (``1 / max(norm, floor)``) to
one more: ``adam_clara`` had 11 fusions per leaf against ``optax.adam``'s 3
at 52 leaves, ``clara_sgd`` 9. Small leaves of one size and dtype are now
summed as the rows of one matrix and their scalar math runs on vectors
(``xla_cpu.leaf_sums``); each leaf reads its scalar without a slice. The
seed variants also run Local's and Smoothed's chain of per-leaf rates on one
vector (``xla_cpu.leaf_vector``, ``xla_cpu.running_on_vector``) instead of a
scalar kernel per leaf.
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

LEAVES = 52

# The most fusions (and reductions) per leaf in the compiled step; before:
# adam_clara 11.1 (3.9), clara_sgd 9.0 (3.9), scale_by_clara 12.1 (3.9).
BOUNDS = {
    "adam_clara": (lambda: garo_optax.adam_clara(1e-3), 6.0, 1.5),
    "clara_sgd": (lambda: garo_optax.clara_sgd(1e-2), 4.0, 1.5),
    "scale_by_clara": (
        lambda: optax.chain(optax.scale_by_adam(), garo_optax.scale_by_clara(1e-3)),
        7.0,
        1.5,
    ),
    # The seed variants (path norms summed together, Local's and Smoothed's
    # chain of rates on a vector); before: 9.1-10.2 (1.9-2.0) for version 2,
    # 13.1-14.2 (3.9-4.0) for version 1.
    **{
        f"adam_clara_{rule}_v{version}": (
            lambda rule=rule, version=version: getattr(
                garo_optax, f"adam_clara_{rule}"
            )(1e-3, version=version),
            9.0 - version,
            3.5 - version,
        )
        for rule in ("global", "local", "smoothed")
        for version in (1, 2)
    },
}


def _fusions(tx, num_leaves: int, size: int) -> dict:
    params = step_time.flat_params(num_leaves, size=size)
    compiled = step_time.compile_step(tx, params, params)
    text = compiled.as_text()
    entry = text[text.find("\nENTRY") :]
    counts = step_time.hlo_counts(compiled)
    return {"fusions": len(re.findall(r" fusion\(", entry)), **counts}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_fusions_per_leaf_are_few(name):
    build, max_fusions, max_reductions = BOUNDS[name]
    counts = _fusions(build(), LEAVES, size=256)
    assert counts["fusions"] <= max_fusions * LEAVES, counts
    assert counts["reductions"] <= max_reductions * LEAVES, counts


def test_leaf_sums_equal_per_leaf_sums():
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (15,), (3, 5), (5000,), (0,), (7,), (15,)]
    leaves = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
    leaves[2] = leaves[2].at[1, 1].set(jnp.nan)
    sums = jax.jit(lambda xs: xla_cpu.leaf_sums([jnp.square] * len(xs), xs).entries())(
        leaves
    )
    want = [np.sum(np.square(np.asarray(x, np.float64))) for x in leaves]
    np.testing.assert_allclose([float(s) for s in sums], want, rtol=1e-6)
    assert xla_cpu.small_leaf_groups([leaves]) == [[0, 1, 2, 6]]


@pytest.mark.parametrize("n", [5, 32, 33, 100, 1024])
def test_vector_entries_are_exact_in_blocks(n):
    values = jnp.asarray(np.random.default_rng(n).normal(size=n), jnp.float32)
    values = values.at[1].set(-0.0).at[n - 1].set(jnp.inf).at[n // 2].set(jnp.nan)
    got = np.array([float(x) for x in jax.jit(xla_cpu.vector_entries)(values)])
    np.testing.assert_array_equal(got, np.asarray(values))
    assert np.signbit(got[1])


def test_leaf_vector_is_in_leaf_order():
    shapes = [(3,), (5000,), (2,), (3,), (0,), (2,), (4,)]
    leaves = [
        jnp.arange(np.prod(s), dtype=jnp.float32) + k for k, s in enumerate(shapes)
    ]
    sums = xla_cpu.leaf_sums([jnp.square] * len(leaves), leaves)
    want = [float(jnp.sum(jnp.square(x))) for x in leaves]
    for order in ([0, 1, 2, 3, 5, 6], [6, 3, 0], [0, 3, 2, 5]):
        got = jax.jit(
            lambda xs, o=order: xla_cpu.leaf_vector(
                xla_cpu.leaf_sums([jnp.square] * len(xs), xs), o
            )
        )(leaves)
        np.testing.assert_allclose(got, [want[k] for k in order], rtol=1e-6)
    assert sums.groups == ((0, 3), (2, 5))


def test_running_on_vector_equals_running():
    def link(state, x):
        return jnp.clip(0.9 * state * x + 0.1 * x, 0.1, 10.0)

    inputs = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2, 40), jnp.float32)
    start = jnp.float32(1.3)
    states, last = jax.jit(xla_cpu.running_on_vector, static_argnums=0)(
        link, start, inputs
    )
    want = jax.jit(lambda s, xs: xla_cpu.running(link, s, list(xs)))(start, inputs)
    np.testing.assert_array_equal(states, np.asarray(want))
    assert last == want[-1]
