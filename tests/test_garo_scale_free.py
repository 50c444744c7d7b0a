"""The scale-free GARO design (``garo-v2``): invariance, bounded rate, Adam limit."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax._src import controller as ctl
from garo_optax._src import garo as garo_module
from garo_optax._src.garo import (
    _leaf_sums,
    _Leaves,
    _tiny_leaf_groups,
    _tree_sums,
    sampled_rows,
)

MAX_CHANGE = ctl.SCALE_FREE_DESIGN.max_lr_change


def _quadratic():
    """A noisy ill-conditioned quadratic: it never converges to an exact 0."""
    scales = jnp.logspace(-2, 1, 8)
    target = jnp.linspace(-1.0, 2.0, 8)
    params = {"x": jnp.zeros(8), "y": jnp.ones((2, 3))}

    def loss(p, step):
        noise = 0.1 * jax.random.normal(
            jax.random.fold_in(jax.random.key(7), step), (8,)
        )
        x = p["x"] - target - noise
        return 0.5 * jnp.sum(scales * x**2) + jnp.sum(p["y"] ** 2) + 1.0

    return params, loss


def _mlp():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (32, 5))
    y = jnp.sin(x @ jnp.arange(1.0, 6.0))
    params = {
        "w1": jax.random.normal(k2, (5, 16)) / jnp.sqrt(5.0),
        "b1": jnp.zeros(16),
        "w2": jax.random.normal(k3, (16,)) / 4.0,
        "b2": jnp.zeros(()),
    }

    def loss(p, step):
        del step
        hidden = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
        return jnp.mean((hidden @ p["w2"] + p["b2"] - y) ** 2)

    return params, loss


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _run(tx, params, loss, scale, steps):
    scaled = lambda p, t: scale * loss(p, t)

    def step(carry, t):
        p, s = carry
        value, grads = jax.value_and_grad(scaled)(p, t)
        updates, s = tx.update(grads, s, p, value=value)
        lr = garo_optax.hyperparams(s)["lr"]
        return (optax.apply_updates(p, updates), s), (value / scale, lr)

    (params, _), (losses, lrs) = jax.lax.scan(
        step, (params, tx.init(params)), jnp.arange(steps)
    )
    return params, losses, lrs


def _controller(which):
    if which == "pretrained":
        return garo_optax.pretrained("garo-v2")
    return garo_optax.init_controller(
        jax.random.key(3), scale_free=True, head_init_scale=1.0
    )


def _tiny_eps(controller):
    return controller._replace(design=dataclasses.replace(controller.design, eps=1e-30))


def _max_gap(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("problem", [_quadratic, _mlp])
@pytest.mark.parametrize("which", ["drawn", "pretrained"])
def test_power_of_two_loss_scale_is_exact(problem, which):
    """c * loss for c = 2**-10, 2**10 (about 1e-3 and 1e3), the normalization's
    eps set to 1e-30: the same iterates and rates over 200 steps, to the bit.

    Multiplying by a power of two is exact in floating point, so any
    difference would be a feature or a step that is not scale-free.
    """
    tx = garo_optax.garo(_tiny_eps(_controller(which)))
    params, loss = problem()
    reference, ref_losses, ref_lrs = _run(tx, params, loss, 1.0, 200)
    assert float(ref_losses[-1]) < float(ref_losses[0])
    for scale in (2.0**-10, 2.0**10):
        final, _, lrs = _run(tx, params, loss, scale, 200)
        assert _max_gap(final, reference) == 0.0
        np.testing.assert_array_equal(lrs, ref_lrs)


@pytest.mark.parametrize("problem", [_quadratic, _mlp])
@pytest.mark.parametrize("which", ["drawn", "pretrained"])
def test_loss_scale_leaves_iterates_unchanged(problem, which):
    """c * loss for c = 1e-3 and 1e3 with the shipped eps (1e-12): 200 steps.

    c is not a power of two, so c * loss rounds differently, and where the
    run is chaotic (the MLP, near its minimum) the dynamics amplify rounding.
    The tolerance is that noise floor: the gap to the c = 1 run may be at most
    20 times the gap of a run whose loss is multiplied by 1 + 2**-22 (two
    ulps), plus 1e-6; and the final losses agree to 1% (or 1e-5 of the
    initial loss once converged). Measured: quadratic 1.2e-7 at every c
    (floor 1.2e-7); MLP with garo-v2 1.5e-2 at c = 1e-3 (floor 1.0e-3).
    """
    tx = garo_optax.garo(_controller(which))
    params, loss = problem()
    reference, ref_losses, _ = _run(tx, params, loss, 1.0, 200)
    nudged, _, _ = _run(tx, params, loss, 1.0 + 2.0**-22, 200)
    floor = _max_gap(nudged, reference)
    for scale in (1e-3, 1e3):
        final, losses, _ = _run(tx, params, loss, scale, 200)
        assert _max_gap(final, reference) <= 20 * floor + 1e-6
        np.testing.assert_allclose(
            losses[-1], ref_losses[-1], rtol=1e-2, atol=1e-5 * ref_losses[0]
        )


def test_seed_design_is_not_scale_free():
    """The control: the same check fails for garo-v1 (the test can fail)."""
    tx = garo_optax.garo(garo_optax.pretrained("garo-v1"))
    params, loss = _quadratic()
    a, _, _ = _run(tx, params, loss, 1.0, 50)
    b, _, _ = _run(tx, params, loss, 1e-3, 50)
    assert _max_gap(a, b) > 1e-2


@pytest.mark.parametrize("which", ["drawn", "pretrained"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_rate_changes_by_a_bounded_factor(which, scale):
    """lr_t / lr_{t-1} in [1/1.1, 1.1]; the first step starts from exp(log_lr0)."""
    controller = _controller(which)
    tx = garo_optax.garo(controller)
    params, loss = _mlp()
    _, _, lrs = _run(tx, params, loss, scale, 300)
    lr0 = float(jnp.exp(controller.log_lr0))
    assert float(tx.init(params)[0].lr) == pytest.approx(lr0, rel=1e-6)
    ratios = np.asarray(lrs) / np.concatenate([[lr0], np.asarray(lrs)[:-1]])
    assert np.all(ratios <= MAX_CHANGE * (1 + 1e-5))
    assert np.all(ratios >= (1 - 1e-5) / MAX_CHANGE)
    assert np.all(np.isfinite(lrs))


def test_drawn_controller_moves_the_rate():
    """The bound is met by a controller that uses it (not a constant rate)."""
    tx = garo_optax.garo(_controller("drawn"))
    params, loss = _mlp()
    _, _, lrs = _run(tx, params, loss, 1.0, 100)
    assert float(jnp.max(lrs) / jnp.min(lrs)) > 1.5


def test_head_init_scale_zero_is_adam():
    """With constant heads the scale-free design is optax.adam(lr0, b1, eps)."""
    params, loss = _mlp()
    tx = garo_optax.garo(
        scale_free=True,
        head_init_scale=0.0,
        learning_rate_init=3e-3,
        momentum_init=0.8,
        weight_decay_init=0.0,
    )
    ours, _, lrs = _run(tx, params, loss, 1.0, 100)
    adam = optax.adam(3e-3, b1=0.8, eps=ctl.SCALE_FREE_DESIGN.eps)

    state, p = adam.init(params), params
    for _ in range(100):
        grads = jax.grad(loss)(p, 0)
        updates, state = adam.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(lrs, 3e-3, rtol=1e-6)


def test_decoupled_weight_decay_is_adamw():
    params, loss = _mlp()
    tx = garo_optax.garo(scale_free=True, head_init_scale=0.0, weight_decay_init=0.1)
    ours, _, _ = _run(tx, params, loss, 1.0, 50)
    adamw = optax.adamw(1e-3, b1=0.9, eps=ctl.SCALE_FREE_DESIGN.eps, weight_decay=0.1)
    state, p = adamw.init(params), params
    for _ in range(50):
        updates, state = adamw.update(jax.grad(loss)(p, 0), state, p)
        p = optax.apply_updates(p, updates)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_pretrained_default_is_the_scale_free_controller():
    controller = garo_optax.pretrained()
    assert controller.design.scale_free
    assert controller.log_lr0.shape == ()
    seed = garo_optax.pretrained("garo-v1")
    assert not seed.design.scale_free and seed.log_lr0 is None


def test_non_finite_gradient_keeps_the_state():
    tx = garo_optax.garo(garo_optax.pretrained())
    params, loss = _mlp()
    state = tx.init(params)
    grads = jax.grad(loss)(params, 0)
    _, state = tx.update(grads, state, params, value=loss(params, 0))
    bad = jax.tree.map(lambda g: g.at[..., 0].set(jnp.nan) if g.ndim else g, grads)
    updates, after = tx.update(bad, state, params, value=jnp.nan)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    inner, after_inner = state[0], after[0]
    assert int(after_inner.skipped) == 1
    for name in ("h", "lr", "momentum", "nu", "first_moment_scale", "loss_first"):
        for a, b in zip(
            jax.tree.leaves(getattr(inner, name)),
            jax.tree.leaves(getattr(after_inner, name)),
        ):
            np.testing.assert_array_equal(a, b)


def test_complex_parameters_follow_adam():
    target = jnp.array([1.0 + 2.0j, -0.5j, 3.0])
    loss = lambda p: jnp.sum(jnp.abs(p - target) ** 2)
    tx = garo_optax.garo(
        scale_free=True,
        head_init_scale=0.0,
        weight_decay_init=0.0,
        learning_rate_init=0.1,
    )
    adam = optax.adam(0.1, eps=ctl.SCALE_FREE_DESIGN.eps)
    p, q = jnp.zeros(3, jnp.complex64), jnp.zeros(3, jnp.complex64)
    s, r = tx.init(p), adam.init(q)
    for _ in range(200):
        g = jnp.conj(jax.grad(loss)(p))
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        h = jnp.conj(jax.grad(loss)(q))
        v, r = adam.update(h, r, q)
        q = optax.apply_updates(q, v)
    assert p.dtype == jnp.complex64
    np.testing.assert_allclose(p, q, atol=1e-5)
    np.testing.assert_allclose(p, target, atol=5e-2)


# --- Statistics of large leaves from sampled rows (GaroDesign.stats_sample). ---


def _with_sample(controller, sample):
    design = dataclasses.replace(controller.design, stats_sample=sample)
    return controller._replace(design=design)


def test_sampled_rows_picks_evenly_spaced_rows():
    x = jnp.arange(30000.0).reshape(1000, 30)
    rows, scale = sampled_rows(x, 1000)  # stride 30000 // 1000 = 30
    np.testing.assert_array_equal(rows, x[::30])
    assert scale == x.size / rows.size == 30000 / (34 * 30)
    ones = jnp.ones((7, 50, 3))
    rows, scale = sampled_rows(ones, 100)  # rows of the last axis
    assert rows.shape == (35, 3) and float(jnp.sum(rows)) * scale == ones.size
    flat, scale = sampled_rows(jnp.ones(5000), 1000)
    assert flat.shape == (1000, 1) and scale == 5.0
    small = jnp.ones(199)
    assert sampled_rows(small, 100)[0] is small  # under 2 * sample: all of it
    assert sampled_rows(jnp.ones(200), 100)[0].shape == (100, 1)
    assert sampled_rows(x, 0)[0] is x


def test_every_shipped_task_reads_every_element():
    """garo-v2 samples only leaves of 2 * 65536 elements or more: none of the tasks it
    was meta-trained or evaluated on has one, so its shipped numbers are of
    exact statistics, and garo-v1 reads every element always."""
    from garo_optax import meta
    from garo_optax._app import bench

    limit = 2 * garo_optax.pretrained().design.stats_sample
    assert limit == 2 * 65536
    assert garo_optax.pretrained("garo-v1").design.stats_sample == 0
    families = [f() for f in meta.FAMILIES.values()]
    families += [t.family() for t in bench.TASKS.values()]
    for family in families:
        config = jax.eval_shape(family.sample, jax.random.key(0))
        shapes = jax.eval_shape(
            lambda c, f=family: f.task(c).init(jax.random.key(0)), config
        )
        assert max(x.size for x in jax.tree.leaves(shapes)) < limit, family.name


@pytest.mark.parametrize("which", ["drawn", "pretrained"])
def test_sampled_statistics_are_scale_free(which):
    """The power-of-two check with every leaf sampled (stats_sample=2)."""
    tx = garo_optax.garo(_with_sample(_tiny_eps(_controller(which)), 2))
    params, loss = _quadratic()
    reference, _, ref_lrs = _run(tx, params, loss, 1.0, 200)
    for scale in (2.0**-10, 2.0**10):
        final, _, lrs = _run(tx, params, loss, scale, 200)
        assert _max_gap(final, reference) == 0.0
        np.testing.assert_array_equal(lrs, ref_lrs)


def test_sampled_statistics_estimate_the_exact_ones():
    """Sums over 1/16 of a 16384-element leaf against the exact sums.

    i.i.d. normal entries: the relative error of a sum of squares over 1024
    samples has a standard deviation of about 4.4%; the bound is 20%.
    """
    k1, k2 = jax.random.split(jax.random.key(0))
    g = jax.random.normal(k1, (256, 64))
    m = 0.5 * g + jax.random.normal(k2, (256, 64))
    nu = g**2 + 1.0
    design = dataclasses.replace(ctl.SCALE_FREE_DESIGN, stats_sample=1024)
    exact_design = dataclasses.replace(design, stats_sample=0)
    sums = lambda d: _leaf_sums(g, m, nu, jnp.float32, jnp.float32, d, True)
    sampled, exact = sums(design), sums(exact_design)
    np.testing.assert_allclose(sampled[:4], exact[:4], rtol=0.2)
    assert not np.array_equal(sampled[:4], exact[:4])  # it did sample
    assert np.isfinite(sampled[4]) and np.isfinite(exact[4])  # the finite probes


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_outside_the_sample_skips_the_step(bad):
    """A bad element in a row the statistics do not read still skips the step:
    the finite probe reads every element."""
    tx = garo_optax.garo(_with_sample(garo_optax.pretrained(), 64))
    params = {"w": jnp.ones((40, 16)), "b": jnp.zeros(3)}
    assert sampled_rows(params["w"], 64)[0].shape == (4, 16)  # rows 0, 10, 20, 30
    state = tx.init(params)
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=jnp.float32(1.0)))
    _, state = step(grads, state, params)
    bad_grads = {**grads, "w": grads["w"].at[5, 3].set(bad)}
    updates, after = step(bad_grads, state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
    assert int(after[0].skipped) == 1
    before = jax.tree.leaves(state[0]._replace(skipped=None))
    for a, b in zip(jax.tree.leaves(after[0]._replace(skipped=None)), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scale_free", [True, False])
def test_tiny_leaves_share_one_reduction_with_the_same_sums(monkeypatch, scale_free):
    """Global mode concatenates leaves under 4,096 elements (per dtype) for one
    statistics reduction: the sums equal one reduction per leaf up to rounding,
    mixed dtypes included, and a NaN in a tiny leaf still shows."""
    key = iter(jax.random.split(jax.random.key(1), 12))
    shapes = [(3, 5), (7,), (), (64, 64), (2, 3, 4)]
    dtypes = [jnp.float32, jnp.bfloat16, jnp.float32, jnp.float32, jnp.bfloat16]
    grads = [jax.random.normal(next(key), s).astype(d) for s, d in zip(shapes, dtypes)]
    moms = [jax.random.normal(next(key), s).astype(d) for s, d in zip(shapes, dtypes)]
    nus = [jnp.abs(g.astype(jnp.float32)) + 0.5 for g in grads]
    design = dataclasses.replace(ctl.SCALE_FREE_DESIGN, scale_free=scale_free)
    leaves = _Leaves(None, grads, moms, nus, None, [jnp.float32] * len(grads))
    sums = lambda ls: _tree_sums(ls, jnp.float32, design, True, False)
    assert [
        len(g) for g in _tiny_leaf_groups(list(zip(grads, moms, nus, leaves.work)))
    ] == [2, 2]
    shared = sums(leaves)
    monkeypatch.setattr(garo_module, "_TINY_LEAF", 0)
    np.testing.assert_allclose(shared, sums(leaves), rtol=1e-6)
    monkeypatch.undo()
    bad = leaves._replace(grads=[grads[0].at[1, 2].set(jnp.nan), *grads[1:]])
    assert np.isnan(sums(bad)[-1])


@pytest.mark.parametrize(
    "field, value",
    [
        ("b2", 1.0),
        ("eps", -1e-8),
        ("max_lr_change", 0.9),
        ("min_lr", 0.0),
        ("max_lr", 1e-9),  # below min_lr
        ("stats_sample", -1),
        ("stats_sample", 1.5),
    ],
)
def test_bad_design_values_raise(field, value):
    with pytest.raises(ValueError, match=field):
        ctl.GaroDesign(scale_free=True, **{field: value})
