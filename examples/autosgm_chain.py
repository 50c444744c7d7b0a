"""AutoSGM inside ``optax.chain``: clipping, a Markov numerator and a window.

What it shows:

* ``garo_optax.autosgm`` as one link of an optax chain, after
  ``optax.clip_by_global_norm(1.0)``: AutoSGM sees the clipped gradient;
* the filter of the README (pole 0.9, zero 0.5, between heavy ball and
  Nesterov), the ``"markov"`` correlation numerator (``learning_rate`` is then
  the trust-region bound of the per-leaf rate) and a periodic raised-cosine
  window, ``garo_optax.window_schedule("raised_cosine", length=...)``, which
  decays the rate to 0 over each frame and restarts it (warm restarts);
* the effective learning rate of each step, per leaf in the state field
  ``lr`` (window times numerator), read with ``optax.tree.get(state, "lr")``
  inside the jitted step and averaged over the leaves.

The model is a pure-JAX 64-64-10 MLP (a list of ``(w, b)`` pairs) trained
full-batch on scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; no
download), standardized, with a fixed 75/25 train/test split.

With seed 0 the gradient norm starts at 2.4 and stays above the clip's 1 for
about 30 steps; the loss falls from 3.0 to 5e-4 (test accuracy about 0.97);
the mean rate falls to near 0 at the end of each window and jumps back at
each restart. Run time: the default 300 steps (three windows of 100) take
about 10 to 20 s on a 2-core CPU, most of it JAX start-up and compilation.
Usage::

    python examples/autosgm_chain.py --steps 300 --window 100
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

import garo_optax

SIZES = (64, 64, 64, 10)
CLIP = 1.0


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
    y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
    return tuple(map(jnp.asarray, (x_train, y_train, x_test, y_test)))


def init_mlp(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal weights and zero biases for ``SIZES`` (NumPy: nothing to compile)."""
    rng = np.random.default_rng(seed)
    layers = []
    for m, n in zip(SIZES[:-1], SIZES[1:]):
        w = rng.standard_normal((m, n)) * np.sqrt(2.0 / m)
        layers.append((w.astype(np.float32), np.zeros(n, np.float32)))
    return layers


def predict(params, x: jax.Array) -> jax.Array:
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b[None])
    w, b = params[-1]
    return x @ w + b[None]


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()


def make_optimizer(learning_rate: float, window: int, clip: bool = True):
    """Global-norm clipping at 1, then AutoSGM (``clip=False``: AutoSGM alone)."""
    autosgm = garo_optax.autosgm(
        learning_rate,
        pole=0.9,
        zero=0.5,
        numerator="markov",
        window=garo_optax.window_schedule("raised_cosine", length=window),
    )
    return optax.chain(optax.clip_by_global_norm(CLIP), autosgm) if clip else autosgm


def make_train_step(tx: optax.GradientTransformation):
    @jax.jit
    def train_step(params, opt_state, x, y):
        """One full-batch step; returns the loss, gradient norm and mean lr too."""
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        lr = jnp.mean(jnp.stack(jax.tree.leaves(optax.tree.get(opt_state, "lr"))))
        params = optax.apply_updates(params, updates)
        return params, opt_state, (loss, optax.tree.norm(grads), lr)

    return train_step


def main(
    steps: int = 300, window: int = 100, learning_rate: float = 0.05, seed: int = 0
) -> dict:
    """Trains the MLP on digits with clipped AutoSGM and prints its progress.

    Args:
      steps: number of full-batch optimizer steps.
      window: the window's frame length (the rate restarts every ``window``).
      learning_rate: AutoSGM's ``learning_rate`` (the numerator's bound).
      seed: seed of the initialization.

    Returns:
      A dict of NumPy arrays of shape ``(steps,)``: ``"loss"`` (training loss
      before each step), ``"grad_norm"`` (global norm of the gradient before
      clipping) and ``"lr"`` (mean over leaves of the effective learning rate of
      each step); and ``"test_accuracy"`` after the last step.
    """
    x_train, y_train, x_test, y_test = load_data()
    params = init_mlp(seed)
    tx = make_optimizer(learning_rate, window)
    opt_state = tx.init(params)
    train_step = make_train_step(tx)
    log_every = max(1, steps // 10)
    history = []
    for step in range(1, steps + 1):
        params, opt_state, metrics = train_step(params, opt_state, x_train, y_train)
        history.append(metrics)  # device arrays: no host sync inside the loop
        if step % log_every == 0 or step == steps:
            loss, norm, lr = map(float, metrics)
            print(f"step {step:5d}  loss {loss:.4f}  |g| {norm:.3f}  lr {lr:.2e}")
    loss, grad_norm, lr = (np.asarray(v) for v in zip(*jax.device_get(history)))
    accuracy = jnp.mean(jnp.argmax(predict(params, x_test), -1) == y_test)
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": lr,
        "test_accuracy": float(accuracy),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--window", type=int, default=100, help="window length")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate bound")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    start = time.perf_counter()
    result = main(args.steps, args.window, args.lr, args.seed)
    print(
        f"final test accuracy {result['test_accuracy']:.3f}, "
        f"{time.perf_counter() - start:.1f} s"
    )
