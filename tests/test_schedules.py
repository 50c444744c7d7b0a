"""Tests of :func:`garo_optax.window_schedule`, the AutoSGM windows (spec §6, §8).

The reference values of spec §6.3 and §6.2 are indexed by the original's 1-based
step t; a schedule takes optax's 0-based count c = t - 1. Besides the tables, a
slow stateful re-implementation of the original window, written here from the
spec (frame offset q, advance at the end of a frame, a popped list for the
Kronecker sequence), checks every shape, mode, flat top and sub-shape count.
"""

import math

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

L10 = 10
COUNTS = np.arange(12)  # steps t = 1 .. 12

# Spec §6.3, L = 10, x = 0, steps t = 1..12 (count 0..11). Rows that list fewer
# than 12 values are completed by periodicity (t = 11, 12 repeat t = 1, 2).
SPEC_TABLE = {
    "rcm1 n2 half": (
        dict(shape="raised_cosine", order=2.0),
        [1, 0.975528, 0.904508, 0.793893, 0.654508, 0.5, 0.345492, 0.206107,
         0.095492, 0.024472, 1, 0.975528],
    ),
    "rcm1 n2 full": (
        dict(shape="raised_cosine", order=2.0, mode="full"),
        [0, 0.095492, 0.345492, 0.654508, 0.904508, 1, 0.904508, 0.654508,
         0.345492, 0.095492, 0, 0.095492],
    ),
    "rcm1 n2 half e=.5": (
        dict(shape="raised_cosine", order=2.0, flat_top=0.5),
        [1, 1, 1, 1, 1, 1, 0.904508, 0.654508, 0.345492, 0.095492, 1, 1],
    ),
    "rcm2 n1 half": (
        dict(shape="polynomial", order=1.0),
        [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 1, 0.9],
    ),
    "rcm2 n1 full": (
        dict(shape="polynomial", order=1.0, mode="full"),
        [0, 0.2, 0.4, 0.6, 0.8, 1, 0.8, 0.6, 0.4, 0.2, 0, 0.2],
    ),
    "rcm3 n.5 half": (
        dict(shape="exponential", order=0.5),
        [1, 0.866066, 0.741101, 0.624505, 0.515717, 0.414214, 0.319508,
         0.231144, 0.148698, 0.071773, 1, 0.866066],
    ),
    "rcm4 n2 half": (
        dict(shape="simple_polynomial", order=2.0),
        [1, 0.9801, 0.9216, 0.8281, 0.7056, 0.5625, 0.4096, 0.2601, 0.1296,
         0.0361, 1, 0.9801],
    ),
    "rcm5 n4 half": (
        dict(shape="logistic", order=4.0),
        [1, 0.955442, 0.886143, 0.785542, 0.653208, 0.5, 0.346792, 0.214458,
         0.113857, 0.044558, 1, 0.955442],
    ),
    "rcm6 n4 half": (
        dict(shape="late_logistic", order=4.0),
        [1.057881, 1.051458, 1.040447, 1.021785, 0.990751, 0.940741, 0.864097,
         0.755227, 0.616165, 0.460784, 1.057881, 1.051458],
    ),
    "rcm6 n4 full": (
        dict(shape="late_logistic", order=4.0, mode="full"),
        [0.311111, 0.616165, 0.864097, 0.990751, 1.040447, 1.057881, 1.040447,
         0.990751, 0.864097, 0.616165, 0.311111, 0.616165],
    ),
}  # fmt: skip

# Spec §6.2: rcm 1, n 2, L 10, Kronecker sequence, the first values of a frame.
KRONECKER_SPEC = [1, 0.980072, 0.868684, 0.759589, 0.543713, 0.402754, 0.318813,
                  0.195781, 0.051609, 0.007643]  # fmt: skip

# The tables have 6 decimals: half a unit of the last one, plus float32 rounding.
TABLE_TOL = dict(rtol=1e-5, atol=5e-7)


def _values(schedule, counts) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(counts, jnp.int32)))


# ---------------------------------------------------------------------------
# A stateful re-implementation of the original window (spec §6.1, §6.2), of the
# 1-based step t, in Python floats (float64).

