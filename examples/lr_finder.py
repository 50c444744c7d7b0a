"""LR range test: pick Adam's (and SGD's) learning rate for an MLP, then train.

What it shows:

* ``garo_optax.lr_finder`` on a pure-JAX 64-64-10 multilayer perceptron: one
  jitted ``lax.scan`` of ``finder_steps`` steps with the learning rate growing
  exponentially from 1e-6 to 10, for ``optax.adam`` and for ``optax.sgd``;
* mini-batches as a callable ``batches(step)``, traced inside the scan (no host
  loop), that picks 128 training examples from a table of random indices;
* the suggestion (steepest descent of the log of the smoothed loss over log lr)
  and the two curves, drawn with ``garo_optax.plot_lr_finder`` side by side in a
  PNG;
* a short training run with Adam at the suggested rate, against one at 1e-6,
  with the full-batch training loss and the test accuracy at the end.

The data are scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; no
download), standardized, with a fixed 75/25 train/test split.

With seed 0 Adam's suggestion is about 0.046 and SGD's about 1.4 (SGD's loss
diverges after 93 of the 100 steps); 300 Adam steps at the suggestion bring the
full-batch training loss from 3.0 to about 0.14 (test accuracy about 0.92),
while 300 steps at 1e-6 leave it at 3.0. Run time: about 10 to 15 s on a 2-core
CPU, most of it JAX start-up and compilation (one per range test). Usage::

    python examples/lr_finder.py --steps 300 --finder-steps 100 --out lr_finder.png

Without ``--out`` the PNG goes to ``lr_finder.png`` in the system's temporary
directory.
"""

import argparse
import functools
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import garo_optax

BATCH_SIZE = 128
MIN_LR, MAX_LR = 1e-6, 10.0
DEFAULT_OUT = os.path.join(tempfile.gettempdir(), "lr_finder.png")


