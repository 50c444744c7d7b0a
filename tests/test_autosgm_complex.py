"""AutoSGM on complex parameters, handled as ``optax.adam`` handles them.

Squares are |z|^2 = z conj(z), so the moments, the denominator, the numerator
statistics and ``lr`` are real; the correlation of "markov" and "chebyshev" is
Re(conj(w) g / d). Gradients are JAX's conjugated, as optax's own tests pass
them (``alias_test.py``: ``updates = jax.tree.map(lambda x: x.conj(), updates)``).
"""

import cmath

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

COMPLEX_NUMERATORS = ("constant", "max_bound", "markov", "chebyshev")


def _abs_sq(z):
    return jnp.real(z * jnp.conj(z))


def _tree_allclose(actual, desired, **tols):
    # helpers.tree_allclose casts to float64, which drops imaginary parts.
    assert jax.tree.structure(actual) == jax.tree.structure(desired)
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(d), **tols)


def _all_finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def _run(tx, params, grad_fn, steps):
    """Parameters after each step (stacked) and the final state."""

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    @jax.jit
    def run(params):
        (_, state), traj = jax.lax.scan(step, (params, tx.init(params)), length=steps)
        return traj, state

    return run(params)


def test_imaginary_gradient_is_not_rotated():
    """The issue's case: a gradient 1j at lr 0.1 updates by -0.1j, as Adam does."""
    grads = {"w": jnp.array([1j], jnp.complex64)}
    want, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(grads))
    tx = garo_optax.autosgm(0.1, eps=1e-8, eps_in_sqrt=False)
    got, _ = tx.update(grads, tx.init(grads))
    # optax's float32 bias correction rounds 1 - 0.999 another way: 7e-6 apart.
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-5, atol=0)
    np.testing.assert_allclose(got["w"], [-0.1j], rtol=1e-6)


