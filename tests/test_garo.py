"""GARO (``garo_optax.garo``): reductions to SGD, skipping, hyperparams, gradients.

Invariants from ``specs/garo.md`` §5.
"""

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _tree(key, scale=1.0):
    k = jax.random.split(key, 3)
    return {
        "w": scale * jax.random.normal(k[0], (4, 3)),
        "b": scale * jax.random.normal(k[1], (3,)),
        "t": (scale * jax.random.normal(k[2], ()),),
    }


def _loss(params, key):
    """A random quadratic-plus-quartic loss, so gradients change every step."""
    target = _tree(key)
    return sum(
        jnp.sum((p - t) ** 2 + 0.1 * (p - t) ** 4)
        for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target))
    )


_value_and_grad = jax.jit(jax.value_and_grad(_loss))


def _run(opt, params, steps, *, value=True, key=jax.random.key(1)):
    """``steps`` eager updates; returns (stacked updates, final state, states).

    Eager: the primitives are compiled once per shape, which is cheaper than
    compiling a whole scan for every optimizer variant.
    """
    state, history = opt.init(params), []
    for k in jax.random.split(key, steps):
        loss, grads = _value_and_grad(params, k)
        extra = {"value": loss} if value else {}
        updates, state = opt.update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
        history.append((updates, state))
    updates, states = jax.tree.map(lambda *x: np.stack(x), *history)
    return updates, state, states


def _compare(opt, ref, params, steps, key=jax.random.key(1), atol=1e-9):
    """Both optimizers' updates at the same points of ``opt``'s trajectory."""
    state, ref_state = opt.init(params), ref.init(params)
    for k in jax.random.split(key, steps):
        loss, grads = _value_and_grad(params, k)
        updates, state = opt.update(grads, state, params, value=loss)
        want, ref_state = ref.update(grads, ref_state, params)
        helpers.tree_allclose(updates, want, rtol=1e-5, atol=atol)
        params = optax.apply_updates(params, updates)
    return state


def test_head_init_scale_zero_is_sgd(key):
    """§5.1: lr, mom, wd constant; updates equal add_decayed_weights + sgd."""
    params = _tree(key)
    ref = optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.01))
    for kwargs in (dict(), dict(lagged=True), dict(weight_decay_mode="coupled")):
        opt = garo_optax.garo(head_init_scale=0.0, seed=3, **kwargs)
        state = _compare(opt, ref, params, 10)
        hp = garo_optax.hyperparams(state)
        np.testing.assert_allclose(hp["lr"], 0.01, rtol=1e-6)
        assert hp["mom"] == 0.0
        np.testing.assert_allclose(hp["wd"], 1e-6, rtol=1e-6)


def test_momentum_semantics(key):
    """§5.2: s = 0, momentum 0.9, no wd equals optax.sgd(0.01, momentum=0.9)."""
    params = _tree(key)
    opt = garo_optax.garo(head_init_scale=0.0, momentum_init=0.9, weight_decay_init=0)
    # The float32 tanh(atanh(0.9)) is 0.9 to an ulp; the buffer (|v| ~ 100)
    # carries that ulp, hence the absolute tolerance.
    state = _compare(opt, optax.sgd(0.01, momentum=0.9), params, 20, atol=1e-6)
    assert garo_optax.hyperparams(state)["wd"] == 0.0
    # Without weight decay, params are not needed.
    updates, _ = opt.update(params, opt.init(params))
    assert helpers.tree_all_finite(updates)


def test_decoupled_wd_stays_outside_the_trace(key):
    """§5.2 with wd: the reference is -lr (v_t + wd theta), v without wd."""
    params = _tree(key)
    opt = garo_optax.garo(head_init_scale=0.0, momentum_init=0.9, weight_decay_init=0.1)
    state = opt.init(params)
    v = jax.tree.map(jnp.zeros_like, params)
    for i in range(5):
        grads = _tree(jax.random.key(10 + i))
        updates, state = opt.update(grads, state, params)
        v = jax.tree.map(lambda v, g: 0.9 * v + g, v, grads)
        want = jax.tree.map(lambda v, p: -0.01 * (v + 0.1 * p), v, params)
        helpers.tree_allclose(updates, want, rtol=2e-5, atol=1e-8)
        params = optax.apply_updates(params, updates)


def test_lagged_first_step_is_exact_sgd(key):
    """§5.3: lagged step 1 uses exactly the init values whatever s is."""
    params, grads = _tree(key), _tree(jax.random.key(7))
    opt = garo_optax.garo(lagged=True, head_init_scale=1.0)
    updates, state = opt.update(grads, opt.init(params), params)
    sgd = optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.01))
    ref, _ = sgd.update(grads, sgd.init(params), params)
    helpers.tree_allclose(updates, ref, rtol=1e-5)
    np.testing.assert_allclose(garo_optax.hyperparams(state)["lr"], 0.01, rtol=1e-6)


