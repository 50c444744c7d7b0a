"""CLARA on complex parameters, as optax supports them.

optax's convention (``optax/_src/alias_test.py``): the caller passes the
conjugate of ``jax.grad``'s gradient, a step of ``-lr * g`` descends, squared
magnitudes are ``|x|^2 = x * conj(x)`` and rates are real. So a gradient ``1j``
must move a parameter along ``-1j``, and a complex problem with unit steps must
behave exactly like the real problem of its (real, imaginary) pairs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry

import garo_optax

pytestmark = pytest.mark.usefixtures("fast_compile")

TRANSFORMS = {
    "clara_sgd": lambda lr: garo_optax.clara_sgd(lr),
    "clara_sgd_global": lambda lr: garo_optax.clara_sgd(lr, normalize="global"),
    "clara_sgd_raw": lambda lr: garo_optax.clara_sgd(lr, unit_step=False),
    "scale_by_clara": lambda lr: registry.adam_then_scale_by_clara(lr),
    "adam_clara": lambda lr: garo_optax.adam_clara(lr),
    "adam_clara_raw": lambda lr: garo_optax.adam_clara(lr, unit_step=False),
    "adam_clara_global": lambda lr: garo_optax.adam_clara_global(lr),
    "adam_clara_local": lambda lr: garo_optax.adam_clara_local(lr),
    "adam_clara_smoothed": lambda lr: garo_optax.adam_clara_smoothed(lr),
    "adam_clara_smoothed_v1": lambda lr: garo_optax.adam_clara_smoothed(lr, version=1),
}


def _complex_grads(key, shapes, steps):
    keys = jax.random.split(key, 2 * len(shapes))
    return tuple(
        jax.lax.complex(
            jax.random.normal(keys[2 * i], (steps, *shape)),
            jax.random.normal(keys[2 * i + 1], (steps, *shape)),
        )
        for i, shape in enumerate(shapes)
    )


def _run(tx, params, grads_seq):
    """Updates and the state's lr for each step of a gradient sequence (jit)."""

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        lr = optax.tree.get(state, "lr")
        return (optax.apply_updates(params, updates), state), (updates, lr)

    (_, state), (updates, lrs) = jax.jit(
        lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)
    )(params, grads_seq)
    return state, updates, lrs


@pytest.mark.parametrize("name", TRANSFORMS)
def test_imaginary_gradient_steps_along_minus_j(name):
    """The issue's example: gradient 1j at lr 0.1 steps along -1j, like optax.adam
    (before, adam_clara stepped along -1 and clara_sgd by -1e11j)."""
    tx = TRANSFORMS[name](0.1)
    params = jnp.zeros(4, jnp.complex64)
    grads = jnp.full(4, 1j, jnp.complex64)
    state = tx.init(params)
    for _ in range(2):
        updates, state = jax.jit(tx.update)(grads, state, params)
        assert updates.dtype == jnp.complex64
        np.testing.assert_array_equal(updates.real, 0.0)
        assert np.all(updates.imag < 0)
    lr = optax.tree.get(state, "lr")
    assert lr.dtype == jnp.float32
    if name == "clara_sgd":  # the unit direction of four equal entries
        np.testing.assert_allclose(updates, -0.5j * lr, rtol=2e-3)
    if name == "adam_clara_raw":
        # Adam's first direction is g / |g| = 1j, the rate barely moved.
        np.testing.assert_allclose(updates.imag, -0.1, rtol=1e-3)


def test_optax_adam_example():
    """The issue's reference: optax.adam steps by -0.1j for 1j (up to its bias
    correction's float32 rounding), and so do adam_clara and clara_sgd."""
    params = jnp.zeros([], jnp.complex64)
    grads = jnp.asarray(1j, jnp.complex64)
    steps = {}
    for name, tx in {
        "adam": optax.adam(0.1),
        "adam_clara_raw": garo_optax.adam_clara(0.1, adapt=False, unit_step=False),
        "adam_clara": garo_optax.adam_clara(0.1, adapt=False),
        "clara_sgd": garo_optax.clara_sgd(0.1, adapt=False),
    }.items():
        steps[name], _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(steps[name], -0.1j, rtol=1e-4)
    np.testing.assert_allclose(steps["adam_clara_raw"], steps["adam"], rtol=1e-6)
    np.testing.assert_allclose(steps["clara_sgd"], -0.1j, rtol=1e-7)


@pytest.mark.parametrize("normalize", ["per_tensor", "global"])
@pytest.mark.parametrize("unit_step", [True, False])
def test_clara_sgd_equals_real_pairs(key, normalize, unit_step):
    """A complex leaf of shape S behaves as a real leaf of shape S + (2,) holding
    (real, imaginary): norms, paths and the rate are those of the real problem."""
    shapes = ((3, 4), (5,))
    grads = _complex_grads(key, shapes, 20)
    params = tuple(jnp.zeros(s, jnp.complex64) for s in shapes)
    pairs = lambda tree: jax.tree.map(
        lambda x: jnp.stack([x.real, x.imag], axis=-1), tree
    )
    tx = garo_optax.clara_sgd(
        0.05, damping=0.05, normalize=normalize, unit_step=unit_step
    )
    state, updates, lrs = _run(tx, params, grads)
    state_r, updates_r, lrs_r = _run(tx, pairs(params), pairs(grads))
    np.testing.assert_allclose(lrs, lrs_r, rtol=1e-5)
    assert np.ptp(np.log(lrs)) > 1e-3  # the rate moved
    for u, u_r in zip(pairs(updates), updates_r):
        np.testing.assert_allclose(u, u_r, rtol=1e-5, atol=1e-8)
    for p, p_r in zip(pairs(state[0].path), state_r[0].path):
        np.testing.assert_allclose(p, p_r, rtol=1e-5, atol=1e-8)


