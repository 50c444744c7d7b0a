"""Tests of the quality suite behind ``garo-optax bench`` (``_src/bench*.py``)."""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax._app import bench, bench_claims, bench_report, bench_speed, cli

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

QUADRATIC = "quadratic"


def _run(optimizer, steps=40, seeds=(0, 1), **kwargs):
    return bench.run_one(QUADRATIC, optimizer, seeds=seeds, num_steps=steps, **kwargs)


def _hand_loop(tx, task, key, steps):
    """Trains ``task`` step by step (a jitted step, a Python loop)."""

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, loss

    k_init, k_batch = jax.random.split(key)
    params = task.init(k_init)
    state = tx.init(params)
    losses = []
    for i in range(steps):
        batch = task.batch(jax.random.fold_in(k_batch, i), jnp.int32(i))
        params, state, loss = step(params, state, batch)
        losses.append(float(loss))
    return np.asarray(losses), state


def test_run_matches_a_hand_written_optax_loop():
    steps, seeds = 30, (0, 1)
    result = _run("sgd_momentum", steps=steps, seeds=seeds)

    task = bench.TASKS[QUADRATIC].build()
    tx = optax.with_extra_args_support(optax.sgd(1e-2, momentum=0.9))
    curves = np.stack(
        [_hand_loop(tx, task, k, steps)[0] for k in bench.seed_keys(seeds)]
    )

    np.testing.assert_allclose(result.curve, curves.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        result.final_loss, curves[:, -3:].mean(axis=1), rtol=1e-5
    )
    assert result.learning_rate == 1e-2
    assert np.isnan(result.eval_loss).all()  # the quadratic has no held-out loss
    assert np.isnan(result.probes).all()  # optax's sgd has no probe


@pytest.mark.parametrize(
    "preset, reference",
    [
        ("autosgm_heavy_ball", "sgd_momentum"),
        ("autosgm_nesterov", "nesterov"),
        ("autosgm_adam", "adam"),
    ],
)
def test_autosgm_presets_are_their_optax_special_cases(preset, reference):
    a, b = _run(preset), _run(reference)
    np.testing.assert_allclose(a.curve, b.curve, rtol=2e-5)
    # The probe reads AutoSGM's per-leaf effective rate.
    assert np.all(np.isfinite(a.probes[:, 0])) and np.isnan(a.probes[:, 1:]).all()


def test_garo_probe_records_the_hyperparameters_of_every_step():
    steps = 20
    result = _run("garo", steps=steps, seeds=(0,))
    task = bench.TASKS[QUADRATIC].build()
    key = bench.seed_keys((0,))[0]
    losses, state = _hand_loop(garo_optax.garo(), task, key, steps)
    np.testing.assert_allclose(result.curve, losses, rtol=1e-5)
    last = garo_optax.hyperparams(state)
    np.testing.assert_allclose(
        result.probes[-1], [last["lr"], last["mom"], last["wd"]], rtol=1e-5
    )
    assert math.isnan(result.learning_rate)


def test_sweep_keeps_the_best_rate_and_compiles_once():
    result = _run("sgd", sweep=True)
    rates = [r for r, _ in result.swept]
    np.testing.assert_allclose(rates, [1e-2 * f for f in bench.SWEEP_FACTORS])
    finals = [v for _, v in result.swept]
    best = int(np.argmin(finals))
    assert result.learning_rate == rates[best]
    assert float(np.mean(result.final_loss)) == pytest.approx(finals[best])
    # On this quadratic (largest curvature 1) SGD improves with the rate up to 0.3.
    assert result.learning_rate > 1e-2
    assert result.runs == len(bench.SWEEP_FACTORS) == 7
    # A tuning-free peer runs once, at its defaults, under --sweep too.
    peer = _run("schedule_free_sgd", sweep=True)
    assert peer.runs == 1 and peer.swept == () and math.isnan(peer.learning_rate)
    assert bench.OPTIMIZERS["schedule_free_sgd"].group == "peers"

    task = bench.TASKS[QUADRATIC].build()
    run = bench.make_run(task, bench.OPTIMIZERS["sgd"].build, 10)
    keys = bench.seed_keys((0,))
    run(keys, jnp.float32(0.1))
    run(keys, jnp.float32(0.2))
    assert run._cache_size() == 1