def load_data():
    """Returns standardized ``(x_train, y_train, x_test, y_test)`` NumPy arrays."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=0.25,
        random_state=0,
        stratify=digits.target,
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype(np.float32),
        y_train.astype(np.int32),
        scaler.transform(x_test).astype(np.float32),
        y_test.astype(np.int32),
    )


def init_mlp(seed: int, sizes=(64, 64, 64, 10)) -> list[dict[str, np.ndarray]]:
    """He-initialized weights and zero biases of a ReLU MLP with these widths.

    Drawn with NumPy: on CPU, compiling ``jax.random.normal`` costs more than
    this whole script's range tests.
    """
    rng = np.random.default_rng(seed)
    return [
        {
            "w": (rng.standard_normal((m, n)) * np.sqrt(2.0 / m)).astype(np.float32),
            "b": np.zeros(n, np.float32),
        }
        for m, n in zip(sizes[:-1], sizes[1:])
    ]


def logits_fn(params, x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
    return x @ params[-1]["w"] + params[-1]["b"][None]


def loss_fn(params, batch) -> jax.Array:
    x, y = batch
    logits = logits_fn(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_batches(idx: np.ndarray, x: np.ndarray, y: np.ndarray):
    """A traceable ``batches(step)``: the examples of row ``step`` of ``idx``.

    The random indices are drawn up front, one row of 128 per step (drawing them
    inside the scan with ``jax.random.fold_in(key, step)`` works too, but
    doubles the compilation time on CPU).
    """
    idx, x, y = jnp.asarray(idx), jnp.asarray(x), jnp.asarray(y)

    def batches(step):
        return x[idx[step]], y[idx[step]]

    return batches


@functools.partial(jax.jit, static_argnames="steps")
def train(params, learning_rate: jax.Array, batches_x, batches_y, steps: int):
    """``steps`` Adam steps at a constant rate on stacked batches, in one scan."""
    tx = optax.adam(learning_rate)

    def step(carry, batch):
        params, state = carry
        grads = jax.grad(loss_fn)(params, batch)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    init = (params, tx.init(params))
    (params, _), _ = jax.lax.scan(step, init, (batches_x, batches_y), length=steps)
    return params


@jax.jit
def evaluate(params, x, y) -> tuple[jax.Array, jax.Array]:
    """The full-batch loss and the accuracy."""
    logits = logits_fn(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)


def main(
    steps: int = 300, finder_steps: int = 100, out: str | None = None, seed: int = 0
) -> dict:
    """Runs the range test for Adam and SGD, plots it, trains Adam at the suggestion.

    Args:
      steps: Adam steps of the training run at the suggested rate.
      finder_steps: steps of each range test (``num_steps`` of ``lr_finder``).
      out: path of the PNG to write; ``None`` writes ``lr_finder.png`` in the
        system's temporary directory.
      seed: seed of the initialization and of the mini-batches.

    Returns:
      A dict with Adam's ``"learning_rates"``, ``"smoothed_losses"`` (NumPy
      arrays of shape ``(finder_steps,)``) and ``"suggested_lr"``;
      ``"sgd_suggested_lr"``; ``"png"`` (the path written); ``"initial_loss"``,
      ``"final_loss"`` and ``"baseline_loss"`` (full-batch training loss before
      training, after ``steps`` Adam steps at the suggestion and after as many
      at ``1e-6``) and ``"test_accuracy"`` (after training at the suggestion).
    """
    out = DEFAULT_OUT if out is None else str(out)
    x_train, y_train, x_test, y_test = load_data()
    params = init_mlp(seed)
    rng = np.random.default_rng(seed + 1)
    finder_idx = rng.integers(0, len(x_train), (finder_steps, BATCH_SIZE))
    batches = make_batches(finder_idx, x_train, y_train)
    finder = dict(min_lr=MIN_LR, max_lr=MAX_LR, num_steps=finder_steps)
    results = {
        "adam": garo_optax.lr_finder(loss_fn, params, batches, optax.adam, **finder),
        "sgd": garo_optax.lr_finder(loss_fn, params, batches, optax.sgd, **finder),
    }
    fig = Figure(figsize=(11, 4), layout="tight")
    for ax, (name, result) in zip(fig.subplots(1, 2), results.items()):
        garo_optax.plot_lr_finder(result, ax=ax)
        ax.set_title(f"optax.{name} on digits ({result.num_valid} valid steps)")
        print(
            f"{name:4s}: suggested lr {result.suggested_lr:.3g} "
            f"({result.num_valid}/{finder_steps} valid steps"
            f"{', diverged' if result.diverged else ''})"
        )
    fig.savefig(out, dpi=100)

    adam = results["adam"]
    train_idx = rng.integers(0, len(x_train), (steps, BATCH_SIZE))
    data = (x_train[train_idx], y_train[train_idx])
    trained = train(params, adam.suggested_lr, *data, steps=steps)
    baseline = train(params, MIN_LR, *data, steps=steps)
    initial_loss = float(evaluate(params, x_train, y_train)[0])
    final_loss = float(evaluate(trained, x_train, y_train)[0])
    baseline_loss = float(evaluate(baseline, x_train, y_train)[0])
    test_accuracy = float(evaluate(trained, x_test, y_test)[1])
    print(
        f"{steps} Adam steps: training loss {initial_loss:.3f} -> {final_loss:.3f} "
        f"at lr {adam.suggested_lr:.3g} (-> {baseline_loss:.3f} at lr {MIN_LR:g}), "
        f"test acc {test_accuracy:.3f}"
    )
    return {
        "learning_rates": adam.learning_rates,
        "smoothed_losses": adam.smoothed_losses,
        "suggested_lr": adam.suggested_lr,
        "sgd_suggested_lr": results["sgd"].suggested_lr,
        "png": out,
        "initial_loss": initial_loss,
        "final_loss": final_loss,
        "baseline_loss": baseline_loss,
        "test_accuracy": test_accuracy,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam training steps")
    parser.add_argument(
        "--finder-steps", type=int, default=100, help="steps of each range test"
    )
    parser.add_argument("--out", default=None, help="path of the PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    start = time.perf_counter()
    result = main(
        steps=args.steps, finder_steps=args.finder_steps, out=args.out, seed=args.seed
    )
    print(f"wrote {result['png']} in {time.perf_counter() - start:.1f} s")