_RCM = {
    "raised_cosine": 1,
    "polynomial": 2,
    "exponential": 3,
    "simple_polynomial": 4,
    "logistic": 5,
    "late_logistic": 6,
}


def _sig(f, n, centre, rate=1.0):
    return 1.0 / (1.0 + 2.0 ** (2.0 * rate * n * (f - centre)))


def _z_one(rcm, f, n, exact):
    if rcm == 1:
        return max(math.cos(math.pi * f / 2.0), 0.0) ** n
    if rcm == 2:
        return (1.0 - f) ** n
    if rcm == 3:
        return (n**f - n) / (1.0 - n)
    if rcm == 4:
        return (1.0 - f**n) ** 2
    if rcm == 5:
        return (_sig(f, n, 0.5) - _sig(1, n, 0.5)) / (_sig(0, n, 0.5) - _sig(1, n, 0.5))
    centre = 0.875 if exact else 0.5
    hi, lo = _sig(0, n, centre), _sig(1, n, centre)
    return (_sig(f, n, 0.875) - lo) / (hi - lo)


def _z(rcm, f, n, m, exact):
    if m == 1 or rcm == 2:
        return _z_one(rcm, f, n, exact)
    if rcm == 5:

        def s(v):
            return sum(_sig(v, n, (j + 0.5) / m, rate=m) for j in range(m))

        return (s(f) - s(1)) / (s(0) - s(1))
    i = max(1, math.ceil(m * f))
    return (m - i + _z_one(rcm, m * f - i + 1, n, exact)) / m


class OriginalWindow:
    """The original's window object, called once per step with t = 1, 2, ...."""

    def __init__(self, rcm, length, x=0.0, n=2.0, m=1, e=0.0, sub=1, inseq=0, exact=0):
        self.rcm, self.length, self.x, self.n = rcm, length, x, n
        self.half, self.e, self.sub, self.inseq, self.exact = (
            m == 1,
            e,
            sub,
            inseq,
            exact,
        )
        self.q = 0
        self.stack = self._kronecker_stack() if inseq else None

    def rho(self, f):
        return self.x + (1.0 - self.x) * _z(self.rcm, f, self.n, self.sub, self.exact)

    def _kronecker_stack(self):
        h = self.length if self.half else self.length / 2
        cove = math.floor(self.e * h)
        g = math.floor(h - cove)
        if (g + cove < self.length) if self.half else (2 * (g + cove) < self.length):
            cove += 1
        count = self.length if self.rcm == 2 else g
        phi = (math.sqrt(5.0) - 1.0) / 2.0
        values = sorted(self.rho((j * phi) % 1.0) for j in range(count))
        values += [1.0] * cove
        return values if self.half else values + values[::-1]

    def __call__(self, t):
        tc = t - 1 - self.q
        if self.inseq:
            value = self.stack.pop()
        else:
            f = tc / self.length
            f = abs(f) if self.half else abs(2 * f - 1)
            if f < self.e:
                return 1.0  # The original skips the frame advance here.
            value = self.rho((f - self.e) / (1 - self.e))
        if tc == self.length - 1:
            self.q += self.length
            if self.inseq:
                self.stack = self._kronecker_stack()
        return value


def _original(steps, **kwargs):
    window = OriginalWindow(**kwargs)
    return np.array([window(t) for t in range(1, steps + 1)])


def test_reference_reproduces_spec_table():
    # The re-implementation itself against spec §6.3 (rows are the t = 1.. values).
    got = _original(12, rcm=1, length=10, m=0)
    np.testing.assert_allclose(got, SPEC_TABLE["rcm1 n2 full"][1], **TABLE_TOL)
    got = _original(10, rcm=1, length=10, inseq=1)
    np.testing.assert_allclose(got, KRONECKER_SPEC, **TABLE_TOL)


# ---------------------------------------------------------------------------
# Spec tables.


@pytest.mark.parametrize("row", sorted(SPEC_TABLE))
def test_spec_table(row):
    kwargs, expected = SPEC_TABLE[row]
    schedule = garo_optax.window_schedule(length=L10, **kwargs)
    # Count c is the original's step t = c + 1.
    np.testing.assert_allclose(_values(schedule, COUNTS), expected, **TABLE_TOL)


