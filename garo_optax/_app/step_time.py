"""Per-step time of optimizer updates against the machine's memory bandwidth.

The machinery of ``garo-optax bench --speed`` and ``benchmarks/step_time.py``:
each optimizer runs its whole step,

    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)

inside one ``jax.jit`` with the parameters and the optimizer state donated, on a
transformer-shaped float32 tree (4 layers x 12 leaves + 2 embeddings + a final
norm = 52 leaves). After a warm-up, the optimizers run round-robin in one
process, each call ended by ``block_until_ready``, so that ratios taken in the
same run hold on a shared, noisy machine. The same round-robin times a jitted,
donated ``a = a + s * c`` over >= 1 GB, the in-place read-modify-write pattern
of an optimizer step; its bandwidth gives each optimizer's floor,
``bytes_per_param * num_params / bandwidth``, and the fraction of that floor it
reaches (1.0 = memory-bound at the measured bandwidth).
"""

import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import garo_optax

try:
    import resource
except ImportError:  # Not on POSIX: no page-fault counts.
    resource = None

# name -> (width d, vocabulary size) of the transformer-shaped tree.
SIZES = {
    "1M": (128, 2048),
    "10M": (384, 8192),
    "100M": (1280, 16384),
}
LAYERS = 4
MAX_LEN = 512
BANDWIDTH = "bandwidth"
BANDWIDTH_BYTES = 1 << 30


def transformer_params(
    d: int,
    vocab: int,
    *,
    layers: int = LAYERS,
    max_len: int = MAX_LEN,
    seed: int = 0,
    dtype=jnp.float32,
) -> dict:
    """A transformer-shaped parameter tree with `layers * 12 + 4` leaves.

    Token and position embeddings, `layers` pre-norm blocks (two layer norms,
    q/k/v/o projections, a 4x MLP with biases) and a final layer norm.

    Args:
      d: model width.
      vocab: vocabulary size.
      layers: number of blocks.
      max_len: rows of the position embedding.
      seed: seed of the random values.
      dtype: dtype of every leaf.

    Returns:
      A nested dict of arrays.
    """
    shapes = {
        "embed": {"tokens": (vocab, d), "positions": (max_len, d)},
        "final_norm": {"scale": (d,), "bias": (d,)},
    }
    for i in range(layers):
        shapes[f"layer_{i}"] = {
            "ln1_scale": (d,),
            "ln1_bias": (d,),
            "wq": (d, d),
            "wk": (d, d),
            "wv": (d, d),
            "wo": (d, d),
            "ln2_scale": (d,),
            "ln2_bias": (d,),
            "w1": (d, 4 * d),
            "b1": (4 * d,),
            "w2": (4 * d, d),
            "b2": (d,),
        }
    return random_like(shapes, seed=seed, scale=0.02, dtype=dtype)


def random_like(shapes, *, seed: int, scale: float = 1.0, dtype=jnp.float32):
    """A tree of normal random arrays with the given shapes (a tree of tuples)."""
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    arrays = [
        scale * jax.random.normal(k, shape, dtype) for k, shape in zip(keys, leaves)
    ]
    return jax.tree.unflatten(treedef, arrays)


