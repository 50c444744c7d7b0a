"""Reports of ``garo-optax bench``: tables, JSON, CSV and PNG plots.

* :func:`format_table`: one block per task (every run's losses and times);
* :func:`summarize` / :func:`format_summary`: one row per optimizer over all
  tasks (its median loss ratio to the best of each task, near-best tasks,
  wins, divergences, time relative to ``adam``);
* :func:`plot_profile`: the performance profile of Dolan and Moré;
* :func:`plot_loss_curves`, :func:`plot_hyperparams`: the curves.

The loss ratio of an optimizer on a task is its final training loss (the mean
over seeds; infinite if a seed diverged) over the lowest one of the task.
Tables and figures come from :mod:`garo_optax._src.report` (bare
:class:`matplotlib.figure.Figure` objects: no pyplot state, no backend switch).
"""

import collections
import csv
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from garo_optax._app import bench
from garo_optax._src import report as report_lib

CSV_FIELDS = (
    "task",
    "optimizer",
    "group",
    "runs",
    "learning_rate",
    "final_loss_mean",
    "final_loss_std",
    "eval_loss_mean",
    "eval_loss_std",
    "steps_to_threshold",
    "diverged",
    "run_s",
    "compile_s",
)


def _mean_std(values: np.ndarray) -> str:
    if not np.all(np.isfinite(values)):
        return "diverged"
    mean, std = float(np.mean(values)), float(np.std(values))
    return f"{report_lib.format_number(mean)} ± {report_lib.format_number(std)}"


_RESULT_COLUMNS = (
    report_lib.Column("", "<"),  # the best-mark of the row
    report_lib.Column("optimizer", "<"),
    report_lib.Column("lr"),
    report_lib.Column("runs"),
    report_lib.Column("final train loss"),
    report_lib.Column("held-out loss"),
    report_lib.Column("steps to thr"),
    report_lib.Column("run s", spec=".2f"),
    report_lib.Column("compile s", spec=".2f"),
)


def format_table(results: Sequence[bench.Result], thresholds: dict) -> str:
    """The terminal table: one block per task, the best final loss marked ``*``.

    Args:
      results: the runs.
      thresholds: task -> the loss threshold of ``steps_to_threshold``.

    Returns:
      The table as text.
    """
    best = bench.best_per_task(results)
    best_eval = {}
    for r in results:
        score = float(np.mean(r.eval_loss))
        if np.isfinite(score) and (
            r.task not in best_eval or score < best_eval[r.task][1]
        ):
            best_eval[r.task] = (r.optimizer, score)
    blocks = []
    for task in dict.fromkeys(r.task for r in results):
        rows = [r for r in results if r.task == task]
        best_held_out = best_eval.get(task, (None,))[0]
        cells = [_result_row(r, best.get(task), best_held_out) for r in rows]
        description = bench.TASKS[task].description if task in bench.TASKS else task
        title = (
            f"{task} ({rows[0].curve.shape[0]} steps, {rows[0].final_loss.shape[0]} "
            "seeds; threshold "
            f"{report_lib.format_number(thresholds.get(task, math.nan))}): "
            f"{description}"
        )
        blocks.append(report_lib.format_table(_RESULT_COLUMNS, cells, title, indent=0))
    blocks.append(
        "* best mean final training loss (and held-out loss) of the task; "
        "lr 'own': the optimizer sets its own rate; runs: what the result cost "
        "(1 at a default rate or for a tuning-free optimizer, "
        f"{len(bench.SWEEP_FACTORS)} when swept)."
    )
    return "\n\n".join(blocks)


def _result_row(r: bench.Result, best: str | None, best_held_out: str | None):
    """The cells of one run (``best``: the optimizer of the task's best final
    loss; ``best_held_out``: of its best held-out loss)."""
    held_out = _mean_std(r.eval_loss) if np.isfinite(r.eval_loss).any() else "-"
    mark = lambda name: "*" if r.optimizer == name else ""
    return [
        mark(best),
        r.optimizer,
        "own" if math.isnan(r.learning_rate) else r.learning_rate,
        r.runs,
        report_lib.Marked(_mean_std(r.final_loss), mark(best)),
        report_lib.Marked(held_out, mark(best_held_out)),
        r.steps_to_threshold,
        r.run_s,
        r.compile_s,
    ]


