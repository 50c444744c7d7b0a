"""The outer loop of meta-training: configs, the meta-state and :func:`meta_train`.

The estimators are in :mod:`garo_optax.meta._estimators`, the unroll in
:mod:`garo_optax.meta._unroll`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from garo_optax import tasks as tasks_lib
from garo_optax._src import controller as ctl
from garo_optax._src import garo as garo_lib
from garo_optax._src import validate
from garo_optax.meta._estimators import (
    check_segments,
    full_meta_gradient,
    is_population_leaf,
    population_sharding,
    truncated_init,
    truncated_step,
)
from garo_optax.meta._unroll import (
    ESTIMATORS,
    META_LOSSES,
    OptimizerFactory,
)
from garo_optax.tasks import EXTRA_TRAIN_FAMILIES, META_TRAIN_FAMILIES


class MetaConfig(NamedTuple):
    """A meta-training run: tasks, estimator, outer optimizer, controller.

    Attributes:
      families: the task families: names of :data:`garo_optax.meta.FAMILIES`
        or :class:`TaskFamily` objects; every meta-step averages their
        meta-gradients.
      population: inner runs per family and meta-step (>= 1).
      segment_length: inner steps per meta-step (K, >= 1).
      horizon: inner steps of a whole inner run (a multiple of K).
      estimator: ``"tbptt"``, ``"pes"`` or ``"full"`` (whole runs of
        ``horizon`` steps, backpropagated).
      outer_learning_rate: Adam's learning rate on the controller (> 0).
      steps: meta-steps (>= 1).
      clip: the global-norm clip of the meta-gradient (> 0).
      pes_std: the PES perturbation scale (> 0).
      meta_loss: ``"mean_log_loss"`` or ``"final_eval_loss"``.
      num_devices: devices that split the population (``None``: all); the
        population must be divisible by it. Multi-host meta-training (one
        process per host, after :func:`jax.distributed.initialize`, every
        process running the same :func:`meta_train`) needs ``None``: the
        mesh takes the first ``num_devices`` of the *global*
        :func:`jax.devices`, so the default 1 places the whole run on process
        0's first device, and every other process fails reading its step
        ("Fetching value for `jax.Array` that spans non-addressable (non
        process local) devices is not possible").
      seed: the seed of the controller's meta-initialization and of the run.
      granularity: the inner GARO's granularity.
      lagged: the inner GARO's ordering.
      hidden_size: the controller's hidden size.
      head_init_scale: the controller's meta-initial head scale.
      learning_rate_init: the controller's meta-initial learning rate.
      momentum_init: the controller's meta-initial momentum.
      weight_decay_init: the controller's meta-initial weight decay.
      scale_free: meta-train a controller of the scale-free design.
      loss_scale: task augmentation: every inner run multiplies its loss by a
        factor drawn log-uniformly from this range (``(1, 1)``: off).
      param_scale: task augmentation: every inner run reparametrizes each
        tensor by a factor drawn log-uniformly from this range (Celo's
        augmentation; ``(1, 1)``: off).
      member_clip: clip every member's meta-gradient estimate to this norm
        before the population mean (``None``: off).
      warm_start: the name of a shipped controller
        (:func:`garo_optax.pretrained`) to start from instead of the
        meta-initialization (``None``: from the meta-initialization); its
        design must be the one the other fields describe.
    """

    families: tuple[str, ...] = ("quadratic",)
    population: int = 8
    segment_length: int = 20
    horizon: int = 200
    estimator: str = "tbptt"
    outer_learning_rate: float = 1e-3
    steps: int = 100
    clip: float = 1.0
    pes_std: float = 0.01
    meta_loss: str = "mean_log_loss"
    num_devices: int | None = 1
    seed: int = 0
    granularity: str = "global"
    lagged: bool = False
    hidden_size: int = 32
    head_init_scale: float = 0.1
    learning_rate_init: float = 0.01
    momentum_init: float = 0.5
    weight_decay_init: float = 0.0
    scale_free: bool = False
    loss_scale: tuple[float, float] = (1.0, 1.0)
    param_scale: tuple[float, float] = (1.0, 1.0)
    member_clip: float | None = None
    warm_start: str | None = None


def resolve_family(entry: "str | tasks_lib.TaskFamily") -> tasks_lib.TaskFamily:
    """A :class:`TaskFamily` from a registered name, or the family itself.

    Args:
      entry: a name of :data:`garo_optax.meta.FAMILIES` or a
        :class:`TaskFamily`.

    Returns:
      The family.
    """
    if isinstance(entry, tasks_lib.TaskFamily):
        return entry
    return tasks_lib.get_family(entry)


def augment(family: tasks_lib.TaskFamily, config: MetaConfig) -> tasks_lib.TaskFamily:
    """``family`` with the loss and parameter rescaling of ``config`` (if any).

    Args:
      family: the task family.
      config: the configuration (``loss_scale``, ``param_scale``).

    Returns:
      The family itself when both ranges are ``(1, 1)``, else the augmented one.
    """
    if tuple(config.loss_scale) == (1.0, 1.0) and tuple(config.param_scale) == (
        1.0,
        1.0,
    ):
        return family
    return tasks_lib.augmented(
        family,
        loss_scale=tuple(config.loss_scale),
        param_scale=tuple(config.param_scale),
    )


def check_config(config: MetaConfig) -> None:
    """Raises `ValueError` for a bad :class:`MetaConfig`, naming the field.

    Args:
      config: the configuration.

    Returns:
      None.
    """
    if not isinstance(config.families, tuple | list) or not config.families:
        raise ValueError(
            f"families must be a non-empty sequence of names, got {config.families!r}"
        )
    names = [resolve_family(entry).name for entry in config.families]
    if len(set(names)) != len(names):
        raise ValueError(f"families must not repeat a name, got {names}")
    validate.check_integer("population", config.population, 1)
    validate.check_integer("steps", config.steps, 1)
    validate.check_choice("estimator", config.estimator, ESTIMATORS)
    validate.check_choice("meta_loss", config.meta_loss, META_LOSSES)
    check_segments(config.segment_length, config.horizon)
    validate.check_positive("outer_learning_rate", config.outer_learning_rate)
    validate.check_positive("clip", config.clip)
    validate.check_positive("pes_std", config.pes_std)
    validate.check_range("loss_scale", config.loss_scale)
    validate.check_range("param_scale", config.param_scale)
    if config.member_clip is not None:
        validate.check_positive("member_clip", config.member_clip)
    if config.num_devices is not None:
        validate.check_integer("num_devices", config.num_devices, 1)
        available = len(jax.devices())
        if config.num_devices > available:
            raise ValueError(
                f"num_devices must be at most the {available} available devices, "
                f"got {config.num_devices}"
            )
    devices = config.num_devices or len(jax.devices())
    if config.population % devices:
        raise ValueError(
            f"population must be divisible by the {devices} devices that split it, "
            f"got population={config.population}"
        )
    ctl.check_options(**_controller_options(config))
    if config.warm_start is not None:
        _check_warm_start(config)


def _check_warm_start(config: MetaConfig) -> None:
    """The shipped controller ``warm_start`` exists and has the config's design."""
    from garo_optax._src import pretrained

    validate.check_choice("warm_start", config.warm_start, pretrained.available())
    fresh = ctl.init_controller(jax.random.PRNGKey(0), **_controller_options(config))
    shipped = pretrained.pretrained(config.warm_start)
    shapes = lambda c: [jnp.shape(x) for x in jax.tree.leaves(c)]
    same_shapes = shapes(fresh) == shapes(shipped)
    if fresh.design != shipped.design or not same_shapes:
        raise ValueError(
            f"warm_start={config.warm_start!r} has the design {shipped.design}, "
            f"but the config describes {fresh.design}"
        )


