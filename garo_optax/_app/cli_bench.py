"""``garo-optax bench``: every optimizer on every task, with a table and plots.

Without a mode flag it runs the quality suite (:mod:`garo_optax._app.bench`)
and writes, into ``--out``:

* ``summary.txt``, ``summary.json``: one row per optimizer over all tasks
  (median loss ratio to the best of each task, tasks within 10% of the best,
  wins, divergences, run time relative to ``adam``), best first; printed last;
* ``bench.txt``: the summary, then the per-task tables printed before it;
* ``bench.json``: the per-task summaries, the seed-averaged loss curves and
  the hyperparameter trajectories;
* ``bench.csv``: one row per task and optimizer;
* ``profile.png``: the performance profile (fraction of tasks within a
  factor tau of the best final loss, against tau);
* ``loss_curves.png``: a panel per task, a colour per optimizer family;
* ``hyperparams.png``: the lr, momentum and weight decay of GARO, CLARA and
  AutoSGM over the steps.

Compiled programs are kept in JAX's persistent compilation cache,
``--cache-dir`` (default ``$XDG_CACHE_HOME/garo_optax/jax``, else
``~/.cache/garo_optax/jax``), so a repeat run compiles nothing; ``--no-cache``
turns it off.

``--speed`` times every optimizer's step instead (``speed.txt``,
``speed.json``); ``--claims`` runs the originals' experiments
(``claims.txt``, ``claims.json``, ``claims_*.png``). Bad input ends with a
one-line error and exit code 1 or 2.
"""

import argparse
import json
import os
import pathlib
import sys
import time

from garo_optax._app import bench
from garo_optax._app.progress import ProgressLine

QUICK_SEEDS = 2
DEFAULT_SEEDS = 3


def _check_names(kind: str, names, allowed) -> list[str]:
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(
            f"unknown {kind} {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(allowed)}"
        )
    return list(dict.fromkeys(names))


def _out_dir(path: str) -> pathlib.Path:
    out = pathlib.Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"--out {str(out)!r} is not writable: {error}") from None
    return out


