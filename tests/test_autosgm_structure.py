"""AutoSGM's compiled step and source stay as issue 16 left them.

The compiled step (XLA:CPU) of the presets has the loops of its optax
counterpart and no copy of a state array, and the non-constant numerators
store no parameter-sized temporary (the denominator d is recomputed in each
loop that reads it, see ``garo_optax/_src/autosgm.py``'s ``_Denominators``).
Each such regression made a step 1.5-7x slower at 10M-100M parameters. The
source keeps functions short. Imports ``garo_optax._src`` for the compiled
step and the module's source.
"""

import ast
import inspect
import re

import jax.numpy as jnp
import optax
import pytest

import garo_optax
from garo_optax._app import step_time
from garo_optax._src import autosgm

# Two leaves of one shape (the layers of a model) and a small one.
SHAPES = {"a": (200, 50), "b": (30,), "c": (200, 50)}
NESTEROV = dict(pole=0.9, zero=0.9 / 1.9, adaptive=False, gain=1.0, debias=False)
HEAVY_BALL = dict(pole=0.9, adaptive=False, gain=1.0, debias=False)
ADAM = dict(pole=0.9, b2=0.999, eps=1e-8, eps_in_sqrt=False)
_COPY = re.compile(r"=\s*\w+\[([\d,]*)\]\S*\s+copy\(")


def _compiled(tx):
    params = {k: jnp.ones(s, jnp.float32) for k, s in SHAPES.items()}
    return step_time.compile_step(tx, params, params)


def _array_copies(compiled) -> list[str]:
    # Copies of arrays larger than a per-leaf vector in the entry computation.
    text = compiled.as_text()
    entry = text[text.find("\nENTRY") :]
    sizes = []
    for match in _COPY.finditer(entry):
        dims = [int(d) for d in match.group(1).split(",") if d]
        size = 1
        for d in dims:
            size *= d
        if size > len(SHAPES):
            sizes.append(match.group(0))
    return sizes


@pytest.mark.parametrize(
    "kwargs, reference",
    [
        pytest.param(NESTEROV, optax.sgd(1e-2, momentum=0.9, nesterov=True), id="nag"),
        pytest.param(HEAVY_BALL, optax.sgd(1e-2, momentum=0.9), id="heavy_ball"),
        pytest.param(ADAM, optax.adam(1e-2), id="adam"),
    ],
)
def test_presets_compile_to_optax_loops(kwargs, reference):
    # Nesterov's output read the old momentum while the new one overwrote it:
    # XLA copied every momentum array first (3x optax's step time).
    ours = _compiled(garo_optax.autosgm(1e-2, **kwargs))
    theirs = step_time.hlo_counts(_compiled(reference))
    assert not _array_copies(ours)
    # One more loop: the per-leaf lr vector.
    assert step_time.hlo_counts(ours)["loops"] <= theirs["loops"] + 1


@pytest.mark.parametrize("numerator", autosgm.NUMERATORS)
def test_no_state_array_is_copied(numerator):
    compiled = _compiled(garo_optax.autosgm(1e-3, numerator=numerator, zero=0.3))
    assert not _array_copies(compiled)


@pytest.mark.parametrize("numerator", ["max_bound", "markov", "chebyshev"])
def test_denominator_is_not_stored(numerator):
    # Shared by several loops, d would be a temporary array (xla_cpu.private_copy).
    compiled = _compiled(garo_optax.autosgm(1e-3, numerator=numerator))
    smallest_large_leaf = 4 * 200 * 50
    assert compiled.memory_analysis().temp_size_in_bytes < smallest_large_leaf


def _code_lines(node: ast.FunctionDef) -> int:
    # Lines of a function without its docstring.
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_functions_are_short_and_capture_nothing_by_default():
    tree = ast.parse(inspect.getsource(autosgm))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    long = {f.name: _code_lines(f) for f in functions if _code_lines(f) > 60}
    assert not long, f"functions over 60 lines of code: {long}"
    # `def c(x, cd=cd)` inside a loop: a default that names a variable.
    nested = [
        getattr(g, "name", "lambda")
        for f in functions
        for g in ast.walk(f)
        if isinstance(g, ast.FunctionDef | ast.Lambda)
        and g is not f
        and any(isinstance(d, ast.Name) for d in g.args.defaults)
    ]
    assert not nested, f"closures capturing through default arguments: {nested}"
