"""The stability view of AutoSGM's smoothing filter, against hand-derived cases.

The filter and the filtered gradient-descent loop are simulated here in NumPy
straight from the spec's state form (spec autosgm.md §3), independently of the
closed forms in ``garo_optax._src.lowpass``.
"""

import math

import numpy as np
import pytest

import garo_optax

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

BETAS = (0.0, 0.3, 0.5, 0.9, 0.99)


def nesterov_zero(beta: float) -> float:
    return beta / (1.0 + beta)


def readme_zero(beta: float) -> float:
    return 1.0 - math.sqrt(2.0 * (1.0 - beta))


def filter_outputs(xs, pole, zero, gain):
    """AutoSGM's filter (spec §3, version D, no debias) on a sequence, in NumPy."""
    state, ys = 0.0, []
    for x in xs:
        q = state + gain * x
        ys.append(q / (1.0 - zero))
        state = pole * q - zero * gain * x
    return np.array(ys)


def simulate_quadratic(pole, zero, gain, step, num_steps=500):
    """theta_{t+1} = theta_t - alpha y_t on 0.5 * lambda * theta^2, with alpha*lambda
    = step (lambda = 1), starting from theta_0 = 1 and a zero filter state."""
    theta, state, thetas = 1.0, 0.0, [1.0]
    for _ in range(num_steps):
        x = theta  # the gradient, lambda = 1
        q = state + gain * x
        y = q / (1.0 - zero)
        state = pole * q - zero * gain * x
        theta = theta - step * y
        thetas.append(theta)
    return np.array(thetas)


def is_stable(pole, zero, gain, step):
    return garo_optax.quadratic_stability(
        pole, zero, gain, learning_rate=step, curvature=1.0
    ).stable


def bisect_max_step(pole, zero, gain, iterations=80):
    """The stability boundary in alpha*lambda by bisection on the pole moduli."""
    low, high = 1e-9, 1.0
    while is_stable(pole, zero, gain, high):
        high *= 2.0
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if is_stable(pole, zero, gain, mid) else (low, mid)
    return 0.5 * (low + high)


# --- The filter's transfer function -------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("gain", (None, 1.0, 0.3))
def test_zero_at_pole_cancels(beta, gain):
    response = garo_optax.lowpass_response(beta, beta, gain)
    eta = 1.0 - beta if gain is None else gain
    assert response.cancelled
    assert response.poles.shape == response.zeros.shape == (0,)
    assert response.gain == pytest.approx(eta)
    # Flat: H = eta / (1 - gamma) = eta / (1 - beta) at every frequency.
    np.testing.assert_allclose(response.magnitude, eta / (1.0 - beta), rtol=1e-12)
    np.testing.assert_allclose(response.phase, 0.0, atol=1e-12)
    assert response.dc_gain == pytest.approx(eta / (1.0 - beta))
    assert response.nyquist_gain == pytest.approx(eta / (1.0 - beta))
    # The time domain agrees: the filter passes its input through, scaled.
    xs = np.random.default_rng(0).normal(size=50)
    np.testing.assert_allclose(
        filter_outputs(xs, beta, beta, eta), eta / (1.0 - beta) * xs, rtol=1e-12
    )


@pytest.mark.parametrize("beta", (0.3, 0.9))
@pytest.mark.parametrize("zero", (0.0, 0.1, 0.6))
@pytest.mark.parametrize("gain", (None, 1.0, 2.5))
def test_dc_and_nyquist_gains(beta, zero, gain):
    if zero == beta:
        pytest.skip("the cancelled case has its own test")
    response = garo_optax.lowpass_response(beta, zero, gain, num_frequencies=33)
    eta = 1.0 - beta if gain is None else gain
    assert not response.cancelled
    np.testing.assert_array_equal(response.poles, [beta])
    np.testing.assert_array_equal(response.zeros, [zero])
    # H(1) = eta / (1 - beta), whatever the zero.
    assert response.dc_gain == pytest.approx(eta / (1.0 - beta), rel=1e-12)
    assert response.response[0] == pytest.approx(response.dc_gain, rel=1e-12)
    # H(-1) = eta (1 + gamma) / ((1 - gamma)(1 + beta)).
    expected = eta * (1.0 + zero) / ((1.0 - zero) * (1.0 + beta))
    assert response.nyquist_gain == pytest.approx(expected, rel=1e-12)
    assert response.response[-1] == pytest.approx(expected, rel=1e-12)
    assert response.frequencies.shape == (33,)
    assert response.frequencies[0] == 0.0 and response.frequencies[-1] == np.pi
    np.testing.assert_allclose(response.magnitude, np.abs(response.response))
    np.testing.assert_allclose(response.phase, np.angle(response.response))


