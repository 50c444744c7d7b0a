"""The GARO controller: initialization, GRU cell, heads and features.

The NumPy GRU below is written from ``specs/garo.md`` §4.2–§4.4, not from the
library. Imports ``garo_optax._src.controller`` for the pure cell and heads.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax._src import controller as ctl

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gru(theta, x, h):
    """PyTorch-convention GRU step in float64 NumPy."""
    w_ih, w_hh, b_ih, b_hh = (np.asarray(a, np.float64) for a in theta[:4])
    hs = h.shape[0]
    gi = w_ih @ x + b_ih
    gh = w_hh @ h + b_hh
    r = _sigmoid(gi[:hs] + gh[:hs])
    z = _sigmoid(gi[hs : 2 * hs] + gh[hs : 2 * hs])
    n = np.tanh(gi[2 * hs :] + r * gh[2 * hs :])
    return (1 - z) * n + z * h


def np_heads(theta, h):
    raw = np.asarray(theta.head_w, np.float64) @ h + np.asarray(
        theta.head_b, np.float64
    )
    softplus = lambda v: np.log1p(np.exp(v))
    return softplus(raw[0]), np.tanh(raw[1]), softplus(raw[2])


def test_shapes_and_init_bounds(key):
    theta = garo_optax.init_controller(key, hidden_size=8)
    assert theta.w_ih.shape == (24, 4) and theta.w_hh.shape == (24, 8)
    assert theta.b_ih.shape == theta.b_hh.shape == (24,)
    assert theta.head_w.shape == (3, 8) and theta.head_b.shape == (3,)
    assert theta.ctx_w.shape == (0, 8)
    for w in theta[:4]:
        assert w.dtype == jnp.float32
        assert np.all(np.abs(w) <= 1 / math.sqrt(8))
    zero = garo_optax.init_controller(key, hidden_size=8, head_init_scale=0.0)
    np.testing.assert_array_equal(zero.head_w, np.zeros((3, 8)))


def test_head_biases_from_spec(key):
    theta = garo_optax.init_controller(key)
    np.testing.assert_allclose(theta.head_b, [-4.600166, 0.0, -13.815510], rtol=1e-6)


@pytest.mark.parametrize(
    "lr, mom, wd", [(0.01, 0.0, 1e-6), (0.3, 0.9, 1e-2), (1e-4, -0.5, 0.0)]
)
def test_initial_outputs_equal_init_values(key, lr, mom, wd):
    theta = garo_optax.init_controller(
        key, learning_rate_init=lr, momentum_init=mom, weight_decay_init=wd
    )
    got = ctl.heads(theta, jnp.zeros(32))
    np.testing.assert_allclose(np.asarray(got), [lr, mom, wd], rtol=1e-5)
    if wd == 0.0:
        assert got[2] == 0.0
    state = garo_optax.scale_by_garo(theta).init({"w": jnp.zeros(3)})
    np.testing.assert_allclose([state.lr, state.mom, state.wd], [lr, mom, wd], 1e-5)


def test_gru_and_heads_match_numpy(key):
    theta = garo_optax.init_controller(key, hidden_size=6, head_init_scale=1.0)
    rng = np.random.default_rng(0)
    h = np.zeros(6)
    for _ in range(3):
        x = rng.uniform(-2, 2, 4)
        want = np_gru(theta, x, h)
        got = ctl.gru_cell(theta, jnp.asarray(x, jnp.float32), jnp.asarray(h, "f4"))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        h = want
        np.testing.assert_allclose(
            np.asarray(ctl.heads(theta, jnp.asarray(h, jnp.float32))),
            np_heads(theta, h),
            rtol=1e-5,
        )


def test_momentum_nonneg_clips(key):
    theta = garo_optax.init_controller(key, momentum_init=-0.5)
    assert ctl.heads(theta, jnp.zeros(32), momentum_nonneg=True)[1] == 0.0
    theta = garo_optax.init_controller(key, momentum_init=0.999)
    mom = ctl.heads(theta, jnp.zeros(32), momentum_nonneg=True)[1]
    np.testing.assert_allclose(mom, 0.99, rtol=1e-6)


def np_features(g, v, g_ema, t, loss=None, loss_mean=0.0, loss_var=0.0):
    """The four features of spec §4.2 (``t`` is the 1-based step)."""
    norm = np.sqrt(sum(np.sum(a**2) for a in g))
    v_norm = np.sqrt(sum(np.sum(a**2) for a in v))
    f1 = 0.2 * np.clip(np.log(norm + 1e-12), -10, 10)
    if t == 1:
        return np.array([f1, 0.0, 0.0, 0.0]), norm
    g_hat = g_ema / (1 - 0.9 ** (t - 1))
    f2 = 0.5 * np.clip(np.log((norm + 1e-12) / (g_hat + 1e-12)), -5, 5)
    dot = sum(np.sum(a * b) for a, b in zip(g, v))
    f3 = dot / (norm * v_norm + 1e-12)
    f4 = 0.0
    if loss is not None:
        corr = 1 - 0.9 ** (t - 1)
        z = (loss - loss_mean / corr) / np.sqrt(loss_var / corr + 1e-8)
        f4 = 0.2 * np.clip(z, -5, 5)
    return np.array([f1, f2, f3, f4]), norm


def test_features_on_a_hand_made_tree(key):
    """Three steps with a loss; the hidden state follows the NumPy features."""
    theta = garo_optax.init_controller(key, hidden_size=5, head_init_scale=0.5)
    tx = garo_optax.scale_by_garo(theta)
    params = {"a": jnp.array([1.0, 2.0]), "b": (jnp.array([[0.5, -1.0]]),)}
    grads = [
        {"a": jnp.array([3.0, -4.0]), "b": (jnp.array([[12.0, 0.0]]),)},
        {"a": jnp.array([-1.0, 2.0]), "b": (jnp.array([[0.5, 0.25]]),)},
        {"a": jnp.array([2.0, 2.0]), "b": (jnp.array([[-3.0, 1.0]]),)},
    ]
    losses = [5.0, 3.0, 4.0]
    state = tx.init(params)
    h, v = np.zeros(5), [np.zeros(2), np.zeros((1, 2))]
    g_ema = loss_mean = loss_var = 0.0
    for t, (g, loss) in enumerate(zip(grads, losses), start=1):
        _, state = tx.update(g, state, params, value=jnp.float32(loss))
        flat = [np.asarray(a, np.float64) for a in jax.tree.leaves(g)]
        x, norm = np_features(flat, v, g_ema, t, loss, loss_mean, loss_var)
        if t == 1:
            np.testing.assert_allclose(x[0], 0.2 * np.log(13.0), rtol=1e-6)
        h = np_gru(theta, x, h)
        np.testing.assert_allclose(state.h, h, rtol=1e-5, atol=1e-6)
        lr, mom, wd = np_heads(theta, h)
        np.testing.assert_allclose([state.lr, state.mom, state.wd], [lr, mom, wd], 2e-5)
        v = [mom * a + b for a, b in zip(v, flat)]
        g_ema = 0.9 * g_ema + 0.1 * norm
        loss_mean = 0.9 * loss_mean + 0.1 * loss
        loss_var = 0.9 * loss_var + 0.1 * (loss - loss_mean / (1 - 0.9**t)) ** 2
        np.testing.assert_allclose(state.g_ema, g_ema, rtol=1e-6)
        np.testing.assert_allclose(state.loss_mean, loss_mean, rtol=1e-6)
        np.testing.assert_allclose(state.loss_var, loss_var, rtol=1e-5, atol=1e-6)


def test_zero_gradient_features_are_finite():
    x, norm = ctl.features(
        sq_norm=jnp.float32(0.0),
        dot_gv=jnp.float32(0.0),
        v_sq_norm=jnp.float32(0.0),
        g_ema=jnp.float32(0.0),
        count=jnp.int32(3),
        loss=None,
        loss_mean=jnp.float32(0.0),
        loss_var=jnp.float32(0.0),
    )
    assert norm == 0.0
    np.testing.assert_allclose(x, [-2.0, 0.0, 0.0, 0.0])


def test_overflowing_statistics_give_finite_features():
    inf = jnp.float32(jnp.inf)
    x, norm = ctl.features(
        sq_norm=inf,
        dot_gv=jnp.float32(jnp.nan),
        v_sq_norm=inf,
        g_ema=jnp.float32(1e30 * (1 - 0.9**3)),  # so that Ĝ = G = 1e30
        count=jnp.int32(3),
        loss=jnp.float32(1.0),
        loss_mean=jnp.float32(0.0),
        loss_var=jnp.float32(0.0),
    )
    assert np.all(np.isfinite(x)) and np.isfinite(norm)
    np.testing.assert_allclose(x[:3], [2.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(hidden_size=2.5), "hidden_size"),
        (dict(head_init_scale=-0.1), "head_init_scale"),
        (dict(learning_rate_init=0.0), "learning_rate_init"),
        (dict(momentum_init=1.0), "momentum_init"),
        (dict(momentum_init=-1.0), "momentum_init"),
        (dict(weight_decay_init=-1e-3), "weight_decay_init"),
        (dict(granularity="layer"), "granularity"),
    ],
)
def test_bad_options_raise(key, kwargs, match):
    with pytest.raises(ValueError, match=match):
        garo_optax.init_controller(key, **kwargs)
    with pytest.raises(ValueError, match=match):
        garo_optax.garo(**kwargs)


def test_mismatched_controller_raises(key):
    theta = garo_optax.init_controller(key, hidden_size=4)
    bad = theta._replace(w_ih=jnp.zeros((12, 5)))
    with pytest.raises(ValueError, match=r"w_ih must have shape \(12, 4\)"):
        garo_optax.scale_by_garo(bad)
    with pytest.raises(
        ValueError, match=r"w_ih must have shape \(12, 8\) for a per_tensor"
    ):
        garo_optax.scale_by_garo(theta, granularity="per_tensor")
    per_tensor = garo_optax.init_controller(key, granularity="per_tensor")
    assert per_tensor.w_ih.shape == (96, 8) and per_tensor.ctx_w.shape == (4, 32)
    with pytest.raises(ValueError, match=r"w_ih must have shape \(96, 4\)"):
        garo_optax.scale_by_garo(per_tensor)
    with pytest.raises(ValueError, match="GaroController"):
        garo_optax.scale_by_garo({"w": jnp.zeros(3)})
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        garo_optax.garo(learning_rate=0.1)
    with pytest.raises(ValueError, match="not both"):
        garo_optax.scale_by_garo(theta, hidden_size=4)


def test_controller_is_a_pytree_of_arrays(key):
    theta = garo_optax.init_controller(key)
    leaves = jax.tree.leaves(theta)
    assert len(leaves) == 7 and all(isinstance(w, jax.Array) for w in leaves)
    assert optax.tree.dtype(theta) == jnp.float32


def test_float64_under_x64(key):
    with jax.enable_x64(True):
        theta = garo_optax.init_controller(key)
        assert all(w.dtype == jnp.float64 for w in jax.tree.leaves(theta))
