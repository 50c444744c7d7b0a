"""Smoke tests of the example scripts: each ``main(steps=...)`` runs briefly."""

import importlib.util
import math
import pathlib
import sys
import types

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> types.ModuleType:
    """Imports ``examples/<name>.py`` by path (examples are not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_and_adapts_lr(capsys):
    pytest.importorskip("flax")
    pytest.importorskip("sklearn")
    steps = 50
    result = load_example("quickstart").main(steps=steps)

    losses = np.asarray(result["loss"])
    lrs = np.asarray(result["lr"])
    assert losses.shape == lrs.shape == (steps,)
    assert np.all(np.isfinite(losses))
    # The training loss falls by a clear margin (about 2.2 -> 0.7 with seed 0).
    assert losses[-10:].mean() < 0.6 * losses[:10].mean()
    # Ten classes: chance is 0.1 (about 0.87 with seed 0).
    assert result["test_accuracy"] > 0.5
    # CLARA adapts the learning rate: finite, and not constant.
    assert np.all(np.isfinite(lrs)) and np.all(lrs > 0)
    assert math.isfinite(result["initial_lr"])
    assert np.ptp(np.append(lrs, result["initial_lr"])) > 0
    # It reports its progress.
    assert "test acc" in capsys.readouterr().out


def test_design_space_writes_a_png(tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")

    out = tmp_path / "design_space.png"
    written = load_example("autosgm_design_space").main(out=str(out), beta=0.9)

    assert pathlib.Path(written) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000
    image = matplotlib_image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    assert image.shape[2] in (3, 4)
    # Not blank: a white background with a good share of drawn pixels.
    rgb = image[..., :3]
    assert rgb.std() > 0.05
    assert (rgb.mean(axis=-1) < 0.9).mean() > 0.01


def test_design_space_rejects_a_pole_without_the_readme_zero(tmp_path):
    pytest.importorskip("matplotlib")
    module = load_example("autosgm_design_space")
    with pytest.raises(ValueError, match="beta must be in"):
        module.main(out=str(tmp_path / "x.png"), beta=0.3)


def test_garo_telemetry_records_the_state_and_writes_a_png(tmp_path):
    """The recorded (lr, mom, wd) are the values in the optimizer state after each
    step (no off-by-one), and the four-panel PNG is written."""
    pytest.importorskip("flax")
    pytest.importorskip("sklearn")
    matplotlib_image = pytest.importorskip("matplotlib.image")
    import jax
    from flax import nnx

    import garo_optax

    module = load_example("garo_telemetry")
    steps, out = 5, tmp_path / "telemetry.png"
    result = module.main(steps=steps, out=str(out))

    assert pathlib.Path(result["png"]) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 0
    image = matplotlib_image.imread(out)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    for name in ("losses", "lr", "mom", "wd"):
        assert isinstance(result[name], np.ndarray)
        assert result[name].shape == (steps,)
        assert np.all(np.isfinite(result[name]))
    assert 0.0 <= result["test_accuracy"] <= 1.0

    # The last recorded values are the final state's; the first are not the
    # values at h = 0 (with head_init_scale=1 step 1 already moves them).
    for name in ("lr", "mom", "wd"):
        assert result[name][-1] == result["final_hyperparams"][name]
        assert result[name][0] != result["initial_hyperparams"][name]

    # Replay the run step by step and read the state outside the jitted step.
    x_train, y_train, _, _ = module.load_data()
    model = module.MLP(x_train.shape[1], 10, rngs=nnx.Rngs(0))
    optimizer = module.make_optimizer(model, seed=0)
    key = jax.random.key(0)
    for i in range(steps):
        loss, _ = module.train_step(model, optimizer, key, x_train, y_train)
        state = garo_optax.hyperparams(nnx.as_pure(optimizer.opt_state))
        assert float(loss) == result["losses"][i]
        for name in ("lr", "mom", "wd"):
            assert result[name][i] == np.asarray(state[name]), (name, i)
