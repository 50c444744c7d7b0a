"""AutoSGM (version D): reductions to optax, the spec's reference vectors, invariants.

"spec" refers to the AutoSGM specification (``specs/autosgm.md``): section 8 lists
the configurations that reproduce optax optimizers, section 11 the trajectories
recorded from the PyTorch original, section 13 the invariants.
"""

import functools
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

# --- Helpers. ----------------------------------------------------------------------


def _problem(key, dtype):
    """A dict of three leaves with a noisy diagonal quadratic as the objective."""
    shapes = {"a": (3, 4), "b": (5,), "c": ()}
    keys = jax.random.split(key, 3 * len(shapes))
    params, curvature, target = {}, {}, {}
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        params[name] = jax.random.normal(keys[3 * i], shape, dtype)
        curvature[name] = jax.random.uniform(keys[3 * i + 1], shape, dtype, 0.5, 2.0)
        target[name] = 0.5 * jax.random.normal(keys[3 * i + 2], shape, dtype)
    return params, curvature, target


def _noise(key, params, steps, scale=0.1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noise = [
        scale * jax.random.normal(k, (steps,) + x.shape, x.dtype)
        for k, x in zip(keys, leaves)
    ]
    return treedef.unflatten(noise)


def _lockstep(txs, key, steps, dtype=jnp.float32):
    """Runs every transform on the same parameters and gradients, step by step.

    The parameters follow ``txs[0]`` (teacher forcing), so the transforms see
    identical inputs at every step. Returns the stacked updates of each transform
    and its final state.
    """
    params, curvature, target = _problem(key, dtype)
    noise = _noise(jax.random.fold_in(key, 1), params, steps)

    def step(carry, noise_t):
        params, states = carry
        grads = jax.tree.map(
            lambda p, c, z, n: c * (p - z) + n, params, curvature, target, noise_t
        )
        outs = [tx.update(grads, s, params) for tx, s in zip(txs, states)]
        params = optax.apply_updates(params, outs[0][0])
        return (params, [s for _, s in outs]), [u for u, _ in outs]

    @jax.jit
    def run(params, noise):
        init = (params, [tx.init(params) for tx in txs])
        return jax.lax.scan(step, init, noise)

    (_, states), updates = run(params, noise)
    return updates, states


def _trajectory(tx, params, grad_fn, steps):
    """Parameters after each of ``steps`` steps (stacked), and the states' ``lr``."""

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, optax.tree.get(state, "lr"))

    @jax.jit
    def run(params):
        return jax.lax.scan(step, (params, tx.init(params)), length=steps)

    return run(params)


def _inner(state):
    """The ScaleByAutoSgmState inside autosgm's chain state."""
    return state[0]


# --- Spec section 8: exact special cases, step by step against optax. -------------

LR, B1, B2, EPS, MU, LAM, STEPS = 0.05, 0.9, 0.99, 1e-8, 0.01, 0.05, 60
NAG = B1 / (1 + B1)
E8 = (EPS, False)
BETA_ANY = (0.9999, 0.999)  # beta_n, beta_a where unused


def _row(name, reference, kwargs, config, rtol=1e-9):
    return pytest.param(reference, kwargs, config, rtol, id=name)


