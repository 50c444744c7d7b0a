"""Import direction: ``_src`` <- ``tasks`` <- ``meta`` <- ``_app`` (the program).

The library (``garo_optax`` and its ``_src`` modules) knows nothing of the task
families, of meta-training or of the ``garo-optax`` program; ``garo_optax.tasks``
knows nothing of meta-training or the program; ``garo_optax.meta`` nothing of
the program (``garo_optax._app``), which nothing imports. Checked in fresh
interpreters (what an import loads) and statically (what each package's files
import, lazy imports included).
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import garo_optax

ROOT = pathlib.Path(garo_optax.__file__).parent
# Each layer and the packages above it, which it must not import.
LAYERS = {
    "_src": ("garo_optax.tasks", "garo_optax.meta", "garo_optax._app"),
    "tasks": ("garo_optax.meta", "garo_optax._app"),
    "meta": ("garo_optax._app",),
}


def _loaded_after(statement: str) -> list[str]:
    """The ``garo_optax`` modules a fresh interpreter has after ``statement``."""
    code = (
        f"import json, sys\n{statement}\n"
        "names = [m for m in sys.modules if m.startswith('garo_optax')]\n"
        "print(json.dumps(sorted(names)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize(
    "statement, forbidden",
    [
        ("import garo_optax", LAYERS["_src"]),
        ("import garo_optax.tasks", LAYERS["tasks"]),
        ("import garo_optax.meta", LAYERS["meta"]),
    ],
)
def test_import_loads_nothing_above(statement, forbidden):
    loaded = _loaded_after(statement)
    assert statement.split()[-1] in loaded
    assert not [m for m in loaded if _in(m, forbidden)], loaded


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from garo_optax import tasks`` imports garo_optax.tasks.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_imports_nothing_above(layer):
    files = sorted((ROOT / layer).glob("*.py"))
    if layer == "_src":
        files += [ROOT / "__init__.py"]
    assert len(files) > 2
    offenders = {
        path.name: sorted(m for m in _imported_modules(path) if _in(m, LAYERS[layer]))
        for path in files
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_program_is_only_the_console_script():
    """Nothing in the repository's code imports the program but the program,
    its tests, the benchmarks and ``python -m garo_optax``."""
    users = set()
    for path in ROOT.rglob("*.py"):
        if _in_dir(path, ROOT / "_app") or path.name == "__main__.py":
            continue
        if any(_in(m, ("garo_optax._app",)) for m in _imported_modules(path)):
            users.add(str(path.relative_to(ROOT)))
    assert not users


def _in_dir(path: pathlib.Path, folder: pathlib.Path) -> bool:
    return folder in path.parents
