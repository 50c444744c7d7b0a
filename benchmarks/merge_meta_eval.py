"""A new controller's rows merged into a full ``garo-optax meta-eval`` run.

A full meta-eval (every family at three loss scales, the 7-point sweeps of
four baselines and ten tuning-free peers) takes about 85 minutes on 2 CPU
cores; the baselines and peers do not depend on the controller. This script
takes the ``meta_eval.json`` of a full run and that of a run of the new
controller without sweeps or peers (``garo-optax meta-eval --controller NEW
--no-sweep --peers``), checks that the runs share their tasks (the default-rate
``adam`` and ``sgd`` rows must agree), replaces the trained controller's row of the
full run by the new run's (the meta-initial controller and ``garo-v1`` are the
same in both), and recomputes the summary (within 10% of the best-swept
``adam``, no worse than the median peer, the "one good default" rates) from
the merged rows.

Usage::

  python benchmarks/merge_meta_eval.py FULL.json NEW.json OUT_DIR

writes ``OUT_DIR/merged.json`` and ``OUT_DIR/merged.txt``.
"""

import json
import pathlib
import sys

import numpy as np

from garo_optax.meta import _evaluate

GARO_ROWS = ("garo_trained",)  # garo_init and garo_v1 do not depend on it
CHECKED = ("adam", "sgd")


def _rows(family: dict) -> dict:
    return {r["optimizer"]: r for r in family["rows"]}


def _same(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-5 * max(1.0, abs(a))


def merge(full: dict, new: dict) -> dict:
    """The full report with ``new``'s GARO rows and a recomputed summary."""
    merged = {**full, "controller": new["controller"], "families": {}}
    for label, family in full["families"].items():
        old, fresh = _rows(family), _rows(new["families"][label])
        for name in CHECKED:
            a, b = old[name]["final_loss"], fresh[name]["final_loss"]
            if not _same(a, b):
                raise ValueError(f"{label}: {name} differs ({a} vs {b}): other tasks")
        rows = [
            fresh[r["optimizer"]] if r["optimizer"] in GARO_ROWS else r
            for r in family["rows"]
        ]
        merged["families"][label] = {**family, "rows": rows}
    merged["summary"] = summarize(merged)
    return merged


def summarize(report: dict) -> dict:
    """:func:`garo_optax.meta._evaluate.summarize` of a report's rows and sweeps."""
    families = {
        label: {
            r["optimizer"]: _evaluate.Curve(
                losses=np.empty(0),
                final_loss=r["final_loss"],
                eval_loss=r["eval_loss"],
                learning_rate=r["learning_rate"],
                sweep=tuple(map(tuple, family["sweep"].get(r["optimizer"], ()))),
            )
            for r in family["rows"]
        }
        for label, family in report["families"].items()
    }
    return _evaluate.summarize(families, report["peers"])


def main(full_path: str, new_path: str, out: str) -> None:
    full = json.loads(pathlib.Path(full_path).read_text())
    new = json.loads(pathlib.Path(new_path).read_text())
    merged = merge(full, new)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "merged.json").write_text(json.dumps(merged, indent=1) + "\n")
    tables = [
        _evaluate.format_table(f"{label} ({f['steps']} steps)", f["rows"])
        for label, f in merged["families"].items()
    ]
    tables.append(_evaluate.format_summary(merged["summary"]))
    (out / "merged.txt").write_text("\n\n".join(tables) + "\n")
    print(tables[-1])


if __name__ == "__main__":
    main(*sys.argv[1:])
