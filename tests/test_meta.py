"""garo_optax.meta: unrolls, meta-gradient estimators, meta-training, checkpoints.

Most tests use small task families defined here (1-D and diagonal quadratics),
so that exact meta-gradients are cheap; the registered families are tested in
``test_meta_tasks.py``.
"""

import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import garo_optax
from garo_optax import meta
from garo_optax.meta import _train

REPO = pathlib.Path(__file__).resolve().parents[1]

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _quadratic_family(dim=1, spread=1.0, name="diag_quadratic"):
    """0.5 * sum(h * p^2) with log-uniform curvatures h in [e^-spread, e^spread]."""

    def sample(key):
        return {
            "h": jnp.exp(jax.random.uniform(key, (dim,), minval=-spread, maxval=spread))
        }

    def task(config):
        return meta.Task(
            init=lambda key: jnp.ones(dim) + 0.1 * jax.random.normal(key, (dim,)),
            loss=lambda p, batch: 0.5 * jnp.sum(config["h"] * p**2),
            batch=lambda key, step: None,
        )

    return meta.TaskFamily(name, sample, task)


def _controller(hidden_size=4, **kwargs):
    kwargs = {"head_init_scale": 1.0, "momentum_init": 0.3, **kwargs}
    return garo_optax.init_controller(
        jax.random.key(0), hidden_size=hidden_size, **kwargs
    )


@pytest.mark.slow
def test_checkpointed_unroll_equals_plain_unroll():
    """The checkpointed scan gives the plain scan's value and meta-gradient
    (float32). Slow: two compilations for one claim that the TBPTT test below
    also checks, in float64, on a nested checkpointed segment."""
    family = _quadratic_family(dim=3)
    task = family.task(family.sample(jax.random.key(1)))
    theta = _controller()

    def mean_log_loss(theta, checkpoint):
        out = meta.unroll(theta, task, jax.random.key(2), 12, checkpoint=checkpoint)
        return jnp.mean(meta.log_loss(out.losses))

    for_ckpt = jax.jit(jax.value_and_grad(lambda t: mean_log_loss(t, True)))(theta)
    plain = jax.jit(jax.value_and_grad(lambda t: mean_log_loss(t, False)))(theta)
    helpers.tree_allclose(for_ckpt, plain, rtol=1e-5, atol=1e-7)


def test_unroll_continues_from_a_state():
    """Two unrolls of 5 steps equal one of 10."""
    family = _quadratic_family(dim=2)
    task = family.task(family.sample(jax.random.key(1)))
    theta = _controller()
    whole = meta.unroll(theta, task, jax.random.key(2), 10)
    first = meta.unroll(theta, task, jax.random.key(2), 5)
    second = meta.unroll(theta, task, None, 5, state=first.state)
    np.testing.assert_allclose(
        np.concatenate([first.losses, second.losses]), whole.losses, rtol=1e-6
    )


def test_tbptt_meta_gradient_matches_finite_differences():
    """Truncated backprop through one segment of a carried population equals
    central finite differences of that segment's meta-loss (float64), with and
    without rematerialization (the 6 steps run in nested chunks of 2)."""
    with jax.enable_x64(True):
        family = _quadratic_family(dim=1, spread=0.5)
        theta = _controller(hidden_size=3)
        kw = dict(segment_length=6, horizon=12)
        state = jax.jit(lambda key: meta.truncated_init(theta, family, key, 3, **kw))(
            jax.random.key(3)
        )
        # One compiled segment serves the advance and every evaluation below.
        step = jax.jit(
            lambda theta, state, key: meta.truncated_step(
                theta, family, state, key, **kw
            )
        )
        # Advance once so that the segment starts mid-run (non-zero buffers).
        _, _, state, _ = step(theta, state, jax.random.key(4))
        state = state._replace(inner=state.inner._replace(step=state.inner.step % 6))

        def value_and_grad(theta):
            return step(theta, state, jax.random.key(5))[:2]

        value, grad = value_and_grad(theta)
        assert helpers.tree_all_finite(grad)
        plain = jax.jit(
            lambda theta: meta.truncated_step(
                theta, family, state, jax.random.key(5), checkpoint=False, **kw
            )[:2]
        )
        # The same arithmetic, recomputed: equal up to float64 reassociation.
        helpers.tree_allclose(plain(theta), (value, grad), rtol=1e-10, atol=1e-14)
        eps = 1e-6
        for name, index in (("head_b", (0,)), ("head_w", (0, 1)), ("w_hh", (4, 2))):
            w = getattr(theta, name)
            bump = lambda d: theta._replace(**{name: w.at[index].add(d)})  # noqa: B023
            fd = (value_and_grad(bump(eps))[0] - value_and_grad(bump(-eps))[0]) / (
                2 * eps
            )
            assert abs(fd) > 1e-6, name
            # Central differences in float64 carry ~1e-16 / eps of roundoff.
            np.testing.assert_allclose(
                getattr(grad, name)[index], fd, rtol=1e-5, atol=1e-9
            )