SECTION_8 = [
    _row(
        "sgd",
        lambda: optax.sgd(LR),
        dict(adaptive=False, pole=0.0),
        dict(lr_cfg=(False, LR, 0), beta_cfg=BETA_ANY + (0.0, 0.0, 0, True)),
    ),
    _row(
        "heavy_ball",
        lambda: optax.sgd(LR, momentum=B1),
        dict(adaptive=False, pole=B1, gain=1.0, debias=False),
        dict(lr_cfg=(False, LR, 0), beta_cfg=BETA_ANY + (B1, 0.0, 1.0, False)),
    ),
    _row(
        "nesterov",
        lambda: optax.sgd(LR, momentum=B1, nesterov=True),
        dict(adaptive=False, pole=B1, zero=NAG, gain=1.0, debias=False),
        dict(lr_cfg=(False, LR, 0), beta_cfg=BETA_ANY + (B1, NAG, 1.0, False)),
    ),
    _row(
        "adam",
        lambda: optax.adam(LR, B1, B2, EPS),
        dict(pole=B1, b2=B2, eps=EPS, eps_in_sqrt=False),
        dict(lr_cfg=(True, LR, 0), beta_cfg=(0.9999, B2, B1, 0.0, 0, True), eps_cfg=E8),
    ),
    _row(
        "adam_eps_root",
        lambda: optax.adam(LR, B1, B2, EPS, eps_root=EPS),
        dict(pole=B1, b2=B2, eps=EPS, eps_in_sqrt=True),
        dict(
            lr_cfg=(True, LR, 0),
            beta_cfg=(0.9999, B2, B1, 0.0, 0, True),
            eps_cfg=(EPS, True),
        ),
    ),
    _row(
        "adamw",
        lambda: optax.adamw(LR, B1, B2, EPS, weight_decay=MU),
        dict(
            pole=B1,
            b2=B2,
            eps=EPS,
            eps_in_sqrt=False,
            weight_decay=MU / (1 - B1),
            weight_decay_mode="decoupled",
        ),
        dict(
            lr_cfg=(True, LR, 0),
            beta_cfg=(0.9999, B2, B1, 0.0, 0, True),
            eps_cfg=E8,
            wd_cfg=(MU / (1 - B1), 1),
        ),
    ),
    _row(
        "l2_adam",
        lambda: optax.chain(
            optax.add_decayed_weights(LAM), optax.adam(LR, B1, B2, EPS)
        ),
        dict(pole=B1, b2=B2, eps=EPS, eps_in_sqrt=False, weight_decay=LAM),
        dict(
            lr_cfg=(True, LR, 0),
            beta_cfg=(0.9999, B2, B1, 0.0, 0, True),
            eps_cfg=E8,
            wd_cfg=(LAM, 0),
        ),
    ),
    _row(
        "rmsprop_debiased",
        lambda: optax.chain(
            optax.scale_by_adam(b1=0.0, b2=B2, eps=EPS), optax.scale(-LR)
        ),
        dict(pole=0.0, b2=B2, eps=EPS, eps_in_sqrt=False),
        dict(
            lr_cfg=(True, LR, 0), beta_cfg=(0.9999, B2, 0.0, 0.0, 0, True), eps_cfg=E8
        ),
    ),
    _row(
        "ema_momentum_debiased",
        lambda: optax.chain(optax.ema(B1, debias=True), optax.scale(-LR)),
        dict(adaptive=False, pole=B1),
        dict(lr_cfg=(False, LR, 0), beta_cfg=BETA_ANY + (B1, 0.0, 0, True)),
    ),
    _row(
        "sgd_coupled_l2",
        lambda: optax.chain(optax.add_decayed_weights(LAM), optax.sgd(LR)),
        dict(adaptive=False, pole=0.0, weight_decay=LAM),
        dict(
            lr_cfg=(False, LR, 0),
            beta_cfg=BETA_ANY + (0.0, 0.0, 0, True),
            wd_cfg=(LAM, 0),
        ),
    ),
    _row(
        "heavy_ball_coupled_l2",
        lambda: optax.chain(optax.add_decayed_weights(LAM), optax.sgd(LR, momentum=B1)),
        dict(adaptive=False, pole=B1, gain=1.0, debias=False, weight_decay=LAM),
        dict(
            lr_cfg=(False, LR, 0),
            beta_cfg=BETA_ANY + (B1, 0.0, 1.0, False),
            wd_cfg=(LAM, 0),
        ),
    ),
    _row(
        "heavy_ball_decoupled",
        lambda: optax.chain(
            optax.trace(B1),
            optax.add_decayed_weights((1 - B1) * LAM),
            optax.scale(-LR),
        ),
        dict(
            adaptive=False,
            pole=B1,
            gain=1.0,
            debias=False,
            weight_decay=LAM,
            weight_decay_mode="decoupled",
        ),
        dict(
            lr_cfg=(False, LR, 0),
            beta_cfg=BETA_ANY + (B1, 0.0, 1.0, False),
            wd_cfg=(LAM, 1),
        ),
    ),
]


@pytest.mark.parametrize("reference, kwargs, config, rtol", SECTION_8)
def test_special_cases_match_optax(reference, kwargs, config, rtol, key):
    """Spec section 8 (D column): equal to optax at every step (float64)."""
    with jax.enable_x64(True):
        txs = [
            reference(),
            garo_optax.autosgm(LR, **kwargs),
            garo_optax.from_asgm_config(**config),
        ]
        updates, _ = _lockstep(txs, key, STEPS, dtype=jnp.float64)
    helpers.tree_allclose(updates[1], updates[0], rtol=rtol, atol=1e-14)
    helpers.tree_allclose(updates[2], updates[0], rtol=rtol, atol=1e-14)


@pytest.mark.parametrize(
    "name",
    ["nesterov", "adam_eps_root", "adamw"],
)
def test_special_cases_match_optax_float32(name, key):
    """A few section 8 rows in float32, where rounding differs by a few ulps."""
    reference, kwargs, _, _ = next(p.values for p in SECTION_8 if p.id == name)
    updates, _ = _lockstep(
        [reference(), garo_optax.autosgm(LR, **kwargs)], key, STEPS, jnp.float32
    )
    helpers.tree_allclose(updates[1], updates[0], rtol=2e-5, atol=1e-7)


WINDOW_LENGTH, FLOOR = 64, 0.1


@pytest.mark.parametrize(
    "shape, order, floor, reference",
    [
        pytest.param(
            "raised_cosine",
            2.0,
            FLOOR,
            optax.cosine_decay_schedule(LR, WINDOW_LENGTH, alpha=FLOOR),
            id="cosine",
        ),
        pytest.param(
            "polynomial",
            1.0,
            0.0,
            optax.linear_schedule(LR, 0.0, WINDOW_LENGTH),
            id="linear",
        ),
        pytest.param(
            "polynomial",
            2.0,
            0.0,
            optax.polynomial_schedule(LR, 0.0, 2.0, WINDOW_LENGTH),
            id="polynomial",
        ),
    ],
)
def test_windows_match_optax_schedules(shape, order, floor, reference, key):
    """Spec section 8: SGD with a cosine / polynomial window over one frame."""
    rcm = {"raised_cosine": 1, "polynomial": 2}[shape]
    with jax.enable_x64(True):
        window = garo_optax.window_schedule(
            shape, length=WINDOW_LENGTH, floor=floor, order=order
        )
        txs = [
            optax.sgd(reference),
            garo_optax.autosgm(LR, adaptive=False, pole=0.0, window=window),
            garo_optax.from_asgm_config(
                lr_cfg=(False, LR, 0),
                beta_cfg=BETA_ANY + (0.0, 0.0, 0, True),
                rc_cfg=(rcm, 0, floor, order, 1, 1, WINDOW_LENGTH, 1, 0),
                wd_cfg=(0.0, 0),
                eps_cfg=E8,
            ),
        ]
        updates, states = _lockstep(txs, key, WINDOW_LENGTH, dtype=jnp.float64)
    helpers.tree_allclose(updates[1], updates[0], rtol=1e-7, atol=1e-14)
    helpers.tree_allclose(updates[2], updates[0], rtol=1e-7, atol=1e-14)
    # The last step used rho at count L - 1; `lr` holds rho * lr0 for each leaf.
    lr = _inner(states[1]).lr
    expected = reference(WINDOW_LENGTH - 1)
    assert lr.shape == (3,)
    np.testing.assert_allclose(lr, float(expected), rtol=1e-7)


