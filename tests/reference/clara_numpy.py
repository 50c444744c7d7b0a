"""Slow, obvious NumPy float64 reference for the CLARA family.

Written only from ``/work/shared/specs/clara.md`` (sections 3 and 4), independently
of ``garo_optax/_src/clara.py``, so that comparing the two can catch mistakes in
either. Nothing here is fast or clever: every step is an explicit Python loop over
the tensors, in the order given.

Conventions (the library's documented choices)
----------------------------------------------
* ``params`` is a Python list of NumPy arrays. The library uses the flatten order of
  the params pytree (``jax.tree_util.tree_leaves``); pass the leaves in that order.
* Zero-size tensors are skipped in all statistics: they are not counted in K, give
  no factor and no EMA step (seed variants), and are never updated.
* The per-tensor normalization floor is 1e-12: ``u = g / max(||g||, 1e-12)``.
* Everything is computed in float64.

Common signature
----------------
Every function takes ``(params, grads_fn, steps, lr, **hyperparameters)`` where

* ``params``: list of arrays, the initial parameters (copied, never modified);
* ``grads_fn(params, t)``: returns the list of gradients (same shapes) at the
  current parameters; ``t`` is the 1-based step number;
* ``steps``: the number of optimizer steps;
* ``lr``: the initial (published CLARA) or base (seed variants) learning rate.

and returns ``(trajectory, lrs)``:

* ``trajectory[t-1]``: list of arrays, the parameters after step ``t``;
* ``lrs[t-1]`` (float64 array of shape ``(steps,)``), the learning rate reported
  after step ``t``:

  - published CLARA (``sgd_clara``, ``adam_clara``): eta_{t+1}, the rate the next
    step uses (eta_1 = lr; with ``adapt=False`` it stays at lr);
  - ``adam_clara_global``: base_lr * f_t, the factor of step t (base_lr when
    ``adapt=False``);
  - ``adam_clara_local``: the cumulative rate after the last tensor;
  - ``adam_clara_smoothed``: the EMA rate l after the last tensor (the EMA is
    stepped even when ``adapt=False``).

Functions
---------
``sgd_clara(params, grads_fn, steps, lr, c=0.2, d=1e-3, unit_step=True,
normalize="per_tensor", adapt=True, mu=None)``
    Published SGD-CLARA (spec 3.1). ``normalize="per_tensor"`` compares
    S_t with K*mu; ``"global"`` normalizes by the norm of the whole gradient and
    compares S_t with mu. ``mu=None`` means c/(2-c).

``adam_clara(params, grads_fn, steps, lr, b1=0.9, b2=0.999, eps=1e-8, c=0.2,
d=1e-3, unit_step=True, mu=None, weight_decay=0.0, adapt=True)``
    Published Adam-CLARA (spec 3.2): PyTorch-convention Adam (eps outside the
    sqrt, bias correction), coupled L2 weight decay ``g <- g + wd*theta`` before
    the moments, ``mu=None`` means the closed form
    (c/(2-c)) * (1+(1-c)b1) / (1-(1-c)b1).

``adam_clara_global / adam_clara_local / adam_clara_smoothed(params, grads_fn,
steps, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, c=0.2, d=1.0, weight_decay=0.0,
version=2, faithful=True, adapt=True)``
    The three seed variants (spec 4), versions 1 and 2. ``faithful=True`` is
    section 4 exactly. ``faithful=False``: Global is unchanged; Smoothed with
    ``adapt=False`` steps with base_lr (plain Adam) instead of never moving;
    Local clamps the cumulative rate to [0.1, 10] * base_lr after every
    per-tensor multiplication. Weight decay (not specified for the seeds; default
    0) is implemented as coupled L2 like PyTorch's Adam, ``g <- g + wd*theta``.
"""

from __future__ import annotations

import math

import numpy as np

NORM_FLOOR = 1e-12


# ----------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------


def _copy(tensors):
    return [np.array(x, dtype=np.float64, copy=True) for x in tensors]


def _sq_norm(x):
    """Sum of squares of all elements, as a Python float."""
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def _normalize(x, norm):
    return x / max(norm, NORM_FLOOR)


def sgd_mu(c):
    """Random-walk reference E||p||^2 = c/(2-c) (spec 3.1)."""
    return c / (2.0 - c)


def adam_mu(c, b1):
    """Closed-form Adam reference mu_A (spec 3.2)."""
    return (c / (2.0 - c)) * (1.0 + (1.0 - c) * b1) / (1.0 - (1.0 - c) * b1)


