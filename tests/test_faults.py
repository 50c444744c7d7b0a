"""Faults: NaN and Inf gradients and losses, injected at a chosen step.

For every registry entry, every fault below is injected at step 0 and at step
3 of a 6-step run with gradients that change every step:

* ``nan``/``inf``/``-inf`` in one element of one leaf;
* a whole leaf of ``nan``;
* (GARO, which reads the loss) a ``nan``/``inf`` loss with finite gradients.

The documented behaviour (README, "Non-finite gradients"):

* GARO skips the step by itself: a zero update, and a state equal to that of
  the same run with the step skipped, but for the ``skipped`` counter. A
  non-finite loss only drops the loss feature for that step.
* The CLARA family and AutoSGM do not skip: the non-finite value shows in that
  step's update (never hidden in the state to surface later), as in
  ``optax.sgd``/``optax.adam``. CLARA keeps its learning rate and path.
  ``optax.apply_if_finite`` around any of them skips the step: its inner state
  and every later update are bit-identical to the run with the step skipped.

Each run is one jitted ``lax.scan``; the faults are data, so each entry
compiles two programs (alone, and inside ``apply_if_finite``). The reference
run uses the same program with the faulty step skipped by a ``lax.cond``,
which is why results compare bit for bit.
"""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from registry import REGISTRY, cases

import garo_optax

pytestmark = pytest.mark.usefixtures("fast_compile")

STEPS = 6
FAULT_STEPS = (0, 3)
VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def problem(key):
    params = {
        "w": jax.random.normal(key, (3, 4)),
        "b": jnp.zeros(4),
        "t": (jnp.ones(2), jnp.asarray(0.5)),
    }
    keys = jax.random.split(jax.random.fold_in(key, 1), STEPS)
    grads = jax.vmap(
        lambda k: jax.tree.map(lambda p: jax.random.normal(k, p.shape), params)
    )(keys)
    losses = jnp.linspace(2.0, 1.0, STEPS)
    return params, grads, losses


def faults(entry):
    """(name, grads edit, loss edit) for every fault tried on ``entry``."""
    out = []
    for name, bad in VALUES.items():
        out.append((f"grad-element-{name}", ("w", bad, "element"), None))
    out.append(("grad-leaf-nan", ("b", np.nan, "leaf"), None))
    if entry.needs_value:
        out += [(f"loss-{n}", None, VALUES[n]) for n in ("nan", "inf")]
    return out


def inject(grads, losses, step, grad_edit, loss_edit):
    if grad_edit is not None:
        name, bad, where = grad_edit
        leaf = grads[name]
        if where == "element":
            leaf = leaf.at[step, 0, 1].set(bad)
        else:
            leaf = leaf.at[step].set(bad)
        grads = {**grads, name: leaf}
    if loss_edit is not None:
        losses = losses.at[step].set(loss_edit)
    return grads, losses


def make_run(opt, entry):
    """Jitted: (params, grads per step, losses, skip mask) -> updates, states.

    A step whose ``skip`` is True leaves params and state as they are and
    emits zeros: the reference for a skipped step.
    """

    def body(carry, inputs):
        params, state = carry
        grads, loss, skip = inputs

        def update():
            kwargs = {"value": loss} if entry.needs_value else {}
            return opt.update(grads, state, params, **kwargs)

        def skipped():
            return jax.tree.map(jnp.zeros_like, grads), state

        updates, new_state = jax.lax.cond(skip, skipped, update)
        params = optax.apply_updates(params, updates)
        return (params, new_state), (updates, new_state)

    @jax.jit
    def run(params, grads, losses, skip):
        carry = (params, opt.init(params))
        _, (updates, states) = jax.lax.scan(body, carry, (grads, losses, skip))
        return updates, states

    return run


def at(tree, t):
    return jax.tree.map(lambda x: np.asarray(x[t]), tree)


def equal(a, b) -> bool:
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(flat_a, flat_b))


def _garo_state(state):
    is_garo = lambda x: isinstance(x, garo_optax.ScaleByGaroState)
    return next(x for x in jax.tree.leaves(state, is_leaf=is_garo) if is_garo(x))


def _all_but_skipped(state):
    garo = _garo_state(state)
    return garo._replace(skipped=None), garo.skipped


@pytest.mark.parametrize("entry", cases("faults"))
def test_injected_faults(entry, key):
    params, clean, losses = problem(key)
    opt = entry.make()
    run = make_run(opt, entry)
    wrapped = optax.apply_if_finite(opt, max_consecutive_errors=3)
    run_wrapped = make_run(wrapped, entry)
    skips_itself = entry.factory is garo_optax.garo
    no_skip = jnp.zeros(STEPS, bool)
    tried = 0
    for k in FAULT_STEPS:
        skip_k = no_skip.at[k].set(True)
        ref_updates, ref_states = run(params, clean, losses, skip_k)
        ref_w_updates, ref_w_states = run_wrapped(params, clean, losses, skip_k)
        for name, grad_edit, loss_edit in faults(entry):
            tried += 1
            grads, bad_losses = inject(clean, losses, k, grad_edit, loss_edit)
            updates, states = run(params, grads, bad_losses, no_skip)
            msg = f"{entry.name}: {name} at step {k}"
            if skips_itself or entry.name.startswith("clara_sgd"):
                # Nothing non-finite is ever kept (clara_sgd keeps only its
                # rate and path); Adam-style moments take the value, as
                # optax.adam's do.
                assert helpers.tree_all_finite(states), msg
            if loss_edit is not None:
                # A bad loss: the gradient step still happens, finitely.
                assert helpers.tree_all_finite(updates), msg
                garo = _garo_state(at(states, k))
                before = _garo_state(at(states, k - 1)) if k else None
                if before is not None:
                    assert garo.loss_mean == before.loss_mean, msg
                    assert garo.loss_count == before.loss_count, msg
                assert np.isfinite(garo.h).all() and garo.count == k + 1, msg
                continue
            if skips_itself:
                assert equal(updates, ref_updates), msg
                for t in range(STEPS):
                    state, skipped = _all_but_skipped(at(states, t))
                    ref_state, ref_skipped = _all_but_skipped(at(ref_states, t))
                    assert equal(state, ref_state), f"{msg}, state {t}"
                    assert skipped == ref_skipped + (t >= k), f"{msg}, state {t}"
            else:
                # The fault shows in that step's update, and only there.
                assert not helpers.tree_all_finite(at(updates, k)), msg
                later = [at(updates, t) for t in range(k)]
                assert all(helpers.tree_all_finite(u) for u in later), msg
                if entry.lr_in_state:
                    lr = optax.tree.get(at(states, k), "lr")
                    want = optax.tree.get(at(ref_states, k), "lr")
                    assert lr == want, f"{msg}: CLARA's rate moved"
            # apply_if_finite: the inner run is the one with the step skipped.
            w_updates, w_states = run_wrapped(params, grads, bad_losses, no_skip)
            assert equal(w_updates, ref_w_updates), f"{msg} (apply_if_finite)"
            assert equal(w_states.inner_state, ref_w_states.inner_state), msg
            # It checks the incoming gradients, so it catches GARO's too.
            caught = np.asarray(skip_k)
            assert np.array_equal(w_states.last_finite, ~caught), msg
            assert w_states.total_notfinite[-1] == caught.sum(), msg
    assert tried == len(FAULT_STEPS) * len(faults(entry))


def test_every_entry_is_tried():
    ids = [p.id for p in cases("faults")]
    assert ids == [e.name for e in REGISTRY]