# --- Spec section 11: trajectories recorded from the original (float64). ----------

S_CURVATURE = np.array(1.0)
V_CURVATURE = np.array([1.0, 2.0, 0.5, 4.0])
LR0 = 0.125
RC_DEFAULT = (0, 0, 0, 2, 1, 1000, 1, 1, 0)
BETA_EMA = (0.9999, 0.999, 0.9, 0.0, 0.0, True)
HB_BETA = (0.99, 0.999, 0.9, 0.0, 0.0, True)

SECTION_11 = {
    # id: (lr_cfg, beta_cfg, wd_cfg, eps_cfg, S: x1..x6, V: x3)
    "sgd": (
        (False, LR0, 0),
        (0.9999, 0.999, 0.0, 0.0, 0.0, True),
        (0.0, 0),
        E8,
        [0.875, 0.765625, 0.669921875, 0.5861816406, 0.5129089355, 0.4487953186],
        [0.669921875, -0.421875, 0.4119873047, 0.25],
    ),
    "phb": (
        (False, LR0, 0),
        (0.9999, 0.999, 0.9, 0.0, 1.0, False),
        (0.0, 0),
        E8,
        [0.875, 0.653125, 0.371796875, 0.07212695313, -0.2065918457, -0.4316147839],
        [0.371796875, 0.118125, 0.3339404297, -1.46],
    ),
    "nag": (
        (False, LR0, 0),
        (0.9999, 0.999, 0.9, 0.9 / 1.9, 1.0, False),
        (0.0, 0),
        E8,
        [0.7625, 0.48015625, 0.1977910156, -0.0492954834, -0.237714166, -0.3563796077],
        [0.1977910156, 0.250171875, 0.2747955322, -0.80975],
    ),
    "emaphb": (
        (False, LR0, 0),
        BETA_EMA,
        (0.0, 0),
        E8,
        [0.875, 0.7582236842, 0.6495648427, 0.5488918215, 0.4560480459, 0.3708527777],
        [0.6495648427, -0.3467420858, 0.4093443129, -0.2503398718],
    ),
    "emanag": (
        (False, LR0, 0),
        (0.9999, 0.999, 0.9, 0.9 / 1.9, 0.0, True),
        (0.0, 0),
        E8,
        [0.7625, 0.6138980263, 0.4979833008, 0.4014658476, 0.3189144601, 0.2474554027],
        [0.4979833008, -0.1303560157, 0.365608656, -0.5283453098],
    ),
    "adam": (
        (True, LR0, 0),
        BETA_EMA,
        (0.0, 0),
        E8,
        [
            0.8750000012,
            0.7507103561,
            0.6277750859,
            0.5070002834,
            0.3893803584,
            0.2761155918,
        ],
        [0.6277750859, -0.6277750839, 0.1342437221, 1.626036651],
    ),
    "adamL2": (
        (True, LR0, 0),
        BETA_EMA,
        (0.25, 0),
        E8,
        [
            0.875000001,
            0.7507103556,
            0.6277750851,
            0.5070002823,
            0.389380357,
            0.2761155902,
        ],
        [0.6277750851, -0.6277750837, 0.1342437168, 1.626036651],
    ),
    "adamdec": (
        (True, LR0, 0),
        BETA_EMA,
        (0.25, 1),
        E8,
        [
            0.8718750012,
            0.7448872095,
            0.6197017347,
            0.4971499526,
            0.3782552736,
            0.2642486176,
        ],
        [0.6197017347, -0.6197017327, 0.1309409876, 1.608581964],
    ),
    "hb0": (
        (True, LR0, 0),
        HB_BETA,
        (0.0, 0),
        (1e-10, True),
        [0.875, 0.7507103536, 0.627775082, 0.5070002782, 0.3893803518, 0.2761155839],
        [0.627775082, -0.627775082, 0.1342437067, 1.626036651],
    ),
    "hb1": (
        (True, LR0, 1),
        HB_BETA,
        (0.0, 0),
        (1e-10, True),
        [
            0.950000003,
            0.8791690751,
            0.7923389524,
            0.6920823787,
            0.580134009,
            0.4609808557,
        ],
        [0.792320834, -0.7923208339, 0.2933489126, 1.791963147],
    ),
    "hb2": (
        (True, LR0, 2),
        HB_BETA,
        (0.0, 0),
        (1e-10, True),
        [
            0.9977500001,
            0.9930553685,
            0.9859367438,
            0.9764463743,
            0.9646499063,
            0.9506245929,
        ],
        [0.9819886477, -0.9819886477, 0.4819921792, 1.981986944],
    ),
    "hb3": (
        (True, LR0, 3),
        HB_BETA,
        (0.0, 0),
        (1e-10, True),
        [
            0.9955441132,
            0.9819355538,
            0.9547242278,
            0.9098684711,
            0.8439169421,
            0.754252919,
        ],
        [0.9364785638, -0.9364785638, 0.4365301469, 1.93645556],
    ),
    "hb4": (
        (True, LR0, 4),
        HB_BETA,
        (0.0, 0),
        (1e-10, True),
        [
            0.9888613857,
            0.9612145566,
            0.913674373,
            0.8440277056,
            0.7510356005,
            0.6343700876,
        ],
        [0.8964399265, -0.8964399265, 0.3965988163, 1.896373519],
    ),
}


