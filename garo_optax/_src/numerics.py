"""Small numerical helpers that `optax.tree` does not provide."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def widest_float(*dtypes) -> jnp.dtype:
    """float32, or float64 when one of `dtypes` is.

    The compute dtype of element-wise work and the dtype of scalar statistics:
    bfloat16 or float16 scalars would make adaptive learning rates jump in coarse
    steps. Picked by width, since `jnp.promote_types` raises under strict dtype
    promotion.

    Args:
      *dtypes: dtypes (or anything `jnp.dtype` accepts).

    Returns:
      `float32`, or the widest of `dtypes` if it is wider.
    """
    wide = [jnp.dtype(d) for d in dtypes if jnp.dtype(d).itemsize > 4]
    return max(wide, key=lambda d: d.itemsize) if wide else jnp.dtype(jnp.float32)


def scalar_dtype(tree) -> jnp.dtype:
    """The dtype of a transform's scalar statistics for a tree of arrays.

    Args:
      tree: a pytree of arrays or `jax.ShapeDtypeStruct` leaves.

    Returns:
      `float32`, or `float64` if any leaf is float64 (see `widest_float`).
    """
    return widest_float(*(leaf.dtype for leaf in jax.tree.leaves(tree)))


def squared_norm(x: jax.Array, dtype) -> jax.Array:
    """Squared Euclidean norm of one array, accumulated in `dtype`.

    XLA fuses the cast and the square into the reduction, which reads `x` once.
    Not `jnp.vdot`: under an explicit-sharding mesh a dot whose contracting
    dimensions are sharded needs an output sharding, which a sum does not.

    Args:
      x: an array of any shape.
      dtype: the accumulation and result dtype.

    Returns:
      A scalar of dtype `dtype`.
    """
    return jnp.sum(jnp.square(x.astype(dtype)))


def fused_sums(*terms: jax.Array, dtype) -> tuple[jax.Array, ...]:
    """The sums of same-shaped element-wise terms, in one pass over memory.

    One variadic reduction: XLA fuses the element-wise producers of every term
    into it, so ``fused_sums(g * g, g * v, v * v)`` reads ``g`` and ``v`` once,
    where three ``jnp.sum`` or ``jnp.vdot`` calls are three passes (each a
    separate loop on XLA:CPU).

    Args:
      *terms: arrays of one shape (element-wise expressions of the inputs).
      dtype: the accumulation and result dtype.

    Returns:
      One scalar of dtype `dtype` per term.
    """
    terms = tuple(t.astype(dtype) for t in terms)
    if terms[0].ndim == 0:
        return terms
    zeros = tuple(jnp.zeros([], dtype) for _ in terms)
    dims = tuple(range(terms[0].ndim))
    return tuple(jax.lax.reduce(terms, zeros, _add_elementwise, dims))


def _add_elementwise(a: tuple, b: tuple) -> tuple:
    # One module-level reducer: `lax.reduce` caches its computation by the
    # function's identity, so a fresh lambda per call recompiled every
    # un-jitted update.
    return tuple(x + y for x, y in zip(a, b))


def as_schedule(
    learning_rate: optax.ScalarOrSchedule,
) -> Callable[[jax.Array], jax.Array]:
    """Returns `learning_rate` as a function of the step count.

    Args:
      learning_rate: a scalar or an `optax.Schedule`.

    Returns:
      A function mapping a step count to the learning rate.
    """
    if callable(learning_rate):
        return learning_rate
    return lambda count: learning_rate


def num_nonempty_leaves(tree) -> int:
    """Number of leaves with at least one element (a static Python int).

    Args:
      tree: a pytree of arrays; `None` and `optax.MaskedNode` are not leaves.

    Returns:
      The count, known at trace time.
    """
    return sum(1 for leaf in jax.tree.leaves(tree) if leaf.size > 0)
