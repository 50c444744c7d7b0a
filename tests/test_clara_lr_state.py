"""The state field ``lr`` is the source of truth for CLARA's rate.

Users set a rate by writing the state (warm restarts, manual decay,
population-based training): ``optax.tree.set(state, lr=x)``. The next update
must use ``x`` and the adaptation continue multiplicatively from it, for every
CLARA transform, under ``jit`` too. Since no CLARA direction depends on the rate
(unit steps of the gradient, Adam's direction), writing ``lr = k * lr`` scales
every later update and rate by exactly ``k`` (up to rounding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry

import garo_optax

pytestmark = pytest.mark.usefixtures("fast_compile")

SCHEDULE = optax.linear_schedule(0.1, 0.02, 8)

VARIANTS = {
    "clara_sgd": lambda: garo_optax.clara_sgd(0.1, damping=0.05),
    "clara_sgd_global": lambda: garo_optax.clara_sgd(
        0.1, damping=0.05, normalize="global"
    ),
    "clara_sgd_schedule": lambda: garo_optax.clara_sgd(SCHEDULE, damping=0.05),
    "scale_by_clara": lambda: registry.adam_then_scale_by_clara(0.1, damping=0.05),
    "adam_clara": lambda: garo_optax.adam_clara(0.1, damping=0.05),
    "adam_clara_raw_schedule": lambda: garo_optax.adam_clara(
        SCHEDULE, damping=0.05, unit_step=False
    ),
    "adam_clara_global": lambda: garo_optax.adam_clara_global(0.1),
    "adam_clara_global_schedule": lambda: garo_optax.adam_clara_global(SCHEDULE),
    "adam_clara_local": lambda: garo_optax.adam_clara_local(0.1),
    "adam_clara_local_clamped": lambda: garo_optax.adam_clara_local(
        0.1, faithful=False
    ),
    "adam_clara_smoothed": lambda: garo_optax.adam_clara_smoothed(0.1),
    "adam_clara_smoothed_v1": lambda: garo_optax.adam_clara_smoothed(0.1, version=1),
}
PUBLISHED = ("clara_sgd", "clara_sgd_schedule", "scale_by_clara", "adam_clara")

STEPS = 6


def _problem(key):
    params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(5)}
    keys = jax.random.split(key, 2)
    grads = [
        {
            "w": jax.random.normal(jax.random.fold_in(keys[0], t), (3, 4)),
            "b": 1.0 + jax.random.normal(jax.random.fold_in(keys[1], t), (5,)),
        }
        for t in range(STEPS)
    ]
    return params, grads


class _Runner:
    """Runs ``tx`` step by step with one jitted update (and one jitted
    write-then-update), compiled once for every run."""

    def __init__(self, tx):
        self.tx = tx
        self.update = jax.jit(tx.update)
        self.update_written = jax.jit(
            lambda g, s, p, x: tx.update(g, optax.tree.set(s, lr=x), p)
        )

    def __call__(self, params, grads, writes=None, inside_jit=False):
        """Updates, and lr before and after each step; ``writes[t]`` is written
        into the state's lr before step t (a Python float; inside the jitted
        step if ``inside_jit``)."""
        writes = writes or {}
        state = self.tx.init(params)
        updates, before, after = [], [], []
        for t, g in enumerate(grads):
            if t in writes and inside_jit:
                u, state = self.update_written(g, state, params, writes[t])
                before.append(writes[t])
            else:
                if t in writes:
                    state = optax.tree.set(state, lr=writes[t])
                before.append(float(optax.tree.get(state, "lr", np.nan)))
                u, state = self.update(g, state, params)
            updates.append(u)
            after.append(float(optax.tree.get(state, "lr", np.nan)))
        return updates, np.array(before), np.array(after)


def _run(tx, params, grads, writes=None, inside_jit=False):
    return _Runner(tx)(params, grads, writes, inside_jit)


def _assert_tree_scaled(actual, desired, k, rtol=1e-5):
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired)):
        np.testing.assert_allclose(a, k * d, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("name", VARIANTS)
def test_written_lr_scales_every_later_step(key, name):
    run = _Runner(VARIANTS[name]())
    params, grads = _problem(key)
    plain, before, lrs = run(params, grads)
    assert not np.allclose(lrs[1:], lrs[:-1], rtol=1e-4)  # the rate adapts
    k = 0.37
    for inside_jit in (False, True):
        written, _, lrs_w = run(params, grads, {3: k * lrs[2]}, inside_jit)
        for t in range(3):
            _assert_tree_scaled(written[t], plain[t], 1.0, rtol=0)
        for t in range(3, STEPS):
            _assert_tree_scaled(written[t], plain[t], k)
        np.testing.assert_allclose(lrs_w[3:], k * lrs[3:], rtol=1e-5)
    if name == "adam_clara_local_clamped":
        return  # It clamps a written 0 to 0.1 times the base rate.
    # lr = 0 stops the steps (the faithful Local rate's collapse), and a rate
    # written after it resumes them: the adaptation continues from it.
    x = 0.05
    written, _, lrs_w = run(params, grads, {2: 0.0, 3: x}, inside_jit=True)
    for u in jax.tree.leaves(written[2]):
        np.testing.assert_array_equal(u, 0.0)
    assert lrs_w[2] == 0.0
    _assert_tree_scaled(written[3], plain[3], x / before[3])


@pytest.mark.parametrize("name", PUBLISHED + ("clara_sgd_global",))
def test_next_update_applies_the_written_rate(key, name):
    """Published CLARA (unit steps): the next update is x times the unit
    direction: each leaf's update has norm x (the whole tree's if global)."""
    run = _Runner(VARIANTS[name]())
    params, grads = _problem(key)
    x = 0.0123
    for inside_jit in (False, True):
        updates, before, _ = run(params, grads[:3], {2: x}, inside_jit)
        assert before[2] == x
        norms = [float(jnp.linalg.norm(u)) for u in jax.tree.leaves(updates[2])]
        if name == "clara_sgd_global":
            norms = [float(np.linalg.norm(norms))]
        np.testing.assert_allclose(norms, x, rtol=1e-6)


@pytest.mark.parametrize(
    "factory",
    [garo_optax.adam_clara_global, garo_optax.adam_clara_local],
    ids=["global", "local"],
)
def test_seed_without_adaptation_applies_the_written_rate(key, factory):
    """Without adaptation a seed variant is Adam at the state's rate."""
    tx = factory(0.1, adapt=False)
    params, grads = _problem(key)
    x = 0.0123
    updates, _, lrs = _run(tx, params, grads[:4], {2: x}, inside_jit=True)
    adam, _, _ = _run(optax.adam(0.1), params, grads[:4])
    for t in (2, 3):
        _assert_tree_scaled(updates[t], adam[t], x / 0.1)
    np.testing.assert_allclose(lrs[2:], x, rtol=1e-6)


