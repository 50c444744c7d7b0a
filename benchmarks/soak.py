"""Soak benchmark: every garo_optax transform on long runs, against optax.adam.

Each public transform, in the configurations of the conformance suite (CLARA
and its seed variants, AutoSGM, GARO: `registry.CONFORMANCE` of the optimizer
registry `garo_optax/_app/registry.py`, whose factories and options the soak
takes) plus `optax.adam` (the reference of every ratio) and `optax.sgd`, trains
two fixed problems for many steps:

* `noisy_quadratic`: the noisy quadratic model of `garo_optax.meta`
  (`noisy_quadratic_family`) with its config set outright: 100 dimensions,
  curvatures log-spaced on [1e-4, 1] (condition number 1e4), noise scale 0.3,
  batch 16; the gradient noise comes from a PRNG key folded with the step.
  100,000 steps by default.
* `mlp_digits`: the digits MLP of `garo-optax bench` (64-64 relu, batch 128,
  sampled inside jit; 8,970 params). 20,000 steps by default.

Every run is a jitted `lax.scan` in chunks of `--chunk` steps (default 5,000):
one compiled call per chunk, the same compiled function reused (plus one for a
remainder), so no per-step history is kept. The carry tracks, at every step,

* whether every value stayed finite: the loss, the gradient, the updates, the
  new parameters and every inexact leaf of the new optimizer state, and the
  first step (0-based; the step whose loss, gradient or update was computed)
  at which one was not;
* the smallest and largest value of each scalar hyperparameter the state
  holds, `garo_optax.hyperparams(state)`: lr, momentum and weight decay for
  GARO (per-tensor GARO holds one per leaf), lr for CLARA and AutoSGM
  (AutoSGM's `lr` is one per leaf); min and max over leaves and
  steps. The initial state counts too, except AutoSGM's, whose `lr` is 0 until
  the first step;
* the training loss at step 0 and its mean over the last chunk.

The `loss` columns are the evaluation loss before and after the run (the
noise-free loss for the quadratic, the held-out cross-entropy for the MLP);
`train` is the mean training loss over the last chunk.

Memory: `jax.jit(chunk).lower(...).compile().memory_analysis()` of one chunk
(carry donated): argument + output - aliased + temporary bytes, and its ratio
to `optax.adam`'s on the same problem. Time: wall seconds per 1,000 steps
(compiled calls only, each ended by `block_until_ready`), as a ratio to
`optax.adam`'s; the transforms run chunk by chunk round-robin in one process,
so that all of them see the same machine load (absolute times drift by about
+-30% on shared machines; the ratios still moved by up to 0.2 between two full
runs). On these small problems a step is overhead-bound: the time ratios
measure per-leaf overhead, not bandwidth (see `benchmarks/step_time.py`).

Run it from the repository root (6 to 10 minutes on 2 CPU cores, 2 to 4 of them
compiling; `--only` runs a subset, always with `adam`; the last full table is
`docs/soak.txt`):

    python benchmarks/soak.py --out /tmp/soak
    python benchmarks/soak.py --quadratic-steps 5000 --mlp-steps 5000 --only garo
"""

import argparse
import dataclasses
import json
import math
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

try:
    import garo_optax
except ImportError:  # Run from a checkout without installing the package.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import garo_optax
from garo_optax import meta
from garo_optax._app import bench as bench_lib
from garo_optax._app import registry
from garo_optax._app.step_time import environment

QUADRATIC_STEPS = 100_000
MLP_STEPS = 20_000
CHUNK = 5_000
REFERENCE = "adam"
HYPERPARAMS = ("lr", "mom", "wd")

# ----------------------------------------------------------------------------
# The problems.


class Problem(NamedTuple):
    """A fixed training problem: a :class:`garo_optax.meta.Task` and a seed."""

    name: str
    task: meta.Task
    seed: int = 0


def noisy_quadratic(
    dim: int = 100,
    condition: float = 1e4,
    noise_scale: float = 0.3,
    batch_size: int = 16,
) -> Problem:
    """The noisy quadratic model with curvatures log-spaced on [1/condition, 1]."""
    family = meta.noisy_quadratic_family(dim=dim, batch_size=batch_size)
    config = {
        "curvature": jnp.logspace(0.0, -math.log10(condition), dim, dtype=jnp.float32),
        "noise_scale": jnp.asarray(noise_scale, jnp.float32),
    }
    return Problem("noisy_quadratic", family.task(config))