def test_kronecker_spec_values():
    schedule = garo_optax.window_schedule(
        "raised_cosine", length=L10, order=2.0, sequence="kronecker"
    )
    got = _values(schedule, np.arange(2 * L10))
    np.testing.assert_allclose(got[:L10], KRONECKER_SPEC, **TABLE_TOL)
    np.testing.assert_array_equal(got[L10:], got[:L10])  # regenerated each frame


ORDERS = {
    "raised_cosine": 1.5,
    "polynomial": 2.0,
    "exponential": 0.3,
    "simple_polynomial": 3.0,
    "logistic": 4.0,
    "late_logistic": 4.0,
}
REFERENCE_CASES = [
    (shape, mode, flat_top, sub_shapes, length)
    for shape in ORDERS
    for mode in ("half", "full")
    for flat_top in (0.0, 0.3)
    # M f hits whole numbers at many steps for (3, 7) in full mode and (4, 8).
    for sub_shapes, length in ((1, 10), (3, 7), (4, 8))
]


def _case_kwargs(shape, mode, flat_top, sub_shapes, length, floor, exact):
    ours = dict(
        shape=shape,
        length=length,
        floor=floor,
        order=ORDERS[shape],
        mode=mode,
        flat_top=flat_top,
        sub_shapes=sub_shapes,
        normalization="exact" if exact else "original",
    )
    original = dict(
        rcm=_RCM[shape],
        length=length,
        x=floor,
        n=ORDERS[shape],
        m=1 if mode == "half" else 0,
        e=flat_top,
        sub=sub_shapes,
        exact=exact,
    )
    return ours, original


@pytest.mark.parametrize("sequence", ["uniform", "kronecker"])
def test_matches_stateful_original(sequence):
    # Every shape x mode x flat top x sub-shapes x length, three frames each.
    # (With flat_top > (L-1)/L, or > 1 - 2/L for a full window, the original
    # would skip its frame advance for good; the cases here stay clear of it.)
    inseq = int(sequence == "kronecker")
    for i, case in enumerate(REFERENCE_CASES):
        floor, exact = (0.1, i % 2) if i % 3 == 0 else (0.0, 0)
        ours, original = _case_kwargs(*case, floor, exact)
        length = ours["length"]
        schedule = garo_optax.window_schedule(sequence=sequence, **ours)
        # Under jit, where XLA may round differently than eagerly (a division by a
        # constant becomes a multiplication); the Kronecker table needs no jit.
        counts = jnp.arange(3 * length)
        if sequence == "uniform":
            got = np.asarray(jax.jit(schedule)(counts))
        else:
            got = np.asarray(schedule(counts))
        expected = _original(3 * length, inseq=inseq, **original)
        np.testing.assert_allclose(
            got, expected, rtol=2e-6, atol=2e-7, err_msg=f"{sequence} {case}"
        )


# ---------------------------------------------------------------------------
# Spec §8: equivalences with optax's schedules within the first frame.


@pytest.mark.parametrize("length", [10, 37])
@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_raised_cosine_is_cosine_decay(length, alpha):
    window = garo_optax.window_schedule(
        "raised_cosine", length=length, floor=alpha, order=2.0
    )
    cosine = optax.cosine_decay_schedule(1.0, length, alpha=alpha)
    counts = np.arange(length)
    np.testing.assert_allclose(
        _values(window, counts), _values(cosine, counts), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5, 3.5])
def test_polynomial_is_polynomial_schedule(power):
    length = 20
    window = garo_optax.window_schedule("polynomial", length=length, order=power)
    poly = optax.polynomial_schedule(1.0, 0.0, power, length)
    counts = np.arange(length)
    np.testing.assert_allclose(
        _values(window, counts), _values(poly, counts), rtol=1e-6, atol=1e-7
    )


# ---------------------------------------------------------------------------
# Restarts, the step mapping, normalization, sub-shapes.


@pytest.mark.parametrize("sequence", ["uniform", "kronecker"])
@pytest.mark.parametrize("mode", ["half", "full"])
def test_periodic_warm_restarts(sequence, mode):
    length = 9
    schedule = garo_optax.window_schedule(
        "logistic", length=length, order=3.0, mode=mode, sequence=sequence
    )
    first = _values(schedule, np.arange(length))
    for frame in (1, 2, 1000):
        got = _values(schedule, frame * length + np.arange(length))
        np.testing.assert_array_equal(got, first)


