"""GARO telemetry: what the recurrent controller does to lr, momentum and decay.

What it shows:

* ``garo_optax.garo`` with a randomly drawn (frozen) controller whose heads are
  switched on (``head_init_scale=1.0``; at the default 0.1 the values barely
  move, and at 0 GARO is plain SGD), used as an ordinary optax transformation
  inside ``nnx.Optimizer(model, tx, wrt=nnx.Param)``;
* a jitted train step (``nnx.jit``) that samples its own mini-batch of 128 from a
  key and passes the loss on with ``optimizer.update(model, grads, value=loss)``
  (GARO's fourth feature is the normalized loss);
* the telemetry: the learning rate, momentum and weight decay GARO used at each
  step are state fields, read inside the jitted step with
  ``garo_optax.hyperparams(nnx.as_pure(optimizer.opt_state))`` and returned
  with the loss (no host callbacks, no ``jax.debug``);
* a four-panel PNG (matplotlib, Agg backend): training loss, lr, momentum and
  weight decay against the step.

The model is a multilayer perceptron with hidden widths 64 and 32 and 10
outputs (64-32-10), trained on scikit-learn's bundled 8x8 digits (1,797 images,
10 classes; no download), standardized, with a fixed 75/25 train/test split.

With seed 0 the loss falls from about 2.3 to 0.55 and the test accuracy reaches
about 0.9; lr stays near 0.0103, the momentum settles near 0.3 (from 0.5 at
h = 0) and the weight decay near 1e-6. Run time: the default 300 steps take
about 15 to 25 s on a 2-core CPU, a third of it JAX start-up and compilation.
Usage::

    python examples/garo_telemetry.py --steps 300 --out garo_telemetry.png

Without ``--out`` the PNG goes to ``garo_telemetry.png`` in the system's
temporary directory.
"""

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import garo_optax

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

BATCH_SIZE = 128
HEAD_INIT_SCALE = 1.0
DEFAULT_OUT = os.path.join(tempfile.gettempdir(), "garo_telemetry.png")


class MLP(nnx.Module):
    """A 64-32-10 multilayer perceptron with ReLU activations."""

    def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(in_features, 64, rngs=rngs)
        self.hidden2 = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.hidden1(x))
        x = nnx.relu(self.hidden2(x))
        return self.out(x)


