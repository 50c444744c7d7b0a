"""optax's generic optimizer tests, re-implemented for every garo_optax transform.

The intent and assertions of optax's own suites (``_src/alias_test.py``,
``contrib/_common_test.py``, ``_src/float64_test.py`` and
``transforms/_accumulation_test.py``, ``_conditionality_test.py``,
``_masking_test.py``, ``tree_utils/_state_utils_test.py``,
``schedules/_inject_test.py``), parametrized over every entry of
``registry.REGISTRY`` plus the shipped controller,
``garo_optax.garo(garo_optax.pretrained())``:

* optimization of the parabola, Rosenbrock, the matrix parabola and mixed 1-D
  and 2-D tensors (float32; the parabola and Rosenbrock also in complex64). One
  cheap run per transform (mixed tensors, the registry's convergence settings)
  is in the default suite; the grid at the registry's configuration (the
  documented defaults otherwise), for optax's 30 000 steps, is marked
  ``slow``. A transform that cannot reach optax's tolerance there is a strict
  ``xfail`` giving the measured distance;
* unknown extra arguments under jit, and no recompilation on a second call;
* ``optax.inject_hyperparams`` for every float hyperparameter: built from
  traced values, it matches the transform built from the same constants;
* dtypes: updates in the gradient's dtype and a state that keeps the
  structure, shapes and dtypes of ``init`` under ``lax.cond`` (bf16, f16, f32,
  f64 and mixed f32 + f64 under x64, complex64); complex parameters handled as
  optax does (real inputs give the real run; a per-element phase rotates the
  updates by that phase);
* ``init`` on ``ShapeDtypeStruct``s, and state sharding types stable over
  updates on a mesh with explicit axes;
* ``optax.MultiSteps`` (the update of k accumulated mini-steps is the inner
  update on their mean; ``skip_not_finite`` drops NaN/Inf mini-steps) and
  ``optax.apply_if_finite`` (also under ``jax.pmap``);
* ``optax.masked`` with a mask tree, a mask function, a prefix mask and empty
  containers;
* ``optax.tree.map_params`` with shardings (the README recipe, on a one-device
  mesh here and on eight devices in ``test_sharding.py``) and with
  ``inject_hyperparams``; ``optax.tree.get``/``optax.tree.set``;
* empty pytrees, ``None`` leaves, ``jax.vmap`` over parameters and states, and
  ``donate_argnums``.

Where an optax test hard-codes SGD's numbers, the assertion here compares with
the same transform run without the wrapper (``MultiSteps``, ``masked``,
``vmap``, ...). ``test_common.py`` checks some of these properties on other
trees; this module is the one-to-one port.

Cost: compiling dominates. Each test compiles at most one program per
transform (the extra-arguments and donation tests share theirs) and runs the
rest eagerly on trees of one shape, whose primitives are compiled once.
``MultiSteps`` and ``apply_if_finite`` (under jit and under pmap) run one entry
per implementation in the default suite and every entry under ``-m slow``;
the default part takes about 80 s of one core.
"""

import contextlib
import functools
import inspect

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sharding_worker
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from registry import REGISTRY, VALUE, Entry, mixed_tree

import garo_optax

pytestmark = pytest.mark.usefixtures("fast_compile")


def garo_pretrained(**kwargs) -> optax.GradientTransformationExtraArgs:
    """``garo_optax.garo(garo_optax.pretrained(), **kwargs)``."""
    return garo_optax.garo(garo_optax.pretrained(), **kwargs)


# garo's keywords, for inject_hyperparams (the controller is loaded lazily).
garo_pretrained.__signature__ = inspect.signature(
    functools.partial(garo_optax.garo, None)
)
GARO_PRETRAINED = Entry(
    "garo_pretrained",
    garo_pretrained,
    {},
    {},
    5_000,
    needs_value=True,
    lr_in_state=True,
    strict_promotion=True,
)
ENTRIES = (*REGISTRY, GARO_PRETRAINED)

# The float options of GARO's default controller (spec: every one of them is a
# keyword of garo(), so that inject_hyperparams sees it).
GARO_FLOAT_OPTIONS = {
    "head_init_scale": 0.1,
    "learning_rate_init": 0.01,
    "momentum_init": 0.0,
    "weight_decay_init": 1e-6,
}

TOL = dict(rtol=1e-5, atol=1e-7)  # jit vs eager, the same float32 arithmetic


def _is_garo(entry: Entry) -> bool:
    return entry.factory in (garo_optax.garo, garo_pretrained)


def _draws_controller(entry: Entry) -> bool:
    """GARO with a controller drawn from its float options (not pretrained)."""
    return entry.factory is garo_optax.garo


def params_cases(prop: str, variants=(None,), xfail=None, default=None):
    """``pytest.param``s over ``ENTRIES`` (x variants) for the property
    ``prop``. ``xfail`` maps an id to the reason of a strict xfail; with
    ``default`` (a set of entry names), the other entries are marked slow."""
    xfail = xfail or {}
    out = []
    for entry in ENTRIES:
        for variant in variants:
            id_ = entry.name if variant is None else f"{entry.name}-{variant}"
            values = (entry,) if variant is None else (entry, variant)
            reason = xfail.get(id_)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            if default is not None and entry.name not in default:
                marks.append(pytest.mark.slow)
            out.append(pytest.param(*values, id=id_, marks=marks))
    return out


