"""Compare the CLARA family in ``garo_optax`` with an independent NumPy reference.

The reference (``tests/reference/clara_numpy.py``) is written only from the spec
(``clara.md`` sections 3 and 4). Every variant and mode is run for 50 steps in
float64 on a small quadratic problem with a little deterministic noise; the
parameters and the reported learning rate are compared after every step.
"""

import itertools
import math

import helpers
import numpy as np
import pytest
from reference import clara_numpy as ref
from reference import problems

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

STEPS = 50
RTOL = 1e-9
ATOL = 1e-12

# ----------------------------------------------------------------------------------
# Problem: 0.5 * sum h * (theta - target)^2 plus a small deterministic "noise" term.
# ----------------------------------------------------------------------------------

# Insertion order differs from the sorted flatten order on purpose.
_SHAPES = {"w": (3, 4), "s": (1,), "b": (5,), "k": (2, 3)}


def _make_problem(shapes):
    return problems.noisy_quadratic(shapes, seed=0, phase_scale=0.37, noise=0.05)


PROBLEM = _make_problem(_SHAPES)
# Same problem with extra zero-size leaves (skipped in all statistics).
PROBLEM_EMPTY = _make_problem({**_SHAPES, "e": (0,), "z": (2, 0)})


def _run_library(make_opt, problem, steps=STEPS):
    return helpers.run_float64(make_opt, problem, steps)


def _compare(ref_out, lib_out, initial, expect_lr_moves=True):
    ref_traj, ref_lrs = ref_out
    lib_traj, lib_lrs = lib_out
    assert len(ref_traj) == len(lib_traj) == STEPS
    for t in range(STEPS):
        np.testing.assert_allclose(
            lib_lrs[t], ref_lrs[t], rtol=RTOL, atol=0, err_msg=f"lr after step {t + 1}"
        )
        for k, (a, b) in enumerate(zip(lib_traj[t], ref_traj[t])):
            assert a.shape == b.shape
            np.testing.assert_allclose(
                a, b, rtol=RTOL, atol=ATOL, err_msg=f"leaf {k} after step {t + 1}"
            )
    # The problem is non-trivial: the parameters moved, and so did the rate.
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(ref_traj[-1], initial)
        if a.size > 0
    )
    assert moved > 1e-2
    if expect_lr_moves:
        assert np.max(ref_lrs) / np.min(ref_lrs) > 1.05


# ----------------------------------------------------------------------------------
# Published CLARA (spec 3)
# ----------------------------------------------------------------------------------


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


SGD_CASES = [
    dict(normalize=n, unit_step=u, adapt=a)
    for n, u, a in itertools.product(
        ("per_tensor", "global"), (True, False), (True, False)
    )
] + [
    dict(normalize="per_tensor", unit_step=True, adapt=True, mu=0.15),
    dict(normalize="global", unit_step=False, adapt=True, mu=0.08),
]


@pytest.mark.parametrize("case", SGD_CASES, ids=_case_id)
def test_clara_sgd_matches_reference(case):
    lr = 0.05 if case["unit_step"] else 0.02
    d = 0.1
    ref_out = ref.sgd_clara(PROBLEM[1], PROBLEM[3], STEPS, lr, c=0.2, d=d, **case)
    lib_out = _run_library(
        lambda: garo_optax.clara_sgd(lr, c=0.2, damping=d, **case), PROBLEM
    )
    _compare(ref_out, lib_out, PROBLEM[1], expect_lr_moves=case["adapt"])


ADAM_CASES = [
    dict(unit_step=u, adapt=a, weight_decay=wd)
    for u, a, wd in itertools.product((True, False), (True, False), (0.0, 0.05))
] + [dict(unit_step=True, adapt=True, weight_decay=0.0, mu=0.4)]


