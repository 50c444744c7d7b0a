"""garo_optax.meta._evaluate and ``garo-optax meta-eval``: baselines, sweep,
peers, rescaled losses, thresholds, summary counts, report files (imports the
private modules, where they live)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax import meta
from garo_optax._app import cli, registry
from garo_optax._src import peers
from garo_optax.meta import _evaluate

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

# What `garo-optax meta-eval` passes: the registry's baselines.
BASELINES = {name: registry.get(name) for name in registry.META_EVAL_BASELINES}


def _contenders(names):
    return {name: registry.get(name) for name in names}


def _family(low=-1.0, name="tiny_quadratic"):
    def sample(key):
        return {"h": jnp.exp(jax.random.uniform(key, (3,), minval=low, maxval=1.0))}

    def task(config):
        return meta.Task(
            init=lambda key: jnp.ones(3),
            loss=lambda p, batch: 0.5 * jnp.sum(config["h"] * p**2),
            batch=lambda key, step: None,
            eval_loss=lambda p: jnp.sum(p**2),
        )

    return meta.TaskFamily(name, sample, task)


def test_steps_to_threshold():
    curve = np.array([5.0, 3.0, 1.0, 2.0, 0.5])
    assert _evaluate.steps_to_threshold(curve, 1.0) == 3
    assert _evaluate.steps_to_threshold(curve, 0.1) is None


def test_run_optimizer_equals_a_hand_written_loop():
    family = _family()
    key = jax.random.PRNGKey(3)
    curve = _evaluate.run_optimizer(
        _evaluate.contender_fn(registry.get("sgd").build, 5),
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
        {"garo_init": theta}, family, baselines=BASELINES, num_tasks=2, num_steps=30
    )
    assert set(results) == {
        "garo_init",
        *(name for base in BASELINES for name in (base, f"{base}_swept")),
    }
    for base, spec in BASELINES.items():
        swept = results[f"{base}_swept"]
        assert swept.final_loss <= results[base].final_loss
        lrs = [spec.default_lr * f for f in _evaluate.SWEEP_FACTORS]
        assert min(abs(swept.learning_rate - lr) / lr for lr in lrs) < 1e-6
    rows = _evaluate.summary_rows(results)
    adam = next(r for r in rows if r["optimizer"] == "adam")
    assert adam["steps_to_adam"] is not None
    table = _evaluate.format_table("tiny", rows)
    assert table.count("*") == 1 and "sgd_momentum_swept" in table


def test_meta_eval_command_writes_the_report(tmp_path, capsys, monkeypatch):
    # One baseline and one peer keep the compilations few; the sweep test and
    # the summary test cover the rest.
    monkeypatch.setattr(registry, "META_EVAL_BASELINES", ("adam",))
    run = tmp_path / "run"
    theta = garo_optax.init_controller(jax.random.PRNGKey(1), hidden_size=32)
    run.mkdir()
    meta.save_controller(run / "controller.npz", theta)
    out = tmp_path / "eval"
    argv = ["meta-eval", "--controller", str(run), "--families", "quadratic"]
    argv += ["--steps", "20", "--tasks", "2", "--no-sweep", "--out", str(out)]
    argv += ["--peers", "schedule_free_sgd", "--loss-scales"]  # no rescaling
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "quadratic (20 steps)" in printed and "garo_trained" in printed
    assert "no worse than the median peer" in printed
    report = json.loads((out / "meta_eval.json").read_text())
    assert list(report["families"]) == ["quadratic"]
    rows = report["families"]["quadratic"]["rows"]
    names = {"garo_trained", "garo_init", "adam", "schedule_free_sgd"}
    assert {r["optimizer"] for r in rows} == names
    assert (out / "quadratic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = report["summary"]
    assert summary["families"] == 1 and summary["peers"] == ["schedule_free_sgd"]
    assert summary["reference"] is None  # --no-sweep: no best-swept adam
    assert "median peer" in (out / "meta_eval.txt").read_text()


def test_meta_eval_runs_every_family_at_every_loss_scale(tmp_path, monkeypatch):
    """Families x (1, *--loss-scales), in order, under ``name@loss<c>``, all in
    the report and its summary (the runs are faked: the runs' own tests are
    above)."""
    calls = []

    def fake(controllers, family, *, peers, **kw):
        calls.append((family.name, tuple(peers)))
        losses = np.full(4, 1.0 + len(calls))
        curve = _evaluate.Curve(losses, losses[-1], np.nan, np.nan)
        return {name: curve for name in ("adam", *peers)}

    monkeypatch.setattr(_evaluate, "evaluate_family", fake)
    plotted = []  # the real plots are checked above
    monkeypatch.setattr(_evaluate, "plot_family", lambda *a: plotted.append(a[0].name))
    out = tmp_path / "eval"
    argv = ["meta-eval", "--families", "rosenbrock", "quadratic"]
    argv += ["--peers", "dog", "cocob", "--loss-scales", "1e-3", "1e3", "1e3"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    scales = ("", "@loss1e-3", "@loss1e3")
    labels = [f"{n}{s}" for n in ("rosenbrock", "quadratic") for s in scales]
    assert calls == [(label, ("dog", "cocob")) for label in labels]
    report = json.loads((out / "meta_eval.json").read_text())
    assert list(report["families"]) == labels
    assert plotted == [f"{label}.png" for label in labels]
    assert report["families"]["quadratic@loss1e-3"]["loss_scale"] == 1e-3
    assert report["summary"]["families"] == 6
    assert "quadratic@loss1e3 (1000 steps)" in (out / "meta_eval.txt").read_text()
    calls.clear()
    assert cli.main(["meta-eval", "--families", "rosenbrock"]) == 0
    assert calls == [(f"rosenbrock{s}", tuple(peers.PEERS)) for s in scales]
    calls.clear()  # empty flags: no peers, no rescaled runs
    argv = ["meta-eval", "--families", "rosenbrock", "--peers", "--loss-scales"]
    assert cli.main(argv) == 0
    assert calls == [("rosenbrock", ())]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--families", "nope"], "nope"),
        (["--steps", "0"], "--steps"),
        (["--controller", "/no/such/file.npz"], "cannot read"),
        (["--controller", "garo-v0"], "cannot read"),
        (["--peers", "prodigy", "nope"], "nope"),
        (["--loss-scales", "1e3", "0"], "--loss-scales"),
        (["--loss-scales", "inf"], "--loss-scales"),
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
    assert list(BASELINES) == ["sgd", "sgd_momentum", "adam", "adamw"]
    assert [s.default_lr for s in BASELINES.values()] == [1e-2, 1e-2, 1e-3, 1e-3]
    spec = BASELINES["sgd_momentum"]
    params = {"w": jnp.ones(2)}
    tx, ref = spec.build(spec.default_lr, 10), optax.sgd(1e-2, momentum=0.9)
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


# Module constants, so that the tests below share compiled runs (`_runner`
# caches by family, steps and tasks).
TINY = _family()
TINY_ILL = _family(-3.0, "tiny_ill")
SUMMARY_PEERS = ("schedule_free_sgd", "polyak_sgd", "dog")


def _hand_run(peer, family, key, num_tasks, num_steps, at_eval_params=True):
    """Losses of ``peer`` on ``family`` by hand (the tasks of ``init_inner``),
    at its evaluation parameters or at the trained ones."""
    curves = []
    for k in jax.random.split(key, num_tasks):
        config = family.sample(jax.random.split(k, 3)[0])
        task, p = family.task(config), jnp.ones(3)
        tx = peer.factory()
        state, run = tx.init(p), []
        for _ in range(num_steps):
            loss, g = jax.value_and_grad(task.loss)(p, None)
            x = peers.evaluation_params(peer, state, p) if at_eval_params else p
            run.append(task.loss(x, None))
            updates, state = tx.update(g, state, p, value=loss)
            p = optax.apply_updates(p, updates)
        curves.append(run)
    return np.mean(curves, axis=0)


@pytest.mark.parametrize("name", ["schedule_free_sgd", "polyak_sgd"])
def test_peers_get_value_and_report_the_loss_at_their_eval_params(name):
    """A schedule-free run reports the loss at ``schedule_free_eval_params``
    (not at the trained ``y``); Polyak SGD gets the loss as ``value=``."""
    peer = peers.PEERS[name]
    results = _evaluate.evaluate_family(
        {}, TINY, num_tasks=2, num_steps=20, sweep=False, peers=_contenders([name])
    )
    assert list(results) == [name] and np.isnan(results[name].learning_rate)
    losses = results[name].losses[:6]  # the first steps, by hand below
    key = jax.random.PRNGKey(0)
    np.testing.assert_allclose(losses, _hand_run(peer, TINY, key, 2, 6), rtol=1e-5)
    raw = _hand_run(peer, TINY, key, 2, 6, at_eval_params=False)
    if peer.eval_params is None:
        np.testing.assert_allclose(losses, raw, rtol=1e-5)
    else:  # x = y after the first update (weight 1), apart from then on
        assert np.abs(losses[2:] - raw[2:]).min() > 1e-3 * raw[2:].max()


def test_rescaled_family_loss_is_exactly_c_times():
    scaled = garo_optax.tasks.rescaled(TINY, 1e3)
    assert scaled.name == "tiny_quadratic@loss1e3"
    config = TINY.sample(jax.random.PRNGKey(0))
    params = jnp.array([0.3, -1.2, 2.0])
    a, b = TINY.task(config), scaled.task(config)
    assert b.loss(params, None) == 1e3 * a.loss(params, None)
    assert b.eval_loss(params) == 1e3 * a.eval_loss(params)
    np.testing.assert_array_equal(b.init(jax.random.PRNGKey(1)), a.init(None))
    rosenbrock = _evaluate.scaled_family("rosenbrock", 1e-3)
    assert rosenbrock.name == "rosenbrock@loss1e-3"
    assert rosenbrock.task(rosenbrock.sample(jax.random.PRNGKey(0))).eval_loss is None
    assert _evaluate.scaled_family("rosenbrock", 1.0).name == "rosenbrock"
    assert garo_optax.tasks.format_scale(2.5) == "2.5"


def test_summary_counts_equal_a_count_from_the_curves():
    """The "within 10%" and "no worse than the median peer" counts, and those
    of every fixed rate of Adam's sweep, recomputed from the loss curves."""
    families = {"tiny_quadratic": TINY, "tiny_ill": TINY_ILL}
    kw = dict(num_tasks=2, num_steps=20)
    adam = registry.get("adam")
    contenders = dict(baselines={"adam": adam}, peers=_contenders(SUMMARY_PEERS))
    runs = {
        n: _evaluate.evaluate_family({}, f, **contenders, **kw)
        for n, f in families.items()
    }
    summary = _evaluate.summarize(runs, SUMMARY_PEERS)

    final = lambda losses: np.mean(losses[-2:])  # the last 10% of 20 steps
    adam_fn = _evaluate.contender_fn(adam.build, 20)
    rates = adam.default_lr * np.array(_evaluate.SWEEP_FACTORS)
    key, run = jax.random.PRNGKey(0), _evaluate.run_optimizer
    sweeps = {
        n: [
            final(run(adam_fn, f, key=key, learning_rate=r, **kw).losses) for r in rates
        ]
        for n, f in families.items()
    }
    for i, row in enumerate(summary["default_rates"]):
        hits = sum(s[i] <= 1.1 * min(s) for s in sweeps.values())
        assert (row["within"], row["learning_rate"]) == (hits, pytest.approx(rates[i]))
    assert len(summary["default_rates"]) == len(rates)
    for row in summary["optimizers"]:
        name, close, median = row["optimizer"], 0, 0
        for results in runs.values():
            ours = final(results[name].losses)
            close += ours <= 1.1 * final(results["adam_swept"].losses)
            median += ours <= np.median(
                [final(results[p].losses) for p in SUMMARY_PEERS]
            )
        assert (row["within"], row["vs_median_peer"]) == (close, median), name
    names = [r["optimizer"] for r in summary["optimizers"]]
    assert names == ["adam", "adam_swept", *SUMMARY_PEERS]
    counts = [(r["within"], r["vs_median_peer"]) for r in summary["optimizers"]]
    assert counts[1][0] == 2 and len(set(counts)) > 1  # not all alike
    table = _evaluate.format_summary(summary)
    assert "one good default" in table and "polyak_sgd" in table
    json.dumps(summary)  # plain ints and floats