def write_json(path, results, thresholds, meta: dict) -> None:
    """The summaries and the seed-averaged curves as one JSON file."""
    report = {
        **meta,
        "thresholds": thresholds,
        "best": bench.best_per_task(results),
        "results": [
            {
                **r.summary(),
                "curve": [float(x) if np.isfinite(x) else None for x in r.curve],
                "hyperparams": {
                    name: [float(x) if np.isfinite(x) else None for x in r.probes[:, i]]
                    for i, name in enumerate(("lr", "momentum", "weight_decay"))
                    if np.isfinite(r.probes[:, i]).any()
                },
            }
            for r in results
        ],
    }
    pathlib.Path(path).write_text(json.dumps(report, indent=1) + "\n")


def write_csv(path, results) -> None:
    """One row per task and optimizer (the summary fields)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow(r.summary())


# ----------------------------------------------------------------------------
# The summary over tasks.

NEAR = 1.1
"""A loss ratio at most this is "within 10% of the best"."""


def _score(result: bench.Result) -> float:
    """The mean final loss over seeds (infinite if a seed diverged)."""
    return float(np.mean(result.final_loss))


def _ratio(loss: float, best: float) -> float:
    if not math.isfinite(loss):
        return math.inf
    if loss <= best:
        return 1.0
    return loss / best if best > 0 else math.inf


def loss_ratios(results: Sequence[bench.Result]) -> dict[str, dict[str, float]]:
    """Task -> optimizer -> its final loss over the lowest of the task.

    Args:
      results: the runs.

    Returns:
      The ratios, at least 1 (1: the best of the task, ties included;
      ``inf``: diverged, or positive where the best is not).
    """
    best = {}
    for r in results:
        best[r.task] = min(best.get(r.task, math.inf), _score(r))
    ratios = collections.defaultdict(dict)
    for r in results:
        ratios[r.task][r.optimizer] = _ratio(_score(r), best[r.task])
    return dict(ratios)


def summarize(results: Sequence[bench.Result]) -> list[dict]:
    """One row per optimizer over all its tasks, best first.

    Args:
      results: the runs.

    Returns:
      Dicts with ``optimizer``, ``group``, ``runs`` (runs per task each result
      cost), ``tasks``, ``median_ratio`` (the median over tasks of
      :func:`loss_ratios`), ``within_10pct`` (tasks with a ratio of at most
      :data:`NEAR`), ``wins`` (ratio 1), ``diverged`` (tasks where a seed
      diverged) and ``time_vs_adam`` (the median over tasks of its run time
      over ``adam``'s, NaN without ``adam``), sorted by ``median_ratio``,
      then by more tasks near the best and more wins.
    """
    ratios = loss_ratios(results)
    adam = {r.task: r.run_s for r in results if r.optimizer == "adam"}
    rows = []
    for name in dict.fromkeys(r.optimizer for r in results):
        mine = [r for r in results if r.optimizer == name]
        mine_ratios = [ratios[r.task][name] for r in mine]
        times = [r.run_s / adam[r.task] for r in mine if adam.get(r.task, 0) > 0]
        spec = bench.OPTIMIZERS.get(name)
        rows.append(
            {
                "optimizer": name,
                "group": spec.group if spec else None,
                "runs": max(r.runs for r in mine),
                "tasks": len(mine),
                "median_ratio": float(np.median(mine_ratios)),
                "within_10pct": sum(x <= NEAR for x in mine_ratios),
                "wins": sum(x == 1.0 for x in mine_ratios),
                "diverged": sum(r.diverged for r in mine),
                "time_vs_adam": float(np.median(times)) if times else math.nan,
            }
        )
    rows.sort(key=lambda w: (w["median_ratio"], -w["within_10pct"], -w["wins"]))
    return rows


def _two_decimals(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio < 100 else f"{ratio:.2g}"


_SUMMARY_COLUMNS = (
    report_lib.Column("optimizer", "<"),
    report_lib.Column("family", "<"),
    report_lib.Column("runs"),
    report_lib.Column("loss/best", spec=_two_decimals),
    report_lib.Column("within 10%"),
    report_lib.Column("wins"),
    report_lib.Column("diverged"),
    report_lib.Column("time/adam", spec=_two_decimals),
)


def format_summary(rows: Sequence[dict], tasks: Sequence[str]) -> str:
    """The summary table of :func:`summarize`'s rows, with its legend."""
    cells = [
        [
            w["optimizer"],
            bench.GROUPS.get(w["group"], w["group"] or "-"),
            w["runs"],
            w["median_ratio"],
            f"{w['within_10pct']}/{w['tasks']}",
            w["wins"],
            w["diverged"],
            None if math.isnan(w["time_vs_adam"]) else w["time_vs_adam"],
        ]
        for w in rows
    ]
    title = f"Summary over {len(tasks)} tasks ({', '.join(tasks)}), best first"
    legend = (
        "loss/best: median over tasks of the final training loss (mean over "
        "seeds) over the best of the task; within 10%: tasks where that ratio "
        "is at most 1.1; wins: tasks where it is the best (ties count for "
        "each); diverged: tasks where a seed ended non-finite; time/adam: "
        "median over tasks of the run time over adam's (same steps and seeds); "
        "runs: runs per task (1: a default rate or a tuning-free optimizer, "
        f"{len(bench.SWEEP_FACTORS)}: swept)."
    )
    table = report_lib.format_table(_SUMMARY_COLUMNS, cells, title)
    return f"{table}\n\n{legend}"


def write_summary(path, rows: Sequence[dict], meta: dict) -> None:
    """The summary rows as JSON (``null`` for infinite or missing numbers)."""
    clean = lambda x: None if isinstance(x, float) and not math.isfinite(x) else x
    report = {
        **meta,
        "near": NEAR,
        "rows": [{k: clean(v) for k, v in w.items()} for w in rows],
    }
    pathlib.Path(path).write_text(json.dumps(report, indent=1) + "\n")


# ----------------------------------------------------------------------------
# Plots.


_FAMILY_CMAP = {
    "optax": "Blues",
    "peers": "Greens",
    "autosgm": "Oranges",
    "clara": "Purples",
    "garo": "Reds",
}
_DASHES = ("-", "--", "-.", ":")


def _group(name: str) -> str:
    """The family of a registry name; of another configuration (the compile
    table's extras, such as ``scale_by_clara``), the family its name holds."""
    spec = bench.OPTIMIZERS.get(name)
    if spec is not None:
        return spec.group
    return next((g for g in _FAMILY_CMAP if g in name), "other")


def line_styles(names: Sequence[str]) -> dict[str, tuple]:
    """Name -> (colour, dashes): one colour map per family, shades within.

    Args:
      names: optimizers (registry names or configurations named after their
        family).

    Returns:
      The style of each name, for ``ax.plot(x, y, dashes, color=colour)``.
    """
    from matplotlib import colormaps

    by_group = collections.defaultdict(list)
    for name in names:
        by_group[_group(name)].append(name)
    styles = {}
    for group, members in by_group.items():
        cmap = colormaps[_FAMILY_CMAP.get(group, "Greys")]
        for i, name in enumerate(members):
            shade = 0.95 - 0.4 * i / max(len(members) - 1, 1)
            styles[name] = (cmap(shade), _DASHES[i % len(_DASHES)])
    return styles


def _family_handles(names: Sequence[str]):
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(_group(n) for n in names))
    order = [g for g in bench.GROUPS if g in groups] + [
        g for g in groups if g not in bench.GROUPS
    ]
    count = collections.Counter(_group(n) for n in names)
    return [
        Line2D(
            [],
            [],
            color=colormaps[_FAMILY_CMAP.get(g, "Greys")](0.75),
            linewidth=2.5,
            label=f"{bench.GROUPS.get(g, g)} ({count[g]})",
        )
        for g in order
    ]


