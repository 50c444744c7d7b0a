"""Evaluating a GARO controller on task families against optax baselines.

Every optimizer trains the same tasks (``num_tasks`` configurations sampled
from a family, the same initializations and batches) for ``num_steps`` steps,
all tasks at once (``jax.vmap``) inside one jitted ``lax.scan``. Reported per
family and optimizer: the final training loss (mean of the last 10% of steps,
averaged over the tasks), the final held-out loss where the family has one,
and the number of steps until the task-averaged training loss first reaches a
threshold (the final training loss of ``adam`` at its default learning rate,
so "steps to reach Adam's result").

The optimizers compared are arguments (this module holds no list of them):
``baselines``, each run at its default learning rate and at the best of a
7-point log-spaced sweep around that default (factors 10^-1.5 ... 10^1.5),
best by final training loss, and ``peers``, tuning-free optimizers run once
each at their own settings. ``garo-optax meta-eval`` passes optax's ``sgd``,
``sgd`` with momentum 0.9, ``adam`` and ``adamw`` (default rates 1e-2, 1e-2,
1e-3, 1e-3) and the tuning-free peers (prodigy, D-Adaptation, DoG, Mechanic,
COCOB, schedule-free, Polyak, ...) from its optimizer registry.

**The reported loss curve.** The loss of step ``t`` is the training loss on
step ``t``'s batch at the parameters the run would be evaluated at before its
``t``-th update: ``params`` for every optimizer but the schedule-free ones,
whose gradients are taken at an interpolation ``y`` of their iterates and
whose model is their average ``x = schedule_free_eval_params(state, y)``; for
them the loss (and the held-out loss at the end) is the one at ``x``, as their
authors require (one extra forward pass per step), while ``value=`` still
passes the loss at ``y``, where the gradient was taken.

**Loss rescaling.** :func:`scaled_family` multiplies a family's training and
held-out losses by a constant (meta-eval runs each held-out family also at
:data:`LOSS_SCALES`): an optimizer whose behaviour depends on the loss's scale
(a fixed learning rate, a Polyak step) shows it there.

**Summary.** :func:`summarize` counts, over all the families run, how often
each fixed rate of Adam's sweep is within 10% of the best-swept Adam ("one
good default" rate: the bar a tuning-free optimizer must clear), and for every
optimizer on how many families it is within 10% of the best-swept Adam and on
how many it is no worse than the median tuning-free peer.
"""

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax import tasks as tasks_lib
from garo_optax._src import controller as ctl
from garo_optax._src import garo as garo_lib
from garo_optax._src import report as report_lib
from garo_optax.meta import _unroll


class Contender(Protocol):
    """An optimizer to compare (the program's registry entries are ones).

    Attributes:
      build: ``build(learning_rate, num_steps) -> optimizer``; the rate is a
        traced scalar (ignored by an optimizer that sets its own).
      default_lr: the baseline's default rate (unused for a peer).
      eval_params: ``eval_params(opt_state, params) -> params``, where the
        losses are taken (``None``: ``params``).
    """

    build: Callable[[jax.Array, int], optax.GradientTransformation]
    default_lr: float | None
    eval_params: Callable | None


SWEEP_FACTORS = tuple(10.0 ** (k / 2) for k in range(-3, 4))

LOSS_SCALES: tuple[float, ...] = (1e-3, 1e3)
"""The factors by which meta-eval also rescales each family's loss."""

REFERENCE = "adam_swept"
"""The summary's reference: Adam at the best rate of its sweep."""

TOLERANCE = 0.1
""""Within 10%": a final loss at most ``best + 0.1 |best|``."""


class Curve(NamedTuple):
    """The result of one optimizer on one family."""

    losses: np.ndarray  # (num_steps,): training loss averaged over the tasks.
    final_loss: float  # mean of the last 10% of `losses`.
    eval_loss: float  # held-out loss at the end (NaN without one).
    learning_rate: float  # the rate used (NaN for GARO and the peers).
    # A `_swept` entry's sweep: (rate, final_loss) of every rate, in order.
    sweep: tuple[tuple[float, float], ...] = ()


