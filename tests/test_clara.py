"""CLARA: the test vectors and invariants of the spec, reductions to optax, bad input.

Numbers marked "spec" are the values of the CLARA specification's test vectors
(section 7), computed there by hand or by simulation.
"""

import math

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

C = 0.2
MU_SGD = C / (2 - C)
MU_ADAM = garo_optax.adam_clara_reference(C, 0.9)


def _params(sizes=(100, 100, 100)):
    return tuple(jnp.ones(n, jnp.float32) for n in sizes)


def _grads(key, params, scale=1.0):
    keys = jax.random.split(key, len(params))
    # |g| >> eps so that Adam's first direction is sign(g).
    return tuple(
        scale
        * (1.0 + jax.random.uniform(k, p.shape))
        * jnp.sign(jax.random.normal(k, p.shape))
        for k, p in zip(keys, params)
    )


def _run(tx, params, grads_seq):
    """Runs `tx` over a sequence (leading axis) of gradient trees under jit."""

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        lr = optax.tree.get(state, "lr")
        return (optax.apply_updates(params, updates), state), (updates, lr)

    (params, state), (updates, lrs) = jax.jit(
        lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)
    )(params, grads_seq)
    return params, state, updates, lrs


def _repeat(tree, n):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree)


# --- Seed variants (spec 7.1 - 7.4; d = 1, base lr 1e-3). -----------------------


def test_step_one_global_factor_is_universal(key):
    params = _params((7, 30, 1))
    grads = _grads(key, params, scale=3.0)
    tx = garo_optax.adam_clara_global(1e-3)
    _, state, updates, lrs = _run(tx, params, _repeat(grads, 1))
    f = 0.938005  # spec: exp(0.1 * (0.36 - 1))
    assert lrs[0] == pytest.approx(1e-3 * f, rel=1e-5)
    for u, g in zip(updates, grads):
        np.testing.assert_allclose(u[0], -1e-3 * f * jnp.sign(g), rtol=1e-5)


@pytest.mark.parametrize("version", [1, 2])
def test_step_one_local_compounds_over_tensors(key, version):
    params = _params()
    grads = _grads(key, params)
    tx = garo_optax.adam_clara_local(1e-3, version=version)
    _, _, updates, lrs = _run(tx, params, _repeat(grads, 1))
    if version == 2:
        f = 0.938005  # spec 7.1: tensor k uses 1e-3 * f ** k
        for k, (u, g) in enumerate(zip(updates, grads), start=1):
            np.testing.assert_allclose(u[0], -1e-3 * f**k * jnp.sign(g), rtol=1e-5)
        assert lrs[0] == pytest.approx(0.825307e-3, rel=1e-5)  # spec, K = 3
    else:
        # v1 accumulates unit directions: |p|^2 / D = 0.36 / D, factor pinned near
        # exp(-c / 2d) = 0.905 (spec 4.5.4).
        f = math.exp(0.1 * (0.36 / 100 - 1))
        assert lrs[0] == pytest.approx(1e-3 * f**3, rel=1e-5)


def test_step_one_smoothed_v2_moving_average(key):
    params = _params()
    grads = _grads(key, params)
    tx = garo_optax.adam_clara_smoothed(1e-3)
    _, _, updates, lrs = _run(tx, params, _repeat(grads, 1))
    f = 1.246077  # spec: exp(5 * 0.1 * (1.44 - 1))
    for k, (u, g) in enumerate(zip(updates, grads), start=1):
        expected = 1e-3 * (f - (f - 1) * 0.9**k)
        np.testing.assert_allclose(u[0], -expected * jnp.sign(g), rtol=1e-5)
    assert lrs[0] == pytest.approx(1.066687e-3, rel=1e-5)  # spec, K = 3


def test_step_one_smoothed_v1_factor(key):
    params = _params()
    grads = _grads(key, params)
    tx = garo_optax.adam_clara_smoothed(1e-3, version=1)
    _, _, updates, lrs = _run(tx, params, _repeat(grads, 1))
    f = 0.905163  # spec: clip(exp(0.1 * (0.36 / 100 - 1)), 0.5, 2)
    ell = [1e-3 * (f - (f - 1) * 0.9**k) for k in (1, 2, 3)]
    for u, g, lr in zip(updates, grads, ell):
        # v1 steps along the unit direction of each tensor.
        np.testing.assert_allclose(u[0], -lr * jnp.sign(g) / 10.0, rtol=1e-5)
    assert lrs[0] == pytest.approx(ell[-1], rel=1e-5)


