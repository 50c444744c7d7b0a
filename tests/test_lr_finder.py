"""Tests of ``garo_optax.lr_finder``, ``plot_lr_finder`` and ``examples/lr_finder.py``.

Every run here is short (at most 100 steps of a tiny problem): the cost is the
compilation, one per ``lr_finder`` call.
"""

import math
import pathlib
import sys

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import garo_optax

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
load_example = helpers.load_example


def noisy_quadratic(curvature: float, sigma: float, num_steps: int = 100, dim=10):
    """``L/2 ||x - b_t||^2`` with a random target ``b_t ~ N(0, sigma^2)`` per step.

    The gradient is ``L (x - b_t)``: the best SGD rate is ``1/L`` and the noise
    keeps the loss from collapsing to 0 at that rate.
    """
    loss_fn = lambda x, b: 0.5 * curvature * jnp.sum((x - b) ** 2)
    targets = sigma * np.random.default_rng(0).standard_normal((num_steps, dim))
    return loss_fn, np.ones(dim, np.float32), targets.astype(np.float32)


@pytest.fixture(scope="module")
def quadratic_result() -> garo_optax.LRFinderResult:
    loss_fn, x0, targets = noisy_quadratic(10.0, 0.1)
    return garo_optax.lr_finder(loss_fn, x0, targets, optax.sgd)


# Suggested rate times L, measured with the defaults (100 steps from 1e-7 to 10,
# smoothing 0.98, slope of log smoothed loss, first 10 steps skipped) on
# noisy_quadratic (dim 10):
#   sigma = 0 and 0.01:  0.51, 0.45, 0.40 for L = 1, 10, 100 (0.29, 0.26, 0.28
#                        with log_loss=False: out of the bound below);
#   sigma = 0.1:         0.51, 0.55, 0.34 (the loss floor is then only two
#                        decades below the start).
# The raw log loss falls fastest exactly at 1/L (by (1 - lr L)^2 per step); the
# smoothing (a window of about 50 steps, 4 of the 8 decades) caps the fall of
# the log smoothed loss at log(0.98) per step, a cap it reaches before 1/L, so
# the suggestion lies below 1/L. The bound: at most a factor 3 below 1/L (a
# margin of 1.2 over the measured 0.40) and at most 1.5/L (SGD diverges above
# 2/L).
@pytest.mark.parametrize("curvature", [1.0, 10.0, 100.0])
def test_suggestion_near_best_sgd_rate_on_quadratic(curvature):
    loss_fn, x0, targets = noisy_quadratic(curvature, 0.01)
    result = garo_optax.lr_finder(loss_fn, x0, targets, optax.sgd)
    ratio = result.suggested_lr * curvature
    assert 1 / 3 <= ratio <= 1.5, ratio
    assert result.diverged  # lr L reaches 10: SGD blows up well before the end
    assert np.nanmin(result.losses) < 1e-2 * result.losses[0]


def test_log_loss_false_takes_the_slope_of_the_smoothed_loss(quadratic_result):
    # The plain slope is steepest earlier, where the loss is still large
    # (0.26/L against 0.55/L here).
    loss_fn, x0, targets = noisy_quadratic(10.0, 0.1)
    result = garo_optax.lr_finder(loss_fn, x0, targets, optax.sgd, log_loss=False)
    np.testing.assert_array_equal(
        result.smoothed_losses, quadratic_result.smoothed_losses
    )
    assert result.suggested_lr < quadratic_result.suggested_lr
    lrs, curve = result.learning_rates, result.smoothed_losses[: result.num_valid]
    slopes = np.gradient(curve.astype(np.float64), np.log(lrs[: result.num_valid]))
    assert result.suggested_lr == lrs[10 + np.argmin(slopes[10:])]


def test_learning_rates_are_the_exponential_grid(quadratic_result):
    lrs = quadratic_result.learning_rates
    assert isinstance(lrs, np.ndarray) and lrs.shape == (100,)
    np.testing.assert_allclose(lrs, np.geomspace(1e-7, 10.0, 100), rtol=1e-12)
    assert lrs[0] == 1e-7 and lrs[-1] == pytest.approx(10.0, rel=1e-15)
    for field in ("losses", "smoothed_losses"):
        assert getattr(quadratic_result, field).shape == (100,)


