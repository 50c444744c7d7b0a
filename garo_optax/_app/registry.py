"""The one optimizer registry of the ``garo-optax`` program (and of the tests).

Every named optimizer configuration that the program, the benchmarks and the
tests run lives here, once: ``garo-optax bench`` (:data:`OPTIMIZERS`, the
entries with ``bench=True``), ``garo-optax meta-eval`` (its optax baselines
:data:`META_EVAL_BASELINES` and the tuning-free peers, group ``"peers"``),
``garo-optax list``, ``benchmarks/soak.py`` and ``benchmarks/step_time.py``
(by name, at their own rates), and the conformance suite ``tests/registry.py``
(:data:`CONFORMANCE`, to which the tests add their own fields).

An entry is an :class:`OptimizerSpec`: ``build(learning_rate, num_steps)``
(the rate may be traced; ``num_steps`` sets schedules over the run), the
default rate (``None``: the optimizer sets its own and is never swept), the
family, one line of description, and how to read its state (``probe``) and
where to evaluate it (``eval_params``, the schedule-free peers' average).
Entries that configure one public factory also name it (``function``, with
``options``), so that a test can rebuild them with
``optax.inject_hyperparams(spec.function)(**spec.kwargs(rate))``.

The tuning-free peers come from :data:`garo_optax._src.peers.PEERS` (optax
only), which keeps their references and how a loop must drive them.
"""

import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import garo_optax
from garo_optax._src import hyperparams as hyperparams_lib
from garo_optax._src import peers as peers_lib
from garo_optax._src import pretrained as pretrained_lib
from garo_optax._src import schedules

Factory = Callable[[jax.Array, int], optax.GradientTransformation]
"""``factory(learning_rate, num_steps) -> optimizer``; the rate may be traced."""

_NO_OPTIONS: Mapping[str, Any] = types.MappingProxyType({})


def _learning_rate(learning_rate) -> dict[str, Any]:
    return {"learning_rate": learning_rate}


class OptimizerSpec(NamedTuple):
    """One entry of the optimizer registry.

    Attributes:
      build: ``build(learning_rate, num_steps) -> optimizer``.
      default_lr: the rate used without ``--sweep`` (``None``: the optimizer
        sets its own rate, e.g. GARO, and is never swept).
      group: the family, a key of :data:`GROUPS`.
      description: one line for the table's legend and ``garo-optax list``.
      probe: ``probe(opt_state) -> (lr, momentum, weight_decay)`` scalars
        recorded every step (NaN where not applicable), or ``None``.
      eval_params: ``eval_params(opt_state, params) -> params`` at which the
        losses are reported (schedule-free peers), or ``None``.
      function: the public factory the entry configures (``None`` where the
        entry is not one call of one factory).
      options: ``function``'s keyword arguments besides the rate.
      rate_kwargs: ``rate_kwargs(learning_rate) -> dict``, how ``function``
        takes the rate (``None``: it takes none).
      covers: public names the entry stands for besides ``function``'s.
      reference: the paper, where the entry is a published method.
      bench: ``garo-optax bench`` runs the entry by default.
    """

    build: Factory
    default_lr: float | None
    group: str
    description: str
    probe: Callable[[Any], tuple[jax.Array, jax.Array, jax.Array]] | None = None
    eval_params: Callable[[Any, Any], Any] | None = None
    function: Callable[..., optax.GradientTransformation] | None = None
    options: Mapping[str, Any] = _NO_OPTIONS
    rate_kwargs: Callable[[Any], dict[str, Any]] | None = _learning_rate
    covers: tuple[str, ...] = ()
    reference: str = ""
    bench: bool = True

    def kwargs(self, learning_rate=None) -> dict[str, Any]:
        """``function``'s keyword arguments at ``learning_rate``.

        Args:
          learning_rate: the rate (``None``: :attr:`default_lr`).

        Returns:
          ``options`` plus the rate's arguments (none for an entry without
          a rate).
        """
        if self.rate_kwargs is None or self.default_lr is None:
            return dict(self.options)
        rate = self.default_lr if learning_rate is None else learning_rate
        return {**self.rate_kwargs(rate), **self.options}


