r"""Training-only task families: a recurrent net, an autoencoder, two MLPs.

They widen the meta-training distribution (``EXTRA_TRAIN_FAMILIES`` of
:mod:`garo_optax.tasks`) along axes the original training families lack,
recurrence and regression / reconstruction losses, without touching any
held-out family. All follow the conventions of :mod:`garo_optax.tasks`
(one static graph; widths as 0/1 masks whose inactive units start at and stay
at exactly zero; activations as one-hot mixtures; float32 throughout) and cost
well under a millisecond per jitted Adam step on CPU.

Examples:
  >>> import jax
  >>> from garo_optax.tasks import rnn_sequence_family
  >>> family = rnn_sequence_family()
  >>> task = family.task(family.sample(jax.random.key(0)))
  >>> params = task.init(jax.random.key(1))
  >>> batch = task.batch(jax.random.key(2), 0)
  >>> batch["inputs"].shape, batch["targets"].shape
  ((32, 16), (32, 16))
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax._src import validate
from garo_optax.tasks._classifiers import mlp_classifier_family
from garo_optax.tasks._core import Task, TaskFamily
from garo_optax.tasks._data import (
    sample_indices,
    sklearn_split,
    synthetic_classification_split,
)
from garo_optax.tasks._layers import check_activations, lead, mixed_activation
from garo_optax.tasks._sampling import (
    log_uniform,
    normal,
    one_hot_choice,
    uniform_int,
    uniforms,
    unit_uniform,
    width_mask,
)


def _check_widths(low_name: str, low: int, high_name: str, high: int) -> None:
    validate.check_integer(low_name, low, 1)
    validate.check_integer(high_name, high, 1)
    if low > high:
        raise ValueError(f"need {low_name} <= {high_name}, got ({low}, {high})")


def _filter_taps(delay: jax.Array, leak: jax.Array, length: int) -> jax.Array:
    """Unit-norm impulse response of a delayed leaky average, over ``length`` lags."""
    lag = jnp.arange(length, dtype=jnp.float32) - delay
    taps = jnp.where(lag >= 0, (1.0 - leak) * leak ** jnp.maximum(lag, 0.0), 0.0)
    return taps * jax.lax.rsqrt(jnp.sum(taps * taps))


def _causal_filter(x: jax.Array, taps: jax.Array) -> jax.Array:
    """y[..., t] = sum_{k <= t} taps[k] x[..., t - k], as one matmul."""
    length = x.shape[-1]
    lag = np.arange(length)[None, :] - np.arange(length)[:, None]  # t - t'
    toeplitz = jnp.where(lag >= 0, taps[np.clip(lag, 0, length - 1)], 0.0)
    return x @ toeplitz


def rnn_sequence_family(
    max_hidden: int = 16,
    min_hidden: int = 8,
    length: int = 16,
    max_delay: int = 4,
    batch_size: int = 32,
    eval_size: int = 128,
) -> TaskFamily:
    r"""A tanh RNN that learns a random causal filter of a noisy input sequence.

    Inputs :math:`u_t = x_t + \sigma \epsilon_t` with :math:`x, \epsilon` white
    standard normal; targets :math:`y_t = \sum_{k \le t} a_k x_{t-k}`, the
    clean signal through a delayed leaky average: :math:`a_k \propto (1 -
    \lambda) \lambda^{k-d}` for :math:`k \ge d`, normalised to
    :math:`\|a\| = 1` (unit target variance once the window is full). Delay
    :math:`d` uniform in {0, ..., ``max_delay``}, leak :math:`\lambda \sim U(0,
    0.9)` (a delayed copy at 0, a running mean near 1), noise :math:`\sigma`
    log-uniform [0.01, 0.3]. The model :math:`h_t = \tanh(w_{in} u_t + W h_{t-1}
    + b) \odot m`, :math:`\hat y_t = w_{out}^\top h_t + b_{out}` with a
    ``width_mask`` :math:`m` (``min_hidden`` to ``max_hidden`` units) and
    recurrent weights of standard deviation :math:`g / \sqrt{\text{width}}`,
    gain :math:`g` log-uniform [0.5, 1.5] (``init_scale``); loss the mean
    squared error over batch and time. ``eval_loss`` on ``eval_size`` fixed
    sequences.

    Args:
      max_hidden: the static hidden width.
      min_hidden: the smallest sampled width.
      length: the sequence length T.
      max_delay: the largest delay, in [0, T - 1].
      batch_size: sequences per mini-batch.
      eval_size: held-out sequences.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"rnn_sequence"``; configs
      hold ``taps`` (length,), ``noise_scale`` (), ``width_mask``
      (max_hidden,) and ``init_scale`` (). Batches are ``{"inputs", "targets"}``,
      each (batch_size, length). ``max_hidden**2 + 3 max_hidden + 1`` params
      (305 by default).
    """
    _check_widths("min_hidden", min_hidden, "max_hidden", max_hidden)
    for name, value in (
        ("length", length),
        ("batch_size", batch_size),
        ("eval_size", eval_size),
    ):
        validate.check_integer(name, value, 1)
    validate.check_integer("max_delay", max_delay, 0)
    if max_delay >= length:
        raise ValueError(f"max_delay must be in [0, {length - 1}], got {max_delay}")
    rng = np.random.default_rng(0)
    eval_signal = rng.standard_normal((eval_size, length)).astype(np.float32)
    eval_noise = rng.standard_normal((eval_size, length)).astype(np.float32)

    def sample(key):
        u = uniforms(key, 5)
        delay = uniform_int(u[0], 0, max_delay)
        return {
            "taps": _filter_taps(delay, 0.9 * u[1], length),
            "noise_scale": log_uniform(u[2], 0.01, 0.3),
            "width_mask": width_mask(u[3], min_hidden, max_hidden),
            "init_scale": log_uniform(u[4], 0.5, 1.5),
        }

    def task(config):
        mask = config["width_mask"]
        width = jnp.sum(mask)

        def data(signal, noise):
            inputs = signal + config["noise_scale"] * noise
            return {"inputs": inputs, "targets": _causal_filter(signal, config["taps"])}

        def init(key):
            h = max_hidden
            w_in, w_rec, w_out = unit_uniform(key, [(h,), (h, h), (h,)])
            return {
                "w_in": w_in * mask,
                "w_rec": w_rec
                * (mask[:, None] * mask[None, :])
                * (config["init_scale"] * jax.lax.rsqrt(width)),
                "b": jnp.zeros((h,), jnp.float32),
                "w_out": w_out * mask * jax.lax.rsqrt(width),
                "b_out": jnp.zeros((1,), jnp.float32),
            }

        def predict(params, inputs):
            def cell(h, u_t):
                z = u_t[:, None] * params["w_in"][None, :] + h @ params["w_rec"]
                h = jnp.tanh(z + lead(params["b"], 2)) * lead(mask, 2)
                return h, h @ params["w_out"]

            h0 = jnp.zeros((inputs.shape[0], max_hidden), jnp.float32)
            _, outputs = jax.lax.scan(cell, h0, inputs.T)
            return outputs.T + lead(params["b_out"], 2)

        def mse(params, batch):
            error = predict(params, batch["inputs"]) - batch["targets"]
            return jnp.mean(error * error)

        def batch(key, step):
            key = jax.random.fold_in(key, step)
            draws = normal(key, (2, batch_size, length))
            return data(draws[0], draws[1])

        def eval_loss(params):
            return mse(params, data(jnp.asarray(eval_signal), jnp.asarray(eval_noise)))

        return Task(init=init, loss=mse, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name="rnn_sequence", sample=sample, task=task)


def autoencoder_digits_family(
    max_code: int = 16,
    min_code: int = 8,
    batch_size: int = 128,
    activations: Sequence[str] = ("tanh", "relu"),
) -> TaskFamily:
    r"""A one-hidden-layer autoencoder 64 -> code -> 64 on the 8x8 digits.

    :math:`\hat x = W_d (\operatorname{act}(W_e x + b_e) \odot m) + b_d` on the
    standardised digits features (training-split statistics), loss the mean
    squared reconstruction error over batch and pixels. Config ``width_mask``
    :math:`m` (code size log-uniform in [``min_code``, ``max_code``]),
    ``activation`` one-hot over ``activations``, ``init_scale`` :math:`s`
    log-uniform [0.5, 2] (weights of standard deviation :math:`s /
    \sqrt{\text{active fan-in}}`, biases zero). Batches of ``batch_size`` from
    the 1437 training images; ``eval_loss`` on the 360 held-out ones.

    Args:
      max_code: the static code width.
      min_code: the smallest sampled code width.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"autoencoder_digits"``;
      configs hold ``width_mask`` (max_code,), ``activation`` one-hot and
      ``init_scale`` (). ``129 max_code + 64`` params (2,128 by default).
    """
    _check_widths("min_code", min_code, "max_code", max_code)
    validate.check_integer("batch_size", batch_size, 1)
    activations = check_activations(activations)
    split = sklearn_split("digits")
    n_train, n_in = split.x_train.shape
    x_train, x_test = jnp.asarray(split.x_train), jnp.asarray(split.x_test)

    def sample(key):
        u = uniforms(key, 3)
        return {
            "width_mask": width_mask(u[0], min_code, max_code),
            "activation": one_hot_choice(u[1], len(activations)),
            "init_scale": log_uniform(u[2], 0.5, 2.0),
        }

    def task(config):
        mask = config["width_mask"]
        scale = config["init_scale"]

        def init(key):
            w_e, w_d = unit_uniform(key, [(n_in, max_code), (max_code, n_in)])
            return {
                "encoder": {
                    "w": w_e * lead(mask, 2) * (scale / math.sqrt(n_in)),
                    "b": jnp.zeros((max_code,), jnp.float32),
                },
                "decoder": {
                    "w": w_d * mask[:, None] * (scale * jax.lax.rsqrt(jnp.sum(mask))),
                    "b": jnp.zeros((n_in,), jnp.float32),
                },
            }

        def mse(params, x):
            enc, dec = params["encoder"], params["decoder"]
            z = x @ enc["w"] + lead(enc["b"], 2)
            code = mixed_activation(z, config["activation"], activations)
            recon = (code * lead(mask, 2)) @ dec["w"] + lead(dec["b"], 2)
            return jnp.mean(jnp.square(recon - x))

        def loss(params, batch):
            return mse(params, batch["x"])

        def batch(key, step):
            return {"x": x_train[sample_indices(key, step, batch_size, n_train)]}

        def eval_loss(params):
            return mse(params, x_test)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name="autoencoder_digits", sample=sample, task=task)


def mlp_breast_cancer_family(
    max_width: int = 32,
    min_width: int = 8,
    max_depth: int = 2,
    min_depth: int = 1,
    batch_size: int = 32,
    activations: Sequence[str] = ("relu", "tanh"),
) -> TaskFamily:
    """Small MLP classifiers on scikit-learn's breast cancer data (30 features).

    As :func:`~garo_optax.tasks.mlp_digits_family` (width mask, layer gates,
    activation, init scale per config; two logits) on the 455 training / 114
    held-out samples. Adam at 1e-2 reaches its best held-out loss (about 0.1)
    after 50 to 400 steps, then overfits and the held-out loss rises again: a
    regime the other training families lack.

    Args:
      max_width: the static hidden width.
      min_width: the smallest sampled width.
      max_depth: the static number of hidden layers.
      min_depth: the smallest sampled depth.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"mlp_breast_cancer"``;
      configs as in :func:`~garo_optax.tasks.mlp_digits_family`. 2,114 params at
      most by default.
    """
    return mlp_classifier_family(
        "mlp_breast_cancer",
        sklearn_split("breast_cancer"),
        max_width=max_width,
        min_width=min_width,
        max_depth=max_depth,
        min_depth=min_depth,
        batch_size=batch_size,
        activations=activations,
    )


def mlp_synthetic_family(
    max_width: int = 128,
    min_width: int = 32,
    max_depth: int = 2,
    min_depth: int = 1,
    batch_size: int = 128,
    activations: Sequence[str] = ("relu", "tanh", "gelu"),
) -> TaskFamily:
    """MLP classifiers on a synthetic 10-class set, some fitting it, some not.

    As :func:`~garo_optax.tasks.mlp_digits_family` (width mask, layer gates,
    activation, init scale per config) on 4,000 training / 1,000 held-out
    samples of scikit-learn's ``make_classification`` (40 features, two
    clusters per class, 2% flipped labels:
    :func:`~garo_optax.tasks._data.synthetic_classification_split`), in noisy
    mini-batches of 128. Over 1000 steps of Adam, the wide two-layer configs
    memorize the training set (a rate decayed to zero ends 6 to 25 times lower
    than a constant one) while the narrow or one-layer ones underfit it (the
    constant rate ends 2 to 30% lower): both regimes of a real classifier, in
    one family, at up to 23,050 parameters (the largest training family).

    Args:
      max_width: the static hidden width.
      min_width: the smallest sampled width.
      max_depth: the static number of hidden layers.
      min_depth: the smallest sampled depth.
      batch_size: the mini-batch size.
      activations: names among relu, tanh, gelu, silu, chosen per config.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"mlp_synthetic"``;
      configs as in :func:`~garo_optax.tasks.mlp_digits_family`. 23,050 params
      at most by default.
    """
    return mlp_classifier_family(
        "mlp_synthetic",
        synthetic_classification_split(),
        max_width=max_width,
        min_width=min_width,
        max_depth=max_depth,
        min_depth=min_depth,
        batch_size=batch_size,
        activations=activations,
    )