def test_step_one_bounds(key):
    """§5.3: lr, mom, wd within the head-weight bounds at step 1."""
    theta = garo_optax.init_controller(jax.random.key(5))
    l1 = np.sum(np.abs(np.asarray(theta.head_w)), axis=1)
    params, grads = _tree(key), _tree(jax.random.key(7))
    opt = garo_optax.garo(theta)
    _, state = opt.update(grads, opt.init(params), params)
    hp = garo_optax.hyperparams(state)
    assert abs(np.log(hp["lr"] / 0.01)) <= l1[0]
    assert abs(hp["mom"]) <= np.tanh(l1[1])
    assert abs(np.log(hp["wd"] / 1e-6)) <= l1[2] + 1e-5


@pytest.mark.parametrize("scale", [1e-30, 1e30, 0.0])
def test_adversarial_gradients_keep_state_finite(key, scale):
    """§5.4/§5.5: extreme and zero gradients; |h| < 1, state finite, no skip."""
    params = _tree(key)
    opt = garo_optax.scale_by_garo(head_init_scale=1.0)
    state = opt.init(params)
    for i in range(4):
        grads = _tree(jax.random.key(20 + i), scale)
        _, state = opt.update(grads, state, params, value=jnp.float32(scale))
        assert helpers.tree_all_finite(state)
        assert np.all(np.abs(state.h) < 1) and abs(state.mom) < 1
        assert state.lr > 0 and state.skipped == 0


@pytest.mark.parametrize(
    "bad, granularity",
    [(np.nan, "global"), (np.inf, "global"), (np.nan, "per_tensor")],
)
def test_nonfinite_step_is_skipped(key, bad, granularity):
    """A NaN/Inf at step k: zero update, state kept but ``skipped``; the later
    steps equal a run where step k never happened."""
    params = _tree(key)
    grads = [_tree(jax.random.key(30 + i)) for i in range(5)]
    poisoned = jax.tree.map(lambda g: g, grads[2])
    poisoned["w"] = poisoned["w"].at[1, 2].set(bad)
    tx = garo_optax.scale_by_garo(head_init_scale=1.0, granularity=granularity)
    opt, init = jax.jit(tx.update), tx.init

    def run(sequence):
        state, out = init(params), []
        for g in sequence:
            updates, new_state = opt(g, state, params, value=jnp.float32(1.0))
            out.append((updates, state, new_state))
            state = new_state
        return out, state

    skipped_run, state = run(grads[:2] + [poisoned] + grads[2:])
    clean_run, clean_state = run(grads)
    updates, before, after = skipped_run[2]
    for u in jax.tree.leaves(updates):
        np.testing.assert_array_equal(u, np.zeros_like(u))
    assert after.skipped == before.skipped + 1
    helpers.tree_allclose(after._replace(skipped=0), before._replace(skipped=0), rtol=0)
    for (u_skip, _, _), (u_clean, _, _) in zip(skipped_run[3:], clean_run[2:]):
        helpers.tree_allclose(u_skip, u_clean, rtol=0)
    helpers.tree_allclose(state._replace(skipped=0), clean_state, rtol=0)
    assert helpers.tree_all_finite(state)


def test_nonfinite_loss_does_not_reach_the_gru(key):
    params, grads = _tree(key), _tree(jax.random.key(9))
    opt = garo_optax.scale_by_garo(head_init_scale=1.0)
    state = opt.init(params)
    _, state = opt.update(grads, state, params, value=jnp.float32(2.0))
    _, bad = opt.update(grads, state, params, value=jnp.float32(np.nan))
    assert helpers.tree_all_finite(bad)
    assert bad.loss_mean == state.loss_mean


@pytest.mark.parametrize(
    "wrap",
    ["chain", "named_chain", "masked", "multi_steps", "inject_hyperparams", "alone"],
)
def test_hyperparams_found_anywhere(key, wrap):
    params, grads = _tree(key), _tree(jax.random.key(9))
    inner = garo_optax.garo(momentum_init=0.5)
    opt = {
        "chain": lambda: optax.chain(optax.clip(10.0), inner),
        "named_chain": lambda: optax.named_chain(
            ("clip", optax.clip(10.0)), ("g", inner)
        ),
        "masked": lambda: optax.masked(inner, jax.tree.map(lambda _: True, params)),
        "multi_steps": lambda: optax.MultiSteps(inner, every_k_schedule=1),
        "inject_hyperparams": lambda: optax.inject_hyperparams(garo_optax.garo)(
            momentum_init=0.5
        ),
        "alone": lambda: inner,
    }[wrap]()
    state = opt.init(params)
    _, state = opt.update(grads, state, params, value=jnp.float32(1.0))
    hp = garo_optax.hyperparams(state)
    assert sorted(hp) == ["lr", "mom", "wd"]
    garo_state = jax.tree.leaves(
        state, is_leaf=lambda x: isinstance(x, garo_optax.ScaleByGaroState)
    )
    garo_state = [s for s in garo_state if isinstance(s, garo_optax.ScaleByGaroState)][
        0
    ]
    assert garo_state.count == 1
    for name in hp:
        assert hp[name] == getattr(garo_state, name)
    with pytest.raises(ValueError, match="exactly one state"):
        garo_optax.hyperparams(optax.sgd(0.1).init(params))