def ema(curve: np.ndarray, span: float) -> np.ndarray:
    """The exponential moving average of a loss curve, bias-corrected.

    In log space where every finite value is positive (the geometric mean,
    which a log axis shows undistorted). NaN from the first non-finite value
    on (a diverged run).

    Args:
      curve: the losses, one per step.
      span: the time constant in steps (``beta = 1 - 1 / span``).

    Returns:
      The smoothed curve, the shape of ``curve``.
    """
    curve = np.asarray(curve, np.float64)
    finite = np.isfinite(curve)
    stop = int(np.argmin(finite)) if not finite.all() else curve.size
    head = curve[:stop]
    log = head.size > 0 and bool(np.all(head > 0))
    values = np.log(head) if log else head
    beta = 1.0 - 1.0 / max(span, 1.0)
    out = np.full(curve.shape, np.nan)
    avg = weight = 0.0
    for i, x in enumerate(values):
        avg = beta * avg + (1 - beta) * x
        weight = beta * weight + (1 - beta)
        out[i] = avg / weight
    if log:
        out[:stop] = np.exp(out[:stop])
    return out


def _limits(smoothed: dict, results: Sequence[bench.Result]):
    """(bottom, top, log) of a panel from the runs that did not diverge."""
    kept = [r for r in results if not r.diverged] or list(results)
    values = np.concatenate([smoothed[r.optimizer] for r in kept])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    start = [r.curve[0] for r in kept if np.isfinite(r.curve[0])]
    low, high = float(values.min()), float(values.max())
    if start:  # a spike of a run that recovered does not set the scale
        high = min(high, 2 * max(abs(x) for x in start))
    if low > 0:
        return low / 1.5, high * 1.3, True
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad, False


