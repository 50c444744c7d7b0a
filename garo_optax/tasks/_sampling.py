"""Random configs and initial parameters for the task families.

Configs are sampled from one uniform draw per family (:func:`uniforms`), then
mapped to each field (:func:`log_uniform`, :func:`uniform_int`,
:func:`width_mask`, :func:`one_hot_choice`); parameters are initialised from one
uniform draw per ``init`` (:func:`unit_uniform`): fewer random-number call sites
compile much faster on XLA:CPU.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Standard normal float32 samples of ``shape``."""
    return jax.random.normal(key, tuple(shape), jnp.float32)


def unit_uniform(key: jax.Array, shapes: Sequence[Sequence[int]]) -> list[jax.Array]:
    """Arrays of the given shapes, uniform with mean 0 and variance 1, from one draw.

    Parameter inits use this instead of ``jax.random.normal``: one uniform draw
    compiles several times faster on XLA:CPU than one normal draw per leaf.
    """
    sizes = [math.prod(shape) for shape in shapes]
    flat = jax.random.uniform(
        key, (sum(sizes),), jnp.float32, -math.sqrt(3.0), math.sqrt(3.0)
    )
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(jnp.reshape(flat[start : start + size], tuple(shape)))
        start += size
    return out


def uniforms(key: jax.Array, n: int) -> jax.Array:
    """``n`` float32 samples of U(0, 1): a family's whole config in one draw."""
    return jax.random.uniform(key, (n,), jnp.float32)


def log_uniform(u: jax.Array, low: float, high: float) -> jax.Array:
    """Maps U(0, 1) samples to log-uniform samples on [low, high]."""
    return jnp.exp(math.log(low) + (math.log(high) - math.log(low)) * u)


def uniform_int(u: jax.Array, low: int, high: int) -> jax.Array:
    """Maps a U(0, 1) sample to a uniform integer in [low, high], as float32."""
    return jnp.clip(jnp.floor(low + (high - low + 1) * u), low, high)


def width_mask(u: jax.Array, low: int, high: int) -> jax.Array:
    """A (high,) 0/1 mask whose first n entries are 1, n log-uniform in [low, high]."""
    n = jnp.floor(jnp.exp(math.log(low) + (math.log(high + 1) - math.log(low)) * u))
    n = jnp.clip(n, low, high)
    return (jnp.arange(high, dtype=jnp.float32) < n).astype(jnp.float32)


def one_hot_choice(u: jax.Array, n: int) -> jax.Array:
    """A float32 one-hot vector of length n; its index is uniform, from u ~ U(0, 1)."""
    index = uniform_int(u, 0, n - 1)
    return (jnp.arange(n, dtype=jnp.float32) == index).astype(jnp.float32)
