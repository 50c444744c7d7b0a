"""``garo_optax.hyperparams`` on every transform, and the deprecated ``GaroState``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


def _after_steps(tx, steps=3, **extra):
    state, params = tx.init(PARAMS), PARAMS
    for _ in range(steps):
        grads = jax.tree.map(lambda p: 0.1 * p + 0.2, params)
        updates, state = tx.update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
    return state


def _state_of(state, cls):
    is_cls = lambda x: isinstance(x, cls)
    return [x for x in jax.tree.leaves(state, is_leaf=is_cls) if is_cls(x)][0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: garo_optax.clara_sgd(0.05),
        lambda: garo_optax.adam_clara(1e-3),
        lambda: garo_optax.adam_clara_global(1e-3),
        lambda: garo_optax.adam_clara_local(1e-3),
        lambda: garo_optax.adam_clara_smoothed(1e-3),
    ],
)
def test_clara_reports_the_rate_of_its_state(make):
    state = _after_steps(make())
    hp = garo_optax.hyperparams(state)
    assert list(hp) == ["lr"]
    clara = _state_of(
        state, (garo_optax.ScaleByClaraState, garo_optax.ScaleByAdamClaraState)
    )
    np.testing.assert_array_equal(hp["lr"], clara.lr)
    assert float(hp["lr"]) != 0.0


def test_autosgm_reports_one_rate_per_leaf():
    state = _after_steps(garo_optax.autosgm(1e-2, numerator="markov"))
    hp = garo_optax.hyperparams(state)
    assert list(hp) == ["lr"] and hp["lr"].shape == (2,)
    np.testing.assert_array_equal(
        hp["lr"], _state_of(state, garo_optax.ScaleByAutoSgmState).lr
    )


def test_garo_reports_lr_momentum_and_weight_decay_inside_wrappers():
    tx = optax.chain(optax.clip(1.0), garo_optax.garo(garo_optax.pretrained()))
    state = _after_steps(optax.MultiSteps(tx, 1), value=jnp.float32(1.0))
    hp = garo_optax.hyperparams(state)
    assert list(hp) == ["lr", "mom", "wd"]
    garo_state = _state_of(state, garo_optax.ScaleByGaroState)
    for name in hp:
        np.testing.assert_array_equal(hp[name], getattr(garo_state, name))


def test_none_or_two_states_name_the_classes():
    with pytest.raises(ValueError, match="found 0"):
        garo_optax.hyperparams(optax.adam(1e-3).init(PARAMS))
    two = optax.chain(garo_optax.clara_sgd(0.05), garo_optax.autosgm(1e-2))
    with pytest.raises(ValueError, match="ScaleByAutoSgmState.*found 2"):
        garo_optax.hyperparams(two.init(PARAMS))


def test_garo_state_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="use garo_optax.ScaleByGaroState"):
        old = garo_optax.GaroState
    assert old is garo_optax.ScaleByGaroState
    assert "GaroState" not in garo_optax.__all__
    with pytest.raises(AttributeError, match="no_such_name"):
        garo_optax.no_such_name  # noqa: B018
