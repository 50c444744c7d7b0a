"""Property-based tests (hypothesis) over every public constructor.

For every constructor, hypothesis draws

* valid argument combinations: each gives finite updates (and a finite state)
  for 50 steps on a random problem, a noisy quadratic with random curvatures
  in [0.1, 10] over one of a few tree shapes. "Valid" includes sane rates:
  a learning rate past 2 / curvature diverges by design, not by a bug;
* invalid ones, one argument out of its documented range at a time (NaN and
  infinities included): construction raises ``ValueError`` whose message
  names the argument. No other exception type may escape either way.

The default suite draws 2 valid examples per constructor (each runs 50
eager steps) and many invalid ones (construction only); ``-m slow`` draws 40
valid examples per constructor.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import garo_optax
from garo_optax._src import schedules

pytestmark = pytest.mark.usefixtures("fast_compile")

STEPS = 50

# --- Strategies for argument values. ---


def log_uniform(low, high):
    return st.floats(math.log(low), math.log(high)).map(math.exp)


LR = log_uniform(1e-4, 0.05)
UNIT_OPEN = st.floats(0.0, 0.999)  # [0, 1)
# CLARA's rate changes by up to exp(d (1/mu - 1)) ~ exp(2 d / c) per step
# (clara.md: e^(8 d) for c = 0.2). The valid domain keeps that change below
# e^0.2 per step with unit steps and e^0.02 with raw ones, whose iterates
# diverge once the rate passes 2 / curvature: past it, the rate runs away by
# design (d = 1e-3 is the published value). The seed variants divide by d
# instead (exp(c / (2 d) ...), default d = 1): there c / (2 d) <= 0.5.


@st.composite
def clara_rates(draw, seed=False, unit_step=None):
    """(c, damping, unit_step) in CLARA's stable domain."""
    c = draw(st.floats(0.01, 1.0))
    if seed:
        return {"c": c, "damping": draw(log_uniform(max(c, 0.3), 10.0))}
    unit = draw(st.booleans()) if unit_step is None else unit_step
    limit = (0.2 if unit else 0.02) * c / 2
    out = {"c": c, "damping": draw(log_uniform(1e-5, limit))}
    if unit_step is None:
        out["unit_step"] = unit
    return out


EPS = st.one_of(st.just(1e-8), log_uniform(1e-12, 1e-3))
WD = st.one_of(st.just(0.0), log_uniform(1e-6, 1e-1))
# Non-finite, or past float32's range (inf there).
BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300])


def below(x):
    return st.one_of(BAD_FLOATS, st.floats(-1e6, x, exclude_max=True))


def above(x, closed=False):
    return st.one_of(
        BAD_FLOATS, st.floats(x, 1e6, exclude_min=not closed, allow_infinity=False)
    )


def not_positive():
    return st.one_of(BAD_FLOATS, st.floats(-1e6, 0.0))


def outside_unit(closed_high=False):
    """Outside [0, 1) (or [0, 1] when ``closed_high``)."""
    return st.one_of(below(0.0), above(1.0, closed=not closed_high))


def bad_choice(allowed):
    return st.one_of(
        st.text(max_size=12).filter(lambda s: s not in allowed),
        st.sampled_from([0, 3, -1, 2.5]).filter(lambda v: v not in allowed),
    )


def window_strategy():
    shapes = st.sampled_from(
        ["raised_cosine", "polynomial", "exponential", "simple_polynomial", "logistic"]
    )
    return st.one_of(
        st.none(),
        st.floats(0.1, 1.0),
        st.builds(
            lambda shape, length, floor: garo_optax.window_schedule(
                shape,
                length=length,
                floor=floor,
                order=0.5 if shape == "exponential" else 2.0,
            ),
            shapes,
            st.integers(2, 200),
            st.floats(0.0, 0.9),
        ),
    )


class Spec:
    """A constructor: valid kwargs, invalid values per argument, extras."""

    def __init__(
        self, factory, valid, invalid, *, needs_value=False, build=None, rates=None
    ):
        self.factory = factory
        self.valid = st.fixed_dictionaries(valid)
        if rates is not None:  # CLARA's (c, damping[, unit_step]), drawn jointly
            self.valid = st.builds(lambda a, b: {**a, **b}, self.valid, rates)
        self.invalid = invalid
        self.needs_value = needs_value
        self.build = build or (lambda kwargs: factory(**kwargs))


