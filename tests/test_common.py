"""Conformance suite: every public garo_optax optimizer behaves like an optax one.

After ``optax/contrib/_common_test.py``. ``registry.REGISTRY`` (tests/registry.py)
lists every public optimizer with minimal keyword arguments; each test function
checks one property for every entry. A new optimizer is added with one
``Entry(...)`` line there, e.g.

    Entry("garo", garo_optax.garo, dict(learning_rate=1e-2),
          dict(learning_rate=0.1), 5_000, lr_in_state=True),

and ``test_registry_covers_public_api`` fails until it is there.

Strict dtype promotion (``jax.numpy_dtype_promotion("strict")``) is applied only
around garo_optax's own transforms: ``optax.scale_by_adam`` raises
``TypePromotionError`` under it (``float ** int32`` in
``optax.tree.bias_correction``), so entries that contain it are not flagged
``strict_promotion``. Flagged entries run the float32-only tests (extra arguments,
convergence, schedules) under strict promotion, and ``test_strict_dtype_promotion``
traces them on bf16, f32 and mixed trees. The composed ``adam+scale_by_clara``
entry wraps its ``scale_by_clara`` in strict promotion in every test.
"""

import inspect
import typing

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from registry import (
    DTYPE_PAIRS,
    FLOATS,
    REGISTRY,
    VALUE,
    cases,
    mixed_tree,
    unroll,
)

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _minimise(opt, entry, problem, steps):
    """Minimises ``problem`` for ``steps`` steps in a jitted ``lax.scan``."""

    def body(carry, _):
        x, state = carry
        value, grad = jax.value_and_grad(problem.fn)(x)
        updates, state = opt.update(grad, state, x, **entry.extra(value))
        return (optax.apply_updates(x, updates), state), None

    @jax.jit
    def go(x0):
        (x, state), _ = jax.lax.scan(body, (x0, opt.init(x0)), length=steps)
        return x, state

    return go(problem.arrays()[0])


def _leaf(tree, path):
    for k in path:
        tree = tree[k]
    return tree


# --- The registry itself. ---


def test_registry_covers_public_api():
    """Every public optimizer factory of garo_optax has a registry entry."""
    covered = {e.factory.__name__ for e in REGISTRY}
    covered |= {name for e in REGISTRY for name in e.covers}
    factories = set()
    for name in garo_optax.__all__:
        obj = getattr(garo_optax, name)
        if inspect.isclass(obj) or not callable(obj):
            continue
        returns = typing.get_type_hints(obj).get("return")
        if returns in (
            optax.GradientTransformation,
            optax.GradientTransformationExtraArgs,
        ):
            factories.add(name)
    assert {"clara_sgd", "adam_clara", "scale_by_clara"} <= factories
    assert factories <= covered, f"not in REGISTRY: {sorted(factories - covered)}"


# --- One test function per property. ---