def test_logged_values_are_the_ones_used(key):
    """§5.10: recompute the update from the logged lr, mom, wd and v."""
    params = _tree(key)
    opt = garo_optax.scale_by_garo(head_init_scale=1.0, weight_decay_init=1e-2)
    state = opt.init(params)
    for i in range(3):
        grads = _tree(jax.random.key(40 + i))
        v_old = state.momentum
        updates, state = opt.update(grads, state, params)
        lr, mom, wd = state.lr, state.mom, state.wd
        v = jax.tree.map(lambda v, g, m=mom: m * v + g, v_old, grads)
        helpers.tree_allclose(state.momentum, v, rtol=1e-6)
        want = jax.tree.map(lambda v, p, a=lr, b=wd: a * (v + b * p), v, params)
        helpers.tree_allclose(updates, want, rtol=1e-6)


def test_value_is_optional(key):
    """§5.9: with s = 0 ``value=`` changes nothing; with s > 0 it is read."""
    params = _tree(key)
    for scale, same in ((0.0, True), (1.0, False)):
        opt = garo_optax.garo(head_init_scale=scale)
        with_value, _, _ = _run(opt, params, 5, value=True)
        without, _, _ = _run(opt, params, 5, value=False)
        equal = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(with_value), jax.tree.leaves(without))
        )
        assert equal == same


def test_params_required_when_weight_decay_is_on(key):
    params = _tree(key)
    opt = garo_optax.garo()
    with pytest.raises(ValueError, match="needs params"):
        opt.update(params, opt.init(params))


def test_determinism_and_seeds(key):
    """§5.7: same seed, same trajectory; other seeds differ; s = 0 ignores seeds."""
    params = _tree(key)
    lrs = {}
    for seed in (0, 0, 1):
        opt = garo_optax.garo(seed=seed, head_init_scale=1.0)
        jitted = optax.GradientTransformationExtraArgs(opt.init, jax.jit(opt.update))
        _, _, states = _run(jitted, params, 5)
        lr = np.asarray(garo_optax.hyperparams(states)["lr"])
        if seed in lrs:
            np.testing.assert_array_equal(lr, lrs[seed])
        lrs[seed] = lr
    assert not np.array_equal(lrs[0], lrs[1])
    a, _, _ = _run(garo_optax.garo(seed=0, head_init_scale=0.0), params, 5)
    b, _, _ = _run(garo_optax.garo(seed=1, head_init_scale=0.0), params, 5)
    helpers.tree_allclose(a, b, rtol=0)


def test_permutation_and_reshape_invariance(key):
    """§5.6: the hyperparameters depend on global reductions only."""
    params = _tree(key)
    flat = lambda tree: jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])
    opt = garo_optax.scale_by_garo(head_init_scale=1.0)
    state_tree, state_flat = opt.init(params), opt.init(flat(params))
    p_tree, p_flat = params, flat(params)
    for i in range(4):
        grads = _tree(jax.random.key(50 + i))
        _, state_tree = opt.update(grads, state_tree, p_tree)
        _, state_flat = opt.update(flat(grads)[::-1], state_flat, p_flat[::-1])
        for name in ("lr", "mom", "wd"):
            np.testing.assert_allclose(
                getattr(state_flat, name), getattr(state_tree, name), rtol=1e-6
            )


def test_vmap_over_models(key):
    """§5.11: ``jax.vmap`` over a batch of models."""
    opt = garo_optax.garo(head_init_scale=1.0)
    params = jax.vmap(_tree)(jax.random.split(key, 3))
    grads = jax.vmap(_tree)(jax.random.split(jax.random.key(3), 3))

    @jax.jit
    @jax.vmap
    def step(p, g):
        return opt.update(g, opt.init(p), p)

    updates, state = step(params, grads)
    assert garo_optax.hyperparams(state)["lr"].shape == (3,)
    for i in range(3):
        pick = lambda tree, i=i: jax.tree.map(lambda x: x[i], tree)
        p, g = pick(params), pick(grads)
        want, _ = opt.update(g, opt.init(p), p)
        helpers.tree_allclose(pick(updates), want, rtol=1e-5)


def test_meta_gradient_matches_finite_differences():
    """``jax.grad`` w.r.t. the controller through 20 unrolled steps (float64)
    is finite and matches central finite differences on a tiny quadratic."""
    with jax.enable_x64(True):
        theta = garo_optax.init_controller(
            jax.random.key(0), hidden_size=4, head_init_scale=1.0, momentum_init=0.5
        )
        target = jnp.array([1.0, -2.0, 0.5])
        loss_fn = lambda p: jnp.sum((p - target) ** 2 * jnp.arange(1.0, 4.0))

        @jax.jit
        def meta_loss(theta):
            opt = garo_optax.garo(theta)

            def body(carry, _):
                params, state = carry
                loss, grads = jax.value_and_grad(loss_fn)(params)
                updates, state = opt.update(grads, state, params, value=loss)
                return (optax.apply_updates(params, updates), state), loss

            params = jnp.zeros(3)
            _, losses = jax.lax.scan(body, (params, opt.init(params)), length=20)
            return jnp.mean(losses)

        grad = jax.jit(jax.grad(meta_loss))(theta)
        assert helpers.tree_all_finite(grad)
        assert np.any(np.asarray(grad.head_w) != 0)
        for name, index in (("head_w", (0, 1)), ("w_hh", (2, 3)), ("w_ih", (5, 0))):
            eps = 1e-6
            w = getattr(theta, name)
            bump = lambda d: theta._replace(**{name: w.at[index].add(d)})  # noqa: B023
            fd = (meta_loss(bump(eps)) - meta_loss(bump(-eps))) / (2 * eps)
            np.testing.assert_allclose(getattr(grad, name)[index], fd, rtol=1e-4)