def f32_tree(seed: int = 0):
    """(params, grads): registry.mixed_tree with every leaf float32."""
    return mixed_tree(jax.random.key(seed), low=jnp.float32)


def grads_at(grads, t: int):
    """A gradient tree that changes with the step ``t``."""
    return jax.tree.map(lambda g: g * (1.0 - 0.3 * t) + 0.1 * t, grads)


def run_eager(opt, entry, params, grads, steps, value=VALUE):
    """``steps`` eager updates with ``grads_at(grads, t)``: (updates list, state)."""
    state, history = opt.init(params), []
    for t in range(steps):
        updates, state = opt.update(
            grads_at(grads, t), state, params, **entry.extra(value)
        )
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return history, state


def leaves_close(actual, desired, rtol=TOL["rtol"], atol=TOL["atol"]):
    """Leaf-wise closeness of two lists of leaves (any tree structures)."""
    actual, desired = jax.tree.leaves(actual), jax.tree.leaves(desired)
    assert len(actual) == len(desired)
    for i, (a, d) in enumerate(zip(actual, desired)):
        a, d = np.asarray(a), np.asarray(d)
        assert a.shape == d.shape and a.dtype == d.dtype, (i, a.dtype, d.dtype)
        np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=f"leaf {i}")


# --- Optimization targets (optax's four), float32 or complex64. ---


def abs_sq(x):
    return jnp.real(x * jnp.conj(x))


def _complexify(value, dtype):
    return value * (1 + 1j) if jnp.issubdtype(dtype, jnp.complexfloating) else value


def parabola(dtype):
    final = jnp.asarray(_complexify(np.array([1.0, -1.0, 1.0]), dtype), dtype)
    init = jnp.asarray([-1.0, 10.0, 1.0], dtype)
    return init, final, lambda x: jnp.sum(abs_sq(x - final))


def rosenbrock(dtype):
    a, b = _complexify(1.0, dtype), 100.0
    init = jnp.zeros([2], dtype)
    final = jnp.asarray([a, a**2], dtype)

    def fn(x):
        return abs_sq(a - x[0]) + b * abs_sq(x[1] - x[0] ** 2)

    return init, final, fn


def matrix_parabola(dtype):
    final = jnp.asarray([[3.0, -2.0], [1.0, 4.0]], dtype)
    return jnp.zeros([2, 2], dtype), final, lambda x: jnp.sum(abs_sq(x - final))


def mixed_tensors(dtype):
    final = (
        jnp.asarray([1.0, -1.0, 2.0], dtype),
        jnp.asarray([[1.0, 0.0], [-1.0, 1.0]], dtype),
    )
    init = jax.tree.map(jnp.zeros_like, final)

    def fn(x):
        return sum(jnp.sum(abs_sq(p - f)) for p, f in zip(x, final))

    return init, final, fn


TARGETS = {
    "parabola": parabola,
    "rosenbrock": rosenbrock,
    "matrix_parabola": matrix_parabola,
    "mixed_tensors": mixed_tensors,
}


def minimise(opt, entry, target, dtype, steps):
    """``steps`` descent steps in one jitted ``lax.scan``: the final params."""
    init, _, fn = TARGETS[target](dtype)

    def body(carry, _):
        x, state = carry
        value, grads = jax.value_and_grad(fn)(x)
        # Complex gradients are conjugated before the update (optax's convention).
        grads = jax.tree.map(jnp.conj, grads)
        updates, state = opt.update(grads, state, x, **entry.extra(value))
        return (optax.apply_updates(x, updates), state), None

    @jax.jit
    def go(x):
        state = opt.init(x)
        state = optax.tree.map_params(opt, lambda v: v, state)  # a no-op map
        (x, _), _ = jax.lax.scan(body, (x, state), length=steps)
        return x

    # Strict promotion on float32 only: complex64 * float32 is a promotion.
    promotion = entry.promotion() if dtype == jnp.float32 else contextlib.nullcontext()
    with promotion:
        return go(init)


def assert_reached(x, target, dtype):
    final = TARGETS[target](dtype)[1]
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(final)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("entry", params_cases("mixed_tensors"))
def test_optimization_mixed_tensors(entry):
    """The cheap run: 1-D and 2-D tensors from zeros, convergence settings."""
    opt = entry.make(**entry.converge)
    x = minimise(opt, entry, "mixed_tensors", jnp.float32, entry.steps)
    assert_reached(x, "mixed_tensors", jnp.float32)


