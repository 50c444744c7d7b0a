"""The quality suite of ``garo-optax bench``: tasks x optimizers x seeds.

Every run trains one fixed task (a configuration of a :mod:`garo_optax.tasks`
family drawn once from a fixed key, or set outright) from ``len(seeds)``
initializations with their own mini-batch streams, all seeds at once
(``jax.vmap``), for a fixed number of steps inside one jitted ``lax.scan``. The
learning rate is a traced argument of the compiled run, so the runs of a sweep
share one compilation. The loss is passed to every optimizer as ``value=``
(optax transforms that do not take it ignore it).

Reported per task and optimizer (mean and standard deviation over the seeds):

* ``final_loss``: the training loss averaged over the last 10% of steps;
* ``eval_loss``: the held-out loss at the end (noise-free loss for the noisy
  quadratic; none for the deterministic quadratic and Rosenbrock);
* ``steps_to_threshold``: the first step at which the seed-averaged training
  loss, smoothed by a trailing mean over 5% of the steps, reaches the task's
  threshold: the final loss of ``adam`` at its default rate when ``adam`` is
  in the run, else the median final loss of the optimizers run;
* ``run_s`` and ``compile_s``: wall time of the compiled run (all seeds) and
  of its compilation;
* ``runs``: how many runs the result cost (1 at a default rate or for an
  optimizer that sets its own, ``len(SWEEP_FACTORS)`` when swept).

The optimizers are those of :data:`garo_optax._app.registry.OPTIMIZERS`
(re-exported here with ``OptimizerSpec`` and ``GROUPS``). The tuning-free peers
(group ``"peers"``) run once at their own defaults, also under
``--sweep``; the loss a schedule-free one reports each step, and its held-out
loss, are those at its evaluation parameters (its average,
``schedule_free_eval_params``), as their authors require.

Compilation dominates runs of a few seconds, so every run compiles with
:data:`COMPILE_OPTIONS` (and the short tasks with :data:`FAST_COMPILE`), and
:func:`compilation_cache` keeps the compiled programs on disk for the next
run.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from garo_optax import tasks as tasks_lib
from garo_optax._app.registry import GROUPS as GROUPS
from garo_optax._app.registry import OPTIMIZERS as OPTIMIZERS
from garo_optax._app.registry import Factory as Factory
from garo_optax._app.registry import OptimizerSpec as OptimizerSpec

# The optimizer registry lives in garo_optax._app.registry (one list for the
# bench, meta-eval, the benchmarks, `garo-optax list` and the tests).
_NAN = float("nan")

# ----------------------------------------------------------------------------
# The tasks.


@dataclasses.dataclass(frozen=True)
class BenchTask:
    """A fixed training problem built from a :mod:`garo_optax.tasks` family.

    Attributes:
      name: the task's name.
      family: ``family() -> TaskFamily``.
      steps: default number of steps.
      quick_steps: steps under ``--quick``.
      description: one line.
      config: ``config(family, key) -> task config``; default ``family.sample``.
      fast_compile: compile without XLA's backend optimizations
        (:data:`FAST_COMPILE`): 1.5-2.5x faster compilation, 2-3x slower steps,
        the same numbers; for tasks whose runs take less time than compiling.
    """

    name: str
    family: Callable[[], Any]
    steps: int
    quick_steps: int
    description: str
    config: Callable[[Any, jax.Array], Any] | None = None
    fast_compile: bool = True

    def build(self):
        """The task's :class:`~garo_optax.tasks.Task` (its config fixed)."""
        return _build_task(self)


@functools.cache
def _build_task(spec: BenchTask):
    family = spec.family()
    key = jax.random.PRNGKey(0)
    config = family.sample(key) if spec.config is None else spec.config(family, key)
    return family.task(config)


COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
"""XLA compiler options of every run: XLA:CPU's classic emitters compile these
scans 1.2-3x faster than its fusion emitters (steps at the same speed with the
backend optimizations, up to 1.8x slower without). They round differently:
chaotic runs (prodigy on the digits MLP) end elsewhere, as after any compiler
change."""

FAST_COMPILE = {
    **COMPILE_OPTIONS,
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}
"""XLA compiler options of the tasks with ``fast_compile`` (those of
``jax_disable_most_optimizations``, given per compilation)."""


