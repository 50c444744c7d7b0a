"""Reports of ``garo-optax bench``: the terminal table, JSON, CSV and PNG plots."""

import csv
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from garo_optax._src import bench

CSV_FIELDS = (
    "task",
    "optimizer",
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


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _mean_std(values: np.ndarray) -> str:
    if not np.all(np.isfinite(values)):
        return "diverged"
    return f"{_num(float(np.mean(values)))} ± {_num(float(np.std(values)))}"


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
    header = (
        f"  {'optimizer':<22} {'lr':>8} {'final train loss':>22} "
        f"{'held-out loss':>22} {'steps to thr':>12} {'run s':>7} {'compile s':>9}"
    )
    lines = []
    for task in dict.fromkeys(r.task for r in results):
        rows = [r for r in results if r.task == task]
        steps = rows[0].curve.shape[0]
        seeds = rows[0].final_loss.shape[0]
        lines.append(
            f"{task} ({steps} steps, {seeds} seeds; threshold "
            f"{_num(thresholds.get(task, math.nan))}): "
            f"{bench.TASKS[task].description if task in bench.TASKS else task}"
        )
        lines.append(header)
        for r in rows:
            mark = "*" if best.get(task) == r.optimizer else " "
            eval_mark = (
                "*" if task in best_eval and best_eval[task][0] == r.optimizer else " "
            )
            evaluation = (
                _mean_std(r.eval_loss) if np.isfinite(r.eval_loss).any() else "-"
            )
            if np.isnan(r.eval_loss).all():
                evaluation = "-"
            stt = "-" if r.steps_to_threshold is None else str(r.steps_to_threshold)
            lr = "own" if math.isnan(r.learning_rate) else _num(r.learning_rate)
            lines.append(
                f"{mark} {r.optimizer:<22} {lr:>8} {_mean_std(r.final_loss):>21}"
                f"{mark} {evaluation:>21}{eval_mark} {stt:>12} {r.run_s:>7.2f} "
                f"{r.compile_s:>9.2f}"
            )
        lines.append("")
    lines.append(
        "* best mean final training loss (and held-out loss) of the task; "
        "lr 'own': the optimizer sets its own rate."
    )
    return "\n".join(lines)


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


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            'the bench plots need matplotlib: pip install "garo_optax[bench]"'
        ) from error
    return plt


_GROUP_STYLE = {"optax": "-", "autosgm": "--", "clara": "-.", "garo": "-"}


def plot_loss_curves(path, results) -> None:
    """One panel per task: the seed-averaged training loss of every optimizer."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(r.task for r in results))
    cols = min(len(tasks), 4)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False
    )
    cmap = plt.get_cmap("tab20")
    names = list(dict.fromkeys(r.optimizer for r in results))
    colors = {n: cmap(i % 20) for i, n in enumerate(names)}
    for ax, task in zip(axes.flat, tasks):
        for r in (r for r in results if r.task == task):
            group = bench.OPTIMIZERS[r.optimizer].group
            ax.plot(
                np.where(np.isfinite(r.curve), r.curve, np.nan),
                _GROUP_STYLE[group],
                color="black"
                if group == "garo" and "pretrained" in r.optimizer
                else colors[r.optimizer],
                linewidth=2.0 if group == "garo" else 1.0,
                label=r.optimizer,
            )
        ax.set_yscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("training loss (seed mean)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=6,
        fontsize=8,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(names) / 6), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hyperparams(path, results) -> bool:
    """Rows: tasks; columns: lr, momentum, weight decay of GARO, CLARA, AutoSGM.

    Returns:
      Whether anything was drawn (no figure without a probed optimizer).
    """
    probed = [r for r in results if np.isfinite(r.probes).any()]
    if not probed:
        return False
    plt = _pyplot()
    tasks = list(dict.fromkeys(r.task for r in probed))
    fig, axes = plt.subplots(
        len(tasks), 3, figsize=(13, 2.6 * len(tasks)), squeeze=False
    )
    cmap = plt.get_cmap("tab10")
    names = list(dict.fromkeys(r.optimizer for r in probed))
    colors = {n: cmap(i % 10) for i, n in enumerate(names)}
    titles = ("learning rate", "momentum", "weight decay")
    for row, task in zip(axes, tasks):
        for r in (r for r in probed if r.task == task):
            for i, ax in enumerate(row):
                values = r.probes[:, i]
                if np.isfinite(values).any():
                    ax.plot(
                        values,
                        color=colors[r.optimizer],
                        linewidth=1.0,
                        label=r.optimizer,
                    )
        for i, ax in enumerate(row):
            ax.set_title(f"{task}: {titles[i]}", fontsize=9)
            ax.grid(alpha=0.3)
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
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
