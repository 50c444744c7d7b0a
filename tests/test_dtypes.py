"""dtypes for every registry transform: float16, float64 and mixed trees.

``test_common`` checks ``updates.dtype == grads.dtype`` on bfloat16, float32
and mixed trees, and the ``lax.cond`` stability of single-dtype trees. Here,
for every entry on float16, float64 (x64) and three mixed trees (float16 +
bfloat16, bfloat16 + float32, float16 + float64):

* updates come back in the gradient dtype, and the state is stable under
  ``lax.cond`` (the structure, shapes and dtypes of ``init`` survive updates);
* every scalar statistic (controller hidden state, rates, EMAs, counters) is
  float32, or float64 when a leaf is float64, whatever the parameter dtypes:
  bfloat16 rates would move in steps of 0.4%;
* parameter-shaped state is in its parameter's dtype, or the float32 compute
  dtype for low-precision leaves where a transform documents it;
* real jitted steps on float16 gradients whose squared norm overflows float16
  stay finite (statistics accumulate in float32);
* ``mu_dtype`` (AutoSGM, Adam-CLARA) and ``path_dtype`` (``scale_by_clara``)
  set their state's dtype and change the updates only by that rounding.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from registry import REGISTRY, VALUE, cases, mixed_tree
from test_optax_conformance import GARO_PRETRAINED

import garo_optax
from garo_optax._src import numerics

pytestmark = pytest.mark.usefixtures("fast_compile")

# (low, high) leaf dtypes of registry.mixed_tree; "mixed64" runs under x64.
TREES = {
    "float16": (jnp.float16, jnp.float16),
    "bfloat16": (jnp.bfloat16, jnp.bfloat16),
    "float32": (jnp.float32, jnp.float32),
    "float64": (jnp.float64, jnp.float64),
    "mixed16": (jnp.float16, jnp.bfloat16),
    "mixed": (jnp.bfloat16, jnp.float32),
    "mixed64": (jnp.float16, jnp.float64),
}


def shapes_tree(low, high):
    """A dict + tuple + scalar tree of ShapeDtypeStructs (nothing to compute)."""
    sds = jax.ShapeDtypeStruct
    return {
        "w": sds((2, 3), high),
        "b": sds((4,), low),
        "t": (sds((5,), high), sds((), low)),
    }


def _roles(opt, state):
    """'P' for the leaves of parameter-shaped subtrees, 'S' for the others."""
    return optax.tree.map_params(
        opt, lambda _: "P", state, transform_non_params=lambda _: "S"
    )


def _steps(opt, entry, params, n=2):
    def go(params):
        state = opt.init(params)
        for _ in range(n):
            grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
            updates, state = opt.update(grads, state, params, **entry.extra(VALUE))
            params = optax.apply_updates(params, updates)
        return updates, state

    return jax.eval_shape(go, params)


# bfloat16 and float32 alone are in test_common's dtype tests.
@pytest.mark.parametrize(
    "entry, tree",
    cases("dtypes", variants=("float16", "float64", "mixed16", "mixed", "mixed64")),
)
def test_dtypes_of_updates_and_state(entry, tree):
    low, high = TREES[tree]
    with jax.enable_x64("64" in tree):
        opt = entry.make()
        params = shapes_tree(low, high)
        updates, state = _steps(opt, entry, params)
        init = jax.eval_shape(opt.init, params)
    # Updates in the gradient (here: the parameter) dtype, leaf by leaf.
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(
        lambda p: p.dtype, params
    )
    # The state after updates has init's signature (what lax.cond requires).
    assert helpers.tree_signature(state) == helpers.tree_signature(init)
    scalar = numerics.scalar_dtype(params)
    assert scalar == (jnp.float64 if jnp.float64 in (low, high) else jnp.float32)
    roles = jax.tree.leaves(_roles(opt, init))
    leaves = jax.tree.leaves_with_path(init)
    assert len(roles) == len(leaves)
    param_leaves = jax.tree.leaves(params)
    num_buffers = num_float_scalars = 0
    for role, (path, leaf) in zip(roles, leaves):
        name = jax.tree_util.keystr(path)
        if role == "P":
            # Parameter-shaped subtrees flatten one after the other, in order.
            param = param_leaves[num_buffers % len(param_leaves)]
            num_buffers += 1
        if jnp.issubdtype(leaf.dtype, jnp.integer):
            assert leaf.dtype == jnp.int32, name
        elif role == "S" or leaf.shape != param.shape:
            # A scalar statistic, GARO's hidden state, AutoSGM's per-leaf
            # scalars: never low precision.
            num_float_scalars += 1
            assert leaf.dtype == scalar, f"{name}: {leaf.dtype} != {scalar}"
        else:
            allowed = {param.dtype, numerics.widest_float(param.dtype)}
            if param.shape == ():  # a per-leaf statistic looks like a buffer
                allowed.add(scalar)
            assert leaf.dtype in allowed, f"{name}: {leaf.dtype}"
    assert num_buffers % len(param_leaves) == 0
    if entry.lr_in_state:
        assert optax.tree.get(init, "lr").dtype == scalar
    assert num_float_scalars > 0


@pytest.mark.parametrize("entry", cases("param_dtype_state"))
def test_parameter_shaped_state_keeps_or_widens_each_leafs_dtype(entry):
    """Per leaf: a bfloat16 leaf's buffers are bfloat16 or float32, a float32
    leaf's are float32 (never narrowed to a neighbour's bfloat16)."""
    opt = entry.make()
    params = shapes_tree(jnp.bfloat16, jnp.float32)
    init = jax.eval_shape(opt.init, params)
    param_leaves = jax.tree.leaves(params)
    # Parameter-shaped subtrees flatten, one after the other, in params' order.
    buffers = [
        leaf
        for role, leaf in zip(jax.tree.leaves(_roles(opt, init)), jax.tree.leaves(init))
        if role == "P"
    ]
    assert buffers and len(buffers) % len(param_leaves) == 0
    for i, leaf in enumerate(buffers):
        param = param_leaves[i % len(param_leaves)]
        if leaf.shape != param.shape:  # AutoSGM's per-leaf scalars
            assert leaf.shape == () and leaf.dtype == jnp.float32
        elif param.dtype == jnp.float32:
            assert leaf.dtype == jnp.float32
        else:
            assert leaf.dtype in (jnp.bfloat16, jnp.float32)


@pytest.mark.parametrize("entry", cases("float16_overflow"))
def test_float16_gradients_with_an_overflowing_norm(entry):
    """||g||^2 = 1024 * 64^2 = 4.2e6 overflows float16 (max 65504): the
    statistics accumulate in float32, so jitted updates stay finite."""
    opt = entry.make()
    params = {"w": jnp.zeros((32, 32), jnp.float16), "b": jnp.ones(8, jnp.float16)}
    grads = {"w": jnp.full((32, 32), 64.0, jnp.float16), "b": jnp.ones(8, jnp.float16)}

    @jax.jit
    def step(params, state):
        updates, state = opt.update(grads, state, params, **entry.extra(VALUE))
        return optax.apply_updates(params, updates), updates, state

    state = opt.init(params)
    for _ in range(3):
        params, updates, state = step(params, state)
        assert jax.tree.map(lambda u: u.dtype, updates) == {
            "b": jnp.float16,
            "w": jnp.float16,
        }
        assert helpers.tree_all_finite(updates) and helpers.tree_all_finite(state)
    if "window" not in entry.name:  # a raised-cosine warm-up underflows float16
        assert np.any(np.asarray(updates["w"]) != 0)


def _run(opt, params, grads_fn, steps=5):
    state = opt.init(params)
    history = []
    for t in range(steps):
        updates, state = opt.update(grads_fn(t), state, params)
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return history, state


MU_DTYPE_FACTORIES = {
    "autosgm": lambda **kw: garo_optax.autosgm(learning_rate=1e-2, **kw),
    "autosgm_markov": lambda **kw: garo_optax.autosgm(
        learning_rate=1e-2, numerator="markov", zero=0.5, **kw
    ),
    "adam_clara": lambda **kw: garo_optax.adam_clara(learning_rate=1e-2, **kw),
}


@pytest.mark.parametrize("name", sorted(MU_DTYPE_FACTORIES))
@pytest.mark.parametrize("mu_dtype", [jnp.bfloat16, jnp.float32])
def test_mu_dtype(name, mu_dtype, key):
    factory = MU_DTYPE_FACTORIES[name]
    params = jax.tree.map(lambda x: x.astype(jnp.float32), registry_tree(key))
    keys = jax.random.split(key, 5)
    grads_fn = lambda t: jax.tree.map(
        lambda p: jax.random.normal(keys[t], p.shape, p.dtype), params
    )
    opt = factory(mu_dtype=mu_dtype)
    updates, state = _run(opt, params, grads_fn)
    mu = optax.tree.get(state, "mu")
    assert {leaf.dtype for leaf in jax.tree.leaves(mu)} == {jnp.dtype(mu_dtype)}
    for u in updates:
        assert {leaf.dtype for leaf in jax.tree.leaves(u)} == {jnp.dtype(jnp.float32)}
    signature = helpers.tree_signature(jax.eval_shape(opt.init, params))
    assert helpers.tree_signature(state) == signature
    reference, _ = _run(factory(), params, grads_fn)
    # bfloat16 moments round each step by 2^-8; float32 ones change nothing.
    rtol = 0 if mu_dtype == jnp.float32 else 5e-2
    helpers.tree_allclose(updates, reference, rtol=rtol, atol=1e-3 * rtol)
    if mu_dtype == jnp.bfloat16:
        assert not all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(reference))
        ), "bfloat16 moments should round"


def registry_tree(key):
    return mixed_tree(key)[0]


@pytest.mark.parametrize("path_dtype", [jnp.bfloat16, jnp.float32])
def test_scale_by_clara_path_dtype(path_dtype, key):
    params = jax.tree.map(lambda x: x.astype(jnp.float32), registry_tree(key))
    opt = garo_optax.scale_by_clara(1e-2, path_dtype=path_dtype)
    keys = jax.random.split(key, 5)
    grads_fn = lambda t: jax.tree.map(
        lambda p: jax.random.normal(keys[t], p.shape, p.dtype), params
    )
    updates, state = _run(opt, params, grads_fn)
    path = optax.tree.get(state, "path")
    assert {leaf.dtype for leaf in jax.tree.leaves(path)} == {jnp.dtype(path_dtype)}
    assert optax.tree.get(state, "lr").dtype == jnp.float32
    reference, _ = _run(garo_optax.scale_by_clara(1e-2), params, grads_fn)
    rtol = 0 if path_dtype == jnp.float32 else 5e-2
    helpers.tree_allclose(updates, reference, rtol=rtol, atol=1e-3 * rtol)


def _low_precision_run(entry, dtype, steps=8):
    """Updates of a few real steps on a quadratic whose parameters are ``dtype``."""
    target = jnp.linspace(-1.0, 1.0, 16)
    loss = lambda p: 0.5 * jnp.sum((p["w"].astype(jnp.float32) - target) ** 2)
    opt = entry.make(**entry.converge)
    params = {"w": jnp.zeros(16, dtype)}
    state, updates = opt.init(params), []
    step = jax.jit(lambda g, s, p, v: opt.update(g, s, p, **entry.extra(v)))
    for _ in range(steps):
        value, grads = jax.value_and_grad(loss)(params)
        u, state = step(grads, state, params, value)
        params = optax.apply_updates(params, u)
        updates.append(np.asarray(u["w"], np.float32))
    return np.stack(updates)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("entry", [*REGISTRY, GARO_PRETRAINED], ids=lambda e: e.name)
def test_16_bit_params_step_like_float32(entry, dtype):
    """8 real steps on 16-bit parameters against the same on float32 ones.

    Rounding to 16 bits moves an update by 2^-8 (bfloat16) per step; a
    statistic kept in 16 bits can do far worse (an EMA whose decay 0.999 rounds
    to 1, and whose state then never moves). The bound: the update norms agree
    within 10% at every step.
    """
    low = _low_precision_run(entry, dtype)
    high = _low_precision_run(entry, jnp.float32)
    norms = lambda u: np.linalg.norm(u, axis=-1)
    np.testing.assert_allclose(norms(low), norms(high), rtol=0.1, atol=1e-6)
