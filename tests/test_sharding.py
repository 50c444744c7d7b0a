"""Every transform sharded over 8 host devices (``tests/sharding_worker.py``).

A 4 x 2 (data x model) mesh; parameters split over one axis, both axes or
replicated. Per registry entry, the worker checks that the optimizer state
follows the parameters' shardings after ``init`` and after 20 updates, that a
step jitted with pinned in/out shardings and donated buffers agrees, and that
updates, state and GARO's hyperparameters equal the one-device run.

The tolerance (1e-4 of each leaf's largest magnitude) is float noise, not
slack: a sharded reduction adds in another order, and GARO's recurrent
controller carries that rounding forward. Measured on the global controller's
hidden state after 20 steps: 1.1e-5 of 0.34 sharded vs one device; the
one-device float32 run is 4.4e-6 from float64, and reordering only the loss's
sum moves it by 1.1e-6. Every other transform agrees to 2e-5.

The default suite runs two entries on an explicit-sharding mesh
(``jax.make_mesh``'s default) and one on an ``Auto`` one; ``-m slow`` runs
every entry on both. The README's sharding recipe (state shardings from
``optax.tree.map_params``, then ``jax.jit(tx.init, out_shardings=...)``) is
checked for every entry on both kinds of mesh in the default suite: it only
initialises, which is cheap.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from registry import REGISTRY

TESTS = pathlib.Path(__file__).resolve().parent
NAMES = [e.name for e in REGISTRY]


def run_worker(*args: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # compile-bound; same results
    env["PYTHONPATH"] = str(TESTS.parent)
    result = subprocess.run(
        [sys.executable, str(TESTS / "sharding_worker.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check(report: dict, names, modes) -> None:
    assert sorted(report) == sorted(f"{n}/{m}" for n in names for m in modes)
    problems = {k: v.get("error") or v["failures"] for k, v in report.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    for name, result in report.items():
        assert result["state_leaves"] > 0
        if name.startswith("garo"):
            assert set(result["hyperparams"]) == {"lr", "mom", "wd"}


# In the default suite: CLARA's per-tensor compounding and GARO's per-tensor
# statistics on an explicit-sharding mesh, SGD-CLARA's global norm on an Auto
# one (each entry costs 5-15 s of compiling on 8 devices). Every entry on both
# kinds of mesh under -m slow.
DEFAULT = {
    "explicit": ["adam_clara_local", "garo_per_tensor"],
    "auto": ["clara_sgd_global"],
}


@pytest.mark.parametrize("mode", sorted(DEFAULT))
def test_mesh_matches_one_device(mode):
    names = DEFAULT[mode]
    check(run_worker(*names, "--modes", mode, "--pinned"), names, [mode])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["explicit", "auto"])
def test_every_transform_matches_one_device(mode):
    check(run_worker("--modes", mode, "--pinned"), NAMES, [mode])


def test_readme_recipe_every_transform():
    """README's recipe (``map_params`` over ``eval_shape(tx.init)`` with the
    params' shardings, then ``jax.jit(tx.init, out_shardings=...)``) places the
    state of every transform, and of GARO with the shipped controller, on both
    kinds of mesh: moments like their parameters, everything else replicated."""
    names = [*NAMES, "garo_pretrained"]
    modes = ["explicit", "auto"]
    report = run_worker("--recipe", "--modes", ",".join(modes))
    assert sorted(report) == sorted(f"{n}/{m}" for n in names for m in modes)
    problems = {k: v.get("error") or v["failures"] for k, v in report.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    assert all(result["state_leaves"] > 0 for result in report.values())


def test_worker_detects_a_misplaced_state():
    """The placement check fails on a state leaf placed against its parameter
    (so the tests above can fail)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = str(TESTS.parent)
    script = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import sharding_worker as w
mesh = jax.make_mesh((4, 2), ("data", "model"))
put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, P(*spec)))
with jax.set_mesh(mesh):
    params = {{"w": put(jnp.ones((16, 8)), "data")}}
    good = {{"m": jnp.zeros_like(params["w"]), "n": jnp.zeros([])}}
    bad = {{"m": put(jnp.zeros((16, 8)), None, "model")}}
    scalar = {{"n": put(jnp.zeros([4]), "data")}}
    print(len(w.check_placement(good, params, "good")),
          len(w.check_placement(bad, params, "bad")),
          len(w.check_placement(scalar, params, "scalar")))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0", "1", "1"]