def _check_dependencies(task_names) -> None:
    """One-line errors for missing extras, before any long run starts."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(
            'the bench plots need matplotlib: pip install "garo_optax[bench]"'
        ) from None
    for name in task_names:
        try:
            bench.TASKS[name].build()
        except ImportError as error:
            raise ValueError(
                f"task {name!r} needs a missing package ({error}); "
                'pip install "garo_optax[bench]"'
            ) from None


def _selection(args) -> tuple[list[str], list[str], list[int], dict[str, int]]:
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be a positive integer, got {args.seeds}")
    default_tasks = bench.QUICK_TASKS if args.quick else tuple(bench.TASKS)
    tasks = _check_names("task", args.tasks or default_tasks, tuple(bench.TASKS))
    optimizers = _check_names(
        "optimizer", args.optimizers or tuple(bench.OPTIMIZERS), tuple(bench.OPTIMIZERS)
    )
    num_seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    steps = {
        t: args.steps
        or (bench.TASKS[t].quick_steps if args.quick else bench.TASKS[t].steps)
        for t in tasks
    }
    return tasks, optimizers, list(range(num_seeds)), steps


def _workers() -> int:
    """Compilation threads: one per core this process may use (at least 1)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_cache_dir() -> pathlib.Path:
    """The user's cache folder for compiled programs."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "garo_optax" / "jax"


def _cache_dir(args) -> pathlib.Path | None:
    """The cache folder, created; ``None`` with ``--no-cache`` or when the
    default one cannot be created."""
    if args.no_cache:
        return None
    path = pathlib.Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if args.cache_dir:
            raise ValueError(
                f"--cache-dir {str(path)!r} is not writable: {error}"
            ) from None
        _say(args, f"no compilation cache ({error})")
        return None
    return path


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def bench_command(args: argparse.Namespace) -> int:
    """Runs ``garo-optax bench`` (see the module docstring)."""
    modes = sum(map(bool, (args.speed, args.claims)))
    if modes > 1:
        raise ValueError("--speed and --claims are separate runs; pick one")
    if args.speed:
        return _speed(args)
    tasks, optimizers, seeds, steps = _selection(args)
    out = _out_dir(args.out)
    cache = _cache_dir(args)
    if args.claims:
        with bench.compilation_cache(cache):
            return _claims(args, out, tasks, seeds, steps)
    _check_dependencies(tasks)

    from garo_optax._app import bench_report

    total = len(tasks) * len(optimizers)
    progress = None if args.quiet else ProgressLine(total, every=max(total // 20, 1))
    start = time.perf_counter()
    jobs = [
        dict(
            task_name=task,
            optimizer_name=name,
            seeds=seeds,
            num_steps=steps[task],
            sweep=args.sweep,
        )
        for task in tasks
        for name in optimizers
    ]
    done = [0]

    def report(result):
        done[0] += 1
        if progress is not None:
            progress.update(done[0], f"{result.task} {result.optimizer}")

    with bench.compilation_cache(cache):
        results = bench.run_many(jobs, workers=_workers(), on_result=report)
    thresholds = bench.add_thresholds(results)
    table = bench_report.format_table(results, thresholds)
    rows = bench_report.summarize(results)
    summary = bench_report.format_summary(rows, tasks)
    wall = time.perf_counter() - start
    meta = {
        "command": "garo-optax bench " + " ".join(args.argv),
        "seeds": seeds,
        "steps": steps,
        "sweep": args.sweep,
        "wall_s": wall,
        "compile_cache": None if cache is None else str(cache),
    }
    timing = f"wall time {wall:.0f} s"
    print(f"{table}\n\n{summary}\n\n{timing}")
    (out / "bench.txt").write_text(f"{summary}\n\n{table}\n\n{timing}\n")
    (out / "summary.txt").write_text(f"{summary}\n")
    summary_meta = {k: meta[k] for k in ("command", "seeds", "steps", "sweep")}
    bench_report.write_summary(out / "summary.json", rows, summary_meta)
    bench_report.write_json(out / "bench.json", results, thresholds, meta)
    bench_report.write_csv(out / "bench.csv", results)
    bench_report.plot_profile(out / "profile.png", results)
    bench_report.plot_loss_curves(out / "loss_curves.png", results)
    written = ["bench.txt", "summary.txt", "summary.json", "bench.json"]
    written += ["bench.csv", "profile.png", "loss_curves.png"]
    if bench_report.plot_hyperparams(out / "hyperparams.png", results):
        written.append("hyperparams.png")
    _say(args, f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


def _speed(args) -> int:
    from garo_optax._app import bench_speed, step_time

    optimizers = _check_names(
        "optimizer", args.optimizers or tuple(bench.OPTIMIZERS), tuple(bench.OPTIMIZERS)
    )
    sizes = _check_names("size", args.sizes, tuple(step_time.SIZES))
    if args.rounds < 1:
        raise ValueError(f"--rounds must be a positive integer, got {args.rounds}")
    out = _out_dir(args.out)
    if args.compile_leaves:  # compile time against leaves instead (issue 16)
        print(bench_speed.write_compile(out, args.compile_leaves, args.optimizers))
        _say(args, f"wrote {out / 'compile.txt'}, compile.json, compile.png")
        return 0
    progress = None if args.quiet else ProgressLine(len(sizes), every=1)
    report = bench_speed.run_speed(
        optimizers,
        sizes,
        rounds=args.rounds,
        progress=None if progress is None else (lambda i, s: progress.update(i, s)),
    )
    report["command"] = "garo-optax bench " + " ".join(args.argv)
    table = bench_speed.format_speed(report)
    print(table)
    (out / "speed.txt").write_text(table)
    (out / "speed.json").write_text(json.dumps(report, indent=1) + "\n")
    _say(args, f"wrote {out / 'speed.txt'}, {out / 'speed.json'}")
    return 0


def _claims(args, out, tasks, seeds, steps) -> int:
    from garo_optax._app import bench_claims as claims
    from garo_optax._app import bench_report

    needed = set(tasks) | set(claims.AUTOSGM_TASKS) | set(claims.CLARA_TASKS)
    _check_dependencies(sorted(needed))
    claim_steps = {
        t: args.steps
        or (bench.TASKS[t].quick_steps if args.quick else bench.TASKS[t].steps)
        for t in needed
    }
    total = (
        len(claims.AUTOSGM_TASKS) * len(claims.AUTOSGM_NUMERATORS)
        + len(claims.CLARA_TASKS) * 2 * len(claims.CLARA_PAIRS)
        + len(tasks) * len(claims.GARO_OPTIMIZERS)
    )
    bar = None if args.quiet else ProgressLine(total, every=1)
    done = [0]

    def progress(text):
        done[0] += 1
        if bar is not None:
            bar.update(done[0], text)

    autosgm = claims.autosgm_claim(seeds, claim_steps, progress)
    clara = claims.clara_claim(seeds, claim_steps, progress)
    garo = claims.garo_claim(tasks, seeds, claim_steps, progress, _workers())
    thresholds = bench.add_thresholds(garo)
    text = "\n\n".join(
        (
            claims.autosgm_table(autosgm),
            claims.clara_table(clara),
            claims.garo_table(garo, thresholds),
        )
    )
    print(text)
    (out / "claims.txt").write_text(text + "\n")
    summary = claims.summarize(autosgm, clara, garo)
    summary["command"] = "garo-optax bench " + " ".join(args.argv)
    summary["seeds"], summary["steps"] = seeds, claim_steps
    (out / "claims.json").write_text(json.dumps(summary, indent=1) + "\n")
    claims.plot_autosgm(out / "claims_autosgm.png", autosgm)
    claims.plot_clara(out / "claims_clara.png", clara)
    bench_report.plot_loss_curves(out / "claims_garo.png", garo)
    _say(args, f"wrote claims.txt, claims.json and claims_*.png in {out}")
    return 0


ARGUMENTS = (
    (("--quick",), dict(action="store_true", help="4 tasks, short runs, 2 seeds")),
    (("--tasks",), dict(nargs="+", default=None, help="default: all")),
    (("--optimizers",), dict(nargs="+", default=None, help="default: all")),
    (("--seeds",), dict(type=int, default=None, help="seeds per task (default 3)")),
    (("--steps",), dict(type=int, default=None, help="steps of every task")),
    (
        ("--sweep",),
        dict(action="store_true", help="best of a 7-point lr grid (not the peers)"),
    ),
    (("--speed",), dict(action="store_true", help="per-step time vs optax")),
    (("--sizes",), dict(nargs="+", default=["1M", "10M", "100M"], help="--speed")),
    (("--rounds",), dict(type=int, default=10, help="--speed rounds (10)")),
    (
        ("--compile-leaves",),
        dict(type=int, nargs="+", default=None, help="--speed: compile s vs leaves"),
    ),
    (("--claims",), dict(action="store_true", help="the originals' experiments")),
    (("--out",), dict(default="bench-results", help="output folder")),
    (
        ("--cache-dir",),
        dict(default=None, help="compiled programs (~/.cache/garo_optax/jax)"),
    ),
    (("--no-cache",), dict(action="store_true", help="compile everything anew")),
    (("--quiet",), dict(action="store_true", help="no progress output")),
)
"""The arguments of ``garo-optax bench`` as ``(flags, kwargs)`` pairs."""
