"""Small numerical helpers that `optax.tree` does not provide."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def real_dtype(dtype) -> jnp.dtype:
    """The real dtype of a dtype's components: complex64 -> float32.

    Args:
      dtype: a dtype (or anything `jnp.dtype` accepts).

    Returns:
      float32 for complex64, float64 for complex128, else `dtype` itself.
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.finfo(dtype).dtype
    return dtype


def complex_dtype(dtype) -> jnp.dtype:
    """The complex dtype whose components have the real `dtype`: float32 -> complex64.

    Args:
      dtype: float32 or float64 (or a complex dtype, returned as it is).

    Returns:
      complex64 for float32 (and narrower floats), complex128 for float64.
    """
    width = real_dtype(dtype).itemsize
    return jnp.dtype(jnp.complex128 if width > 4 else jnp.complex64)


def widest_float(*dtypes) -> jnp.dtype:
    """float32, or float64 when one of `dtypes` is (complex: its components).

    The dtype of scalar statistics and learning rates, which are real also for
    complex parameters: complex64 counts as float32 and complex128 as float64.
    bfloat16 or float16 scalars would make adaptive learning rates jump in
    coarse steps. Picked by width, since `jnp.promote_types` raises under strict
    dtype promotion. For the element-wise work on possibly complex leaves see
    `compute_dtype`.

    Args:
      *dtypes: dtypes (or anything `jnp.dtype` accepts).

    Returns:
      `float32`, or `float64` if one of `dtypes` (or its components) is.

    Examples:
      >>> import jax.numpy as jnp
      >>> widest_float(jnp.bfloat16), widest_float(jnp.complex64)
      (dtype('float32'), dtype('float32'))
    """
    wide = [real_dtype(d) for d in dtypes if real_dtype(d).itemsize > 4]
    return max(wide, key=lambda d: d.itemsize) if wide else jnp.dtype(jnp.float32)


def compute_dtype(*dtypes) -> jnp.dtype:
    """The dtype of element-wise work on leaves of `dtypes`: real or complex.

    `widest_float`, made complex when one of `dtypes` is complex, so that a
    complex leaf never loses its imaginary part.

    Args:
      *dtypes: dtypes (or anything `jnp.dtype` accepts).

    Returns:
      float32, float64, complex64 or complex128.

    Examples:
      >>> import jax.numpy as jnp
      >>> compute_dtype(jnp.bfloat16), compute_dtype(jnp.complex64)
      (dtype('float32'), dtype('complex64'))
    """
    real = widest_float(*dtypes)
    if any(jnp.issubdtype(jnp.dtype(d), jnp.complexfloating) for d in dtypes):
        return complex_dtype(real)
    return real


def scalar_dtype(tree) -> jnp.dtype:
    """The dtype of a transform's scalar statistics for a tree of arrays.

    Args:
      tree: a pytree of arrays or `jax.ShapeDtypeStruct` leaves.

    Returns:
      `float32`, or `float64` if any leaf is float64 or complex128 (see
      `widest_float`); never complex.
    """
    return widest_float(*(leaf.dtype for leaf in jax.tree.leaves(tree)))


def abs_square(x: jax.Array) -> jax.Array:
    r"""The element-wise squared magnitude :math:`|x|^2 = x \bar x`, real.

    `jnp.square` is :math:`x^2`, which for complex `x` is complex and not the
    squared magnitude (``square(1j) == -1``).

    Args:
      x: a real or complex array.

    Returns:
      `x * x` for real `x`; ``Re(x * conj(x))`` in the real dtype of `x` for
      complex `x`.

    Examples:
      >>> import jax.numpy as jnp
      >>> abs_square(jnp.array([1j, 3.0 + 4.0j]))
      Array([ 1., 25.], dtype=float32)
    """
    if jnp.iscomplexobj(x):
        return (jnp.conj(x) * x).real
    return jnp.square(x)


def real_product(x: jax.Array, y: jax.Array) -> jax.Array:
    r"""The element-wise terms of the real inner product, :math:`\mathrm{Re}(x \bar y)`.

    Their sum is the inner product of `x` and `y` as real vectors (complex
    entries as pairs of reals), which is what cosines and projections of
    complex parameters need.

    Args:
      x: a real or complex array.
      y: an array of the same shape and dtype.

    Returns:
      `x * y` for real arrays; ``Re(x * conj(y))`` (real) for complex ones.
    """
    if jnp.iscomplexobj(x) or jnp.iscomplexobj(y):
        return (x * jnp.conj(y)).real
    return x * y


def as_real(x: jax.typing.ArrayLike, dtype) -> jax.Array:
    """A scalar hyperparameter as a real array of `dtype`.

    `optax.inject_hyperparams` casts hyperparameters to the parameters' dtype,
    complex for complex parameters; their (zero) imaginary part is dropped here
    instead of in a complex-to-real cast, which JAX deprecates.

    Args:
      x: a real or complex scalar (Python number or array).
      dtype: a real dtype.

    Returns:
      The real part of `x` as an array of `dtype`.
    """
    if jnp.iscomplexobj(x):
        x = jnp.real(x)
    return jnp.asarray(x, dtype)


def squared_norm(x: jax.Array, dtype) -> jax.Array:
    """Squared Euclidean norm of one real or complex array, accumulated in `dtype`.

    The sum of :math:`|x_i|^2` (`abs_square`), real also for complex `x`. XLA
    fuses the cast and the square into the reduction, which reads `x` once.
    Not `jnp.vdot`: under an explicit-sharding mesh a dot whose contracting
    dimensions are sharded needs an output sharding, which a sum does not.

    Args:
      x: an array of any shape, real or complex.
      dtype: the (real) accumulation and result dtype.

    Returns:
      A scalar of dtype `dtype`.
    """
    dtype = real_dtype(dtype)
    if jnp.iscomplexobj(x):
        return jnp.sum(abs_square(x.astype(complex_dtype(dtype))))
    return jnp.sum(jnp.square(x.astype(dtype)))


def fused_sums(*terms: jax.Array, dtype) -> tuple[jax.Array, ...]:
    """The sums of same-shaped element-wise terms, in one pass over memory.

    One variadic reduction: XLA fuses the element-wise producers of every term
    into it, so ``fused_sums(g * g, g * v, v * v)`` reads ``g`` and ``v`` once,
    where three ``jnp.sum`` or ``jnp.vdot`` calls are three passes (each a
    separate loop on XLA:CPU).

    For complex arrays pass real terms: ``abs_square(g)`` for a squared norm and
    ``real_product(g, v)`` for an inner product (``g * g`` is not
    :math:`|g|^2`). A complex term is summed as a complex number, in the complex
    dtype of `dtype`'s width, never cast to a real one.

    Args:
      *terms: arrays of one shape (element-wise expressions of the inputs).
      dtype: the (real) accumulation and result dtype.

    Returns:
      One scalar per term: of dtype `dtype`, or its complex counterpart for a
      complex term.
    """
    dtype = real_dtype(dtype)
    terms = tuple(
        t.astype(complex_dtype(dtype) if jnp.iscomplexobj(t) else dtype) for t in terms
    )
    if terms[0].ndim == 0:
        return terms
    zeros = tuple(jnp.zeros([], t.dtype) for t in terms)
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
