"""A shared test problem for the NumPy-reference comparisons."""

import jax
import numpy as np


def noisy_quadratic(shapes, *, seed, phase_scale, noise, min_abs=None):
    """A diagonal quadratic per leaf plus a deterministic sinusoidal gradient noise.

    The data of each leaf depends only on its name, so adding leaves (zero-size
    ones, say) leaves the problem on the other leaves unchanged.

    Args:
      shapes: dict of leaf name to shape; the insertion order may differ from the
        sorted flatten order.
      seed: seed of the per-leaf random data.
      phase_scale: the noise phase of leaf ``name`` is ``phase_scale * ord(name)``.
      noise: amplitude of the noise term.
      min_abs: initial entries smaller than this in magnitude become 0.3.

    Returns:
      ``(params, leaves, treedef, grads_fn)`` where ``grads_fn(leaves, t)`` gives
      the gradient at the 1-based step ``t``.
    """
    names = sorted(shapes)  # the flatten order of a dict
    data = {}
    for name in names:
        rng = np.random.default_rng([seed, ord(name)])
        shape = shapes[name]
        x0 = rng.normal(size=shape)
        if min_abs is not None:
            x0 = np.where(np.abs(x0) < min_abs, 0.3, x0)
        data[name] = (
            x0,
            rng.uniform(0.5, 3.0, size=shape),  # curvature
            rng.normal(size=shape),  # target
            phase_scale * ord(name),
        )
    params = {name: data[name][0] for name in shapes}
    leaves, treedef = jax.tree_util.tree_flatten(params)
    assert [x.shape for x in leaves] == [shapes[n] for n in names]

    def grads_fn(theta, t):
        out = []
        for x, name in zip(theta, names):
            _, h, tgt, phase = data[name]
            idx = np.arange(x.size, dtype=np.float64).reshape(x.shape)
            out.append(h * (x - tgt) + noise * np.sin(0.7 * t + 1.3 * idx + phase))
        return out

    return params, leaves, treedef, grads_fn
