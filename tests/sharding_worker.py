"""Runs every registry transform sharded over 8 host devices; prints a JSON report.

Run by ``tests/test_sharding.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is
fixed when JAX starts, so it cannot be set inside the test process):

    python tests/sharding_worker.py [ENTRY ...] [--modes explicit,auto] [--pinned]
    python tests/sharding_worker.py [ENTRY ...] --recipe

For each entry of ``registry.REGISTRY`` it builds parameters on a 4 x 2
(data x model) mesh, some leaves split over one or both axes and some
replicated, and checks:

* ``jax.jit(opt.init)`` and eager ``opt.init`` place every parameter-shaped
  state leaf with its parameter's sharding, and every other leaf replicated;
* after each of 20 jitted updates (sharding propagated, nothing pinned) the
  state still does, and the updates carry the parameters' shardings;
* the updates, the whole state and GARO's hyperparameters equal those of the
  same 20 steps with every array on one device, to float tolerance;
* a step jitted with explicit ``in_shardings``/``out_shardings`` (what a
  training loop pins) gives the propagated step's results.

With ``--recipe``, only the README's recipe for every entry (and GARO with
the shipped controller, ``garo_pretrained``): the state's shardings from
``optax.tree.map_params`` over ``jax.eval_shape(tx.init, params)``, and
``jax.jit(tx.init, out_shardings=...)`` placing the state so (no update).

The report lists, per entry, the failures found (an empty list passes).
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from registry import REGISTRY  # noqa: E402

import garo_optax  # noqa: E402

STEPS = 20
RTOL, ATOL = 1e-4, 1e-7

# Leaf shapes are distinct, so a state leaf's shape names its parameter.
SPECS = {
    "embed": ((16, 8), P("data", "model")),  # split over both axes
    "dense": {"kernel": ((8, 12), P(None, "model")), "bias": ((12,), P("model"))},
    "norm": ((6,), P()),  # replicated
    "head": ((12, 4), P("data", None)),
    "temperature": ((), P()),  # replicated scalar
}


def _is_spec(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], P)


def make_problem(mesh):
    """(params sharded over ``mesh``, the same params on one device, loss)."""
    specs = jax.tree.map(lambda s: s[1], SPECS, is_leaf=_is_spec)
    shapes = jax.tree.map(lambda s: s[0], SPECS, is_leaf=_is_spec)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.key(0), 2 * len(leaves))
    init = [jax.random.normal(k, s) for k, s in zip(keys[::2], leaves)]
    target = [jax.random.normal(k, s) for k, s in zip(keys[1::2], leaves)]
    # NumPy targets: constants of the loss, on no mesh and no device.
    init = treedef.unflatten(init)
    target = treedef.unflatten([np.asarray(t) for t in target])
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    sharded = jax.device_put(init, shardings)
    single = jax.device_put(init, one)

    def loss_fn(params):
        # Ill-conditioned and coupled across leaves (through the log), so a
        # wrong reduction over shards shows up in every leaf's gradient.
        sq = [
            jnp.sum((i + 1.0) * jnp.square(p - t))
            for i, (p, t) in enumerate(
                zip(jax.tree.leaves(params), jax.tree.leaves(target))
            )
        ]
        return jnp.log1p(sum(sq))

    return sharded, single, loss_fn


def _param_shardings_by_shape(params) -> dict:
    return {tuple(p.shape): p.sharding for p in jax.tree.leaves(params)}


def check_placement(tree, params, what: str) -> list[str]:
    """Parameter-shaped leaves follow their parameter; the rest are replicated."""
    by_shape = _param_shardings_by_shape(params)
    failures = []
    for path, leaf in jax.tree.leaves_with_path(tree):
        if not isinstance(leaf, jax.Array):
            continue
        name = f"{what}{jax.tree_util.keystr(path)} {tuple(leaf.shape)}"
        want = by_shape.get(tuple(leaf.shape))
        if want is not None and leaf.ndim > 0:
            if not leaf.sharding.is_equivalent_to(want, leaf.ndim):
                failures.append(f"{name}: {leaf.sharding} != param's {want}")
        elif not leaf.sharding.is_fully_replicated:
            failures.append(f"{name}: not replicated: {leaf.sharding}")
        if leaf.sharding.device_set != set(jax.devices()):
            failures.append(f"{name}: on {len(leaf.sharding.device_set)} devices")
    return failures


def recipe_shardings(tx, params, mesh):
    """The README recipe: the state's shardings, params' for params-shaped
    subtrees of the state and replicated for the rest."""
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    return optax.tree.map_params(
        tx,
        lambda _, s: s,
        jax.eval_shape(tx.init, params),
        param_shardings,
        transform_non_params=lambda _: NamedSharding(mesh, P()),
    )


def run_recipe(tx, mesh) -> dict:
    """``jax.jit(tx.init, out_shardings=recipe_shardings(...))`` on the mesh:
    the state lands where the recipe says, which is where it belongs."""
    with jax.set_mesh(mesh):
        params = make_problem(mesh)[0]
        shardings = recipe_shardings(tx, params, mesh)
        state = jax.jit(tx.init, out_shardings=shardings)(params)
    failures = check_placement(state, params, "recipe init")
    leaves, wanted = jax.tree.leaves(state), jax.tree.leaves(shardings)
    if len(leaves) != len(wanted):
        failures.append(f"{len(wanted)} shardings for {len(leaves)} state leaves")
    for i, (leaf, want) in enumerate(zip(leaves, wanted)):
        if not leaf.sharding.is_equivalent_to(want, leaf.ndim):
            failures.append(f"state leaf {i}: {leaf.sharding} != recipe's {want}")
    return {"failures": failures[:20], "state_leaves": len(leaves)}


def _close(a, b, what: str) -> list[str]:
    failures = []
    flat_a, def_a = jax.tree.flatten(a)
    flat_b, def_b = jax.tree.flatten(b)
    if def_a != def_b:
        return [f"{what}: tree structures differ"]
    for i, (x, y) in enumerate(zip(flat_a, flat_b)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape:
            failures.append(
                f"{what} leaf {i}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
            )
        elif x.size:
            # Leaf-wise in norm: a sharded reduction sums in another order, and
            # elements near zero (GARO's hidden units) carry that absolute error.
            err = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
            scale = np.max(np.abs(y.astype(np.float64)))
            if not err <= RTOL * scale + ATOL:
                failures.append(
                    f"{what} leaf {i}: max abs diff {err:.3g} of {scale:.3g}"
                )
    return failures


def _hyperparams(entry, state) -> dict:
    if entry.factory is garo_optax.garo:
        return garo_optax.hyperparams(state)
    if entry.lr_in_state:
        return {"lr": optax.tree.get(state, "lr")}
    return {}


def trajectory(entry, params, loss_fn, mode=None, pinned=False) -> dict:
    """20 jitted steps from ``params``: updates, states, hyperparameters, failures.

    With a ``mode`` (the mesh's axis type), placements are checked. Under
    ``"auto"`` axes, ``jax.jit(opt.init)`` leaves the placement of fresh zeros
    to XLA, which replicates them (``optax.adam`` alike); only eager ``init``
    and the updated states are checked there. With ``pinned``, the same steps
    jitted with explicit in/out shardings and donated buffers, starting from
    ``jax.jit(opt.init, out_shardings=...)``, must give the same updates.
    """
    opt = entry.make()
    failures = []

    def step(params, state):
        value, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, **entry.extra(value))
        return optax.apply_updates(params, updates), state, updates

    state = jax.jit(opt.init)(params)
    jitted = jax.jit(step)
    if mode is not None:
        failures += check_placement(opt.init(params), params, "eager init")
        if mode == "explicit":
            failures += check_placement(state, params, "jit init")
    if pinned:
        param_shardings = jax.tree.map(lambda x: x.sharding, params)
        state_shardings = jax.tree.map(lambda x: x.sharding, opt.init(params))
        pinned_carry = (
            jax.tree.map(jnp.copy, params),
            jax.jit(opt.init, out_shardings=state_shardings)(params),
        )
        failures += check_placement(pinned_carry[1], params, "pinned init")
        pinned_step = jax.jit(
            step,
            in_shardings=(param_shardings, state_shardings),
            out_shardings=(param_shardings, state_shardings, param_shardings),
            donate_argnums=(0, 1),
        )
    out = {"updates": [], "hyperparams": []}
    for t in range(STEPS):
        params, state, updates = jitted(params, state)
        if mode is not None and t in (0, STEPS - 1):
            failures += check_placement(state, params, f"step {t + 1} state")
            failures += check_placement(updates, params, f"step {t + 1} updates")
        if pinned:
            *pinned_carry, pinned_updates = pinned_step(*pinned_carry)
            failures += _close(pinned_updates, updates, f"step {t + 1} pinned updates")
        out["updates"].append(jax.tree.map(np.asarray, updates))
        out["hyperparams"].append(
            {k: np.asarray(v) for k, v in _hyperparams(entry, state).items()}
        )
    out["state"] = jax.tree.map(np.asarray, state)
    out["params"] = jax.tree.map(np.asarray, params)
    out["failures"] = failures
    return out


def run_entry(entry, mesh, mode: str, pinned: bool) -> dict:
    with jax.set_mesh(mesh):
        sharded, single, loss_fn = make_problem(mesh)
        got = trajectory(entry, sharded, loss_fn, mode, pinned)
    want = trajectory(entry, single, loss_fn)  # one device, no mesh
    failures = got["failures"]
    for t, (a, b) in enumerate(zip(got["updates"], want["updates"])):
        failures += _close(a, b, f"step {t + 1} updates vs one device")
    failures += _close(got["state"], want["state"], "final state vs one device")
    failures += _close(got["params"], want["params"], "final params vs one device")
    failures += _close(got["hyperparams"], want["hyperparams"], "hyperparameters")
    return {
        "failures": failures[:20],
        "num_failures": len(failures),
        "state_leaves": len(jax.tree.leaves(got["state"])),
        "hyperparams": {k: v.tolist() for k, v in got["hyperparams"][-1].items()},
    }


AXIS_TYPES = {
    "explicit": jax.sharding.AxisType.Explicit,
    "auto": jax.sharding.AxisType.Auto,
}


# The recipe also covers GARO with the shipped controller.
RECIPE_EXTRA = {"garo_pretrained": lambda: garo_optax.garo(garo_optax.pretrained())}


def main(names, modes, pinned: bool, recipe: bool = False) -> dict:
    assert jax.device_count() == 8, jax.devices()
    makers = {e.name: e.make for e in REGISTRY} | (RECIPE_EXTRA if recipe else {})
    entries = {e.name: e for e in REGISTRY}
    names = names or list(makers)
    assert set(names) <= set(makers), sorted(set(names) - set(makers))
    report = {}
    for mode in modes:
        axis_types = (AXIS_TYPES[mode],) * 2
        mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=axis_types)
        for name in names:
            try:
                if recipe:
                    result = run_recipe(makers[name](), mesh)
                else:
                    result = run_entry(entries[name], mesh, mode, pinned)
            except Exception as error:  # reported: one entry must not hide others
                result = {"error": f"{type(error).__name__}: {error}"}
            report[f"{name}/{mode}"] = result
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("entries", nargs="*", help="registry names (default: all)")
    parser.add_argument("--modes", default="explicit,auto")
    parser.add_argument("--pinned", action="store_true")
    parser.add_argument("--recipe", action="store_true", help="README recipe only")
    args = parser.parse_args()
    report = main(args.entries or None, args.modes.split(","), args.pinned, args.recipe)
    print(json.dumps(report))
