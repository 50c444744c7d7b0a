"""Evaluating a GARO controller on task families against optax baselines.

Every optimizer trains the same tasks (``num_tasks`` configurations sampled
from a family, the same initializations and batches) for ``num_steps`` steps,
all tasks at once (``jax.vmap``) inside one jitted ``lax.scan``. Reported per
family and optimizer: the final training loss (mean of the last 10% of steps,
averaged over the tasks), the final held-out loss where the family has one,
and the number of steps until the task-averaged training loss first reaches a
threshold (the final training loss of ``adam`` at its default learning rate,
so "steps to reach Adam's result").

The baselines are optax's ``sgd``, ``sgd`` with momentum 0.9, ``adam`` and
``adamw`` at their usual default learning rates (1e-2, 1e-2, 1e-3, 1e-3) and
at the best of a 7-point log-spaced sweep around that default (factors
10^-1.5 ... 10^1.5), best by final training loss.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax._src import controller as ctl
from garo_optax._src import garo as garo_lib
from garo_optax.meta import _tasks, _train


def _sgd(lr, theta):
    return optax.sgd(lr)


def _sgd_momentum(lr, theta):
    return optax.sgd(lr, momentum=0.9)


def _adam(lr, theta):
    return optax.adam(lr)


def _adamw(lr, theta):
    return optax.adamw(lr)


BASELINES: dict[str, tuple[Callable, float]] = {
    "sgd": (_sgd, 1e-2),
    "sgd_momentum": (_sgd_momentum, 1e-2),
    "adam": (_adam, 1e-3),
    "adamw": (_adamw, 1e-3),
}
"""optax baselines: name -> (``tx_fn(learning_rate, controller)``, default rate)."""

SWEEP_FACTORS = tuple(10.0 ** (k / 2) for k in range(-3, 4))


class Curve(NamedTuple):
    """The result of one optimizer on one family."""

    losses: np.ndarray  # (num_steps,): training loss averaged over the tasks.
    final_loss: float  # mean of the last 10% of `losses`.
    eval_loss: float  # held-out loss at the end (NaN without one).
    learning_rate: float  # the rate used (NaN for GARO).


@functools.lru_cache(maxsize=64)
def _runner(tx_fn, family: _tasks.TaskFamily, num_tasks: int, num_steps: int):
    """The jitted ``run(key, learning_rate, controller) -> (losses, eval)``.

    Cached, so that every learning rate of a sweep and every controller share
    one compilation.
    """

    @jax.jit
    def run(key, learning_rate, theta):
        optimizer_fn = lambda theta: tx_fn(learning_rate, theta)

        def one(k):
            state = _train.init_inner(theta, family, k, optimizer_fn=optimizer_fn)
            state, losses = _train._train_steps(
                theta,
                family,
                state,
                num_steps,
                optimizer_fn=optimizer_fn,
                checkpoint=False,
            )
            task = family.task(state.config)
            if task.eval_loss is None:
                return losses, jnp.full([], jnp.nan)
            return losses, task.eval_loss(state.params)

        return jax.vmap(one)(jax.random.split(key, num_tasks))

    return run


def run_optimizer(
    tx_fn: Callable,
    family: _tasks.TaskFamily,
    *,
    num_tasks: int,
    num_steps: int,
    key: jax.Array,
    learning_rate: float = float("nan"),
    controller: ctl.GaroController | None = None,
) -> Curve:
    """Trains ``num_tasks`` tasks of ``family`` for ``num_steps`` steps.

    Args:
      tx_fn: ``tx_fn(learning_rate, controller) -> optimizer`` (the optimizer
        receives the loss as ``value=``).
      family: the task family.
      num_tasks: tasks sampled from the family (one vmapped population).
      num_steps: inner steps.
      key: a PRNG key (the same key gives every optimizer the same tasks).
      learning_rate: passed to ``tx_fn`` (a traced scalar).
      controller: passed to ``tx_fn`` (``None``: a placeholder).

    Returns:
      A :class:`Curve`.
    """
    if controller is None:
        controller = ctl.init_controller(jax.random.PRNGKey(0), hidden_size=1)
    run = _runner(tx_fn, family, num_tasks, num_steps)
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
    family: _tasks.TaskFamily,
    *,
    num_tasks: int = 4,
    num_steps: int = 1000,
    sweep: bool = True,
    seed: int = 0,
    garo_options: dict | None = None,
) -> dict[str, Curve]:
    """Every controller and every baseline on one family.

    Args:
      controllers: name -> GARO controller (e.g. ``{"garo_init": ...,
        "garo_trained": ...}``).
      family: the task family.
      num_tasks: tasks per optimizer.
      num_steps: inner steps.
      sweep: also run each baseline at the best of :data:`SWEEP_FACTORS`
        times its default rate (entries ``<name>_swept``).
      seed: the tasks' seed.
      garo_options: keyword arguments of :func:`garo_optax.garo` besides the
        controller (e.g. ``granularity``).

    Returns:
      name -> :class:`Curve`, baselines at their default rate under their own
      name.
    """
    key = jax.random.PRNGKey(seed)
    kw = dict(num_tasks=num_tasks, num_steps=num_steps, key=key)
    results = {}
    garo_fn = _garo_fn(tuple(sorted((garo_options or {}).items())))
    for name, theta in controllers.items():
        curve = run_optimizer(garo_fn, family, controller=theta, **kw)
        results[name] = curve._replace(learning_rate=float("nan"))
    for name, (tx_fn, default) in BASELINES.items():
        results[name] = run_optimizer(tx_fn, family, learning_rate=default, **kw)
        if sweep:
            sweep_curves = [
                run_optimizer(tx_fn, family, learning_rate=default * f, **kw)
                for f in SWEEP_FACTORS
            ]
            results[f"{name}_swept"] = min(sweep_curves, key=lambda c: c.final_loss)
    return results


@functools.lru_cache(maxsize=8)
def _garo_fn(options: tuple):
    return lambda lr, theta: garo_lib.garo(theta, **dict(options))


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


def format_table(family: str, rows: list[dict]) -> str:
    """A plain-text table of :func:`summary_rows` (best final loss marked).

    Args:
      family: the family's name (the title).
      rows: the rows.

    Returns:
      The table.
    """
    best = min(r["final_loss"] for r in rows)
    lines = [
        family,
        f"  {'optimizer':<20} {'final loss':>12} {'eval loss':>12} "
        f"{'lr':>9} {'steps to adam':>14}",
    ]
    for r in rows:
        lr = "" if np.isnan(r["learning_rate"]) else f"{r['learning_rate']:.2g}"
        steps = "-" if r["steps_to_adam"] is None else str(r["steps_to_adam"])
        mark = " *" if r["final_loss"] == best else ""
        lines.append(
            f"  {r['optimizer']:<20} {r['final_loss']:>12.4g} {r['eval_loss']:>12.4g} "
            f"{lr:>9} {steps:>14}{mark}"
        )
    return "\n".join(lines)


def plot_family(path, family: str, results: dict[str, Curve]) -> None:
    """Writes the task-averaged loss curves of one family as a PNG.

    Args:
      path: the PNG file.
      family: the title.
      results: name -> :class:`Curve`.

    Returns:
      None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in results.items():
        style = "-" if name.startswith("garo") else "--" if "swept" in name else ":"
        ax.plot(np.arange(1, len(curve.losses) + 1), curve.losses, style, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over tasks)")
    ax.set_title(family)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