@pytest.mark.parametrize(
    "reference, kwargs",
    [
        (lambda: optax.adam(0.05, 0.9, 0.99, 1e-8), dict(eps_in_sqrt=False)),
        (
            lambda: optax.adamw(0.05, 0.9, 0.99, 1e-8, weight_decay=0.01),
            dict(
                eps_in_sqrt=False,
                weight_decay=0.01 / (1 - 0.9),
                weight_decay_mode="decoupled",
            ),
        ),
    ],
    ids=["adam", "adamw"],
)
def test_adam_configuration_equals_optax_on_complex64(reference, kwargs, key):
    """Step by step on a complex64 tree, with the parameters of optax's run."""
    keys = jax.random.split(key, 4)
    shapes = {"a": (3, 4), "b": (5,)}
    params = {
        k: jax.random.normal(keys[i], s, jnp.complex64)
        for i, (k, s) in enumerate(shapes.items())
    }
    target = {
        k: jax.random.normal(keys[2 + i], s, jnp.complex64)
        for i, (k, s) in enumerate(shapes.items())
    }
    # The conjugate of jax.grad of sum |p - target|^2 (what optax expects).
    grad_fn = lambda p: jax.tree.map(lambda x, t: 2.0 * (x - t), p, target)
    ref_tx = reference()
    tx = garo_optax.autosgm(0.05, pole=0.9, b2=0.99, eps=1e-8, **kwargs)

    def step(carry, _):
        params, ref_state, state = carry
        grads = grad_fn(params)
        want, ref_state = ref_tx.update(grads, ref_state, params)
        got, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, want), ref_state, state), (want, got)

    @jax.jit
    def run(params):
        carry = (params, ref_tx.init(params), tx.init(params))
        return jax.lax.scan(step, carry, length=40)[1]

    want, got = run(params)
    assert all(x.dtype == jnp.complex64 for x in jax.tree.leaves(got))
    _tree_allclose(got, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("numerator", COMPLEX_NUMERATORS)
def test_phase_rotation_rotates_the_trajectory(numerator):
    """A real problem rotated by e^{i theta} runs the real trajectory rotated.

    |z|^2 and Re(conj(w) g) do not see a common phase, so every statistic is
    the real run's; squaring the complex numbers instead would turn the step.
    """
    w0 = jnp.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
    target = jnp.array([[1.0, 0.5, -2.0], [-1.0, 0.0, 0.4]])
    kwargs = dict(numerator=numerator, beta_n=0.99, zero=0.3, weight_decay=0.01)
    tx = garo_optax.autosgm(0.05, **kwargs)
    real, real_state = _run(tx, {"w": w0}, lambda p: {"w": p["w"] - target}, 30)
    phase = jnp.complex64(cmath.exp(0.7j))
    cplx, cplx_state = _run(
        tx,
        {"w": phase * w0},
        lambda p: {"w": p["w"] - phase * target},
        30,
    )
    assert cplx["w"].dtype == jnp.complex64
    np.testing.assert_allclose(cplx["w"], phase * real["w"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(cplx_state[0].lr, real_state[0].lr, rtol=2e-5)
    assert np.max(np.abs(real["w"][-1] - w0)) > 0.1  # it moved


@pytest.mark.parametrize("numerator", COMPLEX_NUMERATORS)
def test_complex_parabola_converges(numerator):
    """optax's ``alias_test`` parabola on complex64: the same target and tolerance."""
    params = jnp.array([-1.0, 10.0, 1.0], jnp.complex64)
    final = jnp.array([1.0, -1.0, 1.0], jnp.complex64) * (1 + 1j)

    def objective(p):
        return jnp.sum(_abs_sq(p - final))

    tx = garo_optax.autosgm(0.1, numerator=numerator, beta_n=0.99)
    traj, state = _run(tx, params, lambda p: jax.grad(objective)(p).conj(), 2000)
    np.testing.assert_allclose(traj[-1], final, rtol=3e-2, atol=3e-2)
    assert objective(traj[-1]) < 1e-3 * objective(params)
    inner = state[0]
    assert inner.mu.dtype == jnp.complex64
    assert inner.lr.dtype == jnp.float32 and inner.nu.dtype == jnp.float32


@pytest.mark.parametrize("numerator", COMPLEX_NUMERATORS)
def test_complex_state_is_real_where_statistics_are(numerator):
    """Only the smoothing state is complex; dtypes are stable across updates."""
    with jax.enable_x64(True):
        params = {
            "z": jnp.ones((2, 3), jnp.complex64),
            "x": jnp.ones(4, jnp.float32),
            "zz": jnp.ones(2, jnp.complex128),
        }
        tx = garo_optax.scale_by_autosgm(0.1, numerator=numerator, weight_decay=0.1)
        state = jax.jit(tx.init)(params)
        updates, new_state = jax.jit(tx.update)(params, state, params)
    assert helpers.tree_signature(new_state) == helpers.tree_signature(state)
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(
        lambda p: p.dtype, params
    )
    assert state.mu["z"].dtype == jnp.complex64
    assert state.mu["zz"].dtype == jnp.complex128
    assert state.nu["z"].dtype == jnp.float32 and state.nu["zz"].dtype == jnp.float64
    assert state.lr.dtype == jnp.float64  # a complex128 leaf makes scalars float64
    for field in ("w_sq", "x_mean", "x_var", "corr", "corr_clip"):
        for leaf in jax.tree.leaves(getattr(state, field)):
            assert not jnp.iscomplexobj(leaf), field
    assert _all_finite(updates) and _all_finite(new_state)


def test_complex_leaf_refused_where_no_complex_form():
    """chebyshev_scalar subtracts a norm from every entry: no complex form."""
    params = {"real": jnp.ones(3), "layer": {"kernel": jnp.ones(2, jnp.complex64)}}
    tx = garo_optax.autosgm(0.1, numerator="chebyshev_scalar")
    match = r"numerator='chebyshev_scalar' does not support complex .*\['kernel'\]"
    with pytest.raises(ValueError, match=match):
        tx.init(params)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(tx.init, params)
    tx.init({"real": jnp.ones(3)})  # real leaves are fine
    tx = garo_optax.autosgm(0.1, mu_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match=r"mu_dtype=bfloat16 .*\['kernel'\]"):
        tx.init(params)


@pytest.mark.parametrize("numerator", ["markov", "chebyshev"])
def test_correlation_is_the_real_inner_product(numerator):
    """x = Re(conj(w) g / d): a gradient orthogonal to w (in C as R^2) has none.

    With w = 1 and g = 5j, x = 0 and b_1 sits on the floor 0.01 lr0 (d = 5 >= 1,
    so the Tukey bound is 0); the product w g itself would have |x| = 1, the
    x of the aligned gradient g = 5, whose b_1 is 0.04 l (beta_n = 0.99).
    """
    lr0, params = 0.1, {"w": jnp.array([1.0], jnp.complex64)}
    tx = garo_optax.scale_by_autosgm(lr0, numerator=numerator, beta_n=0.99)

    def first_a(grad):
        _, state = tx.update(
            {"w": jnp.array([grad], jnp.complex64)}, tx.init(params), params
        )
        return float(state.lr[0])

    ell = lr0 / (1 + (0.99 if numerator == "markov" else 1.0) * 0.01)
    h = 0.04 if numerator == "markov" else 0.1  # spec 11.1: hb3 and hb4 on S
    assert first_a(5j) == pytest.approx(0.9 * 0.01 * lr0, rel=1e-5)
    assert first_a(-5j) == pytest.approx(0.9 * 0.01 * lr0, rel=1e-5)
    assert first_a(5.0) == pytest.approx(0.9 * h * ell, rel=1e-5)
    assert first_a(5.0 * cmath.exp(0.5j)) < first_a(5.0)
