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
import math
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


def summarize(report: dict, reference: str = "adam_swept") -> dict:
    """:func:`garo_optax.meta._evaluate.summarize`'s counts, from the rows."""
    families = list(report["families"].values())
    peers = report["peers"]
    tolerance = _evaluate.TOLERANCE
    bests = [_rows(f)[reference]["final_loss"] for f in families]
    sweeps = [f["sweep"]["adam_swept"] for f in families]
    rates = [
        {
            "learning_rate": rate,
            "within": sum(
                int(_evaluate.within(s[i][1], best, tolerance))
                for s, best in zip(sweeps, bests)
            ),
        }
        for i, (rate, _) in enumerate(sweeps[0])
    ]
    bars = [
        float(np.median([_rows(f)[p]["final_loss"] for p in peers])) for f in families
    ]
    rows = []
    for name in _rows(families[0]):
        losses = [
            _rows(f).get(name, {"final_loss": math.inf})["final_loss"] for f in families
        ]
        rows.append(
            {
                "optimizer": name,
                "within": sum(
                    int(_evaluate.within(x, b, tolerance))
                    for x, b in zip(losses, bests)
                ),
                "vs_median_peer": sum(int(x <= bar) for x, bar in zip(losses, bars)),
            }
        )
    return {
        "families": len(families),
        "reference": reference,
        "tolerance": tolerance,
        "peers": peers,
        "default_rates": rates,
        "optimizers": rows,
    }


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