def test_run_many_equals_run_one_in_order():
    jobs = [
        dict(task_name=task, optimizer_name=n, seeds=(0,), num_steps=15)
        for task, n in (
            (QUADRATIC, "adam"),
            (QUADRATIC, "clara_sgd"),
            ("rosenbrock", "adam"),
        )
    ]
    seen = []
    results = bench.run_many(jobs, workers=1, on_result=seen.append)
    assert [(r.task, r.optimizer) for r in results] == [
        (j["task_name"], j["optimizer_name"]) for j in jobs
    ]
    assert seen == [results[0], results[2], results[1]]  # the tasks in turn
    again = bench.run_many(jobs, workers=2)
    assert [(r.task, r.optimizer) for r in again] == [
        (r.task, r.optimizer) for r in results
    ]
    np.testing.assert_array_equal(results[0].curve, bench.run_one(**jobs[0]).curve)
    for r, r2 in zip(results, again):
        np.testing.assert_array_equal(r.curve, r2.curve)


def test_interleaved_takes_the_tasks_in_turn():
    jobs = [dict(task_name=t) for t in "aaabbc"]
    assert bench._interleaved(jobs) == [0, 3, 5, 1, 4, 2]


def test_a_missing_compile_option_falls_back_to_xla_defaults(monkeypatch):
    monkeypatch.setattr(bench, "COMPILE_OPTIONS", {"xla_cpu_no_such_option": True})
    lowered = jax.jit(lambda x: x + 1).lower(jnp.float32(1))
    compiled = bench._compile(lowered, {"xla_cpu_no_such_option": True})
    assert compiled(jnp.float32(2)) == 3
    with pytest.raises(Exception, match="No such compile option"):
        bench._compile(lowered, {"xla_cpu_other_missing_option": True})


def test_schedule_free_reports_losses_at_its_eval_params():
    """On a task with a held-out loss, through ``run_one``: every reported
    loss and the held-out loss are those at ``schedule_free_eval_params``."""
    steps, name = 12, "schedule_free_sgd"
    result = bench.run_one("noisy_quadratic", name, seeds=(0,), num_steps=steps)
    task = bench.TASKS["noisy_quadratic"].build()
    tx = bench.OPTIMIZERS[name].build(None, steps)
    eval_params = optax.contrib.schedule_free_eval_params
    k_init, k_batch = jax.random.split(bench.seed_keys((0,))[0])
    params = task.init(k_init)
    state, at_x, at_y = tx.init(params), [], []
    for i in range(steps):
        batch = task.batch(jax.random.fold_in(k_batch, i), jnp.int32(i))
        at_x.append(float(task.loss(eval_params(state, params), batch)))
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        at_y.append(float(loss))
        updates, state = tx.update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(result.curve, at_x, rtol=1e-5)
    assert not np.allclose(result.curve[1:], at_y[1:], rtol=1e-3)
    held_out = task.eval_loss(eval_params(state, params))
    np.testing.assert_allclose(result.eval_loss, [held_out], rtol=1e-5)
    assert not np.isclose(result.eval_loss[0], task.eval_loss(params), rtol=1e-3)


