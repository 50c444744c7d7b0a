"""The optimizer registry of the program (imports ``garo_optax._app.registry``,
where it lives): one entry per name, each consumer's selection inside it, and
``function(**kwargs(rate))`` the same optimizer as ``build(rate, steps)``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from garo_optax._app import bench, registry
from garo_optax._src import peers


def test_the_consumers_select_from_the_registry():
    assert bench.OPTIMIZERS is registry.OPTIMIZERS
    assert list(registry.OPTIMIZERS) == [
        n for n, s in registry.REGISTRY.items() if s.bench
    ]
    assert len(registry.OPTIMIZERS) == 33  # garo-optax bench's default run
    assert registry.PEERS == tuple(peers.PEERS)
    assert set(registry.CONFORMANCE) <= set(registry.REGISTRY)
    for name in registry.META_EVAL_BASELINES:
        assert registry.get(name).default_lr is not None
    for spec in registry.REGISTRY.values():
        assert spec.group in registry.GROUPS and spec.description


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'nope'.*'adam'"):
        registry.get("nope")


def _one_step(tx):
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(2)}
    tx = optax.with_extra_args_support(tx)
    grads = jax.tree.map(lambda p: p - 0.3, params)
    updates, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(1.0))
    return updates


@pytest.mark.parametrize(
    "name", [n for n, s in registry.REGISTRY.items() if s.function is not None]
)
def test_function_and_kwargs_rebuild_the_entry(name):
    """What the tests and the benchmarks rebuild is what the bench runs."""
    spec = registry.get(name)
    rate = spec.default_lr
    built = _one_step(spec.build(rate, 100))
    rebuilt = _one_step(spec.function(**spec.kwargs(rate)))
    jax.tree.map(np.testing.assert_array_equal, built, rebuilt)