def test_chain_after_scale_by_rms_trains_a_quadratic():
    """GARO over a preconditioned direction trains an ill-conditioned quadratic."""
    scales = jnp.array([1.0, 10.0, 100.0])
    loss_fn = lambda p: 0.5 * jnp.sum(scales * (p - 1.0) ** 2)
    opt = optax.chain(optax.scale_by_rms(), garo_optax.garo(momentum_init=0.5))

    @jax.jit
    def train(params):
        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params, value=loss)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(
            body, (params, opt.init(params)), length=1000
        )
        return params, losses

    params, losses = train(jnp.zeros(3))
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(params, jnp.ones(3), atol=0.05)


def test_frozen_controller_not_in_state(key):
    """§5.8: no state leaf has the controller's shapes; the weights are unchanged."""
    theta = garo_optax.init_controller(key)
    copy = jax.tree.map(np.array, theta)
    opt = garo_optax.garo(theta)
    _, state, _ = _run(opt, _tree(key), 20)
    shapes = {x.shape for x in jax.tree.leaves(state)}
    assert not shapes & {(96, 4), (96, 32), (3, 32)}
    helpers.tree_allclose(theta, copy, rtol=0)


def test_bfloat16_params_update_dtype(key):
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(key))
    opt = garo_optax.garo()
    updates, state = jax.jit(functools.partial(opt.update, value=jnp.float32(1.0)))(
        params, opt.init(params), params
    )
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert garo_optax.hyperparams(state)["lr"].dtype == jnp.float32


# --- Per-tensor mode (spec §4.9). ---


def test_per_tensor_head_init_scale_zero_is_sgd(key):
    params = _tree(key)
    ref = optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.01))
    opt = garo_optax.garo(granularity="per_tensor", head_init_scale=0.0)
    state = _compare(opt, ref, params, 5)
    hp = garo_optax.hyperparams(state)
    assert hp["lr"].shape == (3,)
    np.testing.assert_allclose(hp["lr"], 0.01, rtol=1e-6)
    np.testing.assert_array_equal(hp["mom"], 0.0)


def test_per_tensor_leaves_get_their_own_rates(key):
    """Leaves with gradient scales 1e-3 and 1e3 get different learning rates."""
    opt = garo_optax.scale_by_garo(granularity="per_tensor", head_init_scale=1.0)
    params = {"small": jnp.ones(4), "large": jnp.ones(4)}
    state = opt.init(params)
    np.testing.assert_allclose(state.lr[0], state.lr[1])
    for i in range(3):
        g = jax.random.normal(jax.random.key(i), (4,))
        grads = {"small": 1e-3 * g, "large": 1e3 * g}
        _, state = opt.update(grads, state, params)
    assert state.h.shape == (2, 32) and state.g_ema.shape == (2,)
    assert abs(np.log(state.lr[0] / state.lr[1])) > 1e-3


def test_per_tensor_permuting_leaves_permutes_hyperparams(key):
    opt = garo_optax.scale_by_garo(granularity="per_tensor", head_init_scale=1.0)
    params = _tree(key)
    leaves = jax.tree.leaves(params)
    swap = lambda xs: [xs[2], xs[0], xs[1]]
    state, state_swapped = opt.init(leaves), opt.init(swap(leaves))
    for i in range(3):
        grads = jax.tree.leaves(_tree(jax.random.key(60 + i), 10.0**i))
        _, state = opt.update(grads, state, leaves, value=jnp.float32(i))
        _, state_swapped = opt.update(
            swap(grads), state_swapped, swap(leaves), value=jnp.float32(i)
        )
    for name in ("lr", "mom", "wd"):
        got = np.asarray(getattr(state_swapped, name))
        want = np.asarray(swap(list(getattr(state, name))))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_flax_nnx_optimizer_passes_value():
    """``nnx.Optimizer(..., wrt=nnx.Param)`` forwards ``value=`` to GARO: the
    run with the loss differs from the run without it, and both train."""
    nnx = pytest.importorskip("flax.nnx")
    x = jax.random.normal(jax.random.key(0), (16, 3))
    y = x @ jnp.array([[1.0], [-2.0], [0.5]])

    def train(pass_value):
        model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        tx = garo_optax.garo(momentum_init=0.5, head_init_scale=1.0)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @nnx.jit
        def train_step(model, optimizer):
            loss_fn = lambda model: jnp.mean((model(x) - y) ** 2)
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            extra = {"value": loss} if pass_value else {}
            optimizer.update(model, grads, **extra)
            return loss

        return np.array([train_step(model, optimizer) for _ in range(20)])

    with_value, without = train(True), train(False)
    assert with_value[-1] < with_value[0] and without[-1] < without[0]
    assert not np.array_equal(with_value, without)