def reference_lr_finder(curvature, x0, targets, min_lr, max_lr, num_steps, kappa, s):
    """The range test on ``L/2 (x - b_t)^2`` with SGD, as a NumPy loop."""
    lrs = np.array(
        [min_lr * (max_lr / min_lr) ** (t / (num_steps - 1)) for t in range(num_steps)]
    )
    losses = np.full(num_steps, np.nan)
    smoothed = np.full(num_steps, np.nan)
    x, avg, best, num_valid = x0, 0.0, np.inf, num_steps
    for t in range(num_steps):
        loss = 0.5 * curvature * (x - targets[t]) ** 2
        avg = s * avg + (1 - s) * loss
        value = avg / (1 - s ** (t + 1))
        if not np.isfinite(value) or value > kappa * best:
            num_valid = t
            break
        best = min(best, value)
        losses[t], smoothed[t] = loss, value
        x = x - lrs[t] * curvature * (x - targets[t])
    return lrs, losses, smoothed, num_valid


def test_matches_numpy_reference_on_1d_quadratic():
    curvature, x0, num_steps, kappa, s = 3.0, 2.0, 60, 4.0, 0.9
    rng = np.random.default_rng(0)
    targets = 0.05 * rng.standard_normal(num_steps)
    lrs, losses, smoothed, num_valid = reference_lr_finder(
        curvature, x0, targets, 1e-4, 10.0, num_steps, kappa, s
    )
    assert 10 < num_valid < num_steps  # the reference run diverges midway

    with jax.enable_x64(True):
        result = garo_optax.lr_finder(
            lambda x, b: 0.5 * curvature * (x - b) ** 2,
            jnp.asarray(x0),
            jnp.asarray(targets),
            optax.sgd,
            min_lr=1e-4,
            max_lr=10.0,
            num_steps=num_steps,
            divergence_factor=kappa,
            smoothing=s,
        )
    assert result.num_valid == num_valid and result.diverged
    np.testing.assert_allclose(result.learning_rates, lrs, rtol=1e-12)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(result.smoothed_losses, smoothed, rtol=1e-5)
    slopes = np.gradient(np.log(smoothed[:num_valid]), np.log(lrs[:num_valid]))
    skip = num_steps // 10
    assert result.suggested_lr == lrs[skip + np.argmin(slopes[skip:])]


@pytest.mark.parametrize("max_lr", [1e3, 1e30])  # a large loss; an overflow
def test_divergence_masks_the_rest_of_the_run(max_lr):
    result = garo_optax.lr_finder(
        lambda x, _: jnp.sum(x**2),
        np.ones(3, np.float32),
        lambda step: None,
        optax.sgd,
        max_lr=max_lr,
        num_steps=50,
    )
    n = result.num_valid
    assert result.diverged and 10 < n < 50
    for curve in (result.losses, result.smoothed_losses):
        assert np.all(np.isfinite(curve[:n]))
        assert np.all(np.isnan(curve[n:]))
    assert result.suggested_lr in result.learning_rates[:n]
    # Every valid step kept the rule: at most 4x the best smoothed loss before it.
    smoothed = result.smoothed_losses
    for t in range(1, n):
        assert smoothed[t] <= 4 * smoothed[:t].min()


def test_no_divergence_counts_every_step():
    result = garo_optax.lr_finder(
        lambda x, _: jnp.sum(x**2),
        np.ones(3, np.float32),
        lambda s: None,
        optax.sgd,
        max_lr=0.1,
    )
    assert not result.diverged and result.num_valid == 100
    assert np.all(np.isfinite(result.losses))


def test_a_non_finite_first_loss_leaves_no_valid_step():
    result = garo_optax.lr_finder(
        lambda x, _: jnp.sum(x**2) / 0.0 * 0.0,  # NaN
        np.ones(3, np.float32),
        lambda step: None,
        optax.sgd,
        num_steps=10,
    )
    assert result.diverged and result.num_valid == 0
    assert math.isnan(result.suggested_lr)
    assert np.all(np.isnan(result.losses)) and np.all(np.isnan(result.smoothed_losses))