def test_constant_gradient_limits(key):
    params = _params()
    grads = _repeat(_grads(key, params), 300)
    _, _, _, lrs = _run(garo_optax.adam_clara_global(1e-3), params, grads)
    assert lrs[-1] / 1e-3 == pytest.approx(math.exp(0.8), abs=1e-3)  # spec 2.2255
    _, _, _, lrs = _run(garo_optax.adam_clara_smoothed(1e-3), params, grads)
    assert lrs[-1] == pytest.approx(10 * 1e-3, rel=1e-4)  # spec: ell -> 10 base


@pytest.mark.parametrize("factory", ["adam_clara_global", "adam_clara_local"])
def test_seed_without_adaptation_is_adam(key, factory):
    params = _params((5, 8, 3))
    grads = jax.vmap(lambda k: _grads(k, params))(jax.random.split(key, 20))
    tx = getattr(garo_optax, factory)(1e-3, adapt=False)
    ours, *_ = _run(tx, params, grads)
    reference, *_ = _run(optax.adam(1e-3), params, grads)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_smoothed_without_adaptation(key):
    params = _params((5, 8, 3))
    grads = jax.vmap(lambda k: _grads(k, params))(jax.random.split(key, 10))
    faithful, *_ = _run(garo_optax.adam_clara_smoothed(adapt=False), params, grads)
    for a, b in zip(faithful, params):  # spec 4.5.3: the original never moves
        np.testing.assert_array_equal(a, b)
    fixed, *_ = _run(
        garo_optax.adam_clara_smoothed(adapt=False, faithful=False), params, grads
    )
    adam, *_ = _run(optax.adam(1e-3), params, grads)
    for a, b in zip(fixed, adam):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_order_dependence(key):
    params = _params((10, 20, 30))
    grads = jax.vmap(lambda k: _grads(k, params))(jax.random.split(key, 5))
    flip = lambda tree: tree[::-1]  # reverses the leaf order
    flipped_grads = flip(grads)
    _, _, upd, lrs = _run(garo_optax.adam_clara_local(), params, grads)
    _, _, upd_f, lrs_f = _run(
        garo_optax.adam_clara_local(), flip(params), flipped_grads
    )
    # The product (the rate after the last tensor) is order-invariant...
    np.testing.assert_allclose(lrs, lrs_f, rtol=1e-5)
    # ... but the rates the tensors see are not.
    assert not np.allclose(upd[0][0], upd_f[2][0], rtol=1e-4)
    _, _, upd, lrs = _run(garo_optax.adam_clara_global(), params, grads)
    _, _, upd_f, lrs_f = _run(
        garo_optax.adam_clara_global(), flip(params), flipped_grads
    )
    np.testing.assert_allclose(lrs, lrs_f, rtol=1e-6)
    np.testing.assert_allclose(upd[0], upd_f[2], rtol=1e-6)


def test_local_faithful_false_clamps_rate(key):
    params = _params()
    grads = _repeat(_grads(key, params), 100)  # constant gradient: overflows
    _, _, _, lrs = _run(garo_optax.adam_clara_local(), params, grads)
    assert lrs[-1] > 1.0  # unbounded in the original
    _, _, _, lrs = _run(garo_optax.adam_clara_local(faithful=False), params, grads)
    assert float(lrs.max()) == pytest.approx(1e-2, rel=1e-6)


# --- Published CLARA (spec 7.5 - 7.12; d = 1e-3 unless stated). -----------------


@pytest.mark.parametrize("normalize", ["per_tensor", "global"])
def test_step_one_sgd_clara(key, normalize):
    params = _params((3, 50, 1))
    grads = _grads(key, params)
    tx = garo_optax.clara_sgd(0.5, normalize=normalize)
    _, state, updates, lrs = _run(tx, params, _repeat(grads, 1))
    assert lrs[0] / 0.5 == pytest.approx(0.99936020, rel=1e-6)  # spec
    if normalize == "per_tensor":
        for u, g in zip(updates, grads):
            np.testing.assert_allclose(u[0], -0.5 * g / jnp.linalg.norm(g), rtol=1e-5)
    else:
        norm = optax.tree.norm(grads)
        for u, g in zip(updates, grads):
            np.testing.assert_allclose(u[0], -0.5 * g / norm, rtol=1e-5)


def test_step_one_adam_clara(key):
    params = _params((3, 50, 1))
    grads = _grads(key, params)
    _, _, _, lrs = _run(garo_optax.adam_clara(1.0), params, _repeat(grads, 1))
    assert MU_ADAM == pytest.approx(0.682540, rel=1e-5)  # spec closed form
    assert lrs[0] == pytest.approx(0.99905905, rel=1e-6)  # spec