def compiler_options(task_name: str) -> dict:
    """The compiler options of a task's runs."""
    return FAST_COMPILE if TASKS[task_name].fast_compile else COMPILE_OPTIONS


def _quadratic_config(family, key):
    config = family.sample(key)
    dim = config["eigenvalues"].shape[0]
    eigenvalues = jnp.logspace(-3.0, 0.0, dim, dtype=config["eigenvalues"].dtype)
    return {**config, "eigenvalues": eigenvalues}


def _family(name: str, **kwargs):
    def make():  # called when the task is built: the data needs the meta extra
        return tasks_lib.FAMILIES[name](**kwargs)

    make.__qualname__ = f"{name}_family"
    return make


def _tasks() -> dict[str, BenchTask]:
    tasks = (
        BenchTask(
            "quadratic",
            _family("quadratic", dim=20),
            1000,
            300,
            "20-dim quadratic, condition number 1e3, initial loss 1",
            _quadratic_config,
        ),
        BenchTask(
            "rosenbrock",
            _family("rosenbrock"),
            1000,
            300,
            "2-dim Rosenbrock from near (-1.5, 2)",
        ),
        BenchTask(
            "noisy_quadratic",
            _family("noisy_quadratic"),
            1000,
            300,
            "noisy quadratic model, 100 dims, batch 16 (eval: noise-free)",
        ),
        BenchTask(
            "logistic_breast_cancer",
            _family("logistic_breast_cancer"),
            1000,
            300,
            "logistic regression, breast_cancer, batch 64",
        ),
        BenchTask(
            "mlp_digits",
            _family(
                "mlp_digits",
                min_width=64,
                max_width=64,
                min_depth=2,
                max_depth=2,
                activations=("relu",),
            ),
            1000,
            300,
            "MLP 64-64 relu on digits, batch 128",
        ),
        BenchTask(
            "mnist1d_mlp",
            _family(
                "mnist1d_mlp",
                min_width=100,
                max_width=100,
                min_depth=2,
                max_depth=2,
                activations=("relu",),
            ),
            1000,
            300,
            "MLP 100-100 relu on MNIST-1D, batch 128",
            fast_compile=False,  # its steps cost more than compiling here
        ),
        BenchTask(
            "mnist1d_cnn",
            _family(
                "mnist1d_cnn", min_channels=32, max_channels=32, activations=("relu",)
            ),
            300,
            100,
            "1-D CNN, 3 conv layers of 32 channels, on MNIST-1D, batch 128",
            fast_compile=False,
        ),
        BenchTask(
            "char_transformer",
            _family("char_transformer"),
            150,
            50,
            "char transformer, 2 layers, d=64, context 64, on the KJV Bible",
            fast_compile=False,
        ),
    )
    return {t.name: t for t in tasks}


TASKS: dict[str, BenchTask] = _tasks()
"""The tasks of ``garo-optax bench``, by name."""

QUICK_TASKS: tuple[str, ...] = (
    "quadratic",
    "rosenbrock",
    "logistic_breast_cancer",
    "mlp_digits",
)
"""Tasks of ``--quick``."""

SWEEP_FACTORS: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-3, 4))
"""``--sweep``: the default rate times 10^-1.5, 10^-1, ..., 10^1.5."""

# ----------------------------------------------------------------------------
# Running.


class Run(NamedTuple):
    """The arrays one compiled run returns (leading axis: seeds)."""

    losses: np.ndarray  # (seeds, steps)
    probes: np.ndarray  # (seeds, steps, 3): lr, momentum, weight decay
    eval_loss: np.ndarray  # (seeds,)


def _nan_probe(opt_state):
    del opt_state
    nan = jnp.float32(_NAN)
    return nan, nan, nan


