r"""GARO: SGD whose learning rate, momentum and weight decay come from a GRU.

The Global Adaptive Recurrent Optimizer ("Online Recurrent SGD") is specified
only by a README (``theoryjames1-glitch/GLOBAL-ADAPTIVE-RECURRENT-OPTIMIZER``);
the design here is the project's, ``specs/garo.md`` §4. In plain words: each
step reduces the incoming update tree to four global statistics (its log-norm,
the change of that norm, its cosine with the momentum buffer and, when given,
the normalized loss), feeds them to a GRU with one hidden state for the whole
model, and reads the learning rate, momentum and weight decay of the step from
three heads on the hidden state. The parameters then take a heavy-ball step
with decoupled, learning-rate-scaled weight decay.

The controller's weights (:class:`garo_optax.GaroController`) are an argument,
never part of the state: they are frozen during training, and meta-training can
differentiate through them. GARO acts on the *incoming updates*:
``optax.chain(optax.scale_by_rms(), garo_optax.garo())`` runs GARO over a
preconditioned direction.
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from garo_optax._src import controller as ctl
from garo_optax._src import numerics

NO_PARAMS_MSG = (
    "scale_by_garo needs params when weight decay is on (weight_decay_init > 0): "
    "call update(updates, state, params)"
)


class GaroState(NamedTuple):
    """State of :func:`scale_by_garo`: hidden state, momentum, statistics, hparams."""

    count: jax.Array  # shape=(), dtype=jnp.int32: non-skipped steps.
    h: jax.Array  # shape=(H,): the GRU hidden state.
    momentum: optax.Updates  # the heavy-ball buffer v.
    g_ema: jax.Array  # shape=(): raw EMA of the gradient norm G.
    loss_mean: jax.Array  # shape=(): raw EMA of the loss.
    loss_var: jax.Array  # shape=(): raw EMA of the squared loss deviation.
    loss_count: jax.Array  # shape=(), dtype=jnp.int32: finite losses seen.
    lr: jax.Array  # shape=(): learning rate used at the last step.
    mom: jax.Array  # shape=(): momentum used at the last step.
    wd: jax.Array  # shape=(): weight decay used at the last step.
    skipped: jax.Array  # shape=(), dtype=jnp.int32: skipped non-finite steps.


_INIT_OPTIONS = (
    "hidden_size",
    "head_init_scale",
    "learning_rate_init",
    "momentum_init",
    "weight_decay_init",
)


def _options(init_kwargs: dict) -> dict:
    # `optax.inject_hyperparams` binds the signature and passes the collected
    # options back as one keyword, `init_kwargs={...}`: unwrap it.
    nested = init_kwargs.pop("init_kwargs", None)
    if isinstance(nested, dict):
        init_kwargs = {**nested, **init_kwargs}
    elif nested is not None:
        raise ValueError(f"unknown option init_kwargs={nested!r}")
    unknown = sorted(set(init_kwargs) - set(_INIT_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown init_controller options {unknown}; allowed: {_INIT_OPTIONS}"
        )
    return init_kwargs


def _cast(controller: ctl.GaroController, dtype) -> ctl.GaroController:
    return jax.tree.map(lambda w: w.astype(dtype), controller)


def _mean_over(h: jax.Array, weights: jax.Array) -> jax.Array:
    """The mean of the rows of ``h`` whose weight is 1 (0 if there is none)."""
    total = jnp.maximum(jnp.sum(weights), 1)
    return jnp.sum(h * weights[:, None], axis=0) / total


def scale_by_garo(
    controller: ctl.GaroController | None = None,
    *,
    granularity: Literal["global", "per_tensor"] = "global",
    lagged: bool = False,
    coupled_wd: bool = False,
    momentum_nonneg: bool = False,
    skip_nonfinite: bool = True,
    seed: int = 0,
    **init_kwargs,
) -> optax.GradientTransformationExtraArgs:
    r"""The GARO step without the sign flip: ``lr * (v + wd * params)``.

    See :func:`garo` for the update equations and the arguments. Chain
    :func:`optax.scale_by_learning_rate` ``(1.0)`` after it for a descent step,
    as :func:`garo` does.

    Args:
      controller: the controller weights; ``None`` draws them with
        :func:`garo_optax.init_controller` from ``seed`` and ``init_kwargs``.
      granularity: ``"global"`` or ``"per_tensor"`` (see :func:`garo`).
      lagged: take the hyperparameters of step :math:`t` from
        :math:`h_{t-1}` (step 1 then uses exactly the ``*_init`` values).
      coupled_wd: add ``wd * params`` to the gradient before the momentum.
      momentum_nonneg: clip the momentum to [0, 0.99].
      skip_nonfinite: on a non-finite incoming update, emit zeros and keep the
        state (only ``skipped`` counts the step).
      seed: seed of the controller drawn when ``controller`` is ``None``.
      **init_kwargs: options of :func:`garo_optax.init_controller`.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> tx = garo_optax.scale_by_garo(head_init_scale=0.0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> print(f"{float(state.lr):.4f}")
      0.0100
    """
    init_kwargs = _options(init_kwargs)
    ctl.check_options(granularity=granularity, **init_kwargs)
    if controller is None:
        controller = ctl.init_controller(
            jax.random.PRNGKey(seed), granularity=granularity, **init_kwargs
        )
    elif init_kwargs:
        raise ValueError(
            "pass either a controller or init_controller options, not both; got "
            f"options {sorted(init_kwargs)}"
        )
    hidden_size = ctl.check_controller(controller, granularity)
    wd_off = ctl.weight_decay_is_off(controller)
    per_tensor = granularity == "per_tensor"
    gru = jax.vmap(ctl.gru_cell, (None, 0, 0)) if per_tensor else ctl.gru_cell
    heads = jax.vmap(
        lambda theta, h: ctl.heads(theta, h, momentum_nonneg=momentum_nonneg),
        (None, 0),
    )
    if not per_tensor:
        heads = lambda theta, h: ctl.heads(theta, h, momentum_nonneg=momentum_nonneg)

    def reduce(values, dtype):
        # Global mode sums the per-leaf reductions; per-tensor mode keeps them.
        if not per_tensor:
            return sum(values, jnp.zeros([], dtype))
        return jnp.stack(values) if values else jnp.zeros([0], dtype)

    def init_fn(params):
        dtype = numerics.widest_float(
            numerics.scalar_dtype(params), ctl.default_dtype()
        )
        theta = _cast(controller, dtype)
        shape = [len(jax.tree.leaves(params))] if per_tensor else []
        h = jnp.zeros([*shape, hidden_size], dtype)
        lr, mom, wd = heads(theta, h)
        # Distinct buffers for every leaf, so that the state can be donated.
        zero = lambda: jnp.zeros([], dtype)
        return GaroState(
            count=jnp.zeros([], jnp.int32),
            h=h,
            momentum=optax.tree.zeros_like(params),
            g_ema=jnp.zeros(shape, dtype),
            loss_mean=zero(),
            loss_var=zero(),
            loss_count=jnp.zeros([], jnp.int32),
            lr=lr,
            mom=mom,
            wd=wd,
            skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None and not wd_off:
            raise ValueError(NO_PARAMS_MSG)
        dtype = state.h.dtype
        theta = _cast(controller, dtype)
        grads, treedef = jax.tree.flatten(updates)
        moms = treedef.flatten_up_to(state.momentum)
        thetas = treedef.flatten_up_to(params) if params is not None else None
        work = [numerics.widest_float(g.dtype, dtype) for g in grads]
        # Zero-size leaves get hyperparameters but stay out of the context.
        nonempty = jnp.asarray([g.size > 0 for g in grads], dtype)
        zero = jnp.zeros([], dtype)

        # One pass over (g, v) per leaf for every statistic: |g|^2, <g, v>,
        # |v|^2 and, when skipping, sum(0 * g), NaN exactly when g is not finite.
        def leaf_statistics(g, v, w):
            g, v = g.astype(w), v.astype(w)
            terms = (g * g, g * v, v * v) + ((g * 0,) if skip_nonfinite else ())
            return numerics.fused_sums(*terms, dtype=dtype)

        stats = [leaf_statistics(g, v, w) for g, v, w in zip(grads, moms, work)]
        sq_norm, dot_gv, v_sq_norm = (
            reduce([s[i] for s in stats], dtype) for i in range(3)
        )
        finite = jnp.ones([], bool)
        if skip_nonfinite:
            finite = jnp.all(jnp.isfinite(reduce([s[3] for s in stats], dtype)))

        loss = None
        loss_ok = jnp.zeros([], bool)
        if value is not None:
            loss = jnp.asarray(value).astype(dtype)
            loss_ok = jnp.isfinite(loss)
            loss = jnp.where(loss_ok, loss, zero)
        x, norm = ctl.features(
            sq_norm=sq_norm,
            dot_gv=dot_gv,
            v_sq_norm=v_sq_norm,
            g_ema=state.g_ema,
            count=state.count,
            loss=loss,
            loss_mean=state.loss_mean,
            loss_var=state.loss_var,
            loss_count=state.loss_count,
        )
        if loss is not None:
            x = x.at[..., 3].set(jnp.where(loss_ok, x[..., 3], zero))
        if per_tensor:
            # The DeepSets context: the mean over leaves of a projection of
            # the previous hidden states, appended to every leaf's features.
            context = ctl._dot(theta.ctx_w, _mean_over(state.h, nonempty))
            context = jnp.broadcast_to(context, (x.shape[0], context.shape[0]))
            x = jnp.concatenate([x, context], axis=-1)
        x = jnp.where(finite, x, jnp.zeros_like(x))
        h = gru(theta, x, state.h)
        lr, mom, wd = heads(theta, state.h if lagged else h)
        if wd_off:
            wd = jnp.zeros_like(wd)

        new_updates, new_moms = [], []
        for k, (g, v, w) in enumerate(zip(grads, moms, work)):
            lr_k, mom_k, wd_k = (lr[k], mom[k], wd[k]) if per_tensor else (lr, mom, wd)
            gw = g.astype(w)
            decay = None
            if thetas is not None and not wd_off:
                decay = wd_k.astype(w) * thetas[k].astype(w)
            if coupled_wd and decay is not None:
                gw = gw + decay
            v_w = v.astype(w)
            v_new = jnp.where(finite, mom_k.astype(w) * v_w + gw, v_w).astype(v.dtype)
            # The step reads the stored buffer, not a recomputation from the old
            # one, so that XLA can overwrite the donated buffer without a copy.
            step = v_new.astype(w)
            if decay is not None and not coupled_wd:
                step = step + decay
            u = lr_k.astype(w) * step
            new_updates.append(jnp.where(finite, u, jnp.zeros_like(u)).astype(g.dtype))
            new_moms.append(v_new)

        beta_g = jnp.asarray(ctl.G_BETA, dtype)
        g_ema = beta_g * state.g_ema + (1 - beta_g) * norm
        loss_mean, loss_var = state.loss_mean, state.loss_var
        if loss is not None:
            beta_l = jnp.asarray(ctl.LOSS_BETA, dtype)
            new_mean = beta_l * loss_mean + (1 - beta_l) * loss
            t = (state.loss_count + 1).astype(dtype)
            deviation = loss - new_mean / (1 - beta_l**t)
            # Capped, so that an absurd loss cannot overflow the variance.
            squared = jnp.minimum(deviation**2, jnp.asarray(1e30, dtype))
            new_var = beta_l * loss_var + (1 - beta_l) * squared
            loss_mean = jnp.where(loss_ok, new_mean, loss_mean)
            loss_var = jnp.where(loss_ok, new_var, loss_var)

        keep = lambda new, old: jnp.where(finite, new, old)
        new_state = GaroState(
            count=keep(optax.safe_increment(state.count), state.count),
            h=keep(h, state.h),
            momentum=treedef.unflatten(new_moms),
            g_ema=keep(g_ema, state.g_ema),
            loss_mean=keep(loss_mean, state.loss_mean),
            loss_var=keep(loss_var, state.loss_var),
            loss_count=keep(
                state.loss_count + loss_ok.astype(jnp.int32), state.loss_count
            ),
            lr=keep(lr, state.lr),
            mom=keep(mom, state.mom),
            wd=keep(wd, state.wd),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def garo(
    controller: ctl.GaroController | None = None,
    *,
    granularity: Literal["global", "per_tensor"] = "global",
    lagged: bool = False,
    coupled_wd: bool = False,
    momentum_nonneg: bool = False,
    skip_nonfinite: bool = True,
    seed: int = 0,
    **init_kwargs,
) -> optax.GradientTransformationExtraArgs:
    r"""GARO: heavy-ball SGD with hyperparameters emitted by a frozen GRU.

    Let :math:`g_t` be the incoming updates, :math:`\theta` the parameters,
    :math:`x_t` the four global features of :mod:`garo_optax` 's controller
    (log-norm, norm change, cosine with :math:`v_{t-1}`, normalized loss
    ``value=``; see :func:`garo_optax.init_controller`). Each step

    .. math::
      \begin{align*}
        h_t &= \mathrm{GRU}(x_t, h_{t-1}), \qquad h_0 = 0 \\
        (\eta_t, \mu_t, \lambda_t) &= (\mathrm{softplus}, \tanh, \mathrm{softplus})
          (W h_t + b) \quad (h_{t-1} \text{ if lagged}) \\
        v_t &= \mu_t v_{t-1} + g_t, \qquad v_0 = 0 \\
        \theta_t &= \theta_{t-1} - \eta_t (v_t + \lambda_t \theta_{t-1}).
      \end{align*}

    With ``coupled_wd=True``, :math:`g_t + \lambda_t \theta_{t-1}` enters the
    momentum instead. The hidden state and the hyperparameters are global, the
    momentum is per element. With ``granularity="per_tensor"`` (spec §4.9) the
    features are computed per leaf (its norm, norm change and cosine; the loss
    is shared), each leaf has its own hidden state and hyperparameters, and the
    mean over leaves of ``ctx_w`` times the previous hidden states is appended
    to every leaf's features. The state fields ``lr``, ``mom`` and ``wd`` hold the
    values used at the last step (read them with :func:`garo_optax.hyperparams`).
    The loss is read from the keyword ``value=`` (optional; without it the loss
    feature is 0); pass it on every step or never. A non-finite incoming update
    gives a zero update and leaves the state unchanged but for the ``skipped``
    counter (``skip_nonfinite=True``).

    Flax NNX's ``nnx.Optimizer.update(model, grads, value=loss)`` forwards the
    loss. Linen's ``TrainState.apply_gradients`` does not: call
    ``state.tx.update(grads, state.opt_state, state.params, value=loss)``,
    ``optax.apply_updates`` and ``state.replace(step=state.step + 1,
    params=..., opt_state=...)`` instead.

    .. note::
      With ``head_init_scale=0`` the heads ignore the hidden state and GARO is
      ``optax.chain(optax.add_decayed_weights(1e-6), optax.sgd(0.01))``.

    Args:
      controller: the controller weights; ``None`` draws them with
        :func:`garo_optax.init_controller` from ``seed`` and ``init_kwargs``.
      granularity: ``"global"``: one hidden state and scalar hyperparameters;
        ``"per_tensor"``: one hidden state and one (lr, mom, wd) per leaf, from
        the same GRU applied to per-leaf features plus a mean-context.
      lagged: take the hyperparameters of step :math:`t` from :math:`h_{t-1}`.
      coupled_wd: add the weight decay to the gradient before the momentum.
      momentum_nonneg: clip the momentum to [0, 0.99].
      skip_nonfinite: skip steps whose incoming update is not finite.
      seed: seed of the controller drawn when ``controller`` is ``None``.
      **init_kwargs: options of :func:`garo_optax.init_controller`
        (``hidden_size``, ``head_init_scale``, ``learning_rate_init``,
        ``momentum_init``, ``weight_decay_init``).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` object.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> import garo_optax
      >>> solver = garo_optax.garo(momentum_init=0.5)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = solver.init(params)
      >>> loss_fn = lambda p: jnp.sum(p["w"] ** 2)
      >>> for _ in range(3):
      ...     loss, grads = jax.value_and_grad(loss_fn)(params)
      ...     updates, state = solver.update(grads, state, params, value=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> print(sorted(garo_optax.hyperparams(state)))
      ['lr', 'mom', 'wd']

    References:
      ``theoryjames1-glitch/GLOBAL-ADAPTIVE-RECURRENT-OPTIMIZER`` (README, 2025);
      Wichrowska et al, `Learned optimizers that scale and generalize
      <https://arxiv.org/abs/1703.04813>`_, 2017
    """
    init_kwargs = _options(init_kwargs)
    return optax.chain(
        scale_by_garo(
            controller,
            granularity=granularity,
            lagged=lagged,
            coupled_wd=coupled_wd,
            momentum_nonneg=momentum_nonneg,
            skip_nonfinite=skip_nonfinite,
            seed=seed,
            **init_kwargs,
        ),
        optax.scale_by_learning_rate(1.0),
    )


def hyperparams(opt_state) -> dict[str, jax.Array]:
    """The ``lr``, ``mom`` and ``wd`` GARO used at its last step.

    Finds the :class:`GaroState` anywhere inside the state of ``optax.chain``,
    ``optax.named_chain``, ``optax.masked``, ``optax.MultiSteps`` or
    ``optax.inject_hyperparams``.

    Args:
      opt_state: an optimizer state containing exactly one :class:`GaroState`.

    Returns:
      A dict with keys ``"lr"``, ``"mom"`` and ``"wd"``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> tx = optax.chain(optax.clip(1.0), garo_optax.garo())
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> print(f"{float(garo_optax.hyperparams(state)['lr']):.3f}")
      0.010
    """
    is_garo = lambda x: isinstance(x, GaroState)
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_garo) if is_garo(x)]
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one GaroState in the optimizer state, found {len(found)}"
        )
    state = found[0]
    return {"lr": state.lr, "mom": state.mom, "wd": state.wd}