def test_default_gain_has_unit_dc_gain_and_zero_lifts_high_frequencies():
    gains = [
        garo_optax.lowpass_response(0.9, zero).nyquist_gain
        for zero in (0.0, nesterov_zero(0.9), readme_zero(0.9), 0.8)
    ]
    assert garo_optax.lowpass_response(0.9, 0.5).dc_gain == pytest.approx(1.0)
    assert gains == sorted(gains)


@pytest.mark.parametrize(
    "pole, zero, gain",
    [(0.9, 0.0, 1.0), (0.9, nesterov_zero(0.9), 1.0), (0.9, readme_zero(0.9), None),
     (0.5, 0.2, 0.7), (0.0, 0.4, 1.0)],
)  # fmt: skip
def test_frequency_response_matches_fft_of_impulse_response(pole, zero, gain):
    size = 1024
    eta = 1.0 - pole if gain is None else gain
    impulse = np.zeros(size)
    impulse[0] = 1.0
    spectrum = np.fft.rfft(filter_outputs(impulse, pole, zero, eta))
    response = garo_optax.lowpass_response(
        pole, zero, gain, num_frequencies=size // 2 + 1
    )
    np.testing.assert_allclose(response.frequencies, 2 * np.pi * np.arange(513) / size)
    np.testing.assert_allclose(response.response, spectrum, rtol=1e-10, atol=1e-12)


# --- Filtered gradient descent on a quadratic ----------------------------------


@pytest.mark.parametrize("beta", BETAS)
def test_heavy_ball_interval(beta):
    bound = 2.0 * (1.0 + beta)
    assert garo_optax.max_stable_step(beta, 0.0, 1.0) == pytest.approx(bound)
    for step, stable in [
        (bound * (1 - 1e-6), True),
        (bound * (1 + 1e-6), False),
        (1e-3, True),
        (0.0, False),
        (-1e-3, False),
    ]:
        result = garo_optax.quadratic_stability(
            beta, 0.0, 1.0, learning_rate=step, curvature=1.0
        )
        assert result.stable is stable, (beta, step)
        assert result.stable is (result.spectral_radius < 1.0) or step == 0.0
        assert result.poles.shape == ((1,) if beta == 0.0 else (2,))
        assert result.loop_gain == pytest.approx(step)


@pytest.mark.parametrize("beta", BETAS)
def test_nesterov_interval(beta):
    zero = nesterov_zero(beta)
    bound = 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta)
    assert garo_optax.max_stable_step(beta, zero, 1.0) == pytest.approx(bound)
    assert bisect_max_step(beta, zero, 1.0) == pytest.approx(bound, rel=1e-9)
    assert is_stable(beta, zero, 1.0, bound * (1 - 1e-6))
    assert not is_stable(beta, zero, 1.0, bound * (1 + 1e-6))


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("gain", (None, 1.0, 0.25))
def test_cancelled_pole_is_plain_gradient_descent(beta, gain):
    eta = 1.0 - beta if gain is None else gain
    bound = 2.0 * (1.0 - beta) / eta  # alpha lambda eta / (1 - beta) < 2
    assert garo_optax.max_stable_step(beta, beta, gain) == pytest.approx(bound)
    step = 0.7 * bound
    result = garo_optax.quadratic_stability(
        beta, beta, gain, learning_rate=step / 4.0, curvature=4.0
    )
    np.testing.assert_allclose(result.poles, [1.0 - step * eta / (1.0 - beta)])
    assert result.stable
    assert is_stable(beta, beta, gain, bound * (1 - 1e-6))
    assert not is_stable(beta, beta, gain, bound * (1 + 1e-6))


@pytest.mark.parametrize("beta", (0.5, 0.8, 0.9, 0.95, 0.99))
def test_readme_zero_interval_matches_bisection(beta):
    zero = readme_zero(beta)
    closed_form = garo_optax.max_stable_step(beta, zero)
    expected = 2.0 * (1.0 + beta) * (1.0 - zero) / ((1.0 - beta) * (1.0 + zero))
    assert closed_form == pytest.approx(expected, rel=1e-12)
    assert bisect_max_step(beta, zero, None) == pytest.approx(closed_form, rel=1e-9)