@pytest.mark.parametrize("case", ADAM_CASES, ids=_case_id)
def test_adam_clara_matches_reference(case):
    lr, d = 0.05, 0.3
    hp = dict(b1=0.9, b2=0.99, eps=1e-8, c=0.2)
    ref_out = ref.adam_clara(PROBLEM[1], PROBLEM[3], STEPS, lr, d=d, **hp, **case)
    lib_out = _run_library(
        lambda: garo_optax.adam_clara(lr, damping=d, **hp, **case), PROBLEM
    )
    _compare(ref_out, lib_out, PROBLEM[1], expect_lr_moves=case["adapt"])


# ----------------------------------------------------------------------------------
# Seed variants (spec 4)
# ----------------------------------------------------------------------------------

SEED_FNS = {
    "global": (ref.adam_clara_global, garo_optax.adam_clara_global),
    "local": (ref.adam_clara_local, garo_optax.adam_clara_local),
    "smoothed": (ref.adam_clara_smoothed, garo_optax.adam_clara_smoothed),
}


def _seed_lr_moves(variant, adapt):
    # Global reports base_lr when adapt is off and Local never multiplies; the
    # Smoothed EMA is stepped regardless of adapt.
    return adapt or variant == "smoothed"


@pytest.mark.parametrize("adapt", [True, False], ids=["adapt", "noadapt"])
@pytest.mark.parametrize("faithful", [True, False], ids=["faithful", "fixed"])
@pytest.mark.parametrize("version", [2, 1], ids=["v2", "v1"])
@pytest.mark.parametrize("variant", sorted(SEED_FNS))
def test_seed_variant_matches_reference(variant, version, faithful, adapt):
    ref_fn, lib_fn = SEED_FNS[variant]
    lr = 0.05
    hp = dict(b1=0.9, b2=0.999, eps=1e-8, c=0.2, weight_decay=0.0)
    flags = dict(version=version, faithful=faithful, adapt=adapt)
    ref_out = ref_fn(PROBLEM[1], PROBLEM[3], STEPS, lr, d=1.0, **hp, **flags)
    if variant == "smoothed" and faithful and not adapt:
        # Spec 4.5.3: the faithful Smoothed never moves without adapt_lr.
        for leaves in ref_out[0]:
            for a, b in zip(leaves, PROBLEM[1]):
                np.testing.assert_array_equal(a, b)
        lib_out = _run_library(lambda: lib_fn(lr, damping=1.0, **hp, **flags), PROBLEM)
        np.testing.assert_allclose(lib_out[1], ref_out[1], rtol=RTOL, atol=0)
        for leaves in lib_out[0]:
            for a, b in zip(leaves, PROBLEM[1]):
                np.testing.assert_array_equal(a, b)
        return
    lib_out = _run_library(lambda: lib_fn(lr, damping=1.0, **hp, **flags), PROBLEM)
    _compare(
        ref_out, lib_out, PROBLEM[1], expect_lr_moves=_seed_lr_moves(variant, adapt)
    )


@pytest.mark.parametrize("variant", sorted(SEED_FNS))
def test_seed_variant_weight_decay_matches_reference(variant):
    # The spec leaves the seeds' weight decay implicit (PyTorch Adam: coupled L2,
    # g <- g + wd * theta before the moments); the reference does the same.
    ref_fn, lib_fn = SEED_FNS[variant]
    ref_out = ref_fn(PROBLEM[1], PROBLEM[3], STEPS, 0.05, weight_decay=0.1)
    lib_out = _run_library(lambda: lib_fn(0.05, weight_decay=0.1), PROBLEM)
    _compare(ref_out, lib_out, PROBLEM[1])


# ----------------------------------------------------------------------------------
# Zero-size leaves are skipped in all statistics
# ----------------------------------------------------------------------------------