def _train_steps(task: tasks_lib.Task, opt, state: _unroll.InnerState, num_steps, at):
    """``num_steps`` steps of one run: (state, the reported loss of each step).

    ``at(opt_state, params)`` gives the parameters whose loss is reported
    (``None``: ``params``); batches as in meta-training (``fold_in(key,
    step)``).
    """

    def body(state, _):
        batch = task.batch(jax.random.fold_in(state.key, state.step), state.step)
        loss, grads = jax.value_and_grad(task.loss)(state.params, batch)
        reported = loss
        if at is not None:
            reported = task.loss(at(state.opt_state, state.params), batch)
        updates, opt_state = opt.update(
            grads, state.opt_state, state.params, value=loss
        )
        params = optax.apply_updates(state.params, updates)
        step = optax.safe_increment(state.step)
        return state._replace(params=params, opt_state=opt_state, step=step), reported

    return jax.lax.scan(body, state, None, length=num_steps)


@functools.lru_cache(maxsize=64)
def _runner(
    tx_fn, family: tasks_lib.TaskFamily, num_tasks: int, num_steps: int, at=None
):
    """The jitted ``run(key, learning_rate, controller) -> (losses, eval)``.

    Cached, so that every learning rate of a sweep and every controller share
    one compilation. ``at``: see :func:`run_optimizer`'s ``eval_params``.
    """

    @jax.jit
    def run(key, learning_rate, theta):
        opt = optax.with_extra_args_support(tx_fn(learning_rate, theta))
        optimizer_fn = lambda theta: opt

        def one(k):
            state = _unroll.init_inner(theta, family, k, optimizer_fn=optimizer_fn)
            task = family.task(state.config)
            state, losses = _train_steps(task, opt, state, num_steps, at)
            if task.eval_loss is None:
                return losses, jnp.full([], jnp.nan)
            params = state.params if at is None else at(state.opt_state, state.params)
            return losses, task.eval_loss(params)

        return jax.vmap(one)(jax.random.split(key, num_tasks))

    return run


