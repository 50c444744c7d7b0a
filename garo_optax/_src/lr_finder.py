r"""The learning-rate range test (LR finder).

Smith, `Cyclical Learning Rates for Training Neural Networks
<https://arxiv.org/abs/1506.01186>`_, 2017 (section 3.3, "How can one estimate
reasonable minimum and maximum boundary values?"); popularised as ``lr_find`` by
the fastai library.

In plain words: train from the given parameters for a short run while the
learning rate grows exponentially from a tiny value to a huge one, and record the
loss. The loss first hardly moves (the rate is too small), then falls quickly,
then blows up (the rate is too large). The rate where the smoothed loss falls
fastest is a good learning rate to start training with. Optax has no such tool.

The whole run is one jitted :func:`jax.lax.scan`; once the loss has diverged the
remaining steps are masked on the device (no host round trip per step), and the
suggestion is computed on the host from the returned curve.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax._src import report as report_lib
from garo_optax._src import validate


class LRFinderResult(NamedTuple):
    """The curve recorded by :func:`lr_finder` and the suggested learning rate."""

    learning_rates: np.ndarray  # shape=(num_steps,), float64: the grid.
    losses: np.ndarray  # shape=(num_steps,): raw loss per step, NaN once diverged.
    smoothed_losses: np.ndarray  # shape=(num_steps,): NaN once diverged.
    suggested_lr: float  # the rate of steepest descent; NaN if num_valid < 2.
    num_valid: int  # steps before the divergence (num_steps if none).
    diverged: bool  # whether the run stopped counting before its end.

    def plot(self, path: str | None = None, ax: Any = None):
        """Draws this curve; see :func:`garo_optax.plot_lr_finder`.

        Args:
          path: where to write a PNG, or ``None``.
          ax: a matplotlib ``Axes`` to draw on, or ``None`` for a new figure.

        Returns:
          The matplotlib ``Figure``.
        """
        return plot_lr_finder(self, path=path, ax=ax)


def _check_batches(batches: Any, num_steps: int) -> None:
    if callable(batches):
        return
    for leaf in jax.tree.leaves(batches):
        shape = np.shape(leaf)
        if len(shape) == 0 or shape[0] < num_steps:
            raise ValueError(
                "batches must be a callable step -> batch or a pytree of arrays "
                f"with a leading axis of length >= num_steps={num_steps}, got a "
                f"leaf of shape {shape}"
            )


def _suggest(
    learning_rates: np.ndarray,
    smoothed: np.ndarray,
    num_valid: int,
    skip_start: int,
    log_loss: bool,
) -> float:
    """The rate of steepest descent of the smoothed curve over ``log(lr)``."""
    if num_valid < 2:
        return math.nan
    curve = smoothed[:num_valid].astype(np.float64)
    if log_loss and np.all(curve > 0):
        curve = np.log(curve)
    slopes = np.gradient(curve, np.log(learning_rates[:num_valid]))
    start = skip_start if num_valid - skip_start >= 2 else 0
    return float(learning_rates[start + int(np.argmin(slopes[start:]))])


def lr_finder(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    batches: Any,
    optimizer_factory: Callable[[optax.Schedule], optax.GradientTransformation],
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    divergence_factor: float = 4.0,
    smoothing: float = 0.98,
    log_loss: bool = True,
    skip_start: int | None = None,
) -> LRFinderResult:
    r"""The learning-rate range test: a short run with an exponentially growing rate.

    Trains from ``params`` for ``num_steps`` steps with the optimizer that
    ``optimizer_factory`` builds around an exponential schedule, records the
    loss, and suggests the rate at which the smoothed loss falls fastest. Use it
    once before training to pick the learning rate (or the peak of a one-cycle
    schedule) of a new model or optimizer.

    Let :math:`T` be ``num_steps``, :math:`\eta_{\min}, \eta_{\max}` the
    ``min_lr`` and ``max_lr``, :math:`s` the ``smoothing``, :math:`\kappa` the
    ``divergence_factor``, :math:`\ell` the ``loss_fn`` and :math:`b_t` the
    batch of step :math:`t`. For :math:`t = 0, \dots, T - 1`, with :math:`a_{-1}
    = 0`:

    .. math::
      \begin{align*}
        \eta_t &= \eta_{\min} (\eta_{\max} / \eta_{\min})^{t / (T - 1)} \\
        \ell_t &= \ell(\theta_t, b_t) \\
        a_t &\leftarrow s\, a_{t-1} + (1 - s)\, \ell_t, \qquad
          \bar\ell_t = a_t / (1 - s^{t+1}) \\
        \theta_{t+1} &\leftarrow \theta_t + u_t, \quad\text{where }
          (u_t, \text{state}) = \text{update}(\nabla \ell(\theta_t, b_t),
          \text{state}, \theta_t, \text{value}=\ell_t),
      \end{align*}

    the update of ``optimizer_factory(schedule)`` whose schedule maps the step
    count :math:`t` to :math:`\eta_t` (the grid is computed in float64 and looked
    up, so the rates are exact up to one rounding). The run *diverges* at the
    first step :math:`t_d` with :math:`\bar\ell_{t_d}` non-finite or
    :math:`\bar\ell_{t_d} > \kappa \min_{k < t_d} \bar\ell_k`: from there on the
    parameters, the optimizer state and the average are frozen (with
    :func:`jax.numpy.where`, so nothing non-finite reaches later steps), and the
    losses of steps :math:`t \ge t_d` are reported as NaN. ``num_valid`` is
    :math:`t_d` (or :math:`T`).

    The suggestion is :math:`\eta_{t^*}` with :math:`t^*` the minimum over the
    valid steps :math:`t \in [\text{skip\_start}, t_d)` of the slope
    :math:`d \log \bar\ell_t / d \log \eta_t` (:math:`d \bar\ell_t / d \log
    \eta_t` with ``log_loss=False``), taken with central differences
    (:func:`numpy.gradient`; one-sided at the ends) on the host. The slope of
    :math:`\log \bar\ell` (``log_loss=True``) is the relative fall of the loss
    per factor of learning rate. On a quadratic :math:`\frac{L}{2}\|x\|^2` with
    SGD the raw loss falls by :math:`(1 - \eta L)^2` per step, steepest at the
    best rate :math:`\eta = 1/L`. The smoothing blurs this (its window of about
    :math:`1/(1-s)` = 50 steps spans 4 of the 8 decades of the default sweep and
    caps the fall of :math:`\log \bar\ell` at :math:`\log s` per step), but with
    the defaults the suggestion stays within a factor 3 below :math:`1/L`: from
    :math:`0.34/L` to :math:`0.55/L` for :math:`L \in \{1, 10, 100\}`, with or
    without gradient noise (tested). The slope of
    :math:`\bar\ell` itself (``log_loss=False``, fastai's "steep" rule) is
    steepest where the loss is still large, earlier in the sweep: about
    :math:`0.25/L` to :math:`0.35/L` on the same problems. The first
    ``skip_start`` steps (fastai skips the first tenth) are left out because the
    bias-corrected average of the first few steps is little more than one noisy
    loss.

    Losses are assumed positive (cross-entropy, squared errors); if a valid
    smoothed loss is not, the slope is taken of :math:`\bar\ell` itself. This is
    a host-level driver: it jits its own run and returns NumPy values, so it is
    not itself called under :func:`jax.jit`.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, differentiable in ``params``.
      params: the parameters to start from (a pytree of arrays); not modified.
      batches: either a pytree of arrays whose leaves all have a leading axis of
        length at least ``num_steps`` (step :math:`t` gets the slice ``t`` of
        every leaf), or a callable ``batches(step) -> batch`` traceable in an
        int32 scalar ``step`` (e.g. a random mini-batch drawn with
        ``jax.random.fold_in(key, step)``). A pytree without leaves is passed
        unchanged at every step.
      optimizer_factory: ``optimizer_factory(learning_rate)``, called once with
        an :data:`optax.Schedule`, returns an :class:`optax.GradientTransformation`
        (e.g. :func:`optax.sgd`, ``lambda lr: optax.adam(lr)``,
        :func:`garo_optax.clara_sgd`). Its update always receives
        ``value=loss`` (through :func:`optax.with_extra_args_support`), so
        transforms that read the loss work.
      min_lr: the first learning rate, > 0.
      max_lr: the last learning rate, finite and > ``min_lr``.
      num_steps: the number of steps, an integer >= 2.
      divergence_factor: :math:`\kappa` > 1; ``float("inf")`` stops only at a
        non-finite loss.
      smoothing: :math:`s` in [0, 1); 0 means no smoothing.
      log_loss: take the slope of :math:`\log \bar\ell` (default) rather than of
        :math:`\bar\ell`.
      skip_start: an integer >= 0, the number of first steps the suggestion
        leaves out; ``None`` means ``num_steps // 10``. When fewer than two valid
        steps remain after it, no step is left out.

    Returns:
      A :class:`garo_optax.LRFinderResult`: the rate grid, the raw and smoothed
      losses (NumPy arrays of shape ``(num_steps,)``, NaN from the divergence
      on), the suggested rate (a float; NaN when fewer than two steps are
      valid), ``num_valid`` and ``diverged``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> import garo_optax
      >>> loss_fn = lambda x, batch: jnp.sum(x ** 2)  # L = 2: best SGD rate 0.5
      >>> result = garo_optax.lr_finder(
      ...     loss_fn, jnp.array([1., 2., 3.]), lambda step: None, optax.sgd,
      ...     num_steps=50)
      >>> result.diverged, result.num_valid
      (False, 50)
      >>> print(f"{result.suggested_lr:.2f}")
      0.49

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017

      Howard and Gugger, `Fastai: A Layered API for Deep Learning
      <https://arxiv.org/abs/2002.04688>`_, 2020 (``Learner.lr_find``)
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not callable(optimizer_factory):
        raise ValueError(
            "optimizer_factory must be callable (learning_rate -> "
            f"GradientTransformation), got {optimizer_factory!r}"
        )
    validate.check_integer("num_steps", num_steps, 2)
    min_lr = validate.as_real("min_lr", min_lr)
    max_lr = validate.as_real("max_lr", max_lr)
    divergence_factor = validate.as_real("divergence_factor", divergence_factor)
    smoothing = validate.as_real("smoothing", smoothing)
    validate.check_positive("min_lr", min_lr)
    validate.check_interval(
        "max_lr", max_lr, min_lr, math.inf, low_closed=False, high_closed=False
    )
    validate.check_interval(
        "divergence_factor",
        divergence_factor,
        1.0,
        None,
        low_closed=False,
        allow_inf=True,
    )
    validate.check_interval("smoothing", smoothing, 0.0, 1.0, high_closed=False)
    if skip_start is None:
        skip_start = num_steps // 10
    validate.check_integer("skip_start", skip_start, 0)
    _check_batches(batches, num_steps)

    steps = np.arange(num_steps)
    learning_rates = min_lr * (max_lr / min_lr) ** (steps / (num_steps - 1))
    table = jnp.asarray(learning_rates)  # float32, or float64 under x64
    last = num_steps - 1

    def schedule(count):
        return table[jnp.clip(count, 0, last)]

    tx = optimizer_factory(schedule)
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(
            "optimizer_factory must return an optax.GradientTransformation, got "
            f"{type(tx).__name__}"
        )
    tx = optax.with_extra_args_support(tx)
    dtype = table.dtype
    decay = jnp.asarray(smoothing, dtype)
    factor = jnp.asarray(divergence_factor, dtype)

    def step_fn(carry, xs):
        params, opt_state, avg, best, diverged = carry
        t, batch = xs
        if callable(batches):
            batch = batches(t)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        loss = jnp.asarray(loss).astype(dtype)
        new_avg = decay * avg + (1 - decay) * loss
        smoothed = new_avg / (1 - decay ** (t + 1).astype(dtype))
        diverged = diverged | ~jnp.isfinite(smoothed) | (smoothed > factor * best)
        updates, new_state = tx.update(grads, opt_state, params, value=loss)
        new_params = optax.apply_updates(params, updates)
        freeze = lambda old, new: optax.tree.where(diverged, old, new)
        carry = (
            freeze(params, new_params),
            freeze(opt_state, new_state),
            freeze(avg, new_avg),
            freeze(best, jnp.minimum(best, smoothed)),
            diverged,
        )
        nan = jnp.asarray(jnp.nan, dtype)
        return carry, (freeze(nan, loss), freeze(nan, smoothed), ~diverged)

    @jax.jit
    def run(params, data):
        init = (
            params,
            tx.init(params),
            jnp.zeros([], dtype),
            jnp.asarray(jnp.inf, dtype),
            jnp.asarray(False),
        )
        xs = (jnp.arange(num_steps, dtype=jnp.int32), data)
        _, out = jax.lax.scan(step_fn, init, xs, length=num_steps)
        return out

    if callable(batches):
        data = None
    else:
        data = jax.tree.map(lambda x: jnp.asarray(x)[:num_steps], batches)
    losses, smoothed, valid = jax.device_get(run(params, data))
    num_valid = int(np.sum(valid))
    suggested = _suggest(learning_rates, smoothed, num_valid, skip_start, log_loss)
    return LRFinderResult(
        learning_rates=learning_rates,
        losses=np.asarray(losses),
        smoothed_losses=np.asarray(smoothed),
        suggested_lr=suggested,
        num_valid=num_valid,
        diverged=num_valid < num_steps,
    )


def plot_lr_finder(result: LRFinderResult, path: str | None = None, ax: Any = None):
    """Draws the smoothed loss against the learning rate, with the suggestion.

    The x-axis is logarithmic; the y-axis too when every drawn loss is positive.
    The raw losses are drawn faintly behind the smoothed ones, and the suggested
    rate is a dashed vertical line. Matplotlib is imported here, not with
    garo_optax; without ``ax`` the figure is a bare
    :class:`matplotlib.figure.Figure` (no pyplot state, safe under any backend).

    Args:
      result: what :func:`garo_optax.lr_finder` returned.
      path: where to write the figure as a PNG, or ``None`` to write nothing.
      ax: a matplotlib ``Axes`` to draw on, or ``None`` for a new figure.

    Returns:
      The matplotlib ``Figure`` drawn on.

    Raises:
      ImportError: matplotlib is not installed (``pip install
        "garo_optax[examples]"``).
    """
    if ax is None:
        fig, ax = report_lib.new_figure((6, 4), layout="tight")
    else:
        fig = ax.figure
        ax.grid(True, **report_lib.GRID)
    lrs = np.asarray(result.learning_rates)
    losses = np.asarray(result.losses, np.float64)
    smoothed = np.asarray(result.smoothed_losses, np.float64)
    ax.plot(lrs, losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    if math.isfinite(result.suggested_lr):
        ax.axvline(
            result.suggested_lr,
            color="tab:red",
            linestyle="--",
            label=f"suggested lr {result.suggested_lr:.3g}",
        )
    ax.set_xscale("log")
    drawn = np.concatenate([losses, smoothed])
    drawn = drawn[np.isfinite(drawn)]
    if drawn.size and np.all(drawn > 0):
        ax.set_yscale("log")
    title = "LR range test"
    if result.diverged:
        title += f" (diverged after {result.num_valid} steps)"
    ax.set(xlabel="learning rate", ylabel="loss", title=title)
    ax.legend(loc="best", fontsize="small")
    if path is not None:
        report_lib.save_figure(fig, path, format="png")
    return fig