# --- More §5 invariants, edge-case leaves, params=None, donation, Linen. ---


def _mlp_params(rng: np.random.Generator, sizes=(5, 16, 1)):
    """A tanh MLP's params from a NumPy generator (no eager jax ops to compile)."""
    return [
        {
            "w": jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(n,)) * 0.1, jnp.float32),
        }
        for m, n in zip(sizes[:-1], sizes[1:])
    ]


def _mlp(params, x):
    first, second = params
    hidden = jnp.tanh(x @ first["w"] + first["b"][None])
    return hidden @ second["w"] + second["b"][None]


def _garo_state(opt_state) -> garo_optax.ScaleByGaroState:
    is_garo = lambda x: isinstance(x, garo_optax.ScaleByGaroState)
    (found,) = [x for x in jax.tree.leaves(opt_state, is_leaf=is_garo) if is_garo(x)]
    return found


def test_head_init_scale_zero_is_sgd_on_an_mlp():
    """§5.1 on a random 2-layer tanh MLP regression: 100 steps of GARO with
    s = 0 give the updates of add_decayed_weights(1e-6) + sgd(0.01) to rtol
    1e-6 (both fed the same gradients at the same params, under jit + scan)."""
    rng = np.random.default_rng(0)
    params = _mlp_params(rng)
    x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(32, 1)), jnp.float32)
    loss_fn = lambda p: jnp.mean((_mlp(p, x) - y) ** 2)
    opt = helpers.with_strict_promotion(garo_optax.garo(head_init_scale=0.0, seed=3))
    ref = optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.01))

    @jax.jit
    def run(params):
        def body(carry, _):
            params, state, ref_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params, value=loss)
            want, ref_state = ref.update(grads, ref_state, params)
            hp = garo_optax.hyperparams(state)
            params = optax.apply_updates(params, updates)
            return (params, state, ref_state), (updates, want, hp, loss)

        init = (params, opt.init(params), ref.init(params))
        return jax.lax.scan(body, init, length=100)[1]

    updates, want, hp, losses = run(params)
    # The atol only matters where g ~ -wd * theta cancels (|u| ~ 1e-9 against a
    # typical 1e-4): GARO's wd = softplus(b_wd) is 1e-6 to a few float32 ulps,
    # which leaves differences of about lr * wd * |theta| * 1e-6 ~ 1e-14 there.
    helpers.tree_allclose(updates, want, rtol=1e-6, atol=1e-13)
    # Constant hyperparameters: the heads ignore h; tanh(0) is exactly 0.
    np.testing.assert_array_equal(hp["lr"], np.full(100, hp["lr"][0]))
    np.testing.assert_allclose(hp["lr"], 0.01, rtol=1e-6)
    np.testing.assert_array_equal(hp["mom"], 0.0)
    np.testing.assert_allclose(hp["wd"], 1e-6, rtol=1e-6)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("alpha", [1e3, 1e-3])
def test_gradient_scaling_shifts_f1_only(key, alpha):
    """§5.6: scaling the gradients by alpha shifts f1 by 0.2 ln alpha and leaves
    f2 (and f3, f4) unchanged; f2 stays unchanged after the first step.

    Imports the private ``garo_optax._src.controller`` to call ``features``
    directly. Two checks per step of a real GARO run A on g_t: (1) the features
    of A's statistics against the same statistics scaled consistently (norms
    and inner products by alpha^2, the norm EMA by alpha); (2) a second run B
    on alpha g_t keeps the norm EMA at alpha times A's, so the f2 recomputed
    from B's own state equals A's.
    """
    from garo_optax._src import controller

    params = _tree(key)
    tx = garo_optax.scale_by_garo(head_init_scale=1.0)
    opt, state_a = jax.jit(tx.update), tx.init(params)
    state_b = state_a

    def statistics(grads, state):
        # The reductions GARO feeds to ``features``: |g|^2, <g, v>, |v|^2.
        g, v = jax.tree.leaves(grads), jax.tree.leaves(state.momentum)
        total = lambda terms: sum(jnp.sum(t) for t in terms)
        return dict(
            sq_norm=total(a * a for a in g),
            dot_gv=total(a * b for a, b in zip(g, v)),
            v_sq_norm=total(b * b for b in v),
        )

    def features(stats, state, loss, g_ema):
        x, _ = controller.features(
            **stats,
            g_ema=g_ema,
            count=state.count,
            loss=loss,
            loss_mean=state.loss_mean,
            loss_var=state.loss_var,
        )
        return x

    @jax.jit
    def all_features(grads, scaled, state_a, state_b, loss):
        stats = statistics(grads, state_a)
        x_a = features(stats, state_a, loss, state_a.g_ema)
        stats_scaled = {name: alpha**2 * s for name, s in stats.items()}
        x_scaled = features(stats_scaled, state_a, loss, alpha * state_a.g_ema)
        x_b = features(statistics(scaled, state_b), state_b, loss, state_b.g_ema)
        return x_a, x_scaled, x_b

    shift = 0.2 * np.log(alpha)
    for i in range(6):
        grads = _tree(jax.random.key(70 + i))  # |g| ~ 4: no clipping at 4 alpha
        scaled = jax.tree.map(lambda g: alpha * g, grads)
        loss = jnp.float32(1.0 + 0.5 * (-1) ** i)
        x_a, x_scaled, x_b = map(
            np.asarray, all_features(grads, scaled, state_a, state_b, loss)
        )
        np.testing.assert_allclose(x_scaled[0] - x_a[0], shift, atol=1e-6)
        np.testing.assert_allclose(x_scaled[1:], x_a[1:], atol=1e-6)
        np.testing.assert_allclose(x_b[0] - x_a[0], shift, atol=1e-6)
        np.testing.assert_allclose(x_b[1], x_a[1], atol=1e-6)
        if i == 0:
            assert x_a[1] == x_b[1] == 0.0
        else:
            assert abs(x_a[1]) > 1e-3  # f2 is not trivially 0 after step 1
        _, state_a = opt(grads, state_a, params, value=loss)
        _, state_b = opt(scaled, state_b, params, value=loss)
        np.testing.assert_allclose(state_b.g_ema, alpha * state_a.g_ema, rtol=1e-6)


