"""The ``garo-optax`` program (imports ``garo_optax._app.cli``, where it lives)."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import garo_optax
from garo_optax._app import cli, registry

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"garo-optax {garo_optax.__version__}"


def test_list_prints_every_public_optimizer_with_its_summary(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    optimizers = cli.public_optimizers()
    public, blank, configurations = lines[: len(optimizers)], *_split(lines)
    for line, (name, factory) in zip(public, optimizers.items(), strict=True):
        assert line.split()[0] == name
        assert line.endswith(cli.summary(factory))
        assert cli.summary(factory)
    assert blank == "" and configurations == cli.registry_lines()
    assert "ScaleByClaraState" not in "\n".join(lines)


def _split(lines):
    at = lines.index("")
    return lines[at], lines[at + 1 :]


def test_list_prints_the_optimizer_registry():
    lines = cli.registry_lines()
    assert len(lines) == 1 + len(registry.REGISTRY)
    for line, (name, spec) in zip(lines[1:], registry.REGISTRY.items(), strict=True):
        label = name if spec.bench else f"{name}*"
        assert line.split()[:2] == [label, spec.group]
        assert line.endswith(spec.description)


def test_every_public_optimizer_has_a_registry_entry():
    """Each public optimizer of ``garo_optax.__all__`` is configured by (or
    stood for by) at least one entry of the optimizer registry."""
    public = set(cli.public_optimizers())
    assert {"garo", "adam_clara", "autosgm", "scale_by_clara"} <= public
    missing = public - registry.covered_public_names()
    assert not missing, f"public optimizers without a registry entry: {missing}"


def test_every_command_is_registered_in_help(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command.name in out and command.help in out


@pytest.mark.parametrize(
    "argv",
    [[], ["no-such-command"], ["list", "--no-such-flag"], ["--no-such-flag"]],
)
def test_bad_input_is_a_one_line_error(argv, capsys):
    assert cli.main(argv) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("garo-optax") and "error:" in err[0]


def test_value_error_in_a_command_is_a_one_line_error(monkeypatch, capsys):
    def broken(args):
        raise ValueError("steps must be positive, got -1")

    monkeypatch.setattr(cli, "COMMANDS", (cli.Command("broken", "fails", broken),))
    assert cli.main(["broken"]) == 1
    err = capsys.readouterr().err
    assert err == "garo-optax: error: steps must be positive, got -1\n"


def test_program_runs_as_a_process():
    script = shutil.which("garo-optax", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "garo_optax"]
    # The `python -m` fallback finds the package in the checkout.
    pythonpath = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath))
    done = subprocess.run(
        [*command, "list"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "adam_clara" in done.stdout
    bad = subprocess.run(
        [*command, "nope"], capture_output=True, text=True, env=env, timeout=120
    )
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
