"""The tuning-free peer optimizers of optax 0.2.8, one registry.

Every comparison of GARO with the learning-rate-free optimizers of optax
(``garo-optax meta-eval``, ``garo-optax bench``) takes them from :data:`PEERS`
(through the program's optimizer registry, ``garo_optax._app.registry``, which
adds them to its entries), so that they all run the same optimizers, at the
same settings, in the same way. Each entry is an optax optimizer at its
documented defaults, built by a no-argument ``factory``; how a training loop
must drive it is in the entry:

* ``update(grads, state, params, value=loss)``: every peer is built with
  :func:`optax.with_extra_args_support`, so the loss may always be passed;
  ``needs_value`` marks the peers that read it (Polyak step sizes), and every
  peer but ``polyak_sgd`` also needs ``params``.
* ``eval_params``: the schedule-free optimizers train at an interpolation
  ``y`` of their iterates and are evaluated at their average ``x``,
  ``optax.contrib.schedule_free_eval_params(state, params)``, as their authors
  require: losses and held-out metrics of such a run are those at
  ``eval_params(opt_state, params)``.
* ``takes_learning_rate``: ``False`` for every peer (each runs once, at its
  defaults, which include the multiplier ``learning_rate=1.0`` where there is
  one, and schedule-free AdamW's 0.0025); the classic optimizers that take a
  rate (``optax.adam``, ``optax.sgd``, ...) are swept by the comparisons and
  are not in this registry.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from garo_optax._src import peers
  >>> peer = peers.PEERS["schedule_free_adamw"]
  >>> tx, params = peer.factory(), jnp.ones(2)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(params, state, params, value=jnp.sum(params**2))
  >>> params = optax.apply_updates(params, updates)
  >>> peers.evaluation_params(peer, state, params).shape
  (2,)
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import optax


class Peer(NamedTuple):
    """One tuning-free optimizer of the registry.

    Attributes:
      name: the key of :data:`PEERS`.
      factory: ``factory() -> optax.GradientTransformationExtraArgs``, the
        optimizer at its documented defaults.
      description: one line: the optax call and what it adapts.
      reference: the paper (authors, title, arXiv address, year).
      needs_value: ``update`` reads the loss from ``value=``.
      eval_params: ``eval_params(opt_state, params) -> params``, the
        parameters at which to evaluate the model (``None``: ``params``).
      takes_learning_rate: the optimizer is meant to be swept over a learning
        rate (``False`` for every peer).
    """

    name: str
    factory: Callable[[], optax.GradientTransformationExtraArgs]
    description: str
    reference: str
    needs_value: bool = False
    eval_params: Callable[[Any, Any], Any] | None = None
    takes_learning_rate: bool = False


def _build(make: Callable[[], optax.GradientTransformation]):
    # One update signature for every peer: `value=` and `params` accepted.
    return lambda: optax.with_extra_args_support(make())


def _mechanize_adam():
    return optax.contrib.mechanize(optax.adam(1.0))


_SF = optax.contrib.schedule_free_eval_params

_ENTRIES = (
    Peer(
        "prodigy",
        _build(optax.contrib.prodigy),
        "optax.contrib.prodigy: AdamW whose rate is a running D-estimate",
        "Mishchenko & Defazio, Prodigy: An Expeditiously Adaptive Parameter-Free "
        "Learner, https://arxiv.org/abs/2306.06101, 2023",
    ),
    Peer(
        "dadapt_adamw",
        _build(optax.contrib.dadapt_adamw),
        "optax.contrib.dadapt_adamw: AdamW with a D-Adaptation rate",
        "Defazio & Mishchenko, Learning-Rate-Free Learning by D-Adaptation, "
        "https://arxiv.org/abs/2301.07733, 2023",
    ),
    Peer(
        "dog",
        _build(optax.contrib.dog),
        "optax.contrib.dog: SGD, step = max distance from init / sqrt(sum |g|^2)",
        "Ivgi, Hinder & Carmon, DoG is SGD's Best Friend: A Parameter-Free "
        "Dynamic Step Size Schedule, https://arxiv.org/abs/2302.12022, 2023",
    ),
    Peer(
        "dowg",
        _build(optax.contrib.dowg),
        "optax.contrib.dowg: SGD, distance-weighted gradient sums (DoWG)",
        "Khaled, Mishchenko & Jin, DoWG Unleashed: An Efficient Universal "
        "Parameter-Free Gradient Descent Method, https://arxiv.org/abs/2305.16284, "
        "2023",
    ),
    Peer(
        "mechanize_adam",
        _build(_mechanize_adam),
        "optax.contrib.mechanize(optax.adam(1.0)): Mechanic scales Adam's step",
        "Cutkosky, Defazio & Mehta, Mechanic: A Learning Rate Tuner, "
        "https://arxiv.org/abs/2306.00144, 2023",
    ),
    Peer(
        "cocob",
        _build(optax.contrib.cocob),
        "optax.contrib.cocob: per-coordinate coin betting (COCOB-Backprop)",
        "Orabona & Tommasi, Training Deep Networks without Learning Rates "
        "Through Coin Betting, https://arxiv.org/abs/1705.07795, 2017",
    ),
    Peer(
        "schedule_free_adamw",
        _build(optax.contrib.schedule_free_adamw),
        "optax.contrib.schedule_free_adamw (lr 0.0025), evaluated at its average",
        "Defazio et al, The Road Less Scheduled, https://arxiv.org/abs/2405.15682, "
        "2024",
        eval_params=_SF,
    ),
    Peer(
        "schedule_free_sgd",
        _build(optax.contrib.schedule_free_sgd),
        "optax.contrib.schedule_free_sgd (lr 1.0), evaluated at its average",
        "Defazio et al, The Road Less Scheduled, https://arxiv.org/abs/2405.15682, "
        "2024",
        eval_params=_SF,
    ),
    Peer(
        "polyak_sgd",
        _build(optax.polyak_sgd),
        "optax.polyak_sgd: SGD with the stochastic Polyak step (f_min 0, max 1)",
        "Loizou, Vaswani, Laradji & Lacoste-Julien, Stochastic Polyak Step-size "
        "for SGD: An Adaptive Learning Rate for Fast Convergence, "
        "https://arxiv.org/abs/2002.10542, 2021",
        needs_value=True,
    ),
    Peer(
        "momo",
        _build(optax.contrib.momo),
        "optax.contrib.momo: SGD momentum with a truncated model step size",
        "Schaipp, Ohana, Eickenberg, Defazio & Gower, MoMo: Momentum Models for "
        "Adaptive Learning Rates, https://arxiv.org/abs/2305.07583, 2023",
        needs_value=True,
    ),
)

PEERS: dict[str, Peer] = {peer.name: peer for peer in _ENTRIES}
"""The tuning-free peers, by name, in a fixed order."""

ISSUE_PEERS: tuple[str, ...] = (
    "prodigy",
    "dadapt_adamw",
    "dog",
    "mechanize_adam",
    "cocob",
    "schedule_free_adamw",
)
"""The six peers every GARO evaluation must include (the others are extra)."""


def get_peer(name: str) -> Peer:
    """The entry ``name`` of :data:`PEERS`.

    Args:
      name: a key of :data:`PEERS`.

    Returns:
      The :class:`Peer`.

    Raises:
      ValueError: if ``name`` is not a peer.
    """
    try:
        return PEERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown peer optimizer {name!r}; expected one of {list(PEERS)}"
        ) from None


def evaluation_params(peer: Peer, opt_state, params):
    """The parameters at which to evaluate a run of ``peer``.

    Args:
      peer: the registry entry.
      opt_state: the optimizer's state.
      params: the parameters the optimizer trains (for the schedule-free
        optimizers, the interpolation ``y`` at which gradients are taken).

    Returns:
      ``peer.eval_params(opt_state, params)``, or ``params`` when the peer has
      no ``eval_params``.
    """
    if peer.eval_params is None:
        return params
    return peer.eval_params(opt_state, params)
