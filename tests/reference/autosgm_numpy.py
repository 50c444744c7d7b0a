"""Slow, obvious NumPy float64 reference for AutoSGM, version D.

Written only from ``/work/shared/specs/autosgm.md`` (sections 3, 4, 6.1 and 7),
independently of ``garo_optax/_src/autosgm.py``, so that comparing the two can
catch mistakes in either. Nothing here is fast or clever: every step is an explicit
Python loop over the tensors, in the order of spec section 4.

Mapping of the original's config tuples to the keyword arguments here (and in
``garo_optax.autosgm``)::

    lr_cfg  = (adaptive, lr, numerator)          numerator 0..4 by name, see NUMERATORS
    beta_cfg = (beta_n, b2, pole, zero, gain, debias)   gain None means 0 (= 1 - pole)
    wd_cfg  = (weight_decay, 0 if "coupled" else 1)
    eps_cfg = (eps, eps_in_sqrt)
    rc_cfg  -> ``window``: a Python callable of the 1-based step t, or None (rho = 1)

Conventions
-----------
* ``params`` is a Python list of NumPy arrays (copied, never modified). Pass the
  leaves of a pytree in ``jax.tree_util.tree_leaves`` order to compare with optax.
* ``grad_fn(params, t)`` returns the list of raw gradients (same shapes) at the
  current parameters; ``t`` is the 1-based step.
* Everything is float64, including the scalars the original keeps in float32
  (spec section 7), so expect <= 3e-7 relative deviation from the original.
* The original's "+eps on every element with |w| < eps at init" (spec section 4,
  step 0) is off by default (the library does not reproduce it); turn it on with
  ``init_eps_shift=True``. The difference is not bounded by eps: an all-zero
  tensor whose d >= 1 stays at 0 without the shift and creeps up from eps with it.
* ``numerator_floor`` is not in the spec (its default 0 is the spec): the library
  floors b_t of num_lrc 3 and 4 at ``numerator_floor * lr`` with 0.01, so that
  such a tensor moves; pass 0.01 to compare with the library.
* Returns ``(trajectory, lrs)``: ``trajectory[t-1]`` is the list of parameter
  arrays after step t, and ``lrs[t-1, i]`` is rho_t * a_t of tensor i at step t.
"""

import math

import numpy as np

# Names of num_lrc 0..4 (spec section 4.1).
NUMERATORS = ("constant", "chebyshev_scalar", "max_bound", "markov", "chebyshev")

CF = 4.0  # the Markov / Chebyshev scale of version D


def filter_step(s, x, t, pole, zero, gain, debias):
    """The filter primitive F of spec section 3 (version D). Returns (y, new s)."""
    eta = gain if gain != 0 else 1.0 - pole
    q = s + eta * x
    y = q / (1.0 - zero)
    s_new = pole * q - zero * eta * x
    if debias:
        y = y * ((1.0 - pole) / eta) / (1.0 - pole**t)
    return y, s_new


def ema_step(s, x, beta):
    """EMA_beta[x]_t with its state: q_t = s + (1 - beta) x, s_t = beta q_t.

    Returns (q_t, s_t); s_t is the "post-state" value.
    """
    q = s + (1.0 - beta) * x
    return q, beta * q


def sum_step(s, x, beta):
    """SUM_beta[x]_t = sum_k beta^(t-k) x_k. Returns (q_t, s_t = beta q_t)."""
    q = s + x
    return q, beta * q


def tukey(u):
    """T(u) = ubar (1 - ubar^2)^2 with ubar = min(u, 1), elementwise."""
    ub = np.minimum(u, 1.0)
    return ub * (1.0 - ub**2) ** 2


def raised_cosine_window(length, floor=0.0, order=2.0, full=False, flat=0.0):
    """The uniform rcm = 1 window of spec section 6.1 (M = 1), of the 1-based t."""

    def rho(t):
        f = ((t - 1) % length) / length
        f = abs(2.0 * f - 1.0) if full else abs(f)
        if f < flat or flat == 1:
            return 1.0
        f = (f - flat) / (1.0 - flat)
        return floor + (1.0 - floor) * math.cos(math.pi * f / 2.0) ** order

    return rho


