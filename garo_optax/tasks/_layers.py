"""Activations, broadcasting and losses shared by the task families.

A family picks its activation per config with a one-hot vector over a static
tuple of names (:func:`mixed_activation`): every candidate is computed and
mixed with the one-hot weights, exact and without ``lax.switch``, so that one
computation graph serves the whole family.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def check_activations(activations: Sequence[str]) -> tuple[str, ...]:
    """``activations`` as a tuple of names of :data:`ACTIVATIONS`, else ValueError."""
    activations = tuple(activations)
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if not activations or unknown:
        raise ValueError(
            f"activations must be a non-empty sequence of {sorted(ACTIVATIONS)}, "
            f"got {activations!r}"
        )
    return activations


def mixed_activation(
    z: jax.Array, one_hot: jax.Array, activations: tuple[str, ...]
) -> jax.Array:
    """sum_k one_hot[k] * act_k(z): exact selection without control flow."""
    if len(activations) == 1:
        return ACTIVATIONS[activations[0]](z)
    out = one_hot[0] * ACTIVATIONS[activations[0]](z)
    for k, name in enumerate(activations[1:], start=1):
        out = out + one_hot[k] * ACTIVATIONS[name](z)
    return out


def lead(v: jax.Array, ndim: int) -> jax.Array:
    """Reshapes a trailing-axis vector for explicit broadcasting to rank ndim."""
    return jnp.reshape(v, (1,) * (ndim - v.ndim) + v.shape)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; ``labels`` are int class indices."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)
    return -jnp.mean(picked)