CLARA_COMMON = dict(adapt=st.booleans())
CLARA_BAD = dict(
    learning_rate=not_positive(),
    c=st.one_of(not_positive(), above(1.0)),
    damping=not_positive(),
)
ADAM_COMMON = dict(b1=UNIT_OPEN, b2=st.floats(0.5, 0.9999), eps=EPS)
ADAM_BAD = dict(b1=outside_unit(), b2=outside_unit(), eps=below(0.0))
SEED_VALID = dict(
    learning_rate=LR,
    **ADAM_COMMON,
    **CLARA_COMMON,
    weight_decay=WD,
    version=st.sampled_from([1, 2]),
    faithful=st.booleans(),
)
SEED_BAD = dict(
    **CLARA_BAD, **ADAM_BAD, weight_decay=below(0.0), version=bad_choice((1, 2))
)

NUMERATORS = ("constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev")
AUTOSGM_VALID = dict(
    learning_rate=LR,
    pole=st.floats(0.0, 0.99),
    zero=st.floats(0.0, 0.99),
    gain=st.one_of(st.none(), st.floats(0.0, 2.0)),
    debias=st.booleans(),
    b2=st.floats(0.5, 0.9999),
    beta_n=st.floats(0.5, 0.9999),
    numerator=st.sampled_from(NUMERATORS),
    eps=EPS,
    eps_in_sqrt=st.booleans(),
    weight_decay=WD,
    weight_decay_mode=st.sampled_from(["coupled", "decoupled"]),
    window=window_strategy(),
    mu_dtype=st.sampled_from([None, jnp.float32, jnp.bfloat16]),
)
AUTOSGM_BAD = dict(
    learning_rate=not_positive(),
    pole=outside_unit(),
    zero=outside_unit(),
    gain=below(0.0),
    b2=outside_unit(),
    beta_n=outside_unit(),
    numerator=bad_choice(
        ("constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev")
    ),
    eps=below(0.0),
    weight_decay=below(0.0),
    weight_decay_mode=bad_choice(("coupled", "decoupled")),
    window=below(0.0),
)

GARO_VALID = dict(
    granularity=st.sampled_from(["global", "per_tensor"]),
    lagged=st.booleans(),
    weight_decay_mode=st.sampled_from(["coupled", "decoupled"]),
    momentum_nonneg=st.booleans(),
    skip_nonfinite=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    hidden_size=st.sampled_from([1, 4, 32]),
    head_init_scale=st.floats(0.0, 1.0),
    learning_rate_init=LR,
    momentum_init=st.floats(-0.9, 0.95),
    weight_decay_init=WD,
)
CONTROLLER_BAD = dict(
    hidden_size=st.one_of(st.integers(-5, 0), st.sampled_from([2.5, "8"])),
    head_init_scale=below(0.0),
    learning_rate_init=not_positive(),
    momentum_init=st.one_of(below(-1.0), above(1.0, closed=True), st.just(-1.0)),
    weight_decay_init=below(0.0),
    granularity=bad_choice(("global", "per_tensor")),
)
GARO_BAD = dict(CONTROLLER_BAD, weight_decay_mode=bad_choice(("coupled", "decoupled")))


def _from_asgm(kwargs):
    return garo_optax.from_asgm_config(
        lr_cfg=(kwargs["adaptive"], kwargs["lr"], kwargs["num_lrc"]),
        beta_cfg=(kwargs["beta_n"], 0.999, kwargs["pole"], kwargs["zero"], 0.0, True),
        wd_cfg=(kwargs["wd"], kwargs["wd_lvl"]),
        eps_cfg=(kwargs["eps"], True),
    )


def _with_controller(kwargs):
    kwargs = dict(kwargs)
    granularity = kwargs.pop("granularity")
    controller = garo_optax.init_controller(
        jax.random.key(kwargs.pop("seed")), granularity=granularity, **kwargs
    )
    return garo_optax.garo(controller, granularity=granularity)