def test_constant_gradient_sgd_closed_form(key):
    params = _params((4, 9))
    n, d = 60, 1e-2
    grads = _repeat(_grads(key, params), n)
    _, _, _, lrs = _run(garo_optax.clara_sgd(1e-2, damping=d), params, grads)
    exponents = [(1 - 0.8**j) ** 2 / MU_SGD - 1 for j in range(1, n + 1)]
    expected = 1e-2 * np.exp(d * np.cumsum(exponents))  # spec 7.7
    np.testing.assert_allclose(lrs, expected, rtol=2e-5)
    growth = np.log(lrs[-1] / lrs[-2]) / d
    assert growth == pytest.approx(8.0, abs=1e-3)  # spec: tends to e^{8d}


def test_constant_gradient_adam_growth(key):
    params = _params((4, 9))
    grads = _repeat(_grads(key, params), 200)
    d = 1e-2
    _, _, _, lrs = _run(garo_optax.adam_clara(1e-3, damping=d), params, grads)
    growth = np.log(lrs[-1] / lrs[-2]) / d
    assert growth == pytest.approx(1 / 0.682540 - 1, abs=2e-3)  # spec 0.465


def _noise_log_growth(tx, key, dim=1000, steps=3000):
    params = (jnp.zeros(dim),)
    grads = (jax.random.normal(key, (steps, dim)),)
    _, _, _, lrs = _run(tx, params, grads)
    lrs = np.asarray(lrs, np.float64)
    return np.mean(np.log(lrs[-2000:] / lrs[-2001:-1])) / 1e-3


def test_random_walk_calibration(key):
    # spec 7.9: with i.i.d. noise the rate neither grows nor shrinks on average.
    assert abs(_noise_log_growth(garo_optax.clara_sgd(1e-3), key)) < 0.05
    assert abs(_noise_log_growth(garo_optax.adam_clara(1e-3), key)) < 0.05
    # With the random-walk reference Adam's path looks ~6x too long (the bug
    # that the published algorithm fixes).
    naive = garo_optax.adam_clara(1e-3, mu=MU_SGD)
    assert _noise_log_growth(naive, key) > 4.0


def test_c_one_keeps_rate(key):
    params = _params((5, 6))
    grads = jax.vmap(lambda k: _grads(k, params))(jax.random.split(key, 20))
    _, _, _, lrs = _run(garo_optax.clara_sgd(0.1, c=1.0, damping=0.5), params, grads)
    np.testing.assert_allclose(lrs, 0.1, rtol=1e-6)  # spec 7.10


def test_without_adaptation_equals_optax(key):
    params = _params((5, 8, 3))
    grads = jax.vmap(lambda k: _grads(k, params))(jax.random.split(key, 20))
    pairs = [
        (garo_optax.clara_sgd(0.1, adapt=False, unit_step=False), optax.sgd(0.1)),
        (garo_optax.adam_clara(1e-2, adapt=False, unit_step=False), optax.adam(1e-2)),
    ]
    for ours, reference in pairs:  # spec 7.11, every step
        _, _, upd, _ = _run(ours, params, grads)
        _, _, upd_ref, _ = _run(reference, params, grads)
        for a, b in zip(upd, upd_ref):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_zero_gradient_tensor(key):
    params = _params((4, 6))
    g1 = _grads(key, params)
    g2 = (g1[0], jnp.zeros_like(g1[1]))
    tx = garo_optax.clara_sgd(0.1)
    state = tx.init(params)
    _, state = tx.update(g1, state, params)
    path_before = state[0].path[1]
    updates, state = tx.update(g2, state, params)
    assert jnp.all(jnp.isfinite(optax.tree.get(state, "lr")))
    np.testing.assert_array_equal(updates[1], 0.0)
    np.testing.assert_allclose(state[0].path[1], 0.8 * path_before, rtol=1e-6)


