"""GARO under optax's conventions: complex parameters, inject_hyperparams."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax


@pytest.mark.parametrize("scale_free", [False, True])
def test_complex_gradient_moves_along_its_own_direction(scale_free):
    """A gradient 1j gives an update along -1j (not rotated), state real."""
    tx = garo_optax.garo(scale_free=scale_free, head_init_scale=0.0)
    params = jnp.zeros(2, jnp.complex64)
    updates, state = tx.update(jnp.full(2, 1j, jnp.complex64), tx.init(params), params)
    assert updates.dtype == jnp.complex64
    np.testing.assert_allclose(updates.real, 0.0, atol=1e-12)
    assert np.all(np.asarray(updates.imag) < 0)
    inner = state[0]
    for name in ("h", "lr", "mom", "wd", "g_ema"):
        assert not jnp.iscomplexobj(getattr(inner, name)), name
    if scale_free:
        assert not jnp.iscomplexobj(inner.nu)


def test_complex_seed_design_equals_sgd_on_real_pairs():
    """Seed design on z = x + iy equals the same run on the pair (x, y)."""
    target = jnp.array([1.0 + 2.0j, -0.5j])
    tx = garo_optax.garo(seed=1, head_init_scale=1.0, weight_decay_init=0.0)
    z = jnp.zeros(2, jnp.complex64)
    pair = {"re": jnp.zeros(2), "im": jnp.zeros(2)}
    sz, sp = tx.init(z), tx.init(pair)
    for _ in range(30):
        gz = z - target  # the conjugate Wirtinger gradient of |z - t|^2 / 2
        uz, sz = tx.update(gz, sz, z)
        z = optax.apply_updates(z, uz)
        gp = {"re": pair["re"] - target.real, "im": pair["im"] - target.imag}
        up, sp = tx.update(gp, sp, pair)
        pair = optax.apply_updates(pair, up)
    np.testing.assert_allclose(z.real, pair["re"], atol=1e-5)
    np.testing.assert_allclose(z.imag, pair["im"], atol=1e-5)


@pytest.mark.parametrize("scale_free", [False, True])
def test_float_options_are_injectable_under_jit(scale_free):
    """inject_hyperparams sees every float option of garo; changing an
    injected value in the state changes what the next jitted step does."""
    tx = optax.inject_hyperparams(garo_optax.garo)(
        learning_rate_init=0.01,
        momentum_init=0.5,
        weight_decay_init=1e-4,
        head_init_scale=0.0,
        scale_free=scale_free,
    )
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for name in ("learning_rate_init", "momentum_init", "weight_decay_init"):
        assert name in state.hyperparams, name

    @jax.jit
    def step(params, state):
        grads = {"w": 2.0 * params["w"]}
        updates, state = tx.update(grads, state, params, value=jnp.sum(params["w"]))
        return updates, state

    _, state = step(params, state)
    assert float(garo_optax.hyperparams(state)["mom"]) == pytest.approx(0.5, rel=1e-5)
    state.hyperparams["momentum_init"] = jnp.asarray(0.25, jnp.float32)
    _, state = step(params, state)
    assert float(garo_optax.hyperparams(state)["mom"]) == pytest.approx(0.25, rel=1e-5)
    assert step._cache_size() == 1  # no recompilation for a new value
