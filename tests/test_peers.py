"""The tuning-free peer registry (imports the private ``garo_optax._src.peers``)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from garo_optax._src import peers

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

# Curvatures under 2, where SGD at the peers' unit rates is stable.
_SCALES = jnp.array([0.1, 0.4, 1.5])


def _loss(params):
    return 0.5 * jnp.sum(_SCALES * (params - 1.0) ** 2)


def test_registry_holds_the_issue_peers_with_their_metadata():
    assert set(peers.ISSUE_PEERS) <= set(peers.PEERS)
    assert {"schedule_free_sgd", "polyak_sgd", "momo", "dowg"} <= set(peers.PEERS)
    for name, peer in peers.PEERS.items():
        assert peer.name == name
        assert peer.description and "\n" not in peer.description
        assert "arxiv.org/abs/" in peer.reference
        assert peer.takes_learning_rate is False
    assert {n for n, p in peers.PEERS.items() if p.needs_value} == {
        "polyak_sgd",
        "momo",
    }
    assert {n for n, p in peers.PEERS.items() if p.eval_params} == {
        "schedule_free_adamw",
        "schedule_free_sgd",
    }


@pytest.mark.parametrize(
    "name, reference",
    [
        ("prodigy", lambda: optax.contrib.prodigy()),
        ("mechanize_adam", lambda: optax.contrib.mechanize(optax.adam(1.0))),
        ("schedule_free_adamw", lambda: optax.contrib.schedule_free_adamw()),
        ("polyak_sgd", lambda: optax.polyak_sgd()),
    ],
)
def test_factories_are_optax_at_its_defaults(name, reference):
    """Three steps of the entry equal three of the optax call it names."""

    def train(tx):
        params, state = jnp.zeros(3), tx.init(jnp.zeros(3))
        for _ in range(3):
            loss, grads = jax.value_and_grad(_loss)(params)
            updates, state = tx.update(grads, state, params, value=loss)
            params = optax.apply_updates(params, updates)
        return params

    got = jax.jit(lambda: train(peers.PEERS[name].factory()))()
    np.testing.assert_array_equal(got, jax.jit(lambda: train(reference()))())


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_every_peer_runs_five_jitted_steps(name):
    """With ``params`` and ``value=``, from a state built on shapes only, the
    loss at the evaluation parameters goes down and stays finite."""
    peer = peers.PEERS[name]
    tx = peer.factory()
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = jnp.zeros(3)
    shapes = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((3,), jnp.float32))
    state = tx.init(params)
    assert jax.tree.structure(shapes) == jax.tree.structure(state)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(_loss)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    for _ in range(5):
        params, state = step(params, state)
    final = _loss(peers.evaluation_params(peer, state, params))
    assert np.isfinite(final) and final < _loss(jnp.zeros(3)), name


def test_schedule_free_evaluation_params_are_the_average():
    peer = peers.PEERS["schedule_free_sgd"]
    tx, params = peer.factory(), jnp.zeros(3)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    x = peers.evaluation_params(peer, state, params)
    np.testing.assert_array_equal(
        x, optax.contrib.schedule_free_eval_params(state, params)
    )
    assert not np.allclose(x, params)  # y (trained) and x (evaluated) differ
    plain = peers.PEERS["prodigy"]
    assert peers.evaluation_params(plain, None, params) is params


def test_unknown_peer_names_the_choices():
    with pytest.raises(ValueError, match="'adam'.*prodigy"):
        peers.get_peer("adam")
    assert peers.get_peer("cocob") is peers.PEERS["cocob"]


def test_registry_needs_only_optax_and_jax():
    source = inspect.getsource(peers)
    imports = [
        line.split()[1]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    ]
    assert {m.split(".")[0] for m in imports} <= {"collections", "typing", "optax"}


def test_bench_runs_every_peer_and_schedule_free_at_its_average():
    """``garo-optax bench`` registers every peer at its own rate; a
    schedule-free run reports the loss at its evaluation parameters."""
    from garo_optax._app import bench
    from garo_optax.meta import Task

    for name, peer in peers.PEERS.items():
        spec = bench.OPTIMIZERS[name]
        assert spec.default_lr is None and spec.eval_params is peer.eval_params
    task = Task(
        init=lambda key: jnp.zeros(3),
        loss=lambda p, batch: _loss(p),
        batch=lambda key, step: (),
        eval_loss=lambda p: jnp.sum(p**2),
    )
    spec = bench.OPTIMIZERS["schedule_free_sgd"]
    out = bench.make_run(task, spec.build, 4, eval_params=spec.eval_params)
    losses, _, held_out = out(bench.seed_keys([0]), jnp.float32(jnp.nan))
    peer, params = peers.PEERS["schedule_free_sgd"], jnp.zeros(3)
    tx = peer.factory()
    state, want = tx.init(params), []
    for _ in range(4):
        want.append(_loss(peers.evaluation_params(peer, state, params)))
        loss, grads = jax.value_and_grad(_loss)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(losses[0], want, rtol=1e-6)
    x = peers.evaluation_params(peer, state, params)
    np.testing.assert_allclose(held_out[0], jnp.sum(x**2), rtol=1e-6)
    assert not np.isclose(held_out[0], jnp.sum(params**2), rtol=1e-3)
