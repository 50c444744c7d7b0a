"""Temporary memory of the compiled TBPTT meta-gradient against the unroll length.

For segment lengths K = 10, 100, 1000 on a diagonal quadratic of `--dim`
parameters (population 2, GARO with its default controller), compiles
`garo_optax.meta.truncated_step` with the nested checkpointed scan and with a
plain scan, and prints `compile().memory_analysis().temp_size_in_bytes` of each.
With checkpointing the memory grows about as sqrt(K), without it as K.

    python benchmarks/meta_memory.py --dim 10000
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp

import garo_optax
from garo_optax import meta


def quadratic_family(dim: int) -> meta.TaskFamily:
    """0.5 * sum(h * p^2) with log-uniform curvatures in [e^-2, e^2]."""

    def sample(key):
        return {"h": jnp.exp(jax.random.uniform(key, (dim,), minval=-2.0, maxval=2.0))}

    def task(config):
        return meta.Task(
            init=lambda key: jax.random.normal(key, (dim,)),
            loss=lambda p, batch: 0.5 * jnp.sum(config["h"] * p**2),
            batch=lambda key, step: None,
        )

    return meta.TaskFamily("quadratic", sample, task)


def temp_bytes(family, controller, segment_length: int, checkpoint: bool) -> int:
    """Temporary bytes of one compiled TBPTT meta-gradient."""
    kw = dict(segment_length=segment_length, horizon=segment_length)
    state = jax.eval_shape(
        lambda: meta.truncated_init(controller, family, jax.random.key(0), 2, **kw)
    )
    fn = jax.jit(
        lambda t, s, k: meta.truncated_step(
            t, family, s, k, checkpoint=checkpoint, **kw
        )[:2]
    )
    compiled = fn.lower(controller, state, jax.random.key(1)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main(argv=None) -> dict:
    """Prints and returns the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args(argv)
    family = quadratic_family(args.dim)
    controller = garo_optax.init_controller(jax.random.key(0))
    rows = {}
    print(f"{'K':>6} {'checkpointed MB':>16} {'plain MB':>10}")
    for k in args.lengths:
        ckpt = temp_bytes(family, controller, k, True)
        plain = temp_bytes(family, controller, k, False)
        rows[k] = {"checkpointed": ckpt, "plain": plain}
        print(f"{k:>6} {ckpt / 1e6:>16.2f} {plain / 1e6:>10.2f}", flush=True)
    return rows


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
