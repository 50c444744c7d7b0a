"""Compiled steps grow linearly with the number of leaves (issue 16).

XLA copies cheap scalar producers into every consumer fusion, so a global
scalar computed from the per-leaf sums and read by every per-leaf loop makes
the compiled program O(N^2) in the number of leaves N although the traced one
is O(N) (see ``garo_optax/_src/xla_cpu.py``). The instruction count of the
compiled step is deterministic and cheap to get on small trees; compile time
follows it. Quadratic growth from 8 to 32 leaves gives a ratio well above 4
(5.4x to 6.3x for CLARA and GARO before the fix, 16x asymptotically).
"""

import optax
import pytest

import garo_optax as g
from garo_optax._app import step_time

SMALL, LARGE = 8, 32
# Linear growth is LARGE / SMALL = 4 (less, with the fixed part of the step).
MAX_RATIO = LARGE / SMALL * 1.3

TRANSFORMS = {
    "optax.adam": lambda: optax.adam(1e-3),
    "clara_sgd": lambda: g.clara_sgd(1e-2),
    "clara_sgd_global": lambda: g.clara_sgd(1e-2, normalize="global"),
    "scale_by_clara_after_adam": lambda: optax.chain(
        optax.scale_by_adam(), g.scale_by_clara(1e-3)
    ),
    "adam_clara": lambda: g.adam_clara(1e-3),
    "adam_clara_global": lambda: g.adam_clara_global(1e-3),
    "adam_clara_local": lambda: g.adam_clara_local(1e-3),
    "adam_clara_local_v1_unfaithful": lambda: g.adam_clara_local(
        1e-3, version=1, faithful=False
    ),
    "adam_clara_smoothed": lambda: g.adam_clara_smoothed(1e-3),
    "adam_clara_smoothed_v1": lambda: g.adam_clara_smoothed(1e-3, version=1),
    **{
        f"autosgm_{n}": (lambda n=n: g.autosgm(1e-3, numerator=n))
        for n in ("constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev")
    },
    "garo": lambda: g.garo(),
    "garo_pretrained": lambda: g.garo(g.pretrained()),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_compiled_step_grows_linearly_in_leaves(name):
    counts = [
        step_time.compile_profile(TRANSFORMS[name](), n, size=2)["instructions"]
        for n in (SMALL, LARGE)
    ]
    ratio = counts[1] / counts[0]
    assert ratio < MAX_RATIO, (
        f"{name}: {counts[0]} HLO instructions at {SMALL} leaves, {counts[1]} at "
        f"{LARGE} ({ratio:.2f}x, linear is <= {LARGE / SMALL:.0f}x): a global "
        "scalar is recomputed in every per-leaf loop (garo_optax/_src/xla_cpu.py)"
    )


def test_instruction_count_sees_quadratic_growth():
    # The check can fail: a global sum copied into every leaf's loop (the
    # pattern xla_cpu.computed_once prevents) grows faster than MAX_RATIO.
    import jax.numpy as jnp

    def quadratic(num_leaves):
        def update(updates, state, params=None):
            total = sum(jnp.sum(u * u) for u in updates.values())
            return {
                k: jnp.where(jnp.isfinite(total), u, 0) for k, u in updates.items()
            }, state

        tx = optax.GradientTransformation(lambda p: optax.EmptyState(), update)
        return step_time.compile_profile(tx, num_leaves, size=2)["instructions"]

    assert quadratic(LARGE) / quadratic(SMALL) > MAX_RATIO