_CONTROLLER_OPTIONS = (
    "hidden_size",
    "head_init_scale",
    "learning_rate_init",
    "momentum_init",
    "weight_decay_init",
    "granularity",
    "scale_free",
)


def _controller_options(config: MetaConfig) -> dict:
    """The fields of ``config`` that are options of `init_controller`."""
    return {name: getattr(config, name) for name in _CONTROLLER_OPTIONS}


class MetaState(NamedTuple):
    """The state of a meta-training run: everything needed to resume it."""

    controller: ctl.GaroController
    opt_state: Any  # the outer optimizer's state.
    populations: dict  # family name -> TruncatedState (absent for "full").
    step: jax.Array  # shape=(), dtype=jnp.int32: meta-steps taken.


def initial_controller(config: MetaConfig) -> ctl.GaroController:
    """The meta-initial controller of ``config`` (seeded by ``config.seed``),
    or the shipped controller ``config.warm_start``.

    Args:
      config: the configuration.

    Returns:
      A :class:`garo_optax.GaroController`.
    """
    if config.warm_start is not None:
        from garo_optax._src import pretrained

        return pretrained.pretrained(config.warm_start)
    return ctl.init_controller(
        jax.random.PRNGKey(config.seed), **_controller_options(config)
    )


def inner_optimizer_fn(config: MetaConfig) -> OptimizerFactory:
    """The inner optimizer factory of ``config``: GARO with its options.

    Args:
      config: the configuration.

    Returns:
      ``controller -> garo_optax.garo(controller, granularity=..., lagged=...)``.
    """
    return lambda theta: garo_lib.garo(
        theta, granularity=config.granularity, lagged=config.lagged
    )


