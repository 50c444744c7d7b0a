"""Meta-train a small GARO controller on quadratics, then train with it.

What it shows:

* ``garo_optax.meta.meta_train`` on one task family (ill-conditioned
  10-dimensional quadratics, ``"quadratic"``) with truncated backprop: a
  population of 4 inner runs of 100 steps, a meta-gradient every 10 inner
  steps (the README's configuration), progress printed from the
  ``callback``;
* the meta-trained controller used like any optax optimizer,
  ``tx = garo_optax.garo(controller)``, on fresh quadratics of the family
  that meta-training never saw, against the controller it started from
  (``meta.initial_controller(config)``: lr 0.01, momentum 0.5 at h = 0);
* saving and reloading it with ``meta.save_controller`` /
  ``meta.load_controller`` (``.npz``; ``--out``).

The comparison is the final loss (mean of the last 10% of 100 steps) on 8
fresh quadratics, each started at loss 1: with seed 0 and 300 meta-steps the
median is 3e-5 for the meta-trained controller against 0.14 for the initial
one, lower on 8 of 8 tasks. Run time: about 1 minute on a 2-core CPU, most of
it compiling the meta-step and its initialization (after that a meta-step
takes milliseconds, so ``--steps 3000`` costs little more). Usage::

    python examples/meta_train_small.py --steps 300 --out controller.npz
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import garo_optax
from garo_optax import meta

FAMILY = meta.get_family("quadratic")


@functools.partial(jax.jit, static_argnames="steps")
def train_losses(controller, task_config, key, steps: int = 100):
    """The loss of every step of GARO under ``controller`` on one task."""
    task = FAMILY.task(task_config)
    tx = garo_optax.garo(controller)  # any optax optimizer would fit here
    params = task.init(key)

    def step(carry, i):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch(key, i))
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return (optax.apply_updates(params, updates), opt_state), loss

    _, losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return losses


@functools.partial(jax.jit, static_argnames=("tasks", "steps"))
def final_losses(controller, seed: int, tasks: int, steps: int) -> jax.Array:
    """The final loss (mean of the last 10% of steps) on ``tasks`` fresh tasks."""
    task_keys, init_keys = jax.random.split(jax.random.key(seed), (2, tasks))
    configs = jax.vmap(FAMILY.sample)(task_keys)
    run = jax.vmap(train_losses, in_axes=(None, 0, 0, None))
    losses = run(controller, configs, init_keys, steps)
    return losses[:, -max(1, steps // 10) :].mean(axis=1)


def main(
    steps: int = 300,
    population: int = 4,
    segment_length: int = 10,
    horizon: int = 100,
    eval_tasks: int = 8,
    out: str | None = None,
    seed: int = 0,
) -> dict:
    """Meta-trains a controller, compares it with the initial one, saves it.

    Args:
      steps: meta-steps.
      population: inner runs per meta-step.
      segment_length: inner steps per meta-step (truncation length K).
      horizon: inner steps of a whole inner run (the evaluation's length too).
      eval_tasks: fresh tasks of the comparison.
      out: an ``.npz`` path to save the controller to (``None``: not saved).
      seed: seed of meta-training; the fresh tasks use ``seed + 1000``.

    Returns:
      A dict with ``"controller"`` and ``"initial_controller"``
      (:class:`garo_optax.GaroController`), ``"meta_loss"`` (per meta-step,
      NumPy), ``"final_loss"`` and ``"initial_final_loss"`` (per fresh task,
      NumPy) and ``"saved"`` (the path written, or ``None``).
    """
    config = meta.MetaConfig(
        families=(FAMILY.name,),
        population=population,
        segment_length=segment_length,
        horizon=horizon,
        steps=steps,
        seed=seed,
    )
    log_every = max(1, steps // 10)

    def report(state, metrics):
        if metrics["step"] % log_every == 0:
            print(
                f"meta-step {metrics['step']:5d}  meta-loss {metrics['meta_loss']:+.3f}"
                f"  inner loss {metrics['mean_loss']:.2e}"
            )

    # One compiled initialization (run eagerly, it dispatches many small ops).
    state = jax.jit(meta.make_meta_train(config)[0])()
    # The controller it starts from, meta.initial_controller(config), copied
    # to the host because the meta-steps donate (reuse) the state's buffers.
    initial = jax.tree.map(np.array, state.controller)
    controller, history = meta.meta_train(config, state=state, callback=report)
    # As NumPy arrays, the two controllers share one compiled evaluation.
    trained, untrained = (
        np.asarray(final_losses(c, seed + 1000, eval_tasks, horizon))
        for c in (jax.device_get(controller), initial)
    )
    print(
        f"final loss on {eval_tasks} fresh quadratics, median: meta-trained "
        f"{np.median(trained):.2e}, initial controller {np.median(untrained):.2e}; "
        f"meta-trained lower on {int(np.sum(trained < untrained))} of {eval_tasks}"
    )
    if out is not None:
        meta.save_controller(out, controller)
        reloaded = meta.load_controller(out)
        same = jax.tree.map(np.array_equal, reloaded, controller)
        print(f"saved to {out} (reloads equal: {all(jax.tree.leaves(same))})")
    return {
        "controller": controller,
        "initial_controller": initial,
        "meta_loss": np.asarray([m["meta_loss"] for m in history]),
        "final_loss": trained,
        "initial_final_loss": untrained,
        "saved": out,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="meta-steps")
    parser.add_argument("--population", type=int, default=4, help="inner runs")
    parser.add_argument("--out", default=None, help=".npz path for the controller")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    start = time.perf_counter()
    main(steps=args.steps, population=args.population, out=args.out, seed=args.seed)
    print(f"{time.perf_counter() - start:.1f} s")