@pytest.mark.parametrize("entry", cases("init_update"))
def test_jitted_init_update_mixed_tree(entry, key):
    """Jitted init/update on dict + tuple + scalar, f32 and bf16 leaves."""
    opt = entry.make()
    params, grads = mixed_tree(key)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(grads, state, params, **entry.extra(VALUE))
        return optax.apply_updates(params, updates), updates, state

    state = jax.jit(opt.init)(params)
    assert helpers.tree_all_finite(state)
    for _ in range(3):
        params, updates, state = step(params, state)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)
        assert helpers.tree_all_finite(updates)
        assert helpers.tree_all_finite(state)
    assert all(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("entry", cases("abstract_init"))
def test_init_on_shape_dtype_structs(entry, key):
    """init accepts ShapeDtypeStructs; same state signature as on real arrays."""
    opt = entry.make()
    params, _ = mixed_tree(key)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    expected = helpers.tree_signature(jax.eval_shape(opt.init, params))
    assert helpers.tree_signature(opt.init(abstract)) == expected
    assert helpers.tree_signature(jax.eval_shape(opt.init, abstract)) == expected


@pytest.mark.parametrize("entry", cases("extra_args"))
def test_accepts_unknown_extra_args_and_value(entry):
    """Unknown keywords and ``value=`` are accepted under jit, and ignored."""
    opt = entry.make()
    params, _ = helpers.ROSENBROCK.arrays()

    def step(carry, extras):
        params, state = carry
        value, grad = jax.value_and_grad(helpers.ROSENBROCK.fn)(params)
        kwargs = dict(entry.extra(value))
        if extras:
            kwargs.update(
                value=value, unexpected_extra_args_your_optimizer_doesnt_expect=1
            )
        updates, state = opt.update(grad, state, params, **kwargs)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def go(params):
        plain = with_extras = (params, opt.init(params))
        for _ in range(3):
            plain = step(plain, extras=False)
            with_extras = step(with_extras, extras=True)
        return plain, with_extras

    with entry.promotion():
        plain, with_extras = go(params)
    helpers.tree_allclose(with_extras, plain, rtol=0)


@pytest.mark.parametrize("entry", cases("no_recompile"))
def test_no_recompilation_on_second_update(entry, key):
    """The second jitted update call neither retraces nor recompiles."""
    opt = entry.make()
    params, grads = mixed_tree(key)

    def step(params, state):
        updates, state = opt.update(grads, state, params, **entry.extra(VALUE))
        return optax.apply_updates(params, updates), state

    counter = helpers.TraceCounter(step)
    jitted = jax.jit(counter)
    params, state = jitted(params, opt.init(params))
    with helpers.log_compilations() as compiled:
        jax.block_until_ready(jitted(params, state))
    assert counter.count == 1, "update was traced again on the second call"
    assert compiled == [], f"recompiled on the second call: {compiled}"


@pytest.mark.parametrize(
    "entry, problem", cases("convergence", variants=("parabola", "rosenbrock"))
)
def test_convergence(entry, problem):
    """Reaches the minimiser of a parabola / Rosenbrock (lax.scan under jit)."""
    problem = {p.name: p for p in helpers.PROBLEMS}[problem]
    opt = entry.make(**entry.converge)
    with entry.promotion():
        x, _ = _minimise(opt, entry, problem, entry.steps)
    np.testing.assert_allclose(x, problem.arrays()[1], rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize(
    "entry, dtype", cases("preserve_dtype", variants=("bfloat16", "float32", "mixed"))
)
def test_updates_have_grads_dtype(entry, dtype, key):
    """``updates.dtype == grads.dtype`` leaf by leaf, over two steps."""
    opt = entry.make()
    low, high = DTYPE_PAIRS[dtype]
    params, grads = mixed_tree(key, low=low, high=high)

    def two_steps(params):  # the dtypes jit would produce, without compiling
        state = opt.init(params)
        updates, state = opt.update(grads, state, params, **entry.extra(VALUE))
        params = optax.apply_updates(params, updates)
        return opt.update(grads, state, params, **entry.extra(VALUE))[0]

    updates = jax.eval_shape(two_steps, params)
    got = jax.tree.map(lambda u: u.dtype, updates)
    assert got == jax.tree.map(lambda g: g.dtype, grads)


@pytest.mark.parametrize(
    "entry, dtype",
    cases("state_stability", variants=("float16", "bfloat16", "float32", "float64")),
)
def test_state_structure_and_dtype_stable(entry, dtype):
    """init and update states agree in structure/shape/dtype (``lax.cond`` test).

    ``lax.cond`` refuses branches whose outputs differ in structure, shape or
    dtype; tracing (``jax.eval_shape``) is enough to check that.
    """
    dtype = FLOATS[dtype]
    with jax.enable_x64(dtype == jnp.float64):
        opt = entry.make()
        problem = helpers.PARABOLA
        params0, _ = problem.arrays(dtype)

        def step(params, state):
            value, grads = jax.value_and_grad(problem.fn)(params)
            # A value of a different dtype than the params, on purpose.
            value = value.astype(jnp.bfloat16 if dtype == jnp.float16 else jnp.float16)
            cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
            updates, state = jax.lax.cond(
                cond,
                lambda: opt.update(grads, state, params, **entry.extra(value)),
                lambda: (params, state),
            )
            return optax.apply_updates(params, updates), state

        def two_steps(params):
            state = opt.init(params)
            for _ in range(2):
                params, new_state = step(params, state)
                cond = jax.random.randint(jax.random.key(1), (), 0, 2) == 0
                state = jax.lax.cond(cond, lambda: state, lambda: new_state)  # noqa: B023
            return params, state

        params, state = jax.eval_shape(two_steps, params0)
        assert params.dtype == dtype
        expected = jax.eval_shape(opt.init, params0)
        assert helpers.tree_signature(state) == helpers.tree_signature(expected)


@pytest.mark.parametrize("entry", cases("inject_hyperparams"))
def test_inject_hyperparams_matches_direct(entry, key):
    """``inject_hyperparams(factory)(**kwargs)`` equals ``factory(**kwargs)`` (jit)."""
    opt = entry.make()
    injected = optax.inject_hyperparams(entry.factory, static_args=entry.static_args)(
        **entry.kwargs
    )
    params, grads = mixed_tree(key, low=jnp.float32)
    extra = entry.extra(VALUE)
    updates, state = unroll(opt, params, grads, 3, extra)
    updates_inj, state_inj = unroll(injected, params, grads, 3, extra, jit=True)
    helpers.tree_allclose(updates_inj, updates, rtol=1e-3, atol=1e-7)
    helpers.tree_allclose(state_inj.inner_state, state, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("entry", cases("chain"))
def test_works_inside_chain(entry, key):
    """Inside ``optax.chain`` (which forwards ``value=`` to every element) it
    gives the same updates and inner state as alone."""
    opt = entry.make()
    chained = optax.chain(optax.identity(), opt, optax.identity())
    params, grads = mixed_tree(key)
    extra = {"value": VALUE}
    updates, state = unroll(opt, params, grads, 2, extra)
    updates_c, state_c = unroll(chained, params, grads, 2, extra)
    helpers.tree_allclose(updates_c, updates, rtol=0)
    helpers.tree_allclose(state_c[1], state, rtol=0)


@pytest.mark.parametrize("entry", cases("masked"))
def test_works_inside_masked(entry, key):
    """``optax.masked``: masked-out leaves pass through, the rest as if alone."""
    opt = entry.make()
    params, grads = mixed_tree(key)
    mask = {"w": True, "b": False, "t": (True, False)}
    sub = lambda tree: {"t": (tree["t"][0],), "w": tree["w"]}
    extra = entry.extra(VALUE)
    updates, state = unroll(optax.masked(opt, mask), params, grads, 2, extra)
    ref, state_ref = unroll(opt, sub(params), sub(grads), 2, extra)
    helpers.tree_allclose(sub(updates), ref, rtol=1e-6)
    for path in (("b",), ("t", 1)):
        want = np.broadcast_to(_leaf(grads, path), _leaf(updates, path).shape)
        np.testing.assert_array_equal(_leaf(updates, path), want)
    # MaskedNode placeholders are empty subtrees: the leaves line up.
    helpers.tree_allclose(
        jax.tree.leaves(state.inner_state), jax.tree.leaves(state_ref), rtol=1e-6
    )


@pytest.mark.parametrize("entry", cases("multi_steps"))
def test_works_inside_multi_steps(entry, key):
    """``MultiSteps(every_k_schedule=4)`` (jit, bf16 and f32 leaves, ``value=``):
    exactly zero updates on mini-steps 1-3, then the inner first update."""
    opt = entry.make()
    multi = optax.MultiSteps(opt, every_k_schedule=4)
    params, grads = mixed_tree(key)
    updates, _ = unroll(multi, params, grads, 4, {"value": VALUE}, jit=True)
    expected, _ = unroll(opt, params, grads, 1, entry.extra(VALUE))
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(
        lambda g: np.asarray(g).dtype, grads
    )
    for u in jax.tree.leaves(updates):
        np.testing.assert_array_equal(u[:3], np.zeros_like(u[:3]))
    first = jax.tree.map(lambda u: u[3], updates)
    # Jit vs eager: jit may skip an intermediate bf16 rounding, which moves the
    # bf16 leaves by an ulp and, through the global rate, the others slightly.
    expected = jax.tree.map(lambda u: u[0], expected)
    helpers.tree_allclose(first, expected, rtol=1e-3, ulps=2)
    assert all(np.any(u != 0) for u in jax.tree.leaves(first))


@pytest.mark.parametrize("entry", cases("map_params"))
def test_tree_map_params(entry, key):
    """``optax.tree.map_params`` maps exactly the params-shaped state subtrees."""
    opt = entry.make()
    params, grads = mixed_tree(key, low=jnp.float32)
    _, state = unroll(opt, params, grads, 1, entry.extra(VALUE))
    same = optax.tree.map_params(opt, lambda v: v, state)
    helpers.tree_allclose(same, state, rtol=0)
    shifted = optax.tree.map_params(opt, lambda v: v + 1, state)
    assert jax.tree.structure(shifted) == jax.tree.structure(state)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(shifted), jax.tree.leaves(state))
    ]
    num_params = len(jax.tree.leaves(params))
    assert sum(changed) > 0 and sum(changed) % num_params == 0
    if entry.lr_in_state:
        assert optax.tree.get(shifted, "lr") == optax.tree.get(state, "lr")


def _accepts_schedule(factory) -> bool:
    hints = typing.get_type_hints(factory)
    return hints.get("learning_rate") in (optax.ScalarOrSchedule, optax.Schedule)


@pytest.mark.parametrize("entry", cases("schedule"))
def test_constant_schedule_equals_constant(entry):
    """A ``learning_rate`` annotated ScalarOrSchedule takes a schedule, exactly."""
    if not _accepts_schedule(entry.factory):
        pytest.skip("learning_rate is not annotated optax.ScalarOrSchedule")
    lr = entry.kwargs["learning_rate"]
    results = []
    for learning_rate in (lr, optax.constant_schedule(lr)):
        opt = entry.make(learning_rate=learning_rate)
        with entry.promotion():
            results.append(_minimise(opt, entry, helpers.ROSENBROCK, steps=5))
    helpers.tree_allclose(results[1], results[0], rtol=0)


@pytest.mark.parametrize("entry", cases("lr_in_state", where=lambda e: e.lr_in_state))
def test_state_exposes_lr(entry, key):
    """``optax.tree.get(state, "lr")`` is a unique, finite, positive scalar."""
    opt = entry.make()
    params, grads = mixed_tree(key)
    _, state = unroll(opt, params, grads, 2, entry.extra(VALUE))
    for lr in (optax.tree.get(opt.init(params), "lr"), optax.tree.get(state, "lr")):
        assert lr.shape == () and jnp.issubdtype(lr.dtype, jnp.floating)
        assert np.isfinite(lr) and lr > 0


@pytest.mark.parametrize(
    "entry, dtype",
    cases(
        "strict_promotion",
        variants=("float32", "bfloat16", "mixed"),
        where=lambda e: e.strict_promotion,
    ),
)
def test_strict_dtype_promotion(entry, dtype, key):
    """init and update trace under ``jax.numpy_dtype_promotion("strict")``."""
    opt = entry.make()
    low, high = DTYPE_PAIRS[dtype]
    params, grads = mixed_tree(key, low=low, high=high)

    def two_steps(params):
        state = opt.init(params)
        for _ in range(2):
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params, state

    # Promotion errors are raised while tracing: no need to compile.
    with jax.numpy_dtype_promotion("strict"):
        strict = jax.eval_shape(two_steps, params)
    standard = jax.eval_shape(two_steps, params)
    assert helpers.tree_signature(strict) == helpers.tree_signature(standard)