def test_mask_counts_only_updated_leaves(key):
    params = {"a": jnp.ones(5), "b": jnp.ones(7), "c": jnp.ones(3)}
    grads = {k: g for k, g in zip(params, _grads(key, tuple(params.values())))}
    tx = optax.masked(garo_optax.clara_sgd(1.0), {"a": True, "b": False, "c": True})
    state = tx.init(params)
    _, state = tx.update(grads, state, params)
    # K = 2 updated leaves; counting the masked one would give exp(-0.76 d).
    assert optax.tree.get(state, "lr") == pytest.approx(0.99936020, rel=1e-6)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: garo_optax.clara_sgd(0.1),
        lambda: garo_optax.adam_clara(0.1),
        lambda: garo_optax.adam_clara_global(),
        lambda: garo_optax.adam_clara_local(),
        lambda: garo_optax.adam_clara_smoothed(),
        lambda: garo_optax.adam_clara_smoothed(version=1),
    ],
)
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_nonfinite_gradient_leaves_rate_and_path(key, factory, bad):
    tx = factory()
    params = _params((4, 6))
    g = _grads(key, params)
    state = tx.init(params)
    _, state = tx.update(g, state, params)
    poisoned = (g[0].at[1].set(bad), g[1])
    _, after = jax.jit(tx.update)(poisoned, state, params)
    assert optax.tree.get(after, "lr") == optax.tree.get(state, "lr")
    for p, q in zip(optax.tree.get(after, "path"), optax.tree.get(state, "path")):
        np.testing.assert_array_equal(p, q)
    # With apply_if_finite the whole step, Adam's moments included, is skipped
    # and training continues with finite values.
    safe = optax.apply_if_finite(factory(), max_consecutive_errors=3)
    state = safe.init(params)
    updates, state = safe.update(poisoned, state, params)
    np.testing.assert_array_equal(updates[0], 0.0)
    updates, state = safe.update(g, state, params)
    assert all(jnp.all(jnp.isfinite(u)) for u in updates)
    assert jnp.isfinite(optax.tree.get(state.inner_state, "lr"))


# --- Bad input. ------------------------------------------------------------------

BAD_INPUT = [
    (garo_optax.clara_sgd, {"learning_rate": 0.0}, "learning_rate"),
    (garo_optax.clara_sgd, {"learning_rate": -1e-3}, "learning_rate"),
    (garo_optax.clara_sgd, {"c": 0.0}, "c"),
    (garo_optax.clara_sgd, {"c": 1.5}, "c"),
    (garo_optax.clara_sgd, {"damping": 0.0}, "damping"),
    (garo_optax.clara_sgd, {"damping": -1.0}, "damping"),
    (garo_optax.clara_sgd, {"normalize": "layer"}, "normalize"),
    (garo_optax.adam_clara, {"b1": 1.0}, "b1"),
    (garo_optax.adam_clara, {"b1": -0.1}, "b1"),
    (garo_optax.adam_clara, {"b2": 1.0}, "b2"),
    (garo_optax.adam_clara, {"c": 2.0}, "c"),
    (garo_optax.adam_clara, {"damping": 0.0}, "damping"),
    (garo_optax.adam_clara, {"learning_rate": -1.0}, "learning_rate"),
    (garo_optax.adam_clara, {"weight_decay": -1e-4}, "weight_decay"),
    (garo_optax.adam_clara_global, {"version": 3}, "version"),
    (garo_optax.adam_clara_local, {"version": "2"}, "version"),
    (garo_optax.adam_clara_smoothed, {"c": -0.5}, "c"),
    (garo_optax.adam_clara_smoothed, {"b2": 1.5}, "b2"),
    (garo_optax.scale_by_clara, {"mu": 0.0}, "mu"),
]


@pytest.mark.parametrize("factory, kwargs, name", BAD_INPUT)
def test_bad_input_raises_value_error(factory, kwargs, name):
    kwargs = {"learning_rate": 1e-3} | kwargs
    with pytest.raises(ValueError, match=rf"^{name} must be .*got {kwargs[name]!r}"):
        factory(**kwargs)


def test_allowed_values_listed_in_message():
    with pytest.raises(ValueError, match="'per_tensor', 'global'"):
        garo_optax.clara_sgd(1e-3, normalize="layer")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        garo_optax.clara_sgd(1e-3, c=1.5)


def test_inject_hyperparams_under_jit(key):
    params = _params((5, 8))
    grads = _grads(key, params)
    tx = optax.inject_hyperparams(garo_optax.adam_clara)(
        learning_rate=1e-2, b1=0.9, b2=0.999, c=0.2, damping=1e-2
    )
    step = jax.jit(tx.update)
    state = jax.jit(tx.init)(params)
    for _ in range(3):
        updates, state = step(grads, state, params)
    direct = garo_optax.adam_clara(1e-2, damping=1e-2)
    _, _, upd, lrs = _run(direct, params, _repeat(grads, 3))
    for a, b in zip(updates, upd):
        np.testing.assert_allclose(a, b[-1], rtol=1e-5)
    np.testing.assert_allclose(optax.tree.get(state.inner_state, "lr"), lrs[-1])
    # Hyperparameters are traced arrays there: changing one does not recompile.
    state.hyperparams["c"] = jnp.full_like(state.hyperparams["c"], 0.5)
    before = step._cache_size()
    step(grads, state, params)
    assert step._cache_size() == before


