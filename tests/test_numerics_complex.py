"""numerics on complex inputs: real dtypes for statistics, |x|^2 for norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from garo_optax._src import numerics

C64 = jnp.array([[1j, 3 + 4j], [-2 - 1j, 0.5]], jnp.complex64)


@pytest.mark.parametrize(
    "dtypes, widest, compute",
    [
        ((jnp.bfloat16,), jnp.float32, jnp.float32),
        ((jnp.complex64,), jnp.float32, jnp.complex64),
        ((jnp.complex64, jnp.bfloat16), jnp.float32, jnp.complex64),
        ((jnp.complex128,), jnp.float64, jnp.complex128),
        ((jnp.complex64, jnp.float64), jnp.float64, jnp.complex128),
        ((jnp.float16, jnp.float64), jnp.float64, jnp.float64),
    ],
)
def test_dtype_helpers(dtypes, widest, compute):
    assert numerics.widest_float(*dtypes) == widest
    assert numerics.compute_dtype(*dtypes) == compute
    assert numerics.real_dtype(compute) == widest
    tree = [jax.ShapeDtypeStruct((2,), d) for d in dtypes]
    assert numerics.scalar_dtype(tree) == widest


def test_abs_square_and_squared_norm():
    expected = np.abs(np.asarray(C64)) ** 2
    magnitude = numerics.abs_square(C64)
    assert magnitude.dtype == jnp.float32
    np.testing.assert_allclose(magnitude, expected, rtol=1e-7)
    # jnp.square is x^2, not |x|^2: the bug this helper replaces.
    assert jnp.square(jnp.asarray(1j)) == -1
    norm = numerics.squared_norm(C64, jnp.float32)
    assert norm.dtype == jnp.float32
    assert norm == pytest.approx(expected.sum(), rel=1e-7)
    real = jnp.array([1.0, -2.0], jnp.bfloat16)
    assert numerics.squared_norm(real, jnp.float32) == 5.0


def test_fused_sums_of_complex_terms():
    other = C64[::-1] * (1 - 2j)
    square, inner, raw = numerics.fused_sums(
        numerics.abs_square(C64),
        numerics.real_product(C64, other),
        C64,  # a complex term is summed as a complex number
        dtype=jnp.float32,
    )
    a, b = np.asarray(C64, np.complex128), np.asarray(other, np.complex128)
    assert square.dtype == inner.dtype == jnp.float32
    assert raw.dtype == jnp.complex64
    assert square == pytest.approx(np.sum(np.abs(a) ** 2), rel=1e-6)
    # The inner product of the (real, imaginary) pairs.
    pairs = lambda z: np.stack([z.real, z.imag], axis=-1)
    assert inner == pytest.approx(np.sum(pairs(a) * pairs(b)), rel=1e-6)
    np.testing.assert_allclose(raw, a.sum(), rtol=1e-6)


def test_as_real_drops_a_zero_imaginary_part():
    value = numerics.as_real(jnp.asarray(0.25, jnp.complex64), jnp.float32)
    assert value.dtype == jnp.float32 and value == 0.25
    assert numerics.as_real(0.5, jnp.float32).dtype == jnp.float32