OPTIMIZATION_STEPS = 30_000  # optax/contrib/_common_test.py's budget
OPTIMIZATION_CASES = (
    "parabola-float32",
    "rosenbrock-float32",
    "matrix_parabola-float32",
    "mixed_tensors-float32",
    "parabola-complex64",
    "rosenbrock-complex64",
)
_COLLAPSE = (
    "adam_clara_local (faithful) compounds its rate tensor by tensor and step by "
    "step; the rate decays to 0 before the optimum: stalls at max |x - x*| = {}, "
    "the same point after 100 000 steps"
)
_DIVERGES = (
    "plain SGD is stable on Rosenbrock only for lr < 2 / 1002 (the curvature at "
    "the optimum); GARO starts at learning_rate_init = 0.01 and its default "
    "controller does not bring it down: diverges to max |x - x*| = {} within "
    "30 000 steps (non-finite steps are then skipped)"
)
# Measured at the registry's configuration after OPTIMIZATION_STEPS steps. The
# shipped controller (garo-v2) reaches every target.
OPTIMIZATION_XFAIL = {
    **{
        f"adam_clara_local-{case}": _COLLAPSE.format(distance)
        for case, distance in (
            ("parabola-float32", "0.21 (x = (0.999, -0.790, 1.0))"),
            ("rosenbrock-float32", "0.43 (x = (0.759, 0.575))"),
            ("mixed_tensors-float32", "0.20 (2.195 for 2)"),
            ("parabola-complex64", "0.37"),
            ("rosenbrock-complex64", "1.2"),
        )
    },
    **{
        f"{name}-rosenbrock-{dtype}": _DIVERGES.format(distance)
        for name, dtype, distance in (
            ("garo", "float32", "9e17"),
            ("garo_lagged_coupled", "float32", "7e12"),
            ("garo_per_tensor", "float32", "2e21"),
            ("garo_per_tensor_lagged", "float32", "6e18"),
            ("garo", "complex64", "2e13"),
            ("garo_lagged_coupled", "complex64", "8e22"),
            ("garo_per_tensor", "complex64", "5e13"),
            ("garo_per_tensor_lagged", "complex64", "3e13"),
        )
    },
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry, case",
    params_cases("optimization", OPTIMIZATION_CASES, xfail=OPTIMIZATION_XFAIL),
)
def test_optimization(entry, case):
    """optax's targets at the registry's configuration (else the documented
    defaults), 30 000 steps, to optax's tolerance (3e-2)."""
    target, dtype = case.split("-")
    dtype = jnp.dtype(dtype)
    x = minimise(entry.make(), entry, target, dtype, OPTIMIZATION_STEPS)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(x))
    assert_reached(x, target, dtype)


# --- Extra arguments, recompilation, donation. ---


@functools.cache
def jitted_step(name: str):
    """(opt, trace counter, jitted step) of one transform, compiled once for the
    two tests below: unknown keywords in, params and state donated."""
    entry = next(e for e in ENTRIES if e.name == name)
    opt = entry.make()
    _, grads = f32_tree()

    def step(params, state, value):
        updates, state = opt.update(
            grads,
            state,
            params,
            value=value,
            unexpected_extra_args_your_optimizer_doesnt_expect=1,
        )
        return optax.apply_updates(params, updates), state, updates

    counter = helpers.TraceCounter(step)
    return opt, counter, jax.jit(counter, donate_argnums=(0, 1))


def eager_reference(opt, entry, steps: int = 2):
    """``steps`` eager updates with a fixed gradient: (updates, params, state)."""
    params, grads = f32_tree()
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(grads, state, params, **entry.extra(VALUE))
        params = optax.apply_updates(params, updates)
    return updates, params, state


def _fresh_carry(opt, copy_state: bool = False):
    """(params, state) to donate; ``copy_state`` gives each state leaf its own
    buffer, so that only test_donate_argnums depends on init's buffers."""
    params, _ = f32_tree()
    state = opt.init(params)
    if copy_state:
        state = jax.tree.map(jnp.copy, state)
    return jax.tree.map(jnp.copy, params), state


@pytest.mark.parametrize("entry", params_cases("extra_args"))
def test_extra_args_and_no_recompilation(entry):
    """Unknown keywords (and ``value=``) are accepted under jit and ignored; the
    second call neither retraces nor recompiles."""
    opt, counter, jitted = jitted_step(entry.name)
    with entry.promotion():
        carry = jitted(*_fresh_carry(opt, copy_state=True), VALUE)[:2]
        with helpers.log_compilations() as compiled:
            *_, updates = jitted(*carry, VALUE)
            jax.block_until_ready(updates)
    assert counter.count == 1, "update was traced again on the second call"
    assert compiled == [], f"recompiled on the second call: {compiled}"
    leaves_close(updates, eager_reference(opt, entry)[0])


@pytest.mark.parametrize("entry", params_cases("donate"))
def test_donate_argnums(entry):
    """A step jitted with donated params and state runs on ``init``'s state (no
    two state leaves share a buffer), reuses every buffer of more than one
    element (a scalar the update does not read is pruned, not donated) and
    gives the undonated results."""
    opt, counter, jitted = jitted_step(entry.name)
    carry = _fresh_carry(opt)
    with entry.promotion():
        for _ in range(2):
            old = carry
            carry = jitted(*carry, VALUE)[:2]
            buffers = [x for x in jax.tree.leaves(old) if x.size > 1]
            assert all(x.is_deleted() for x in buffers), "a buffer was not donated"
    assert counter.count == 1
    _, params, state = eager_reference(opt, entry)
    leaves_close(carry, (params, state))