def test_pes_is_unbiased_across_two_segments():
    """PES's second-segment estimate (perturbations accumulated over both
    segments) is within 4 standard errors of the exact gradient of that
    segment's loss, which depends on the controller through both segments."""
    with jax.enable_x64(True):
        K, population, std = 4, 1024, 0.01
        family = _quadratic_family(dim=1, spread=0.0)  # every member the same task
        theta = _controller(hidden_size=2)
        init_kw = dict(segment_length=K, horizon=8 * K, estimator="pes")
        kw = dict(init_kw, pes_std=std)
        state = jax.jit(
            lambda key: meta.truncated_init(theta, family, key, population, **init_kw)
        )(jax.random.key(3))
        zero_steps = lambda s: s._replace(step=jnp.zeros_like(s.step))
        state = state._replace(
            inner=zero_steps(state.inner), antithetic=zero_steps(state.antithetic)
        )
        task = family.task(jax.tree.map(lambda x: x[0], state.inner.config))
        init_key = state.inner.key[0]
        params0 = jax.tree.map(lambda x: x[0], state.inner.params)

        # The exact gradient of the second segment's loss of an unperturbed run.
        def exact(theta):
            opt = garo_optax.garo(theta)
            state0 = meta.InnerState(
                None, params0, opt.init(params0), jnp.zeros([], jnp.int32), init_key
            )
            out = meta.unroll(theta, task, None, 2 * K, state=state0, checkpoint=False)
            return jnp.mean(meta.log_loss(out.losses[K:]))

        want = jax.jit(jax.grad(exact))(theta)
        # 16 independent estimates (sub-populations with their own keys) of the
        # second segment: their mean and its standard error. Both segments run
        # as sub-populations, so that one compiled function serves the two.
        groups = 16

        @jax.jit
        def grouped(theta, sub, key):
            keys = jax.random.split(key, groups)
            return jax.vmap(
                lambda s, k: meta.truncated_step(theta, family, s, k, **kw)[1:3]
            )(sub, keys)

        sub = jax.tree.map(
            lambda x: x.reshape((groups, population // groups) + x.shape[1:]), state
        )
        _, sub1 = grouped(theta, sub, jax.random.key(10))
        group_grads, sub2 = grouped(theta, sub1, jax.random.key(11))
        for name, index in (("head_b", (0,)), ("head_b", (1,)), ("head_w", (0, 0))):
            g = np.asarray(getattr(group_grads, name))[(slice(None),) + index]
            mean, stderr = g.mean(), g.std(ddof=1) / np.sqrt(groups)
            target = np.asarray(getattr(want, name))[index]
            assert abs(mean - target) < 4 * stderr, (name, index, mean, target, stderr)
            assert stderr < 0.5 * abs(target), (name, index, stderr, target)
        assert np.all(np.asarray(sub1.inner.step) == K)
        assert np.all(np.asarray(sub2.inner.step) == 2 * K)


def test_full_meta_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        family = _quadratic_family(dim=2)
        theta = _controller(hidden_size=3)

        @jax.jit
        def run(theta):
            return meta.full_meta_gradient(theta, family, jax.random.key(1), 2, 8)[:2]

        value, grad = run(theta)
        eps = 1e-6
        w = theta.head_b
        fd = (
            run(theta._replace(head_b=w.at[0].add(eps)))[0]
            - run(theta._replace(head_b=w.at[0].add(-eps)))[0]
        ) / (2 * eps)
        np.testing.assert_allclose(grad.head_b[0], fd, rtol=1e-5)


@functools.cache
def _meta_training(num_devices=1):
    """``(family, init, step)`` of one small meta-training run, compiled once
    for the three tests that use it: 16 inner runs on diagonal quadratics,
    segments of 5 steps, a horizon of 4 segments."""
    family = _quadratic_family(dim=4, spread=1.5)
    config = meta.MetaConfig(
        families=(family,),
        population=16,
        segment_length=5,
        horizon=20,
        outer_learning_rate=0.05,
        steps=1,
        hidden_size=8,
        num_devices=num_devices,
    )
    return (family, *meta.make_meta_train(config))


def test_one_meta_step_lowers_the_meta_loss():
    family, init, step = _meta_training()
    state = init()
    theta0 = state.controller
    evaluate = jax.jit(
        lambda t: meta.full_meta_gradient(t, family, jax.random.key(123), 32, 20)[0]
    )
    before = evaluate(theta0)
    state, metrics = step(state)  # donates the state: theta0 is evaluated first
    after = evaluate(state.controller)
    assert np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
    assert after < before - 1e-3, (before, after)


def test_truncated_population_is_desynchronized_and_resets():
    """The population of ``make_meta_train`` (``truncated_init`` and
    ``truncated_step``) starts at offsets 0, 5, 10, 15 and resets each member
    when it reaches the horizon."""
    family, init, step = _meta_training()
    state = init()
    inner_steps = lambda state: np.asarray(state.populations[family.name].inner.step)
    steps = inner_steps(state)
    assert set(steps) <= {0, 5, 10, 15} and len(set(steps)) > 1
    resets = 0
    for _ in range(5):
        state, metrics = step(state)
        resets += int(metrics["resets"])
    # A member resets at the first segment that finds it at the horizon: in 5
    # segments of a 4-segment horizon every member resets exactly once, and
    # has then taken 5 more steps than its offset.
    assert resets == 16
    np.testing.assert_array_equal(inner_steps(state), steps + 5)


@pytest.mark.slow
def test_checkpointed_segment_memory_grows_sublinearly():
    """Compiled temporary memory of the TBPTT meta-gradient for K = 10, 100,
    1000: with the nested checkpointed scan ~sqrt(K), without it ~K."""
    dim = 4096
    family = _quadratic_family(dim=dim)
    theta = _controller(hidden_size=8)

    def temp_bytes(K, checkpoint):
        kw = dict(segment_length=K, horizon=K)
        state = jax.eval_shape(
            lambda: meta.truncated_init(theta, family, jax.random.key(0), 2, **kw)
        )
        fn = jax.jit(
            lambda t, s, k: meta.truncated_step(
                t, family, s, k, checkpoint=checkpoint, **kw
            )[:2]
        )
        compiled = fn.lower(theta, state, jax.random.key(1)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    ckpt = [temp_bytes(k, True) for k in (10, 100, 1000)]
    plain = [temp_bytes(k, False) for k in (10, 100, 1000)]
    assert ckpt[2] / ckpt[1] < 4 and ckpt[1] / ckpt[0] < 4, ckpt
    assert plain[2] / plain[1] > 8, plain
    assert ckpt[2] < plain[2] / 10


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(families=("no_such_family",)), "no_such_family"),
        (dict(estimator="sgd"), "estimator"),
        (dict(segment_length=0), "segment_length"),
        (dict(horizon=30, segment_length=20), "multiple of segment_length"),
        (dict(population=0), "population"),
        (dict(num_devices=2), "num_devices"),
        (dict(outer_learning_rate=-1.0), "outer_learning_rate"),
        (dict(families=()), "families"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(warm_start="garo-v9"), "warm_start"),
        # garo-v1 is the seed design, this config the scale-free one.
        (dict(warm_start="garo-v1", scale_free=True), "design"),
        (dict(warm_start="garo-v1", hidden_size=16), "design"),
    ],
)
def test_bad_configs_raise(fields, match):
    fields = {"families": (_quadratic_family(),), **fields}
    with pytest.raises(ValueError, match=match):
        meta.check_config(meta.MetaConfig(**fields))