def num_params(tree) -> int:
    """Total number of elements of a tree."""
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def make_step(tx: optax.GradientTransformation):
    """The whole optimizer step, jitted with params and state donated."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def compile_step(tx: optax.GradientTransformation, params, grads):
    """The compiled step of `tx` on `params` (use `.as_text()` for its HLO)."""
    return make_step(tx).lower(params, tx.init(params), grads).compile()


def flat_params(num_leaves: int, size: int = 1000, dtype=jnp.float32) -> dict:
    """A dict of ``num_leaves`` zero vectors of ``size`` elements (keys sort
    in creation order), the tree of the compile-time measurements."""
    return {f"p{i:05d}": jnp.zeros([size], dtype) for i in range(num_leaves)}


def num_instructions(compiled) -> int:
    """HLO instructions of a compiled program, fusion bodies included.

    Counts the lines of ``compiled.as_text()`` that define a value (`` = ``).
    This, not the traced program's size, is what XLA compiles; it grows
    quadratically in the number of leaves when a global scalar is copied into
    every per-leaf loop (see :mod:`garo_optax._src.xla_cpu`).
    """
    return sum(
        1
        for line in compiled.as_text().splitlines()
        if " = " in line and not line.lstrip().startswith(("//", "#"))
    )


def compile_profile(tx: optax.GradientTransformation, num_leaves: int, size=1000):
    """Compile seconds and instructions of ``tx``'s jitted, donated step.

    The step is ``tx.update`` (with ``value=1.0``, which GARO reads and the
    others ignore) and ``optax.apply_updates`` on :func:`flat_params`; only
    ``lower(...).compile()`` is timed (a fresh function each call, so no cache
    answers it).

    Args:
      tx: the optimizer.
      num_leaves: leaves of the parameter tree.
      size: elements per leaf.

    Returns:
      ``{"compile_s": seconds, "instructions": count}``.
    """
    tx = optax.with_extra_args_support(tx)
    params = flat_params(num_leaves, size)
    value = jnp.ones([], jnp.float32)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, tx.init(params), params
    )
    start = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    return {"compile_s": seconds, "instructions": num_instructions(compiled)}


_FUSION = re.compile(
    r"=\s*\w+\[([\d,]*)\][^\n]*?\sfusion\([^\n]*?kind=(\w+)[^\n]*?calls=(%[\w.\-]+)"
)
_ROOT = re.compile(r"ROOT \S+ = \S+ ([\w\-]+)\(")


def hlo_counts(compiled) -> dict:
    """Fusions in a compiled step's entry computation (XLA:CPU).

    `loops` counts the element-wise loop fusions with an array output;
    `reductions` the fusions whose result is a reduction (XLA `reduce` or
    `reduce-window` roots, and YNNPACK custom fusions, which XLA:CPU uses for
    sums of squares and dot products). A small leaf's sum of squares may take a
    loop and two reductions (multiply, reduce-window, reduce). Best effort: it
    parses `compiled.as_text()`, whose format is not a stable API.
    """
    text = compiled.as_text()
    entry = text[text.find("\nENTRY") :]
    loops = reductions = 0
    for match in _FUSION.finditer(entry):
        dims, kind, calls = match.groups()
        start = text.find(f"\n{calls} ")
        body = text[start : text.find("\n}", start)] if start >= 0 else ""
        root = _ROOT.search(body)
        root = root.group(1) if root else ""
        if kind == "kCustom" or root in ("reduce", "reduce-window"):
            reductions += 1
        elif dims and kind == "kLoop":
            loops += 1
    return {"loops": loops, "reductions": reductions}


def _minor_faults() -> int:
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _copy(tree):
    # A private copy, so that donating it never deletes the caller's arrays.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def optimizer_runner(
    tx: optax.GradientTransformation, params, grads, *, warmup: int = 2
) -> tuple[Callable[[], float], dict]:
    """Compiles and warms up one optimizer step.

    Returns:
      `(run, info)`: `run()` performs one donated step on the runner's own copy
      of `params` and its state and returns the wall-clock seconds it took;
      `info` holds `compile_s`, `temp_bytes` and the `hlo_counts` of the step.
    """
    # The state copied too: some optax inits share a buffer between state
    # leaves, or with params (prodigy, dog, mechanize, cocob), which donation
    # refuses.
    carry = [_copy(params), _copy(tx.init(params))]
    start = time.perf_counter()
    compiled = make_step(tx).lower(*carry, grads).compile()
    info = {"compile_s": time.perf_counter() - start}
    memory = compiled.memory_analysis()
    if memory is not None:
        info["temp_bytes"] = memory.temp_size_in_bytes
    info.update(hlo_counts(compiled))

    def run() -> float:
        start = time.perf_counter()
        carry[:] = compiled(carry[0], carry[1], grads)
        jax.block_until_ready(carry)
        return time.perf_counter() - start

    for _ in range(warmup):
        run()
    return run, info


def bandwidth_runner(
    num_bytes: int = BANDWIDTH_BYTES, *, warmup: int = 2
) -> tuple[Callable[[], float], int]:
    """A donated in-place `a = a + s * c` over two float32 arrays of `num_bytes`.

    Returns:
      `(run, bytes_moved)`: `run()` does one update and returns its seconds;
      `bytes_moved` is the traffic of one update (read a and c, write a).
    """
    n = num_bytes // 4
    c = jnp.ones([n], jnp.float32)
    s = jnp.asarray(1e-3, jnp.float32)
    axpy = jax.jit(lambda a, s, c: a + s * c, donate_argnums=0)
    carry = [jnp.zeros([n], jnp.float32)]

    def run() -> float:
        start = time.perf_counter()
        carry[0] = axpy(carry[0], s, c)
        carry[0].block_until_ready()
        return time.perf_counter() - start

    for _ in range(warmup):
        run()
    return run, 12 * n


def interleave(
    runners: Mapping[str, Callable[[], float]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Calls every runner once per round, round-robin.

    Returns:
      `(seconds, faults)`: the seconds of every call, and the mean number of
      minor page faults per call (0 where `resource` is unavailable).
    """
    times = {name: [] for name in runners}
    faults = dict.fromkeys(runners, 0)
    for _ in range(rounds):
        for name, run in runners.items():
            before = _minor_faults()
            times[name].append(run())
            faults[name] += _minor_faults() - before
    return times, {name: f / max(rounds, 1) for name, f in faults.items()}