def outer_optimizer(config: MetaConfig) -> optax.GradientTransformation:
    """Adam on the controller after global-norm clipping of the meta-gradient.

    Args:
      config: the configuration.

    Returns:
      ``chain(clip_by_global_norm(clip), adam(outer_learning_rate))``.
    """
    return optax.chain(
        optax.clip_by_global_norm(config.clip), optax.adam(config.outer_learning_rate)
    )


def make_meta_train(
    config: MetaConfig,
    *,
    outer: optax.GradientTransformation | None = None,
) -> tuple[Callable[[], MetaState], Callable[[MetaState], tuple[MetaState, dict]]]:
    """The pure ``init`` and jitted ``step`` functions of a meta-training run.

    ``step(state) -> (state, metrics)`` draws its randomness from
    ``fold_in(PRNGKey(config.seed), state.step)``, so a run resumed from a
    saved state continues exactly as the uninterrupted run. With several
    devices the population axis is sharded over a 1-D mesh (axis
    ``"population"``); the controller and the outer state are replicated.

    Args:
      config: the configuration (checked here).
      outer: the outer optimizer; ``None`` is :func:`outer_optimizer`.

    ``step`` donates its argument: keep only the state it returns.

    Returns:
      ``(init, step)``. ``metrics`` holds the scalars ``meta_loss`` (mean over
      the families), ``grad_norm`` (before clipping), ``mean_loss`` (mean inner
      training loss), ``resets``, and ``meta_loss/<family>`` per family.
    """
    check_config(config)
    families = {
        f.name: augment(f, config) for f in map(resolve_family, config.families)
    }
    optimizer_fn = inner_optimizer_fn(config)
    outer = outer_optimizer(config) if outer is None else outer
    devices = config.num_devices or len(jax.devices())
    _, sharded, replicated = population_sharding(devices)
    root = jax.random.PRNGKey(config.seed)

    def shard_population(tree):
        return jax.tree.map(
            lambda x: (
                jax.lax.with_sharding_constraint(x, sharded)
                if is_population_leaf(x)
                else x
            ),
            tree,
        )

    def init() -> MetaState:
        controller = initial_controller(config)
        populations = {}
        if config.estimator != "full":
            for i, (name, family) in enumerate(families.items()):
                key = jax.random.fold_in(jax.random.fold_in(root, 1), i)
                populations[name] = truncated_init(
                    controller,
                    family,
                    key,
                    config.population,
                    segment_length=config.segment_length,
                    horizon=config.horizon,
                    estimator=config.estimator,
                    optimizer_fn=optimizer_fn,
                )
        state = MetaState(
            controller, outer.init(controller), populations, jnp.zeros([], jnp.int32)
        )
        state = jax.device_put(state, replicated)
        return state._replace(
            populations=jax.device_put(
                state.populations,
                jax.tree.map(
                    lambda x: sharded if is_population_leaf(x) else replicated,
                    state.populations,
                ),
            )
        )

    def step(state: MetaState):
        key = jax.random.fold_in(jax.random.fold_in(root, 2), state.step)
        grads, values, inner_losses, resets, nonfinite = [], {}, [], [], []
        populations = {}
        for i, (name, family) in enumerate(families.items()):
            k = jax.random.fold_in(key, i)
            if config.estimator == "full":
                value, grad, metrics = full_meta_gradient(
                    state.controller,
                    family,
                    k,
                    config.population,
                    config.horizon,
                    meta_loss=config.meta_loss,
                    optimizer_fn=optimizer_fn,
                )
                metrics["resets"] = jnp.asarray(config.population, jnp.int32)
            else:
                value, grad, new, metrics = truncated_step(
                    state.controller,
                    family,
                    state.populations[name],
                    k,
                    segment_length=config.segment_length,
                    horizon=config.horizon,
                    estimator=config.estimator,
                    pes_std=config.pes_std,
                    meta_loss=config.meta_loss,
                    optimizer_fn=optimizer_fn,
                    member_clip=config.member_clip,
                )
                populations[name] = shard_population(new)
            grads.append(grad)
            values[f"meta_loss/{name}"] = value
            inner_losses.append(metrics["mean_loss"])
            nonfinite.append(metrics["nonfinite"])
            resets.append(metrics["resets"])
        grad = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
        grad_norm = optax.tree.norm(grad)
        # A non-finite estimate is skipped (the populations still advance).
        finite = jnp.isfinite(grad_norm)
        grad = optax.tree.where(finite, grad, optax.tree.zeros_like(grad))
        updates, opt_state = outer.update(grad, state.opt_state, state.controller)
        controller = optax.apply_updates(state.controller, updates)
        controller = optax.tree.where(finite, controller, state.controller)
        opt_state = optax.tree.where(finite, opt_state, state.opt_state)
        metrics = {
            "meta_loss": sum(values.values()) / len(values),
            "grad_norm": grad_norm,
            "mean_loss": sum(inner_losses) / len(inner_losses),
            "resets": sum(resets),
            "nonfinite": sum(nonfinite),
            **values,
        }
        new_state = MetaState(
            controller, opt_state, populations, optax.safe_increment(state.step)
        )
        return new_state, metrics

    return init, jax.jit(step, donate_argnums=0)