def _s_and_v(config, steps):
    """Problems S and V as two leaves of one tree (numerators are per leaf)."""
    lr_cfg, beta_cfg, wd_cfg, eps_cfg = config
    tx = garo_optax.from_asgm_config(
        lr_cfg=lr_cfg,
        beta_cfg=beta_cfg,
        rc_cfg=RC_DEFAULT,
        wd_cfg=wd_cfg,
        eps_cfg=eps_cfg,
    )
    params = {
        "S": jnp.asarray(1.0, jnp.float64),
        "V": jnp.asarray([1.0, -1.0, 0.5, 2.0], jnp.float64),
    }
    curvature = {"S": jnp.asarray(S_CURVATURE), "V": jnp.asarray(V_CURVATURE)}
    grad_fn = functools.partial(jax.tree.map, jnp.multiply, curvature)
    return _trajectory(tx, params, grad_fn, steps)


@pytest.mark.parametrize("name", list(SECTION_11))
def test_reference_trajectories(name):
    """Spec section 11: x1..x6 on S and x3 on V, through ``from_asgm_config``."""
    *config, s_expected, v_expected = SECTION_11[name]
    with jax.enable_x64(True):
        (_, (traj, _)) = _s_and_v(config, 6)
        np.testing.assert_allclose(traj["S"], s_expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(traj["V"][2], v_expected, rtol=1e-5, atol=1e-7)


def test_hand_checked_first_steps():
    """Spec section 11.1: first steps of hb1..hb4 on S, and hb3 on V."""
    ell3, ell4 = 0.125 / 1.0099, 0.125 / 1.01
    expected = {
        "hb1": 1 - 0.125 * min(1.0, 4 * 0.099 / 0.99),
        "hb2": 1 - 0.9 * 0.01 * 0.125 * 2,
        "hb3": 1 - 0.9 * 0.04 * ell3,
        "hb4": 1 - 0.9 * 0.1 * ell4,
    }
    with jax.enable_x64(True):
        for name, x1 in expected.items():
            *config, _, _ = SECTION_11[name]
            (_, (traj, lr)) = _s_and_v(config, 1)
            np.testing.assert_allclose(traj["S"][0], x1, rtol=1e-6, err_msg=name)
            # The first step is 1 - a with w0 = g1 = 1, so lr holds a (leaf S is 0).
            np.testing.assert_allclose(lr[0, 0], 1 - x1, rtol=1e-5, err_msg=name)
        *config, _, _ = SECTION_11["hb3"]
        (_, (traj, lr)) = _s_and_v(config, 1)
    # Element 3 (d = 0.25) sits on the Tukey lower bound: a = 0.0105568 (leaf V).
    np.testing.assert_allclose(lr[0, 1], 0.0105568, rtol=1e-5)
    np.testing.assert_allclose(
        traj["V"][0], [0.98944321, -0.98944321, 0.48944321, 1.98944321], rtol=1e-7
    )


# --- Spec section 13(d): numerator invariants; the `lr` field. --------------------

BETA_N = 0.99


def _numerator_run(numerator, key, steps=50, **kwargs):
    params, curvature, target = _problem(key, jnp.float32)
    tx = garo_optax.scale_by_autosgm(
        LR, numerator=numerator, beta_n=BETA_N, eps=1e-8, **kwargs
    )

    def grad_fn(p):
        return jax.tree.map(lambda p, c, z: c * (p - z), p, curvature, target)

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(grad_fn(params), state, params)
        params = jax.tree.map(lambda p, u: p - u, params, updates)
        return (params, state), state

    @jax.jit
    def run(params):
        return jax.lax.scan(step, (params, tx.init(params)), length=steps)

    return params, run(params)[1]


@pytest.mark.parametrize("numerator", ["chebyshev_scalar", "max_bound"])
def test_numerator_at_most_lr0(numerator, key):
    """Spec 13(d): 0 <= a <= lr0 for the scalar Chebyshev and max-bound numerators."""
    _, states = _numerator_run(numerator, key)
    for lr in jax.tree.leaves(states.lr):
        assert jnp.all(lr >= 0) and jnp.all(lr <= LR * (1 + 1e-6))
        assert jnp.all(jnp.isfinite(lr)) and jnp.any(lr > 0)


@pytest.mark.parametrize("numerator", ["markov", "chebyshev"])
def test_numerator_within_upper_clip(numerator, key):
    """Spec 13(d): b_t, hence a_t, in [0, lr0 (1 + max omega)] (Markov/Chebyshev).

    b_t = (L_t - 0.1 L_{t-1}) / 0.9 lies within the step's clip bounds; a_t = L_t
    is a convex combination of b_1..b_t, so it is bounded by the running maximum.
    """
    _, states = _numerator_run(numerator, key, zero=0.3)
    scale = BETA_N if numerator == "markov" else 1.0
    assert states.lr.shape == (50, 3)
    for a, w_sq in zip(states.lr.T, jax.tree.leaves(states.w_sq)):
        bound = LR * (1 + scale * jnp.max(w_sq.reshape(w_sq.shape[0], -1), axis=1))
        b = (a - 0.1 * jnp.concatenate([jnp.zeros(1), a[:-1]])) / 0.9
        assert jnp.all(b >= -1e-6 * LR) and jnp.all(b <= bound * (1 + 1e-5))
        assert jnp.all(a >= 0) and jnp.any(a > 0)
        assert jnp.all(a <= jax.lax.cummax(bound) * (1 + 1e-6))


def _first_b(numerator, params, curvature, target, eps=1e-8):
    """b_1 of spec 4.1 by hand (NumPy, float64), per leaf."""
    out = {}
    for name in params:
        w = np.asarray(params[name], np.float64)
        g = np.asarray(curvature[name], np.float64) * (w - np.asarray(target[name]))
        d = np.sqrt(g * g + eps) + eps  # debiased P_1 = g^2, eps inside and out
        gh = g / d
        if numerator == "max_bound":
            o = np.minimum((1 - BETA_N) * LR * (w * w + gh * gh), LR)
        else:
            w_sq = (1 - BETA_N) * w * w
            omega = BETA_N * w_sq if numerator == "markov" else w_sq
            ell = LR / (1 + omega)
            x = w * gh
            if numerator == "markov":
                mag = np.abs(x) + eps
                h = x * np.minimum(mag, 4 * (1 - BETA_N) * mag) / mag
            else:
                r = np.abs(x - (1 - BETA_N) * x) + eps
                sigma = np.sqrt((1 - BETA_N) * r * r) + eps
                h = x * np.minimum(r, sigma) / r
            u = np.minimum(d, 1.0)
            o = np.clip(np.abs(ell * h), u * (1 - u * u) ** 2 * ell, LR * (1 + omega))
        out[name] = np.mean(o)
        if numerator != "max_bound":  # the library's floor (see autosgm's docs)
            out[name] = max(out[name], 0.01 * LR)
    return out


@pytest.mark.parametrize("numerator", ["max_bound", "markov", "chebyshev"])
def test_numerator_warm_up_is_point_nine_b1(numerator, key):
    """Spec 13(d): L_1 = 0.9 b_1 (the EMA0.1 smoother is not debiased)."""
    params, curvature, target = _problem(key, jnp.float32)
    _, states = _numerator_run(numerator, key, steps=1)
    expected = _first_b(numerator, params, curvature, target)
    # One entry per leaf, in flatten order (sorted keys a, b, c).
    for i, name in enumerate(sorted(expected)):
        b1 = expected[name]
        np.testing.assert_allclose(states.lr_num[0, i], 0.9 * b1, rtol=2e-5)
        np.testing.assert_allclose(states.lr[0, i], 0.9 * b1, rtol=2e-5)


@pytest.mark.parametrize("numerator", ["constant", "markov"])
def test_lr_field_is_window_times_numerator(numerator, key):
    """The state's ``lr`` is rho_t a_t with rho_t = window(t - 1)."""
    window = garo_optax.window_schedule("raised_cosine", length=8, mode="full")
    _, states = _numerator_run(numerator, key, steps=20, window=window)
    rho = jnp.stack([window(c) for c in range(20)])
    a = jnp.full((20, 3), LR) if numerator == "constant" else states.lr_num
    np.testing.assert_allclose(states.lr, rho[:, None] * a, rtol=1e-6, atol=1e-12)
    assert states.lr.shape == (20, 3)
    assert np.all(states.lr[0] == 0.0)  # full window, floor 0: rho_1 = 0


def test_state_fields_per_configuration():
    """Unused state fields are None; per-leaf scalars are float32 scalars."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3, jnp.bfloat16)}
    state = garo_optax.scale_by_autosgm(1e-3).init(params)
    assert state.nu is not None and state.w_sq is None and state.corr is None
    assert state.lr_num is None and state.norm_mean is None
    state = garo_optax.scale_by_autosgm(1e-3, numerator="chebyshev").init(params)
    assert all(
        jax.tree.structure(getattr(state, f)) == jax.tree.structure(params)
        for f in ("w_sq", "x_mean", "x_var", "corr")
    )
    # Per-leaf scalars: one float32 vector entry per leaf, in flatten order.
    assert (state.lr_num.shape, state.lr_num.dtype) == ((2,), jnp.float32)
    assert (state.lr.shape, state.lr.dtype) == ((2,), jnp.float32)
    state = garo_optax.scale_by_autosgm(1e-3, adaptive=False).init(params)
    assert state.nu is None and state.mu["b"].dtype == jnp.bfloat16


# --- No leaf is frozen by its initialization or the loss scale. ------------------

ZERO_INIT_TARGET = jnp.array([1.0, -1.0, 2.0])
LOSS_SCALES = {"a": 1e-3, "b": 1.0, "c": 1e3}


@pytest.mark.parametrize(
    "numerator", ["constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev"]
)
def test_zero_initialized_leaf_moves_at_every_loss_scale(numerator):
    """The issue's run: lr 1e-3, 500 steps from p = 0 on scale |p - target|^2.

    One leaf per loss scale (numerators are per leaf). "markov" and "chebyshev"
    used to leave p and lr at exactly 0 for scales 1 and 1e3: x = w g / d is 0
    at w = 0 and the lower clip T(d) l is 0 for d >= 1. Now b_t >= 0.01 lr0.
    """
    params = {name: jnp.zeros(3) for name in LOSS_SCALES}

    def grad_fn(p):
        return {k: 2.0 * LOSS_SCALES[k] * (p[k] - ZERO_INIT_TARGET) for k in p}

    tx = garo_optax.autosgm(1e-3, numerator=numerator)
    _, (traj, lr) = _trajectory(tx, params, grad_fn, 500)
    initial = float(jnp.sum(jnp.square(ZERO_INIT_TARGET)))
    for name in LOSS_SCALES:
        final = np.asarray(traj[name][-1])
        # Every entry moved towards its target, and the loss fell by > 1%.
        assert np.all(np.sign(final) == np.sign(ZERO_INIT_TARGET)), name
        ratio = np.sum(np.square(final - ZERO_INIT_TARGET)) / initial
        assert ratio < 0.99, (name, ratio)
    assert np.all(lr[-1] >= 0.9 * 0.01 * 1e-3)


def test_numerator_floor_only_lifts_small_numerators(key):
    """b_t >= 0.01 lr0 for "markov" and "chebyshev", and no more than that.

    On the section 13(d) problem (beta_n = 0.99, |w| ~ 1) the floor never binds
    after the first step, so L_t is what the original computes (spec 11 checks
    that too); with beta_n = 0.9999 it binds for the first steps only.
    """
    for numerator in ("markov", "chebyshev"):
        _, states = _numerator_run(numerator, key)
        b = (states.lr_num[1:] - 0.1 * states.lr_num[:-1]) / 0.9
        assert np.all(b >= 0.01 * LR * (1 - 1e-5))
        assert np.all(b[5:] > 0.02 * LR)


# --- The multi-device recipe (README) on a one-device mesh. ------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(numerator="chebyshev_scalar"),
        dict(numerator="max_bound", weight_decay=1e-2),
        dict(
            numerator="markov",
            zero=0.3,
            window=garo_optax.window_schedule("raised_cosine", length=10),
        ),
    ],
    ids=["constant", "chebyshev_scalar", "max_bound", "markov_window"],
)
def test_map_params_recipe_on_a_one_device_mesh(kwargs):
    """map_params gives moments the parameters' shardings and the per-leaf
    scalars (one vector) the replicated one; ``jit(init, out_shardings=...)``
    and a step pinned to them run and equal the unsharded step."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    specs = {"w": P("data", None), "b": P("data"), "s": P()}
    param_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    replicated = NamedSharding(mesh, P())
    plain = {
        "w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3),
        "b": jnp.zeros(3),
        "s": jnp.asarray(0.5),
    }
    params = jax.device_put(plain, param_shardings)
    tx = garo_optax.autosgm(1e-2, **kwargs)
    shardings = optax.tree.map_params(
        tx,
        lambda _, s: s,
        jax.eval_shape(tx.init, params),
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    inner = _inner(state)
    assert inner.lr.shape == (3,) and inner.lr.sharding.is_fully_replicated
    assert inner.mu["w"].sharding.spec == P("data", None)
    assert inner.mu["b"].sharding.spec == P("data")

    def step(params, state):
        grads = jax.tree.map(lambda p: p - 0.3, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    pinned = jax.jit(
        step,
        in_shardings=(param_shardings, shardings),
        out_shardings=(param_shardings, shardings),
    )
    got = pinned(params, state)
    want = jax.jit(step)(plain, tx.init(plain))
    helpers.tree_allclose(got, want, rtol=1e-6)
    assert np.all(np.asarray(_inner(got[1]).lr) > 0)


# --- from_asgm_config: windows, the cfact quirks, construction errors. -------------


def _lr_sequence(rc_cfg, steps):
    tx = garo_optax.from_asgm_config(
        lr_cfg=(False, 1.0, 0),
        beta_cfg=BETA_ANY + (0.0, 0.0, 0, True),
        rc_cfg=rc_cfg,
        wd_cfg=(0.0, 0),
        eps_cfg=E8,
    )
    params = jnp.ones(2)
    _, (_, lr) = _trajectory(tx, params, lambda p: p, steps)
    return np.asarray(lr)[:, 0]  # the only leaf


@pytest.mark.parametrize(
    "rc_cfg, expected",
    [
        # Spec 6.3 (L = 10 via tau = 1, spe = 10, cfact = 1; steps t = 1..12).
        (
            (1, 0, 0, 2, 1, 1, 10, 1, 0),
            [
                1,
                0.975528,
                0.904508,
                0.793893,
                0.654508,
                0.5,
                0.345492,
                0.206107,
                0.095492,
                0.024472,
                1,
                0.975528,
            ],
        ),
        (
            (1, 0, 0, 2, 0, 1, 10, 1, 0),
            [
                0,
                0.095492,
                0.345492,
                0.654508,
                0.904508,
                1,
                0.904508,
                0.654508,
                0.345492,
                0.095492,
                0,
                0.095492,
            ],
        ),
        (
            (1, 0, 0, 2, 1, 1, 10, 1, 0.5),
            [1, 1, 1, 1, 1, 1, 0.904508, 0.654508, 0.345492, 0.095492, 1, 1],
        ),
        (
            (6, 0, 0, 4, 1, 1, 10, 1, 0),
            [
                1.057881,
                1.051458,
                1.040447,
                1.021785,
                0.990751,
                0.940741,
                0.864097,
                0.755227,
                0.616165,
                0.460784,
                1.057881,
                1.051458,
            ],
        ),
        # cfact = 2: the frame is spe steps long, whatever tau.
        (
            (2, 0, 0, 1, 1, 3, 10, 2, 0),
            [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 1, 0.9],
        ),
        # cfact = 0: a staircase changing every tau steps (spec 6.1 example).
        (
            (2, 0, 0, 1, 1, 5, 3, 0, 0),
            [1] * 5 + [0.8] * 5 + [0.6] * 5 + [0.4] * 5 + [0.2] * 5 + [1] * 2,
        ),
        # rcm = 0 ignores every other field, and e = 1 holds the window at 1.
        ((0, 0, 0, 2, 1, 1, 1, 0, 0), [1] * 3),
        ((1, 0, 0, 2, 1, 1, 10, 1, 1), [1] * 3),
    ],
    ids=[
        "rcm1-half",
        "rcm1-full",
        "rcm1-flat",
        "rcm6",
        "cfact2",
        "cfact0",
        "rcm0",
        "e1",
    ],
)
def test_from_asgm_config_windows(rc_cfg, expected):
    lr = _lr_sequence(rc_cfg, len(expected))
    np.testing.assert_allclose(lr, expected, rtol=1e-5, atol=1e-6)


def test_from_asgm_config_sub_shapes_and_kronecker():
    """cfact >= 3 is tau * spe with cfact sub-shapes; inseq = 1 is Kronecker."""
    for rc_cfg, window in [
        (
            (3, 0, 0.1, 0.5, 1, 2, 6, 3, 0),
            garo_optax.window_schedule(
                "exponential", length=12, floor=0.1, order=0.5, sub_shapes=3
            ),
        ),
        (
            (1, 1, 0.0, 2, 1, 1, 10, 1, 0),
            garo_optax.window_schedule(
                "raised_cosine", length=10, sequence="kronecker"
            ),
        ),
    ]:
        lr = _lr_sequence(rc_cfg, 14)
        np.testing.assert_allclose(lr, [window(c) for c in range(14)], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rc_cfg=(1, 0, 0, 2, 1, 1, 1, 1, 0)), "tau \\* spe >= 2"),
        (dict(rc_cfg=(1, 0, 0, 2, 1, 1, 4, 0, 0)), "cfact=0 needs tau >= 2"),
        (dict(rc_cfg=(1, 1, 0, 2, 1, 4, 4, 0, 0)), "not supported"),
        (dict(rc_cfg=(7, 0, 0, 2, 1, 1, 10, 1, 0)), "rcm must be one of"),
        (dict(rc_cfg=(1, 0, 0, 2, 2, 1, 10, 1, 0)), "rc_cfg m must be one of 0, 1"),
        (dict(rc_cfg=(1, 0, 0, 2)), "rc_cfg must be a tuple of 9"),
        (dict(miscs=(0,)), "per_lay=0 is not supported"),
        (dict(lr_cfg=(True, 1e-3, 5)), "num_lrc must be one of 0, 1, 2, 3, 4"),
        (dict(lr_cfg=(True, -1e-3, 0)), "learning_rate must be in"),
        (dict(beta_cfg=(0.9999, 0.999, 1.0, 0, 0, True)), "pole must be in"),
    ],
)
def test_from_asgm_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        garo_optax.from_asgm_config(**kwargs)