def load_data():
    """Returns standardized ``(x_train, y_train, x_test, y_test)`` as jax arrays."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=0.25,
        random_state=0,
        stratify=digits.target,
    )
    scaler = StandardScaler().fit(x_train)
    x_train = scaler.transform(x_train).astype(np.float32)
    x_test = scaler.transform(x_test).astype(np.float32)
    return (
        jnp.asarray(x_train),
        jnp.asarray(y_train, jnp.int32),
        jnp.asarray(x_test),
        jnp.asarray(y_test, jnp.int32),
    )


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_optimizer(model: MLP, seed: int = 0) -> nnx.Optimizer:
    """GARO with momentum 0.5 at h = 0 and a live (random, frozen) controller."""
    tx = garo_optax.garo(momentum_init=0.5, head_init_scale=HEAD_INIT_SCALE, seed=seed)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def read_hyperparams(optimizer: nnx.Optimizer) -> dict[str, jax.Array]:
    """The ``lr``, ``mom`` and ``wd`` GARO used at its last step."""
    return garo_optax.hyperparams(nnx.as_pure(optimizer.opt_state))


@nnx.jit
def train_step(model, optimizer, key, x_train, y_train):
    """One GARO step on a mini-batch drawn inside the jitted function.

    Returns the mini-batch loss and the hyperparameters used at this step.
    """
    # A fresh batch key per step, derived from the optimizer's step counter.
    key = jax.random.fold_in(key, optimizer.step[...])
    idx = jax.random.choice(key, x_train.shape[0], (BATCH_SIZE,), replace=False)
    loss, grads = nnx.value_and_grad(loss_fn)(model, x_train[idx], y_train[idx])
    optimizer.update(model, grads, value=loss)
    # Read after the update: the state holds the values this step used.
    return loss, read_hyperparams(optimizer)


@nnx.jit
def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def plot(losses, lr, mom, wd, out: str, initial: dict | None = None) -> str:
    """Draws the four telemetry panels against the step and saves them as a PNG.

    ``initial`` (the hyperparameters at h = 0) is drawn as dashed lines.
    """
    initial = initial or {}
    steps = np.arange(1, len(losses) + 1)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = (
        (axes[0, 0], losses, None, "training loss (mini-batch)", "tab:blue"),
        (axes[0, 1], lr, "lr", "learning rate lr", "tab:orange"),
        (axes[1, 0], mom, "mom", "momentum mom", "tab:green"),
        (axes[1, 1], wd, "wd", "weight decay wd", "tab:red"),
    )
    for ax, values, name, title, color in panels:
        ax.plot(steps, values, color=color, linewidth=1.2, label="used at the step")
        if name in initial:
            ax.axhline(
                float(initial[name]), color="gray", linestyle="--", label="at h = 0"
            )
            ax.legend(loc="best", fontsize="small")
        ax.set(title=title)
        ax.grid(alpha=0.3)
    axes[0, 0].set_yscale("log")
    axes[1, 1].set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(
        f"GARO on digits (momentum_init=0.5, head_init_scale={HEAD_INIT_SCALE:g})"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return str(out)


def main(steps: int = 300, out: str | None = None, seed: int = 0) -> dict:
    """Trains the MLP on digits with GARO, records its hyperparameters, plots them.

    Args:
      steps: number of optimizer steps (mini-batches of 128).
      out: path of the PNG to write; ``None`` writes ``garo_telemetry.png`` in
        the system's temporary directory.
      seed: seed of the model initialization, the batch sampling and the GARO
        controller.

    Returns:
      A dict with ``"losses"`` (training mini-batch loss per step), ``"lr"``,
      ``"mom"`` and ``"wd"`` (the values GARO used at each step), all NumPy
      arrays of shape ``(steps,)``; ``"initial_hyperparams"`` and
      ``"final_hyperparams"`` (dicts of ``lr``, ``mom``, ``wd`` read from the
      optimizer state before the first and after the last step);
      ``"test_accuracy"`` (after the last step) and ``"png"`` (the path written).
    """
    out = DEFAULT_OUT if out is None else str(out)
    x_train, y_train, x_test, y_test = load_data()
    model = MLP(x_train.shape[1], 10, rngs=nnx.Rngs(seed))
    optimizer = make_optimizer(model, seed=seed)
    as_numpy = lambda hp: {name: np.asarray(v) for name, v in hp.items()}
    initial = as_numpy(read_hyperparams(optimizer))
    key = jax.random.key(seed)

    log_every = max(1, steps // 10)
    losses, history = [], []
    for step in range(1, steps + 1):
        loss, hp = train_step(model, optimizer, key, x_train, y_train)
        losses.append(loss)  # device arrays: no host sync inside the loop
        history.append(hp)
        if step % log_every == 0 or step == steps:
            acc = accuracy(model, x_test, y_test)
            print(
                f"step {step:5d}  loss {float(loss):.4f}  test acc {float(acc):.3f}  "
                f"lr {float(hp['lr']):.3e}  mom {float(hp['mom']):+.3f}  "
                f"wd {float(hp['wd']):.2e}"
            )

    losses = np.asarray(jax.device_get(losses))
    history = {
        name: np.asarray(jax.device_get([hp[name] for hp in history]))
        for name in ("lr", "mom", "wd")
    }
    png = plot(losses, history["lr"], history["mom"], history["wd"], out, initial)
    return {
        "losses": losses,
        **history,
        "initial_hyperparams": initial,
        "final_hyperparams": as_numpy(read_hyperparams(optimizer)),
        "test_accuracy": float(accuracy(model, x_test, y_test)),
        "png": png,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--out", default=None, help="path of the PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    start = time.perf_counter()
    result = main(steps=args.steps, out=args.out, seed=args.seed)
    print(
        f"final test accuracy {result['test_accuracy']:.3f}, "
        f"lr {result['lr'].min():.3e} .. {result['lr'].max():.3e}, "
        f"mom {result['mom'].min():+.3f} .. {result['mom'].max():+.3f}, "
        f"wrote {result['png']} in {time.perf_counter() - start:.1f} s"
    )
