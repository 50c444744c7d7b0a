"""Small numerical helpers that `optax.tree` does not provide."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def scalar_dtype(tree) -> jnp.dtype:
    """The dtype of a transform's scalar statistics for a tree of arrays.

    float32 whatever the leaves' precision (bfloat16 or float16 scalars would make
    adaptive learning rates jump in coarse steps), float64 when a leaf is float64.

    Args:
      tree: a pytree of arrays or `jax.ShapeDtypeStruct` leaves.

    Returns:
      `float32`, or `float64` if any leaf is float64.
    """
    dtypes = [jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(tree)]
    return jnp.result_type(jnp.float32, *dtypes) if dtypes else jnp.dtype(jnp.float32)


def squared_norm(x: jax.Array, dtype) -> jax.Array:
    """Squared Euclidean norm of one array, accumulated in `dtype`.

    `jnp.vdot` lowers to a single dot-product reduction that reads `x` once.

    Args:
      x: an array of any shape.
      dtype: the accumulation and result dtype.

    Returns:
      A scalar of dtype `dtype`.
    """
    return jnp.vdot(x, x, preferred_element_type=dtype).astype(dtype)


def as_schedule(learning_rate: optax.ScalarOrSchedule) -> Callable[[jax.Array], jax.Array]:
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
