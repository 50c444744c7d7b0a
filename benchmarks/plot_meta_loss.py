"""Plots meta-training curves from ``metrics.jsonl`` files, one after another.

Each file is a phase (``garo-optax meta-train`` writes one per run); the
phases are drawn end to end on one step axis, the raw meta-loss faint and its
running mean of 50 steps solid, and the per-family meta-losses of the last
file's families in a second panel (running means).

Usage::

  python benchmarks/plot_meta_loss.py OUT.png PHASE.jsonl [PHASE.jsonl ...]
"""

import json
import pathlib
import sys

import numpy as np

from garo_optax._src import report

WINDOW = 50


def _running_mean(x: np.ndarray) -> np.ndarray:
    kernel = np.ones(min(WINDOW, len(x))) / min(WINDOW, len(x))
    return np.convolve(x, kernel, mode="valid")


def main(out: str, *paths: str) -> None:
    phases = [
        [json.loads(line) for line in pathlib.Path(p).read_text().splitlines()]
        for p in paths
    ]
    fig, (left, right) = report.new_figure((13, 4.5), 1, 2, layout="constrained")
    start = 0
    for path, records in zip(paths, phases):
        loss = np.array([r["meta_loss"] for r in records])
        steps = start + np.arange(1, len(loss) + 1)
        (line,) = left.plot(steps, loss, alpha=0.2, lw=0.6)
        smooth = _running_mean(loss)
        left.plot(
            steps[len(steps) - len(smooth) :],
            smooth,
            color=line.get_color(),
            label=pathlib.Path(path).stem,
        )
        start += len(loss)
    left.set(
        xlabel="meta-step",
        ylabel="meta-loss: mean log(loss / first loss)",
        title="meta-loss (running mean of 50)",
    )
    left.legend()
    families = sorted(k for k in phases[-1][0] if k.startswith("meta_loss/"))
    start = 0
    for records in phases:
        steps = start + np.arange(1, len(records) + 1)
        for i, name in enumerate(families):
            values = np.array([r.get(name, np.nan) for r in records])
            smooth = _running_mean(values)
            right.plot(
                steps[len(steps) - len(smooth) :],
                smooth,
                color=f"C{i % 10}",
                label=name.split("/", 1)[1] if records is phases[-1] else None,
            )
        start += len(records)
    right.set(xlabel="meta-step", title="per family (running mean of 50)")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    report.save_figure(fig, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