def test_adam_clara_without_adaptation_equals_optax_adam(key):
    shapes = ((3, 4), (5,), ())
    grads = _complex_grads(key, shapes, 20)
    params = tuple(jnp.zeros(s, jnp.complex64) for s in shapes)
    tx = garo_optax.adam_clara(1e-2, adapt=False, unit_step=False)
    state, updates, lrs = _run(tx, params, grads)
    _, updates_ref, _ = _run(optax.adam(1e-2), params, grads)
    for u, u_ref in zip(updates, updates_ref):
        np.testing.assert_allclose(u, u_ref, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(lrs, np.float32(1e-2))
    # The second moment |g|^2 is real (optax keeps it complex with a zero
    # imaginary part).
    assert all(v.dtype == jnp.float32 for v in state[1].nu)
    assert all(m.dtype == jnp.complex64 for m in state[1].mu)


def test_fused_adam_clara_equals_chain_complex(key):
    """The fused core and optax.scale_by_adam -> scale_by_clara agree."""
    shapes = ((3, 4), (5,))
    grads = _complex_grads(key, shapes, 30)
    params = tuple(jnp.zeros(s, jnp.complex64) for s in shapes)
    kwargs = dict(learning_rate=0.05, damping=0.1)
    _, updates, lrs = _run(garo_optax.adam_clara(**kwargs), params, grads)
    _, updates_c, lrs_c = _run(
        registry.adam_then_scale_by_clara(**kwargs), params, grads
    )
    np.testing.assert_allclose(lrs, lrs_c, rtol=1e-5)
    assert np.ptp(np.log(lrs)) > 1e-3
    for u, u_c in zip(updates, updates_c):
        np.testing.assert_allclose(u, u_c, rtol=1e-4, atol=1e-8)


CONVERGE = [
    e
    for e in registry.REGISTRY
    if e.lr_in_state and "clara" in e.name and "convergence" not in e.xfail
]


@pytest.mark.parametrize("entry", CONVERGE, ids=lambda e: e.name)
def test_parabola_converges_complex64(entry):
    """optax's complex parabola: sum |p - (1 + 1j) t|^2 from [-1, 10, 1]."""
    target = jnp.array([1.0, -1.0, 1.0], jnp.complex64) * (1 + 1j)
    x0 = jnp.array([-1.0, 10.0, 1.0], jnp.complex64)
    loss = lambda x: jnp.sum(jnp.real(jnp.conj(x - target) * (x - target)))
    opt = entry.make(**entry.converge)

    def body(carry, _):
        x, state = carry
        grad = jnp.conj(jax.grad(loss)(x))  # optax's convention
        updates, state = opt.update(grad, state, x)
        return (optax.apply_updates(x, updates), state), None

    @jax.jit
    def go(x0):
        return jax.lax.scan(body, (x0, opt.init(x0)), length=entry.steps)[0]

    x, state = go(x0)
    assert x.dtype == jnp.complex64
    np.testing.assert_allclose(x, target, rtol=3e-2, atol=3e-2)
    lr = optax.tree.get(state, "lr")
    assert lr.dtype == jnp.float32 and np.isfinite(lr)


def test_inject_hyperparams_complex(key):
    """inject_hyperparams casts hyperparameters to complex64 for complex params;
    CLARA takes their real part (no complex-to-real cast warning)."""
    shapes = ((4,), (2, 3))
    grads = _complex_grads(key, shapes, 3)
    params = tuple(jnp.zeros(s, jnp.complex64) for s in shapes)
    kwargs = dict(learning_rate=1e-2, c=0.2, damping=1e-2)
    injected = optax.inject_hyperparams(garo_optax.adam_clara)(**kwargs)
    state, updates, lrs = _run(injected, params, grads)
    assert state.hyperparams["learning_rate"].dtype == jnp.complex64
    _, updates_ref, lrs_ref = _run(garo_optax.adam_clara(**kwargs), params, grads)
    np.testing.assert_allclose(lrs, lrs_ref, rtol=1e-6)
    for u, u_ref in zip(updates, updates_ref):
        np.testing.assert_allclose(u, u_ref, rtol=1e-5, atol=1e-9)


def test_complex128_statistics_are_float64(key):
    with jax.enable_x64(True):
        params = jnp.zeros(3, jnp.complex128)
        grads = jnp.array([1j, 1.0, 1 - 1j], jnp.complex128)
        for tx in (garo_optax.clara_sgd(0.1), garo_optax.adam_clara(0.1)):
            state = tx.init(params)
            updates, state = jax.jit(tx.update)(grads, state, params)
            assert updates.dtype == jnp.complex128
            lr = optax.tree.get(state, "lr")
            assert lr.dtype == jnp.float64
            # Per tensor unit steps: |update| = lr_0 = 0.1.
            assert np.linalg.norm(updates) == pytest.approx(0.1, rel=1e-12)