# --- inject_hyperparams, for every float hyperparameter. ---


def injectable(entry: Entry):
    """(kwargs, {float hyperparameter: value}, static argument names)."""
    kwargs = dict(entry.kwargs)
    if _draws_controller(entry):
        kwargs = {**GARO_FLOAT_OPTIONS, **kwargs}
    bound = inspect.signature(entry.factory).bind(**kwargs)
    bound.apply_defaults()
    args = bound.arguments
    floats = {k: v for k, v in args.items() if isinstance(v, float)}
    # Integers are structural (seeds, versions, sizes): kept static.
    ints = {
        k for k, v in args.items() if isinstance(v, int) and not isinstance(v, bool)
    }
    static = tuple(sorted(ints | set(entry.static_args)))
    return kwargs, floats, static


def _perturbed(value: float) -> float:
    return 0.8 * value if value else 0.05


@pytest.mark.parametrize("entry", params_cases("inject"))
def test_inject_hyperparams_every_float(entry):
    """Each float hyperparameter is injected (a state array, traced under jit);
    set to another value, the run equals the transform built with that value."""
    kwargs, floats, static = injectable(entry)
    params, grads = f32_tree()
    factory = optax.inject_hyperparams(entry.factory, static_args=static)

    @jax.jit
    def injected(hparams, params):
        opt = factory(**{**kwargs, **hparams})
        return opt.update(grads, opt.init(params), params, **entry.extra(VALUE))

    base = {k: jnp.asarray(v, jnp.float32) for k, v in floats.items()}
    for name in [None, *floats]:
        hparams = dict(base)
        overrides = {}
        if name is not None:
            overrides[name] = _perturbed(floats[name])
            hparams[name] = jnp.asarray(overrides[name], jnp.float32)
        updates, state = injected(hparams, params)
        assert set(floats) <= set(state.hyperparams), sorted(state.hyperparams)
        history, want = run_eager(
            entry.factory(**{**kwargs, **overrides}), entry, params, grads, 1
        )
        leaves_close(updates, history[-1], rtol=1e-4, atol=1e-7)
        leaves_close(state.inner_state, want, rtol=1e-4, atol=1e-7)
    if _draws_controller(entry):
        missing = set(GARO_FLOAT_OPTIONS) - set(floats)
        assert not missing, f"GARO options invisible to inject_hyperparams: {missing}"


# --- dtypes. ---


def _dtype_params(kind: str):
    """A parabola start in one dtype, or float32 + float64 leaves ("mixed64")."""
    if kind == "mixed64":
        return (
            jnp.asarray([-1.0, 10.0, 1.0], jnp.float32),
            jnp.asarray([3.0, 4.0], jnp.float64),
        )
    return parabola(jnp.dtype(kind))[0]


DTYPES = ("bfloat16", "float16", "float32", "float64", "mixed64", "complex64")


@pytest.mark.parametrize("entry, kind", params_cases("dtype", DTYPES))
def test_dtype_preserved_and_state_stable_under_cond(entry, kind):
    """Updates in the gradient's dtype; ``lax.cond`` between the state and an
    updated one traces (same structure, shapes and dtypes), with a loss of yet
    another dtype; the parameters keep their dtype."""
    with jax.enable_x64(kind in ("float64", "mixed64")):
        opt = entry.make()
        params0 = _dtype_params(kind)

        def loss_fn(params):
            return sum(jnp.sum(abs_sq(p - 0.5)) for p in jax.tree.leaves(params))

        def step(params, state):
            value, grads = jax.value_and_grad(loss_fn)(params)
            grads = jax.tree.map(jnp.conj, grads)
            value = value.astype(jnp.bfloat16 if kind == "float16" else jnp.float16)
            cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
            updates, new_state = jax.lax.cond(
                cond,
                lambda: opt.update(grads, state, params, **entry.extra(value)),
                lambda: (grads, state),
            )
            return optax.apply_updates(params, updates), new_state, updates

        def two_steps(params):
            state = opt.init(params)
            for _ in range(2):
                params, new_state, updates = step(params, state)
                cond = jax.random.randint(jax.random.key(1), (), 0, 2) == 0
                state = jax.lax.cond(cond, lambda: state, lambda: new_state)  # noqa: B023
            return params, state, updates

        params, state, updates = jax.eval_shape(two_steps, params0)
        init = jax.eval_shape(opt.init, params0)
    dtypes = lambda tree: jax.tree.map(lambda x: jnp.dtype(x.dtype), tree)
    assert dtypes(updates) == dtypes(params0)
    assert dtypes(params) == dtypes(params0)
    assert helpers.tree_signature(state) == helpers.tree_signature(init)