EMPTY_CASES = {
    "sgd_per_tensor": (
        lambda p, g: ref.sgd_clara(p, g, STEPS, 0.05, d=0.1),
        lambda: garo_optax.clara_sgd(0.05, damping=0.1),
    ),
    "sgd_global": (
        lambda p, g: ref.sgd_clara(p, g, STEPS, 0.05, d=0.1, normalize="global"),
        lambda: garo_optax.clara_sgd(0.05, damping=0.1, normalize="global"),
    ),
    "adam": (
        lambda p, g: ref.adam_clara(p, g, STEPS, 0.05, d=0.3),
        lambda: garo_optax.adam_clara(0.05, damping=0.3),
    ),
    "global": (
        lambda p, g: ref.adam_clara_global(p, g, STEPS, 0.05),
        lambda: garo_optax.adam_clara_global(0.05),
    ),
    "local": (
        lambda p, g: ref.adam_clara_local(p, g, STEPS, 0.05),
        lambda: garo_optax.adam_clara_local(0.05),
    ),
    "smoothed": (
        lambda p, g: ref.adam_clara_smoothed(p, g, STEPS, 0.05),
        lambda: garo_optax.adam_clara_smoothed(0.05),
    ),
}


@pytest.mark.parametrize("name", list(EMPTY_CASES))
def test_zero_size_leaves_are_skipped(name):
    ref_run, make_opt = EMPTY_CASES[name]
    ref_out = ref_run(PROBLEM_EMPTY[1], PROBLEM_EMPTY[3])
    lib_out = _run_library(make_opt, PROBLEM_EMPTY)
    _compare(ref_out, lib_out, PROBLEM_EMPTY[1])
    # And the zero-size leaves change nothing on the other leaves.
    plain = ref_run(PROBLEM[1], PROBLEM[3])
    np.testing.assert_allclose(ref_out[1], plain[1], rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------
# The reference itself against the spec's test vectors (section 7)
# ----------------------------------------------------------------------------------


def _three_tensors(size=100, seed=1):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=size) for _ in range(3)]
    grads = [
        rng.choice([-1.0, 1.0], size=size) * rng.uniform(1, 2, size) for _ in range(3)
    ]
    return params, grads, (lambda theta, t: grads)


def test_reference_step_one_vectors():
    params, grads, gfn = _three_tensors()
    # 7.1 Global: f = 0.938005 and theta_1 = theta_0 - 9.38005e-4 sign(g).
    traj, lrs = ref.adam_clara_global(params, gfn, 1)
    assert lrs[0] == pytest.approx(0.938005e-3, rel=1e-6)
    for a, p, g in zip(traj[0], params, grads):
        np.testing.assert_allclose(p - a, 0.938005e-3 * np.sign(g), rtol=1e-5)
    # Local with K = 3.
    _, lrs = ref.adam_clara_local(params, gfn, 1)
    assert lrs[0] == pytest.approx(0.825307e-3, rel=1e-5)
    # Smoothed v2 with K = 3, and v1 with D_k = 100 (one tensor: l = 0.9 + 0.1 f).
    _, lrs = ref.adam_clara_smoothed(params, gfn, 1)
    assert lrs[0] == pytest.approx(1.066687e-3, rel=1e-6)
    _, lrs = ref.adam_clara_smoothed(params[:1], gfn, 1, version=1)
    assert lrs[0] == pytest.approx(1e-3 * (0.9 + 0.1 * 0.905163), rel=1e-6)
    # 7.5 / 7.6 published CLARA: eta_2 / eta_1.
    _, lrs = ref.sgd_clara(params, gfn, 1, 1.0)
    assert lrs[0] == pytest.approx(0.99936020, rel=1e-8)
    _, lrs = ref.adam_clara(params, gfn, 1, 1.0)
    assert lrs[0] == pytest.approx(0.99905905, rel=1e-7)
    assert ref.adam_mu(0.2, 0.9) == pytest.approx(0.68254, rel=1e-4)


def test_reference_constant_gradient_sgd():
    # 7.7: eta_{n+1} = eta_1 exp(d sum_j ((1 - 0.8^j)^2 / mu - 1)).
    params, grads, gfn = _three_tensors()
    d, n = 1e-3, 20
    _, lrs = ref.sgd_clara(params, gfn, n, 1.0, d=d)
    mu = 0.2 / 1.8
    expected = [
        math.exp(d * sum((1 - 0.8**j) ** 2 / mu - 1 for j in range(1, m + 1)))
        for m in range(1, n + 1)
    ]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