@pytest.mark.parametrize("pole, zero, gain", [(0.2, 0.7, 1.0), (0.7, 0.2, 3.0)])
def test_general_interval_matches_bisection(pole, zero, gain):
    closed_form = garo_optax.max_stable_step(pole, zero, gain)
    assert closed_form == pytest.approx(2.0 / garo_optax.lowpass_response(
        pole, zero, gain).nyquist_gain)  # fmt: skip
    assert bisect_max_step(pole, zero, gain) == pytest.approx(closed_form, rel=1e-9)


def test_poles_are_roots_of_the_characteristic_polynomial():
    pole, zero, gain, alpha, curvature = 0.8, 0.3, 1.5, 0.2, 2.0
    result = garo_optax.quadratic_stability(
        pole, zero, gain, learning_rate=alpha, curvature=curvature
    )
    k = alpha * curvature * gain / (1.0 - zero)
    assert result.loop_gain == pytest.approx(k)
    for z in result.poles:
        assert abs((z - 1) * (z - pole) + k * (z - zero)) < 1e-12
    assert result.spectral_radius == pytest.approx(np.abs(result.poles).max())
    assert abs(result.poles[0]) >= abs(result.poles[1])


@pytest.mark.parametrize(
    "pole, zero, gain",
    [(0.9, 0.0, 1.0), (0.9, nesterov_zero(0.9), 1.0), (0.9, readme_zero(0.9), None),
     (0.5, 0.5, 1.0), (0.3, 0.8, 1.0), (0.0, 0.0, 1.0)],
)  # fmt: skip
@pytest.mark.parametrize("fraction", (0.3, 0.7, 0.95, 1.05, 1.3))
def test_stability_agrees_with_simulation(pole, zero, gain, fraction):
    step = fraction * garo_optax.max_stable_step(pole, zero, gain)
    eta = 1.0 - pole if gain is None else gain
    result = garo_optax.quadratic_stability(
        pole, zero, gain, learning_rate=step, curvature=1.0
    )
    assert result.stable is (fraction < 1.0)
    thetas = np.abs(simulate_quadratic(pole, zero, eta, step, num_steps=500))
    assert np.all(np.isfinite(thetas))
    if result.stable:
        assert thetas[-50:].max() < 1e-2 * thetas[:50].max()
    else:
        assert thetas[-50:].max() > 1e2 * thetas[:50].max()
    # The envelope grows or shrinks at the rate of the spectral radius.
    late, early = thetas[450:500].max(), thetas[400:450].max()
    if early > 1e-250:
        rate = (late / early) ** (1.0 / 50.0)
        assert rate == pytest.approx(result.spectral_radius, rel=2e-2)


# --- Bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(pole=1.0), "pole"),
        (dict(pole=-0.1), "pole"),
        (dict(pole=float("nan")), "pole"),
        (dict(pole=np.array([0.5, 0.6])), "pole"),
        (dict(pole="0.9"), "pole"),
        (dict(zero=1.0), "zero"),
        (dict(zero=-0.5), "zero"),
        (dict(gain=0.0), "gain"),
        (dict(gain=-1.0), "gain"),
        (dict(gain=float("inf")), "gain"),
    ],
)
def test_bad_filter_parameters_raise(kwargs, name):
    args = dict(pole=0.9, zero=0.0, gain=None) | kwargs
    value = repr(kwargs[name])
    with pytest.raises(ValueError, match=name) as info:
        garo_optax.lowpass_response(**args)
    assert value in str(info.value)
    with pytest.raises(ValueError, match=name):
        garo_optax.max_stable_step(**args)
    with pytest.raises(ValueError, match=name):
        garo_optax.quadratic_stability(**args, learning_rate=0.1, curvature=1.0)


@pytest.mark.parametrize("name", ("learning_rate", "curvature"))
@pytest.mark.parametrize("value", (float("inf"), float("-inf"), float("nan"), None))
def test_non_finite_learning_rate_or_curvature_raises(name, value):
    kwargs = dict(learning_rate=0.1, curvature=1.0) | {name: value}
    with pytest.raises(ValueError, match=f"{name} must be"):
        garo_optax.quadratic_stability(0.9, 0.0, 1.0, **kwargs)


@pytest.mark.parametrize("num_frequencies", (1, 0, 2.5, True))
def test_bad_num_frequencies_raises(num_frequencies):
    message = r"num_frequencies must be an integer in \[2, inf\)"
    with pytest.raises(ValueError, match=message):
        garo_optax.lowpass_response(0.9, num_frequencies=num_frequencies)


def test_numpy_scalars_are_accepted():
    plain = garo_optax.max_stable_step(0.9, 0.1, 1.0)
    assert garo_optax.max_stable_step(
        np.float32(0.9), np.float64(0.1), np.array(1.0)
    ) == pytest.approx(plain, rel=1e-6)