@pytest.mark.parametrize("entry", params_cases("complex"))
def test_complex_parameters(entry):
    """Complex parameters as in optax: a per-element phase e^{i phi} on the
    parameters and gradients of a real run rotates every update by e^{i phi}
    (norms, moments and cosines use |z|^2 and Re(z conj w)), and the phase
    includes phi = 0 elements (real inputs give the real run)."""
    opt = entry.make()
    params, grads = f32_tree()
    leaves, treedef = jax.tree.flatten(params)
    phase = treedef.unflatten(
        [
            jnp.exp(1j * (0.7 * jnp.arange(x.size) + 0.3 * i).reshape(x.shape))
            for i, x in enumerate(leaves)
        ]
    )
    phase = jax.tree.map(lambda z: z.astype(jnp.complex64), phase)
    rotate = lambda tree: jax.tree.map(lambda x, z: x * z, tree, phase)
    real, _ = run_eager(opt, entry, params, grads, 3)
    state, p = opt.init(rotate(params)), rotate(params)
    for t, want in enumerate(real):
        got, state = opt.update(
            rotate(grads_at(grads, t)), state, p, **entry.extra(VALUE)
        )
        p = optax.apply_updates(p, got)
        for u, z, c in zip(*(jax.tree.leaves(x) for x in (want, phase, got))):
            assert c.dtype == jnp.complex64
            np.testing.assert_allclose(
                np.asarray(c), np.asarray(u * z), rtol=1e-5, atol=1e-6
            )


# --- Abstract init and sharding types. ---


@pytest.mark.parametrize("entry", params_cases("abstract_init"))
def test_abstract_init(entry):
    """``init`` on ShapeDtypeStructs (eagerly and under ``eval_shape``) gives
    the state signature of real arrays, and so does an abstract update."""
    opt = entry.make()
    params, grads = mixed_tree(jax.random.key(0))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    want = helpers.tree_signature(jax.eval_shape(opt.init, params))
    assert helpers.tree_signature(opt.init(abstract)) == want
    assert helpers.tree_signature(jax.eval_shape(opt.init, abstract)) == want

    def update(params):
        return opt.update(grads, opt.init(params), params, **entry.extra(VALUE))

    _, state = jax.eval_shape(update, abstract)
    assert helpers.tree_signature(state) == want


# Leaf shapes distinct from one another; split over one axis, both or none.
SHARDED = {
    "w": ((4, 6), P("data", "model")),
    "b": ((6,), P("model")),
    "k": ((6, 4), P(None, "data")),
    "s": ((), P()),
}
SHARDED_SPECS = {name: spec for name, (_, spec) in SHARDED.items()}


def _mesh(axis_type):
    return jax.make_mesh((1, 1), ("data", "model"), axis_types=(axis_type,) * 2)


def _sharded_params(mesh):
    keys = jax.random.split(jax.random.key(0), len(SHARDED))
    return {
        name: jax.device_put(jax.random.normal(k, shape), NamedSharding(mesh, spec))
        for k, (name, (shape, spec)) in zip(keys, SHARDED.items())
    }


def _specs(tree):
    """The sharding types (``jax.typeof(x).sharding.spec``) of traced leaves."""
    return jax.tree.map(lambda x: jax.typeof(x).sharding.spec, tree)


@pytest.mark.parametrize("entry", params_cases("sharding_types"))
def test_sharding_type_stability(entry):
    """On a mesh with explicit axes the state's sharding types survive updates
    (and ``lax.cond``), and updates carry their parameters' sharding types."""
    opt = entry.make()
    mesh = _mesh(AxisType.Explicit)
    seen = {}

    def run(params):
        seen["params"] = _specs(params)
        state = opt.init(params)
        seen["init"] = _specs(state)
        for _ in range(2):
            grads = jax.tree.map(lambda p: 0.5 * p + 0.1, params)
            updates, new = opt.update(grads, state, params, **entry.extra(VALUE))
            cond = jax.random.randint(jax.random.key(1), (), 0, 2) == 0
            state = jax.lax.cond(cond, lambda: state, lambda: new)  # noqa: B023
            params = optax.apply_updates(params, updates)
        seen["state"], seen["updates"] = _specs(state), _specs(updates)
        return state

    with jax.set_mesh(mesh):
        jax.eval_shape(run, _sharded_params(mesh))
    assert seen["params"] == SHARDED_SPECS
    assert seen["state"] == seen["init"]
    assert seen["updates"] == seen["params"]


# --- MultiSteps, skip_not_finite, apply_if_finite. ---

# The wrappers compile the whole update inside a lax.cond, once per entry and
# test. The default suite runs one entry per implementation (the SGD and the
# fused Adam cores of CLARA, the per-tensor Adam-CLARAs, the composed chain,
# AutoSGM with the most state, GARO per tensor and pretrained); -m slow runs
# every entry.
WRAPPED = {
    "clara_sgd_global",
    "adam_clara",
    "adam_clara_local",
    "adam+scale_by_clara",
    "autosgm_markov_window",
    "garo_per_tensor_lagged",
    "garo_pretrained",
}

# The mini-step gradients fed to MultiSteps(k=3): NaN/Inf ones are skipped.
_BAD = {1: np.nan, 4: np.inf, 6: -np.inf}
_K = 3


