"""garo_optax.meta._evaluate and ``garo-optax meta-eval``: baselines, sweep,
thresholds, report files (imports the private module, where they live)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax import meta
from garo_optax._src import cli
from garo_optax.meta import _evaluate

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _family():
    def sample(key):
        return {"h": jnp.exp(jax.random.uniform(key, (3,), minval=-1.0, maxval=1.0))}

    def task(config):
        return meta.Task(
            init=lambda key: jnp.ones(3),
            loss=lambda p, batch: 0.5 * jnp.sum(config["h"] * p**2),
            batch=lambda key, step: None,
            eval_loss=lambda p: jnp.sum(p**2),
        )

    return meta.TaskFamily("tiny_quadratic", sample, task)


def test_steps_to_threshold():
    curve = np.array([5.0, 3.0, 1.0, 2.0, 0.5])
    assert _evaluate.steps_to_threshold(curve, 1.0) == 3
    assert _evaluate.steps_to_threshold(curve, 0.1) is None


def test_run_optimizer_equals_a_hand_written_loop():
    family = _family()
    key = jax.random.PRNGKey(3)
    curve = _evaluate.run_optimizer(
        _evaluate.BASELINES["sgd"][0],
        family,
        num_tasks=2,
        num_steps=5,
        key=key,
        learning_rate=0.1,
    )
    # The same tasks by hand: init_inner splits each task key the same way.
    losses = []
    for k in jax.random.split(key, 2):
        config = family.sample(jax.random.split(k, 3)[0])
        task, p, run = family.task(config), jnp.ones(3), []
        for _ in range(5):
            loss, g = jax.value_and_grad(task.loss)(p, None)
            run.append(loss)
            p = p - 0.1 * g
        losses.append(run)
    np.testing.assert_allclose(curve.losses, np.mean(losses, axis=0), rtol=1e-5)
    assert curve.learning_rate == pytest.approx(0.1)
    assert np.isfinite(curve.eval_loss)


def test_sweep_picks_the_best_rate_and_rows_cover_everything():
    family = _family()
    theta = garo_optax.init_controller(jax.random.PRNGKey(0), hidden_size=4)
    results = _evaluate.evaluate_family(
        {"garo_init": theta}, family, num_tasks=2, num_steps=30
    )
    assert set(results) == {
        "garo_init",
        *(name for base in _evaluate.BASELINES for name in (base, f"{base}_swept")),
    }
    for base, (tx_fn, default) in _evaluate.BASELINES.items():
        swept = results[f"{base}_swept"]
        assert swept.final_loss <= results[base].final_loss
        lrs = [default * f for f in _evaluate.SWEEP_FACTORS]
        assert min(abs(swept.learning_rate - lr) / lr for lr in lrs) < 1e-6
    rows = _evaluate.summary_rows(results)
    adam = next(r for r in rows if r["optimizer"] == "adam")
    assert adam["steps_to_adam"] is not None
    table = _evaluate.format_table("tiny", rows)
    assert table.count("*") == 1 and "sgd_momentum_swept" in table


def test_meta_eval_command_writes_the_report(tmp_path, capsys, monkeypatch):
    # One baseline keeps the compilations few; the sweep test covers the rest.
    monkeypatch.setattr(_evaluate, "BASELINES", {"adam": _evaluate.BASELINES["adam"]})
    run = tmp_path / "run"
    theta = garo_optax.init_controller(jax.random.PRNGKey(1), hidden_size=32)
    run.mkdir()
    meta.save_controller(run / "controller.npz", theta)
    out = tmp_path / "eval"
    argv = ["meta-eval", "--controller", str(run), "--families", "quadratic"]
    argv += ["--steps", "20", "--tasks", "2", "--no-sweep", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "quadratic (20 steps)" in printed and "garo_trained" in printed
    report = json.loads((out / "meta_eval.json").read_text())
    rows = report["families"]["quadratic"]["rows"]
    assert {r["optimizer"] for r in rows} == {"garo_trained", "garo_init", "adam"}
    assert (out / "quadratic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--families", "nope"], "nope"),
        (["--steps", "0"], "--steps"),
        (["--controller", "/no/such/file.npz"], "cannot read"),
        (["--controller", "garo-v0"], "cannot read"),
    ],
)
def test_meta_eval_bad_input(capsys, argv, message):
    assert cli.main(["meta-eval", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_unknown_pretrained_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="available"):
        garo_optax.pretrained("no-such-controller")


def test_optax_baselines_are_the_documented_ones():
    tx_fn, lr = _evaluate.BASELINES["sgd_momentum"]
    params = {"w": jnp.ones(2)}
    tx, ref = tx_fn(lr, None), optax.sgd(1e-2, momentum=0.9)
    g = {"w": jnp.array([1.0, -2.0])}
    u, _ = tx.update(g, tx.init(params))
    want, _ = ref.update(g, ref.init(params))
    np.testing.assert_allclose(u["w"], want["w"])


def test_shipped_controller_loads_and_trains():
    """``pretrained()`` gives a global controller of the documented shape whose
    GARO trains a quadratic, and its metadata records the recipe."""
    theta = garo_optax.pretrained()
    assert isinstance(theta, garo_optax.GaroController)
    assert theta.w_hh.shape == (96, 32) and theta.ctx_w.shape == (0, 32)
    info = garo_optax.pretrained_info()
    assert info["command"].startswith("garo-optax meta-train")
    assert info["config"]["families"]
    opt = garo_optax.garo(theta)
    scales = jnp.array([1.0, 3.0, 10.0])
    loss_fn = lambda p: 0.5 * jnp.sum(scales * p**2)

    @jax.jit
    def train(params):
        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params, value=loss)
            return (optax.apply_updates(params, updates), state), loss

        return jax.lax.scan(body, (params, opt.init(params)), length=300)[1]

    losses = train(jnp.ones(3))
    assert np.all(np.isfinite(losses)) and losses[-1] < 1e-2 * losses[0]


def test_only_process_zero_writes_a_controller(tmp_path, monkeypatch):
    theta = garo_optax.init_controller(jax.random.PRNGKey(1), hidden_size=2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    meta.save_controller(tmp_path / "other.npz", theta)
    assert not (tmp_path / "other.npz").exists()
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    meta.save_controller(tmp_path / "first.npz", theta)
    loaded = meta.load_controller(tmp_path / "first.npz")
    for a, b in zip(loaded, theta):
        np.testing.assert_array_equal(a, b)