def autosgm_reference(
    params0,
    grad_fn,
    steps,
    *,
    lr=1e-3,
    pole=0.9,
    zero=0.0,
    gain=None,
    debias=True,
    adaptive=True,
    b2=0.999,
    beta_n=0.9999,
    numerator="constant",
    eps=1e-10,
    eps_in_sqrt=True,
    weight_decay=0.0,
    weight_decay_mode="coupled",
    window=None,
    init_eps_shift=False,
    numerator_floor=0.0,
):
    """Runs AutoSGM version D for ``steps`` steps; see the module docstring."""
    if numerator not in NUMERATORS:
        raise ValueError(f"unknown numerator {numerator!r}")
    if weight_decay_mode not in ("coupled", "decoupled"):
        raise ValueError(f"unknown weight_decay_mode {weight_decay_mode!r}")
    eta = 0.0 if gain is None else float(gain)
    lam = float(weight_decay)
    lr0 = float(lr)
    bn = float(beta_n)
    c_wd = (1.0 - pole) / (1.0 - zero)  # step 7: the user's pole and zero

    # Step 0: lazy init.
    ws = []
    for p in params0:
        w = np.array(p, dtype=np.float64, copy=True)
        if init_eps_shift:
            w = np.where(np.abs(w) < eps, w + eps, w)
        ws.append(w)
    n = len(ws)
    zeros = [np.zeros_like(w) for w in ws]
    s1 = [z.copy() for z in zeros]  # smoothing filter
    s2 = [z.copy() for z in zeros]  # moment filter
    # Numerator states. Elementwise: "a" and "b" EMAs, "c" the discounted sum,
    # "w2" the w^2 EMA. Scalars: "L" (EMA0.1), "mu" and "sig2" of num_lrc 1.
    st = {key: [z.copy() for z in zeros] for key in ("w2", "pa", "pb", "pc")}
    sc_mu = [0.0] * n
    sc_sig = [0.0] * n
    L = [0.0] * n

    traj, lrs = [], []
    for t in range(1, steps + 1):
        # Step 2: the window (one global t; every tensor gets a gradient here).
        rho = 1.0 if window is None else float(window(t))
        grads = grad_fn([w.copy() for w in ws], t)
        lr_t = []
        for i in range(n):
            w = ws[i]
            # Step 3: raw gradient, plus coupled weight decay.
            g = np.array(grads[i], dtype=np.float64, copy=True)
            assert g.shape == w.shape
            if weight_decay_mode == "coupled":
                g = g + lam * w
            # Step 4: the moment estimator and the denominator.
            if adaptive:
                P, s2[i] = filter_step(s2[i], g * g, t, b2, 0.0, eta, debias)
                if eps_in_sqrt:
                    P = P + eps
                d = np.sqrt(P) + eps
            else:
                d = np.ones_like(w)
            # Step 5: the normalised raw gradient.
            gn = g / d
            # Step 6: the smoothed gradient.
            m, s1[i] = filter_step(s1[i], g, t, pole, zero, eta, debias)
            v = m / d
            # Step 7: decoupled weight decay.
            if weight_decay_mode == "decoupled":
                v = v + c_wd * lam * w
            # Step 8: the numerator.
            if not adaptive or numerator == "constant":
                a = lr0
            elif numerator == "chebyshev_scalar":
                nrm = float(np.sqrt(np.sum(v * v)))
                mu, sc_mu[i] = ema_step(sc_mu[i], nrm, bn)
                r = float(np.sqrt(np.sum((v - mu) ** 2))) + eps
                sig2, sc_sig[i] = ema_step(sc_sig[i], r * r, bn)
                sig = math.sqrt(sig2) + eps
                a = lr0 * min(r, CF * sig) / r
            elif numerator == "max_bound":
                P_n, st["pa"][i] = ema_step(st["pa"][i], lr0 * (w * w + gn * gn), bn)
                b = float(np.mean(np.minimum(P_n, lr0)))
                L[i] = 0.1 * L[i] + 0.9 * b
                a = L[i]
            elif numerator == "markov":
                _, st["w2"][i] = ema_step(st["w2"][i], w * w, bn)
                omega = st["w2"][i]  # the post-state beta_n * EMA
                ell = lr0 / (1.0 + omega)
                x = w * gn
                xabs = np.abs(x) + eps
                mu, st["pa"][i] = ema_step(st["pa"][i], xabs, bn)
                h = x * np.minimum(xabs, CF * mu) / xabs
                c, st["pc"][i] = sum_step(st["pc"][i], ell * h, bn)
                o = np.minimum(
                    np.maximum(np.abs(c), tukey(d) * ell), ell * (1 + omega) ** 2
                )
                b = max(float(np.mean(o)), numerator_floor * lr0)
                L[i] = 0.1 * L[i] + 0.9 * b
                a = L[i]
            elif numerator == "chebyshev":
                omega, st["w2"][i] = ema_step(st["w2"][i], w * w, bn)  # the output
                ell = lr0 / (1.0 + omega)
                x = w * gn
                mu, st["pa"][i] = ema_step(st["pa"][i], x, bn)
                r = np.abs(x - mu) + eps
                sig2, st["pb"][i] = ema_step(st["pb"][i], r * r, bn)
                sig = np.sqrt(sig2) + eps
                h = x * np.minimum(r, 1.0 * sig) / r
                c, st["pc"][i] = sum_step(st["pc"][i], ell * h, bn)
                o = np.minimum(
                    np.maximum(np.abs(c), tukey(d) * ell), ell * (1 + omega) ** 2
                )
                b = max(float(np.mean(o)), numerator_floor * lr0)
                L[i] = 0.1 * L[i] + 0.9 * b
                a = L[i]
            # Step 9: the update.
            ws[i] = w - rho * a * v
            lr_t.append(rho * a)
        traj.append([w.copy() for w in ws])
        lrs.append(lr_t)
    return traj, np.asarray(lrs, dtype=np.float64).reshape(steps, n)