@pytest.mark.parametrize("entry", params_cases("multi_steps", default=WRAPPED))
def test_multi_steps_mean_and_skip_not_finite(entry):
    """``MultiSteps(k=3, should_skip_update_fn=skip_not_finite)``: zero updates
    between updates and on skipped mini-steps; every third finite mini-step
    gives the inner transform's update on the mean of the three gradients."""
    opt = entry.make()
    multi = optax.MultiSteps(
        opt, every_k_schedule=_K, should_skip_update_fn=optax.skip_not_finite
    )
    params, grads = f32_tree()
    update = jax.jit(multi.update)
    value = jnp.asarray(VALUE)

    good, fed = [], []
    for t in range(2 * _K + len(_BAD)):
        g = grads_at(grads, len(good))
        if t in _BAD:
            g = {**g, "w": g["w"].at[0, 1].set(_BAD[t])}
        else:
            good.append(g)
        fed.append(g)

    state, p, seen, emitted = multi.init(params), params, 0, []
    for t, g in enumerate(fed):
        updates, state = update(g, state, p, value=value)
        if t in _BAD:  # skipped: nothing accumulated, nothing emitted
            assert bool(state.skip_state["should_skip"])
        else:
            seen += 1
            assert bool(multi.has_updated(state)) == (seen % _K == 0)
        assert int(state.mini_step) == seen % _K, t
        if t not in _BAD and seen % _K == 0:
            emitted.append(updates)
        else:
            for u in jax.tree.leaves(updates):
                np.testing.assert_array_equal(u, np.zeros_like(u))
        p = optax.apply_updates(p, updates)
    assert int(state.gradient_step) == 2

    # The reference: the inner transform on the mean of every k good gradients.
    inner_state, q = opt.init(params), params
    assert len(emitted) == 2
    for i, got in enumerate(emitted):
        mean = jax.tree.map(lambda *g: sum(g) / _K, *good[i * _K : (i + 1) * _K])
        want, inner_state = opt.update(mean, inner_state, q, **entry.extra(value))
        q = optax.apply_updates(q, want)
        leaves_close(got, want, rtol=1e-4, atol=1e-6)
    leaves_close(state.inner_opt_state, inner_state, rtol=1e-4, atol=1e-6)
    leaves_close(p, q, rtol=1e-5, atol=1e-6)


def _finite_problem():
    params = {"w": jnp.asarray([0.5, -1.0, 2.0]), "b": jnp.asarray(0.25)}

    def loss_fn(params, x):
        return jnp.arctanh(x) * (jnp.sum(params["w"] * params["w"]) + params["b"])

    return params, loss_fn


# Inputs of the loss: arctanh(2) is NaN (the NaN arises inside the step).
_HALF, _TWO = 0.5, 2.0
_SCHEDULE = (_HALF, _TWO, _TWO, _HALF, _TWO, _TWO, _TWO)


def _check_apply_if_finite(entry, opt, step, params, state, read):
    """Runs ``_SCHEDULE`` through ``step``; optax's assertions on the counters,
    and the inner state kept while a step is rejected."""
    rejected = 0
    for t, x in enumerate(_SCHEDULE):
        before = (params, read(state).inner_state)
        params, state = step(params, state, x)
        s = read(state)
        if x == _HALF:
            rejected = 0
            assert bool(s.last_finite) and int(s.notfinite_count) == 0
            assert helpers.tree_all_finite(params)
            assert not np.array_equal(params["w"], before[0]["w"])
        elif rejected < 2:
            rejected += 1
            assert not bool(s.last_finite)
            assert int(s.notfinite_count) == rejected
            helpers.tree_allclose((params, s.inner_state), before, rtol=0)
    # The third NaN in a row goes through (max_consecutive_errors=2).
    assert int(s.total_notfinite) == 5
    if _is_garo(entry):  # GARO skips a non-finite step by itself
        assert helpers.tree_all_finite(params)
        assert int(optax.tree.get(s.inner_state, "skipped")) == 1
    else:
        assert not helpers.tree_all_finite(params)


@pytest.mark.parametrize("entry", params_cases("apply_if_finite", default=WRAPPED))
def test_apply_if_finite(entry):
    """``apply_if_finite(tx, 2)``: NaN steps rejected (params and inner state
    kept, counters as in optax) until the third in a row."""
    opt = optax.apply_if_finite(entry.make(), max_consecutive_errors=2)
    params, loss_fn = _finite_problem()

    @jax.jit
    def step(params, state, x):
        value, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, state = opt.update(grads, state, params, **entry.extra(value))
        return optax.apply_updates(params, updates), state

    _check_apply_if_finite(entry, opt, step, params, opt.init(params), lambda s: s)


# One entry per family in the default suite.
PMAP_DEFAULT = {"clara_sgd_global", "autosgm", "garo_per_tensor"}


@pytest.mark.parametrize(
    "entry", params_cases("apply_if_finite_pmap", default=PMAP_DEFAULT)
)
def test_apply_if_finite_pmap(entry):
    """The same under ``jax.pmap``, gradients and loss averaged over the
    devices (``pmean``); every entry under ``-m slow``."""
    opt = optax.apply_if_finite(entry.make(), max_consecutive_errors=2)
    params, loss_fn = _finite_problem()
    n = jax.local_device_count()

    def step(params, state, x):
        value, grads = jax.value_and_grad(loss_fn)(params, x)
        grads = jax.lax.pmean(grads, axis_name="i")
        value = jax.lax.pmean(value, axis_name="i")
        updates, state = opt.update(grads, state, params, **entry.extra(value))
        return optax.apply_updates(params, updates), state

    pmapped = jax.pmap(step, axis_name="i")
    replicate = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * n), tree)
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)

    def host_step(params, state, x):
        new_params, new_state = pmapped(replicate(params), state, jnp.full([n], x))
        return first(new_params), new_state

    _check_apply_if_finite(
        entry, opt, host_step, params, replicate(opt.init(params)), first
    )


