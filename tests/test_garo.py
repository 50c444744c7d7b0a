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
    for kwargs in (dict(), dict(lagged=True), dict(coupled_wd=True)):
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
        state, is_leaf=lambda x: isinstance(x, garo_optax.GaroState)
    )
    garo_state = [s for s in garo_state if isinstance(s, garo_optax.GaroState)][0]
    assert garo_state.count == 1
    for name in hp:
        assert hp[name] == getattr(garo_state, name)
    with pytest.raises(ValueError, match="exactly one GaroState"):
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