def test_constant_loss_matches_no_loss_once_settled():
    """§5.9: with s > 0 and a constant ``value=``, f4 stays at the float32
    rounding floor, and once the loss EMAs have settled (steps 200-300) the
    hyperparameters match the run without a loss; a varying loss does not.

    Imports the private ``garo_optax._src.controller`` to recompute f4 from the
    state. The runs see the same gradient sequence (independent of the params),
    so they can differ only through f4.
    """
    from garo_optax._src import controller

    params = _tree(jax.random.key(0))
    opt = garo_optax.scale_by_garo(head_init_scale=1.0)
    loss, steps = 1.0, 300
    one = jnp.ones([])
    rng = np.random.default_rng(1)
    grad_seq = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=(steps, *p.shape)), jnp.float32),
        params,
    )

    @jax.jit
    def run():
        def body(states, xs):
            grads, varying = xs
            const_state, none_state, vary_state = states
            x, _ = controller.features(
                sq_norm=one,
                dot_gv=one,
                v_sq_norm=one,
                g_ema=const_state.g_ema,
                count=const_state.count,
                loss=jnp.float32(loss),
                loss_mean=const_state.loss_mean,
                loss_var=const_state.loss_var,
            )
            _, const_state = opt.update(
                grads, const_state, params, value=jnp.float32(loss)
            )
            _, none_state = opt.update(grads, none_state, params)
            _, vary_state = opt.update(grads, vary_state, params, value=varying)
            states = (const_state, none_state, vary_state)
            return states, (x[3], *map(garo_optax.hyperparams, states))

        varying = loss + 0.5 * (-1.0) ** jnp.arange(steps, dtype=jnp.float32)
        init = tuple(opt.init(params) for _ in range(3))
        return jax.lax.scan(body, init, (grad_seq, varying))[1]

    f4, with_loss, without, varying = run()

    # In exact arithmetic f4 = 0 from step 2 on (the bias-corrected mean is
    # the loss). In float32 the corrected mean sits a few ulps from it, and
    # the normalizer divides by sqrt(var + 1e-8) >= 1e-4 (var is ~0), so f4 is
    # at most 0.2 * (8 ulps of the loss) / 1e-4, about 2e-3 for a loss of 1
    # (4.8e-4 measured: 2 ulps). It grows with |loss| (see the report on
    # losses of 100 and more).
    assert f4[0] == 0.0
    assert np.max(np.abs(f4)) <= 0.2 * 8 * np.spacing(np.float32(loss)) / 1e-4
    # The hyperparameters respond to f4 with a gain of about 0.1 (lr relative
    # difference 4e-5 measured for f4 ~ 5e-4), so 1e-3 bounds the settled
    # difference with a 20x margin; a loss that varies (f4 of order 0.2)
    # moves them by 6e-3 and more.
    settled = slice(199, None)
    lr, wd = with_loss["lr"][settled], with_loss["wd"][settled]
    np.testing.assert_allclose(lr, without["lr"][settled], rtol=1e-3)
    np.testing.assert_allclose(wd, without["wd"][settled], rtol=1e-3)
    mom = with_loss["mom"][settled]
    np.testing.assert_allclose(mom, without["mom"][settled], atol=1e-3)
    lr_gap = np.abs(varying["lr"][settled] / without["lr"][settled] - 1)
    assert np.max(lr_gap) > 3e-3