def test_summaries_thresholds_and_best():
    def result(name, curve):
        curve = np.asarray(curve, float)
        return bench.Result(
            task="t",
            optimizer=name,
            learning_rate=0.1,
            final_loss=bench.final_losses(np.stack([curve, curve])),
            eval_loss=np.array([np.nan, np.nan]),
            curve=curve,
            probes=np.full((curve.size, 3), np.nan),
            run_s=0.0,
            compile_s=0.0,
        )

    n = 40
    adam = result("adam", np.linspace(1.0, 0.5, n))
    fast = result("fast", np.geomspace(1.0, 0.01, n))
    never = result("never", np.full(n, 2.0))
    results = [adam, fast, never]
    thresholds = bench.add_thresholds(results)
    # adam's final loss: the mean of its last 4 steps, its value at k = 37.5.
    assert thresholds == {"t": pytest.approx(1 - 0.5 * 37.5 / 39)}
    assert never.steps_to_threshold is None
    # fast first drops below 0.52 at index 6 (0.01 ** (6 / 39) = 0.49); the
    # trailing mean over 2 steps (5% of 40) gets there one step later. adam's
    # trailing mean reaches its own tail mean one step before the end.
    assert fast.steps_to_threshold == 8
    assert adam.steps_to_threshold == n - 1
    assert bench.best_per_task(results) == {"t": "fast"}

    # A non-finite final loss counts as diverged and as infinitely bad.
    bad = bench.final_losses(np.array([[1.0] * 10, [1.0] * 9 + [np.nan]]))
    assert bad[0] == 1.0 and bad[1] == np.inf
    # The median of the others without adam.
    median = (fast.final_loss[0] + 2.0) / 2
    assert bench.add_thresholds([fast, never]) == {"t": pytest.approx(median)}

    table = bench_report.format_table(results, thresholds)
    best_line = next(line for line in table.splitlines() if " fast " in line)
    assert best_line.startswith("*")
    assert not next(ln for ln in table.splitlines() if " never " in ln).startswith("*")


def test_every_registered_optimizer_builds_with_a_traced_rate():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 0.5)}
    for name, spec in bench.OPTIMIZERS.items():

        def step(lr, spec=spec):
            tx = optax.with_extra_args_support(spec.build(lr, 100))
            state = tx.init(params)
            updates, state = tx.update(grads, state, params, value=jnp.float32(1.0))
            return updates

        updates = jax.jit(step)(jnp.float32(spec.default_lr or 0.0))
        assert np.all(np.isfinite(updates["w"])), name
        assert np.all(updates["w"] <= 0), name  # descends along a positive gradient


def test_registry_covers_the_issue_list():
    required = {
        "sgd", "sgd_momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
        "adamax", "nadam", "adamw_warmup_cosine", "adam_plateau",
        "autosgm_heavy_ball", "autosgm_nesterov", "autosgm_adam",
        "autosgm_markov_rc", "clara_sgd", "adam_clara", "adam_clara_global",
        "adam_clara_local", "adam_clara_smoothed", "garo", "garo_pretrained",
    }  # fmt: skip
    assert required <= set(bench.OPTIMIZERS)
    assert set(bench.QUICK_TASKS) <= set(bench.TASKS)


def test_floor_bytes_per_param():
    params = {"a": jnp.zeros((100, 10)), "b": jnp.zeros(10)}
    floor = lambda name: bench_speed.floor_bytes_per_param(
        bench.OPTIMIZERS[name].build(1e-3, 100), params
    )
    assert floor("sgd") == pytest.approx(12.0)
    assert floor("sgd_momentum") == pytest.approx(20.0)
    assert floor("adam") == pytest.approx(28.0)
    assert floor("adam_clara") == pytest.approx(36.0)  # + the path


def test_speed_reports_ratios_from_the_same_run():
    report = bench_speed.run_speed(
        # adam_plateau needs value=; cocob's init shares a buffer between two
        # state leaves, which a donated step refuses unless the state is copied.
        ["sgd_momentum", "adam_plateau", "cocob"],
        ["1M"],
        rounds=2,
        bandwidth_bytes=1 << 24,
        warmup=1,
    )
    result = report["sizes"]["1M"]
    opts = result["optimizers"]
    assert set(opts) == {"sgd_momentum", "adam_plateau", "cocob", "adam", "sgd"}
    assert opts["adam"]["ratio_adam"] == 1.0 and opts["sgd"]["ratio_sgd"] == 1.0
    e = opts["sgd_momentum"]
    assert e["ratio_adam"] == pytest.approx(e["median_ms"] / opts["adam"]["median_ms"])
    assert e["bytes_per_param"] == pytest.approx(20.0)
    assert 0 < e["floor_fraction"] and result["bandwidth_gbs"] > 0
    assert "sgd_momentum" in bench_speed.format_speed(report)


def test_clara_spread_counts_the_rates_near_the_best():
    rates = (1e-3, 1e-2, 1e-1, 1.0)
    final = np.array([[4.0], [1.5], [1.0], [np.inf]])
    spread = bench_claims.clara_spread(final, rates)
    assert spread["best"] == 1.0 and spread["best_rate"] == 0.1
    assert spread["good_rates"] == 2
    assert spread["decades_within_2x"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------
# The command.


def _bench(tmp_path, *args):
    cache = () if "--cache-dir" in args else ("--no-cache",)  # not the user's
    return cli.main(["bench", "--quiet", "--out", str(tmp_path / "out"), *cache, *args])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "nope"], "unknown task 'nope'"),
        (["--optimizers", "adam", "sgdd"], "unknown optimizer 'sgdd'"),
        (["--steps", "0"], "--steps must be a positive integer, got 0"),
        (["--seeds", "-1"], "--seeds must be a positive integer, got -1"),
        (["--speed", "--claims"], "pick one"),
        (["--speed", "--sizes", "3M"], "unknown size '3M'"),
        (["--speed", "--rounds", "0"], "--rounds must be a positive integer"),
        (["--steps", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, args, message):
    code = _bench(tmp_path, *args)
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = cli.main(["bench", "--quiet", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 1 and "--out" in err and "not writable" in err
    assert len(err.strip().splitlines()) == 1
    code = _bench(tmp_path, "--cache-dir", str(blocker / "sub"))
    err = capsys.readouterr().err
    assert code == 1 and "--cache-dir" in err and "not writable" in err
    assert len(err.strip().splitlines()) == 1


def _cache_events():
    """Counts the persistent-cache requests and hits of JAX from now on."""
    counts = {"requests": 0, "hits": 0}

    def listen(event, **kwargs):
        if event == "/jax/compilation_cache/compile_requests_use_cache":
            counts["requests"] += 1
        elif event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1

    jax.monitoring.register_event_listener(listen)
    return counts, lambda: jax.monitoring.unregister_event_listener(listen)


def _summary_from_bench_json(report):
    """The summary's numbers, from bench.json alone."""
    rows = report["results"]
    loss = lambda r: math.inf if r["final_loss_mean"] is None else r["final_loss_mean"]
    best = {t: min(loss(r) for r in rows if r["task"] == t) for t in report["steps"]}
    adam = {r["task"]: r["run_s"] for r in rows if r["optimizer"] == "adam"}
    out = {}
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        mine = [r for r in rows if r["optimizer"] == name]
        ratio = [loss(r) / best[r["task"]] for r in mine]
        out[name] = {
            "median_ratio": float(np.median(ratio)),
            "within_10pct": sum(x <= 1.1 for x in ratio),
            "wins": sum(x == 1 for x in ratio),
            "diverged": sum(r["diverged"] for r in mine),
            "time_vs_adam": np.median([r["run_s"] / adam[r["task"]] for r in mine]),
        }
    return out


def test_bench_writes_summary_tables_plots_and_caches(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    optimizers = ["sgd", "adam", "garo", "clara_sgd", "schedule_free_adamw"]
    args = (
        *("--tasks", QUADRATIC, "rosenbrock", "--optimizers", *optimizers),
        *("--steps", "25", "--seeds", "2", "--cache-dir", str(tmp_path / "cache")),
    )
    assert _bench(tmp_path, *args) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert printed.startswith("quadratic (25 steps, 2 seeds")
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("Summary over 2 tasks (quadratic, rosenbrock)")
    assert printed.split("\n\nwall time")[0].endswith(summary.strip())
    bench_txt = (out / "bench.txt").read_text()
    assert bench_txt.startswith(summary) and printed.split(summary)[0] in bench_txt

    report = json.loads((out / "bench.json").read_text())
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["optimizer"] for r in rows] == optimizers * 2
    assert [r["optimizer"] for r in report["results"]] == optimizers * 2
    means = {r["optimizer"]: r["final_loss_mean"] for r in report["results"][:5]}
    for row in rows[:5]:
        assert float(row["final_loss_mean"]) == pytest.approx(means[row["optimizer"]])
    assert report["best"]["quadratic"] == min(means, key=means.get)
    assert report["steps"] == {"quadratic": 25, "rosenbrock": 25}
    assert report["seeds"] == [0, 1]
    for r in report["results"]:
        assert len(r["curve"]) == 25 and len(r["final_loss_per_seed"]) == 2
        assert r["runs"] == 1
    by_name = {(r["task"], r["optimizer"]): r for r in report["results"]}
    garo = by_name[QUADRATIC, "garo"]
    assert set(garo["hyperparams"]) == {"lr", "momentum", "weight_decay"}
    assert set(by_name[QUADRATIC, "clara_sgd"]["hyperparams"]) == {"lr"}
    assert by_name[QUADRATIC, "schedule_free_adamw"]["group"] == "peers"
    # sgd at 1e-2 diverges on Rosenbrock at step 4 (0-based), marked as such.
    diverged = by_name["rosenbrock", "sgd"]
    assert diverged["diverged"] and diverged["diverged_at"] == 4
    assert diverged["curve"][3] is not None and diverged["curve"][4] is None

    # The summary equals the same numbers computed from bench.json alone.
    expected = _summary_from_bench_json(report)
    got = json.loads((out / "summary.json").read_text())["rows"]
    assert {w["optimizer"] for w in got} == set(optimizers)
    medians = [w["median_ratio"] for w in got]
    assert medians == sorted(medians, key=lambda x: math.inf if x is None else x)
    for w in got:
        want = expected[w["optimizer"]]
        median = math.inf if w["median_ratio"] is None else w["median_ratio"]
        assert median == pytest.approx(want["median_ratio"], rel=1e-12)
        assert w["time_vs_adam"] == pytest.approx(want["time_vs_adam"], rel=1e-12)
        for key in ("within_10pct", "wins", "diverged"):
            assert w[key] == want[key], (w["optimizer"], key)
        assert w["runs"] == 1 and w["tasks"] == 2
    assert expected["sgd"]["diverged"] == 1
    for png in ("loss_curves.png", "hyperparams.png", "profile.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A repeat run loads every program from the cache and computes the same.
    counts, stop = _cache_events()
    try:
        assert _bench(tmp_path, *args, "--out", str(tmp_path / "again")) == 0
    finally:
        stop()
    assert counts["requests"] >= 10 and counts["hits"] == counts["requests"]
    again = json.loads((tmp_path / "again" / "bench.json").read_text())
    assert [r["curve"] for r in again["results"]] == [
        r["curve"] for r in report["results"]
    ]
    assert not jax.config.jax_compilation_cache_dir  # restored


@pytest.mark.slow
def test_claims_command_writes_every_claim(tmp_path):
    pytest.importorskip("matplotlib")
    code = _bench(
        tmp_path, "--claims", "--tasks", QUADRATIC, "--steps", "10", "--seeds", "1"
    )
    assert code == 0
    out = tmp_path / "out"
    summary = json.loads((out / "claims.json").read_text())
    assert set(summary["autosgm"]) == set(bench_claims.AUTOSGM_TASKS)
    assert len(summary["clara"]["rates"]) == len(bench_claims.CLARA_RATES)
    assert {r["optimizer"] for r in summary["garo"]} == set(
        bench_claims.GARO_OPTIMIZERS
    )
    for png in ("claims_autosgm.png", "claims_clara.png", "claims_garo.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_groups_fit_the_budget_and_share_the_references():
    resident = {"adam": 3, "sgd": 1, "a": 2, "b": 2, "c": 5, "d": 1}
    out = bench_speed.groups(["a", "b", "adam", "c", "d"], resident, budget=9)
    assert out == [
        ["adam", "sgd", "a", "b"],
        ["adam", "sgd", "c"],
        ["adam", "sgd", "d"],
    ]
    for group in out:  # an optimizer too big for any group still gets one
        assert sum(resident[n] for n in group) <= 9 or len(group) == 3
    assert bench_speed.groups([], resident, budget=9) == [["adam", "sgd"]]