def plot_loss_curves(path, results):
    """One panel per task: every optimizer's training loss (seed mean).

    A curve is its exponential moving average (:func:`ema`, time constant 5%
    of the steps), over the raw curve (drawn faintly for the best three); one
    colour map per family; the best three of the panel (by final loss) drawn
    thick and named in its legend; the y-limits set by the runs that did not
    diverge (and by at most twice the initial loss); a diverged run ends in an
    ``x`` where its loss stopped being finite.

    Args:
      path: where to write the PNG.
      results: the runs.

    Returns:
      The :class:`matplotlib.figure.Figure`.
    """
    from matplotlib.lines import Line2D

    tasks = list(dict.fromkeys(r.task for r in results))
    names = list(dict.fromkeys(r.optimizer for r in results))
    styles = line_styles(names)
    cols = min(len(tasks), 4)
    rows = math.ceil(len(tasks) / cols)
    height = 3.9 * rows + 0.45
    fig, axes = report_lib.new_figure((4.8 * cols, height), rows, cols, squeeze=False)
    axes = axes.ravel()
    for ax, task in zip(axes, tasks):
        _loss_panel(ax, [r for r in results if r.task == task], styles)
    for ax in axes[len(tasks) :]:
        ax.axis("off")
    for ax in axes[::cols]:
        ax.set_ylabel("training loss (seed mean)")
    handles = _family_handles(names) + [
        Line2D(
            [],
            [],
            color="0.2",
            marker="x",
            linestyle="",
            markersize=8,
            markeredgewidth=2,
            label="diverged here",
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    report_lib.save_figure(fig, path)
    return fig


def _loss_panel(ax, rows: Sequence[bench.Result], styles: dict) -> None:
    steps = rows[0].curve.shape[0]
    span = max(steps / 20, 1.0)
    smoothed = {r.optimizer: ema(r.curve, span) for r in rows}
    ranked = sorted(rows, key=_score)
    best = [r for r in ranked if math.isfinite(_score(r))][:3]
    limits = _limits(smoothed, rows)
    handles = [None] * len(best)
    for r in reversed(ranked):  # the best drawn last, on top
        color, dashes = styles[r.optimizer]
        top3 = r in best
        if top3:
            raw = np.where(np.isfinite(r.curve), r.curve, np.nan)
            ax.plot(raw, color=color, alpha=0.25, linewidth=0.6, zorder=1)
        (line,) = ax.plot(
            smoothed[r.optimizer],
            dashes,
            color=color,
            linewidth=2.4 if top3 else 1.0,
            zorder=3 if top3 else 2,
        )
        if top3:
            handles[best.index(r)] = line
        if r.diverged:
            _mark_divergence(ax, r, smoothed[r.optimizer], color, limits)
    if limits is not None:
        low, high, log = limits
        if log:
            ax.set_yscale("log")
        ax.set_ylim(low, high)
    seeds = rows[0].final_loss.shape[0]
    ax.set_title(f"{rows[0].task} ({steps} steps, {seeds} seeds)", fontsize=10)
    ax.set_xlabel("step")
    labels = [
        f"{i + 1}. {r.optimizer} {report_lib.format_number(_score(r))}"
        for i, r in enumerate(best)
    ]
    ax.legend(
        handles,
        labels,
        loc="best",
        fontsize=7,
        title="best final loss",
        title_fontsize=7,
        framealpha=0.85,
    )


def _mark_divergence(ax, result, smoothed, color, limits) -> None:
    step = result.diverged_at
    before = smoothed[: max(step, 0)]
    before = before[np.isfinite(before)]
    y = float(before[-1]) if before.size else float("nan")
    if limits is not None:
        low, high, _ = limits
        y = high if not math.isfinite(y) else min(max(y, low), high)
    ax.plot(
        [step],
        [y],
        marker="x",
        color=color,
        markersize=8,
        markeredgewidth=2,
        clip_on=False,
        zorder=4,
    )


def plot_profile(path, results):
    """The performance profile: per optimizer, the fraction of tasks whose
    loss ratio (:func:`loss_ratios`) is at most tau, against tau (log axis).

    Dolan and Moré, Benchmarking optimization software with performance
    profiles, Math. Program. 91, 2002 (as AlgoPerf scores training
    algorithms). Two panels: tau up to 10, and up to the largest ratio. A
    diverged run never counts; an optimizer best everywhere is at 1 from
    tau = 1. The legend is in the order of :func:`summarize`, its first three
    drawn thick.

    Args:
      path: where to write the PNG.
      results: the runs.

    Returns:
      The :class:`matplotlib.figure.Figure`.
    """
    ratios = loss_ratios(results)
    order = [w["optimizer"] for w in summarize(results)]
    styles = line_styles(order)
    finite = [x for t in ratios.values() for x in t.values() if math.isfinite(x)]
    tau_max = max(20.0, 2.0 * max(finite, default=1.0))
    columns = 1 + (len(order) - 1) // 26  # legend columns, 2.1 inches each
    width = 11.5 + 2.1 * columns
    fig, axes = report_lib.new_figure(
        (width, 5.6), 1, 2, layout="constrained", sharey=True
    )
    for name in order:
        mine = np.array([t[name] for t in ratios.values() if name in t])
        taus = np.unique(np.concatenate([[1.0], mine[np.isfinite(mine)], [tau_max]]))
        fraction = [(mine <= tau).mean() for tau in taus]
        color, dashes = styles[name]
        width = 2.6 if name in order[:3] else 1.3
        for ax in axes:
            ax.step(
                taus,
                fraction,
                dashes,
                where="post",
                color=color,
                linewidth=width,
                label=name,
            )
    for ax, right in zip(axes, (10.0, tau_max)):
        ax.axvline(NEAR, color="0.4", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlim(1.0, right)
        ax.set_ylim(-0.02, 1.02)
        if right <= 10:
            ax.grid(True, which="minor", **report_lib.GRID)
        ax.set_xlabel("tau: final loss / best final loss of the task")
    axes[0].set_title("tau up to 10 (dotted: 1.1)", fontsize=10)
    axes[1].set_title(f"tau up to {tau_max:.2g}", fontsize=10)
    axes[0].set_ylabel(f"fraction of the {len(ratios)} tasks within tau of the best")
    fig.suptitle("Performance profile: higher and further left is better")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7, ncol=columns)
    report_lib.save_figure(fig, path)
    return fig


def plot_hyperparams(path, results) -> bool:
    """Rows: tasks; columns: lr, momentum, weight decay of GARO, CLARA, AutoSGM.

    Returns:
      Whether anything was drawn (no figure without a probed optimizer).
    """
    probed = [r for r in results if np.isfinite(r.probes).any()]
    if not probed:
        return False
    tasks = list(dict.fromkeys(r.task for r in probed))
    fig, axes = report_lib.new_figure(
        (13, 2.6 * len(tasks) + 0.6), len(tasks), 3, squeeze=False
    )
    names = list(dict.fromkeys(r.optimizer for r in probed))
    styles = line_styles(names)
    titles = ("learning rate", "momentum", "weight decay")
    for row, task in zip(axes, tasks):
        for r in (r for r in probed if r.task == task):
            color, dashes = styles[r.optimizer]
            for i, ax in enumerate(row):
                values = r.probes[:, i]
                if np.isfinite(values).any():
                    ax.plot(
                        values, dashes, color=color, linewidth=1.0, label=r.optimizer
                    )
        for i, ax in enumerate(row):
            ax.set_title(f"{task}: {titles[i]}", fontsize=9)
        row[0].set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.6 / (2.6 * len(tasks) + 0.6) + 0.02, 1, 1))
    report_lib.save_figure(fig, path)
    return True
