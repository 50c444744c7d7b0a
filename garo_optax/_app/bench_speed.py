"""``garo-optax bench --speed``: per-step time of every registered optimizer.

Every optimizer of :data:`garo_optax._app.bench.OPTIMIZERS` (at its default
rate; schedules over 10,000 steps) runs its jitted, donated step on the
transformer-shaped trees of :mod:`garo_optax._app.step_time` (1M, 10M and 100M
parameters), interleaved round-robin in one process together with a jitted
in-place copy ``a = a + s * c`` that measures the memory bandwidth in the same
run. Reported per optimizer: the median step time, its ratio to ``optax.adam``
and to ``optax.sgd`` of the same run, and the fraction of the bandwidth floor
reached. The floor is the compulsory traffic of one step: read the gradient,
read and write the parameters and every parameter-sized state array, in the
dtypes they have (12 bytes per float32 parameter for SGD, 28 for Adam).
"""

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax._app import bench, bench_report, step_time
from garo_optax._src import report as report_lib

SPEED_STEPS = 10_000  # the horizon of schedules (warmup-cosine, windows).
REFERENCES = ("adam", "sgd")  # timed in every group


def floor_bytes_per_param(tx, params) -> float:
    """Compulsory bytes of one step per parameter.

    Reads of the gradient and the parameters, the write of the parameters, and
    a read and a write of every optimizer-state array at least as large as the
    smallest parameter leaf that is not a scalar (per-leaf scalars are noise).

    Args:
      tx: the optimizer.
      params: the parameter tree.

    Returns:
      The bytes per parameter.
    """
    leaves = jax.tree.leaves(params)
    n = sum(x.size for x in leaves)
    param_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
    smallest = min((x.size for x in leaves if x.size > 1), default=1)
    state = jax.tree.leaves(jax.eval_shape(tx.init, params))
    state_bytes = sum(
        np.prod(s.shape, dtype=np.int64) * s.dtype.itemsize
        for s in state
        if np.prod(s.shape, dtype=np.int64) >= smallest
    )
    # g read, p read and written; each state array read and written.
    return (3 * param_bytes + 2 * state_bytes) / n


def with_constant_value(tx) -> optax.GradientTransformation:
    """``tx`` with ``value=1.0`` passed to every update (reduce-on-plateau and
    GARO read the loss; the timed step has none)."""
    tx = optax.with_extra_args_support(tx)
    value = jnp.float32(1.0)
    return optax.GradientTransformation(
        tx.init,
        lambda updates, state, params=None: tx.update(
            updates, state, params, value=value
        ),
    )


def _memory_budget() -> int:
    """Bytes the optimizers of one round-robin group may hold: 40% of RAM."""
    try:
        return int(0.4 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def groups(names, resident_bytes, budget, references=REFERENCES):
    """Splits ``names`` into round-robin groups that fit in ``budget`` bytes.

    Every group also holds the ``references``, so that each ratio is taken
    between steps timed in the same rounds.

    Args:
      names: the optimizers to time.
      resident_bytes: name -> bytes its parameters copy and state hold.
      budget: the bytes one group may hold.
      references: names timed in every group.

    Returns:
      A list of lists of names, each starting with the references.
    """
    fixed = sum(resident_bytes[r] for r in references)
    out, current, used = [], [], fixed
    for name in names:
        if name in references:
            continue
        if current and used + resident_bytes[name] > budget:
            out.append([*references, *current])
            current, used = [], fixed
        current.append(name)
        used += resident_bytes[name]
    if current or not out:
        out.append([*references, *current])
    return out


def run_speed(
    optimizers: Sequence[str],
    sizes: Sequence[str],
    *,
    rounds: int,
    bandwidth_bytes: int = step_time.BANDWIDTH_BYTES,
    warmup: int = 2,
    memory_budget: int | None = None,
    progress=None,
) -> dict:
    """Times ``optimizers`` (names of the bench registry) at every size.

    Where all the optimizers' copies of the parameters and states do not fit in
    ``memory_budget`` at once (100M parameters), they are timed in groups, each
    with ``optax.adam`` and ``optax.sgd`` in the same rounds; the ratios are
    taken within the group.

    Args:
      optimizers: names of :data:`garo_optax._app.bench.OPTIMIZERS`.
      sizes: keys of :data:`garo_optax._app.step_time.SIZES`.
      rounds: timed round-robin rounds.
      bandwidth_bytes: the size of each array of the bandwidth probe.
      warmup: untimed calls of every step before the rounds.
      memory_budget: bytes one group may hold (default: 40% of the RAM).
      progress: ``progress(i, size)`` after each size, or None.

    Returns:
      ``{"environment": ..., "sizes": {size: result}}``, each result as
      :func:`garo_optax._app.step_time.measure` returns it (the references and
      the bandwidth from the first group), with ``ratio_adam``, ``ratio_sgd``
      and ``group`` per optimizer.
    """
    budget = _memory_budget() if memory_budget is None else memory_budget
    report = {"environment": step_time.environment(), "sizes": {}}
    for i, size in enumerate(sizes):
        d, vocab = step_time.SIZES[size]
        params = step_time.transformer_params(d, vocab)
        param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))

        def build(name):
            spec = bench.OPTIMIZERS[name]
            return with_constant_value(spec.build(spec.default_lr or 0.0, SPEED_STEPS))

        names = list(dict.fromkeys([*REFERENCES, *optimizers]))
        resident = {}
        for name in names:
            state = jax.eval_shape(build(name).init, params)
            resident[name] = param_bytes + sum(
                np.prod(s.shape, dtype=np.int64) * s.dtype.itemsize
                for s in jax.tree.leaves(state)
            )
        merged = None
        for g, group in enumerate(groups(names, resident, budget - param_bytes)):
            txs = {name: build(name) for name in group}
            floors = {n: floor_bytes_per_param(tx, params) for n, tx in txs.items()}
            result = step_time.measure(
                txs,
                params,
                rounds,
                bandwidth_bytes=bandwidth_bytes,
                bytes_per_param=floors,
                warmup=warmup,
            )
            opts = result["optimizers"]
            for name, entry in opts.items():
                entry["ratio_adam"] = entry["median_ms"] / opts["adam"]["median_ms"]
                entry["ratio_sgd"] = entry["median_ms"] / opts["sgd"]["median_ms"]
                entry["group"] = g
            if merged is None:
                merged = result
            else:
                for name in group[len(REFERENCES) :]:
                    merged["optimizers"][name] = opts[name]
            del txs
        merged["groups"] = g + 1
        del params
        report["sizes"][size] = merged
        if progress is not None:
            progress(i + 1, size)
    return report


