"""``garo-optax bench --claims``: the originals' published experiments at CPU size.

Three experiments, each written as a PNG and a table:

* **AutoSGM numerators** (``claims_autosgm.png``): the constant numerator
  ("Eq. 5", Adam-like) against the "markov" numerator ("Eq. 8") for filter
  zeros :data:`AUTOSGM_ZEROS`, pole 0.9, learning rate 1e-3 and a raised-cosine
  window over the run, on the character-level transformer and the digits MLP;
  one panel per zero, as in the original README's figures. The zero is a
  traced argument, so each numerator compiles once per task.
* **CLARA robustness** (``claims_clara.png``): final training loss against the
  initial learning rate (:data:`CLARA_RATES`, 1e-6 ... 1) of ``optax.sgd``
  against ``clara_sgd`` and ``optax.adam`` against ``adam_clara``, on logistic
  regression (breast_cancer) and the digits MLP. The paper's claim: CLARA's
  result depends far less on the initial rate.
* **GARO against Adam** (``claims_garo.png``): GARO with its initial and its
  shipped controller against ``optax.adam`` and ``optax.adamw`` at their
  default rate, on every task.
"""

import math
import textwrap
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from garo_optax._app import bench, bench_report
from garo_optax._src import autosgm as autosgm_lib
from garo_optax._src import report as report_lib
from garo_optax._src import schedules

AUTOSGM_ZEROS: tuple[float, ...] = (0.0, 0.31, 0.47, 0.55, 0.64, 0.85, 0.9)
AUTOSGM_TASKS: tuple[str, ...] = ("char_transformer", "mlp_digits")
AUTOSGM_NUMERATORS: tuple[str, ...] = ("constant", "markov")
AUTOSGM_LR = 1e-3

CLARA_RATES: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-12, 1))
CLARA_TASKS: tuple[str, ...] = ("logistic_breast_cancer", "mlp_digits")
CLARA_PAIRS: tuple[tuple[str, str], ...] = (
    ("sgd", "clara_sgd"),
    ("adam", "adam_clara"),
)

GARO_OPTIMIZERS: tuple[str, ...] = ("garo", "garo_pretrained", "adam", "adamw")


def _autosgm_build(numerator: str):
    def build(hyperparams, num_steps):
        window = schedules.window_schedule("raised_cosine", length=max(num_steps, 1))
        return autosgm_lib.autosgm(
            hyperparams["lr"],
            pole=0.9,
            zero=hyperparams["zero"],
            numerator=numerator,
            window=window,
        )

    return build


def _runs(task_name, build, num_steps, seeds, values, probe=None):
    """One compilation, then a run per hyperparameter value; final losses."""
    task = bench.TASKS[task_name].build()
    run = bench.make_run(task, build, num_steps, probe)
    keys = bench.seed_keys(seeds)
    to_arrays = lambda v: {k: jnp.float32(x) for k, x in v.items()}
    compiled = run.lower(keys, to_arrays(values[0])).compile(
        compiler_options=bench.compiler_options(task_name)
    )
    out = []
    for value in values:
        result = bench.Run(*[np.asarray(x) for x in compiled(keys, to_arrays(value))])
        out.append(result)
    return out


def autosgm_claim(seeds, steps: dict[str, int], progress=None) -> dict:
    """Loss curves of both numerators at every zero, per task.

    Returns:
      ``{task: {numerator: {zero: {"curve": ..., "final": [...]}}}}``.
    """
    report = {}
    for task in AUTOSGM_TASKS:
        report[task] = {}
        for numerator in AUTOSGM_NUMERATORS:
            values = [{"lr": AUTOSGM_LR, "zero": z} for z in AUTOSGM_ZEROS]
            runs = _runs(task, _autosgm_build(numerator), steps[task], seeds, values)
            report[task][numerator] = {
                z: {
                    "curve": np.mean(bench.inf_if_not_finite(r.losses), axis=0),
                    "final": bench.final_losses(r.losses),
                }
                for z, r in zip(AUTOSGM_ZEROS, runs)
            }
            if progress is not None:
                progress(f"autosgm {task} {numerator}")
    return report


def clara_claim(seeds, steps: dict[str, int], progress=None) -> dict:
    """Final losses over :data:`CLARA_RATES` per task and optimizer.

    Returns:
      ``{task: {optimizer: final losses of shape (rates, seeds)}}``.
    """
    report = {}
    for task in CLARA_TASKS:
        report[task] = {}
        for pair in CLARA_PAIRS:
            for name in pair:
                spec = bench.OPTIMIZERS[name]
                build = lambda hp, n, spec=spec: spec.build(hp["lr"], n)
                values = [{"lr": r} for r in CLARA_RATES]
                runs = _runs(task, build, steps[task], seeds, values)
                report[task][name] = np.stack(
                    [bench.final_losses(r.losses) for r in runs]
                )
                if progress is not None:
                    progress(f"clara {task} {name}")
    return report


def garo_claim(tasks, seeds, steps: dict[str, int], progress=None, workers=2) -> list:
    """GARO (both controllers) against adam and adamw on every task."""
    jobs = [
        dict(task_name=t, optimizer_name=n, seeds=seeds, num_steps=steps[t])
        for t in tasks
        for n in GARO_OPTIMIZERS
    ]
    on_result = None
    if progress is not None:
        on_result = lambda r: progress(f"garo {r.task} {r.optimizer}")
    return bench.run_many(jobs, workers=workers, on_result=on_result)


# ----------------------------------------------------------------------------
# Tables and plots.


