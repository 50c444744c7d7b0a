"""The classic recipe with optax alone: the baseline self-tuning optimizers replace.

What it shows, on a pure-JAX 64-64-10 MLP on scikit-learn's bundled digits
(split 60/20/20 into train, validation and test sets, standardized):

* ``optax.adamw`` with ``optax.warmup_cosine_decay_schedule`` (linear warm-up
  over 10% of the updates, cosine decay to 1% of the peak) after
  ``optax.clip_by_global_norm(1.0)``;
* gradient accumulation with ``optax.MultiSteps(..., every_k_schedule=k)``:
  mini-batches of 32, and the inner optimizer (so the schedule too) steps
  once every ``k`` micro-steps on their mean gradient; the parameters do not
  move on the other micro-steps;
* early stopping on the validation loss after each update: training stops
  after ``patience`` updates in a row without a gain of ``min_delta`` over
  the best, and the parameters of the lowest validation loss are restored.

With seed 0 it stops at update 107 of 300 (best validation loss 0.148 at
update 87; test accuracy about 0.96). Run time: about 10 to 20 s on a 2-core
CPU, a third of it JAX start-up and compilation. Usage::

    python examples/classic_recipe.py --steps 300 --accumulate 4 --patience 20
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

MICRO_BATCH = 32
SIZES = (64, 64, 64, 10)


def load_data():
    """Standardized ``(x, y)`` pairs of the train, validation and test splits."""
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int32)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest
    )
    scaler = StandardScaler().fit(x_train)
    as_jax = lambda x, y: (jnp.asarray(scaler.transform(x), jnp.float32), y)
    return as_jax(x_train, y_train), as_jax(x_val, y_val), as_jax(x_test, y_test)


def init_mlp(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal weights and zero biases for ``SIZES`` (NumPy: nothing to compile)."""
    rng = np.random.default_rng(seed)
    layers = []
    for m, n in zip(SIZES[:-1], SIZES[1:]):
        w = rng.standard_normal((m, n)) * np.sqrt(2.0 / m)
        layers.append((w.astype(np.float32), np.zeros(n, np.float32)))
    return layers


def predict(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b[None])
    w, b = params[-1]
    return x @ w + b[None]


@jax.jit
def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()


def make_schedule(steps: int, peak: float = 3e-3) -> optax.Schedule:
    """Linear warm-up over 10% of ``steps`` optimizer updates, then cosine decay."""
    warmup = max(1, steps // 10)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, steps, peak / 100)


def make_optimizer(schedule, accumulate: int) -> optax.MultiSteps:
    inner = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4)
    )
    return optax.MultiSteps(inner, every_k_schedule=accumulate)


def make_micro_step(tx: optax.MultiSteps):
    @jax.jit
    def micro_step(params, opt_state, key, x, y):
        """One micro-step: a mini-batch gradient, accumulated by MultiSteps."""
        idx = jax.random.choice(key, x.shape[0], (MICRO_BATCH,), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return micro_step


def main(
    steps: int = 300,
    accumulate: int = 4,
    patience: int = 20,
    min_delta: float = 1e-4,
    peak_lr: float = 3e-3,
    seed: int = 0,
) -> dict:
    """AdamW + schedule + clipping + accumulation + early stopping.

    ``steps`` updates at most (the schedule's length), of ``accumulate``
    micro-steps each. Returns the lists ``"train_loss"`` (mean micro-batch
    loss), ``"val_loss"`` and ``"lr"`` (the schedule's) of each update;
    ``"best_step"`` (1-based), ``"best_val_loss"``, ``"stopped_early"``,
    ``"restored_val_loss"`` (recomputed at the restored ``"params"``) and
    their ``"test_accuracy"``.
    """
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_data()
    schedule = make_schedule(steps, peak_lr)
    tx = make_optimizer(schedule, accumulate)
    micro_step = make_micro_step(tx)
    params = init_mlp(seed)
    opt_state = tx.init(params)
    key = jax.random.key(seed + 1)
    train_loss, val_loss, lrs = [], [], []
    best_params, best_val, best_step, waited = params, float("inf"), 0, 0
    for step in range(1, steps + 1):
        losses = []
        for micro in range(accumulate):
            k = jax.random.fold_in(key, (step - 1) * accumulate + micro)
            params, opt_state, loss = micro_step(params, opt_state, k, x_train, y_train)
            losses.append(loss)
        lrs.append(float(schedule(step - 1)))  # the rate this update used
        train_loss.append(float(jnp.mean(jnp.stack(losses))))
        val_loss.append(float(loss_fn(params, x_val, y_val)))
        # Patience counts updates without a gain of min_delta; the best weights
        # are those of the lowest validation loss.
        waited = 0 if val_loss[-1] < best_val - min_delta else waited + 1
        if val_loss[-1] < best_val:
            best_params, best_val, best_step = params, val_loss[-1], step
        if step % max(1, steps // 10) == 0 or waited >= patience:
            print(
                f"update {step:4d}  lr {lrs[-1]:.2e}  train {train_loss[-1]:.4f}  "
                f"val {val_loss[-1]:.4f}  best {best_val:.4f} at {best_step}"
            )
        if waited >= patience:
            break
    params = best_params  # restore the best weights (jax arrays are immutable)
    accuracy = jnp.mean(jnp.argmax(predict(params, x_test), -1) == y_test)
    return {
        "train_loss": train_loss,
        "val_loss": val_loss,
        "lr": lrs,
        "best_step": best_step,
        "best_val_loss": best_val,
        "stopped_early": waited >= patience,
        "restored_val_loss": float(loss_fn(params, x_val, y_val)),
        "params": params,
        "test_accuracy": float(accuracy),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer updates")
    parser.add_argument("--accumulate", type=int, default=4, help="micro-steps")
    parser.add_argument("--patience", type=int, default=20, help="early stopping")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    start = time.perf_counter()
    result = main(
        args.steps, args.accumulate, args.patience, peak_lr=args.lr, seed=args.seed
    )
    print(
        f"best val loss {result['best_val_loss']:.4f} at update "
        f"{result['best_step']} (stopped early: {result['stopped_early']}), "
        f"test accuracy {result['test_accuracy']:.3f}, "
        f"{time.perf_counter() - start:.1f} s"
    )
