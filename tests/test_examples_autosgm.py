"""Smoke test of ``examples/autosgm_design_space.py``: it writes a readable PNG."""

import importlib.util
import pathlib
import sys
import types

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> types.ModuleType:
    """Imports ``examples/<name>.py`` by path (examples are not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_design_space_writes_a_png(tmp_path):
    import matplotlib.image

    out = tmp_path / "design_space.png"
    written = load_example("autosgm_design_space").main(out=str(out), beta=0.9)

    assert pathlib.Path(written) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    assert image.shape[2] in (3, 4)
    # Not blank: a white background with a good share of drawn pixels.
    rgb = image[..., :3]
    assert rgb.std() > 0.05
    assert (rgb.mean(axis=-1) < 0.9).mean() > 0.01


def test_design_space_rejects_a_pole_without_the_readme_zero(tmp_path):
    module = load_example("autosgm_design_space")
    with pytest.raises(ValueError, match="beta must be in"):
        module.main(out=str(tmp_path / "x.png"), beta=0.3)