def measure(
    optimizers: Mapping[str, optax.GradientTransformation],
    params,
    rounds: int = 20,
    *,
    grads=None,
    bandwidth_bytes: int | None = BANDWIDTH_BYTES,
    bytes_per_param: Mapping[str, float] | None = None,
    warmup: int = 2,
) -> dict:
    """Times the jitted, donated steps of `optimizers` on `params`, interleaved.

    Args:
      optimizers: name -> transformation.
      params: the parameter tree (not donated: each optimizer works on a copy).
      rounds: number of round-robin rounds (one step per optimizer each).
      grads: the gradient fed at every step; `None` draws a normal tree.
      bandwidth_bytes: size of each array of the bandwidth probe, timed in the
        same rounds; `None` or 0 skips it.
      bytes_per_param: name -> compulsory bytes per parameter, to report the
        fraction of the bandwidth floor reached (names missing are skipped).
      warmup: untimed calls of each runner before the rounds.

    Returns:
      A dict with `num_params`, `num_leaves`, `rounds`, `bandwidth_gbs` (the
      median, when measured) and `optimizers`: per name `median_ms`, `min_ms`,
      `times_ms`, `compile_s`, `temp_bytes_per_param`, `faults_per_kparam`,
      `loops`, `reductions`, and `floor_ms`, `floor_fraction` when the
      bandwidth and the bytes per parameter are known.
    """
    if grads is None:
        shapes = jax.tree.map(lambda x: x.shape, params)
        grads = random_like(shapes, seed=1, dtype=jax.tree.leaves(params)[0].dtype)
    runners, infos = {}, {}
    for name, tx in optimizers.items():
        runners[name], infos[name] = optimizer_runner(tx, params, grads, warmup=warmup)
    bytes_moved = None
    if bandwidth_bytes:
        runners[BANDWIDTH], bytes_moved = bandwidth_runner(
            bandwidth_bytes, warmup=warmup
        )
    times, faults = interleave(runners, rounds)

    n = num_params(params)
    result = {
        "num_params": n,
        "num_leaves": len(jax.tree.leaves(params)),
        "rounds": rounds,
        "optimizers": {},
    }
    bandwidth = None
    if bytes_moved is not None:
        bandwidth = bytes_moved / statistics.median(times.pop(BANDWIDTH))
        result["bandwidth_gbs"] = bandwidth / 1e9
    bytes_per_param = bytes_per_param or {}
    for name in optimizers:
        seconds, info = times[name], infos[name]
        median = statistics.median(seconds)
        entry = {
            "median_ms": 1e3 * median,
            "min_ms": 1e3 * min(seconds),
            "compile_s": info["compile_s"],
            "temp_bytes_per_param": info.get("temp_bytes", float("nan")) / n,
            "faults_per_kparam": 1e3 * faults[name] / n,
            "loops": info["loops"],
            "reductions": info["reductions"],
        }
        if bandwidth is not None and name in bytes_per_param:
            floor = bytes_per_param[name] * n / bandwidth
            entry["bytes_per_param"] = bytes_per_param[name]
            entry["floor_ms"] = 1e3 * floor
            entry["floor_fraction"] = floor / median
        entry["times_ms"] = [1e3 * s for s in seconds]
        result["optimizers"][name] = entry
    return result


