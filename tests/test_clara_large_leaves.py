"""CLARA on leaves large enough for XLA:CPU's YNN sums (>= 4,096 elements).

The fused Adam-CLARA and the seed variants recompute Adam's direction in each
consumer on such leaves, with their own scalar copies for leaves of one shape
(``garo_optax/_src/xla_cpu.py``), where small leaves store it. The other CLARA
tests use small leaves; here two leaves share a large shape, and the results
are compared with the NumPy reference in float64 after every step.

Imports ``garo_optax._src.xla_cpu`` for the size threshold.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import clara_numpy as ref
from reference import problems

import garo_optax
from garo_optax._src import xla_cpu

pytestmark = pytest.mark.usefixtures("fast_compile")

STEPS = 8
RTOL = 1e-9
ATOL = 1e-12
# Two leaves of one large shape, a large vector and a small one.
_SHAPES = {"w": (64, 80), "v": (64, 80), "k": (4096,), "b": (5,)}
PROBLEM = problems.noisy_quadratic(_SHAPES, seed=3, phase_scale=0.37, noise=0.05)


def test_the_problem_has_large_leaves_of_one_shape():
    sizes = [x.size for x in PROBLEM[1]]
    assert sum(size >= xla_cpu.YNN_SUM_MIN_SIZE for size in sizes) == 3
    assert xla_cpu.sum_copies(PROBLEM[1]) == [None, None, None, 1]


def _run_library(make_opt):
    return helpers.run_float64(make_opt, PROBLEM, STEPS)


def _compare(ref_out, lib_out):
    (ref_traj, ref_lrs), (lib_traj, lib_lrs) = ref_out, lib_out
    for t in range(STEPS):
        np.testing.assert_allclose(lib_lrs[t], ref_lrs[t], rtol=RTOL, atol=0)
        for a, b in zip(lib_traj[t], ref_traj[t]):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert max(np.max(np.abs(a - b)) for a, b in zip(ref_traj[-1], PROBLEM[1])) > 1e-3


SEEDS = {
    "global": (ref.adam_clara_global, garo_optax.adam_clara_global),
    "local": (ref.adam_clara_local, garo_optax.adam_clara_local),
    "smoothed": (ref.adam_clara_smoothed, garo_optax.adam_clara_smoothed),
}


@pytest.mark.parametrize(
    "flags",
    [
        dict(version=2, faithful=True, adapt=True),
        dict(version=1, faithful=True, adapt=True),
        dict(version=2, faithful=False, adapt=False),
    ],
    ids=["v2", "v1", "v2-fixed-noadapt"],
)
@pytest.mark.parametrize("variant", sorted(SEEDS))
def test_seed_variant_matches_reference(variant, flags):
    ref_fn, lib_fn = SEEDS[variant]
    hp = dict(b1=0.9, b2=0.999, eps=1e-8, c=0.2, weight_decay=0.0)
    ref_out = ref_fn(PROBLEM[1], PROBLEM[3], STEPS, 0.05, d=1.0, **hp, **flags)
    _compare(ref_out, _run_library(lambda: lib_fn(0.05, damping=1.0, **hp, **flags)))


@pytest.mark.parametrize("unit_step", [True, False])
def test_adam_clara_matches_reference(unit_step):
    hp = dict(b1=0.9, b2=0.99, eps=1e-8, c=0.2, unit_step=unit_step)
    ref_out = ref.adam_clara(PROBLEM[1], PROBLEM[3], STEPS, 0.05, d=0.3, **hp)
    _compare(
        ref_out, _run_library(lambda: garo_optax.adam_clara(0.05, damping=0.3, **hp))
    )


def test_clara_sgd_matches_reference():
    ref_out = ref.sgd_clara(PROBLEM[1], PROBLEM[3], STEPS, 0.05, c=0.2, d=0.1)
    _compare(ref_out, _run_library(lambda: garo_optax.clara_sgd(0.05, damping=0.1)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's buffers")
@pytest.mark.parametrize(
    "name",
    ["adam_clara", "adam_clara_global", "adam_clara_local", "adam_clara_smoothed"],
)
def test_no_direction_stored_on_large_leaves(name):
    # The workaround of xla_cpu.private_copy: Adam's direction and the sums'
    # scalars are not written to temporary arrays (0.5 to 8 bytes a parameter
    # without it).
    params = {k: jnp.zeros(shape) for k, shape in _SHAPES.items()}
    tx = getattr(garo_optax, name)(1e-3)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, tx.init(params), params)
        .compile()
    )
    memory = compiled.memory_analysis()
    if memory is None:
        pytest.skip("no memory analysis")
    num_params = sum(x.size for x in jax.tree.leaves(params))
    assert memory.temp_size_in_bytes < 0.1 * num_params