def mlp_digits() -> Problem:
    """The 64-64 relu MLP on digits of ``garo-optax bench`` (batch 128)."""
    return Problem("mlp_digits", bench_lib.TASKS["mlp_digits"].build())


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "noisy_quadratic": noisy_quadratic,
    "mlp_digits": mlp_digits,
}

# ----------------------------------------------------------------------------
# The transforms.


@dataclasses.dataclass(frozen=True)
class Entry:
    """One transform of the soak.

    Attributes:
      name: the row's name (the conformance registry's, where it has one).
      build: ``build(learning_rate) -> optimizer``.
      learning_rates: the rate per problem name.
      probe: ``probe(opt_state) -> {"lr" | "mom" | "wd": array or tree}``, the
        hyperparameters the state holds, or None.
      probe_init: whether the initial state's hyperparameters count.
      initial_lr: ``initial_lr(learning_rate)``, the rate the reported range
        must contain, or None where no such rate exists (a numerator that
        rescales it, or no rate in the state).
    """

    name: str
    build: Callable[[float], optax.GradientTransformation]
    learning_rates: Mapping[str, float]
    probe: Callable[[Any], dict[str, Any]] | None = None
    probe_init: bool = True
    initial_lr: Callable[[float], float] | None = None


def _same(lr: float) -> float:
    return lr


# Rates per problem (soak settings, not registry facts): optax.adam's for the
# Adam-like ones (1e-2 on the quadratic, whose largest curvature is 1; 1e-3 on
# the MLP); CLARA's unit steps move each tensor by `lr` in norm; GARO's is the
# `learning_rate_init` of its heads.
ADAM_LIKE = {"noisy_quadratic": 1e-2, "mlp_digits": 1e-3}
SGD_LIKE = {"noisy_quadratic": 0.1, "mlp_digits": 1e-2}
GARO_RATES = {"noisy_quadratic": 1e-2, "mlp_digits": 1e-2}
RATES = {
    "sgd": {"noisy_quadratic": 0.1, "mlp_digits": 0.05},
    "clara_sgd": SGD_LIKE,
    "clara_sgd_global": SGD_LIKE,
}
"""Rates of the entries whose rates are not :data:`ADAM_LIKE` (nor GARO's)."""

# The "markov" numerator and the window rescale the rate: no initial lr.
RESCALED_RATE = ("autosgm_markov_window",)

TRANSFORMS: tuple[str, ...] = ("adam", "sgd", *registry.CONFORMANCE)
"""The soak's transforms: entries of the optimizer registry
(``garo_optax._app.registry``), the conformance suite's configurations."""


def registry_entry(name: str) -> Entry:
    """The soak's :class:`Entry` of the registry's configuration ``name``.

    It builds the registry's ``function`` with its options at the soak's rate
    (GARO: the rate is ``learning_rate_init``); CLARA and AutoSGM report the
    state's ``lr``, GARO its hyperparameters.
    """
    spec = registry.get(name)
    if spec.group == "garo":
        build = lambda lr: spec.function(**spec.options, learning_rate_init=lr)
        return Entry(name, build, GARO_RATES, garo_optax.hyperparams, initial_lr=_same)
    build = lambda lr: spec.function(**spec.kwargs(lr))
    rates = RATES.get(name, ADAM_LIKE)
    if spec.group == "clara":
        return Entry(name, build, rates, garo_optax.hyperparams, initial_lr=_same)
    if spec.group == "autosgm":  # its lr is 0 until the first step
        initial_lr = None if name in RESCALED_RATE else _same
        return Entry(name, build, rates, garo_optax.hyperparams, False, initial_lr)
    return Entry(name, build, rates)


ENTRIES: tuple[Entry, ...] = tuple(map(registry_entry, TRANSFORMS))
"""Every transform of the soak, ``optax.adam`` (the reference) first."""

# ----------------------------------------------------------------------------
# The compiled chunk.


class Stats(NamedTuple):
    """What the carry tracks besides the parameters and the optimizer state."""

    finite: jax.Array  # shape=(), bool: every value finite so far.
    first_bad: jax.Array  # shape=(), int32: first non-finite step, -1 if none.
    lo: jax.Array  # shape=(3,), float32: min of lr, mom, wd (+inf: none seen).
    hi: jax.Array  # shape=(3,), float32: max of lr, mom, wd (-inf: none seen).
    first_loss: jax.Array  # shape=(), float32: the training loss at step 0.
    loss_sum: jax.Array  # shape=(), float32: training loss summed over the chunk.


