"""Test helpers: tree comparison, a trace/compile counter and test problems.

Written here rather than imported from ``optax._src.test_utils`` (private).
"""

import contextlib
import importlib.util
import logging
import pathlib
import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def tree_allclose(actual, desired, *, rtol=1e-6, atol=0.0, ulps: int = 0) -> bool:
    """Asserts two pytrees have one structure and close leaves; returns True.

    ``ulps`` widens ``rtol`` to that many units of the leaf dtype's precision
    (for bf16 leaves computed once under jit and once eagerly).
    """
    flat_a, def_a = jax.tree.flatten(actual)
    flat_d, def_d = jax.tree.flatten(desired)
    assert def_a == def_d, f"tree structures differ:\n{def_a}\n{def_d}"
    for i, (a, d) in enumerate(zip(flat_a, flat_d)):
        a, d = np.asarray(a), np.asarray(d)
        assert a.shape == d.shape, f"leaf {i}: shape {a.shape} != {d.shape}"
        tol = rtol
        if jnp.issubdtype(a.dtype, jnp.inexact):
            tol = max(rtol, ulps * float(jnp.finfo(a.dtype).eps))
            a, d = a.astype(np.float64), d.astype(np.float64)
        np.testing.assert_allclose(a, d, rtol=tol, atol=atol, err_msg=f"leaf {i}")
    return True


def tree_all_finite(tree) -> bool:
    """Whether every inexact leaf of ``tree`` is finite everywhere."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    return all(
        np.isfinite(x.astype(np.float64)).all()
        for x in leaves
        if jnp.issubdtype(x.dtype, jnp.inexact)
    )


def tree_signature(tree) -> tuple:
    """Structure, shapes and dtypes of a pytree (of arrays or ShapeDtypeStructs)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), jnp.dtype(x.dtype)) for x in leaves)


class TraceCounter:
    """Wraps a function and counts how often Python runs it (once per trace)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def log_compilations() -> Iterator[list[str]]:
    """Collects the messages of the XLA compilations that run inside the block."""
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    compiled: list[str] = []
    try:
        with jax.log_compiles(True):
            yield compiled
    finally:
        logger.removeHandler(handler)
        pattern = re.compile(r"Finished .* compilation")
        compiled.extend(
            m for m in (r.getMessage() for r in records) if pattern.search(m)
        )


def with_strict_promotion(
    tx: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``tx`` with its ``init`` and ``update`` traced under strict dtype promotion.

    For wrapping only garo_optax's own transforms inside a chain whose other
    elements (``optax.scale_by_adam``) fail under strict promotion.
    """
    tx = optax.with_extra_args_support(tx)

    def init(params):
        with jax.numpy_dtype_promotion("strict"):
            return tx.init(params)

    def update(updates, state, params=None, **extra_args):
        with jax.numpy_dtype_promotion("strict"):
            return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init, update)


class Problem(NamedTuple):
    """A deterministic minimisation problem: objective, minimiser, start point."""

    name: str
    fn: Callable[[jax.Array], jax.Array]
    minimum: tuple[float, ...]
    init: tuple[float, ...]

    def arrays(self, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
        """(init, minimum) as arrays of ``dtype``."""
        return jnp.asarray(self.init, dtype), jnp.asarray(self.minimum, dtype)


def _parabola(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(x - jnp.asarray([1.0, -1.0, 1.0], x.dtype)))


def _rosenbrock(x: jax.Array, a: float = 1.0, b: float = 100.0) -> jax.Array:
    return jnp.square(a - x[0]) + b * jnp.square(x[1] - jnp.square(x[0]))


PARABOLA = Problem("parabola", _parabola, (1.0, -1.0, 1.0), (-1.0, 10.0, 1.0))
ROSENBROCK = Problem("rosenbrock", _rosenbrock, (1.0, 1.0), (0.0, 0.0))
PROBLEMS = (PARABOLA, ROSENBROCK)


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(path: pathlib.Path, module_name: str) -> types.ModuleType:
    """Imports the script at ``path`` as the module ``module_name``.

    Registered in ``sys.modules`` first, so that its dataclasses resolve.
    """
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> types.ModuleType:
    """Imports ``examples/<name>.py`` by path (examples are not a package)."""
    return load_script(EXAMPLES / f"{name}.py", f"examples_{name}")


def load_benchmark(name: str) -> types.ModuleType:
    """Imports ``benchmarks/<name>.py`` by path (benchmarks are not a package)."""
    return load_script(BENCHMARKS / f"{name}.py", f"benchmarks_{name}")


def run_float64(make_opt, problem, steps: int):
    """Runs ``make_opt()`` in float64 on a reference ``problem`` (params, _,
    treedef, grads_fn) for ``steps`` jitted steps; returns the per-step
    parameter leaves and ``lr`` values (both checked to stay float64)."""
    params, _, treedef, grads_fn = problem
    traj, lrs = [], []
    with jax.enable_x64(True):
        opt = make_opt()
        p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
        state = opt.init(p)

        @jax.jit
        def step(p, state, g):
            updates, state = opt.update(g, state, p)
            return optax.apply_updates(p, updates), state

        for t in range(1, steps + 1):
            cur = [np.asarray(x) for x in jax.tree_util.tree_leaves(p)]
            g = grads_fn(cur, t)
            g = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in g])
            p, state = step(p, state, g)
            leaves = jax.tree_util.tree_leaves(p)
            assert all(x.dtype == jnp.float64 for x in leaves)
            traj.append([np.asarray(x) for x in leaves])
            lr = np.asarray(optax.tree.get(state, "lr"))
            assert lr.dtype == np.float64
            lrs.append(lr)
    return traj, lrs
