"""Compare ``garo_optax.autosgm`` (version D) with an independent NumPy reference.

The reference (``tests/reference/autosgm_numpy.py``) is written only from the
spec (``autosgm.md`` sections 3, 4 and 6.1). It is first checked against the
spec's reference trajectories, recorded from the original (section 11), and the
hand-checked first steps (section 11.1). Then the library is run in float64 next
to it on a small pytree of three tensors for 50 steps, for every numerator, with
a zero, a raised-cosine window, coupled and decoupled weight decay, and the
adaptive learning rate on and off; the parameters and the reported learning rate
rho_t * a_t are compared after every step.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reference import autosgm_numpy as ref
from reference import problems

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

# ----------------------------------------------------------------------------------
# (a) The reference against the spec's test vectors (section 11, version D)
# ----------------------------------------------------------------------------------

_E8 = dict(eps=1e-8, eps_in_sqrt=False)
_E10 = dict(eps=1e-10, eps_in_sqrt=True)
_NO_ADAPT = dict(adaptive=False, lr=0.125, beta_n=0.9999, b2=0.999, **_E8)
_ADAM = dict(
    adaptive=True, lr=0.125, beta_n=0.9999, b2=0.999, pole=0.9, zero=0.0, gain=0.0
)
_ADAM.update(debias=True, numerator="constant", **_E8)
_NAG_ZERO = 0.9 / 1.9

# Config rows of the section 11 table, in this module's keyword arguments.
SPEC_ROWS = {
    "sgd": dict(_NO_ADAPT, pole=0.0, zero=0.0, gain=0.0, debias=True),
    "phb": dict(_NO_ADAPT, pole=0.9, zero=0.0, gain=1.0, debias=False),
    "nag": dict(_NO_ADAPT, pole=0.9, zero=_NAG_ZERO, gain=1.0, debias=False),
    "emaphb": dict(_NO_ADAPT, pole=0.9, zero=0.0, gain=0.0, debias=True),
    "emanag": dict(_NO_ADAPT, pole=0.9, zero=_NAG_ZERO, gain=0.0, debias=True),
    "adam": dict(_ADAM),
    "adamL2": dict(_ADAM, weight_decay=0.25, weight_decay_mode="coupled"),
    "adamdec": dict(_ADAM, weight_decay=0.25, weight_decay_mode="decoupled"),
    **{
        f"hb{k}": dict(_ADAM, beta_n=0.99, numerator=name, **_E10)
        for k, name in enumerate(ref.NUMERATORS)
    },
}

# id: (S: x1..x6, V: x3), recorded from the original (spec section 11).
SPEC_VECTORS = {
    "sgd": (
        [0.875, 0.765625, 0.669921875, 0.5861816406, 0.5129089355, 0.4487953186],
        [0.669921875, -0.421875, 0.4119873047, 0.25],
    ),
    "phb": (
        [0.875, 0.653125, 0.371796875, 0.07212695313, -0.2065918457, -0.4316147839],
        [0.371796875, 0.118125, 0.3339404297, -1.46],
    ),
    "nag": (
        [0.7625, 0.48015625, 0.1977910156, -0.0492954834, -0.237714166, -0.3563796077],
        [0.1977910156, 0.250171875, 0.2747955322, -0.80975],
    ),
    "emaphb": (
        [0.875, 0.7582236842, 0.6495648427, 0.5488918215, 0.4560480459, 0.3708527777],
        [0.6495648427, -0.3467420858, 0.4093443129, -0.2503398718],
    ),
    "emanag": (
        [0.7625, 0.6138980263, 0.4979833008, 0.4014658476, 0.3189144601, 0.2474554027],
        [0.4979833008, -0.1303560157, 0.365608656, -0.5283453098],
    ),
    "adam": (
        [0.8750000012, 0.7507103561, 0.6277750859, 0.5070002834, 0.3893803584],
        [0.6277750859, -0.6277750839, 0.1342437221, 1.626036651],
    ),
    "adamL2": (
        [0.875000001, 0.7507103556, 0.6277750851, 0.5070002823, 0.389380357],
        [0.6277750851, -0.6277750837, 0.1342437168, 1.626036651],
    ),
    "adamdec": (
        [0.8718750012, 0.7448872095, 0.6197017347, 0.4971499526, 0.3782552736],
        [0.6197017347, -0.6197017327, 0.1309409876, 1.608581964],
    ),
    "hb0": (
        [0.875, 0.7507103536, 0.627775082, 0.5070002782, 0.3893803518, 0.2761155839],
        [0.627775082, -0.627775082, 0.1342437067, 1.626036651],
    ),
    "hb1": (
        [0.950000003, 0.8791690751, 0.7923389524, 0.6920823787, 0.580134009],
        [0.792320834, -0.7923208339, 0.2933489126, 1.791963147],
    ),
    "hb2": (
        [0.9977500001, 0.9930553685, 0.9859367438, 0.9764463743, 0.9646499063],
        [0.9819886477, -0.9819886477, 0.4819921792, 1.981986944],
    ),
    "hb3": (
        [0.9955441132, 0.9819355538, 0.9547242278, 0.9098684711, 0.8439169421],
        [0.9364785638, -0.9364785638, 0.4365301469, 1.93645556],
    ),
    "hb4": (
        [0.9888613857, 0.9612145566, 0.913674373, 0.8440277056, 0.7510356005],
        [0.8964399265, -0.8964399265, 0.3965988163, 1.896373519],
    ),
}
# The sixth S value of the rows cut above for line length.
_S6 = {
    "adam": 0.2761155918,
    "adamL2": 0.2761155902,
    "adamdec": 0.2642486176,
    "hb1": 0.4609808557,
    "hb2": 0.9506245929,
    "hb3": 0.754252919,
    "hb4": 0.6343700876,
}
for _id, _x6 in _S6.items():
    SPEC_VECTORS[_id][0].append(_x6)

# The library's floor on b_t of "markov" and "chebyshev", as a fraction of lr0 (not
# in the spec; see garo_optax.autosgm).
LIBRARY_FLOOR = 0.01

# Spec section 7: float32 scalars inside the original give <= 3e-7 relative error.
SPEC_RTOL, SPEC_ATOL = 1e-5, 1e-7

_V_CURV = np.array([1.0, 2.0, 0.5, 4.0])


def _problem_s():
    return [np.array([1.0])], lambda p, t: [1.0 * p[0]]


def _problem_v():
    return [np.array([1.0, -1.0, 0.5, 2.0])], lambda p, t: [_V_CURV * p[0]]


@pytest.mark.parametrize("row", list(SPEC_VECTORS))
def test_reference_matches_spec_vectors(row):
    expected_s, expected_v = SPEC_VECTORS[row]
    assert len(expected_s) == 6 and len(expected_v) == 4
    cfg = SPEC_ROWS[row]
    traj, _ = ref.autosgm_reference(*_problem_s(), 6, **cfg)
    got_s = [x[0][0] for x in traj]
    np.testing.assert_allclose(got_s, expected_s, rtol=SPEC_RTOL, atol=SPEC_ATOL)
    traj, _ = ref.autosgm_reference(*_problem_v(), 3, **cfg)
    np.testing.assert_allclose(traj[2][0], expected_v, rtol=SPEC_RTOL, atol=SPEC_ATOL)
    # The init shift changes nothing here: no |w| < eps.
    traj2, _ = ref.autosgm_reference(*_problem_v(), 3, init_eps_shift=True, **cfg)
    np.testing.assert_array_equal(traj2[2][0], traj[2][0])
    # Nor does the library's numerator floor: b_t stays above it on S and V.
    for problem, steps in ((_problem_s(), 6), (_problem_v(), 3)):
        plain, _ = ref.autosgm_reference(*problem, steps, **cfg)
        floored, _ = ref.autosgm_reference(
            *problem, steps, numerator_floor=LIBRARY_FLOOR, **cfg
        )
        np.testing.assert_array_equal(floored[-1][0], plain[-1][0])


@pytest.mark.parametrize(
    "row, x1",
    [("hb1", 0.95), ("hb2", 0.99775), ("hb3", 0.9955441133), ("hb4", 0.9888613861)],
)
def test_reference_hand_checked_first_steps(row, x1):
    # Spec 11.1: problem S, w0 = g1 = 1, beta_n = 0.99, lr0 = 0.125.
    traj, lrs = ref.autosgm_reference(*_problem_s(), 1, **SPEC_ROWS[row])
    assert traj[0][0][0] == pytest.approx(x1, rel=1e-8)
    # v1 = 1/d1 = 1 up to ~eps, so the step is the numerator itself.
    assert lrs[0, 0] == pytest.approx(1.0 - x1, rel=1e-7)


def test_reference_hand_checked_markov_lower_bound():
    # Spec 11.1: hb3 on V, element 3 has d = 0.25 and T = 0.2197 (Tukey bound).
    assert ref.tukey(np.array([0.25]))[0] == pytest.approx(0.2197, abs=1e-4)
    traj, lrs = ref.autosgm_reference(*_problem_v(), 1, **SPEC_ROWS["hb3"])
    assert lrs[0, 0] == pytest.approx(0.0105568, rel=1e-5)
    np.testing.assert_allclose(
        traj[0][0], [0.98944321, -0.98944321, 0.48944321, 1.98944321], rtol=1e-8
    )
    # Without the lower bound a would be 0.9 mean(|c|) with |c_i| = 0.04 l_i |x_i|
    # at t = 1 (g_hat = sign(g), x = w g_hat, mu = 0.01 (|x| + eps)): about half.
    w0 = np.array([1.0, -1.0, 0.5, 2.0])
    ell = 0.125 / (1 + 0.99 * 0.01 * w0**2)
    assert 0.9 * np.mean(0.04 * ell * np.abs(w0)) < 0.5 * 0.0105568


def test_reference_init_eps_shift():
    # Spec 4 step 0: elements with |w| < eps get +eps; off by default.
    p0 = [np.array([0.0, 1e-12, -1e-12, 1.0])]
    gfn = lambda p, t: [np.zeros_like(p[0])]
    cfg = dict(lr=0.1, adaptive=False, eps=1e-10)
    traj, _ = ref.autosgm_reference(p0, gfn, 1, **cfg)
    np.testing.assert_array_equal(traj[0][0], p0[0])
    traj, _ = ref.autosgm_reference(p0, gfn, 1, init_eps_shift=True, **cfg)
    np.testing.assert_array_equal(traj[0][0], p0[0] + [1e-10, 1e-10, 1e-10, 0.0])


def test_reference_reduces_to_textbook_adam_and_nesterov():
    # Spec 8 (D): adam with eps_root = eps, and optax-style Nesterov, written out.
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=7)
    curv = rng.uniform(0.5, 2.0, size=7)
    gfn = lambda p, t: [curv * p[0] + 0.1 * np.cos(t + np.arange(7))]
    lr, b1, b2, eps, steps = 0.03, 0.9, 0.99, 1e-8, 30
    traj, lrs = ref.autosgm_reference(
        [w0], gfn, steps, lr=lr, pole=b1, b2=b2, eps=eps, eps_in_sqrt=True
    )
    w, m, v = w0.copy(), 0.0, 0.0
    for t in range(1, steps + 1):
        g = gfn([w], t)[0]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * mh / (np.sqrt(vh + eps) + eps)
        np.testing.assert_allclose(traj[t - 1][0], w, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(lrs, lr)
    beta = 0.9
    traj, _ = ref.autosgm_reference(
        [w0],
        gfn,
        steps,
        lr=lr,
        adaptive=False,
        pole=beta,
        zero=beta / (1 + beta),
        gain=1.0,
        debias=False,
    )
    w, mu = w0.copy(), 0.0
    for t in range(1, steps + 1):
        g = gfn([w], t)[0]
        mu = beta * mu + g
        w = w - lr * (g + beta * mu)
        np.testing.assert_allclose(traj[t - 1][0], w, rtol=1e-12, atol=1e-15)


# Spec 6.3 (L = 10, x = 0): the rcm 1, n = 2 rows, steps t = 1..12.
_RC_HALF = [1, 0.975528, 0.904508, 0.793893, 0.654508, 0.5, 0.345492, 0.206107]
_RC_HALF += [0.095492, 0.024472, 1, 0.975528]
_RC_FULL = [0, 0.095492, 0.345492, 0.654508, 0.904508, 1, 0.904508, 0.654508]
_RC_FULL += [0.345492, 0.095492, 0, 0.095492]


def test_reference_window_matches_spec_table():
    half = ref.raised_cosine_window(10, floor=0.0, order=2.0)
    full = ref.raised_cosine_window(10, floor=0.0, order=2.0, full=True)
    np.testing.assert_allclose([half(t) for t in range(1, 13)], _RC_HALF, atol=1e-6)
    np.testing.assert_allclose([full(t) for t in range(1, 13)], _RC_FULL, atol=1e-6)


# ----------------------------------------------------------------------------------
# (b) The library against the reference on a mixed pytree, float64, 50 steps
# ----------------------------------------------------------------------------------

STEPS = 50
# Float64 on both sides with the same operations up to reassociation; the
# per-step differences are rounding only (~1e-15) and the 50-step problem is
# contracting, so 1e-9 leaves a wide margin while still catching any formula slip.
RTOL, ATOL = 1e-9, 1e-12
WINDOW_LEN = 20  # shorter than the run: two warm restarts (spec 6.1)
WINDOW = dict(length=WINDOW_LEN, floor=0.1, order=2.0)

# Insertion order differs from the sorted flatten order on purpose.
_SHAPES = {"w": (3, 4), "b": (5,), "s": (1,)}


def _make_problem():
    return problems.noisy_quadratic(
        _SHAPES, seed=7, phase_scale=0.41, noise=0.1, min_abs=0.05
    )


PROBLEM = _make_problem()


def _ref_window(t):
    """rho_t = x + (1 - x) cos(pi f / 2)^n, f = ((t - 1) mod L) / L (spec 6.1)."""
    f = ((t - 1) % WINDOW_LEN) / WINDOW_LEN
    return 0.1 + 0.9 * math.cos(math.pi * f / 2) ** 2.0


def _run_library(kwargs, window):
    """Runs the library in float64; returns per-step param leaves and lr leaves."""
    params, _, treedef, grads_fn = PROBLEM
    traj, lrs = [], []
    with jax.enable_x64(True):
        sched = (
            garo_optax.window_schedule("raised_cosine", mode="half", **WINDOW)
            if window
            else None
        )
        opt = garo_optax.autosgm(window=sched, **kwargs)
        p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
        state = opt.init(p)

        @jax.jit
        def step(p, state, g):
            updates, state = opt.update(g, state, p)
            return optax.apply_updates(p, updates), state

        for t in range(1, STEPS + 1):
            cur = [np.asarray(x) for x in jax.tree_util.tree_leaves(p)]
            g = grads_fn(cur, t)
            g = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in g])
            p, state = step(p, state, g)
            leaves = jax.tree_util.tree_leaves(p)
            assert all(x.dtype == jnp.float64 for x in leaves)
            traj.append([np.asarray(x) for x in leaves])
            # One entry per leaf, in flatten order.
            lr = np.asarray(optax.tree.get(state, "lr"))
            assert lr.shape == (len(leaves),)
            lrs.append(lr.tolist())
    return traj, np.asarray(lrs)


def _compare(ref_out, lib_out):
    ref_traj, ref_lrs = ref_out
    lib_traj, lib_lrs = lib_out
    assert len(ref_traj) == len(lib_traj) == STEPS
    for t in range(STEPS):
        np.testing.assert_allclose(
            lib_lrs[t], ref_lrs[t], rtol=RTOL, atol=0, err_msg=f"lr at step {t + 1}"
        )
        for k, (a, b) in enumerate(zip(lib_traj[t], ref_traj[t])):
            assert a.shape == b.shape
            np.testing.assert_allclose(
                a, b, rtol=RTOL, atol=ATOL, err_msg=f"leaf {k} after step {t + 1}"
            )
    # The problem is non-trivial: the parameters moved.
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ref_traj[-1], PROBLEM[1]))
    assert moved > 1e-2


def _check(kwargs, window=True):
    win = _ref_window if window else None
    ref_out = ref.autosgm_reference(
        PROBLEM[1],
        PROBLEM[3],
        STEPS,
        window=win,
        numerator_floor=LIBRARY_FLOOR,
        **kwargs,
    )
    lib_kwargs = dict(kwargs)
    lib_kwargs["learning_rate"] = lib_kwargs.pop("lr")
    _compare(ref_out, _run_library(lib_kwargs, window))
    return ref_out


# lr0 per numerator: the par-corr numerators are small (a_1 = 0.9 b_1), so they get
# a larger trust-region constant to move the parameters visibly in 50 steps.
_LR = {
    "constant": 0.05,
    "chebyshev_scalar": 0.05,
    "max_bound": 0.5,
    "markov": 0.5,
    "chebyshev": 0.5,
}

# With adaptive=False the original ignores num_lrc (spec 4 step 8); the library
# rejects a non-constant numerator there instead, so only "constant" is run.
MAIN_CASES = [
    dict(numerator=num, weight_decay_mode=mode, adaptive=True)
    for num, mode in itertools.product(ref.NUMERATORS, ("coupled", "decoupled"))
] + [
    dict(numerator="constant", weight_decay_mode=mode, adaptive=False)
    for mode in ("coupled", "decoupled")
]


@pytest.mark.parametrize("case", MAIN_CASES, ids=str)
def test_autosgm_matches_reference(case):
    kwargs = dict(
        lr=_LR[case["numerator"]] if case["adaptive"] else 0.05,
        pole=0.9,
        zero=0.3,
        beta_n=0.99,
        weight_decay=0.05,
        **case,
    )
    _, lrs = _check(kwargs)
    if case["adaptive"] and case["numerator"] != "constant":
        # The numerator really adapts (beyond the window's own variation).
        win = np.array([_ref_window(t) for t in range(1, STEPS + 1)])
        a = lrs / win[:, None]
        assert np.all(np.max(a, axis=0) / np.min(a, axis=0) > 1.05)


EXTRA_CASES = {
    # No window, no zero, library defaults otherwise (beta_n = 0.9999, eps 1e-10).
    "defaults_no_window": (dict(lr=0.05), False),
    "markov_defaults": (dict(lr=0.5, numerator="markov"), False),
    # beta_n = 0.9999 keeps the scalar Chebyshev bound active for all 50 steps.
    "chebyshev_scalar_decoupled_defaults": (
        dict(
            lr=0.5,
            numerator="chebyshev_scalar",
            weight_decay=0.1,
            weight_decay_mode="decoupled",
        ),
        False,
    ),
    # The gain enters both filters; with debias off it is not cancelled (spec 3, 4).
    "gain1_nodebias": (
        dict(lr=0.005, gain=1.0, debias=False, zero=0.3, numerator="constant"),
        True,
    ),
    "gain1_nodebias_markov": (
        dict(lr=0.5, gain=1.0, debias=False, beta_n=0.99, numerator="markov"),
        True,
    ),
    "gain05_debias_chebyshev": (
        dict(lr=0.5, gain=0.5, zero=0.3, beta_n=0.99, numerator="chebyshev"),
        True,
    ),
    "no_eps_in_sqrt_big_eps": (
        dict(lr=0.05, eps=1e-3, eps_in_sqrt=False, weight_decay=0.1),
        True,
    ),
    "eps_in_sqrt_big_eps": (
        dict(lr=0.05, eps=1e-3, eps_in_sqrt=True, numerator="chebyshev_scalar"),
        True,
    ),
    "nag_zero_nodebias_sgd": (
        dict(lr=0.02, adaptive=False, zero=0.9 / 1.9, gain=1.0, debias=False),
        True,
    ),
    "decoupled_big_zero_max_bound": (
        dict(
            lr=0.5,
            zero=0.6,
            beta_n=0.99,
            numerator="max_bound",
            weight_decay=0.2,
            weight_decay_mode="decoupled",
        ),
        True,
    ),
}


@pytest.mark.parametrize("name", list(EXTRA_CASES))
def test_autosgm_matches_reference_extra(name):
    kwargs, window = EXTRA_CASES[name]
    _check(kwargs, window)


@pytest.mark.parametrize("numerator", ["markov", "chebyshev"])
def test_zero_initialized_leaf_matches_reference(numerator):
    """A zero-initialized leaf with d >= 1: frozen in the spec, moved by the floor.

    Spec 4.1 (num_lrc 3, 4) gives x = w g / d = 0 and the lower clip
    T(d) l = 0 there, so b_t = 0 and the leaf never moves; the library floors b_t
    at 0.01 lr0. The library equals the reference with that floor, step by step.
    """
    target = {"b": np.array([1.0, -1.0, 2.0]), "w": np.array([0.5, 3.0, -2.0])}
    params = {"b": np.zeros(3), "w": np.array([2.0, -1.0, 0.5])}
    leaves0 = jax.tree_util.tree_leaves(params)
    targets = jax.tree_util.tree_leaves(target)

    def grads_fn(theta, t):
        return [2.0 * (x - z) for x, z in zip(theta, targets)]

    kwargs = dict(lr=0.05, numerator=numerator)
    spec, _ = ref.autosgm_reference(leaves0, grads_fn, STEPS, **kwargs)
    np.testing.assert_array_equal(spec[-1][0], 0.0)  # leaf "b" stays frozen
    floored = ref.autosgm_reference(
        leaves0, grads_fn, STEPS, numerator_floor=LIBRARY_FLOOR, **kwargs
    )
    assert np.all(np.sign(floored[0][-1][0]) == np.sign(targets[0]))
    assert np.all(floored[1][:, 0] >= 0.9 * LIBRARY_FLOOR * 0.05 * (1 - 1e-12))

    with jax.enable_x64(True):
        tx = garo_optax.autosgm(0.05, numerator=numerator)
        p = jax.tree_util.tree_map(jnp.asarray, params)

        @jax.jit
        def step(p, state):
            g = jax.tree_util.tree_map(lambda x, z: 2.0 * (x - z), p, target)
            updates, state = tx.update(g, state, p)
            return optax.apply_updates(p, updates), state

        state = tx.init(p)
        for t in range(STEPS):
            p, state = step(p, state)
            lr = np.asarray(optax.tree.get(state, "lr"))
            np.testing.assert_allclose(lr, floored[1][t], rtol=RTOL)
            got = jax.tree_util.tree_leaves(p)
            for a, b in zip(got, floored[0][t]):
                np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_window_schedule_matches_reference_window():
    with jax.enable_x64(True):
        sched = garo_optax.window_schedule("raised_cosine", mode="half", **WINDOW)
        got = [float(sched(c)) for c in range(3 * WINDOW_LEN)]
    want = [_ref_window(c + 1) for c in range(3 * WINDOW_LEN)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
