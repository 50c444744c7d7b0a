"""The direction of the package's imports: ``_src`` <- ``tasks`` <- ``meta``.

The library (``garo_optax`` and its ``_src`` modules) knows nothing of the task
families or of meta-training; ``garo_optax.tasks`` knows nothing of
meta-training. Checked in fresh interpreters (what an import loads) and
statically (what the library's files import, lazy imports included). The
program modules of ``garo-optax`` still live in ``_src`` and may import both.
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import garo_optax

SRC = pathlib.Path(garo_optax.__file__).parent / "_src"
# The garo-optax program, not the library: allowed to import tasks and meta.
APP_MODULES = {
    "bench.py",
    "bench_claims.py",
    "bench_report.py",
    "bench_speed.py",
    "cli.py",
    "cli_bench.py",
    "cli_meta.py",
    "step_time.py",
    "progress.py",
}
UPPER_PACKAGES = ("garo_optax.tasks", "garo_optax.meta")


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
        ("import garo_optax", UPPER_PACKAGES),
        ("import garo_optax.tasks", ("garo_optax.meta",)),
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


def test_library_modules_import_nothing_above():
    library = [p for p in sorted(SRC.glob("*.py")) if p.name not in APP_MODULES]
    assert {"garo.py", "validate.py", "controller.py"} <= {p.name for p in library}
    offenders = {
        path.name: sorted(m for m in _imported_modules(path) if _in(m, UPPER_PACKAGES))
        for path in library
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_app_module_list_is_current():
    # A renamed or moved program module must leave the allow-list too.
    present = {p.name for p in SRC.glob("*.py")}
    assert APP_MODULES <= present, APP_MODULES - present


def test_tasks_imports_no_meta():
    tasks_dir = SRC.parent / "tasks"
    offenders = {
        path.name: sorted(
            m for m in _imported_modules(path) if _in(m, ("garo_optax.meta",))
        )
        for path in sorted(tasks_dir.glob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders
