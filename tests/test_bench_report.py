"""Tests of the bench's reports (``_app/bench_report.py``) on made-up runs."""

import math

import numpy as np
import pytest

from garo_optax._app import bench, bench_report


def _result(task, name, curve, *, run_s=1.0, runs=1, seeds=2):
    curve = np.asarray(curve, float)
    losses = np.stack([curve] * seeds)
    return bench.Result(
        task=task,
        optimizer=name,
        learning_rate=0.1,
        final_loss=bench.final_losses(losses),
        eval_loss=np.full(seeds, np.nan),
        curve=np.mean(np.where(np.isfinite(losses), losses, np.inf), axis=0),
        probes=np.full((curve.size, 3), np.nan),
        run_s=run_s,
        compile_s=0.0,
        runs=runs,
    )


def _flat(task, name, final, n=20, **kwargs):
    """A curve from 1 down to ``final`` (its last 10% at ``final``)."""
    curve = np.concatenate([np.geomspace(1.0, final, n - 2), [final, final]])
    return _result(task, name, curve, **kwargs)


def _diverging(task, name, at, n=20, **kwargs):
    curve = np.geomspace(1.0, 1e6, n)  # blows up, then stops being finite
    curve[at:] = np.nan
    return _result(task, name, curve, **kwargs)


RESULTS = [
    _flat("a", "adam", 0.5, run_s=2.0),
    _flat("a", "sgd", 0.25, run_s=1.0, runs=7),
    _flat("a", "prodigy", 0.26, run_s=4.0),
    _flat("b", "adam", 0.1, run_s=1.0),
    _diverging("b", "sgd", 7, run_s=0.5, runs=7),
    _flat("b", "prodigy", 0.1, run_s=3.0),
    _flat("c", "adam", 0.2, run_s=1.0),
    _flat("c", "sgd", 0.8, run_s=2.0, runs=7),
    _flat("c", "prodigy", 0.21, run_s=1.0),
]


def test_loss_ratios_are_over_the_best_of_each_task():
    ratios = bench_report.loss_ratios(RESULTS)
    assert ratios["a"] == pytest.approx({"adam": 2.0, "sgd": 1.0, "prodigy": 1.04})
    # A tie is a win for both; a diverged run is infinitely far.
    assert ratios["b"] == {"adam": 1.0, "sgd": math.inf, "prodigy": 1.0}
    assert ratios["c"] == pytest.approx({"adam": 1.0, "sgd": 4.0, "prodigy": 1.05})


def test_summary_rows_by_hand():
    rows = {w["optimizer"]: w for w in bench_report.summarize(RESULTS)}
    assert [w["optimizer"] for w in bench_report.summarize(RESULTS)] == [
        "adam",  # median of (2, 1, 1) = 1 (2 wins)
        "prodigy",  # median of (1.04, 1, 1.05) = 1.04
        "sgd",  # median of (1, inf, 4) = 4
    ]
    assert rows["prodigy"]["median_ratio"] == pytest.approx(1.04)
    assert rows["prodigy"]["within_10pct"] == 3 and rows["prodigy"]["wins"] == 1
    assert rows["adam"]["within_10pct"] == 2 and rows["adam"]["wins"] == 2
    assert rows["sgd"]["median_ratio"] == 4.0 and rows["sgd"]["diverged"] == 1
    assert rows["sgd"]["runs"] == 7 and rows["adam"]["runs"] == 1
    # Run time over adam's on the same task: sgd 0.5, 0.5, 2 -> 0.5.
    assert rows["sgd"]["time_vs_adam"] == pytest.approx(0.5)
    assert rows["prodigy"]["time_vs_adam"] == pytest.approx(2.0)
    assert rows["adam"]["time_vs_adam"] == 1.0
    assert rows["prodigy"]["group"] == "peers" and rows["sgd"]["group"] == "optax"

    text = bench_report.format_summary(bench_report.summarize(RESULTS), "abc")
    lines = text.splitlines()
    assert lines[0].startswith("Summary over 3 tasks")
    assert lines[2].split() == ["adam", "optax", "classics", "1", "1.00", "2/3"] + [
        "2",
        "0",
        "1.00",
    ]
    assert lines[4].split()[-5:] == ["4.00", "1/3", "1", "1", "0.50"]
    # Without adam there is no time column to compute.
    no_adam = [r for r in RESULTS if r.optimizer != "adam"]
    assert all(math.isnan(w["time_vs_adam"]) for w in bench_report.summarize(no_adam))


def test_diverged_at_is_the_first_non_finite_step():
    assert RESULTS[4].diverged and RESULTS[4].diverged_at == 7
    assert RESULTS[3].diverged_at is None


def test_ema_smooths_in_log_space_and_stops_at_divergence():
    np.testing.assert_allclose(bench_report.ema(np.full(9, 3.0), 4), 3.0)
    out = bench_report.ema([1.0, 100.0, np.nan, 1.0], 1e9)
    # A very long time constant: the bias-corrected mean of the logs.
    assert out[1] == pytest.approx(10.0) and np.isnan(out[2:]).all()
    assert bench_report.ema([-1.0, 1.0], 1e9)[1] == pytest.approx(0.0, abs=1e-8)


def test_loss_curves_mark_divergence_and_keep_the_scale(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    fig = bench_report.plot_loss_curves(path, RESULTS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[1]  # task b: sgd diverges at step 7 after growing 1e6x
    assert ax.get_title().startswith("b (20 steps, 2 seeds)")
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [7]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log"
    assert high <= 2 * 1.0 * 1.3 + 1e-9  # twice the initial loss, not 1e6
    assert marks[0].get_ydata()[0] == pytest.approx(high)  # drawn at the top
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.split()[1] for t in legend] == ["adam", "prodigy"]  # finite only


def test_profile_steps_at_the_ratios(tmp_path):
    pytest.importorskip("matplotlib")
    fig = bench_report.plot_profile(tmp_path / "profile.png", RESULTS)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    sgd = lines["sgd"]
    x, y = np.asarray(sgd.get_xdata()), np.asarray(sgd.get_ydata())
    # 1 of 3 tasks at tau = 1, 2 of 3 from tau = 4, never 3 (diverged).
    assert y[x == 1.0][0] == pytest.approx(1 / 3)
    assert y[x == 4.0][0] == pytest.approx(2 / 3) and y.max() == pytest.approx(2 / 3)
    assert lines["prodigy"].get_ydata()[-1] == 1.0
    assert (tmp_path / "profile.png").read_bytes()[:4] == b"\x89PNG"


def test_shipped_summary_recomputed_from_the_shipped_bench_json():
    """docs/bench/summary.json (the README's table) from docs/bench/bench.json,
    by a few independent lines."""
    import json
    import pathlib

    docs = pathlib.Path(__file__).parent.parent / "docs" / "bench"
    results = json.loads((docs / "bench.json").read_text())["results"]
    summary = json.loads((docs / "summary.json").read_text())["rows"]
    final = {}
    for r in results:
        loss = math.inf if r["diverged"] else r["final_loss_mean"]
        final.setdefault(r["task"], {})[r["optimizer"]] = (loss, r["run_s"])
    for row in summary:
        name = row["optimizer"]
        ratios, times = [], []
        for runs in final.values():
            best = min(loss for loss, _ in runs.values())
            ratios.append(runs[name][0] / best)
            times.append(runs[name][1] / runs["adam"][1])
        assert row["median_ratio"] == pytest.approx(float(np.median(ratios)))
        assert row["within_10pct"] == sum(r <= 1.1 for r in ratios)
        assert row["wins"] == sum(r == 1.0 for r in ratios)
        assert row["diverged"] == sum(math.isinf(r) for r in ratios)
        assert row["time_vs_adam"] == pytest.approx(float(np.median(times)))
    medians = [row["median_ratio"] for row in summary]
    assert medians == sorted(medians) and len(summary) == 33
