"""Per-step time of garo_optax's CLARA and AutoSGM optimizers against optax.

The optimizers (`OPTIMIZERS`) are entries of the optimizer registry
`garo_optax/_app/registry.py`, at this benchmark's rates and windows.
Compared against `optax.adam` and `optax.sgd`: `adam_clara`, `clara_sgd`, and
three AutoSGM configurations: `autosgm_adam` (the "constant" numerator with
optax.adam's hyperparameters, the same update as `optax.adam(1e-3)`),
`autosgm_markov` (the "markov" numerator with a raised-cosine window of 10,000
steps) and `autosgm_markov_zero` (the same with the filter's zero at 0.5).

Each optimizer runs its whole step,

    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)

inside one `jax.jit` with the parameters and the optimizer state donated, on a
transformer-shaped float32 tree (4 layers x 12 leaves + 2 embeddings + a final
norm = 52 leaves). After a warm-up, the optimizers run round-robin in one
process, each call ended by `block_until_ready`, and the script reports the
median time per step and the ratios adam_clara / adam, clara_sgd / sgd and
autosgm_* / adam taken in the same run: on shared machines absolute times drift
by about +-30% from minute to minute, ratios far less. The first-call compile
times give the same pairs of ratios (`compile ... :` lines, `compile_ratios`).

The same round-robin also times a jitted, donated `a = a + s * c` over >= 1 GB,
the in-place read-modify-write pattern of an optimizer step. Its bandwidth gives
each optimizer's floor, `bytes_per_param * num_params / bandwidth`, and the
fraction of that floor it reaches (1.0 = memory-bound at the measured bandwidth).
Bytes per parameter are the compulsory traffic of one step in float32: SGD reads
g, p and writes p (12); Adam also reads and writes m, v (28); CLARA adds its
path, read and written (+8); AutoSGM's "markov" numerator adds three states
(an EMA of w^2, an EMA of |x|, the correlation), read and written (+24); its
`corr_clip` buffer (+8 more) is an XLA:CPU device, not counted.
`of base` uses the floor of the base algorithm (SGD 12, Adam 28) for the CLARA
and AutoSGM variants too. GARO is SGD with momentum (20) plus one read of the
gradient and the momentum for its statistics (28), against `sgd_momentum`
(`optax.sgd(0.01, momentum=0.9)`, base 20).

Two noise-free diagnostics come with the times, per optimizer: the compiled
step's temporary buffer (`temp B/param`; XLA:CPU allocates it afresh on every
call, so each 4 KiB page of it costs a page fault per step) and the minor page
faults per step measured around each call (`faults/kparam`, per 1000 params);
plus the number of element-wise loop fusions and of reductions over arrays in
the compiled HLO (`loops`, `reductions`, counted from `compile().as_text()`).

Run it from the repository root (about 2 minutes for 10M, 6 minutes for 100M on
2 CPU cores; `--optimizers` times a subset):

    python benchmarks/step_time.py --sizes 10M 100M --rounds 20 --out results.json
    python benchmarks/step_time.py --optimizers adam autosgm_markov
"""

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import optax

try:
    import garo_optax
except ImportError:  # Run from a checkout without installing the package.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import garo_optax
from garo_optax._app import registry
from garo_optax._app.step_time import (
    BANDWIDTH_BYTES,
    SIZES,
    add_base_fractions,
    environment,
    format_result,
    measure,
    ratios,
    transformer_params,
)