def ratios(
    result: dict, pairs: Sequence[tuple[str, str]], key: str = "median_ms"
) -> dict:
    """Ratios of median step times, `"a/b": median(a) / median(b)`.

    With `key="compile_s"`, the ratios of the first-call compile times.
    """
    opts = result["optimizers"]
    return {
        f"{a}/{b}": opts[a][key] / opts[b][key]
        for a, b in pairs
        if a in opts and b in opts
    }


def add_base_fractions(result: dict, base_bytes: Mapping[str, float]) -> None:
    """Adds `floor_fraction_base`: the fraction of the base algorithm's floor."""
    if "bandwidth_gbs" not in result:
        return
    bandwidth = 1e9 * result["bandwidth_gbs"]
    for name, e in result["optimizers"].items():
        if name in base_bytes:
            floor = base_bytes[name] * result["num_params"] / bandwidth
            e["floor_fraction_base"] = floor / (1e-3 * e["median_ms"])


def environment() -> dict:
    """Device and library versions to store with the times."""
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind}",
        "num_devices": jax.device_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "garo_optax": garo_optax.__version__,
    }


def _cell(entry: dict, key: str, spec: str, width: int) -> str:
    return f"{entry[key]:{width}{spec}}" if key in entry else " " * width


def format_result(size: str, result: dict) -> str:
    """A human-readable table of one size's result."""
    lines = [
        f"{size}: {result['num_params'] / 1e6:.1f}M params, "
        f"{result['num_leaves']} leaves, {result['rounds']} rounds"
    ]
    if "bandwidth_gbs" in result:
        lines.append(f"  bandwidth (a = a + s*c): {result['bandwidth_gbs']:.1f} GB/s")
    columns = (
        ("median_ms", ".2f", 10, "median ms"),
        ("min_ms", ".2f", 9, "min ms"),
        ("floor_ms", ".1f", 9, "floor ms"),
        ("floor_fraction", ".2f", 9, "of floor"),
        ("floor_fraction_base", ".2f", 8, "of base"),
        ("temp_bytes_per_param", ".2f", 12, "temp B/param"),
        ("faults_per_kparam", ".2f", 14, "faults/kparam"),
        ("loops", "d", 6, "loops"),
        ("reductions", "d", 11, "reductions"),
        ("compile_s", ".2f", 10, "compile s"),
    )
    lines.append(
        f"  {'optimizer':<20}" + "".join(f" {t:>{w}}" for _, _, w, t in columns)
    )
    for name, e in result["optimizers"].items():
        cells = "".join(" " + _cell(e, k, s, w) for k, s, w, _ in columns)
        lines.append(f"  {name:<20}{cells}")
    for key, value in result.get("ratios", {}).items():
        lines.append(f"  {key}: {value:.3f}")
    for key, value in result.get("compile_ratios", {}).items():
        lines.append(f"  compile {key}: {value:.3f}")
    return "\n".join(lines)
