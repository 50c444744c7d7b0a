"""Optimizer states survive an orbax checkpoint and a fresh process, bit for bit.

For every entry of ``registry.REGISTRY`` one process runs a jitted train step
(a quadratic loss on ``registry.mixed_tree``'s f32/bf16 dict + tuple + scalar
tree, ``value=`` passed where the entry needs it) for 6 steps and saves
``{"params", "opt_state", "step"}`` after step 3 with
``orbax.checkpoint.StandardCheckpointer`` into ``<tmp>/<entry>``. A second,
fresh process rebuilds each optimizer from its factory, restores the
checkpoint into the abstract target ``jax.eval_shape(opt.init, params)`` and
runs steps 4-6. The tests compare every leaf of the params and of the state,
after step 3 and after step 6, bit for bit, together with the tree structures
(NamedTuple types included), dtypes and weak types. Two subprocesses in all
(each loops over the entries of the selected tests), shared by the tests of
this module. Compiling dominates (about 1-2 s of CPU per entry and process), so
by default one entry per algorithm runs; ``-m slow`` runs the others.

What orbax (orbax-checkpoint 0.12.8) does with optax states, checked here and
by hand:

* The states of every registry entry round-trip through the plain
  ``StandardCheckpointer`` with an abstract target; no garo_optax helper is
  needed. ``optax.EmptyState``, ``None`` fields (AutoSGM's unused ones) and
  ``optax.MaskedNode`` are empty subtrees: orbax stores nothing for them and
  the target puts them back. Typed PRNG keys (``jax.random.key``) also
  round-trip; no registry state holds one.
* orbax cannot save zero-size arrays (``ValueError: Cannot save arrays with
  zero size``). No registry state has one for these params (a zero-size
  *parameter* would give any optax optimizer, ``optax.adam`` included, a
  zero-size moment); meta-training's checkpoints, which do hold some, leave
  them out and rebuild them (``garo_optax.meta``'s ``Checkpointer``).
* Restored arrays are committed to the device, while ``opt.init``'s are not,
  and ``jax.jit`` caches the two cases apart: a process that has compiled the
  step for a fresh state compiles it once more after a restore (restoring in a
  fresh process, as here, compiles it once). ``jax.device_put(state, device)``
  on the fresh state makes the two share one program.
* A checkpoint of another optimizer raises ``ValueError("Structure mismatch:
  Target path (...) not found in metadata_tree ...")``, naming the first
  missing path and listing the stored ones. Params of another shape raise
  ``ValueError("Requested shape: (3, 3) is not compatible with the stored
  shape: (2, 3). Truncating/padding is disabled. ...")``, which does not say
  which leaf. A target of another *dtype* is not an error: orbax casts on
  restore.
"""

import json
import os
import pathlib
import subprocess
import sys

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from registry import REGISTRY, mixed_tree

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent
STEPS = 6
SAVE_AFTER = 3
NAMES = [entry.name for entry in REGISTRY]
# By default one entry per algorithm runs (chains with ``optax.EmptyState``,
# AutoSGM's ``None`` fields, GARO's hidden state); ``-m slow`` runs every entry.
FAST = ("adam_clara", "autosgm_markov_window", "garo")
_MISMATCH_ENTRIES = ("adam_clara", "garo")
CASES = [
    pytest.param(name, marks=() if name in FAST else pytest.mark.slow, id=name)
    for name in NAMES
]

# --- The worker: runs in the subprocesses (``python -c``, see `_run_worker`). ---


def _problem():
    """(params, target): the mixed f32/bf16 tree and the minimiser of the loss."""
    return mixed_tree(jax.random.key(0))


def _loss(params, target):
    def leaf(p, t):
        return jnp.sum(jnp.square(p.astype(jnp.float32) - t.astype(jnp.float32)))

    losses = jax.tree.leaves(jax.tree.map(leaf, params, target))
    return jnp.sum(jnp.stack(losses))


def _train_step(entry):
    """(opt, step): the entry's optimizer and its jitted train step."""
    opt = entry.make()

    def step(params, opt_state, count, target):
        value, grads = jax.value_and_grad(_loss)(params, target)
        updates, opt_state = opt.update(grads, opt_state, params, **entry.extra(value))
        params = optax.apply_updates(params, updates)
        return params, opt_state, optax.safe_increment(count)

    return opt, jax.jit(step)