def _configured(
    function,
    default_lr: float | None,
    group: str,
    description: str,
    probe=None,
    *,
    rate_kwargs=_learning_rate,
    covers: tuple[str, ...] = (),
    bench: bool = True,
    **options,
) -> OptimizerSpec:
    """The entry ``function(**rate_kwargs(lr), **options)``."""
    spec = OptimizerSpec(
        None,
        default_lr,
        group,
        description,
        probe,
        function=function,
        options=types.MappingProxyType(options),
        rate_kwargs=rate_kwargs,
        covers=covers,
        bench=bench,
    )

    def build(learning_rate, num_steps):
        del num_steps  # no schedule over the run
        return function(**spec.kwargs(learning_rate))

    return spec._replace(build=build)


_NAN = float("nan")

GROUPS: dict[str, str] = {
    "optax": "optax classics",
    "peers": "tuning-free peers",
    "autosgm": "AutoSGM",
    "clara": "CLARA",
    "garo": "GARO",
}
"""The optimizer families, in report order, with their legends."""


def _probe(opt_state):
    """(lr, momentum, weight decay) of our transforms' states, means over
    leaves, NaN where the transform has no such adapted value."""
    h = hyperparams_lib.hyperparams(opt_state)
    return tuple(
        jnp.mean(h[k]).astype(jnp.float32) if k in h else jnp.float32(_NAN)
        for k in ("lr", "mom", "wd")
    )


def _warmup_cosine(learning_rate, num_steps):
    # optax's schedule branches on a concrete peak, so the (traced) rate
    # scales a unit-peak schedule.
    unit = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=max(num_steps // 20, 1),
        decay_steps=max(num_steps, 2),
        end_value=0.0,
    )
    return optax.adamw(lambda count: learning_rate * unit(count))