class _Adam:
    """PyTorch-convention Adam moments (spec 2), one entry per tensor."""

    def __init__(self, params, b1, b2, eps, weight_decay):
        self.b1, self.b2, self.eps, self.wd = b1, b2, eps, weight_decay
        self.m = [np.zeros_like(x) for x in params]
        self.v = [np.zeros_like(x) for x in params]

    def direction(self, k, g, theta, t):
        """Updates the moments of tensor k with gradient g; returns a = m_hat/(...)."""
        g = g + self.wd * theta  # coupled L2 weight decay, before the moments
        self.m[k] = self.b1 * self.m[k] + (1.0 - self.b1) * g
        self.v[k] = self.b2 * self.v[k] + (1.0 - self.b2) * g * g
        m_hat = self.m[k] / (1.0 - self.b1**t)
        v_hat = self.v[k] / (1.0 - self.b2**t)
        return m_hat / (np.sqrt(v_hat) + self.eps)


# ----------------------------------------------------------------------------------
# Published algorithm (spec 3)
# ----------------------------------------------------------------------------------


def _published_clara(
    params, directions_fn, steps, lr, c, d, unit_step, normalize, adapt, mu
):
    """Shared loop of spec 3.1/3.2; ``directions_fn(theta, t)`` gives the raw steps."""
    theta = _copy(params)
    path = [np.zeros_like(x) for x in theta]
    live = [k for k in range(len(theta)) if theta[k].size > 0]
    n_live = len(live)  # K: zero-size tensors are not counted
    eta = float(lr)
    trajectory, lrs = [], []
    for t in range(1, steps + 1):
        raw = directions_fn(theta, t)
        # 1. normalization (per tensor, or by the norm of the whole tree)
        unit = [None] * len(theta)
        if normalize == "per_tensor":
            for k in live:
                unit[k] = _normalize(raw[k], math.sqrt(_sq_norm(raw[k])))
        elif normalize == "global":
            total = math.sqrt(sum(_sq_norm(raw[k]) for k in live))
            for k in live:
                unit[k] = _normalize(raw[k], total)
        else:
            raise ValueError(normalize)
        # 2. parameter step with the current rate, 3. path
        for k in live:
            step = unit[k] if unit_step else raw[k]
            theta[k] = theta[k] - eta * step
            path[k] = (1.0 - c) * path[k] + c * unit[k]
        # 4. one global scalar
        s = sum(_sq_norm(path[k]) for k in live)
        reference = mu * n_live if normalize == "per_tensor" else mu
        if adapt:
            eta = eta * math.exp(d * (s / reference - 1.0))
        trajectory.append(_copy(theta))
        lrs.append(eta)
    return trajectory, np.asarray(lrs, dtype=np.float64)


def sgd_clara(
    params,
    grads_fn,
    steps,
    lr,
    c=0.2,
    d=1e-3,
    unit_step=True,
    normalize="per_tensor",
    adapt=True,
    mu=None,
):
    """Published SGD-CLARA (spec 3.1); see the module docstring."""
    mu = sgd_mu(c) if mu is None else float(mu)

    def directions(theta, t):
        return [np.asarray(g, dtype=np.float64) for g in grads_fn(theta, t)]

    return _published_clara(
        params, directions, steps, lr, c, d, unit_step, normalize, adapt, mu
    )


def adam_clara(
    params,
    grads_fn,
    steps,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    c=0.2,
    d=1e-3,
    unit_step=True,
    mu=None,
    weight_decay=0.0,
    adapt=True,
):
    """Published Adam-CLARA (spec 3.2); see the module docstring."""
    mu = adam_mu(c, b1) if mu is None else float(mu)
    adam = _Adam(params, b1, b2, eps, weight_decay)

    def directions(theta, t):
        grads = grads_fn(theta, t)
        out = [np.zeros_like(x) for x in theta]
        for k in range(len(theta)):
            if theta[k].size > 0:
                g = np.asarray(grads[k], dtype=np.float64)
                out[k] = adam.direction(k, g, theta[k], t)
        return out

    return _published_clara(
        params, directions, steps, lr, c, d, unit_step, "per_tensor", adapt, mu
    )


# ----------------------------------------------------------------------------------
# Seed variants (spec 4)
# ----------------------------------------------------------------------------------


def _seed_direction(adam, k, g, theta_k, t, version, adapt):
    """Adam direction of tensor k; v1 normalizes it per tensor when adapt is on."""
    a = adam.direction(k, np.asarray(g, dtype=np.float64), theta_k, t)
    if version == 1 and adapt:
        a = _normalize(a, math.sqrt(_sq_norm(a)))
    return a


def _check_version(version):
    if version not in (1, 2):
        raise ValueError(version)


