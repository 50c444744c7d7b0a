r"""Task augmentation: random loss and per-tensor parameter scales.

A controller that is meant to be scale-free must see the same problem at many
scales. :func:`augmented` wraps a :class:`~garo_optax.tasks.TaskFamily` so that
every sampled task is reparametrised, as in VeLO's ``ReparamWeights``
augmentation (Metz et al, `VeLO <https://arxiv.org/abs/2211.09760>`_, 2022) and
Celo (Moudgil et al, `Learning Versatile Optimizers on a Compute Diet
<https://arxiv.org/abs/2501.12670>`_, 2025): with a loss scale :math:`c` and one
scale :math:`s_k` per parameter tensor (leaf) :math:`k`, both log-uniform,

.. math::

   \tilde L(\phi) = c \, L(s \odot \phi), \qquad \phi_0 = \theta_0 / s,

so :math:`\tilde L(\phi_0) = c \, L(\theta_0)`, the minimisers are
:math:`\phi^* = \theta^* / s`, and :math:`\nabla \tilde L(\phi) = c \, s \odot
\nabla L(s \odot \phi)`: the same problem, but a plain gradient step is
:math:`c s_k^2` times larger in :math:`\theta`. ``eval_loss`` is
:math:`c \, L_{\text{eval}}(s \odot \phi)` likewise. :func:`rescaled` fixes
:math:`c` (no parameter scales), for evaluating held-out families at a loss
scale never seen in training.

Registry names: :func:`garo_optax.tasks.get_family` resolves ``"<name>@aug"``
(:func:`augmented` with its default ranges) and ``"<name>@loss<c>"``
(:func:`rescaled`, e.g. ``"rosenbrock@loss1e-3"``); suffixes chain from left to
right (``"quadratic@aug@loss1e3"``).

Examples:
  >>> import jax
  >>> from garo_optax.tasks import augmented, get_family
  >>> base = get_family("quadratic")
  >>> family = augmented(base, loss_scale=(1e-3, 1e3), param_scale=(1e-2, 1e2))
  >>> family.name
  'quadratic@aug'
  >>> config = family.sample(jax.random.key(0))
  >>> task = family.task(config)
  >>> loss = task.loss(task.init(jax.random.key(1)), ())
  >>> bool(abs(loss / config["loss_scale"] - 1.0) < 1e-5)  # c * (initial loss 1)
  True
"""

import math
import numbers
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax._src import validate
from garo_optax.tasks._core import Task, TaskFamily

DEFAULT_LOSS_SCALE = (1e-3, 1e3)
"""The loss-scale range of ``"<name>@aug"``: the evaluation scales at its ends."""

DEFAULT_PARAM_SCALE = (1e-2, 1e2)
"""The per-tensor scale range of ``"<name>@aug"`` (VeLO's middle range)."""

_SCALE_STREAM = 0x5CA1E  # folded into the key for the scales

