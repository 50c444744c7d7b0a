r"""Synthetic task families: quadratics and the Rosenbrock function.

* ``quadratic``: :math:`f(x) = \tfrac12 (x - x^*)^\top Q \operatorname{diag}(
  \lambda) Q^\top (x - x^*)`, config ``eigenvalues`` (``dim``,), ``rotation``
  (``dim``, ``dim``) (Haar-random orthogonal), ``optimum`` (``dim``,). The
  condition number :math:`\kappa = 10^u`, :math:`u \sim U(0,` ``max_log10_
  condition`` :math:`)`; the spectrum is log-uniform on :math:`[1/\kappa, 1]`
  with both ends included, so :math:`\lambda_{\max} = 1` exactly (plain gradient
  descent is stable for learning rates below 2 on every member) and the
  condition number is exactly :math:`\kappa`. **Normalisation:** the loss is not
  rescaled; instead ``init(key)`` starts at :math:`x^* + d` with a random
  direction :math:`d` scaled so that the initial loss is exactly 1. 10 params.
* ``noisy_quadratic``: the noisy quadratic model (Zhang et al, `Which
  Algorithmic Choices Matter at Which Batch Sizes?
  <https://arxiv.org/abs/1907.04164>`_, 2019), :math:`\ell(x; c) = \tfrac12
  \sum_i h_i (x_i - c_i)^2` with a random shift :math:`c \sim \mathcal N(0,
  \sigma^2 H^{-1} / B)` per mini-batch (the ``batch``), so the gradient noise
  has covariance :math:`\sigma^2 H / B`, proportional to the curvature. Config
  ``curvature`` :math:`h_i = i^{-p}`, :math:`p \sim U(0.5, 1.5)`, and
  ``noise_scale`` :math:`\sigma` log-uniform on [0.1, 1]. ``eval_loss`` is the
  noise-free :math:`\tfrac12 \sum_i h_i x_i^2`; the expected training loss
  exceeds it by :math:`\sigma^2 d / (2B)`. Init: unit variance per
  coordinate. 100 params.
* ``rosenbrock``: :math:`(a - x)^2 + b (y - x^2)^2`, config ``a`` ~ U(0.5, 1.5),
  ``b`` log-uniform on [10, 100]; start uniform in the box (-1.5, 2) +- 0.3.
  2 params.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from garo_optax._src import validate
from garo_optax.tasks._core import Task, TaskFamily
from garo_optax.tasks._layers import lead
from garo_optax.tasks._sampling import log_uniform, normal, uniforms, unit_uniform


def quadratic_family(dim: int = 10, max_log10_condition: float = 4.0) -> TaskFamily:
    r"""Ill-conditioned quadratics with random rotation and log-uniform spectrum.

    :math:`f(x) = \tfrac12 (x - x^*)^\top Q \operatorname{diag}(\lambda) Q^\top
    (x - x^*)` with :math:`\lambda_{\max} = 1`, :math:`\lambda_{\min} = 1/\kappa`,
    :math:`\log_{10}\kappa \sim U(0, \text{max\_log10\_condition})` and the other
    eigenvalues log-uniform in between; the initial point is scaled so that the
    initial loss is exactly 1. Deterministic: the batch is ``()`` and
    ``eval_loss`` is None.

    Args:
      dim: the dimension, >= 1.
      max_log10_condition: the largest log10 condition number, >= 0.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"quadratic"``; configs hold
      ``eigenvalues`` (dim,), ``rotation`` (dim, dim) and ``optimum`` (dim,).
    """
    validate.check_integer("dim", dim, 1)
    validate.check_interval("max_log10_condition", max_log10_condition, 0.0, 30.0)

    def sample(key):
        k_uniform, k_normal = jax.random.split(key)
        u = uniforms(k_uniform, max(dim - 1, 1))
        log10_cond = max_log10_condition * u[0]
        if dim == 1:
            t = jnp.zeros((1,), jnp.float32)
        else:
            ends = jnp.zeros((1,), jnp.float32), jnp.ones((1,), jnp.float32)
            t = jnp.concatenate([ends[0], jnp.sort(u[1:]), ends[1]])
        eigenvalues = jnp.exp(-math.log(10.0) * log10_cond * t)
        z = normal(k_normal, (dim * dim + dim,))
        q, r = jnp.linalg.qr(jnp.reshape(z[: dim * dim], (dim, dim)))
        rotation = q * lead(jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0), 2)
        return {
            "eigenvalues": eigenvalues.astype(jnp.float32),
            "rotation": rotation.astype(jnp.float32),
            "optimum": z[dim * dim :],
        }

    def task(config):
        eigenvalues = config["eigenvalues"]
        rotation = config["rotation"]
        optimum = config["optimum"]

        def curvature(d):
            z = rotation.T @ d
            return jnp.sum(eigenvalues * z * z)

        def init(key):
            (d,) = unit_uniform(key, [(dim,)])
            return {"x": optimum + d * jnp.sqrt(2.0 / curvature(d))}

        def loss(params, batch):
            del batch
            return 0.5 * curvature(params["x"] - optimum)

        def batch(key, step):
            del key, step
            return ()

        return Task(init=init, loss=loss, batch=batch, eval_loss=None)

    return TaskFamily(name="quadratic", sample=sample, task=task)


def noisy_quadratic_family(dim: int = 100, batch_size: int = 16) -> TaskFamily:
    r"""The noisy quadratic model: gradient noise proportional to the curvature.

    :math:`\ell(x; c) = \tfrac12 \sum_i h_i (x_i - c_i)^2` with a fresh shift
    :math:`c_i \sim \mathcal N(0, \sigma^2 / (B h_i))` per mini-batch, so the
    stochastic gradient :math:`h \odot (x - c)` has noise covariance
    :math:`\sigma^2 H / B` (Zhang et al, 2019). :math:`h_i = i^{-p}` with
    :math:`p \sim U(0.5, 1.5)`; :math:`\sigma` log-uniform on [0.1, 1];
    :math:`x_0` has unit variance per coordinate. ``eval_loss`` is the noise-free
    :math:`\tfrac12 \sum_i h_i x_i^2`; the expected training loss exceeds it by
    :math:`\sigma^2 \cdot \text{dim} / (2B)`.

    Args:
      dim: the dimension, >= 1.
      batch_size: the mini-batch size B the shift's variance is divided by, >= 1.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"noisy_quadratic"``; configs
      hold ``curvature`` (dim,) and ``noise_scale`` ().
    """
    validate.check_integer("dim", dim, 1)
    validate.check_integer("batch_size", batch_size, 1)
    index = np.arange(1, dim + 1, dtype=np.float32)

    def sample(key):
        u = uniforms(key, 2)
        return {
            "curvature": jnp.power(jnp.asarray(index), -(0.5 + u[0])),
            "noise_scale": log_uniform(u[1], 0.1, 1.0),
        }

    def task(config):
        h = config["curvature"]
        noise_scale = config["noise_scale"]

        def init(key):
            (x,) = unit_uniform(key, [(dim,)])
            return {"x": x}

        def loss(params, batch):
            d = params["x"] - batch["shift"]
            return 0.5 * jnp.sum(h * d * d)

        def batch(key, step):
            key = jax.random.fold_in(key, step)
            std = noise_scale * jax.lax.rsqrt(batch_size * h)
            return {"shift": std * normal(key, (dim,))}

        def eval_loss(params):
            x = params["x"]
            return 0.5 * jnp.sum(h * x * x)

        return Task(init=init, loss=loss, batch=batch, eval_loss=eval_loss)

    return TaskFamily(name="noisy_quadratic", sample=sample, task=task)


def rosenbrock_family(
    start: tuple[float, float] = (-1.5, 2.0), start_spread: float = 0.3
) -> TaskFamily:
    r"""2-D Rosenbrock functions :math:`(a - x)^2 + b (y - x^2)^2`.

    :math:`a \sim U(0.5, 1.5)`, :math:`b` log-uniform on [10, 100]; minimum 0 at
    :math:`(a, a^2)`. Deterministic: the batch is ``()`` and ``eval_loss`` is
    None.

    Args:
      start: the mean starting point.
      start_spread: the half-width of the uniform box around ``start`` that the
        initial point is drawn from.

    Returns:
      A :class:`~garo_optax.tasks.TaskFamily` named ``"rosenbrock"``; configs hold
      ``a`` () and ``b`` ().
    """
    validate.check_interval("start_spread", start_spread, 0.0)
    start_arr = np.asarray(start, np.float32)
    if start_arr.shape != (2,):
        raise ValueError(f"start must be a pair of floats, got {start!r}")

    def sample(key):
        u = uniforms(key, 2)
        return {"a": 0.5 + u[0], "b": log_uniform(u[1], 10.0, 100.0)}

    def task(config):
        a, b = config["a"], config["b"]

        def init(key):
            u = jax.random.uniform(key, (2,), jnp.float32, -1.0, 1.0)
            return {"x": jnp.asarray(start_arr) + start_spread * u}

        def loss(params, batch):
            del batch
            x, y = params["x"][0], params["x"][1]
            return (a - x) ** 2 + b * (y - x * x) ** 2

        def batch(key, step):
            del key, step
            return ()

        return Task(init=init, loss=loss, batch=batch, eval_loss=None)

    return TaskFamily(name="rosenbrock", sample=sample, task=task)