SPECS = {
    "clara_sgd": Spec(
        garo_optax.clara_sgd,
        dict(
            learning_rate=LR,
            **CLARA_COMMON,
            normalize=st.sampled_from(["per_tensor", "global"]),
            mu=st.one_of(st.none(), st.floats(0.1, 10.0)),
        ),
        dict(
            **CLARA_BAD,
            normalize=bad_choice(("per_tensor", "global")),
            mu=not_positive(),
        ),
        rates=clara_rates(),
    ),
    "scale_by_clara": Spec(
        garo_optax.scale_by_clara,
        dict(
            learning_rate=LR,
            **CLARA_COMMON,
            normalize=st.sampled_from(["per_tensor", "global"]),
            path_dtype=st.sampled_from([None, jnp.float32, jnp.bfloat16]),
        ),
        dict(**CLARA_BAD, normalize=bad_choice(("per_tensor", "global"))),
        rates=clara_rates(),
        build=lambda kw: optax.chain(
            garo_optax.scale_by_clara(**kw), optax.scale_by_learning_rate(1.0)
        ),
    ),
    "adam_clara": Spec(
        garo_optax.adam_clara,
        dict(
            learning_rate=LR,
            **ADAM_COMMON,
            **CLARA_COMMON,
            weight_decay=WD,
            mu_dtype=st.sampled_from([None, jnp.float32, jnp.bfloat16]),
        ),
        dict(**CLARA_BAD, **ADAM_BAD, weight_decay=below(0.0)),
        rates=clara_rates(),
    ),
    "adam_clara_global": Spec(
        garo_optax.adam_clara_global, SEED_VALID, SEED_BAD, rates=clara_rates(seed=True)
    ),
    "adam_clara_local": Spec(
        garo_optax.adam_clara_local, SEED_VALID, SEED_BAD, rates=clara_rates(seed=True)
    ),
    "adam_clara_smoothed": Spec(
        garo_optax.adam_clara_smoothed,
        SEED_VALID,
        SEED_BAD,
        rates=clara_rates(seed=True),
    ),
    "autosgm": Spec(garo_optax.autosgm, AUTOSGM_VALID, AUTOSGM_BAD),
    "scale_by_autosgm": Spec(
        garo_optax.scale_by_autosgm,
        AUTOSGM_VALID,
        AUTOSGM_BAD,
        build=lambda kw: optax.chain(
            garo_optax.scale_by_autosgm(**kw), optax.scale_by_learning_rate(1.0)
        ),
    ),
    "from_asgm_config": Spec(
        garo_optax.from_asgm_config,
        dict(
            adaptive=st.just(True),
            lr=LR,
            num_lrc=st.integers(0, 4),
            beta_n=st.floats(0.5, 0.9999),
            pole=st.floats(0.0, 0.99),
            zero=st.floats(0.0, 0.99),
            wd=WD,
            wd_lvl=st.sampled_from([0, 1]),
            eps=EPS,
        ),
        {},  # its tuple arguments are checked by test_autosgm's error tests
        build=_from_asgm,
    ),
    "garo": Spec(garo_optax.garo, GARO_VALID, GARO_BAD, needs_value=True),
    "scale_by_garo": Spec(
        garo_optax.scale_by_garo,
        GARO_VALID,
        GARO_BAD,
        needs_value=True,
        build=lambda kw: optax.chain(
            garo_optax.scale_by_garo(**kw), optax.scale_by_learning_rate(1.0)
        ),
    ),
    "init_controller": Spec(
        garo_optax.init_controller,
        {
            k: v
            for k, v in GARO_VALID.items()
            if k
            in (
                "granularity",
                "seed",
                "hidden_size",
                "head_init_scale",
                "learning_rate_init",
                "momentum_init",
                "weight_decay_init",
            )
        },
        CONTROLLER_BAD,
        needs_value=True,
        build=_with_controller,
    ),
}

# --- Random problems. ---

SHAPES = (
    {"w": (3, 4), "b": (4,)},
    {"x": (7,)},
    {"layers": ((2, 3), (3,)), "scale": ()},
)


@st.composite
def problems(draw):
    """(params, curvatures, targets, noise keys) of a random noisy quadratic."""
    shapes = draw(st.sampled_from(SHAPES))
    seed = draw(st.integers(0, 2**32 - 1))
    noise = draw(st.sampled_from([0.0, 0.1, 1.0]))
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
    rng = np.random.default_rng(seed)
    draw_tree = lambda f: treedef.unflatten(
        [np.asarray(f(s), np.float32) for s in leaves]
    )
    params = draw_tree(lambda s: rng.normal(size=s))
    curvature = draw_tree(lambda s: np.exp(rng.uniform(np.log(0.1), np.log(10.0), s)))
    target = draw_tree(lambda s: rng.normal(size=s))
    noises = [draw_tree(lambda s: noise * rng.normal(size=s)) for _ in range(STEPS)]
    return params, curvature, target, noises