def test_zero_based_count_is_one_based_step_minus_one():
    length, floor = 8, 0.2
    half = garo_optax.window_schedule(
        "polynomial", length=length, floor=floor, order=1.0
    )
    full = garo_optax.window_schedule(
        "polynomial", length=length, floor=floor, order=1.0, mode="full"
    )
    steps = np.arange(1, 2 * length + 1)  # the original's t
    original_half = OriginalWindow(2, length, x=floor, n=1.0)
    original_full = OriginalWindow(2, length, x=floor, n=1.0, m=0)
    np.testing.assert_allclose(
        _values(half, steps - 1), [original_half(t) for t in steps], rtol=1e-6
    )
    np.testing.assert_allclose(
        _values(full, steps - 1), [original_full(t) for t in steps], rtol=1e-6
    )
    # The first optax step (count 0) gets the whole rate from a half window and
    # the floor from a full one, which peaks at count length / 2.
    assert float(half(0)) == 1.0
    np.testing.assert_allclose(half(length - 1), floor + (1 - floor) / length)
    np.testing.assert_allclose(full(0), floor)
    assert float(full(length // 2)) == 1.0
    # Restart: count `length` is step t = length + 1, a new frame.
    assert float(half(length)) == 1.0
    # Python ints, int32 and float counts agree.
    for count in (3, jnp.int32(3), jnp.float32(3.0), 3.0):
        np.testing.assert_allclose(half(count), 1 - (1 - floor) * 3 / length)


def test_late_logistic_normalization():
    original = garo_optax.window_schedule("late_logistic", length=L10, order=4.0)
    exact = garo_optax.window_schedule(
        "late_logistic", length=L10, order=4.0, normalization="exact"
    )
    # The original starts above 1 (spec §10.7) and stays above 0.31.
    np.testing.assert_allclose(original(0), 1.057881, rtol=1e-6)
    # Exact: sigma6(f) = 1 / (1 + 2^(8 (f - 7/8))); sigma6(0) = 128/129,
    # sigma6(1) = 1/3 and sigma6(1/2) = 8/9, so z(1/2) = 1935/2295.
    assert float(exact(0)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(exact(5), 1935 / 2295, rtol=1e-6)
    values = _values(exact, np.arange(L10))
    assert np.all(np.diff(values) < 0) and values[-1] > 0
    # A full exact window reaches its floor at the frame start (f = 1).
    full = garo_optax.window_schedule(
        "late_logistic",
        length=L10,
        order=4.0,
        floor=0.2,
        mode="full",
        normalization="exact",
    )
    np.testing.assert_allclose(full(0), 0.2, rtol=1e-6)
    assert float(full(5)) == pytest.approx(1.0, rel=1e-6)
    # The other shapes ignore `normalization`.
    for shape in ("raised_cosine", "logistic"):
        a = garo_optax.window_schedule(shape, length=L10, normalization="original")
        b = garo_optax.window_schedule(shape, length=L10, normalization="exact")
        np.testing.assert_array_equal(_values(a, COUNTS), _values(b, COUNTS))


def test_sub_shapes_staircase_by_hand():
    # Raised cosine n = 2 (z1(u) = (1 + cos(pi u)) / 2), M = 2, L = 8: f = c / 8,
    # M f = c / 4, z = (2 - i + z1(u)) / 2 with i = max(1, ceil(M f)).
    c8 = (1 + math.cos(math.pi / 4)) / 2  # z1(1/4) = cos(pi/8)^2 = 0.853553
    c38 = (1 + math.cos(3 * math.pi / 4)) / 2  # z1(3/4) = 0.146447
    expected = [1, (1 + c8) / 2, 0.75, (1 + c38) / 2, 0.5, c8 / 2, 0.25, c38 / 2]
    schedule = garo_optax.window_schedule("raised_cosine", length=8, sub_shapes=2)
    np.testing.assert_allclose(_values(schedule, np.arange(8)), expected, rtol=1e-6)
    # The polynomial shape ignores M.
    one = garo_optax.window_schedule("polynomial", length=8, order=1.5)
    three = garo_optax.window_schedule("polynomial", length=8, order=1.5, sub_shapes=3)
    np.testing.assert_array_equal(_values(one, COUNTS), _values(three, COUNTS))
    # Logistic M = 2 sums two sigmoids centred at 1/4 and 3/4: 1 at f = 0 and, by
    # the symmetry sigma(d) + sigma(-d) = 1, exactly 1/2 at f = 1/2.
    logistic = garo_optax.window_schedule("logistic", length=8, order=4.0, sub_shapes=2)
    values = _values(logistic, np.arange(8))
    np.testing.assert_allclose(values[[0, 4]], [1.0, 0.5], rtol=1e-6)
    assert np.all(np.diff(values) < 0)


def test_sub_shape_boundaries_under_jit():
    # late_logistic with the original normalization jumps at each sub-shape
    # boundary (z(1) = 0.311 at the end of one sub-shape, z(0) = 1.058 at the
    # start of the next), so the index i = max(1, ceil(M f)) must be exact where
    # M f is whole, where a jitted division by a constant can land an ulp above.
    z0, z1 = 1.0578806767586, 0.3111111111111111  # z(0) and z(1), order 4
    # L = 15, M = 3: M f = c / 5 is whole at c = 5 and 10 (i = 1, 2; u = 1).
    schedule = garo_optax.window_schedule(
        "late_logistic", length=15, order=4.0, sub_shapes=3
    )
    np.testing.assert_allclose(
        _values(schedule, [0, 5, 10]),
        [(2 + z0) / 3, (2 + z1) / 3, (1 + z1) / 3],
        rtol=1e-6,
    )
    # L = 10, M = 5, e = 1/4: f' = (c - 2.5) / 7.5, so M f' = 3 at c = 7.
    schedule = garo_optax.window_schedule(
        "late_logistic", length=10, order=4.0, sub_shapes=5, flat_top=0.25
    )
    np.testing.assert_allclose(_values(schedule, [7]), [(2 + z1) / 5], rtol=1e-6)


def test_cfact0_epoch_staircase_composition():
    # Spec §6.1: rcm 2, n 1, tau 5 under cfact = 0 holds each value for 5 steps.
    window = garo_optax.window_schedule("polynomial", length=5, order=1.0)
    staircase = lambda count: window(count // 5)
    got = _values(staircase, np.arange(26))
    expected = np.repeat([1.0, 0.8, 0.6, 0.4, 0.2], 5).tolist() + [1.0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ---------------------------------------------------------------------------
# jit, dtypes, arrays as hyperparameters.


@pytest.mark.parametrize("sequence", ["uniform", "kronecker"])
def test_jit_without_recompilation(sequence):
    schedule = garo_optax.window_schedule(
        "exponential", length=L10, order=0.5, sub_shapes=2, sequence=sequence
    )
    counted = helpers.TraceCounter(schedule)
    jitted = jax.jit(counted)
    values = [jitted(jnp.int32(c)) for c in range(25)]
    assert counted.count == 1
    np.testing.assert_allclose(values, _values(schedule, np.arange(25)), rtol=1e-6)
    # vmap over counts of any shape.
    grid = jax.vmap(jax.vmap(schedule))(jnp.arange(12).reshape(3, 4))
    assert grid.shape == (3, 4)


@pytest.mark.parametrize("shape", sorted(ORDERS))
@pytest.mark.parametrize("sequence", ["uniform", "kronecker"])
def test_dtype_and_strict_promotion(shape, sequence):
    kwargs = dict(length=L10, order=ORDERS[shape], mode="full", flat_top=0.2)
    schedule = garo_optax.window_schedule(
        shape, sub_shapes=2, sequence=sequence, **kwargs
    )
    with jax.numpy_dtype_promotion("strict"):
        value = jax.jit(schedule)(jnp.int32(3))
    assert value.dtype == jnp.float32 and value.shape == ()
    with jax.enable_x64(True):
        assert schedule(jnp.int32(3)).dtype == jnp.float64


def test_floor_and_order_may_be_arrays():
    # The floor enters linearly and the uniform sequence's order only in jnp, so
    # both may be traced (e.g. by inject_hyperparams-style code).
    def value(floor, order, count):
        schedule = garo_optax.window_schedule(
            "raised_cosine", length=L10, floor=floor, order=order
        )
        return schedule(count)

    got = jax.jit(value)(jnp.float32(0.25), jnp.float32(2.0), jnp.int32(5))
    np.testing.assert_allclose(got, 0.25 + 0.75 * 0.5, rtol=1e-6)


# ---------------------------------------------------------------------------
# Inside an optax optimizer.


def test_inside_an_optax_optimizer():
    window = garo_optax.window_schedule(
        "raised_cosine", length=6, floor=0.1, mode="full", flat_top=0.2
    )
    tx = optax.sgd(learning_rate=lambda count: 0.1 * window(count))
    chained = optax.chain(optax.scale_by_schedule(window), optax.scale(-0.1))
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s, s2 = carry
            grads = jax.tree.map(lambda x: 2.0 * x, p)  # loss = sum(x^2)
            updates, s = tx.update(grads, s, p)
            updates2, s2 = chained.update(grads, s2, p)
            return (optax.apply_updates(p, updates), s, s2), (updates, updates2)

        carry = (params, tx.init(params), chained.init(params))
        return jax.lax.scan(step, carry, length=8)

    _, (updates, updates2) = run(params)
    helpers.tree_allclose(updates, updates2, rtol=1e-6)
    # By hand: p <- p (1 - 0.2 rho_c), with rho_c the window at count c.
    rho = _values(window, np.arange(8))
    w = np.array([1.0, -2.0])
    for c in range(8):
        np.testing.assert_allclose(updates["w"][c], -0.2 * rho[c] * w, rtol=1e-5)
        w = w * (1.0 - 0.2 * rho[c])


# ---------------------------------------------------------------------------
# Bad input.

BAD_INPUTS = [
    (dict(shape="cosine"), r"shape must be one of 'raised_cosine', .*got 'cosine'"),
    (dict(shape=1), r"shape must be one of .*got 1"),
    (dict(mode="both"), r"mode must be one of 'half', 'full', got 'both'"),
    (dict(sequence="sobol"), r"sequence must be one of 'uniform', 'kronecker'"),
    (dict(normalization="none"), r"normalization must be one of 'original', 'exact'"),
    (dict(length=0), r"length must be an integer in \[1, inf\), got 0"),
    (dict(length=-3), r"length must be an integer in \[1, inf\), got -3"),
    (dict(length=10.0), r"length must be an integer in \[1, inf\), got 10.0"),
    (dict(length=True), r"length must be an integer"),
    (dict(floor=1.0), r"floor must be in \[0, 1\), got 1.0"),
    (dict(floor=-0.1), r"floor must be in \[0, 1\), got -0.1"),
    (dict(flat_top=1.0), r"flat_top must be in \[0, 1\), got 1.0"),
    (dict(flat_top=-0.5), r"flat_top must be in \[0, 1\), got -0.5"),
    (dict(flat_top=jnp.float32(0.1)), r"flat_top must be a Python number"),
    (dict(sub_shapes=0), r"sub_shapes must be an integer in \[1, inf\), got 0"),
    (dict(sub_shapes=2.5), r"sub_shapes must be an integer in \[1, inf\), got 2.5"),
    (dict(order=0.0), r"order must be in \(0, inf\), got 0.0"),
    (dict(order=-1.0), r"order must be in \(0, inf\), got -1.0"),
    (
        dict(shape="exponential", order=1.5),
        r"order for shape='exponential' must be in \(0, 1\), got 1.5",
    ),
    (
        dict(shape="exponential", order=0.0),
        r"order for shape='exponential' must be in \(0, 1\), got 0.0",
    ),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_bad_input_raises(kwargs, message):
    kwargs = dict(dict(shape="raised_cosine", length=L10), **kwargs)
    with pytest.raises(ValueError, match=message):
        garo_optax.window_schedule(**kwargs)


def test_good_edge_values_are_accepted():
    # length 1, floor 0, flat_top 0, numpy integers and reals.
    one = garo_optax.window_schedule("raised_cosine", length=1)
    assert float(one(0)) == float(one(7)) == 1.0
    garo_optax.window_schedule(
        "exponential", length=np.int64(4), order=np.float32(0.5), sub_shapes=np.int32(2)
    )
