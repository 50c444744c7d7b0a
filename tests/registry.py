"""The registry of every public garo_optax transform, shared by the test modules.

``REGISTRY`` lists every public optimizer with minimal keyword arguments
(``test_common.test_registry_covers_public_api`` fails until a new one is
there): the configurations ``CONFORMANCE`` of the program's optimizer registry
(``garo_optax._app.registry``), whose factories and options they take, plus the
fields only the tests need. ``cases`` turns it into ``pytest.param``s for one
property, honouring each entry's ``xfail``. ``mixed_tree`` and ``unroll`` are
the problems and the driver the property tests share.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax
from garo_optax._app import registry as optimizers


@dataclasses.dataclass(frozen=True)
class Entry:
    """One optimizer under test.

    Attributes:
      name: the test id.
      factory: a function returning an optax transformation.
      kwargs: minimal keyword arguments for ``factory``.
      converge: keyword arguments the convergence test overrides (the rate).
      steps: number of steps of the convergence test.
      needs_value: ``update`` requires ``value=`` (the loss).
      static_args: arguments ``optax.inject_hyperparams`` must keep static.
      lr_in_state: the state holds a unique finite scalar ``lr``.
      strict_promotion: run under strict dtype promotion on float32 trees.
      covers: public names this entry stands for (default: the factory's name).
      xfail: ``"test-variant"`` -> reason, for known failures (strict xfail).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    kwargs: Mapping[str, Any]
    converge: Mapping[str, Any]
    steps: int
    needs_value: bool = False
    static_args: tuple[str, ...] = ()
    lr_in_state: bool = False
    strict_promotion: bool = False
    covers: tuple[str, ...] = ()
    xfail: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def make(self, **overrides) -> optax.GradientTransformationExtraArgs:
        return self.factory(**{**self.kwargs, **overrides})

    def extra(self, value) -> dict[str, Any]:
        return {"value": value} if self.needs_value else {}

    def promotion(self):
        if self.strict_promotion:
            return jax.numpy_dtype_promotion("strict")
        return contextlib.nullcontext()


def adam_then_scale_by_clara(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    c: float = 0.2,
    damping: float = 1e-3,
) -> optax.GradientTransformationExtraArgs:
    """The composable form: Adam's direction, CLARA's rate, then the sign flip.

    ``scale_by_clara`` runs under strict dtype promotion (``scale_by_adam``
    cannot), so every test of this entry also checks CLARA's core for it.
    """
    return optax.chain(
        optax.scale_by_adam(b1=b1),
        helpers.with_strict_promotion(
            garo_optax.scale_by_clara(
                learning_rate,
                c=c,
                damping=damping,
                mu=garo_optax.adam_clara_reference(c, b1),
            )
        ),
        optax.scale_by_learning_rate(1.0),
    )


_LOCAL_COLLAPSE = (
    "adam_clara_local (faithful) compounds its rate tensor by tensor and step by "
    "step; on this problem the rate decays to 0 before the optimum is reached"
)
_SEED = ("version",)
_GARO_CONVERGE = dict(learning_rate_init=1e-3, momentum_init=0.9)

RATE = 1e-2
"""The suite's learning rate (the registry's defaults are training rates: at
1e-3, a step of a bfloat16 parameter near 1 rounds away)."""


def registered(name: str, converge, steps: int, factory=None, **fields) -> Entry:
    """The entry ``name`` of the optimizer registry (``garo_optax._app.registry``)
    with the suite's fields: its factory and options (``factory`` replaces
    the factory where a test wraps it), at :data:`RATE`."""
    spec = optimizers.get(name)
    return Entry(
        name,
        factory or spec.function,
        spec.kwargs(RATE),
        converge,
        steps,
        covers=spec.covers,
        **fields,
    )


# One entry per line (or two), in the registry's CONFORMANCE order;
# ``# fmt: off`` keeps the table compact.
# fmt: off
REGISTRY: tuple[Entry, ...] = (
    # CLARA (garo_optax/_src/clara.py).
    registered("clara_sgd", dict(learning_rate=0.1), 10_000, lr_in_state=True,
               strict_promotion=True),
    registered("clara_sgd_global", dict(learning_rate=0.1), 10_000, lr_in_state=True,
               strict_promotion=True),
    registered("adam_clara", dict(learning_rate=0.03), 5_000, lr_in_state=True,
               strict_promotion=True),
    registered("adam_clara_global", dict(learning_rate=0.03), 3_000, static_args=_SEED,
               lr_in_state=True),
    registered("adam_clara_local", dict(learning_rate=0.03), 5_000, static_args=_SEED,
               lr_in_state=True, xfail={"convergence": _LOCAL_COLLAPSE}),
    registered("adam_clara_local_clamped", dict(learning_rate=0.1), 3_000,
               static_args=_SEED, lr_in_state=True),
    registered("adam_clara_smoothed", dict(learning_rate=0.03), 3_000,
               static_args=_SEED, lr_in_state=True),
    registered("adam_clara_smoothed_v1", dict(learning_rate=0.01), 5_000,
               static_args=_SEED, lr_in_state=True),
    # The registry's composable form, with scale_by_clara under strict promotion.
    registered("adam+scale_by_clara", dict(learning_rate=0.03), 5_000,
               factory=adam_then_scale_by_clara, lr_in_state=True),
    # AutoSGM (garo_optax/_src/autosgm.py); its ``lr`` is per leaf, not a scalar.
    registered("autosgm", dict(learning_rate=0.03), 3_000, strict_promotion=True),
    registered("autosgm_adam", dict(learning_rate=0.03), 3_000, strict_promotion=True),
    registered("autosgm_markov_window", dict(learning_rate=0.1), 5_000,
               strict_promotion=True),
    registered("from_asgm_config", dict(lr_cfg=(True, 0.03, 0)), 3_000,
               strict_promotion=True),
    # GARO (garo_optax/_src/garo.py): it reads the loss, so value= is always passed.
    registered("garo", _GARO_CONVERGE, 5_000, needs_value=True, lr_in_state=True,
               strict_promotion=True),
    registered("garo_lagged_coupled", _GARO_CONVERGE, 5_000, needs_value=True,
               lr_in_state=True, strict_promotion=True),
    registered("garo_per_tensor", _GARO_CONVERGE, 5_000, needs_value=True,
               strict_promotion=True),
    registered("garo_per_tensor_lagged", _GARO_CONVERGE, 5_000, needs_value=True,
               strict_promotion=True),
)
# fmt: on

_NAMES = [e.name for e in REGISTRY]
assert len(set(_NAMES)) == len(_NAMES), "registry names must be unique"
assert tuple(_NAMES) == optimizers.CONFORMANCE, "the registry's CONFORMANCE, in order"

FLOATS = {
    "float16": jnp.float16,
    "bfloat16": jnp.bfloat16,
    "float32": jnp.float32,
    "float64": jnp.float64,
}


def cases(prop: str, variants=(None,), where=lambda entry: True):
    """``pytest.param``s for one property over the registry (x variants).

    An entry's ``xfail`` key ``prop`` or ``f"{prop}-{variant}"`` marks that
    combination ``xfail(strict=True)``.
    """
    params = []
    for entry in REGISTRY:
        if not where(entry):
            continue
        for variant in variants:
            key = prop if variant is None else f"{prop}-{variant}"
            reason = entry.xfail.get(key) or entry.xfail.get(prop)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            values = (entry,) if variant is None else (entry, variant)
            id_ = entry.name if variant is None else f"{entry.name}-{variant}"
            params.append(pytest.param(*values, id=id_, marks=marks))
    return params


@functools.partial(jax.jit, static_argnames=("low", "high"))
def _mixed_tree(key, low, high):
    k = jax.random.split(key, 8)

    def tree(i):
        normal = lambda j, shape, dtype: jax.random.normal(k[i + j], shape, dtype)
        return {
            "w": normal(0, (2, 3), high),
            "b": normal(1, (4,), low),
            "t": (normal(2, (5,), high), normal(3, (), low)),
        }

    return tree(0), tree(4)


def mixed_tree(key, low=jnp.bfloat16, high=jnp.float32):
    """(params, grads): dict + tuple + scalar leaf, with ``high``/``low`` leaves."""
    return _mixed_tree(key, low=low, high=high)


DTYPE_PAIRS = {
    "bfloat16": (jnp.bfloat16, jnp.bfloat16),
    "float32": (jnp.float32, jnp.float32),
    "mixed": (jnp.bfloat16, jnp.float32),
}

# The loss passed as ``value=``: only forwarded, so any scalar will do.
VALUE = np.float32(1.0)


def _scan_step(opt, extra, grads, carry, _):
    params, state = carry
    updates, state = opt.update(grads, state, params, **extra)
    return (optax.apply_updates(params, updates), state), updates


def unroll(opt, params, grads, steps: int, extra=None, *, jit: bool = False):
    """Runs ``opt`` from ``init`` for ``steps`` updates with a fixed gradient.

    Eager by default: after the first entry, XLA has compiled every primitive
    for these shapes, so eager steps cost milliseconds where compiling a whole
    optimizer costs about half a second. ``jit=True`` runs one jitted
    ``lax.scan`` instead, for the properties that are about jit.

    Returns:
      ``(updates stacked over steps as NumPy arrays, final state)``.
    """
    extra = extra or {}
    if jit:
        body = functools.partial(_scan_step, opt, extra, grads)
        go = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), length=steps))
        (_, state), updates = go(params)
        return jax.tree.map(np.asarray, updates), state
    carry, history = (params, opt.init(params)), []
    for _ in range(steps):
        carry, updates = _scan_step(opt, extra, grads, carry, None)
        history.append(updates)
    return jax.tree.map(lambda *u: np.stack(u), *history), carry[1]