_SPEED_COLUMNS = (
    report_lib.Column("optimizer", "<"),
    report_lib.Column("median ms", spec=".2f"),
    report_lib.Column("/ adam", spec=".2f"),
    report_lib.Column("/ sgd", spec=".2f"),
    report_lib.Column("floor B/p", spec=".1f"),
    report_lib.Column("of floor", spec=".2f"),
    report_lib.Column("compile s", spec=".2f"),
)


def format_speed(report: dict) -> str:
    """The speed table, one block per size."""
    blocks = []
    for size, result in report["sizes"].items():
        title = (
            f"{size}: {result['num_params'] / 1e6:.1f}M params, "
            f"{result['num_leaves']} leaves, {result['rounds']} rounds, "
            f"{result.get('groups', 1)} group(s), "
            f"bandwidth {result.get('bandwidth_gbs', float('nan')):.1f} GB/s"
        )
        rows = [
            [
                name,
                e["median_ms"],
                e["ratio_adam"],
                e["ratio_sgd"],
                e.get("bytes_per_param", float("nan")),
                e.get("floor_fraction", float("nan")),
                e["compile_s"],
            ]
            for name, e in result["optimizers"].items()
        ]
        blocks.append(report_lib.format_table(_SPEED_COLUMNS, rows, title) + "\n")
    return "\n".join(blocks)


# --- Compile time against the number of leaves (issue 16). ---

COMPILE_LEAVES = (52, 260, 1000)
COMPILE_FAMILIES = ("clara", "autosgm", "garo")


def _compile_extras() -> dict:
    """Public configurations the registry does not hold (every CLARA
    normalization and every AutoSGM numerator)."""
    import garo_optax as g

    extras = {
        "clara_sgd_global": lambda: g.clara_sgd(1e-2, normalize="global"),
        "scale_by_clara": lambda: optax.chain(
            optax.scale_by_adam(),
            g.scale_by_clara(1e-3),
            optax.scale_by_learning_rate(1.0),
        ),
    }
    for numerator in ("chebyshev_scalar", "max_bound", "markov", "chebyshev"):
        extras[f"autosgm_{numerator}"] = lambda n=numerator: g.autosgm(
            1e-3, numerator=n
        )
    return extras


def compile_optimizers() -> dict:
    """name -> ``build()`` of every transform the compile table times:
    ``optax.adam`` and ``optax.sgd``, the registry's CLARA, AutoSGM and GARO
    entries, and :func:`_compile_extras`."""
    builds = {}
    for name, spec in bench.OPTIMIZERS.items():
        if name in REFERENCES or spec.group in COMPILE_FAMILIES:
            builds[name] = lambda spec=spec: spec.build(
                spec.default_lr or 0.0, SPEED_STEPS
            )
    return {**builds, **_compile_extras()}