def run_steps(opt, needs_value, problem):
    params, curvature, target, noises = problem
    params = jax.tree.map(jnp.asarray, params)
    state = opt.init(params)
    for t in range(STEPS):
        diff = jax.tree.map(lambda p, y: p - y, params, target)
        grads = jax.tree.map(lambda h, d, n: h * d + n, curvature, diff, noises[t])
        loss = sum(
            0.5 * jnp.sum(h * d * d)
            for h, d in zip(jax.tree.leaves(curvature), jax.tree.leaves(diff))
        )
        extra = {"value": loss} if needs_value else {}
        updates, state = opt.update(grads, state, params, **extra)
        finite = all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))
        assert finite, f"non-finite update at step {t}"
        params = optax.apply_updates(params, updates)
    for leaf in jax.tree.leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert bool(jnp.isfinite(leaf).all()), "non-finite state"


def check_valid(name, data):
    spec = SPECS[name]
    kwargs = data.draw(spec.valid, label="kwargs")
    problem = data.draw(problems(), label="problem")
    try:
        opt = spec.build(kwargs)
    except ValueError as error:
        pytest.fail(f"valid arguments {kwargs} raised {error}")
    run_steps(opt, spec.needs_value, problem)


def check_invalid(name, data):
    spec = SPECS[name]
    kwargs = data.draw(spec.valid, label="valid kwargs")
    arg = data.draw(st.sampled_from(sorted(spec.invalid)), label="argument")
    value = data.draw(spec.invalid[arg], label="invalid value")
    kwargs[arg] = value
    with pytest.raises(ValueError) as info:
        spec.build(kwargs)
    assert arg in str(info.value), f"{arg}={value!r}: {info.value}"


QUICK = settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THOROUGH = settings(QUICK, max_examples=40, derandomize=False)
INVALID = settings(QUICK, max_examples=60)

WITH_INVALID = sorted(n for n, s in SPECS.items() if s.invalid)


@pytest.mark.parametrize("name", sorted(SPECS))
@QUICK
@given(data=st.data())
def test_valid_arguments_give_finite_updates(name, data):
    check_valid(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
@THOROUGH
@given(data=st.data())
def test_valid_arguments_give_finite_updates_thoroughly(name, data):
    check_valid(name, data)


@pytest.mark.parametrize("name", WITH_INVALID)
@INVALID
@given(data=st.data())
def test_invalid_arguments_raise_value_error_naming_them(name, data):
    check_invalid(name, data)


WINDOW_SHAPES = schedules.SHAPES


@INVALID
@given(
    shape=st.sampled_from(WINDOW_SHAPES),
    length=st.integers(1, 500),
    floor=st.floats(0.0, 0.99),
    order=st.floats(0.05, 0.95) | st.floats(1.0, 6.0),
    mode=st.sampled_from(["half", "full"]),
    flat_top=st.floats(0.0, 0.9),
    sub_shapes=st.integers(1, 4),
    sequence=st.sampled_from(["uniform", "kronecker"]),
    normalization=st.sampled_from(["original", "exact"]),
)
def test_window_schedules_stay_in_their_range(
    shape, length, floor, order, mode, flat_top, sub_shapes, sequence, normalization
):
    """Values are finite and in [0, 1]; the original late logistic starts
    above 1, below 1.375 (documented)."""
    if shape == "exponential":
        order = min(order, 0.95)
    try:
        window = garo_optax.window_schedule(
            shape,
            length=length,
            floor=floor,
            order=order,
            mode=mode,
            flat_top=flat_top,
            sub_shapes=sub_shapes,
            sequence=sequence,
            normalization=normalization,
        )
    except ValueError as error:
        # Frames too short for their sub-shapes: refused, by name.
        assert "length" in str(error) or "sub_shapes" in str(error), error
        return
    # 64 steps over three frames: one shape, so eager ops compile once.
    steps = jnp.asarray(np.linspace(0, 3 * length + 1, 64).astype(np.int32))
    values = np.asarray(window(steps))
    peak = 1.375 if (shape, normalization) == ("late_logistic", "original") else 1
    assert np.isfinite(values).all()
    assert values.min() >= 0.0 and values.max() <= peak * (1 + 1e-6)


@INVALID
@given(
    arg=st.sampled_from(["shape", "length", "floor", "order", "mode", "flat_top"]),
    data=st.data(),
)
def test_invalid_window_arguments_raise_value_error(arg, data):
    bad = {
        "shape": bad_choice(("raised_cosine",)),
        "length": st.one_of(st.integers(-10, 0), st.just(2.5)),
        "floor": outside_unit(),
        "order": not_positive(),
        "mode": bad_choice(("half", "full")),
        "flat_top": outside_unit(),
    }[arg]
    kwargs = dict(shape="polynomial", length=10)
    kwargs[arg] = data.draw(bad)
    with pytest.raises(ValueError) as info:
        garo_optax.window_schedule(kwargs.pop("shape"), **kwargs)
    assert arg in str(info.value)
