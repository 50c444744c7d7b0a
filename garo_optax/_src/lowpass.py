r"""Stability view of AutoSGM's gradient-smoothing filter.

Somefun et al, `AutoSGM: A Unified Lowpass Regularization Framework for
Accelerated Learning <https://openreview.net/forum?id=dHdzbKpPNc>`_, ICASSP 2024.

In plain words: AutoSGM smooths the gradient with a first-order lowpass filter
with pole :math:`\beta`, zero :math:`\gamma` and input gain :math:`\eta`. Heavy
ball momentum (:math:`\gamma = 0`) and Nesterov momentum
(:math:`\gamma = \beta / (1 + \beta)`) are two points of that design space. This
module looks at the filter as a signal-processing object (its poles, zeros and
frequency response, :func:`lowpass_response`) and at what it does to gradient
descent on a quadratic: the closed-loop poles of the parameter dynamics
(:func:`quadratic_stability`) and the largest stable step
(:func:`max_stable_step`).

It is plain NumPy: Python numbers in, Python numbers and NumPy arrays out; no JAX.

The filter, for an input sequence :math:`x_t` (the gradient) and output
:math:`y_t` (the smoothed gradient), with zero initial state:

.. math::
  \begin{align*}
    q_t &= \beta q_{t-1} + \eta (x_t - \gamma x_{t-1}), \\
    y_t &= q_t / (1 - \gamma), \\
    H(z) &= \frac{Y(z)}{X(z)}
      = \frac{\eta}{1 - \gamma} \, \frac{1 - \gamma z^{-1}}{1 - \beta z^{-1}}.
  \end{align*}
"""

import math
from typing import Any, NamedTuple

import numpy as np

from garo_optax._src import validate


class FilterResponse(NamedTuple):
    """Poles, zeros, gains and frequency response of the smoothing filter."""

    poles: np.ndarray  # shape=(1,) or (0,) when cancelled, float64.
    zeros: np.ndarray  # shape=(1,) or (0,) when cancelled, float64.
    gain: float  # the input gain eta actually used (1 - pole when None).
    cancelled: bool  # zero == pole: the filter is the constant dc_gain.
    dc_gain: float  # H(1) = gain / (1 - pole).
    nyquist_gain: float  # H(-1) = gain (1 + zero) / ((1 - zero) (1 + pole)).
    frequencies: np.ndarray  # shape=(num_frequencies,), radians in [0, pi].
    response: np.ndarray  # shape=(num_frequencies,), complex128 H(exp(i w)).
    magnitude: np.ndarray  # shape=(num_frequencies,), |H|.
    phase: np.ndarray  # shape=(num_frequencies,), arg H in (-pi, pi), radians.


class QuadraticStability(NamedTuple):
    """Closed-loop poles of filtered gradient descent on a 1-D quadratic."""

    poles: np.ndarray  # shape=(2,), or (1,) when cancelled, complex128.
    spectral_radius: float  # max |pole|.
    stable: bool  # all poles inside the unit circle: the parameter converges.
    loop_gain: float  # k = learning_rate * curvature * gain / (1 - zero).