def adam_clara_global(
    params,
    grads_fn,
    steps,
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    c=0.2,
    d=1.0,
    weight_decay=0.0,
    version=2,
    faithful=True,
    adapt=True,
):
    """AdamClaraGlobal (spec 4.1). ``faithful`` makes no numerical difference."""
    del faithful  # the direction is computed once either way
    _check_version(version)
    base_lr = float(lr)
    alpha = math.sqrt(c * (2.0 - c))
    theta = _copy(params)
    path = [np.zeros_like(x) for x in theta]
    adam = _Adam(theta, b1, b2, eps, weight_decay)
    trajectory, lrs = [], []
    for t in range(1, steps + 1):
        grads = grads_fn(theta, t)
        # Loop 1: moments, direction, path, S and N
        a = [None] * len(theta)
        s, n = 0.0, 0
        for k in range(len(theta)):
            if theta[k].size == 0:
                continue
            a[k] = _seed_direction(adam, k, grads[k], theta[k], t, version, adapt)
            path[k] = (1.0 - c) * path[k] + alpha * a[k]
            s += _sq_norm(path[k])
            n += theta[k].size
        # factor of this step
        if adapt:
            f = math.exp((c / (2.0 * d)) * (s / n - 1.0))
            if version == 2:
                f = min(max(f, 0.1), 10.0)
        else:
            f = 1.0
        # Loop 2: parameter step with base_lr * f
        for k in range(len(theta)):
            if theta[k].size == 0:
                continue
            theta[k] = theta[k] - base_lr * f * a[k]
        trajectory.append(_copy(theta))
        lrs.append(base_lr * f)
    return trajectory, np.asarray(lrs, dtype=np.float64)


def adam_clara_local(
    params,
    grads_fn,
    steps,
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    c=0.2,
    d=1.0,
    weight_decay=0.0,
    version=2,
    faithful=True,
    adapt=True,
):
    """AdamClaraLocal (spec 4.2); ``faithful=False`` clamps to [0.1, 10]*base_lr."""
    _check_version(version)
    base_lr = float(lr)
    alpha = math.sqrt(c * (2.0 - c))
    theta = _copy(params)
    path = [np.zeros_like(x) for x in theta]
    adam = _Adam(theta, b1, b2, eps, weight_decay)
    cur_lr = base_lr  # persists across steps
    trajectory, lrs = [], []
    for t in range(1, steps + 1):
        grads = grads_fn(theta, t)
        for k in range(len(theta)):
            size = theta[k].size
            if size == 0:
                continue
            a = _seed_direction(adam, k, grads[k], theta[k], t, version, adapt)
            path[k] = (1.0 - c) * path[k] + alpha * a
            f = math.exp((c / (2.0 * d)) * (_sq_norm(path[k]) / size - 1.0))
            if version == 2:
                f = min(max(f, 0.1), 10.0)
            if adapt:
                cur_lr = cur_lr * f
                if not faithful:
                    cur_lr = min(max(cur_lr, 0.1 * base_lr), 10.0 * base_lr)
            theta[k] = theta[k] - cur_lr * a
        trajectory.append(_copy(theta))
        lrs.append(cur_lr)
    return trajectory, np.asarray(lrs, dtype=np.float64)


def adam_clara_smoothed(
    params,
    grads_fn,
    steps,
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    c=0.2,
    d=1.0,
    weight_decay=0.0,
    version=2,
    faithful=True,
    adapt=True,
):
    """AdamClaraSmoothed (spec 4.3); ``faithful=False`` steps when adapt is off."""
    _check_version(version)
    base_lr = float(lr)
    alpha = math.sqrt(c * (2.0 - c))
    if version == 2:
        path_coef, exp_boost, lo, hi = 2.0 * alpha, 5.0, 0.01, 10.0
    else:
        path_coef, exp_boost, lo, hi = alpha, 1.0, 0.5, 2.0
    theta = _copy(params)
    path = [np.zeros_like(x) for x in theta]
    adam = _Adam(theta, b1, b2, eps, weight_decay)
    ell = base_lr  # EMA rate, persists across steps
    trajectory, lrs = [], []
    for t in range(1, steps + 1):
        grads = grads_fn(theta, t)
        for k in range(len(theta)):
            size = theta[k].size
            if size == 0:
                continue
            a = _seed_direction(adam, k, grads[k], theta[k], t, version, adapt)
            path[k] = (1.0 - c) * path[k] + path_coef * a
            e = (c / (2.0 * d)) * (_sq_norm(path[k]) / size - 1.0)
            f = min(max(math.exp(exp_boost * e), lo), hi)
            ell = 0.9 * ell + 0.1 * base_lr * f  # stepped even when adapt is off
            if adapt:
                theta[k] = theta[k] - ell * a
            elif not faithful:
                theta[k] = theta[k] - base_lr * a  # plain Adam
            # faithful and not adapt: the parameters never move
        trajectory.append(_copy(theta))
        lrs.append(ell)
    return trajectory, np.asarray(lrs, dtype=np.float64)