# Compulsory bytes per float32 parameter and step (see the module docstring).
BYTES_PER_PARAM = {
    "sgd": 12,
    "adam": 28,
    "clara_sgd": 20,
    "adam_clara": 36,
    "autosgm_adam": 28,
    "autosgm_markov": 52,
    "autosgm_markov_zero": 52,
    "sgd_momentum": 20,
    # GARO: SGD + momentum plus one read of g and v for the statistics.
    "garo": 28,
    "garo_lagged": 28,
    "garo_per_tensor": 28,
    "garo_per_tensor_lagged": 28,
}
BASE_BYTES_PER_PARAM = {
    "sgd": 12,
    "adam": 28,
    "clara_sgd": 12,
    "adam_clara": 28,
    "autosgm_adam": 28,
    "autosgm_markov": 28,
    "autosgm_markov_zero": 28,
    "sgd_momentum": 20,
    "garo": 20,
    "garo_lagged": 20,
    "garo_per_tensor": 20,
    "garo_per_tensor_lagged": 20,
}
GARO_VARIANTS = ("garo", "garo_lagged", "garo_per_tensor", "garo_per_tensor_lagged")
# (numerator, denominator) pairs reported as ratios of medians (and of compile
# times).
RATIOS = (
    ("adam_clara", "adam"),
    ("clara_sgd", "sgd"),
    ("autosgm_adam", "adam"),
    ("autosgm_markov", "adam"),
    ("autosgm_markov_zero", "adam"),
    ("sgd_momentum", "adam"),
    *((name, base) for name in GARO_VARIANTS for base in ("sgd_momentum", "adam")),
)
# The window of the AutoSGM "markov" entries.
WINDOW_LENGTH = 10_000
WINDOW = garo_optax.window_schedule("raised_cosine", length=WINDOW_LENGTH)


OPTIMIZERS: dict[str, tuple[str, float | None, dict]] = {
    "adam": ("adam", 1e-3, {}),
    "adam_clara": ("adam_clara", 1e-3, {}),
    "sgd": ("sgd", 1e-3, {}),
    "clara_sgd": ("clara_sgd", 1e-3, {}),
    "autosgm_adam": ("autosgm_adam", 1e-3, {}),
    "autosgm_markov": ("autosgm_markov_rc", 1e-3, {}),  # window: WINDOW_LENGTH
    "autosgm_markov_zero": ("autosgm_markov_window", 1e-3, {"window": WINDOW}),
    "sgd_momentum": ("sgd_momentum", 0.01, {}),
    "garo": ("garo", None, {}),
    "garo_lagged": ("garo", None, {"lagged": True}),
    "garo_per_tensor": ("garo_per_tensor", None, {}),
    "garo_per_tensor_lagged": ("garo_per_tensor", None, {"lagged": True}),
}
"""Timed name -> (entry of the optimizer registry ``garo_optax._app.registry``,
learning rate, options replaced in the entry's)."""


def build(name: str) -> optax.GradientTransformation:
    """The optimizer timed as ``name`` (a key of :data:`OPTIMIZERS`)."""
    entry, learning_rate, options = OPTIMIZERS[name]
    spec = registry.get(entry)
    if not options:  # a schedule over the run spans WINDOW_LENGTH steps
        return spec.build(learning_rate, WINDOW_LENGTH)
    return spec.function(**{**spec.kwargs(learning_rate), **options})


def default_optimizers() -> dict[str, optax.GradientTransformation]:
    """The optimizers compared by default (:data:`OPTIMIZERS`).

    optax's and CLARA's at their default hyperparameters; AutoSGM in its Adam
    configuration (the update of `optax.adam(1e-3)`) and with the "markov"
    numerator and a raised-cosine window, with the filter's zero at 0 and 0.5.
    """
    return {name: build(name) for name in OPTIMIZERS}


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the benchmark; returns the report that `--out` writes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["10M", "100M"], choices=sorted(SIZES)
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        choices=sorted(OPTIMIZERS),
        help="time only these (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--bandwidth-mb",
        type=int,
        default=BANDWIDTH_BYTES >> 20,
        help="size in MiB of each array of the bandwidth probe (0 skips it)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    names = [k for k in OPTIMIZERS if not args.optimizers or k in args.optimizers]
    optimizers = {name: build(name) for name in names}
    report = {"environment": environment(), "sizes": {}}
    for size in args.sizes:
        d, vocab = SIZES[size]
        params = transformer_params(d, vocab)
        result = measure(
            optimizers,
            params,
            args.rounds,
            bandwidth_bytes=args.bandwidth_mb << 20,
            bytes_per_param=BYTES_PER_PARAM,
            warmup=args.warmup,
        )
        del params
        result["d"], result["vocab"] = d, vocab
        result["ratios"] = ratios(result, RATIOS)
        result["compile_ratios"] = ratios(result, RATIOS, key="compile_s")
        add_base_fractions(result, BASE_BYTES_PER_PARAM)
        report["sizes"][size] = result
        print(format_result(size, result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