def test_from_asgm_config_ignores_num_lrc_without_aoptlr(key):
    """As in the original, num_lrc does nothing when aoptlr is false."""
    kwargs = dict(beta_cfg=(0.99, 0.999, 0.9, 0.3, 0.0, True), eps_cfg=E8)
    txs = [
        garo_optax.from_asgm_config(lr_cfg=(False, LR, 0), **kwargs),
        garo_optax.from_asgm_config(lr_cfg=(False, LR, 3), **kwargs),
    ]
    updates, _ = _lockstep(txs, key, 5)
    helpers.tree_allclose(updates[1], updates[0], rtol=0)


# --- Bad input. --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pole=1.0), r"pole must be in \[0, 1\), got 1.0"),
        (dict(pole=-0.1), r"pole must be in \[0, 1\), got -0.1"),
        (dict(zero=1.0), r"zero must be in \[0, 1\), got 1.0"),
        (dict(zero=-0.5), r"zero must be in \[0, 1\), got -0.5"),
        (dict(b2=1.0), r"b2 must be in \[0, 1\), got 1.0"),
        (dict(beta_n=1.5), r"beta_n must be in \[0, 1\), got 1.5"),
        (dict(gain=-1.0), r"gain must be in \[0, inf\), got -1.0"),
        (dict(numerator="adam"), r"numerator must be one of 'constant', .*got 'adam'"),
        (
            dict(weight_decay_mode="l2"),
            r"weight_decay_mode must be one of 'coupled', 'decoupled', got 'l2'",
        ),
        (dict(weight_decay=-1e-4), r"weight_decay must be in \[0, inf\), got -0.0001"),
        (dict(learning_rate=0.0), r"learning_rate must be in \(0, inf\), got 0.0"),
        (dict(learning_rate=-1.0), r"learning_rate must be in \(0, inf\), got -1.0"),
        (dict(eps=-1e-8), r"eps must be in \[0, inf\), got -1e-08"),
        (dict(adaptive=False, numerator="markov"), "needs adaptive=True"),
    ],
)
@pytest.mark.parametrize("factory", [garo_optax.autosgm, garo_optax.scale_by_autosgm])
def test_bad_input_raises(factory, kwargs, match):
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [dict(numerator="markov"), dict(numerator="max_bound"), dict(weight_decay=1e-4)],
)
def test_missing_params_raises(kwargs):
    tx = garo_optax.autosgm(1e-3, **kwargs)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="requires the current value of parameters"):
        tx.update(params, tx.init(params))