def _describe(tree, arrays, prefix):
    """The structure and leaf avals of ``tree``; stores its leaves' bytes."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = []
    for i, (path, x) in enumerate(flat):
        aval = jax.typeof(x)
        arrays[f"{prefix}/{i}"] = np.asarray(x).reshape(-1).view(np.uint8)
        path = jax.tree_util.keystr(path)
        leaves.append([path, str(aval.dtype), list(aval.shape), aval.weak_type])
    return {"treedef": str(treedef), "leaves": leaves}


def _error(fn):
    try:
        fn()
    except Exception as error:  # recorded for the test to check
        return {"type": type(error).__name__, "message": str(error)}
    return None


def _worker(phase: str, names: str, checkpoints: str, out: str) -> None:
    """Phase ``"save"`` (steps 1-6, checkpoint after 3) or ``"restore"``
    (steps 4-6) of the comma-separated registry entries ``names``."""
    import orbax.checkpoint as ocp  # imported here: only the workers need it

    checkpoints = pathlib.Path(checkpoints)
    params0, target = _problem()
    abstract_params = jax.eval_shape(lambda: params0)
    abstract_step = jax.ShapeDtypeStruct((), jnp.int32)
    arrays, report = {}, {"entries": {}}
    checkpointer = ocp.StandardCheckpointer()
    by_name = {entry.name: entry for entry in REGISTRY}
    opts = {}
    for entry in (by_name[name] for name in names.split(",")):
        opt, step = _train_step(entry)
        opts[entry.name] = opt
        record = {}
        if phase == "save":
            train = (params0, opt.init(params0), jnp.zeros([], jnp.int32))
            for n in range(1, STEPS + 1):
                train = step(*train, target)
                if n == SAVE_AFTER:
                    record["at_save"] = _describe(
                        train, arrays, f"{entry.name}/at_save"
                    )
                    keys = ("params", "opt_state", "step")
                    checkpointer.save(checkpoints / entry.name, dict(zip(keys, train)))
        else:
            abstract = {
                "params": abstract_params,
                "opt_state": jax.eval_shape(opt.init, params0),
                "step": abstract_step,
            }
            with helpers.log_compilations() as compiled:
                restored = checkpointer.restore(checkpoints / entry.name, abstract)
                train = (restored["params"], restored["opt_state"], restored["step"])
                record["at_save"] = _describe(train, arrays, f"{entry.name}/at_save")
                for _ in range(SAVE_AFTER + 1, STEPS + 1):
                    train = step(*train, target)
                jax.block_until_ready(train)
            record["step_compilations"] = sum("jit(step)" in m for m in compiled)
        record["final"] = _describe(train, arrays, f"{entry.name}/final")
        report["entries"][entry.name] = record
    if phase == "restore":
        garo_init = opts["garo"].init
        garo_state = jax.eval_shape(garo_init, params0)
        report["other_optimizer"] = _error(
            lambda: checkpointer.restore(
                checkpoints / "adam_clara",
                {
                    "params": abstract_params,
                    "opt_state": garo_state,
                    "step": abstract_step,
                },
            )
        )
        wider = dict(params0, w=jnp.zeros((3, 3), jnp.float32))
        report["other_shapes"] = _error(
            lambda: checkpointer.restore(
                checkpoints / "garo",
                {
                    "params": jax.eval_shape(lambda: wider),
                    "opt_state": jax.eval_shape(garo_init, wider),
                    "step": abstract_step,
                },
            )
        )
    checkpointer.wait_until_finished()
    checkpointer.close()
    out = pathlib.Path(out)
    np.savez(out / f"{phase}.npz", **arrays)
    (out / f"{phase}.json").write_text(json.dumps(report))


_SCRIPT = (
    "import sys; sys.path.insert(0, sys.argv[1]); import test_checkpoint; "
    "test_checkpoint._worker(*sys.argv[2:])"
)


def _run_worker(phase, names, tmp):
    env = dict(
        os.environ,
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
        # Only to save time: the restore process loads the programs the save
        # process compiled (XLA's CPU compiles are deterministic either way).
        JAX_COMPILATION_CACHE_DIR=str(tmp / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONPATH=str(REPO),
    )
    argv = [str(TESTS), phase, ",".join(names), str(tmp / "checkpoints"), str(tmp)]
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp / f"{phase}.json").read_text())
    with np.load(tmp / f"{phase}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return report, arrays


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """The reports and leaf bytes of the save and the restore processes.

    They run the entries of the tests selected in this module (and the two
    that the mismatch tests read), in registry order.
    """
    selected = set(_MISMATCH_ENTRIES)
    for item in request.session.items:
        if item.path == pathlib.Path(__file__) and hasattr(item, "callspec"):
            selected.add(item.callspec.params.get("name"))
    names = [name for name in NAMES if name in selected]
    tmp = tmp_path_factory.mktemp("checkpoint")
    return _run_worker("save", names, tmp), _run_worker("restore", names, tmp)


def _assert_same(saved, restored, name, kind):
    (report_a, arrays_a), (report_b, arrays_b) = saved, restored
    a, b = report_a["entries"][name][kind], report_b["entries"][name][kind]
    assert a["treedef"] == b["treedef"]
    assert a["leaves"] == b["leaves"]  # paths, dtypes, shapes, weak types
    for i, (path, dtype, shape, _) in enumerate(a["leaves"]):
        x, y = arrays_a[f"{name}/{kind}/{i}"], arrays_b[f"{name}/{kind}/{i}"]
        np.testing.assert_array_equal(x, y, err_msg=f"{name} {kind} {path}")


@pytest.mark.parametrize("name", CASES)
def test_restored_state_equals_the_saved_state(runs, name):
    """The params, state and step restored in a fresh process are the saved ones."""
    _assert_same(*runs, name, "at_save")


@pytest.mark.parametrize("name", CASES)
def test_resumed_run_continues_bit_identically(runs, name):
    """Steps 4-6 after the restore equal steps 4-6 of the uninterrupted run."""
    _assert_same(*runs, name, "final")


@pytest.mark.parametrize("name", CASES)
def test_resumed_steps_compile_once(runs, name):
    """The restored state has the avals (weak types included) and shardings of
    the step's outputs: steps 5 and 6 reuse the program compiled at step 4."""
    assert runs[1][0]["entries"][name]["step_compilations"] == 1


def test_checkpoint_of_another_optimizer_is_a_clear_error(runs):
    """An adam_clara checkpoint restored into a GARO target."""
    error = runs[1][0]["other_optimizer"]
    assert error is not None and error["type"] == "ValueError"
    assert error["message"].startswith("Structure mismatch")
    assert "('opt_state', '0', 'count') not found" in error["message"]


def test_checkpoint_of_other_param_shapes_is_a_clear_error(runs):
    """A GARO checkpoint restored into a target whose ``w`` is (3, 3), not (2, 3)."""
    error = runs[1][0]["other_shapes"]
    assert error is not None and error["type"] == "ValueError"
    assert "Requested shape: (3, 3)" in error["message"]
    assert "stored shape: (2, 3)" in error["message"]
