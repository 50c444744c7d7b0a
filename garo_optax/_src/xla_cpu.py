"""Named workarounds for XLA:CPU's compiler, one helper per behaviour.

Each helper says which compiler behaviour it works around, what it gained when
measured and how to check that it still pays. The transforms call these
helpers instead of scattering the tricks, so that a helper that stops paying
becomes the plain expression in one place.

The behaviour behind all of them: XLA's instruction fusion duplicates cheap
producers (element-wise scalar arithmetic, compares, selects, a
concatenation and the ``reduce`` of a few scalars, which the algebraic
simplifier turns into ``add`` chains) into every consumer fusion. A global
scalar of an optimizer step (a norm, the finite flag, a learning rate) that is
computed from the N per-leaf sums and read by each of the N per-leaf update
loops is then recomputed inside every loop: the compiled program has O(N^2)
instructions although the traced one has O(N), and compile time grows
quadratically with the number of leaves. ``jax.lax.optimization_barrier`` does
not help on XLA:CPU: the CPU pipeline expands barriers before fusion.

Measured (jax 0.10.2, XLA:CPU, 2 shared cores; jitted ``tx.update`` +
``optax.apply_updates`` on a dict of N float32 leaves of 1,000 elements;
first-call compile time over ``optax.adam``'s in the same process):
``tests/test_compile_growth.py`` checks the instruction counts, and
``garo-optax bench --speed --compile-leaves 52 260 1000`` the times.

Two costs linear in the leaves but large per leaf, found while measuring:
every fusion that holds a ``slice`` (reading entry k of a per-leaf vector, as
AutoSGM's ``lr_num[k]``) goes through XLA:CPU's slow fusion-emitter path,
about 20-30 ms of compile time each against 1-2 ms for an element-wise loop
(``--xla_cpu_use_fusion_emitters=false`` evens them out; see
:func:`vector_entries`); and each per-leaf sum of squares compiles to three
kernels (the square, a ``reduce-window`` and a ``reduce``).
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

Tree = TypeVar("Tree")
Carry = TypeVar("Carry")


def _unit_like(x: jax.Array) -> jax.Array:
    # 1 in x's dtype, computed from x's bits as b // b with b = bits | 1
    # (never 0): exact, but no simplifier proves it is 1.
    width = jnp.dtype(x.dtype).itemsize * 8
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"int{width}")) | 1
    return jax.lax.div(bits, bits).astype(x.dtype)


def _fence(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return jax.lax.complex(_fence(jnp.real(x)), _fence(jnp.imag(x)))
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x / _unit_like(x)  # x / 1 is x exactly (NaN, inf and -0 too).
    if jnp.issubdtype(x.dtype, jnp.integer):
        return jax.lax.div(x, _unit_like(x))
    if x.dtype == jnp.bool_:
        return _fence(x.astype(jnp.int32)) != 0
    return x


def computed_once(tree: Tree) -> Tree:
    """Returns ``tree`` (a few scalars) as values XLA computes once.

    Works around the duplication of the module notes. XLA copies only cheap
    producers into several consumers; a division is expensive (it stays one
    instruction that every consumer reads). So each value becomes ``x / u``
    with ``u`` exactly 1, computed from ``x``'s own bits in integers
    (``b // b`` for ``b = bits | 1``), which no simplifier folds: the value and
    everything before it are computed once, and each consumer reads the
    result as a parameter. Exact for every input (NaN, infinities, -0,
    subnormals); the derivative is the identity's (the integer path carries
    none); ``vmap`` and every backend are fine. A handful of scalar
    instructions per value at run time.

    ``jax.lax.optimization_barrier`` would be the natural tool but does
    nothing here: XLA:CPU expands barriers before fusion. A one-trip
    ``while`` loop also works but costs about 50 ms of compile time per loop.

    Measured gain (instruction count of the compiled step, 16 -> 64 leaves of
    16 elements; quadratic growth tends to 16x, linear to 4x):
    ``clara_sgd`` 7.8x before, 3.8x after; ``adam_clara`` 7.1x -> 3.9x;
    ``garo()`` 7.5x -> 3.2x; ``garo(pretrained())`` 7.7x -> 3.4x. Compile
    time over ``optax.adam``'s: ``garo-optax bench --speed
    --compile-leaves 52 260 1000``.

    How to check it still pays: make this the identity (``return tree``) and
    run ``tests/test_compile_growth.py``; if every transform's compiled
    instruction count still grows linearly in the leaf count, XLA no longer
    duplicates and the helper can go.

    Args:
      tree: a pytree of arrays (meant for scalars; any shape works).

    Returns:
      The same values.

    Examples:
      >>> import jax.numpy as jnp
      >>> computed_once((jnp.float32(-0.0), jnp.array(True), jnp.int32(7)))
      (Array(-0., dtype=float32), Array(True, dtype=bool), Array(7, dtype=int32))
    """
    return jax.tree.map(_fence, tree)


def sum_once(scalars: Sequence[jax.Array], dtype) -> jax.Array:
    """The sum of per-leaf scalars: one stacked reduction, computed once.

    Works around the duplication of the module notes for the commonest global
    scalar, a sum over leaves: a Python ``sum`` traces a chain of N ``add``
    instructions that XLA copies into each consumer. Here the scalars are
    stacked into one vector and reduced once, behind :func:`computed_once`.
    XLA may associate the sum differently from a left-to-right ``sum``: the
    result can differ in the last bits.

    Measured gain and how to check it still pays: as :func:`computed_once`.

    Args:
      scalars: scalars (shape ``()``) of one dtype; may be empty.
      dtype: the dtype of the result for no scalars.

    Returns:
      A scalar: the sum (0 for no scalars).

    Examples:
      >>> import jax.numpy as jnp
      >>> sum_once([jnp.float32(1.5), jnp.float32(2.0)], jnp.float32)
      Array(3.5, dtype=float32)
    """
    if not scalars:
        return jnp.zeros([], dtype)
    return computed_once(jnp.sum(jnp.stack(scalars)))


def running(
    step: Callable[[Carry, jax.Array], Carry], start: Carry, inputs: Sequence
) -> list[Carry]:
    """The states of a recurrence over per-leaf scalars, ``[s_1, ..., s_K]``.

    ``s_k = step(s_{k-1}, inputs[k-1])`` with ``s_0 = start``: the Python loop,
    with every state put behind :func:`computed_once`.

    Works around the duplication of the module notes for a recurrence (a rate
    compounded leaf by leaf): leaf k's loop would otherwise recompute the k
    links before it, O(K^2) instructions. Not a ``lax.scan``: reading the K
    states back out of its stacked output takes K slices, and XLA:CPU
    compiles each fusion holding a slice through its slow emitter path (about
    20 ms each, 20x an element-wise loop's).

    Measured gain: the compiled step, 16 -> 64 leaves: ``adam_clara_local``
    8.6x the instructions before (quadratic), 3.9x after;
    ``adam_clara_smoothed`` 8.9x -> 3.9x.

    How to check it still pays: drop the :func:`computed_once` and run
    ``tests/test_compile_growth.py``.

    Args:
      step: ``(state, input) -> state`` on scalars.
      start: the initial state.
      inputs: one input per link.

    Returns:
      The K states after each link.

    Examples:
      >>> import jax.numpy as jnp
      >>> running(lambda s, x: s * x, jnp.float32(1), [jnp.float32(2)] * 3)
      [Array(2., dtype=float32), Array(4., dtype=float32), Array(8., dtype=float32)]
    """
    states, state = [], start
    for x in inputs:
        state = computed_once(step(state, x))
        states.append(state)
    return states


# XLA:CPU sums arrays of at least this many elements with a YNNPACK kernel
# (jax 0.10.2: 4,095 elements take a reduce, 4,096 a "ynn_fusion").
YNN_SUM_MIN_SIZE = 4096


def private_copy(x: jax.Array, anchor: jax.Array, index: int | None) -> jax.Array:
    """Returns ``x`` (a scalar) as copy number ``index``, which XLA keeps apart.

    Copies with different ``index`` are equal bit for bit, but XLA neither
    merges them (common-subexpression elimination) nor folds them into
    constants. Give each consumer of an array expression its own copy of the
    expression's scalar operands; this works around three XLA:CPU behaviours:

    - Its fusion never copies an expensive element-wise producer (a divide, a
      square root) into several consumers, and it does not fuse loops with
      several outputs. An array expression read by two loops (Adam's
      direction ``m / (sqrt(v) + eps)``, read by the path and by the
      parameter step) is therefore written to a fresh temporary buffer on
      every step and read back: more traffic, and a page fault per 1,000
      parameters. With a copy of a scalar in one of them, the expressions
      differ, and each loop recomputes the value from the stored inputs.
    - Its YNNPACK sums ("ynn_fusion" in the compiled HLO, the multi-threaded
      kernels that ``jnp.sum`` of :data:`YNN_SUM_MIN_SIZE` elements or more
      becomes) take in a scalar's ``broadcast`` only if nothing else reads
      it. CSE merges the broadcasts of one scalar (or constant) to one shape,
      so a scalar read by a sum and a loop, or by the sums of two leaves of
      one shape (the layers of a model; see :func:`sum_copies`), is written
      out as a full array (``0.8 * p`` as a product array) that the kernels
      read.
    - Constant folding would merge copies of a constant again: the copy is
      ``x / 1`` with the 1 computed as ``b // b`` from ``b = (anchor + index)
      | 1``, a run-time value (as in :func:`computed_once`). Exact for every
      value.

    Each copy costs a scalar kernel, about 13 ms of compile time (XLA:CPU
    compiles every small fusion separately): use as few as it takes.

    Measured gain (interleaved in one process, 2 shared cores, jax 0.10.2;
    the transformer trees of ``garo-optax bench --speed``; step time over
    ``optax.adam``'s): ``adam_clara_smoothed`` without any copy 4.5x at 10M
    and 4.0x at 100M, with them 2.1x and 1.9x (Adam's direction fused into
    it: its loops and its path norms); the copies of further leaves of one
    shape alone (:func:`sum_copies`) at 100M: ``adam_clara`` 2.44x -> 2.09x,
    ``adam_clara_smoothed`` 2.98x -> 2.23x (at 10M within the noise).
    AutoSGM: see :mod:`garo_optax._src.autosgm`. How to check it still pays:
    make this ``return x`` and look, in the compiled step of those
    optimizers on the 10M tree (``garo_optax._app.step_time.compile_step``),
    for loop fusions whose array output another fusion reads
    (``wrapped_broadcast``, a divide of Adam's direction); then time both
    with ``garo-optax bench --speed --sizes 10M 100M``.

    Args:
      x: a real or complex scalar (any shape works).
      anchor: an integer scalar computed at run time (a step count).
      index: which copy (any Python int); ``None`` returns ``x`` itself.

    Returns:
      ``x``'s value, as a new array.

    Examples:
      >>> import jax.numpy as jnp
      >>> private_copy(jnp.float32(-0.0), jnp.int32(3), 1)
      Array(-0., dtype=float32)
    """
    if index is None:
        return x
    x = jnp.asarray(x)
    bits = (anchor + index) | 1  # An integer anchor: never 0 (it may wrap).
    return _divided(x, jax.lax.div(bits, bits))


def sum_copies(leaves: Sequence[jax.Array]) -> list[int | None]:
    """Which :func:`private_copy` of a shared scalar each leaf's sum reads.

    The sums of two leaves of one shape share the broadcasts of their
    scalars, which XLA:CPU's YNNPACK sums then read as arrays (see
    :func:`private_copy`). Each further leaf of a shape summed that way gets
    its own copy, numbered from 1; the first leaf of each shape and the
    leaves summed another way (fewer than :data:`YNN_SUM_MIN_SIZE` elements)
    read the scalar itself (``None``), so that trees of many small leaves
    pay no compile time for copies.

    Args:
      leaves: the arrays (or shape-dtype structs) summed, one per leaf.

    Returns:
      One entry per leaf: ``None`` or a copy number >= 1.

    Examples:
      >>> import jax.numpy as jnp
      >>> sum_copies([jnp.zeros((64, 64)), jnp.zeros(10), jnp.zeros((64, 64))])
      [None, None, 1]
    """
    seen: dict[tuple, int] = {}
    copies = []
    for leaf in leaves:
        if leaf.size < YNN_SUM_MIN_SIZE:
            copies.append(None)
            continue
        rank = seen.get(leaf.shape, 0)
        seen[leaf.shape] = rank + 1
        copies.append(rank or None)
    return copies


def _divided(x: jax.Array, one: jax.Array) -> jax.Array:
    # x / 1 for real and complex x, exact (a complex divide by 1 + 0j is not).
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return jax.lax.complex(_divided(jnp.real(x), one), _divided(jnp.imag(x), one))
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x / one.astype(x.dtype)
    return jax.lax.div(x, one.astype(x.dtype))


def reused_buffer(old: jax.Array, new: jax.Array, count: jax.Array) -> jax.Array:
    """Returns ``new``, read together with ``old``, the state buffer it replaces.

    Works around ``jax.jit`` leaving out of the compiled program every argument
    it does not read (``keep_unused=False``), donated or not. A state field
    whose new value does not depend on its old one (AutoSGM's ``lr`` vector and
    ``corr_clip`` terms) is then no input of the step: its donated buffer is
    neither consumed (the caller's array stays alive) nor reused, and XLA:CPU
    writes the new value into a fresh allocation every step, a page fault per
    4 KiB. A select on a condition that is never true (``count < 0`` for a
    count from ``optax.safe_increment``, which saturates) makes the old buffer
    an input that the output aliases; the select fuses into the loop that
    writes ``new``. Exact: the value is ``new``.

    Measured gain (AutoSGM ``numerator="markov"``, whose ``corr_clip`` is as
    large as the parameters; interleaved in one process): 10M parameters
    30 -> 38 ms a step without it, 100M 374 -> 546 ms (0.6 page faults per
    1,000 parameters a step, none with it). For the small ``lr`` vector it
    gains no time but keeps donation whole: ``test_donate_argnums`` in
    ``tests/test_optax_conformance.py`` fails without it.

    How to check it still pays: return ``new``; if ``test_donate_argnums``
    still passes and ``garo-optax bench --speed --sizes 10M 100M --optimizers
    autosgm_markov_rc`` shows the same step time (and no page faults in its
    ``speed.json``), jit keeps unused donated inputs and the helper can go.

    Args:
      old: the state buffer that ``new`` replaces (same shape and dtype).
      new: the new value.
      count: an integer step count that is never negative.

    Returns:
      ``new``.

    Examples:
      >>> import jax.numpy as jnp
      >>> reused_buffer(jnp.zeros(2), jnp.ones(2), jnp.int32(1))
      Array([1., 1.], dtype=float32)
    """
    return jnp.where(count < 0, old, new)


MASKED_READ_LIMIT = 1024
"""The longest vector :func:`vector_entries` reads through masks."""

_UNSPLIT_REDUCTION = 32
"""The longest reduction XLA:CPU emits as one kernel (longer ones it splits)."""


def vector_entries(vector: jax.Array) -> list[jax.Array]:
    """The entries of a real vector as scalars, read without a ``slice``.

    Works around XLA:CPU's compile time for slices: every fusion that holds a
    ``slice`` (``vector[k]``, ``jnp.split``, a ``gather`` or ``dynamic-slice``
    of one entry) is compiled through its slow fusion-emitter path, about
    30 ms each against 1-2 ms for an element-wise loop, and a per-leaf loop
    that reads ``vector[k]`` holds one. Entry k is instead the ``max`` of the
    vector with every other entry masked to ``-inf`` by a constant one-hot
    mask: a select and a small reduction, both on the fast path. Exact for
    NaN, infinities and -0; a subnormal entry reads as 0, as it does in any
    XLA:CPU arithmetic (which flushes subnormals).

    XLA:CPU splits a reduction of more than 32 elements into three kernels (the
    masked copy, a ``reduce-window``, a ``reduce``), so a longer vector is cut
    into blocks of 32 (``-inf`` padded): each block is read once by a masked
    ``max`` over the block index, each entry by a masked ``max`` over its
    block, one kernel each. Above ``MASKED_READ_LIMIT`` entries (the masks'
    work grows as ``n**2``) it is plain indexing: compile time as with slices,
    memory and work linear.

    Measured (jax 0.10.2, XLA:CPU, 2 shared cores): 52 loops of 1,000
    elements, each scaled by one entry of a 52-vector: 1.6 s to compile with
    ``vector[k]``, 0.10 s with masks (0.04 s for the loops alone); 260
    vectors of 1,000 elements each scaled by one entry of the vector of their
    norms, and a second loop each: 1.2-1.3 s with whole-vector masks, 1.05 s
    with blocks (``optax.adam`` of the same tree 0.85-0.9 s). Used by
    AutoSGM's numerators, CLARA's norms and per-tensor GARO.

    How to check it still pays: return ``[vector[k] for k in range(n)]`` and
    compare ``garo-optax bench --speed --compile-leaves 52 260`` for
    ``autosgm_markov_rc`` and ``adam_clara``.

    Args:
      vector: a real vector (shape ``(n,)``).

    Returns:
      The ``n`` entries, scalars of ``vector``'s dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> vector_entries(jnp.array([1.5, -0.0, jnp.nan]))
      [Array(1.5, dtype=float32), Array(-0., dtype=float32), Array(nan, dtype=float32)]
    """
    (n,) = vector.shape
    if n > MASKED_READ_LIMIT:
        return [vector[k] for k in range(n)]
    low = jnp.array(-jnp.inf, vector.dtype)
    width = _UNSPLIT_REDUCTION
    if n <= width:
        return [jnp.max(jnp.where(np.arange(n) == k, vector, low)) for k in range(n)]
    num_blocks = -(-n // width)
    blocks = jnp.pad(vector, (0, num_blocks * width - n), constant_values=low)
    blocks = blocks.reshape(num_blocks, width)
    rows = np.arange(num_blocks)[:, None]
    block = [
        jnp.max(jnp.where(rows == b, blocks, low), axis=0) for b in range(num_blocks)
    ]
    lanes = np.arange(width)
    return [
        jnp.max(jnp.where(lanes == k % width, block[k // width], low)) for k in range(n)
    ]


def split_along(x: jax.Array, parts: int, axis: int = -1) -> list[jax.Array]:
    """``x`` cut into ``parts`` equal pieces along ``axis``, without a ``slice``.

    The same XLA:CPU behaviour as :func:`vector_entries` (a fusion holding a
    slice compiles on the slow path, ~30 ms each): piece k is the ``max`` over
    a new axis of ``parts`` pieces with all but the k-th masked to ``-inf``.
    Exact as :func:`vector_entries` is. With ``parts == x.shape[axis]`` the
    pieces are the entries along ``axis`` (that axis removed); otherwise each
    piece keeps ``x.shape[axis] // parts`` entries along it.

    Measured (jax 0.10.2, XLA:CPU, 2 busy cores, two rounds in one process):
    GARO's controller read its GRU gates (``jnp.split``), its head outputs and
    its statistics through 10 slice fusions; ``garo(pretrained())`` at 52
    leaves of 1,000 elements compiled in 2.56 / 2.08 s with them and 1.96 /
    1.76 s without (``optax.adam`` 1.05 / 0.80 s): 2.5x adam became 2.0x.

    How to check it still pays: replace the body by ``jnp.split`` /
    indexing and compare ``garo-optax bench --speed --compile-leaves 52`` for
    ``garo_pretrained``.

    Args:
      x: a real array.
      parts: how many pieces (divides ``x.shape[axis]``).
      axis: the axis to cut.

    Returns:
      The ``parts`` pieces, in order.

    Examples:
      >>> import jax.numpy as jnp
      >>> split_along(jnp.arange(4.0), 2)
      [Array([0., 1.], dtype=float32), Array([2., 3.], dtype=float32)]
      >>> split_along(jnp.array([[1.0, 2.0], [3.0, 4.0]]), 2)
      [Array([1., 3.], dtype=float32), Array([2., 4.], dtype=float32)]
    """
    x = jnp.moveaxis(x, axis, -1)
    size = x.shape[-1]
    if size % parts:
        raise ValueError(f"parts={parts} must divide the axis of {size} entries")
    if parts > MASKED_READ_LIMIT:
        return list(jnp.moveaxis(p, -1, axis) for p in jnp.split(x, parts, -1))
    pieces = x.reshape(*x.shape[:-1], parts, size // parts)
    low = jnp.array(-jnp.inf, x.dtype)
    out = []
    for k in range(parts):
        mask = (np.arange(parts) == k)[:, None]
        piece = jnp.max(jnp.where(mask, pieces, low), axis=-2)
        if parts == size:  # entries: the cut axis goes away
            out.append(jnp.squeeze(piece, -1))
        else:
            out.append(jnp.moveaxis(piece, -1, axis))
    return out


def _explicitly_sharded(x: jax.Array) -> bool:
    # An array whose type names a mesh axis (explicit sharding) must not be
    # raveled into a stack with other leaves.
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return spec is not None and any(axis is not None for axis in spec)


def small_leaf_groups(columns: Sequence[Sequence[jax.Array]]) -> list[list[int]]:
    """Indices of the leaves summed without a YNNPACK kernel, grouped.

    Leaf ``k``'s arrays are ``[column[k] for column in columns]``. A leaf of
    fewer than :data:`YNN_SUM_MIN_SIZE` elements (and more than 0) whose
    arrays are not explicitly sharded joins the group of leaves with its
    size and dtypes; groups of one are left out. See :func:`leaf_sums`.

    Examples:
      >>> import jax.numpy as jnp
      >>> small_leaf_groups([[jnp.ones(3), jnp.ones(5000), jnp.ones(3)]])
      [[0, 2]]
    """
    groups: dict = {}
    for k, arrays in enumerate(zip(*columns)):
        size = arrays[0].size
        if 0 < size < YNN_SUM_MIN_SIZE and not any(map(_explicitly_sharded, arrays)):
            key = (size, *(jnp.dtype(x.dtype) for x in arrays))
            groups.setdefault(key, []).append(k)
    return [group for group in groups.values() if len(group) > 1]


class LeafSums(NamedTuple):
    """Per-leaf sums (of :func:`leaf_sums`): small leaves' in vectors.

    ``vectors[i]`` holds the sums of the leaves ``groups[i]``, in order;
    ``scalars[k]`` is the sum of every other leaf ``k`` (``None`` for a
    grouped leaf).
    """

    groups: tuple[tuple[int, ...], ...]
    vectors: tuple[jax.Array, ...]
    scalars: tuple[jax.Array | None, ...]

    def map(self, f: Callable[[jax.Array], jax.Array]) -> "LeafSums":
        """``f`` (element-wise) of every sum: once per vector, not per leaf."""
        return LeafSums(
            self.groups,
            tuple(f(v) for v in self.vectors),
            tuple(None if s is None else f(s) for s in self.scalars),
        )

    def total(self, dtype) -> jax.Array:
        """The sum over leaves, computed once (:func:`sum_once`)."""
        parts = [jnp.sum(v) for v in self.vectors]
        return sum_once(parts + [s for s in self.scalars if s is not None], dtype)

    def entries(self) -> list[jax.Array]:
        """One scalar per leaf, read from the vectors by :func:`vector_entries`."""
        sums = list(self.scalars)
        for group, vector in zip(self.groups, self.vectors):
            for k, entry in zip(group, vector_entries(vector)):
                sums[k] = entry
        return sums


def leaf_sums(
    terms: Sequence[Callable[..., jax.Array]], *columns: Sequence[jax.Array]
) -> LeafSums:
    """Per leaf ``k``, ``jnp.sum(terms[k](*arrays))`` of its ``arrays`` (leaf
    ``k`` of each column); small leaves summed as the rows of one matrix.

    Works around XLA:CPU's compile time for many small reductions: each sum
    of a leaf under :data:`YNN_SUM_MIN_SIZE` elements compiles to its own
    kernels (the terms, a ``reduce-window`` that splits the sum and a
    ``reduce``), and the per-leaf scalar math after it to one more. The small
    leaves of one size and dtype (:func:`small_leaf_groups`) are instead
    stacked, their terms computed on the stacked rows (``terms`` of the
    group's first leaf: the leaves of a group must share one element-wise
    function) and summed along the rows, one reduction per group;
    :meth:`LeafSums.map` then runs the per-leaf scalar math on the vector of
    sums, and :meth:`LeafSums.entries` reads the results without a slice.
    Larger leaves keep their own (multi-threaded) sum. The stack copies the
    small inputs: negligible traffic under 4,096 elements a leaf. A row is
    summed in another order than a 1-D reduction: results may differ in the
    last bits.

    Measured gain (``garo-optax bench --speed --compile-leaves 52 260 1000``,
    2 shared cores, the previous version in the same conditions): compile
    time over ``optax.adam``'s, ``clara_sgd`` 3.1x/2.1x/3.3x -> 2.3x/1.6x/1.6x,
    ``adam_clara`` 4.7x/5.1x/6.4x -> 3.6x/4.5x/3.9x (34 s -> 18 s at 1,000
    leaves); fusions per leaf at 52 leaves 9 -> 3.3 and 11 -> 5.5; step time
    on the 10M tree unchanged (interleaved: 2.09x -> 2.14x and 0.89x -> 0.87x
    ``optax.adam``'s). How to check it still pays: make
    :func:`small_leaf_groups` return ``[]`` and compare the same command.

    Args:
      terms: one element-wise function per leaf, of the leaf's arrays.
      *columns: sequences of arrays, one per leaf each (same shapes per leaf).

    Returns:
      A :class:`LeafSums`.

    Examples:
      >>> import jax.numpy as jnp
      >>> sums = leaf_sums([jnp.square] * 3, [jnp.ones(3), jnp.ones(3), jnp.ones(2)])
      >>> [float(s) for s in sums.entries()]
      [3.0, 3.0, 2.0]
    """
    groups = tuple(tuple(g) for g in small_leaf_groups(columns))
    # Behind computed_once: the simplifier would else turn a total over the
    # rows back into one reduction per leaf (reduce of a concatenation).
    vectors = tuple(
        computed_once(jnp.sum(terms[group[0]](*_stacked(columns, group)), axis=1))
        for group in groups
    )
    grouped = {k for group in groups for k in group}
    scalars = tuple(
        None if k in grouped else jnp.sum(term(*(c[k] for c in columns)))
        for k, term in enumerate(terms)
    )
    return LeafSums(groups, vectors, scalars)


def _stacked(columns, group) -> list[jax.Array]:
    # Each column's leaves of `group`, raveled, as the rows of one matrix.
    return [jnp.stack([column[k].ravel() for k in group]) for column in columns]


def leaf_vector(sums: LeafSums, leaves: Sequence[int]) -> jax.Array:
    """The sums of ``leaves`` (indices, in that order) as one vector.

    For per-leaf scalar math that runs in leaf order (a recurrence, see
    :func:`running_on_vector`): the vectors of the groups and the other
    leaves' scalars are concatenated, and reordered by one gather when the
    groups do not already hold the leaves in order. Works around the same
    XLA:CPU behaviours as :func:`leaf_sums` and :func:`vector_entries`: no
    per-leaf slice, one kernel for the reordering (a constant-index
    ``gather``, on the slow emitter path once) instead of one per leaf.
    With :func:`running_on_vector`, it lets the seed variants of
    Adam-CLARA run their chain of rates on one vector (gain measured there).

    Args:
      sums: a :class:`LeafSums`.
      leaves: leaf indices, each grouped or with a scalar in ``sums``.

    Returns:
      A vector of ``len(leaves)`` entries.

    Examples:
      >>> import jax.numpy as jnp
      >>> sums = leaf_sums([jnp.square] * 3, [jnp.ones(3), jnp.ones(2), jnp.ones(3)])
      >>> leaf_vector(sums, [0, 1, 2])
      Array([3., 2., 3.], dtype=float32)
    """
    order = [k for group in sums.groups for k in group]
    singles = [k for k, s in enumerate(sums.scalars) if s is not None]
    parts = list(sums.vectors)
    if singles:
        parts.append(jnp.stack([sums.scalars[k] for k in singles]))
    if not parts:
        return jnp.zeros([0], jnp.float32)
    vector = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
    where = {k: i for i, k in enumerate(order + singles)}
    picks = [where[k] for k in leaves]
    if picks == list(range(vector.shape[0])):
        return vector
    return vector[np.asarray(picks, np.int32)]


def running_on_vector(
    step: Callable[[Carry, jax.Array], Carry], start: Carry, inputs: jax.Array
) -> tuple[jax.Array, Carry]:
    """:func:`running` over the entries of a vector: ``([s_1, ..., s_K], s_K)``.

    The same recurrence ``s_k = step(s_{k-1}, inputs[k-1])``, as one
    ``lax.scan`` whose states come out as a vector (read them with
    :func:`vector_entries`, without slices). Works around the compile time of
    :func:`running`'s chain: XLA:CPU compiles each link there as its own
    scalar kernel (every state is a :func:`computed_once` division), one per
    leaf; here the loop is one ``while`` whose body is compiled once (about
    50 ms), and its output is a buffer that XLA cannot copy into the readers.
    Each link computes exactly what :func:`running`'s does, in order.

    Measured (jax 0.10.2, XLA:CPU, 2 busy cores; compile seconds of the step
    on 1,000-element leaves, interleaved in one process with the chain of
    :func:`running` over :func:`vector_entries` of the same vector):
    ``adam_clara_local`` at 52 leaves 0.53-1.02 s (median 0.71) against
    0.60-0.99 s (median 0.90), ``optax.adam`` 0.25-0.36 s; at 260 leaves
    3.7 s against 4.2-5.1 s, ``adam_clara_smoothed`` 3.6-3.7 s against
    4.2-6.4 s (``optax.adam`` 1.1-1.3 s). 52 scalar kernels fewer at 52
    leaves (4,456 HLO instructions against 5,427). How to check it still
    pays: that swap, timed alternately in one process, or ``garo-optax bench
    --speed --compile-leaves 52 260 --optimizers adam adam_clara_local``.

    Args:
      step: ``(state, input) -> state`` on scalars.
      start: the initial state (a scalar).
      inputs: a vector, one input per link.

    Returns:
      The vector of the K states, and the last state (``start`` for K = 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> running_on_vector(lambda s, x: s * x, jnp.float32(1), jnp.full(3, 2.0))
      (Array([2., 4., 8.], dtype=float32), Array(8., dtype=float32))
    """

    def link(state, x):
        state = step(state, x)
        return state, state

    last, states = jax.lax.scan(link, start, inputs)
    return states, last