@pytest.mark.parametrize("numerator", ["constant", "chebyshev_scalar"])
def test_params_not_needed_without_weight_decay(numerator):
    # These numerators never read the parameters: params=None gives the same step.
    tx = garo_optax.autosgm(1e-3, numerator=numerator, zero=0.3)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    without, _ = jax.jit(tx.update)(params, tx.init(params))
    with_params, _ = jax.jit(tx.update)(params, tx.init(params), params)
    np.testing.assert_array_equal(without["w"], with_params["w"])
    assert np.all(np.asarray(without["w"]) != 0)


# --- inject_hyperparams, strict promotion, dtypes. ---------------------------------

NUMERIC = dict(
    learning_rate=3e-2,
    pole=0.8,
    zero=0.3,
    b2=0.99,
    beta_n=0.999,
    eps=1e-8,
    weight_decay=1e-2,
    gain=0.5,
)


@pytest.mark.parametrize(
    "static",
    [
        dict(),
        dict(numerator="markov", weight_decay_mode="decoupled"),
        dict(numerator="chebyshev_scalar", debias=False),
        dict(adaptive=False, debias=False),
    ],
    ids=["constant", "markov", "chebyshev_scalar", "sgd"],
)
def test_inject_hyperparams_under_jit(static, key):
    """Every numeric hyperparameter can be injected and traced under jit."""
    window = garo_optax.window_schedule("raised_cosine", length=7)
    direct = garo_optax.autosgm(window=window, **NUMERIC, **static)
    injected = optax.inject_hyperparams(garo_optax.autosgm)(
        window=window, **NUMERIC, **static
    )
    updates, states = _lockstep([direct, injected], key, 12)
    helpers.tree_allclose(updates[1], updates[0], rtol=2e-5, atol=1e-7)
    # Traced hyperparameters take the general path, which stores the same state.
    helpers.tree_allclose(states[1].inner_state, states[0], rtol=2e-5, atol=1e-7)


