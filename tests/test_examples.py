"""Smoke tests of the example scripts: each ``main(steps=...)`` runs briefly."""

import functools
import json
import math
import os
import pathlib
import socket
import subprocess
import sys

import helpers
import numpy as np
import pytest

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

load_example = helpers.load_example


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


def test_linen_garo_trains_and_passes_the_loss_to_garo():
    """The loss falls, and ``GaroTrainState`` hands it to GARO as ``value=``
    (the stock ``TrainState.apply_gradients`` does not)."""
    pytest.importorskip("flax")
    pytest.importorskip("sklearn")
    import jax
    import optax
    from flax.training import train_state

    import garo_optax

    module = load_example("linen_garo")
    steps = 20
    result = module.main(steps=steps)

    losses = np.asarray(result["loss"])
    assert losses.shape == (steps,) and np.all(np.isfinite(losses))
    # About 2.3 -> 0.5 with seed 0.
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    assert result["test_accuracy"] > 0.5  # chance is 0.1 (about 0.86)
    assert result["loss_count"] == steps  # every step's loss reached GARO
    assert sorted(result["hyperparams"]) == ["lr", "mom", "wd"]
    assert 0 < result["hyperparams"]["lr"] < 1

    x_train, y_train, _, _ = module.load_data()
    state = module.create_state(0, x_train.shape[1])
    grads = jax.jit(jax.grad(module.loss_fn))(state.params, state, x_train, y_train)
    step = jax.jit(lambda s, value: s.apply_gradients(grads=grads, value=value))
    field = lambda s, name: np.asarray(optax.tree.get(s.opt_state, name))
    # The same first loss, then different ones: GARO's loss statistics and,
    # through the controller's normalized-loss feature, its hidden state and
    # hyperparameters differ.
    real, fake = step(state, 2.3), step(state, 2.3)
    real, fake = step(real, 2.0), step(fake, 1000.0)
    assert field(real, "loss_count") == field(fake, "loss_count") == 2
    assert abs(field(real, "loss_mean") - field(fake, "loss_mean")) > 10.0
    assert not np.array_equal(field(real, "h"), field(fake, "h"))
    real_hp = garo_optax.hyperparams(real.opt_state)
    assert real_hp["lr"] != garo_optax.hyperparams(fake.opt_state)["lr"]
    # The base class calls tx.update without value=: GARO sees no loss.
    plain = jax.jit(train_state.TrainState.apply_gradients)(state, grads=grads)
    assert field(plain, "loss_count") == 0


def test_autosgm_chain_clips_then_windows_the_rate():
    pytest.importorskip("sklearn")
    import jax
    import optax

    module = load_example("autosgm_chain")
    steps, window, lr0 = 40, 20, 0.05
    result = module.main(steps=steps, window=window, learning_rate=lr0)

    loss, norm, lr = result["loss"], result["grad_norm"], result["lr"]
    assert loss.shape == norm.shape == lr.shape == (steps,)
    assert np.all(np.isfinite(loss)) and np.all(lr > 0)
    # About 3.0 -> 1.3 with seed 0.
    assert loss[-5:].mean() < 0.6 * loss[:5].mean()
    assert result["test_accuracy"] > 0.3
    # The window decays the rate over each frame and restarts it: the rate of
    # the frame's last step (window 0.006) is tiny, the next one's is not.
    assert lr[window - 1] < 0.05 * lr[:window].max()
    assert lr[window] > 10 * lr[window - 1]
    assert lr[-1] < 0.05 * lr[window:].max()

    # Clipping is active at the start (|g| about 2.4 with seed 0).
    assert norm[0] > 1.5

    # One train step equals AutoSGM applied to the clipped gradient (which
    # differs from AutoSGM on the raw one), and reports the mean of the state's
    # per-leaf lr. On a one-layer model, to keep the compilations small.
    x, y, _, _ = module.load_data()
    rng = np.random.default_rng(0)
    params = [(rng.standard_normal((64, 10), np.float32), np.zeros(10, np.float32))]
    grads = jax.grad(module.loss_fn)(params, x, y)
    grad_norm = float(optax.tree.norm(grads))
    assert grad_norm > 1.5
    tx = module.make_optimizer(lr0, window)
    new, state, (_, step_norm, step_lr) = module.make_train_step(tx)(
        params, tx.init(params), x, y
    )
    np.testing.assert_allclose(step_norm, grad_norm, rtol=1e-5)
    bare = module.make_optimizer(lr0, window, clip=False)
    bare_update = jax.jit(bare.update)
    clipped = jax.tree.map(lambda g: g / grad_norm, grads)
    want, _ = bare_update(clipped, bare.init(params), params)
    helpers.tree_allclose(optax.apply_updates(params, want), new, rtol=1e-5)
    raw, _ = bare_update(grads, bare.init(params), params)
    assert not np.allclose(optax.apply_updates(params, raw)[0][0], new[0][0])
    lr = optax.tree.get(state, "lr")  # one entry per leaf
    assert np.shape(lr) == (2,)
    np.testing.assert_allclose(step_lr, np.mean(lr), rtol=1e-6)