# "loss" and a plain decimal number: no sign, inf, nan, spaces or underscores.
_LOSS_SUFFIX = re.compile(r"loss((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def _log_uniform(u: jax.Array, low: float, high: float) -> jax.Array:
    """U(0, 1) samples mapped log-uniformly onto [low, high]; exactly low if equal."""
    if low == high:  # exp(log(c)) need not round back to c
        return jnp.full(u.shape, low, jnp.float32)
    value = jnp.exp(math.log(low) + (math.log(high) - math.log(low)) * u)
    return jnp.clip(value, low, high).astype(jnp.float32)


def _param_structure(family: TaskFamily) -> jax.tree_util.PyTreeDef:
    """The parameter tree structure of ``family``'s tasks (traced, not run)."""

    def init(key):
        return family.task(family.sample(key)).init(key)

    return jax.tree.structure(jax.eval_shape(init, jax.random.key(0)))


def _reparametrised(base: Task, c: Any, scales: Any) -> Task:
    """``base`` as phi -> c L(s * phi) from theta_0 / s; a None factor is left out."""

    def to_base(phi):  # theta = s * phi
        if scales is None:
            return phi
        return jax.tree.map(lambda p, s: (s * p).astype(p.dtype), phi, scales)

    def init(key):
        theta = base.init(key)
        if scales is None:
            return theta
        return jax.tree.map(lambda t, s: (t / s).astype(t.dtype), theta, scales)

    def scaled(value):
        return value if c is None else (c * value).astype(value.dtype)

    def loss(phi, batch):
        return scaled(base.loss(to_base(phi), batch))

    eval_loss = None
    if base.eval_loss is not None:

        def eval_loss(phi):
            return scaled(base.eval_loss(to_base(phi)))

    return Task(init=init, loss=loss, batch=base.batch, eval_loss=eval_loss)


def augmented(
    family: TaskFamily,
    *,
    loss_scale: tuple[float, float] = DEFAULT_LOSS_SCALE,
    param_scale: tuple[float, float] = DEFAULT_PARAM_SCALE,
    name: str | None = None,
) -> TaskFamily:
    r"""``family`` with a random loss scale and random per-tensor parameter scales.

    Each config draws :math:`c` log-uniform on ``loss_scale`` and, per
    parameter leaf :math:`k`, :math:`s_k` log-uniform on ``param_scale``; the
    task minimises :math:`c \, L(s \odot \phi)` from :math:`\phi_0 = \theta_0 /
    s` (see the module docstring). The base config is ``family.sample(key)``
    with the same key, so ``augmented`` varies only the scales of the tasks
    ``family`` would draw. A range whose ends are equal is a constant; at
    ``(1, 1)`` the corresponding multiplication is left out, so with both
    ranges ``(1, 1)`` the task computes exactly the base task's losses.

    Args:
      family: the base task family.
      loss_scale: the range (low, high) of :math:`c`, 0 < low <= high.
      param_scale: the range (low, high) of each :math:`s_k`, 0 < low <= high.
      name: the family's name; default ``f"{family.name}@aug"``.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily`; configs hold ``base`` (the base
      family's config), ``loss_scale`` () and ``param_scale`` (one entry per
      parameter leaf, in ``jax.tree.leaves`` order), both float32.
    """
    if not isinstance(family, TaskFamily):
        raise ValueError(f"family must be a TaskFamily, got {type(family).__name__}")
    c_low, c_high = validate.check_range("loss_scale", loss_scale)
    s_low, s_high = validate.check_range("param_scale", param_scale)
    scale_loss = (c_low, c_high) != (1.0, 1.0)
    scale_params = (s_low, s_high) != (1.0, 1.0)
    structure = _param_structure(family)
    n_leaves = structure.num_leaves

    def sample(key):
        # A stream apart from the base family's, which gets ``key`` itself.
        u = jax.random.uniform(
            jax.random.fold_in(key, _SCALE_STREAM), (1 + n_leaves,), jnp.float32
        )
        return {
            "base": family.sample(key),
            "loss_scale": _log_uniform(u[0], c_low, c_high),
            "param_scale": _log_uniform(u[1:], s_low, s_high),
        }

    def task(config):
        c = config["loss_scale"] if scale_loss else None
        scales = None
        if scale_params:
            leaves = [config["param_scale"][k] for k in range(n_leaves)]
            scales = jax.tree.unflatten(structure, leaves)
        return _reparametrised(family.task(config["base"]), c, scales)

    return TaskFamily(name=name or f"{family.name}@aug", sample=sample, task=task)


def format_scale(c: float) -> str:
    """The registry spelling of a loss scale: ``1e3``, ``1e-3``, ``0.5``.

    A power of ten as ``1e<k>``, anything else as ``f"{c:g}"`` (meta-eval's
    folder and family names use it too).

    Args:
      c: a positive number.

    Returns:
      The spelling.

    Examples:
      >>> from garo_optax.tasks import format_scale
      >>> format_scale(1000.0), format_scale(0.001), format_scale(0.5)
      ('1e3', '1e-3', '0.5')
    """
    exponent = math.floor(math.log10(c))
    if math.isclose(c, 10.0**exponent, rel_tol=1e-9):
        return f"1e{exponent}"
    return f"{c:g}"


def rescaled(family: TaskFamily, c: float) -> TaskFamily:
    r"""``family`` with its losses multiplied by a fixed :math:`c`.

    The same configs (``sample`` is the base family's), initial points and
    batches; ``loss`` and ``eval_loss`` are :math:`c` (rounded to float32)
    times the base's. For evaluating a controller on a loss scale it was not
    trained on (``"rosenbrock@loss1e-3"``, ``"rosenbrock@loss1e3"``).

    Args:
      family: the base task family.
      c: the loss scale, a positive number finite in float32.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``f"{family.name}@loss{c}"``
      (``c`` spelled by :func:`format_scale`).
    """
    if not isinstance(family, TaskFamily):
        raise ValueError(f"family must be a TaskFamily, got {type(family).__name__}")
    if isinstance(c, bool) or not isinstance(c, numbers.Real):
        raise ValueError(f"c must be a positive number, got {c!r}")
    validate.check_positive("c", c)
    factor = np.float32(c)

    def task(config):
        return _reparametrised(family.task(config), factor, None)

    name = f"{family.name}@loss{format_scale(float(c))}"
    return TaskFamily(name=name, sample=family.sample, task=task)


def apply_suffix(family: TaskFamily, suffix: str) -> TaskFamily:
    """``family`` transformed by a registry suffix: ``aug`` or ``loss<c>``.

    Args:
      family: the base task family.
      suffix: the text after ``@`` in a family name: ``"aug"`` (:func:`augmented`
        with its defaults) or ``"loss"`` followed by a positive number
        (:func:`rescaled`), e.g. ``"loss1e3"``, ``"loss1e-3"``, ``"loss0.5"``.

    Returns:
      The transformed family.

    Raises:
      ValueError: for any other suffix.
    """
    if suffix == "aug":
        return augmented(family)
    match = _LOSS_SUFFIX.fullmatch(suffix)
    if match:
        c = float(match.group(1))
        single = validate.float32_value(c)
        if 0.0 < single < math.inf:
            return rescaled(family, c)
    raise ValueError(
        f"bad family suffix {suffix!r} in {family.name + '@' + suffix!r}; expected "
        "'@aug' or '@loss<c>' with c a positive number finite in float32 "
        "(e.g. '@loss1e3', '@loss1e-3', '@loss0.5')"
    )