def test_inject_adam_configuration_matches_static_state(key):
    """zero = 0 and pole = 0 are static fast paths; injected (traced) ones agree."""
    for pole in (0.9, 0.0):
        kwargs = dict(learning_rate=1e-2, pole=pole, zero=0.0)
        direct = garo_optax.autosgm(**kwargs)
        injected = optax.inject_hyperparams(garo_optax.autosgm)(**kwargs)
        updates, states = _lockstep([direct, injected], key, 10)
        helpers.tree_allclose(updates[1], updates[0], rtol=1e-6, atol=1e-8)
        helpers.tree_allclose(states[1].inner_state, states[0], rtol=1e-6, atol=1e-8)


def test_injected_hyperparameter_can_change(key):
    """Writing ``hyperparams['zero']`` between steps takes effect without retracing."""
    tx = optax.inject_hyperparams(garo_optax.autosgm)(learning_rate=1e-2, zero=0.0)
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    update = jax.jit(tx.update)
    state = tx.init(params)
    first, _ = update(grads, state, params)
    state.hyperparams["zero"] = jnp.asarray(0.5)
    second, _ = update(grads, state, params)
    # Step 1 with debias: m_1 = g / (1 - zero).
    np.testing.assert_allclose(second["w"], 2 * first["w"], rtol=1e-5)


