"""``hyperparams(state)``: what any of the library's transforms used last step."""

import jax

from garo_optax._src.autosgm import ScaleByAutoSgmState
from garo_optax._src.clara import ScaleByAdamClaraState, ScaleByClaraState
from garo_optax._src.garo import ScaleByGaroState

# Each state class and the fields it reports, in the order of the dict.
_FIELDS = {
    ScaleByGaroState: ("lr", "mom", "wd"),
    ScaleByClaraState: ("lr",),
    ScaleByAdamClaraState: ("lr",),
    ScaleByAutoSgmState: ("lr",),
}


def _is_ours(x) -> bool:
    return isinstance(x, tuple(_FIELDS))


def hyperparams(opt_state) -> dict[str, jax.Array]:
    """The learning rate (and momentum and weight decay, where adapted) in a state.

    Finds the one state of a GARO, CLARA or AutoSGM transform anywhere inside
    ``opt_state`` (``optax.chain``, ``optax.named_chain``, ``optax.masked``,
    ``optax.MultiSteps``, ``optax.inject_hyperparams``, ``nnx.Optimizer``'s
    ``opt_state``) and returns the hyperparameters it adapts:

    =================================  ============================================
    transform                          keys
    =================================  ============================================
    :func:`garo`, :func:`scale_by_garo`  ``lr``, ``mom``, ``wd``: what the controller
                                       emitted for the last step (scalars, or one
                                       per leaf per tensor)
    CLARA (every variant)              ``lr``: the rate of the next update (scalar)
    AutoSGM                            ``lr``: one rate per leaf, in the order of
                                       ``jax.tree.leaves(params)``
    =================================  ============================================

    Args:
      opt_state: an optimizer state holding exactly one such state.

    Returns:
      A dict of arrays, keyed as in the table.

    Raises:
      ValueError: when ``opt_state`` holds none or several of them.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> tx = optax.chain(optax.clip(1.0), garo_optax.garo())
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> print(f"{float(garo_optax.hyperparams(state)['lr']):.3f}")
      0.010
      >>> state = garo_optax.clara_sgd(0.05).init({"w": jnp.zeros(2)})
      >>> print(sorted(garo_optax.hyperparams(state)))
      ['lr']
    """
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_ours) if _is_ours(x)]
    if len(found) != 1:
        names = ", ".join(cls.__name__ for cls in _FIELDS)
        raise ValueError(
            f"expected exactly one state of GARO, CLARA or AutoSGM ({names}) in "
            f"opt_state, found {len(found)}"
        )
    state = found[0]
    return {name: getattr(state, name) for name in _FIELDS[type(state)]}
