"""garo-v2 leaves a converged mini-batch run converged.

The failure that kept the first attempt at garo-v2's second phase from
shipping (README, "The shipped controller"): on the bench's mlp_digits task
the loss reaches about 1e-3 by step 120, the controller keeps raising its rate,
and by step 200 the loss is back near its initial 2.3. The second test shows
that the check catches that controller (its weights are kept under docs/).
"""

import pathlib

import jax.numpy as jnp
import numpy as np

import garo_optax
from garo_optax._app import bench
from garo_optax._src import pretrained

STEPS = 400
WINDOW = STEPS // 10
REJECTED = (
    pathlib.Path(__file__).resolve().parents[1] / "docs/meta_train/garo-v2-long.npz"
)


def _losses(controller) -> np.ndarray:
    task = bench.TASKS["mlp_digits"].build()
    run = bench.make_run(task, lambda lr, n: garo_optax.garo(controller), STEPS)
    losses, _, _ = run(bench.seed_keys((0, 1, 2)), jnp.float32(0))
    return np.asarray(losses, np.float64)


def _wrecked_seeds(losses: np.ndarray) -> list[int]:
    """Seeds whose last window's mean loss is above twice their best window's."""
    kernel = np.ones(WINDOW) / WINDOW
    best = [np.convolve(curve, kernel, mode="valid").min() for curve in losses]
    final = losses[:, -WINDOW:].mean(axis=1)
    return [s for s in range(len(losses)) if not final[s] <= 2 * best[s]]


def test_converged_mini_batch_runs_stay_converged():
    losses = _losses(garo_optax.pretrained())
    assert np.all(np.isfinite(losses))
    assert _wrecked_seeds(losses) == []
    assert np.all(losses[:, -WINDOW:].mean(axis=1) < 1e-2 * losses[:, 0])


def test_the_check_catches_the_rejected_controller():
    rejected = pretrained.read_controller(REJECTED)
    assert _wrecked_seeds(_losses(rejected)) != []