def make_run(task, build: Factory, num_steps: int, probe=None, eval_params=None):
    """The jitted ``run(keys, hyperparams) -> Run`` of one task and optimizer.

    Args:
      task: a :class:`~garo_optax.tasks.Task`.
      build: ``build(hyperparams, num_steps) -> optimizer``; for the registry's
        entries ``hyperparams`` is the learning rate.
      num_steps: training steps.
      probe: ``probe(opt_state) -> (lr, momentum, weight_decay)``, or None.
      eval_params: ``eval_params(opt_state, params)``, where the losses are
        taken (the loss of a step on its batch before the update), or None
        (``params``).

    Returns:
      The jitted function; ``keys`` has one PRNG key per seed, ``hyperparams``
      is a pytree of float32 scalars (traced: new values do not recompile).
    """
    probe = probe or _nan_probe

    def one(key, hyperparams):
        k_init, k_batch = jax.random.split(key)
        tx = optax.with_extra_args_support(build(hyperparams, num_steps))
        params = task.init(k_init)

        def body(carry, step):
            params, opt_state = carry
            batch = task.batch(jax.random.fold_in(k_batch, step), step)
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            reported = loss
            if eval_params is not None:
                reported = task.loss(eval_params(opt_state, params), batch)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), (reported, jnp.stack(probe(opt_state)))

        steps = jnp.arange(num_steps, dtype=jnp.int32)
        (params, opt_state), (losses, probes) = jax.lax.scan(
            body, (params, tx.init(params)), steps
        )
        if task.eval_loss is None:
            return losses, probes, jnp.full([], jnp.nan, jnp.float32)
        if eval_params is not None:
            params = eval_params(opt_state, params)
        return losses, probes, task.eval_loss(params)

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """One PRNG key per seed (initialization and batches derive from it)."""
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def inf_if_not_finite(x: np.ndarray) -> np.ndarray:
    """``x`` with every NaN and infinity replaced by +inf (a diverged run)."""
    return np.where(np.isfinite(x), x, np.inf)