def test_family_plot_keeps_the_axis_of_the_finite_runs(tmp_path):
    """A diverged run neither stretches the y-axis nor goes unmarked."""
    steps = np.arange(1, 51)
    good = _evaluate.Curve(1.0 / steps, 0.02, np.nan, 0.1)
    blown = np.geomspace(1.0, 1e30, 50)
    blown[30:] = np.inf
    bad = _evaluate.Curve(blown, np.inf, np.nan, 1.0)
    fig = _evaluate.family_figure("f", {"adam": good, "sgd_swept": bad})
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert high == pytest.approx(3.0) and low == pytest.approx(0.8 * 0.02)
    markers = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(markers) == 1  # sgd left the axis at step 2 (1.0 * 1e30**(1/49) > 3)
    assert markers[0].get_xdata()[0] == 2 and markers[0].get_ydata()[0] == high
    _evaluate.plot_family(tmp_path / "f.png", "f", {"adam": good, "sgd_swept": bad})
    assert (tmp_path / "f.png").stat().st_size > 1000


def _merge_script():
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks/merge_meta_eval.py"
    spec = importlib.util.spec_from_file_location("merge_meta_eval", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_held_out_numbers_recomputed():
    """The README's held-out numbers of the second phase tried after garo-v2:
    the merge script's summary of garo-v2's full run equals the one meta-eval
    wrote, and the committed merged report is the merge of the two committed
    runs (the trained controller's row from garo-v2-long's run, the rest from
    the full run), its summary recounted from its rows."""
    merge = _merge_script()
    docs = pathlib.Path(__file__).resolve().parents[1] / "docs/meta_eval"
    full = json.loads((docs / "garo-v2/meta_eval.json").read_text())
    new = json.loads((docs / "garo-v2-long/meta_eval.json").read_text())
    shipped = json.loads((docs / "garo-v2-long/merged.json").read_text())
    assert merge.summarize(full) == full["summary"]
    as_text = lambda report: json.dumps(report, sort_keys=True)  # NaN-safe
    assert as_text(merge.merge(full, new)) == as_text(shipped)
    counts = {r["optimizer"]: r for r in shipped["summary"]["optimizers"]}
    assert counts["garo_trained"]["vs_median_peer"] == sum(
        int(
            _row(f, "garo_trained")
            <= float(np.median([_row(f, p) for p in shipped["peers"]]))
        )
        for f in shipped["families"].values()
    )
    with pytest.raises(ValueError, match="other tasks"):
        other = json.loads(json.dumps(new))
        first = next(iter(other["families"].values()))
        next(r for r in first["rows"] if r["optimizer"] == "adam")["final_loss"] *= 2
        merge.merge(full, other)


def _row(family: dict, name: str) -> float:
    return next(r["final_loss"] for r in family["rows"] if r["optimizer"] == name)