def test_injected_learning_rate_still_rescales(key):
    """Under inject_hyperparams a changed learning_rate multiplies the rate (by
    its change), and a written lr sets it; neither stops the other."""
    params, grads = _problem(key)
    tx = optax.inject_hyperparams(garo_optax.clara_sgd)(learning_rate=0.1)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for g in grads[:2]:
        _, state = update(g, state, params)
    plain, _ = update(grads[2], state, params)
    lr = optax.tree.get(state.inner_state, "lr")
    halved = state._replace(hyperparams={"learning_rate": jnp.asarray(0.05)})
    updates, halved = update(grads[2], halved, params)
    _assert_tree_scaled(updates, plain, 0.5)
    written = optax.tree.set(state, lr=jnp.asarray(3 * lr))
    updates, written = update(grads[2], written, params)
    _assert_tree_scaled(updates, plain, 3.0)
    # A schedule through inject_hyperparams steps as the schedule given
    # directly (its stored lr lags one schedule value: the inner transform
    # sees one value per step).
    schedule = optax.inject_hyperparams(garo_optax.adam_clara)(learning_rate=SCHEDULE)
    injected, _, _ = _run(schedule, params, grads)
    direct, _, _ = _run(garo_optax.adam_clara(SCHEDULE), params, grads)
    for t in range(STEPS):
        _assert_tree_scaled(injected[t], direct[t], 1.0)


@pytest.mark.parametrize(
    "factory", [garo_optax.clara_sgd, garo_optax.adam_clara_local], ids=["sgd", "local"]
)
def test_schedule_through_zero(key, factory):
    """A warmup from 0: the rate is schedule(t) times the adaptation factor
    (lr_factor carries it while the schedule is 0, where a written lr has no
    effect)."""
    params, grads = _problem(key)
    warmup = optax.linear_schedule(0.0, 0.1, 4)
    ours, before, lrs = _run(factory(warmup), params, grads, {0: 0.5})
    assert before[0] == 0.5
    for u in jax.tree.leaves(ours[0]):
        np.testing.assert_array_equal(u, 0.0)
    _, _, lrs_one = _run(factory(1.0), params, grads)
    seeds = factory is garo_optax.adam_clara_local  # lr is s(t), not s(t + 1)
    steps = np.arange(STEPS) + (0 if seeds else 1)
    np.testing.assert_allclose(lrs, warmup(steps) * lrs_one, rtol=1e-5, atol=1e-12)


def test_state_fields_are_unique():
    """optax.tree.get / set find exactly one lr, lr_factor and base_lr, also
    inside inject_hyperparams (whose learning_rate is another key)."""
    params = {"w": jnp.ones(3)}
    injected = [
        optax.inject_hyperparams(garo_optax.adam_clara)(learning_rate=0.1),
        optax.inject_hyperparams(garo_optax.adam_clara_smoothed, ("version",))(
            learning_rate=0.1
        ),
    ]
    for opt in [make() for make in VARIANTS.values()] + injected:
        state = opt.init(params)
        for field in ("lr", "lr_factor", "base_lr"):
            assert len(optax.tree.get_all_with_path(state, field)) == 1
        state = optax.tree.set(state, lr=jnp.float32(0.5))
        assert optax.tree.get(state, "lr") == 0.5