def final_losses(losses: np.ndarray) -> np.ndarray:
    """Per seed, the mean training loss of the last 10% of steps (inf if not
    finite)."""
    tail = max(losses.shape[-1] // 10, 1)
    return inf_if_not_finite(np.mean(inf_if_not_finite(losses[..., -tail:]), axis=-1))


def seed_mean(x: np.ndarray) -> np.ndarray:
    """The mean over the leading (seed) axis, NaN where no seed is finite."""
    finite = np.isfinite(x)
    total = np.sum(np.where(finite, x, 0.0), axis=0)
    count = np.sum(finite, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def smooth(curve: np.ndarray) -> np.ndarray:
    """A trailing mean over 5% of the steps (at least one step)."""
    width = max(curve.shape[-1] // 20, 1)
    padded = np.concatenate([np.full(width - 1, curve[0]), curve])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def steps_to_threshold(curve: np.ndarray, threshold: float) -> int | None:
    """The first step (1-based) whose smoothed loss is at most ``threshold``."""
    if not math.isfinite(threshold):
        return None
    hits = np.nonzero(smooth(inf_if_not_finite(curve)) <= threshold)[0]
    return int(hits[0]) + 1 if hits.size else None


@dataclasses.dataclass
class Result:
    """One optimizer on one task (arrays over seeds; curves seed-averaged)."""

    task: str
    optimizer: str
    learning_rate: float  # NaN where the optimizer sets its own rate.
    final_loss: np.ndarray  # (seeds,)
    eval_loss: np.ndarray  # (seeds,)
    curve: np.ndarray  # (steps,): training loss, mean over the seeds.
    probes: np.ndarray  # (steps, 3): lr, momentum, weight decay, seed mean.
    run_s: float
    compile_s: float
    swept: tuple[tuple[float, float], ...] = ()  # (rate, mean final loss)
    steps_to_threshold: int | None = None
    runs: int = 1  # what the result cost: 1, or one run per rate swept

    @property
    def diverged(self) -> bool:
        """Whether any seed ended with a non-finite loss."""
        return not np.all(np.isfinite(self.final_loss))

    @property
    def diverged_at(self) -> int | None:
        """The first step (0-based) whose loss is not finite in some seed, if
        the run diverged, else ``None``."""
        if not self.diverged:
            return None
        bad = np.flatnonzero(~np.isfinite(self.curve))
        return int(bad[0]) if bad.size else self.curve.shape[0] - 1

    def summary(self) -> dict:
        """The JSON-able summary (no curves)."""
        finite = lambda x: float(x) if np.isfinite(x) else None
        return {
            "task": self.task,
            "optimizer": self.optimizer,
            "group": OPTIMIZERS[self.optimizer].group
            if self.optimizer in OPTIMIZERS
            else None,
            "runs": self.runs,
            "learning_rate": finite(self.learning_rate),
            "final_loss_mean": finite(np.mean(self.final_loss)),
            "final_loss_std": finite(_std(self.final_loss)),
            "eval_loss_mean": finite(np.mean(self.eval_loss)),
            "eval_loss_std": finite(_std(self.eval_loss)),
            "steps_to_threshold": self.steps_to_threshold,
            "diverged": self.diverged,
            "diverged_at": self.diverged_at,
            "run_s": self.run_s,
            "compile_s": self.compile_s,
            "final_loss_per_seed": [finite(x) for x in self.final_loss],
            "sweep": [[r, finite(v)] for r, v in self.swept],
        }


def _std(x: np.ndarray) -> float:
    """The standard deviation over seeds, NaN unless every seed is finite."""
    return float(np.std(x)) if np.all(np.isfinite(x)) else float("nan")


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def _compile(lowered, options: dict):
    """``lowered.compile`` with ``options``; an XLA that lacks one of
    :data:`COMPILE_OPTIONS` compiles without them (its defaults)."""
    try:
        return lowered.compile(compiler_options=options)
    except Exception as error:
        if "No such compile option" not in str(error):
            raise
    kept = {k: v for k, v in options.items() if k not in COMPILE_OPTIONS}
    return lowered.compile(compiler_options=kept or None)


@contextlib.contextmanager
def compilation_cache(path):
    """Keeps every program compiled inside the block in ``path`` for later runs.

    JAX's persistent compilation cache, with its thresholds at zero so that the
    small programs of the bench (compiled in well under its default second) are
    kept too: a repeat run loads them instead of compiling. The cache is
    trusted code: keep ``path`` private. The previous settings come back on
    exit.

    Args:
      path: a directory (created if needed), or ``None`` for no cache.

    Yields:
      ``None``.

    Example:
      >>> import tempfile
      >>> with compilation_cache(tempfile.mkdtemp()):
      ...     pass
    """
    if path is None:
        yield
        return
    from jax.experimental.compilation_cache import compilation_cache as cache

    settings = {
        "jax_compilation_cache_dir": str(path),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": -1,
    }
    previous = {name: getattr(jax.config, name) for name in settings}
    cache.reset_cache()  # JAX decides once per process whether to use it
    try:
        for name, value in settings.items():
            jax.config.update(name, value)
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)
        cache.reset_cache()


class Prepared(NamedTuple):
    """A compiled run, ready to execute (see :func:`prepare`)."""

    task: str
    optimizer: str
    compiled: Callable
    keys: jax.Array
    rates: tuple[float, ...]
    compile_s: float


def prepare(
    task_name: str,
    optimizer_name: str,
    *,
    seeds: Sequence[int],
    num_steps: int,
    sweep: bool = False,
    learning_rate: float | None = None,
) -> Prepared:
    """Compiles the run of one optimizer on one task (safe to call in a thread).

    Args:
      task_name: a key of :data:`TASKS`.
      optimizer_name: a key of :data:`OPTIMIZERS`.
      seeds: the seeds (one vmapped run each).
      num_steps: training steps.
      sweep: run every rate of :data:`SWEEP_FACTORS` times the default and keep
        the best by mean final loss (optimizers with their own rate run once).
      learning_rate: overrides the default rate (ignored with ``sweep``).

    Returns:
      A :class:`Prepared` run for :func:`execute`.
    """
    task = TASKS[task_name].build()
    spec = OPTIMIZERS[optimizer_name]
    run = make_run(task, spec.build, num_steps, spec.probe, spec.eval_params)
    keys = seed_keys(seeds)
    if spec.default_lr is None:
        rates = (_NAN,)
    elif sweep:
        rates = tuple(spec.default_lr * f for f in SWEEP_FACTORS)
    else:
        rates = (spec.default_lr if learning_rate is None else learning_rate,)
    start = time.perf_counter()
    lowered = run.lower(keys, jnp.float32(rates[0]))
    compiled = _compile(lowered, compiler_options(task_name))
    compile_s = time.perf_counter() - start
    return Prepared(task_name, optimizer_name, compiled, keys, rates, compile_s)


def execute(prepared: Prepared) -> Result:
    """Runs a :class:`Prepared` run at each of its rates; keeps the best."""
    outcomes = []
    for rate in prepared.rates:
        out, seconds = _timed(prepared.compiled, prepared.keys, jnp.float32(rate))
        outcomes.append((rate, Run(*jax.device_get(out)), seconds))
    swept = tuple((r, float(np.mean(final_losses(o.losses)))) for r, o, _ in outcomes)
    # Best by mean final loss; ties (e.g. every rate diverged) keep the first.
    best = min(range(len(outcomes)), key=lambda i: swept[i][1])
    rate, out, seconds = outcomes[best]
    return Result(
        task=prepared.task,
        optimizer=prepared.optimizer,
        learning_rate=rate,
        final_loss=final_losses(out.losses),
        eval_loss=np.asarray(out.eval_loss, np.float64),
        curve=np.mean(inf_if_not_finite(out.losses), axis=0),
        probes=seed_mean(out.probes),
        run_s=seconds,
        compile_s=prepared.compile_s,
        swept=swept if len(outcomes) > 1 else (),
        runs=len(outcomes),
    )


def run_one(task_name: str, optimizer_name: str, **kwargs) -> Result:
    """Compiles and runs one optimizer on one task (arguments of :func:`prepare`).

    Returns:
      A :class:`Result`.
    """
    return execute(prepare(task_name, optimizer_name, **kwargs))


def run_many(
    jobs: Sequence[dict],
    *,
    workers: int = 2,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Runs many jobs, ``workers`` at a time, each compiled then executed.

    XLA compiles one module on one core, and most of these runs take less
    time than their compilation, so one job per core keeps every core busy
    (the compilations of some jobs overlap the executions of others). The
    jobs start in turns over the tasks (one job of each), so the long runs of
    the large tasks spread over the whole run. The results are those of
    :func:`run_one` in the order of ``jobs`` (``run_s`` and ``compile_s`` are
    then wall times of work that overlapped other jobs).

    Args:
      jobs: keyword arguments of :func:`prepare`, one dict per run.
      workers: jobs at a time (1: one after the other, in that order).
      on_result: called with each :class:`Result` as it is ready.

    Returns:
      The results, in the order of ``jobs``.
    """
    for name in dict.fromkeys(job["task_name"] for job in jobs):
        TASKS[name].build()  # load the data once, outside the threads
    results: list[Result | None] = [None] * len(jobs)
    pool = concurrent.futures.ThreadPoolExecutor(max(workers, 1))
    try:
        futures = {
            pool.submit(lambda job=jobs[i]: run_one(**job)): i
            for i in _interleaved(jobs)
        }
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            if on_result is not None:
                on_result(future.result())
    finally:  # on an error, no job starts after the running ones
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _interleaved(jobs: Sequence[dict]) -> list[int]:
    """The indices of ``jobs``, one of each task in turn."""
    by_task = collections.defaultdict(list)
    for i, job in enumerate(jobs):
        by_task[job["task_name"]].append(i)
    rounds = itertools.zip_longest(*by_task.values())
    return [i for row in rounds for i in row if i is not None]


def add_thresholds(results: Sequence[Result]) -> dict[str, float]:
    """Sets every result's ``steps_to_threshold``; returns the thresholds.

    The threshold of a task is the mean final loss of ``adam`` when it ran,
    else the median over the optimizers that ran of their mean final loss.
    """
    thresholds = {}
    for task in dict.fromkeys(r.task for r in results):
        rows = [r for r in results if r.task == task]
        adam = [r for r in rows if r.optimizer == "adam"]
        if adam:
            threshold = float(np.mean(adam[0].final_loss))
        else:
            threshold = float(np.median([np.mean(r.final_loss) for r in rows]))
        thresholds[task] = threshold
        for r in rows:
            r.steps_to_threshold = steps_to_threshold(r.curve, threshold)
    return thresholds


def best_per_task(results: Sequence[Result]) -> dict[str, str]:
    """Task -> the optimizer with the lowest mean final training loss."""
    best = {}
    for r in results:
        score = float(np.mean(r.final_loss))
        if r.task not in best or score < best[r.task][1]:
            best[r.task] = (r.optimizer, score)
    return {task: name for task, (name, _) in best.items()}