def test_flax_linen_train_state_needs_an_explicit_update_for_value():
    """``flax.training.train_state.TrainState.apply_gradients`` does not pass
    ``value=`` on (it would ``replace`` a field named ``value``); calling
    ``state.tx.update(..., value=loss)`` and ``state.replace(...)`` trains a
    small Linen MLP and the loss reaches GARO's loss EMA."""
    nn = pytest.importorskip("flax.linen")
    train_state = pytest.importorskip("flax.training.train_state")

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.tanh(nn.Dense(16)(x)))

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    y = jnp.asarray(np.sin(np.asarray(x) @ np.array([[1.0], [-2.0], [0.5]])))
    model = MLP()
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=jax.jit(model.init)(jax.random.key(0), x)["params"],
        tx=garo_optax.garo(momentum_init=0.5, head_init_scale=1.0),
    )

    def loss_fn(params, apply_fn):
        return jnp.mean((apply_fn({"params": params}, x) - y) ** 2)

    # Traced only (the error comes before any compilation).
    apply_with_value = lambda state, grads: state.apply_gradients(
        grads=grads, value=jnp.float32(1.0)
    )
    with pytest.raises(TypeError, match="value"):
        jax.jit(apply_with_value)(state, state.params)

    def step_with_value(state):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.apply_fn)
        updates, opt_state = state.tx.update(
            grads, state.opt_state, state.params, value=loss
        )
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
        return state, loss

    def step_apply_gradients(state):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.apply_fn)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def train(state):
        def body(states, _):
            (with_value, l_value), (applied, l_applied) = (
                step_with_value(states[0]),
                step_apply_gradients(states[1]),
            )
            return (with_value, applied), (l_value, l_applied)

        return jax.lax.scan(body, (state, state), length=30)

    (with_value, applied), losses = train(state)
    for final, run_losses in zip((with_value, applied), losses):
        assert int(final.step) == 30
        assert run_losses[-1] < 0.7 * run_losses[0], run_losses
    assert not np.array_equal(losses[0], losses[1])
    with_value, applied = _garo_state(with_value), _garo_state(applied)
    # The loss reached GARO only through the explicit update.
    assert float(with_value.loss_mean) > 0.0 and float(with_value.loss_var) > 0.0
    assert float(applied.loss_mean) == 0.0 and float(applied.loss_var) == 0.0
    assert with_value.count == applied.count == 30
    assert float(with_value.lr) != float(applied.lr)


@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
def test_empty_and_scalar_leaves(key, granularity):
    """A zero-size leaf next to a scalar leaf and normal leaves: finite updates,
    a zero-size update for the empty leaf, one hyperparameter entry per leaf.

    Global mode: the empty leaf adds exactly 0 to every reduction, so the other
    leaves' updates and the hyperparameters equal (bitwise) a run on the tree
    without it. Per-tensor mode: the empty leaf has its own hidden state and
    hyperparameters, but stays out of the mean-context of §4.9, so the other
    leaves' hyperparameters and updates equal the run without it.
    """
    empty = jnp.zeros((0, 3))
    with_empty = lambda tree: {**tree, "e": empty}  # flatten order: b, e, t, w
    opt = garo_optax.garo(granularity=granularity, head_init_scale=1.0)
    update = jax.jit(opt.update)
    params = _tree(key)
    state, state_e = opt.init(params), opt.init(with_empty(params))
    p, p_e = params, with_empty(params)
    others = [0, 2, 3]  # the non-empty leaves' places in with_empty's order
    for i in range(4):
        grads = _tree(jax.random.key(80 + i))
        loss = jnp.float32(i)
        updates, state = update(grads, state, p, value=loss)
        updates_e, state_e = update(with_empty(grads), state_e, p_e, value=loss)
        assert helpers.tree_all_finite((updates_e, state_e))
        assert updates_e["e"].shape == (0, 3) and updates_e["e"].dtype == empty.dtype
        assert _garo_state(state_e).momentum["e"].shape == (0, 3)
        hp, hp_e = garo_optax.hyperparams(state), garo_optax.hyperparams(state_e)
        rest = {name: u for name, u in updates_e.items() if name != "e"}
        if granularity == "global":
            assert hp_e["lr"].shape == ()
            helpers.tree_allclose(rest, updates, rtol=0)
            helpers.tree_allclose(hp_e, hp, rtol=0)
        else:
            assert all(v.shape == (4,) for v in hp_e.values())
            for name in hp:
                got = np.asarray(hp_e[name])[others]
                np.testing.assert_allclose(got, hp[name], rtol=1e-6, atol=1e-12)
            helpers.tree_allclose(rest, updates, rtol=1e-6)
        p = optax.apply_updates(p, updates)
        p_e = optax.apply_updates(p_e, updates_e)