def test_classic_recipe_stops_early_and_restores_the_best_weights():
    pytest.importorskip("sklearn")
    module = load_example("classic_recipe")
    steps, patience = 30, 2
    result = module.main(
        steps=steps, accumulate=2, patience=patience, min_delta=0.0, peak_lr=3e-2
    )

    val = result["val_loss"]
    best = result["best_step"]
    assert np.all(np.isfinite(val)) and len(val) == len(result["train_loss"])
    # With a high peak rate the validation loss turns up within 30 updates
    # (best at update 9 of 11 with seed 0): training stops `patience` updates
    # after the best one.
    assert result["stopped_early"] and len(val) < steps
    assert len(val) == best + patience
    assert result["best_val_loss"] == min(val) == val[best - 1]
    assert val[-1] > result["best_val_loss"]  # the last weights are not the best
    # The restored weights are the best ones, exactly.
    assert result["restored_val_loss"] == result["best_val_loss"]
    assert result["train_loss"][-1] < 0.5 * result["train_loss"][0]
    assert result["test_accuracy"] > 0.5
    # The recorded rates are the schedule's, one per optimizer update.
    schedule = module.make_schedule(steps, 3e-2)
    np.testing.assert_allclose(
        result["lr"], [float(schedule(i)) for i in range(len(val))], rtol=1e-6
    )


def test_classic_recipe_schedule_warms_up_then_decays():
    pytest.importorskip("sklearn")
    module = load_example("classic_recipe")
    peak = 3e-3
    lr = np.asarray(module.make_schedule(100, peak)(np.arange(101)))
    assert lr[0] == 0.0
    assert int(np.argmax(lr)) == 10 and np.isclose(lr[10], peak)
    assert np.all(np.diff(lr[:11]) > 0)  # linear warm-up over 10% of the steps
    assert np.all(np.diff(lr[10:]) <= 1e-9)  # cosine decay
    np.testing.assert_allclose(lr[100], peak / 100, rtol=1e-5)


def test_classic_recipe_multisteps_updates_every_k_micro_steps():
    """Parameters move on every k-th micro-step only."""
    pytest.importorskip("sklearn")
    import jax

    module = load_example("classic_recipe")
    (x, y), _, _ = module.load_data()
    k = 3
    tx = module.make_optimizer(1e-3, accumulate=k)
    micro_step = module.make_micro_step(tx)
    params = module.init_mlp(0)
    opt_state = tx.init(params)
    moved = []
    for i in range(2 * k):
        new, opt_state, _ = micro_step(params, opt_state, jax.random.key(i), x, y)
        moved.append(
            any(
                not np.array_equal(a, b)
                for a, b in zip(*map(jax.tree.leaves, (new, params)))
            )
        )
        params = new
        assert int(opt_state.gradient_step) == (i + 1) // k
    assert moved == [False, False, True, False, False, True]


def test_meta_train_small_returns_a_trained_controller(tmp_path):
    pytest.importorskip("sklearn")
    import jax

    import garo_optax
    from garo_optax import meta

    module = load_example("meta_train_small")
    out = tmp_path / "controller.npz"
    steps = 2
    result = module.main(
        steps=steps,
        population=2,
        segment_length=5,
        horizon=10,
        eval_tasks=2,
        out=str(out),
    )

    controller, initial = result["controller"], result["initial_controller"]
    assert isinstance(controller, garo_optax.GaroController)
    # Finite weights, except the weight-decay head's bias: -inf, as at the
    # start (MetaConfig's weight_decay_init=0 turns weight decay off exactly).
    for name, value in controller._asdict().items():
        if name == "design" or value is None:  # static design; no log_lr0 (seed)
            continue
        value = np.asarray(value)
        if name == "head_b":
            assert value[2] == -np.inf
            value = value[:2]
        assert np.all(np.isfinite(value)), name
    leaves = [np.asarray(v) for v in jax.tree.leaves(controller)]
    # The initial controller is MetaConfig's meta-initialization: its heads
    # emit lr 0.01 and momentum 0.5 at h = 0 (and no weight decay).
    np.testing.assert_allclose(
        initial.head_b, [np.log(np.expm1(0.01)), np.arctanh(0.5), -np.inf], rtol=1e-5
    )
    # Meta-training moved the weights away from it.
    initial_leaves = [np.asarray(v) for v in jax.tree.leaves(initial)]
    assert any(not np.array_equal(a, b) for a, b in zip(leaves, initial_leaves))
    assert result["meta_loss"].shape == (steps,)
    assert np.all(np.isfinite(result["meta_loss"]))
    # Training fresh quadratics (initial loss 1) with either controller works.
    for name in ("final_loss", "initial_final_loss"):
        assert result[name].shape == (2,)
        assert np.all(np.isfinite(result[name])) and np.all(result[name] < 1.0)
    # The saved file reloads to the same weights.
    assert result["saved"] == str(out)
    reloaded = meta.load_controller(out)
    for a, b in zip(jax.tree.leaves(reloaded), leaves):
        np.testing.assert_array_equal(a, b)


