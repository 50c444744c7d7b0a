"""``garo-optax meta-train`` (``garo_optax._app.cli_meta``): resume, errors.

Also the placement of the states that ``garo_optax.meta``'s ``Checkpointer``
restores (``garo_optax.meta._checkpoint``).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import helpers
import jax
import numpy as np
import pytest

from garo_optax._app import cli, cli_meta
from garo_optax.meta import _checkpoint, _train

REPO = pathlib.Path(__file__).resolve().parents[1]

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

TINY = _train.MetaConfig(
    families=("quadratic",),
    population=2,
    segment_length=2,
    horizon=4,
    steps=4,
    hidden_size=2,
    outer_learning_rate=1e-2,
)


@pytest.fixture
def tiny_config(monkeypatch):
    monkeypatch.setitem(_train.CONFIGS, "tiny", TINY)
    # Differs in a field that leaves every shape alone: the check must come from
    # the saved configuration, not from a restore that fails on shapes (and the
    # state of the same shapes reuses the eagerly compiled initialization).
    other = TINY._replace(outer_learning_rate=2e-2)
    monkeypatch.setitem(_train.CONFIGS, "tiny_other", other)
    return "tiny"


def _controller(folder):
    with np.load(folder / "controller.npz") as data:
        return {k: data[k] for k in data.files}


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_config, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    base = ["meta-train", "--config", tiny_config, "--checkpoint-every", "2"]
    assert cli.main([*base, "--out", str(whole), "--quiet"]) == 0
    assert cli.main([*base, "--out", str(parts), "--steps", "2", "--quiet"]) == 0
    assert cli.main([*base, "--out", str(parts)]) == 0
    assert "resuming" in capsys.readouterr().err
    a, b = _controller(whole), _controller(parts)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    lines = (parts / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    want = (whole / "metrics.jsonl").read_text().splitlines()
    assert lines == want
    config = json.loads((parts / "config.json").read_text())
    assert config["families"] == ["quadratic"] and config["population"] == 2


def test_checkpoint_of_another_config_is_refused(tmp_path, tiny_config, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["meta-train", "--config", "tiny", "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    code = cli.main(["meta-train", "--config", "tiny_other", "--out", out, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "another configuration" in err
    assert "outer_learning_rate" in err
    assert len(err.strip().splitlines()) == 1


def test_corrupted_checkpoint_is_a_clear_error(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    base = ["meta-train", "--config", "tiny", "--out", str(out), "--quiet"]
    assert cli.main([*base, "--steps", "2"]) == 0
    for path in (out / "checkpoints").rglob("*"):
        if path.is_file() and path.parent.name != "config":
            path.write_bytes(b"garbage")
    capsys.readouterr()
    assert cli.main(base) == 1
    err = capsys.readouterr().err
    assert "checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config", "nope"], "config"),
        (["--steps", "0"], "--steps"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, message):
    code = cli.main(["meta-train", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_restored_state_is_placed_like_a_fresh_one(tmp_path):
    """Every restored leaf has the sharding, commitment and aval of the same leaf
    of ``init()``, the zero-size ``ctx_w`` of the global controller (and of
    Adam's moments) included, which orbax cannot store and the checkpointer
    rebuilds; so the step compiled for a fresh state runs on it as it is."""
    init, step = cli_meta._compiled_run(TINY)
    state, _ = step(init())
    checkpointer = _checkpoint.Checkpointer(tmp_path, TINY)
    checkpointer.save(state)
    fresh = init()
    restored = checkpointer.restore(fresh)
    checkpointer.close()
    flat = jax.tree_util.tree_leaves_with_path(fresh)
    assert any(x.size == 0 for _, x in flat)
    for (path, a), b in zip(flat, jax.tree.leaves(restored), strict=True):
        name = jax.tree_util.keystr(path)
        assert b.sharding == a.sharding, name
        assert b.committed == a.committed, name
        assert jax.typeof(b) == jax.typeof(a), name
    with helpers.log_compilations() as compiled:
        jax.block_until_ready(step(restored))
    assert not [m for m in compiled if "jit(step)" in m]


# ``garo-optax meta-train`` with the tiny configuration (as JSON, argv[1]), in
# a fresh process: the command line a user runs, with the config registered.
_META_TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from garo_optax._app import cli
    from garo_optax.meta import _checkpoint, _train

    _train.CONFIGS["tiny"] = _checkpoint.config_from_json(json.loads(sys.argv[1]))
    sys.exit(cli.main(["meta-train", "--config", "tiny", *sys.argv[2:]]))
    """
)
_KILL_STEPS = 12
_KILL_AT = 3  # kill once the checkpoint of this step is being written (or is).


def _checkpoint_steps(folder: pathlib.Path) -> list[int]:
    """The steps of the checkpoint folders, complete or being written."""
    if not folder.exists():
        return []
    names = [path.name.split(".")[0] for path in folder.iterdir()]
    return sorted(int(name) for name in names if name.isdigit())


@pytest.fixture
def fast_compile_even_if_slow():
    """The root conftest's ``fast_compile``, also for a test marked slow.

    For a test that compares a run compiled here with runs compiled in
    subprocesses under ``JAX_DISABLE_MOST_OPTIMIZATIONS=1``: the flag is not
    part of ``jax.jit``'s cache key, so the run here must be compiled (by this
    test or an earlier one of this module) with the flag on too.
    """
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.mark.slow  # about 35 s of CPU: two fresh processes trace the meta-step.
@pytest.mark.usefixtures("fast_compile_even_if_slow")
def test_run_killed_mid_run_resumes_and_loses_nothing(tmp_path, tiny_config):
    """``meta-train`` killed with SIGKILL while it writes (or just after it has
    written) its third checkpoint, then started again, equals the
    uninterrupted run: same controller bit for bit, each meta-step's metrics
    once, in order (those logged after the restored checkpoint are dropped and
    logged again). The kill usually lands mid-save (checked by hand: it left
    ``3.orbax-checkpoint-tmp`` next to ``1`` and ``2``); the resumed run then
    restores step 2 and writes step 3 again over orbax's temporary folder."""
    flags = ["--steps", str(_KILL_STEPS), "--checkpoint-every", "1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    argv = ["meta-train", "--config", tiny_config, *flags, "--quiet"]
    assert cli.main([*argv, "--out", str(whole)]) == 0
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        # The compiler options of the run above, so that the runs can agree
        # bit for bit (see `fast_compile_even_if_slow`).
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
        # Only to save time: the resumed run loads the killed run's programs.
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    config = json.dumps(_checkpoint.config_to_json(TINY))
    command = [sys.executable, "-c", _META_TRAIN_SCRIPT, config, *flags]
    command += ["--out", str(parts)]
    log = tmp_path / "killed.log"
    with open(log, "w") as stderr:
        run = subprocess.Popen([*command, "--quiet"], env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 600
        while max(_checkpoint_steps(parts / "checkpoints"), default=0) < _KILL_AT:
            assert run.poll() is None, f"ended before the kill: {log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint in 600 s"
            time.sleep(0.005)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.kill()
        code = run.wait(timeout=60)
    assert code == -signal.SIGKILL, log.read_text()
    assert not (parts / "controller.npz").exists()
    resumed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    start = int(resumed.stderr.split("from meta-step ")[1].split()[0])
    assert _KILL_AT - 1 <= start < _KILL_STEPS
    a, b = _controller(whole), _controller(parts)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    lines = (parts / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(
        range(1, _KILL_STEPS + 1)
    )
    assert lines == (whole / "metrics.jsonl").read_text().splitlines()