def run_compile(
    optimizers: Sequence[str] | None = None,
    leaves: Sequence[int] = COMPILE_LEAVES,
    *,
    size: int = 1000,
    progress=None,
) -> dict:
    """First-call compile time of every step against the number of leaves.

    Each optimizer's jitted, donated step
    (:func:`garo_optax._app.step_time.compile_profile`) is compiled on a dict
    of ``n`` float32 vectors of ``size`` elements, for every ``n`` in
    ``leaves``. ``optax.adam`` is compiled again before every optimizer, and
    each ratio is taken to the mean of the two adam compiles around it, so
    that ratios hold on a busy machine.

    Args:
      optimizers: names of :func:`compile_optimizers` (``None``: all).
      leaves: the leaf counts.
      size: elements per leaf.
      progress: ``progress(i, text)`` after each compile, or None.

    Returns:
      ``{"environment": ..., "size": size, "leaves": {n: {name: entry}}}``,
      each entry with ``compile_s``, ``instructions`` and ``ratio_adam``.
    """
    builds = compile_optimizers()
    names = list(dict.fromkeys([*REFERENCES, *(optimizers or builds)]))
    unknown = sorted(set(names) - set(builds))
    if unknown:
        raise ValueError(f"unknown optimizers {unknown}; known: {sorted(builds)}")
    report = {"environment": step_time.environment(), "size": size, "leaves": {}}
    done = 0
    for n in leaves:
        adam = step_time.compile_profile(builds["adam"](), n, size)
        entries = {"adam": dict(adam, ratio_adam=1.0)}
        for name in names:
            if name == "adam":
                continue
            entry = step_time.compile_profile(builds[name](), n, size)
            after = step_time.compile_profile(builds["adam"](), n, size)
            reference = 0.5 * (adam["compile_s"] + after["compile_s"])
            entry["ratio_adam"] = entry["compile_s"] / reference
            entries[name] = entry
            adam = after
            done += 1
            if progress is not None:
                progress(done, f"{n} leaves: {name}")
        report["leaves"][str(n)] = entries
    return report


def format_compile(report: dict) -> str:
    """The compile table: seconds, ratio to ``optax.adam`` and HLO
    instructions per leaf count."""
    leaves = list(report["leaves"])
    names = list(dict.fromkeys(k for n in leaves for k in report["leaves"][n]))
    columns = [report_lib.Column("optimizer", "<")]
    for n in leaves:
        columns += [
            report_lib.Column(f"{n} leaves", spec=".2f"),  # seconds
            report_lib.Column("/ adam"),
            report_lib.Column("HLO"),
        ]
    rows = []
    for name in names:
        row = [name]
        for n in leaves:
            e = report["leaves"][n].get(name)
            row += (
                ["", "", ""]
                if e is None
                else [e["compile_s"], f"{e['ratio_adam']:.2f}x", e["instructions"]]
            )
        rows.append(row)
    title = (
        f"compile time of the jitted step, {report['size']} float32 per leaf "
        "(seconds, / optax.adam, HLO instructions)"
    )
    return report_lib.format_table(columns, rows, title) + "\n"


def plot_compile(path, report: dict) -> None:
    """Compile seconds against leaves, one line per optimizer (log-log).

    One colour map per family (:func:`garo_optax._app.bench_report.line_styles`),
    so that 20 lines stay tellable apart; the optax references in black.
    """
    leaves = [int(n) for n in report["leaves"]]
    names = list(dict.fromkeys(k for v in report["leaves"].values() for k in v))
    styles = bench_report.line_styles([n for n in names if n not in REFERENCES])
    fig, ax = report_lib.new_figure((9, 6))
    for name in names:
        seconds = [
            report["leaves"][str(n)].get(name, {}).get("compile_s", np.nan)
            for n in leaves
        ]
        if name in REFERENCES:
            style = dict(lw=3, color="black", ls="-" if name == "adam" else "--")
        else:
            color, dashes = styles[name]
            style = dict(color=color, ls=dashes)
        ax.plot(leaves, seconds, marker="o", label=name, **style)
    ax.set(xscale="log", yscale="log", xlabel="leaves", ylabel="compile seconds")
    ax.set_title("First-call compile time of the jitted step (black: optax)")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    report_lib.save_figure(fig, path, bbox_inches="tight")


def write_compile(out, leaves, optimizers=None, progress=None) -> str:
    """Runs :func:`run_compile` and writes ``compile.txt``, ``compile.json`` and
    ``compile.png`` into the folder ``out``; returns the table."""
    import json
    import pathlib

    out = pathlib.Path(out)
    known = compile_optimizers()
    chosen = None if optimizers is None else [n for n in optimizers if n in known]
    report = run_compile(chosen, [int(n) for n in leaves], progress=progress)
    table = format_compile(report)
    (out / "compile.txt").write_text(table)
    (out / "compile.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_compile(out / "compile.png", report)
    return table