@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
def test_params_none(key, granularity):
    """``params=None`` works without weight decay (``weight_decay_init=0``) and
    equals the run with params; with weight decay on it raises ValueError."""
    params = _tree(key)
    opt = garo_optax.garo(
        granularity=granularity, head_init_scale=1.0, weight_decay_init=0.0
    )
    update = jax.jit(opt.update)
    state, state_none = opt.init(params), opt.init(params)
    for i in range(3):
        grads = _tree(jax.random.key(90 + i))
        updates, state = update(grads, state, params, value=jnp.float32(i))
        got, state_none = update(grads, state_none, None, value=jnp.float32(i))
        helpers.tree_allclose(got, updates, rtol=0)
        helpers.tree_allclose(state_none, state, rtol=0)
        params = optax.apply_updates(params, updates)
    assert np.all(np.asarray(garo_optax.hyperparams(state)["wd"]) == 0.0)

    for tx in (garo_optax.garo, garo_optax.scale_by_garo):
        opt = tx(granularity=granularity)  # weight_decay_init=1e-6
        state = opt.init(params)
        with pytest.raises(ValueError, match="params"):
            opt.update(grads, state)
        with pytest.raises(ValueError, match="params"):
            jax.jit(opt.update)(grads, state, None)


@pytest.mark.parametrize("lagged", [False, True])
@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
def test_donated_train_step(key, granularity, lagged):
    """A train step jitted with ``donate_argnums=(0, 1)`` over (params,
    opt_state) runs twice (no buffer is donated twice, no donation warning)
    and gives the same result as the undonated step."""
    opt = garo_optax.garo(
        granularity=granularity, lagged=lagged, head_init_scale=1.0, momentum_init=0.5
    )

    def step(params, opt_state, grads, loss):
        updates, opt_state = opt.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state

    plain = jax.jit(step)
    donated = jax.jit(step, donate_argnums=(0, 1))
    params, params_d = _tree(key), _tree(key)
    state, state_d = opt.init(params), opt.init(params_d)  # fresh init buffers
    for i in range(2):
        grads, loss = _tree(jax.random.key(100 + i)), jnp.float32(i)
        params, state = plain(params, state, grads, loss)
        inputs = jax.tree.leaves((params_d, state_d))
        params_d, state_d = donated(params_d, state_d, grads, loss)
        assert all(x.is_deleted() for x in inputs)  # donation took place
        helpers.tree_allclose((params_d, state_d), (params, state), rtol=0)
    assert _garo_state(state_d).count == 2


def _f4(state, loss):
    """The loss feature that the next step would compute (private module)."""
    from garo_optax._src import controller

    one = jnp.ones([])
    x, _ = controller.features(
        sq_norm=one,
        dot_gv=one,
        v_sq_norm=one,
        g_ema=state.g_ema,
        count=state.count,
        loss=loss,
        loss_mean=state.loss_mean,
        loss_var=state.loss_var,
        loss_count=state.loss_count,
    )
    return x[3]


@pytest.mark.parametrize("loss", [1.0, 1e3, 1e5])
def test_constant_loss_of_any_scale_gives_a_small_f4(loss):
    """§5.9 for large losses: float32 rounding of the EMA of a constant loss
    must not read as a change of the loss (the floor is relative)."""
    params = {"w": jnp.zeros(8)}
    opt = garo_optax.scale_by_garo(head_init_scale=1.0)
    grads = jnp.asarray(np.random.default_rng(0).normal(size=(100, 8)), jnp.float32)
    value = jnp.float32(loss)

    @jax.jit
    def run():
        def body(state, g):
            f4 = _f4(state, value)
            _, state = opt.update({"w": g}, state, params, value=value)
            return state, f4

        return jax.lax.scan(body, opt.init(params), grads)[1]

    f4 = np.asarray(run())
    assert np.max(np.abs(f4)) < 1e-2, f4[:5]


def test_nonfinite_first_loss_leaves_no_loss_history(key):
    """A NaN loss at step 1 is not counted: at step 2 the loss feature has no
    history (0), instead of reading the loss against an empty EMA."""
    params, grads = _tree(key), _tree(jax.random.key(9))
    opt = garo_optax.scale_by_garo(head_init_scale=1.0)
    _, state = opt.update(grads, opt.init(params), params, value=jnp.float32(np.nan))
    assert state.count == 1 and state.loss_count == 0
    assert float(_f4(state, jnp.float32(2.0))) == 0.0
    _, state = opt.update(grads, state, params, value=jnp.float32(2.0))
    assert state.loss_count == 1
    assert float(_f4(state, jnp.float32(2.0))) == pytest.approx(0.0, abs=1e-3)


def test_coupled_wd_is_a_deprecated_spelling_of_weight_decay_mode():
    """One vocabulary with AutoSGM: weight_decay_mode; coupled_wd still works."""
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.3, 0.1])}

    def first_update(**kwargs):  # the third: only the momentum tells them apart
        tx = garo_optax.garo(
            weight_decay_init=0.1, head_init_scale=0.0, momentum_init=0.5, **kwargs
        )
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
        return updates["w"]

    coupled = first_update(weight_decay_mode="coupled")
    decoupled = first_update()  # the default
    assert not np.allclose(coupled, decoupled)
    with pytest.warns(DeprecationWarning, match="weight_decay_mode='coupled'"):
        np.testing.assert_array_equal(first_update(coupled_wd=True), coupled)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(first_update(coupled_wd=False), decoupled)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        garo_optax.garo(weight_decay_mode="l2")