# --- masked. ---

MASK_PARAMS = {
    "a": jnp.asarray([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]]),
    "b": [jnp.asarray([2.0, -3.0, 1.0, 0.5]), jnp.asarray([3.0, 1.0, -1.0])],
    "c": {"d": jnp.asarray(4.0), "e": (jnp.asarray([5.0, -5.0]), jnp.full([5], 6.0))},
}
MASKS = {
    "mask": {"a": True, "b": [False, True], "c": {"d": True, "e": (False, True)}},
    # Matrices and scalars, via a function of the params.
    "mask_fn": lambda p: jax.tree.map(lambda x: x.ndim != 1, p),
    # A prefix of the params tree: "b" and "c"/"e" as whole subtrees.
    "prefix": {"a": True, "b": False, "c": {"d": False, "e": True}},
}


def _flat_mask(mask):
    mask = mask(MASK_PARAMS) if callable(mask) else mask
    return jax.tree.leaves(
        jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask, MASK_PARAMS)
    )


@pytest.mark.parametrize("entry, kind", params_cases("masked", tuple(MASKS)))
def test_masked(entry, kind):
    """Masked-in leaves get the updates of the transform run on them alone;
    the others pass through unchanged."""
    params = MASK_PARAMS
    grads = jax.tree.map(lambda x: 0.1 * x + 0.05, params)
    flags = _flat_mask(MASKS[kind])
    assert any(flags) and not all(flags)
    opt = entry.make()
    masked_updates, state = run_eager(
        optax.masked(opt, MASKS[kind]), entry, params, grads, 2
    )
    pick = lambda tree: [x for x, m in zip(jax.tree.leaves(tree), flags) if m]
    inner_updates, inner_state = run_eager(opt, entry, pick(params), pick(grads), 2)
    for t, (got, want) in enumerate(zip(masked_updates, inner_updates)):
        leaves_close(pick(got), want, rtol=1e-6)
        passed = [x for x, m in zip(jax.tree.leaves(got), flags) if not m]
        wanted = [
            x for x, m in zip(jax.tree.leaves(grads_at(grads, t)), flags) if not m
        ]
        leaves_close(passed, wanted, rtol=0, atol=0)
    leaves_close(state.inner_state, inner_state, rtol=1e-6)


@pytest.mark.parametrize("entry", params_cases("masked_empty"))
def test_masked_empty_containers(entry):
    """``masked`` over an empty list, tuple and dict (optax's ``test_empty``)."""
    for container in (list, tuple, dict):
        opt = optax.masked(entry.make(), container())
        state = opt.init(container())
        updates, _ = opt.update(container(), state, container(), **entry.extra(VALUE))
        assert updates == container()


# --- map_params, tree.get / tree.set. ---


def recipe_case(entry, injected):
    opt = entry.make()
    if injected:
        kwargs, _, static = injectable(entry)
        opt = optax.inject_hyperparams(entry.factory, static_args=static)(**kwargs)
    return opt


@pytest.mark.parametrize(
    "entry, wrapper", params_cases("map_params_shardings", ("plain", "injected"))
)
def test_map_params_sharding_recipe(entry, wrapper):
    """README's recipe: ``map_params`` maps the params' shardings onto the
    abstract state (the rest replicated), and ``jax.jit(init, out_shardings=)``
    places the state so; alone and inside ``inject_hyperparams``."""
    opt = recipe_case(entry, wrapper == "injected")
    mesh = _mesh(AxisType.Auto)
    params = _sharded_params(mesh)
    shardings = sharding_worker.recipe_shardings(opt, params, mesh)
    assert jax.tree.structure(shardings) == jax.tree.structure(
        jax.eval_shape(opt.init, params)
    )
    state = jax.jit(opt.init, out_shardings=shardings)(params)
    got = jax.tree.map(lambda x: x.sharding, state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(shardings)):
        assert a.spec == b.spec
    # Parameter-shaped buffers follow their parameter, the rest is replicated.
    by_shape = {SHARDED[k][0]: spec for k, spec in SHARDED_SPECS.items()}
    for path, leaf in jax.tree.leaves_with_path(state):
        want = by_shape.get(tuple(leaf.shape), P()) if leaf.ndim else P()
        assert leaf.sharding.spec == want, jax.tree_util.keystr(path)
    if wrapper == "injected":
        assert all(x.sharding.spec == P() for x in jax.tree.leaves(state.hyperparams))


