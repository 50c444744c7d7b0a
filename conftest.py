"""Repository-wide pytest configuration (tests/ and the doctests of garo_optax/).

The meta-training tests and doctests are compile-bound: XLA's CPU backend spends
far longer optimizing their programs (scans over GARO updates, differentiated
and vmapped) than running them. The ``fast_compile`` fixture turns the backend's
optimizations off for one test (``jax_disable_most_optimizations``: LLVM at -O0,
no expensive passes), which cuts their compile time 2-4x; it changes how fast
the compiled code runs, not what it computes. Test modules opt in with
``pytestmark = pytest.mark.usefixtures("fast_compile")``; the doctests under
``garo_optax/meta/`` always use it. Tests marked ``slow`` keep the default
compiler (one of them measures compiled memory).

Not part of the package (hatch builds only ``garo_optax/``).
"""

import jax
import pytest

_FLAG = "jax_disable_most_optimizations"
_FAST_COMPILE_DOCTESTS = ("garo_optax/meta/",)


@pytest.fixture
def fast_compile(request):
    """Compiles everything in the test without XLA backend optimizations."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    previous = jax.config.read(_FLAG)
    jax.config.update(_FLAG, True)
    try:
        yield
    finally:
        jax.config.update(_FLAG, previous)


@pytest.fixture(autouse=True)
def _fast_compile_meta_doctests(request):
    if type(request.node).__name__ == "DoctestItem" and request.node.nodeid.startswith(
        _FAST_COMPILE_DOCTESTS
    ):
        request.getfixturevalue("fast_compile")
    yield
