"""The public API: ``garo_optax.__all__``, docstrings, version, console script.

Imports ``garo_optax._app.cli`` for its definition of the public optimizers.
"""

import importlib
import importlib.metadata
import inspect
import pathlib
import tomllib

import pytest

import garo_optax
from garo_optax._app import cli

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

PYPROJECT = tomllib.loads(
    (pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
)
PUBLIC = sorted(garo_optax.__all__)


def test_all_names_exist_once():
    assert len(set(garo_optax.__all__)) == len(garo_optax.__all__)
    for name in garo_optax.__all__:
        assert hasattr(garo_optax, name), name
    namespace = {}
    exec("from garo_optax import *", namespace)
    assert set(garo_optax.__all__) <= set(namespace)


def test_nothing_public_is_missing_from_all():
    missing = [
        name
        for name, obj in vars(garo_optax).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", "").startswith("garo_optax._src")
        and name not in garo_optax.__all__
    ]
    assert not missing, f"public but not in __all__: {missing}"


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_sections(name):
    obj = getattr(garo_optax, name)
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{name} has no docstring"
    if inspect.isclass(obj):  # classes and NamedTuple states: a summary suffices
        return
    assert callable(obj)
    for section in ("Args:", "Returns:"):
        assert f"\n{section}\n" in f"\n{doc}\n", f"{name}: no {section!r} section"


def test_public_optimizers_have_examples():
    optimizers = cli.public_optimizers()
    # The selection itself must not go empty unnoticed.
    assert {"adam_clara", "clara_sgd", "scale_by_clara"} <= set(optimizers)
    for name, factory in optimizers.items():
        assert "\nExamples:\n" in inspect.getdoc(factory), f"{name}: no Examples:"


def test_version_matches_pyproject():
    assert garo_optax.__version__ == PYPROJECT["project"]["version"]


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_console_script_resolves(script):
    target = PYPROJECT["project"]["scripts"][script]
    module_name, _, attr = target.partition(":")
    entry = getattr(importlib.import_module(module_name), attr)
    assert callable(entry)
    installed = importlib.metadata.entry_points(group="console_scripts", name=script)
    for entry_point in installed:  # checked where the package is installed
        if entry_point.dist and entry_point.dist.name.replace("-", "_") == "garo_optax":
            assert entry_point.value == target
            assert entry_point.load() is entry


SUBPACKAGES = ("garo_optax.tasks", "garo_optax.meta")


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_subpackage_all_names_exist_and_nothing_public_is_missing(package):
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name
    missing = [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", "").startswith(f"{package}._")
        and name not in module.__all__
    ]
    assert not missing, f"public but not in {package}.__all__: {missing}"


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_subpackage_docstring_sections(package):
    module = importlib.import_module(package)
    assert inspect.getdoc(module), f"{package} has no docstring"
    for name in module.__all__:
        obj = getattr(module, name)
        doc = inspect.getdoc(obj)
        assert doc and doc.strip(), f"{name} has no docstring"
        if inspect.isclass(obj) or not callable(obj):
            continue
        for section in ("Args:", "Returns:"):
            assert f"\n{section}\n" in f"\n{doc}\n", f"{name}: no {section!r} section"


def test_meta_keeps_every_tasks_name():
    # The families moved from garo_optax.meta to garo_optax.tasks: user code
    # written against garo_optax.meta must keep working, with the same objects.
    from garo_optax import meta, tasks

    for name in tasks.__all__:
        assert name in meta.__all__ and getattr(meta, name) is getattr(tasks, name)
