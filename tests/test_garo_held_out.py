"""garo-v2 never diverges on a held-out family, at any loss scale."""

import jax
import numpy as np
import pytest

import garo_optax
from garo_optax import meta
from garo_optax.meta import _evaluate

STEPS = {"char_transformer": 50, "cnn_digits": 100, "mnist1d_cnn": 100}


def _garo(lr, theta):
    del lr
    return garo_optax.garo(theta)


def _check(name, scale, steps):
    family = meta.get_family(name if scale == 1 else f"{name}@loss{scale:g}")
    curve = _evaluate.run_optimizer(
        _garo,
        family,
        num_tasks=2,
        num_steps=steps,
        key=jax.random.key(0),
        controller=garo_optax.pretrained(),
    )
    assert np.all(np.isfinite(curve.losses)), (name, scale)
    assert curve.final_loss < curve.losses[0], (name, scale)


@pytest.mark.parametrize("scale", [1e-3, 1, 1e3])
def test_rosenbrock_from_gradients_of_order_100(scale):
    """The family where garo-v1 and every momentum method at 0.01 diverge."""
    _check("rosenbrock", scale, 300)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-3, 1, 1e3])
@pytest.mark.parametrize("name", meta.HELD_OUT_FAMILIES)
def test_every_held_out_family(name, scale):
    _check(name, scale, STEPS.get(name, 300))