def _check_finite(name: str, value: Any) -> float:
    result = validate.as_real(name, value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _check_filter(pole: Any, zero: Any, gain: Any) -> tuple[float, float, float]:
    """Validates the filter's parameters; returns them with the gain resolved."""
    beta = validate.as_real("pole", pole)
    validate.check_interval("pole", beta, 0.0, 1.0, high_closed=False)
    gamma = validate.as_real("zero", zero)
    validate.check_interval("zero", gamma, 0.0, 1.0, high_closed=False)
    if gain is None:
        eta = 1.0 - beta
    else:
        eta = _check_finite("gain", gain)
        validate.check_positive("gain", eta)
    return beta, gamma, eta


def lowpass_response(
    pole: float,
    zero: float = 0.0,
    gain: float | None = None,
    *,
    num_frequencies: int = 512,
) -> FilterResponse:
    r"""Poles, zeros, gains and frequency response of AutoSGM's smoothing filter.

    Let :math:`\beta, \gamma, \eta` represent the arguments ``pole``, ``zero``
    and ``gain``. The filter (module docstring) has the transfer function

    .. math::
      \begin{align*}
        H(z) &= \frac{\eta}{1 - \gamma} \, \frac{z - \gamma}{z - \beta}, \\
        H(1) &= \frac{\eta}{1 - \beta}, \qquad
        H(-1) = \frac{\eta}{1 - \gamma} \, \frac{1 + \gamma}{1 + \beta},
      \end{align*}

    a pole at :math:`z = \beta` and a zero at :math:`z = \gamma`. The DC gain
    :math:`H(1)` does not depend on the zero (it is 1 for the default gain
    :math:`\eta = 1 - \beta`); the zero only reshapes the high frequencies, where
    :math:`H(-1)` grows with :math:`\gamma`. The response is evaluated on the
    unit circle, :math:`H(e^{i\omega})` for ``num_frequencies`` evenly spaced
    :math:`\omega \in [0, \pi]`.

    Named designs: heavy ball is :math:`\gamma = 0, \eta = 1` (``optax.trace``);
    Nesterov is :math:`\gamma = \beta / (1 + \beta), \eta = 1`; the AutoSGM
    README also uses :math:`\gamma = 1 - \sqrt{2 (1 - \beta)}`.

    .. note::
      With :math:`\gamma = \beta` the zero cancels the pole: :math:`H(z)` is the
      constant :math:`\eta / (1 - \beta)`, there is no smoothing, and
      ``cancelled`` is ``True`` with no pole and no zero left (a zero-initialised
      filter never excites the cancelled mode).

    Args:
      pole: the pole :math:`\beta`, in [0, 1).
      zero: the zero :math:`\gamma`, in [0, 1). 0 (the default) is heavy ball.
      gain: the input gain :math:`\eta` > 0; ``None`` means :math:`1 - \beta`
        (unit DC gain).
      num_frequencies: number of frequencies in :math:`[0, \pi]`, at least 2.

    Returns:
      A :class:`FilterResponse`.

    Examples:
      >>> from garo_optax import lowpass_response
      >>> r = lowpass_response(0.9, 0.9 / 1.9, gain=1.0)  # Nesterov
      >>> print(round(r.dc_gain, 6), round(r.nyquist_gain, 6))
      10.0 1.473684
      >>> lowpass_response(0.5, 0.5).cancelled
      True

    References:
      Somefun et al, `AutoSGM: A Unified Lowpass Regularization Framework for
      Accelerated Learning <https://openreview.net/forum?id=dHdzbKpPNc>`_, 2024
    """
    beta, gamma, eta = _check_filter(pole, zero, gain)
    validate.check_integer("num_frequencies", num_frequencies, 2)
    cancelled = gamma == beta
    scale = eta / (1.0 - gamma)
    omega = np.linspace(0.0, np.pi, int(num_frequencies))
    if cancelled:
        response = np.full(omega.shape, scale, np.complex128)
        poles = zeros = np.zeros((0,))
    else:
        inverse_z = np.exp(-1j * omega)
        response = scale * (1.0 - gamma * inverse_z) / (1.0 - beta * inverse_z)
        poles, zeros = np.array([beta]), np.array([gamma])
    return FilterResponse(
        poles=poles,
        zeros=zeros,
        gain=eta,
        cancelled=cancelled,
        dc_gain=eta / (1.0 - beta),
        nyquist_gain=scale * (1.0 + gamma) / (1.0 + beta),
        frequencies=omega,
        response=response,
        magnitude=np.abs(response),
        phase=np.angle(response),
    )


def quadratic_stability(
    pole: float,
    zero: float = 0.0,
    gain: float | None = None,
    *,
    learning_rate: float,
    curvature: float,
) -> QuadraticStability:
    r"""Closed-loop poles of filtered gradient descent on a 1-D quadratic.

    Let :math:`\beta, \gamma, \eta, \alpha, \lambda` represent the arguments
    ``pole``, ``zero``, ``gain``, ``learning_rate`` and ``curvature``. On the loss
    :math:`\tfrac12 \lambda \theta^2` the gradient is :math:`x_t = \lambda
    \theta_t`, AutoSGM's filter turns it into :math:`y_t` and the parameter moves
    by :math:`\theta_{t+1} = \theta_t - \alpha y_t` (a constant effective
    learning rate :math:`\alpha`; no moment denominator or window). In the
    z-domain, with :math:`Y = H(z) X` and :math:`X = \lambda \Theta`,

    .. math::
      \begin{align*}
        (z - 1)\,\Theta &= -\alpha \lambda H(z)\,\Theta, \qquad
        H(z) = \frac{\eta}{1 - \gamma} \, \frac{z - \gamma}{z - \beta}, \\
        0 &= (z - 1)(z - \beta) + k (z - \gamma), \qquad
        k = \frac{\alpha \lambda \eta}{1 - \gamma}, \\
        0 &= z^2 - (1 + \beta - k)\, z + (\beta - k \gamma).
      \end{align*}

    The returned poles are the roots of this characteristic polynomial; the
    parameter converges to the minimum from any start iff they all lie inside
    the unit circle. By the Jury conditions for :math:`z^2 + a_1 z + a_0`
    (:math:`P(1) > 0`, :math:`P(-1) > 0`, :math:`|a_0| < 1`):

    .. math::
      \begin{align*}
        P(1) &= k (1 - \gamma) > 0 \iff k > 0, \\
        P(-1) &= 2 (1 + \beta) - k (1 + \gamma) > 0
          \iff k < \frac{2 (1 + \beta)}{1 + \gamma}, \\
        |\beta - k \gamma| &< 1 \iff k \gamma < 1 + \beta
          \quad (\text{implied by the line above, as } 2\gamma \le 1 + \gamma),
      \end{align*}

    so the dynamics are stable iff :math:`0 < \alpha \lambda H(-1) < 2`, with
    :math:`H(-1)` the filter's gain at the highest frequency (see
    :func:`max_stable_step`). Hand-checked cases:

    * heavy ball (:math:`\gamma = 0, \eta = 1`): :math:`0 < \alpha\lambda <
      2 (1 + \beta)`;
    * Nesterov (:math:`\gamma = \beta / (1 + \beta), \eta = 1`, so :math:`k =
      \alpha\lambda (1 + \beta)` and :math:`1 + \gamma = (1 + 2\beta) / (1 +
      \beta)`): :math:`0 < \alpha\lambda < 2 (1 + \beta) / (1 + 2\beta)`;
    * :math:`\gamma = \beta` (the pole cancels): the polynomial factors as
      :math:`(z - \beta)(z - 1 + k)`; the factor :math:`z - \beta` is the
      cancelled filter mode, which a zero-initialised filter never excites, so
      only the pole :math:`1 - k` is returned. This is plain gradient descent
      with step :math:`\alpha \eta / (1 - \beta)`, stable iff :math:`0 <
      \alpha\lambda\eta / (1 - \beta) < 2`.

    A negative curvature (a maximum) or learning rate gives :math:`k < 0` and a
    pole above 1; :math:`k = 0` leaves a pole at exactly 1 (not stable).

    Args:
      pole: the pole :math:`\beta`, in [0, 1).
      zero: the zero :math:`\gamma`, in [0, 1).
      gain: the input gain :math:`\eta` > 0; ``None`` means :math:`1 - \beta`.
      learning_rate: the effective learning rate :math:`\alpha` (finite).
      curvature: the curvature :math:`\lambda` of the quadratic (finite).

    Returns:
      A :class:`QuadraticStability`: the poles sorted by decreasing modulus,
      their largest modulus, whether all lie strictly inside the unit circle,
      and the loop gain :math:`k`. ``stable`` is decided by the three conditions
      above, so it is exact on the boundary (e.g. ``learning_rate=0`` leaves a
      pole at 1 that the computed roots may put a rounding error below 1).

    Examples:
      >>> from garo_optax import quadratic_stability
      >>> quadratic_stability(0.9, 0.0, 1.0, learning_rate=1.0, curvature=3.7).stable
      True
      >>> quadratic_stability(0.9, 0.0, 1.0, learning_rate=1.0, curvature=3.9).stable
      False

    References:
      Polyak, `Some methods of speeding up the convergence of iteration methods
      <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964

      Lessard, Recht and Packard, `Analysis and Design of Optimization Algorithms
      via Integral Quadratic Constraints <https://arxiv.org/abs/1408.3595>`_, 2016
    """
    beta, gamma, eta = _check_filter(pole, zero, gain)
    alpha = _check_finite("learning_rate", learning_rate)
    curv = _check_finite("curvature", curvature)
    k = alpha * curv * eta / (1.0 - gamma)
    if gamma == beta:
        poles = np.array([1.0 - k], np.complex128)
    else:
        poles = np.roots([1.0, -(1.0 + beta - k), beta - k * gamma])
        poles = poles.astype(np.complex128)
    poles = poles[np.argsort(-np.abs(poles), kind="stable")]
    # The Jury conditions decide stability exactly, also on the boundary, where
    # the computed moduli may round to just below 1.
    stable = (
        k > 0.0
        and k * (1.0 + gamma) < 2.0 * (1.0 + beta)
        and abs(beta - k * gamma) < 1.0
    )
    return QuadraticStability(
        poles=poles,
        spectral_radius=float(np.max(np.abs(poles))),
        stable=stable,
        loop_gain=k,
    )


def max_stable_step(pole: float, zero: float = 0.0, gain: float | None = None) -> float:
    r"""The largest stable :math:`\alpha\lambda` of filtered gradient descent.

    Let :math:`\beta, \gamma, \eta` represent the arguments ``pole``, ``zero``
    and ``gain``. On a quadratic of curvature :math:`\lambda > 0`, gradient
    descent with learning rate :math:`\alpha` on AutoSGM-filtered gradients is
    stable iff :math:`0 < \alpha\lambda < s^*` (derivation in
    :func:`quadratic_stability`), with the closed form

    .. math::
      s^* = \frac{2}{H(-1)} = \frac{2 (1 + \beta) (1 - \gamma)}{\eta (1 + \gamma)}.

    The bound is open: at :math:`\alpha\lambda = s^*` a pole sits at
    :math:`z = -1`. It falls as the zero grows (a larger zero lifts the
    filter's high-frequency gain). Special cases: heavy ball
    (:math:`\gamma = 0, \eta = 1`) gives :math:`2 (1 + \beta)`; Nesterov
    (:math:`\gamma = \beta / (1 + \beta), \eta = 1`) gives
    :math:`2 (1 + \beta) / (1 + 2\beta)`; :math:`\gamma = \beta` gives
    :math:`2 (1 - \beta) / \eta`, plain gradient descent's bound for the step
    :math:`\alpha\eta / (1 - \beta)`.

    Args:
      pole: the pole :math:`\beta`, in [0, 1).
      zero: the zero :math:`\gamma`, in [0, 1).
      gain: the input gain :math:`\eta` > 0; ``None`` means :math:`1 - \beta`.

    Returns:
      :math:`s^*` as a Python float.

    Examples:
      >>> from garo_optax import max_stable_step
      >>> round(max_stable_step(0.9, 0.0, 1.0), 6)  # heavy ball: 2 (1 + beta)
      3.8
      >>> round(max_stable_step(0.9, 0.9 / 1.9, 1.0), 6)  # Nesterov
      1.357143
    """
    beta, gamma, eta = _check_filter(pole, zero, gain)
    return 2.0 * (1.0 + beta) * (1.0 - gamma) / (eta * (1.0 + gamma))