def test_the_run_is_one_scan():
    loss_fn = helpers.TraceCounter(lambda x, b: jnp.sum((x - b) ** 2))
    batches = helpers.TraceCounter(lambda step: jnp.zeros(3) + step)
    result = garo_optax.lr_finder(loss_fn, np.ones(3, np.float32), batches, optax.sgd)
    assert result.learning_rates.shape == (100,)
    assert 1 <= loss_fn.count <= 2, loss_fn.count
    assert 1 <= batches.count <= 2, batches.count


def init_mlp(rng, sizes=(4, 16, 1)):
    return [
        (
            (rng.standard_normal((m, n)) / np.sqrt(m)).astype(np.float32),
            np.zeros(n, np.float32),
        )
        for m, n in zip(sizes[:-1], sizes[1:])
    ]


def mlp_loss(params, batch):
    x, y = batch
    (w1, b1), (w2, b2) = params
    prediction = jnp.tanh(x @ w1 + b1[None]) @ w2 + b2[None]
    return jnp.mean((prediction[:, 0] - y) ** 2)


@pytest.fixture(scope="module")
def mlp_problem():
    """A 4-16-1 tanh MLP regressing a smooth target, 100 batches of 32."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 32, 4)).astype(np.float32)
    y = np.sin(x[..., 0]) + 0.5 * x[..., 1] * x[..., 2]
    return init_mlp(rng), (x, y)


@pytest.fixture(scope="module")
def mlp_result(mlp_problem):
    params, batches = mlp_problem
    return garo_optax.lr_finder(mlp_loss, params, batches, optax.adam, min_lr=1e-5)


def test_mlp_with_adam_stacked_and_callable_batches_agree(mlp_problem, mlp_result):
    params, (x, y) = mlp_problem
    x, y = jnp.asarray(x), jnp.asarray(y)
    by_step = garo_optax.lr_finder(
        mlp_loss, params, lambda t: (x[t], y[t]), optax.adam, min_lr=1e-5
    )
    for field in ("losses", "smoothed_losses"):
        np.testing.assert_allclose(
            getattr(by_step, field), getattr(mlp_result, field), rtol=1e-6
        )
    assert by_step.suggested_lr == mlp_result.suggested_lr
    assert by_step.num_valid == mlp_result.num_valid


def test_mlp_suggestion_trains_faster_than_min_lr(mlp_problem, mlp_result):
    params, (x, y) = mlp_problem
    n = mlp_result.num_valid
    assert n > 50
    assert np.all(np.isfinite(mlp_result.losses[:n]))
    assert 1e-5 < mlp_result.suggested_lr < 10.0

    @jax.jit
    def train(params, learning_rate):
        tx = optax.adam(learning_rate)

        def step(carry, batch):
            params, state = carry
            updates, state = tx.update(jax.grad(mlp_loss)(params, batch), state)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), (x, y))
        return mlp_loss(params, (x.reshape(-1, 4), y.reshape(-1)))

    initial = train(params, 0.0)  # Adam at rate 0 leaves the parameters alone
    at_suggestion = train(params, mlp_result.suggested_lr)
    at_min_lr = train(params, 1e-5)
    assert at_suggestion < 0.5 * initial
    assert initial - at_suggestion > 10 * (initial - at_min_lr)


def test_extra_args_optimizer_receives_the_loss():
    # optax.contrib.reduce_on_plateau requires value= (a TypeError without it)
    # and shrinks the step once the loss stops improving, so the curve differs
    # from plain SGD's once the loss rises.
    loss_fn, x0, targets = noisy_quadratic(10.0, 0.1, num_steps=60)
    plateau = lambda lr: optax.chain(
        optax.sgd(lr), optax.contrib.reduce_on_plateau(patience=2, factor=0.5)
    )
    kwargs = dict(num_steps=60, divergence_factor=float("inf"))
    with_plateau = garo_optax.lr_finder(loss_fn, x0, targets, plateau, **kwargs)
    plain = garo_optax.lr_finder(loss_fn, x0, targets, optax.sgd, **kwargs)
    assert np.all(np.isfinite(with_plateau.losses))
    assert with_plateau.losses[0] == plain.losses[0]
    assert not np.allclose(with_plateau.losses, plain.losses)
    assert with_plateau.losses[-1] < plain.losses[-1]


def test_clara_sgd_with_the_schedule():
    loss_fn, x0, targets = noisy_quadratic(10.0, 0.1)
    result = garo_optax.lr_finder(loss_fn, x0, targets, garo_optax.clara_sgd)
    n = result.num_valid
    assert n > 10 and np.all(np.isfinite(result.smoothed_losses[:n]))
    assert result.suggested_lr in result.learning_rates[:n]


def _quadratic_args(**kwargs):
    args = dict(
        loss_fn=lambda x, _: jnp.sum(x**2),
        params=np.ones(3, np.float32),
        batches=lambda step: None,
        optimizer_factory=optax.sgd,
    )
    args.update(kwargs)
    return args


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_lr=0.0), r"min_lr must be in \(0, inf\), got 0.0"),
        (dict(min_lr=-1e-3), "min_lr must be in"),
        (dict(min_lr="small"), "min_lr must be a real number"),
        (dict(min_lr="1e-3"), "min_lr must be a real number"),  # no parsing
        (dict(smoothing=True), "smoothing must be a real number"),
        (dict(max_lr=1e-7), r"max_lr must be in \(1e-07, inf\), got 1e-07"),
        (dict(min_lr=1.0, max_lr=0.5), "max_lr must be in"),
        (dict(max_lr=math.inf), "max_lr must be in"),
        (dict(num_steps=1), r"num_steps must be an integer in \[2, inf\), got 1"),
        (dict(num_steps=10.0), "num_steps must be an integer"),
        (dict(divergence_factor=1.0), r"divergence_factor must be in \(1, inf\)"),
        (dict(smoothing=1.0), r"smoothing must be in \[0, 1\), got 1.0"),
        (dict(smoothing=-0.1), "smoothing must be in"),
        (dict(skip_start=-1), "skip_start must be an integer"),
        (dict(batches=np.zeros((50, 2))), "batches must .* num_steps=100.*50, 2"),
        (dict(batches={"x": np.zeros((100, 2)), "y": 1.0}), "batches must"),
        (dict(optimizer_factory=optax.sgd(0.1)), "optimizer_factory must be callable"),
        (dict(optimizer_factory=lambda lr: lr), "optimizer_factory must return"),
        (dict(loss_fn=3.0), "loss_fn must be callable"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        garo_optax.lr_finder(**_quadratic_args(**kwargs))


def test_plot_writes_a_png(tmp_path, quadratic_result):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr_finder.png"
    fig = garo_optax.plot_lr_finder(quadratic_result, path=str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    (vline,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert vline.get_xdata()[0] == quadratic_result.suggested_lr
    # The method draws on a given Axes and returns its figure.
    assert quadratic_result.plot(ax=ax) is fig


def test_plot_without_matplotlib_names_the_extra(monkeypatch, quadratic_result):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "garo_optax\[examples\]"'):
        garo_optax.plot_lr_finder(quadratic_result)


def test_example_finds_a_rate_and_trains(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "lr_finder.png"
    finder_steps = 40
    result = load_example("lr_finder").main(
        steps=30, finder_steps=finder_steps, out=str(out)
    )
    assert pathlib.Path(result["png"]) == out
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 0
    assert result["learning_rates"].shape == (finder_steps,)
    assert result["smoothed_losses"].shape == (finder_steps,)
    assert result["suggested_lr"] in result["learning_rates"]
    assert 1e-6 < result["sgd_suggested_lr"] < 10.0
    assert result["final_loss"] < 0.8 * result["initial_loss"]
    assert result["final_loss"] < result["baseline_loss"]
    assert "suggested lr" in capsys.readouterr().out