def meta_train(
    config: MetaConfig,
    *,
    state: MetaState | None = None,
    callback: Callable[[MetaState, dict], None] | None = None,
) -> tuple[ctl.GaroController, list[dict]]:
    """Meta-trains a GARO controller for ``config.steps`` meta-steps.

    Args:
      config: the configuration.
      state: resume from this state (e.g. a restored checkpoint); ``None``
        starts afresh.
      callback: called after every meta-step with the new state and its
        metrics (as Python floats) — e.g. to log or checkpoint; nothing is
        logged from inside the jitted step.

    Returns:
      ``(controller, history)``: the meta-trained controller and the metrics of
      every step taken in this call.

    Examples:
      >>> from garo_optax import meta
      >>> config = meta.MetaConfig(
      ...     families=("quadratic",), population=1, segment_length=1,
      ...     horizon=2, steps=2, hidden_size=2)
      >>> controller, history = meta.meta_train(config)
      >>> len(history), sorted(history[0])[:2]
      (2, ['grad_norm', 'mean_loss'])
    """
    init, step = make_meta_train(config)
    if state is None:
        state = init()
    history = []
    while int(state.step) < config.steps:
        state, metrics = step(state)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["step"] = int(state.step)
        history.append(metrics)
        if callback is not None:
            callback(state, metrics)
    return state.controller, history


_GARO_V2 = MetaConfig(
    families=META_TRAIN_FAMILIES
    + ("rnn_sequence", "autoencoder_digits", "mlp_breast_cancer"),
    population=8,
    segment_length=25,
    horizon=1000,
    steps=3000,
    outer_learning_rate=1e-3,
    clip=1.0,
    meta_loss="mean_log_relative_loss",
    scale_free=True,
    learning_rate_init=1e-3,
    momentum_init=0.9,
    weight_decay_init=0.0,
    loss_scale=(1e-3, 1e3),
    param_scale=(1 / 3, 3.0),
    member_clip=1.0,
)

CONFIGS: dict[str, MetaConfig] = {
    # Seconds: a quadratic family, a few meta-steps (tests, a first look).
    "smoke": MetaConfig(
        families=("quadratic",),
        population=4,
        segment_length=5,
        horizon=20,
        steps=6,
        hidden_size=8,
        outer_learning_rate=3e-3,
    ),
    # The recipe of the shipped controller `garo-v1` (about 0.35 s per
    # meta-step on 2 CPU cores): the cheap meta-training families, truncated
    # backprop.
    "garo-v1": MetaConfig(
        families=(
            "quadratic",
            "noisy_quadratic",
            "logistic_breast_cancer",
            "mlp_digits",
        ),
        population=8,
        segment_length=20,
        horizon=400,
        steps=3000,
        outer_learning_rate=3e-3,
        clip=1.0,
    ),
    # The recipe of `garo-v2`, the scale-free controller: every meta-training
    # family plus three training-only ones, each inner run under a random loss
    # scale in [1e-3, 1e3] and per-tensor parameter scales in [1/3, 3], runs
    # of 1000 steps in truncations of 25, a meta-loss relative to each run's
    # first loss, every member's estimate clipped to norm 1 (about 1 s per
    # meta-step on 2 busy CPU cores).
    "garo-v2": _GARO_V2,
    # A second phase tried and not shipped (README): `garo-v2` trained on with
    # truncations of 100 steps (against the short-horizon bias of 25) and one
    # more family, `mlp_synthetic`. Its weights are docs/meta_train/garo-v2-long.npz.
    "garo-v2-long": _GARO_V2._replace(
        families=META_TRAIN_FAMILIES + EXTRA_TRAIN_FAMILIES,
        segment_length=100,
        steps=600,
        outer_learning_rate=5e-4,
        warm_start="garo-v2",
    ),
    # The same with antithetic PES instead of truncated backprop (the
    # comparison that chose truncated backprop for garo-v2: README).
    "garo-v2-pes": _GARO_V2._replace(estimator="pes", pes_std=0.01),
}
"""Named meta-training configurations (``garo-optax meta-train --config NAME``)."""


def get_config(name: str) -> MetaConfig:
    """The named configuration ``name`` of :data:`CONFIGS`.

    Args:
      name: a key of :data:`CONFIGS`.

    Returns:
      The :class:`MetaConfig`.
    """
    validate.check_choice("config", name, tuple(CONFIGS))
    return CONFIGS[name]