def _all_finite(*trees) -> jax.Array:
    leaves = [
        x
        for x in jax.tree.leaves(trees)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _ranges(probe, opt_state) -> tuple[jax.Array, jax.Array]:
    """(min, max) of each hyperparameter over its leaves; NaN where absent."""
    values = {} if probe is None else probe(opt_state)
    lo, hi = [], []
    for name in HYPERPARAMS:
        leaves = [
            jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(values.get(name))
        ]
        if not leaves:
            lo.append(jnp.float32(jnp.nan))
            hi.append(jnp.float32(jnp.nan))
            continue
        lo.append(jnp.min(jnp.stack([jnp.min(x) for x in leaves])))
        hi.append(jnp.max(jnp.stack([jnp.max(x) for x in leaves])))
    return jnp.stack(lo), jnp.stack(hi)


def init_carry(problem: Problem, tx, probe=None, probe_init: bool = True):
    """``(params, opt_state, stats)`` before the first step."""
    params = problem.task.init(jax.random.key(problem.seed))
    opt_state = tx.init(params)
    inf = jnp.full([len(HYPERPARAMS)], jnp.inf, jnp.float32)
    lo, hi = inf, -inf
    if probe_init:
        p_lo, p_hi = _ranges(probe, opt_state)
        lo, hi = jnp.fmin(lo, p_lo), jnp.fmax(hi, p_hi)
    stats = Stats(
        finite=_all_finite(params, opt_state),
        first_bad=jnp.full([], -1, jnp.int32),
        lo=lo,
        hi=hi,
        first_loss=jnp.full([], jnp.nan, jnp.float32),
        loss_sum=jnp.zeros([], jnp.float32),
    )
    return params, opt_state, stats


def make_chunk(problem: Problem, tx, probe, length: int):
    """``chunk(carry, start) -> carry``: steps ``start, ..., start + length - 1``."""
    task = problem.task
    batch_key = jax.random.fold_in(jax.random.key(problem.seed), 1)

    def body(carry, step):
        params, opt_state, stats = carry
        batch = task.batch(batch_key, step)
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        params = optax.apply_updates(params, updates)
        ok = _all_finite(loss, grads, updates, params, opt_state)
        p_lo, p_hi = _ranges(probe, opt_state)
        # fmin/fmax skip NaN (a non-finite step is reported by `finite`).
        stats = Stats(
            finite=stats.finite & ok,
            first_bad=jnp.where(stats.finite & ~ok, step, stats.first_bad),
            lo=jnp.fmin(stats.lo, p_lo),
            hi=jnp.fmax(stats.hi, p_hi),
            first_loss=jnp.where(step == 0, loss.astype(jnp.float32), stats.first_loss),
            loss_sum=stats.loss_sum + loss.astype(jnp.float32),
        )
        return (params, opt_state, stats), None

    def chunk(carry, start):
        params, opt_state, stats = carry
        stats = stats._replace(loss_sum=jnp.zeros([], jnp.float32))
        steps = start + jnp.arange(length, dtype=jnp.int32)
        carry, _ = jax.lax.scan(body, (params, opt_state, stats), steps)
        return carry

    return chunk


def peak_bytes(compiled) -> int | None:
    """Argument + output - aliased + temporary bytes of a compiled function."""
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    return int(
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )


class _Runner:
    """One transform on one problem: compiled chunks and its carry."""

    def __init__(self, entry: Entry, problem: Problem, steps: int, chunk: int):
        self.entry, self.problem, self.steps = entry, problem, steps
        self.learning_rate = float(entry.learning_rates[problem.name])
        self.tx = optax.with_extra_args_support(entry.build(self.learning_rate))
        # One compiled call: eager op-by-op init costs seconds for GARO.
        self.carry = jax.jit(
            lambda: init_carry(problem, self.tx, entry.probe, entry.probe_init)
        )()
        # Before the first (donating) call, which invalidates these buffers.
        self.initial_loss = self._eval_loss(self.carry[0])
        length = min(chunk, steps)
        self.starts = list(range(0, steps, length))
        self.sizes = [min(length, steps - s) for s in self.starts]
        start = time.perf_counter()
        self.compiled = {}
        for size in sorted(set(self.sizes)):
            fn = make_chunk(problem, self.tx, entry.probe, size)
            lowered = jax.jit(fn, donate_argnums=0).lower(self.carry, jnp.int32(0))
            self.compiled[size] = lowered.compile()
        self.compile_s = time.perf_counter() - start
        self.peak_bytes = peak_bytes(self.compiled[length])
        memory = self.compiled[length].memory_analysis()
        self.memory = {
            k: int(getattr(memory, f"{k}_size_in_bytes"))
            for k in ("argument", "output", "alias", "temp")
            if memory is not None
        }
        self.run_s = 0.0
        self.last_chunk = length

    def _eval_loss(self, params) -> float | None:
        eval_loss = self.problem.task.eval_loss
        return None if eval_loss is None else float(jax.jit(eval_loss)(params))

    def run_chunk(self, index: int) -> None:
        size = self.sizes[index]
        start = time.perf_counter()
        self.carry = self.compiled[size](self.carry, jnp.int32(self.starts[index]))
        jax.block_until_ready(self.carry)
        self.run_s += time.perf_counter() - start
        self.last_chunk = size

    def result(self) -> dict[str, Any]:
        params, _, stats = self.carry
        final = self._eval_loss(params)
        stats = jax.device_get(stats)
        ranges = {}
        for k, name in enumerate(HYPERPARAMS):
            lo, hi = float(stats.lo[k]), float(stats.hi[k])
            ranges[name] = None if lo > hi else [lo, hi]  # +inf > -inf: none seen
        first_bad = int(stats.first_bad)
        initial_lr = self.entry.initial_lr
        return {
            "transform": self.entry.name,
            "problem": self.problem.name,
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "initial_lr": None
            if initial_lr is None
            else initial_lr(self.learning_rate),
            "finite": bool(stats.finite),
            "first_bad_step": None if first_bad < 0 else first_bad,
            **ranges,
            "initial_train_loss": float(stats.first_loss),
            "final_train_loss": float(stats.loss_sum) / self.last_chunk,
            "initial_loss": self.initial_loss,
            "final_loss": final,
            "peak_bytes": self.peak_bytes,
            "memory": self.memory,
            "compile_s": self.compile_s,
            "run_s": self.run_s,
            "s_per_1k_steps": 1000.0 * self.run_s / self.steps,
        }


def run_problem(
    entries: Sequence[Entry],
    problem: Problem,
    steps: int,
    *,
    chunk: int = CHUNK,
    reference: str | None = REFERENCE,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Soaks ``entries`` on one problem for ``steps`` steps, chunks round-robin.

    Returns:
      One result dict per entry (see :func:`format_table` for the fields);
      ``memory_ratio`` and ``time_ratio`` are relative to the entry named
      ``reference`` (None when it is not among ``entries``).
    """
    if steps < 1 or chunk < 1:
        raise ValueError(f"steps and chunk must be >= 1, got {steps} and {chunk}")
    runners = []
    for entry in entries:
        runners.append(_Runner(entry, problem, steps, chunk))
        if log:
            log(f"  compiled {entry.name} ({runners[-1].compile_s:.1f} s)")
    for index in range(len(runners[0].starts)):
        for runner in runners:
            runner.run_chunk(index)
        if log:
            done = min(runners[0].starts[index] + chunk, steps)
            log(f"  {problem.name}: {done}/{steps} steps")
    results = [runner.result() for runner in runners]
    ref = next((r for r in results if r["transform"] == reference), None)
    for r in results:
        r["memory_ratio"] = r["time_ratio"] = None
        if ref is not None and ref["peak_bytes"] and r["peak_bytes"] is not None:
            r["memory_ratio"] = r["peak_bytes"] / ref["peak_bytes"]
        if ref is not None and ref["run_s"] > 0:
            r["time_ratio"] = r["run_s"] / ref["run_s"]
    return results


# ----------------------------------------------------------------------------
# Reporting.


def _range(value) -> str:
    if value is None:
        return "-"
    lo, hi = value
    return f"{lo:.3g}..{hi:.3g}"


def _num(value, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


# (header, width): text columns are left-aligned, numbers right-aligned.
_COLUMNS = (
    ("problem", -15),
    ("transform", -24),
    ("finite", 6),
    ("bad step", 8),
    ("lr range", 19),
    ("mom range", 17),
    ("wd range", 17),
    ("loss start", 10),
    ("loss end", 9),
    ("train", 9),
    ("mem KiB", 8),
    ("mem/adam", 8),
    ("ms/1k", 7),
    ("time/adam", 9),
)


def _row(cells: Sequence[str]) -> str:
    return " ".join(
        f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(cells, _COLUMNS)
    )


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The printed table: one row per transform and problem.

    Columns: finiteness and the first non-finite step; the lr, momentum and
    weight-decay ranges (``-``: not in the state); the evaluation loss before
    and after, the mean training loss over the last chunk; the compiled chunk's
    peak bytes and their ratio to adam's; milliseconds per 1,000 steps and
    their ratio to adam's.
    """
    header = _row([h for h, _ in _COLUMNS])
    lines = [header, "-" * len(header)]
    for r in results:
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 1024
        cells = [
            r["problem"],
            r["transform"],
            "yes" if r["finite"] else "NO",
            _num(r["first_bad_step"], "d"),
            _range(r["lr"]),
            _range(r["mom"]),
            _range(r["wd"]),
            _num(r["initial_loss"], ".4g"),
            _num(r["final_loss"], ".4g"),
            _num(r["final_train_loss"], ".4g"),
            _num(peak, ".1f"),
            _num(r["memory_ratio"], ".2f"),
            _num(1000 * r["s_per_1k_steps"], ".1f"),
            _num(r["time_ratio"], ".2f"),
        ]
        lines.append(_row(cells))
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf", "-inf": strict JSON has none of them
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def select(only: Sequence[str] | str | None) -> tuple[Entry, ...]:
    """The entries named in ``only`` (with the reference), or all of them."""
    if only is None:
        return ENTRIES
    names = [n for n in (only.split(",") if isinstance(only, str) else only) if n]
    known = {e.name for e in ENTRIES}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(
            f"unknown transforms {unknown}; expected some of {sorted(known)}"
        )
    wanted = set(names) | {REFERENCE}
    return tuple(e for e in ENTRIES if e.name in wanted)


def _revision() -> str | None:
    """``git describe --always --dirty`` of the checkout, if there is one."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=pathlib.Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def main(
    quadratic_steps: int = QUADRATIC_STEPS,
    mlp_steps: int = MLP_STEPS,
    out: str | pathlib.Path | None = None,
    only: Sequence[str] | str | None = None,
    *,
    chunk: int = CHUNK,
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs the soak; prints the table and returns the report.

    Args:
      quadratic_steps: steps on the noisy quadratic (0 skips it).
      mlp_steps: steps on the digits MLP (0 skips it).
      out: a directory to write ``soak.json`` and ``soak.txt`` into, or None.
      only: transform names (a list or a comma-separated string) to run with
        ``adam``; None runs every transform.
      chunk: steps per compiled call.
      verbose: print progress and the table.

    Returns:
      ``{"environment", "config", "results", "table"}``; ``results`` holds one
      dict per transform and problem.
    """
    entries = select(only)
    log = (lambda s: print(s, flush=True)) if verbose else None
    start = time.perf_counter()
    results = []
    for name, steps in (
        ("noisy_quadratic", quadratic_steps),
        ("mlp_digits", mlp_steps),
    ):
        if steps > 0:
            if log:
                log(f"{name}: {len(entries)} transforms x {steps} steps")
            results += run_problem(
                entries, PROBLEMS[name](), steps, chunk=chunk, log=log
            )
    table = format_table(results)
    report = {
        "environment": environment(),
        "config": {
            "quadratic_steps": quadratic_steps,
            "mlp_steps": mlp_steps,
            "chunk": chunk,
            "transforms": [e.name for e in entries],
            "revision": _revision(),
            "wall_s": time.perf_counter() - start,
        },
        "results": results,
        "table": table,
    }
    if verbose:
        print(table)
        print(
            f"total {report['config']['wall_s']:.0f} s, {report['config']['revision']}"
        )
    if out is not None:
        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "soak.json", "w") as f:
            json.dump(_json_safe(report), f, indent=1, allow_nan=False)
        (out / "soak.txt").write_text(table + "\n")
    return report


def _cli(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quadratic-steps", type=int, default=QUADRATIC_STEPS)
    parser.add_argument("--mlp-steps", type=int, default=MLP_STEPS)
    parser.add_argument("--chunk", type=int, default=CHUNK, help="steps per call")
    parser.add_argument(
        "--only", default=None, help="comma-separated transforms (adam always runs)"
    )
    parser.add_argument("--out", default=None, help="directory for soak.json")
    args = parser.parse_args(argv)
    return main(
        args.quadratic_steps, args.mlp_steps, args.out, args.only, chunk=args.chunk
    )


if __name__ == "__main__":
    _cli(sys.argv[1:])