# Runs examples/multihost.py's main() in fresh processes: the device count is
# fixed when JAX starts, and jax.distributed.initialize must come before any
# other JAX call, so neither can happen inside the test process. Each process
# trains with both optimizers (one JAX start-up).
_MULTIHOST_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import helpers
main = helpers.load_example("multihost").main
kwargs = json.loads(sys.argv[2])
losses = {name: main(optimizer=name, **kwargs).tolist() for name in sys.argv[3:]}
print("LOSSES", json.dumps(losses))
"""
_MULTIHOST_STEPS = 20
_MULTIHOST_OPTIMIZERS = ("garo", "adam_clara")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def _run_multihost(num_processes: int, devices_per_process: int):
    """Per process: its output and ``{optimizer: loss history}``."""
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    env = dict(
        os.environ,
        XLA_FLAGS=" ".join(flags),
        JAX_PLATFORMS="cpu",
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
        PYTHONPATH=os.pathsep.join(
            [
                str(helpers.EXAMPLES.parent),
                *filter(None, [os.environ.get("PYTHONPATH")]),
            ]
        ),
    )
    address = f"127.0.0.1:{_free_port()}" if num_processes > 1 else None
    tests = str(pathlib.Path(__file__).resolve().parent)
    procs = []
    try:
        for i in range(num_processes):
            kwargs = dict(
                steps=_MULTIHOST_STEPS,
                coordinator_address=address,
                num_processes=num_processes,
                process_id=i,
            )
            command = [
                sys.executable,
                "-c",
                _MULTIHOST_DRIVER,
                tests,
                json.dumps(kwargs),
                *_MULTIHOST_OPTIMIZERS,
            ]
            procs.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    runs = []
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        line = [line for line in out.splitlines() if line.startswith("LOSSES ")][-1]
        losses = json.loads(line.removeprefix("LOSSES "))
        runs.append((out, {k: np.asarray(v) for k, v in losses.items()}))
    return runs


def test_multihost_on_four_devices_equals_one_device(capsys):
    """One process, a 2 x 2 mesh: the losses of one device, and they fall."""
    import jax

    module = load_example("multihost")
    ((output, four),) = _run_multihost(1, 4)
    assert "4 devices, mesh {'data': 2, 'model': 2}" in output
    for optimizer in _MULTIHOST_OPTIMIZERS:
        one = module.main(
            steps=_MULTIHOST_STEPS, optimizer=optimizer, devices=jax.devices()[:1]
        )
        assert one.shape == (_MULTIHOST_STEPS,) and np.all(np.isfinite(one))
        assert one[-5:].mean() < 0.8 * one[:5].mean(), optimizer
        np.testing.assert_allclose(
            four[optimizer], one, rtol=1e-5, atol=1e-6, err_msg=optimizer
        )
    assert "1 devices, mesh {'data': 1, 'model': 1}" in capsys.readouterr().out


@pytest.mark.slow
def test_multihost_two_processes_equal_one_process():
    """Two processes of two CPU devices each (gloo collectives): both report the
    losses of one process with four devices; only process 0 prints."""
    (out0, first), (out1, second) = _run_multihost(2, 2)
    ((_, four),) = _run_multihost(1, 4)
    for optimizer in _MULTIHOST_OPTIMIZERS:
        np.testing.assert_array_equal(first[optimizer], second[optimizer])
        np.testing.assert_allclose(
            first[optimizer], four[optimizer], rtol=1e-5, atol=1e-6
        )
        assert first[optimizer][-5:].mean() < 0.8 * first[optimizer][:5].mean()
    assert "2 process(es), 4 devices" in out0 and "step" in out0
    assert "step" not in out1
