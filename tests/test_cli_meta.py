"""``garo-optax meta-train`` (``garo_optax._src.cli_meta``): resume, errors."""

import json

import numpy as np
import pytest

from garo_optax._src import cli
from garo_optax.meta import _train

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