def test_schedule_multiplies_adaptation(key):
    params = _params((5, 8))
    grads = _repeat(_grads(key, params), 10)
    schedule = optax.linear_schedule(0.1, 0.01, 10)
    _, _, upd_s, lrs_s = _run(garo_optax.clara_sgd(schedule), params, grads)
    _, _, upd_c, lrs_c = _run(garo_optax.clara_sgd(1.0), params, grads)
    # The adaptation factor does not depend on the scale of the rate (unit steps
    # of a fixed gradient), so the scheduled rate is schedule(t) * factor_t.
    steps = np.arange(1, 11)
    np.testing.assert_allclose(lrs_s, schedule(steps) * lrs_c, rtol=1e-5)


# --- The fused Adam-CLARA equals the composable chain. ---------------------------


def _adam_then_clara(learning_rate, *, weight_decay=0.0, b1=0.9, c=C, **kwargs):
    """The chain that adam_clara's fused core implements."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1),
        garo_optax.scale_by_clara(
            learning_rate, c=c, mu=garo_optax.adam_clara_reference(c, b1), **kwargs
        ),
        optax.scale_by_learning_rate(1.0),
    )


FUSED_CASES = {
    "default": {},
    "raw_steps": dict(unit_step=False),
    "no_adapt": dict(adapt=False),
    "raw_no_adapt": dict(unit_step=False, adapt=False),
    "schedule": dict(learning_rate=optax.cosine_decay_schedule(0.05, 30, 0.1)),
    "weight_decay": dict(weight_decay=1e-2),
}


@pytest.mark.parametrize("case", FUSED_CASES.values(), ids=FUSED_CASES.keys())
def test_fused_adam_clara_equals_chain(key, case):
    # A dict + tuple tree with a matrix, a vector, a scalar and an empty leaf.
    params = {
        "w": jnp.linspace(-1.0, 1.0, 24).reshape(4, 6),
        "t": (jnp.ones(5), jnp.asarray(0.5)),
        "empty": jnp.zeros((0, 3)),
    }
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    grads = treedef.unflatten(
        [jax.random.normal(k, (30,) + x.shape) for k, x in zip(keys, leaves)]
    )
    kwargs = dict(learning_rate=0.05, damping=0.1) | case
    fused, state, updates, lrs = _run(garo_optax.adam_clara(**kwargs), params, grads)
    chain, state_c, updates_c, lrs_c = _run(_adam_then_clara(**kwargs), params, grads)
    helpers.tree_allclose(updates, updates_c, rtol=1e-5, atol=1e-9)  # every step
    np.testing.assert_allclose(lrs, lrs_c, rtol=1e-5)
    helpers.tree_allclose(fused, chain, rtol=1e-5)
    # The rate moved (unless frozen), so the comparison is not vacuous.
    assert kwargs.get("adapt", True) != np.allclose(lrs[-1] / lrs[-2], 1.0, atol=1e-6)
    fused_state = state[1]
    assert isinstance(fused_state, garo_optax.ScaleByAdamClaraState)
    adam_state, clara_state = state_c[1], state_c[2]
    assert fused_state.count == adam_state.count == clara_state.count == 30
    helpers.tree_allclose(fused_state.mu, adam_state.mu, rtol=1e-5, atol=1e-9)
    helpers.tree_allclose(fused_state.nu, adam_state.nu, rtol=1e-5, atol=1e-12)
    helpers.tree_allclose(fused_state.path, clara_state.path, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(fused_state.lr_factor, clara_state.lr_factor, 1e-5)


def test_fused_adam_clara_strict_promotion_mixed_dtypes(key):
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(5, jnp.bfloat16)}
    grads = {"w": jnp.full((3, 4), 0.5), "b": jnp.full(5, -0.25, jnp.bfloat16)}
    for kwargs in ({}, dict(weight_decay=1e-2), dict(mu_dtype=jnp.bfloat16)):
        tx = garo_optax.adam_clara(optax.linear_schedule(0.1, 0.01, 10), **kwargs)

        def two_steps(params, tx=tx):
            state = tx.init(params)
            for _ in range(2):
                updates, state = tx.update(grads, state, params)
                params = optax.apply_updates(params, updates)
            return updates, state

        with jax.numpy_dtype_promotion("strict"):
            updates, state = jax.jit(two_steps)(params)
        dtypes = lambda tree: jax.tree.map(lambda x: x.dtype, tree)
        assert dtypes(updates) == dtypes(grads)
        init = jax.eval_shape(tx.init, params)
        assert helpers.tree_signature(state) == helpers.tree_signature(init)
        assert helpers.tree_all_finite((updates, state))