@pytest.mark.parametrize(
    "numerator", ["constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev"]
)
def test_strict_promotion_and_dtypes(numerator, key):
    """Strict promotion on a mixed f32/bf16 tree: grads' dtypes out, f32 scalars."""
    params = {
        "w": jax.random.normal(key, (3, 4), jnp.float32),
        "b": jax.random.normal(key, (4,), jnp.bfloat16),
        "s": jnp.asarray(0.5, jnp.bfloat16),
    }
    grads = jax.tree.map(lambda p: (0.1 * p).astype(p.dtype), params)
    window = garo_optax.window_schedule("polynomial", length=5)
    with jax.numpy_dtype_promotion("strict"):
        tx = garo_optax.autosgm(
            1e-2,
            numerator=numerator,
            zero=0.3,
            weight_decay=1e-3,
            weight_decay_mode="decoupled",
            window=window,
            mu_dtype=jnp.bfloat16,
        )
        state = jax.jit(tx.init)(params)
        update = jax.jit(tx.update)
        for _ in range(3):
            updates, new_state = update(grads, state, params)
            assert helpers.tree_signature(new_state) == helpers.tree_signature(state)
            state = new_state
            params = optax.apply_updates(params, updates)
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(
        lambda g: g.dtype, grads
    )
    inner = _inner(state)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(inner.mu))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(inner.lr))
    assert helpers.tree_all_finite(updates) and helpers.tree_all_finite(state)


@pytest.mark.parametrize("numerator", ["max_bound", "markov", "chebyshev"])
def test_bfloat16_params_keep_numerator_precision(numerator, key):
    """The beta_n = 0.9999 averages must move in bf16 runs as they do in f32."""
    w = jax.random.normal(key, (64,), jnp.float32)
    grads = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (1000, 64))

    def final_lr(dtype):
        params = {"w": w.astype(dtype)}
        tx = garo_optax.autosgm(1e-2, numerator=numerator)

        def step(state, g):
            _, state = tx.update({"w": g.astype(dtype)}, state, params)
            return state, None

        state, _ = jax.lax.scan(step, tx.init(params), grads)
        return _inner(state).lr[0]

    # Fixed params isolate the numerator statistics from bf16 parameter steps.
    lr32 = jax.jit(final_lr, static_argnums=0)(jnp.float32)
    lr16 = jax.jit(final_lr, static_argnums=0)(jnp.bfloat16)
    assert lr16 == pytest.approx(float(lr32), rel=0.02)


def test_float64_scalars_under_x64():
    with jax.enable_x64(True):
        params = {"w": jnp.ones(3, jnp.float64), "v": jnp.ones(2, jnp.float32)}
        tx = garo_optax.autosgm(1e-2, numerator="markov")
        state = jax.jit(tx.init)(params)
        updates, state = jax.jit(tx.update)(params, state, params)
        assert _inner(state).lr.dtype == jnp.float64
        assert _inner(state).lr_num.dtype == jnp.float64
        assert updates["v"].dtype == jnp.float32
        assert updates["w"].dtype == jnp.float64


def test_learning_rate_schedule_is_evaluated_at_count():
    schedule = optax.linear_schedule(1.0, 0.0, 10)
    tx = garo_optax.scale_by_autosgm(schedule, adaptive=False, pole=0.0)
    params = jnp.ones(2)
    state = tx.init(params)
    for count in range(3):
        updates, state = tx.update(params, state)
        np.testing.assert_allclose(updates, schedule(count), rtol=1e-6)
        assert float(state.lr[0]) == pytest.approx(float(schedule(count)))
    assert math.isclose(float(state.count), 3)