@pytest.mark.parametrize("entry", params_cases("map_params_inject"))
def test_map_params_inside_inject_hyperparams(entry):
    """``map_params`` through ``inject_hyperparams``: the hyperparameters stay,
    the inner state is mapped as without the wrapper."""
    opt = entry.make()
    injected = recipe_case(entry, injected=True)
    params, _ = f32_tree()
    state = injected.init(params)
    mapped = optax.tree.map_params(injected, lambda v: v + 1, state)
    helpers.tree_allclose(mapped.hyperparams, state.hyperparams, rtol=0)
    want = optax.tree.map_params(opt, lambda v: v + 1, opt.init(params))
    # float32 hyperparameters, not Python floats: init may round differently.
    helpers.tree_allclose(mapped.inner_state, want, rtol=1e-6)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(state))
    )


@pytest.mark.parametrize("entry", params_cases("tree_get_set"))
def test_tree_get_and_set(entry):
    """``optax.tree.get``/``set`` on the state: step counters, a missing key
    (KeyError), the learning rate (read back, set under jit, and for CLARA
    used by the next update), and injected hyperparameters under jit."""
    opt = entry.make()
    params, grads = f32_tree()
    _, state = run_eager(opt, entry, params, grads, 1)
    counts = optax.tree.get_all_with_path(state, "count")
    assert counts and all(int(c) == 1 for _, c in counts)
    with pytest.raises(KeyError):
        optax.tree.set(state, no_such_field_anywhere=1.0)
    if entry.lr_in_state:
        lr = optax.tree.get(state, "lr")
        set_lr = jax.jit(lambda s, v: optax.tree.set(s, lr=v))
        halved = set_lr(state, lr / 2)
        np.testing.assert_array_equal(optax.tree.get(halved, "lr"), lr / 2)
        assert jax.tree.structure(halved) == jax.tree.structure(state)
        if _is_garo(entry):
            np.testing.assert_array_equal(garo_optax.hyperparams(halved)["lr"], lr / 2)
        else:
            # CLARA's lr is the rate of the next update: setting it must act.
            g = grads_at(grads, 1)
            full, _ = opt.update(g, state, params)
            half, _ = opt.update(g, halved, params)
            leaves_close(half, jax.tree.map(lambda u: u / 2, full), rtol=1e-6)
    kwargs, floats, static = injectable(entry)
    if "learning_rate" in floats:
        opt = optax.inject_hyperparams(entry.factory, static_args=static)(**kwargs)
        state = opt.init(params)
        set_rate = jax.jit(lambda s, v: optax.tree.set(s, learning_rate=v))
        for i in range(3):
            rate = floats["learning_rate"] / (i + 1)
            state = set_rate(state, rate)
            _, state = opt.update(grads, state, params, **entry.extra(VALUE))
            np.testing.assert_allclose(
                optax.tree.get(state, "learning_rate"), rate, rtol=1e-7
            )


# --- Degenerate trees, vmap. ---


@pytest.mark.parametrize("entry", params_cases("empty_pytree"))
def test_empty_pytrees(entry):
    """init and update on {}, () and [] give an empty update; also under jit."""
    opt = entry.make()
    for empty in ({}, (), []):
        updates, state = opt.update(empty, opt.init(empty), empty, **entry.extra(VALUE))
        assert updates == empty
        assert helpers.tree_all_finite(state)
    step = jax.jit(lambda p: opt.update(p, opt.init(p), p, **entry.extra(VALUE)))
    updates, state = step({})
    assert updates == {}
    assert helpers.tree_all_finite(state)


@pytest.mark.parametrize("entry", params_cases("none_leaves"))
def test_none_leaves(entry):
    """``None`` leaves in params and gradients come back as ``None``; the
    other leaves are updated as without them."""
    opt = entry.make()
    params, grads = f32_tree()
    with_none = lambda tree: {"x": tree, "n": None, "l": [None, (None,)]}
    updates, state = run_eager(opt, entry, with_none(params), with_none(grads), 2)
    want, want_state = run_eager(opt, entry, params, grads, 2)
    for got, ref in zip(updates, want):
        assert got["n"] is None and got["l"] == [None, (None,)]
        leaves_close(got["x"], ref, rtol=1e-6)
    leaves_close(state, want_state, rtol=1e-6)


@pytest.mark.parametrize("entry", params_cases("vmap"))
def test_vmap_over_params_and_states(entry):
    """``jax.vmap`` of init and an update over a batch of parameter trees (and
    losses), jitted, equals each member's own (eager) init and update."""
    opt = entry.make()
    members = [f32_tree(seed) for seed in (0, 1)]
    values = jnp.asarray([1.0, 2.5])
    stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)

    @jax.jit
    def batched(params, grads, values):
        state = jax.vmap(opt.init)(params)
        update = jax.vmap(lambda g, s, p, v: opt.update(g, s, p, **entry.extra(v)))
        return update(grads, state, params, values)

    updates, state = batched(
        stack([p for p, _ in members]), stack([g for _, g in members]), values
    )
    for i, (p, g) in enumerate(members):
        history, want = run_eager(opt, entry, p, g, 1, value=values[i])
        pick = lambda tree: jax.tree.map(lambda x: x[i], tree)  # noqa: B023
        leaves_close(pick(updates), history[-1], rtol=1e-5, atol=1e-6)
        leaves_close(pick(state), want, rtol=1e-5, atol=1e-6)