def autosgm_table(report: dict) -> str:
    """Mean final loss per zero: constant, markov and which is lower."""
    columns = (
        report_lib.Column("zero", spec=".2f"),
        report_lib.Column("constant"),
        report_lib.Column("markov"),
        report_lib.Column("lower", "<"),
    )
    blocks = [
        "AutoSGM: constant (Eq. 5) vs markov (Eq. 8) numerator, pole 0.9, "
        f"lr {AUTOSGM_LR:g}, raised-cosine window; mean final training loss"
    ]
    for task, by_numerator in report.items():
        rows = []
        for z in AUTOSGM_ZEROS:
            c = float(np.mean(by_numerator["constant"][z]["final"]))
            m = float(np.mean(by_numerator["markov"][z]["final"]))
            rows.append([z, c, m, "markov" if m < c else "constant"])
        blocks.append(_indented(report_lib.format_table(columns, rows, task)))
    return "\n".join(blocks)


def _indented(table: str) -> str:
    """A table nested under its experiment's title."""
    return textwrap.indent(table, "  ")


def clara_spread(final: np.ndarray, rates=CLARA_RATES) -> dict:
    """Summary of a loss-against-rate curve: best, and the width of the range of
    rates within 2x of the best (in decades), from the seed-mean losses."""
    mean = np.mean(final, axis=1)
    best = float(np.min(mean))
    good = np.nonzero(mean <= 2 * best)[0] if math.isfinite(best) else []
    decades = (
        math.log10(rates[good[-1]] / rates[good[0]]) if len(good) else float("nan")
    )
    return {
        "best": best,
        "best_rate": float(rates[int(np.argmin(mean))]),
        "decades_within_2x": decades,
        "good_rates": len(good),
    }


def clara_table(report: dict) -> str:
    """Seed-mean final loss per initial rate and optimizer, then the spreads."""
    columns = [report_lib.Column("lr")]
    columns += [report_lib.Column(report_lib.format_number(r)) for r in CLARA_RATES]
    blocks = [
        "CLARA: final training loss against the initial learning rate "
        "(seed mean), 1e-6 ... 1"
    ]
    for task, by_name in report.items():
        rows = [[name, *np.mean(final, axis=1)] for name, final in by_name.items()]
        lines = [report_lib.format_table(columns, rows, task)]
        for name, final in by_name.items():
            s = clara_spread(final)
            lines.append(
                f"  {name}: best {report_lib.format_number(s['best'])} at lr "
                f"{report_lib.format_number(s['best_rate'])}; "
                f"{s['good_rates']} of {len(CLARA_RATES)} rates within 2x of it "
                f"({s['decades_within_2x']:.1f} decades)"
            )
        blocks.append(_indented("\n".join(lines)))
    return "\n".join(blocks)


def garo_table(results, thresholds) -> str:
    return "GARO against adam and adamw at default rates\n" + bench_report.format_table(
        results, thresholds
    )


def plot_autosgm(path, report: dict) -> None:
    """Loss curves of both numerators: a row per task, a panel per zero."""
    tasks = list(report)
    fig, axes = report_lib.new_figure(
        (2.6 * len(AUTOSGM_ZEROS), 2.6 * len(tasks)),
        len(tasks),
        len(AUTOSGM_ZEROS),
        squeeze=False,
        sharey="row",
    )
    colors = {"constant": "tab:blue", "markov": "tab:red"}
    labels = {"constant": "constant (Eq. 5)", "markov": "markov (Eq. 8)"}
    for row, task in zip(axes, tasks):
        for ax, z in zip(row, AUTOSGM_ZEROS):
            for numerator in AUTOSGM_NUMERATORS:
                curve = report[task][numerator][z]["curve"]
                ax.plot(
                    np.where(np.isfinite(curve), curve, np.nan),
                    color=colors[numerator],
                    linewidth=1.0,
                    label=labels[numerator],
                )
            ax.set_title(f"{task}, zero {z:g}", fontsize=8)
            ax.set_yscale("log")
        row[0].set_ylabel("training loss")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    report_lib.save_figure(fig, path)


def plot_clara(path, report: dict) -> None:
    """Final loss against the initial rate: a row per task, a panel per pair."""
    tasks = list(report)
    fig, axes = report_lib.new_figure(
        (5.2 * len(CLARA_PAIRS), 3.6 * len(tasks)),
        len(tasks),
        len(CLARA_PAIRS),
        layout="tight",
        squeeze=False,
    )
    for row, task in zip(axes, tasks):
        for ax, pair in zip(row, CLARA_PAIRS):
            for name, style in zip(pair, ("o-", "s-")):
                mean = np.mean(report[task][name], axis=1)
                ax.plot(
                    CLARA_RATES,
                    np.where(np.isfinite(mean), mean, np.nan),
                    style,
                    label=name,
                    markersize=3,
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{task}", fontsize=9)
            ax.set_xlabel("initial learning rate")
            ax.legend(fontsize=8)
        row[0].set_ylabel("final training loss")
    report_lib.save_figure(fig, path)


def summarize(autosgm: dict | None, clara: dict | None, garo: Sequence | None) -> dict:
    """The JSON-able summary of the claims."""
    out = {}
    if autosgm is not None:
        out["autosgm"] = {
            task: {
                numerator: {
                    f"{z:g}": [float(x) for x in v["final"]] for z, v in by_z.items()
                }
                for numerator, by_z in by_numerator.items()
            }
            for task, by_numerator in autosgm.items()
        }
    if clara is not None:
        out["clara"] = {
            "rates": list(CLARA_RATES),
            **{
                task: {
                    name: {
                        "final_mean": [
                            float(x) if np.isfinite(x) else None
                            for x in np.mean(final, axis=1)
                        ],
                        **clara_spread(final),
                    }
                    for name, final in by_name.items()
                }
                for task, by_name in clara.items()
            },
        }
    if garo is not None:
        out["garo"] = [r.summary() for r in garo]
    return out