def run_optimizer(
    tx_fn: Callable,
    family: tasks_lib.TaskFamily,
    *,
    num_tasks: int,
    num_steps: int,
    key: jax.Array,
    learning_rate: float = float("nan"),
    controller: ctl.GaroController | None = None,
    eval_params: Callable | None = None,
) -> Curve:
    """Trains ``num_tasks`` tasks of ``family`` for ``num_steps`` steps.

    The loss of step ``t`` is the loss on step ``t``'s batch before the
    ``t``-th update, at ``eval_params(opt_state, params)`` when given (the
    schedule-free optimizers' average; see the module docstring), else at
    ``params``; the held-out loss is taken at the same parameters after the
    last step.

    Args:
      tx_fn: ``tx_fn(learning_rate, controller) -> optimizer``; its ``update``
        receives ``params`` and the loss at ``params`` as ``value=``.
      family: the task family.
      num_tasks: tasks sampled from the family (one vmapped population).
      num_steps: inner steps.
      key: a PRNG key (the same key gives every optimizer the same tasks).
      learning_rate: passed to ``tx_fn`` (a traced scalar).
      controller: passed to ``tx_fn`` (``None``: a placeholder).
      eval_params: ``eval_params(opt_state, params) -> params``, the
        parameters at which losses are reported (``None``: ``params``).

    Returns:
      A :class:`Curve`.
    """
    if controller is None:
        controller = ctl.init_controller(jax.random.PRNGKey(0), hidden_size=1)
    run = _runner(tx_fn, family, num_tasks, num_steps, eval_params)
    losses, evaluation = jax.device_get(
        run(key, jnp.asarray(learning_rate, jnp.float32), controller)
    )
    losses = np.where(np.isfinite(losses), losses, np.inf).mean(axis=0)
    tail = max(num_steps // 10, 1)
    return Curve(
        losses=losses,
        final_loss=float(np.mean(losses[-tail:])),
        eval_loss=float(np.mean(evaluation)),
        learning_rate=float(learning_rate),
    )


def steps_to_threshold(losses: np.ndarray, threshold: float) -> int | None:
    """The first step (1-based) whose loss is at most ``threshold``, or None.

    Args:
      losses: a loss curve.
      threshold: the target loss.

    Returns:
      The step, or ``None`` when the curve never reaches it.
    """
    hits = np.nonzero(losses <= threshold)[0]
    return int(hits[0]) + 1 if hits.size else None


def evaluate_family(
    controllers: dict[str, ctl.GaroController],
    family: tasks_lib.TaskFamily,
    *,
    baselines: Mapping[str, Contender] | None = None,
    peers: Mapping[str, Contender] | None = None,
    num_tasks: int = 4,
    num_steps: int = 1000,
    sweep: bool = True,
    seed: int = 0,
    garo_options: dict | None = None,
) -> dict[str, Curve]:
    """Every controller, baseline and peer on one family.

    Args:
      controllers: name -> GARO controller (e.g. ``{"garo_init": ...,
        "garo_trained": ...}``).
      family: the task family.
      baselines: name -> :class:`Contender`, each run at its ``default_lr``
        (and swept, see ``sweep``); ``None``: none.
      peers: name -> :class:`Contender`, each run once at its own settings
        (losses at its ``eval_params``: the schedule-free ones' average);
        ``None``: none.
      num_tasks: tasks per optimizer.
      num_steps: inner steps.
      sweep: also run each baseline at the best of :data:`SWEEP_FACTORS`
        times its default rate (entries ``<name>_swept``, with the final loss
        of every rate in ``sweep``).
      seed: the tasks' seed.
      garo_options: keyword arguments of :func:`garo_optax.garo` besides the
        controller (e.g. ``granularity``).

    Returns:
      name -> :class:`Curve`: controllers, baselines at their default rate
      under their own name (and ``<name>_swept``), then peers under theirs.
    """
    key = jax.random.PRNGKey(seed)
    kw = dict(num_tasks=num_tasks, num_steps=num_steps, key=key)
    results = {}
    garo_fn = _garo_fn(tuple(sorted((garo_options or {}).items())))
    for name, theta in controllers.items():
        curve = run_optimizer(garo_fn, family, controller=theta, **kw)
        results[name] = curve._replace(learning_rate=float("nan"))
    for name, baseline in (baselines or {}).items():
        tx_fn, default = contender_fn(baseline.build, num_steps), baseline.default_lr
        results[name] = run_optimizer(tx_fn, family, learning_rate=default, **kw)
        if sweep:
            curves = [
                run_optimizer(tx_fn, family, learning_rate=default * f, **kw)
                for f in SWEEP_FACTORS
            ]
            best = min(curves, key=lambda c: c.final_loss)
            record = tuple((c.learning_rate, c.final_loss) for c in curves)
            results[f"{name}_swept"] = best._replace(sweep=record)
    for name, peer in (peers or {}).items():
        tx_fn = contender_fn(peer.build, num_steps)
        results[name] = run_optimizer(tx_fn, family, eval_params=peer.eval_params, **kw)
    return results


@functools.lru_cache(maxsize=8)
def _garo_fn(options: tuple):
    return lambda lr, theta: garo_lib.garo(theta, **dict(options))


@functools.lru_cache(maxsize=64)
def contender_fn(build: Callable, num_steps: int) -> Callable:
    """The ``tx_fn`` of :func:`run_optimizer` for a :class:`Contender`'s build.

    Cached: one function per optimizer and length, so that all its runs
    share one compilation (the compiled runs are cached by function).

    Args:
      build: ``build(learning_rate, num_steps) -> optimizer``.
      num_steps: the runs' inner steps.

    Returns:
      ``tx_fn(learning_rate, controller) -> optimizer``.
    """
    return lambda lr, theta: build(lr, num_steps)


def scaled_name(name: str, scale: float) -> str:
    """The name of family ``name`` with its loss times ``scale``:
    ``rosenbrock@loss1e3`` (``name`` itself for a scale of 1), the spelling
    :func:`garo_optax.tasks.get_family` resolves."""
    return name if scale == 1.0 else f"{name}@loss{tasks_lib.format_scale(scale)}"


def scaled_family(name: str, scale: float) -> tasks_lib.TaskFamily:
    """The built-in family ``name`` with its loss times ``scale``
    (:func:`garo_optax.tasks.rescaled`; 1: the family itself).

    Args:
      name: a built-in family.
      scale: a positive factor.

    Returns:
      The :class:`~garo_optax.tasks.TaskFamily`.
    """
    return tasks_lib.get_family(scaled_name(name, scale))


def summary_rows(results: dict[str, Curve]) -> list[dict]:
    """One row per optimizer: final loss, eval loss, lr, steps to Adam's result.

    Args:
      results: name -> :class:`Curve` of one family (with an ``adam`` entry).

    Returns:
      A list of dicts (``optimizer``, ``final_loss``, ``eval_loss``,
      ``learning_rate``, ``steps_to_adam``).
    """
    threshold = results["adam"].final_loss if "adam" in results else None
    rows = []
    for name, curve in results.items():
        steps = (
            None if threshold is None else steps_to_threshold(curve.losses, threshold)
        )
        rows.append(
            {
                "optimizer": name,
                "final_loss": curve.final_loss,
                "eval_loss": curve.eval_loss,
                "learning_rate": curve.learning_rate,
                "steps_to_adam": steps,
            }
        )
    return rows


_FAMILY_COLUMNS = (
    report_lib.Column("optimizer", "<"),
    report_lib.Column("final loss", spec=".4g"),
    report_lib.Column("eval loss", spec=".4g"),
    report_lib.Column("lr", spec=".2g"),
    report_lib.Column("steps to adam"),
)


def format_table(family: str, rows: list[dict]) -> str:
    """A plain-text table of :func:`summary_rows` (best final loss marked).

    Args:
      family: the family's name (the title).
      rows: the rows.

    Returns:
      The table.
    """
    best = min(r["final_loss"] for r in rows)
    cells = [
        [
            r["optimizer"],
            report_lib.Marked(r["final_loss"], "*" if r["final_loss"] == best else ""),
            r["eval_loss"],
            None if np.isnan(r["learning_rate"]) else r["learning_rate"],
            r["steps_to_adam"],
        ]
        for r in rows
    ]
    return report_lib.format_table(_FAMILY_COLUMNS, cells, family)


def plot_family(path, family: str, results: dict[str, Curve]) -> None:
    """Writes the task-averaged loss curves of one family as a PNG.

    The y-limits come from the curves that stay finite, so that a diverged
    run does not stretch the axis; it ends in an ``x`` where it stopped being
    finite (at the top edge if it left the limits first).

    Args:
      path: the PNG file.
      family: the title.
      results: name -> :class:`Curve`.

    Returns:
      None.
    """
    report_lib.save_figure(family_figure(family, results), path)


def family_figure(family: str, results: dict[str, Curve]):
    """The figure of :func:`plot_family` (a bare ``matplotlib.figure.Figure``:
    no pyplot, the user's backend stays)."""
    fig, ax = report_lib.new_figure((7, 4.5), layout="tight")
    curves = {n: np.asarray(c.losses, float) for n, c in results.items()}
    kept = [c[c > 0] for c in curves.values() if np.all(np.isfinite(c))]
    kept = [c for c in kept if c.size] or [np.ones(1)]
    top = 3.0 * max(float(c[0]) for c in kept)
    bottom = 0.8 * min(float(np.min(c)) for c in kept)
    for name, losses in curves.items():
        style = "-" if name.startswith("garo") else "--" if "swept" in name else ":"
        steps = np.arange(1, len(losses) + 1)
        (line,) = ax.plot(steps, np.minimum(losses, top), style, label=name)
        bad = np.flatnonzero(~np.isfinite(losses) | (losses > top))
        if bad.size:
            ax.plot(steps[bad[0]], top, "x", color=line.get_color(), clip_on=False)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over tasks)")
    ax.set_title(f"{family} (x: a run that diverged or left the axis)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def within(loss: float, best: float, tolerance: float = TOLERANCE) -> bool:
    """Whether ``loss`` is at most ``best + tolerance * |best|`` (both finite).

    Args:
      loss: a final loss.
      best: the reference's final loss.
      tolerance: the relative margin.

    Returns:
      The answer (``False`` where either loss is not finite).
    """
    if not (math.isfinite(loss) and math.isfinite(best)):
        return False
    return loss <= best + tolerance * abs(best)


def summarize(
    families: Mapping[str, Mapping[str, Curve]],
    peers: Sequence[str] = (),
    *,
    reference: str = REFERENCE,
    tolerance: float = TOLERANCE,
) -> dict:
    """Counts over families: the "one good default" Adam rates and every
    optimizer against the best-swept Adam and the median peer.

    Args:
      families: family name -> that family's :func:`evaluate_family` results.
      peers: the tuning-free peers among the optimizers (their median final
        loss is the second bar).
      reference: the entry every final loss is compared with (its ``sweep``
        gives the fixed rates).
      tolerance: "within" margin, relative to the reference's final loss.

    Returns:
      A dict: ``families`` (their number), ``reference``, ``tolerance``,
      ``peers``, ``default_rates`` (one dict per fixed rate of the
      reference's sweep: ``learning_rate``, ``within``: families where that
      rate is within ``tolerance`` of the reference; empty without a sweep)
      and ``optimizers`` (one dict per optimizer: ``optimizer``, ``within``,
      ``vs_median_peer``: families where its final loss is at most the
      median peer's; each ``None`` where the reference or the peers are
      missing).
    """
    runs = list(families.values())
    ref = reference if runs and all(reference in r for r in runs) else None
    peers = [p for p in peers if runs and all(p in r for r in runs)]
    rates = []
    if ref is not None:
        for i, (rate, _) in enumerate(runs[0][ref].sweep):
            losses = [(r[ref].sweep[i][1], r[ref].final_loss) for r in runs]
            hits = sum(int(within(x, best, tolerance)) for x, best in losses)
            rates.append({"learning_rate": rate, "within": hits})
    rows = []
    for name in dict.fromkeys(name for r in runs for name in r):
        losses = [r[name].final_loss if name in r else math.inf for r in runs]
        close = median = None
        if ref is not None:
            bests = [r[ref].final_loss for r in runs]
            close = sum(int(within(x, b, tolerance)) for x, b in zip(losses, bests))
        if peers:
            bars = [_median_peer(r, peers) for r in runs]
            median = sum(int(x <= bar) for x, bar in zip(losses, bars))
        rows.append({"optimizer": name, "within": close, "vs_median_peer": median})
    return {
        "families": len(runs),
        "reference": ref,
        "tolerance": tolerance,
        "peers": peers,
        "default_rates": rates,
        "optimizers": rows,
    }


def _median_peer(results: Mapping[str, Curve], peers: Sequence[str]) -> float:
    return float(np.median([results[p].final_loss for p in peers]))


def _count(value: int | None, total: int) -> str:
    return "-" if value is None else f"{value}/{total}"


def format_summary(summary: dict) -> str:
    """Plain-text tables of :func:`summarize` (as :func:`format_table`'s).

    Args:
      summary: what :func:`summarize` returns.

    Returns:
      The tables.
    """
    n, ref = summary["families"], summary["reference"]
    pct = f"{summary['tolerance']:.0%}"
    tables = []
    if summary["default_rates"]:
        best = max(r["within"] for r in summary["default_rates"])
        columns = (
            report_lib.Column("learning rate", "<", spec=".2g"),
            report_lib.Column("families"),
        )
        rows = [
            [
                r["learning_rate"],
                report_lib.Marked(
                    _count(r["within"], n), "*" if r["within"] == best else ""
                ),
            ]
            for r in summary["default_rates"]
        ]
        title = f"one good default: adam at a fixed rate, within {pct} of {ref}"
        tables.append(report_lib.format_table(columns, rows, title))
    columns = (
        report_lib.Column("optimizer", "<"),
        report_lib.Column(f"within {pct}"),
        report_lib.Column("<= median peer"),
    )
    rows = [
        [r["optimizer"], _count(r["within"], n), _count(r["vs_median_peer"], n)]
        for r in summary["optimizers"]
    ]
    title = (
        f"families (of {n}) within {pct} of {ref or '-'} and no worse than the "
        "median peer"
    )
    tables.append(report_lib.format_table(columns, rows, title))
    return "\n\n".join(tables)