def test_warm_start_starts_from_the_shipped_controller():
    shipped = garo_optax.pretrained("garo-v2")
    config = _train.get_config("garo-v2-long")
    assert config.warm_start == "garo-v2"
    meta.check_config(config)
    start = meta.initial_controller(config)
    assert start.design == shipped.design
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(shipped)):
        np.testing.assert_array_equal(a, b)
    fresh = meta.initial_controller(config._replace(warm_start=None))
    assert not np.array_equal(fresh.w_ih, shipped.w_ih)


# The run of `_meta_training` on 8 host devices, in a fresh process (the device
# count is fixed when JAX starts); the test compares it with the same run here
# on one device. Compiling dominates: see the root conftest.py.
_SHARDING_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from garo_optax import meta

    sys.path.insert(0, sys.argv[1])
    from test_meta import _meta_training

    assert len(jax.devices()) == 8, jax.devices()
    family, init, step = _meta_training(num_devices=8)
    state = init()
    shards = len(state.populations[family.name].inner.params.sharding.device_set)
    for _ in range(3):
        state, metrics = step(state)
    params = state.populations[family.name].inner.params
    out = {
        "shards": shards,
        "after": len(params.sharding.device_set),
        "controller": [np.ravel(x).tolist() for x in jax.tree.leaves(state.controller)],
        "meta_loss": float(metrics["meta_loss"]),
    }
    try:
        meta.check_config(
            meta.MetaConfig(families=(family,), population=6, num_devices=4)
        )
        out["error"] = None
    except ValueError as e:
        out["error"] = str(e)
    print(json.dumps(out))
    """
)


def test_population_sharded_over_8_host_devices_matches_one_device():
    """Three meta-steps (resets included: the members at offsets 10 and 15
    reach the horizon) with the population split over 8 devices equal the
    same steps on one device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", _SHARDING_SCRIPT, str(REPO / "tests")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    family, init, step = _meta_training()
    state = init()
    assert len(state.populations[family.name].inner.params.sharding.device_set) == 1
    for _ in range(3):
        state, metrics = step(state)
    assert out["shards"] == 8 and out["after"] == 8
    for a, b in zip(jax.tree.leaves(state.controller), out["controller"]):
        np.testing.assert_allclose(np.ravel(a), b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["meta_loss"], out["meta_loss"], rtol=1e-5)
    assert "divisible" in out["error"] and "population=6" in out["error"]