def _adam_plateau(learning_rate, num_steps):
    return optax.chain(
        optax.adam(learning_rate),
        optax.contrib.reduce_on_plateau(
            factor=0.5, patience=5, accumulation_size=max(num_steps // 50, 1)
        ),
    )


def _autosgm_markov_rc(learning_rate, num_steps):
    window = schedules.window_schedule("raised_cosine", length=max(num_steps, 1))
    return garo_optax.autosgm(learning_rate, numerator="markov", window=window)


def adam_then_scale_by_clara(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    c: float = 0.2,
    damping: float = 1e-3,
) -> optax.GradientTransformationExtraArgs:
    """CLARA's composable form: Adam's direction, CLARA's rate, the sign flip.

    Args:
      learning_rate: CLARA's initial rate.
      b1: Adam's first-moment decay (and CLARA's reference ``mu``).
      c: CLARA's adaptation speed.
      damping: CLARA's path damping.

    Returns:
      ``chain(scale_by_adam, scale_by_clara, scale_by_learning_rate(1))``.
    """
    return optax.chain(
        optax.scale_by_adam(b1=b1),
        garo_optax.scale_by_clara(
            learning_rate,
            c=c,
            damping=damping,
            mu=garo_optax.adam_clara_reference(c, b1),
        ),
        optax.scale_by_learning_rate(1.0),
    )


def _lr_cfg(learning_rate) -> dict[str, Any]:
    return {"lr_cfg": (True, learning_rate, 0)}


def _pretrained_garo(name: str | None) -> Factory:
    def build(learning_rate, num_steps):
        del learning_rate, num_steps  # GARO sets its own rate
        controller = pretrained_lib.pretrained(*(() if name is None else (name,)))
        return garo_optax.garo(controller)

    return build


_NESTEROV_ZERO = 0.9 / 1.9  # AutoSGM's zero for Nesterov at pole 0.9.


def _optax_classics() -> dict[str, OptimizerSpec]:
    o = "optax"
    return {
        "sgd": _configured(optax.sgd, 1e-2, o, "optax.sgd"),
        "sgd_momentum": _configured(
            optax.sgd, 1e-2, o, "optax.sgd, m=0.9", momentum=0.9
        ),
        "nesterov": _configured(
            optax.sgd,
            1e-2,
            o,
            "optax.sgd, m=0.9, nesterov",
            momentum=0.9,
            nesterov=True,
        ),
        "adagrad": _configured(optax.adagrad, 1e-2, o, "optax.adagrad"),
        "rmsprop": _configured(optax.rmsprop, 1e-3, o, "optax.rmsprop"),
        "adam": _configured(optax.adam, 1e-3, o, "optax.adam"),
        "adamw": _configured(optax.adamw, 1e-3, o, "optax.adamw, wd=1e-4"),
        "adamax": _configured(optax.adamax, 2e-3, o, "optax.adamax"),
        "nadam": _configured(optax.nadam, 1e-3, o, "optax.nadam"),
        "adamw_warmup_cosine": OptimizerSpec(
            _warmup_cosine, 1e-3, o, "optax.adamw, 5% linear warmup, cosine decay to 0"
        ),
        "adam_plateau": OptimizerSpec(
            _adam_plateau,
            1e-3,
            o,
            "optax.adam + contrib.reduce_on_plateau(0.5, patience 5) on value=",
        ),
    }


def _autosgm() -> dict[str, OptimizerSpec]:
    a, probe, autosgm = "autosgm", _probe, garo_optax.autosgm
    momentum = dict(pole=0.9, adaptive=False, gain=1.0, debias=False)
    return {
        "autosgm_heavy_ball": _configured(
            autosgm, 1e-2, a, "autosgm heavy ball (= sgd m=0.9)", probe, **momentum
        ),
        "autosgm_nesterov": _configured(
            autosgm,
            1e-2,
            a,
            "autosgm Nesterov zero 0.9/1.9 (= nesterov)",
            probe,
            zero=_NESTEROV_ZERO,
            **momentum,
        ),
        "autosgm_adam": _configured(
            autosgm,
            1e-3,
            a,
            "autosgm constant numerator (= adam)",
            probe,
            eps=1e-8,
            eps_in_sqrt=False,
        ),
        "autosgm_markov_rc": OptimizerSpec(
            _autosgm_markov_rc,
            1e-3,
            a,
            "autosgm markov numerator, raised-cosine window over the run",
            probe,
        ),
    }


def _clara() -> dict[str, OptimizerSpec]:
    c, probe = "clara", _probe
    return {
        "clara_sgd": _configured(garo_optax.clara_sgd, 1e-2, c, "SGD-CLARA", probe),
        "adam_clara": _configured(garo_optax.adam_clara, 1e-3, c, "Adam-CLARA", probe),
        **{
            f"adam_clara_{variant}": _configured(
                getattr(garo_optax, f"adam_clara_{variant}"),
                1e-3,
                c,
                f"Adam-CLARA seed variant: {variant}",
                probe,
            )
            for variant in ("global", "local", "smoothed")
        },
    }


def _garo() -> dict[str, OptimizerSpec]:
    g, probe = "garo", _probe
    return {
        "garo": _configured(
            garo_optax.garo,
            None,
            g,
            "GARO, initial controller",
            probe,
            rate_kwargs=None,
            covers=("scale_by_garo",),
        ),
        "garo_pretrained": OptimizerSpec(
            _pretrained_garo(None),
            None,
            g,
            "GARO, shipped scale-free controller garo-v2",
            probe,
        ),
        "garo_v1": OptimizerSpec(
            _pretrained_garo("garo-v1"),
            None,
            g,
            "GARO, the seed design's controller garo-v1",
            probe,
        ),
    }


def _peer(peer: peers_lib.Peer) -> OptimizerSpec:
    def build(learning_rate, num_steps):
        del learning_rate, num_steps  # each peer runs at its defaults
        return peer.factory()

    return OptimizerSpec(
        build,
        None,
        "peers",
        peer.description,
        eval_params=peer.eval_params,
        reference=peer.reference,
    )


def _conformance_extras() -> dict[str, OptimizerSpec]:
    """Configurations that the conformance suite and the soak run besides the
    bench's (``bench=False``: not in ``garo-optax bench``'s default run)."""
    kw = dict(bench=False)
    autosgm = garo_optax.autosgm
    window = schedules.window_schedule("raised_cosine", length=1000)
    return {
        "clara_sgd_global": _configured(
            garo_optax.clara_sgd,
            1e-2,
            "clara",
            "SGD-CLARA, one rate for the whole tree",
            _probe,
            normalize="global",
            **kw,
        ),
        "adam_clara_local_clamped": _configured(
            garo_optax.adam_clara_local,
            1e-3,
            "clara",
            "Adam-CLARA local, clamped",
            _probe,
            faithful=False,
            **kw,
        ),
        "adam_clara_smoothed_v1": _configured(
            garo_optax.adam_clara_smoothed,
            1e-3,
            "clara",
            "Adam-CLARA smoothed, version 1",
            _probe,
            version=1,
            **kw,
        ),
        "adam+scale_by_clara": _configured(
            adam_then_scale_by_clara,
            1e-3,
            "clara",
            "scale_by_adam, scale_by_clara, scale_by_learning_rate(1)",
            _probe,
            covers=("scale_by_clara",),
            **kw,
        ),
        "autosgm": _configured(
            autosgm,
            1e-3,
            "autosgm",
            "autosgm at its defaults",
            _probe,
            covers=("scale_by_autosgm",),
            **kw,
        ),
        "autosgm_markov_window": _configured(
            autosgm,
            1e-3,
            "autosgm",
            "autosgm markov numerator, zero 0.5, raised-cosine window of 1,000",
            _probe,
            numerator="markov",
            zero=0.5,
            window=window,
            **kw,
        ),
        "from_asgm_config": _configured(
            garo_optax.from_asgm_config,
            1e-3,
            "autosgm",
            "autosgm from the original's config tuples",
            _probe,
            rate_kwargs=_lr_cfg,
            **kw,
        ),
        **{
            name: _configured(
                garo_optax.garo,
                None,
                "garo",
                f"GARO, {description}",
                _probe,
                rate_kwargs=None,
                **options,
                **kw,
            )
            for name, description, options in (
                (
                    "garo_lagged_coupled",
                    "lagged, coupled weight decay, momentum >= 0",
                    dict(
                        lagged=True,
                        weight_decay_mode="coupled",
                        momentum_nonneg=True,
                        seed=1,
                    ),
                ),
                ("garo_per_tensor", "per tensor", dict(granularity="per_tensor")),
                (
                    "garo_per_tensor_lagged",
                    "per tensor, lagged",
                    dict(granularity="per_tensor", lagged=True, seed=2),
                ),
            )
        },
    }


def _registry() -> dict[str, OptimizerSpec]:
    peers = {name: _peer(peer) for name, peer in peers_lib.PEERS.items()}
    core = {**_optax_classics(), **_autosgm(), **_clara(), **_garo(), **peers}
    return {**core, **_conformance_extras()}


REGISTRY: dict[str, OptimizerSpec] = _registry()
"""Every named optimizer configuration, by name (bench order first)."""

OPTIMIZERS: dict[str, OptimizerSpec] = {
    name: spec for name, spec in REGISTRY.items() if spec.bench
}
"""The optimizers of ``garo-optax bench``, by name, in report order."""

PEERS: tuple[str, ...] = tuple(
    name for name, spec in REGISTRY.items() if spec.group == "peers"
)
"""The tuning-free peers (``garo-optax meta-eval --peers``' default)."""

META_EVAL_BASELINES: tuple[str, ...] = ("sgd", "sgd_momentum", "adam", "adamw")
"""The optax baselines of ``garo-optax meta-eval``, swept around their default
rates."""

CONFORMANCE: tuple[str, ...] = (
    "clara_sgd",
    "clara_sgd_global",
    "adam_clara",
    "adam_clara_global",
    "adam_clara_local",
    "adam_clara_local_clamped",
    "adam_clara_smoothed",
    "adam_clara_smoothed_v1",
    "adam+scale_by_clara",
    "autosgm",
    "autosgm_adam",
    "autosgm_markov_window",
    "from_asgm_config",
    "garo",
    "garo_lagged_coupled",
    "garo_per_tensor",
    "garo_per_tensor_lagged",
)
"""The configurations of garo_optax's public transforms that the conformance
suite (``tests/registry.py``) and ``benchmarks/soak.py`` run, in their order."""


def get(name: str) -> OptimizerSpec:
    """The entry ``name`` of :data:`REGISTRY`.

    Args:
      name: a key of :data:`REGISTRY`.

    Returns:
      The :class:`OptimizerSpec`.

    Raises:
      ValueError: if ``name`` is not registered.
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown optimizer {name!r}; expected one of {list(REGISTRY)}"
        ) from None


def covered_public_names() -> set[str]:
    """The public garo_optax factories some entry configures or stands for.

    Returns:
      Names of ``garo_optax.__all__``.
    """
    names = {name for spec in REGISTRY.values() for name in spec.covers}
    for spec in REGISTRY.values():
        name = getattr(spec.function, "__name__", "")
        if name and getattr(garo_optax, name, None) is spec.function:
            names.add(name)
    return names
