"""Text tables and figures of every report (bench, claims, speed, meta-eval, LR finder).

* :func:`format_table`: one plain-text table, the column widths taken from
  the content, every number written by :func:`format_number`, best-marks
  (:class:`Marked`) in a slot of their own so that the values stay aligned;
* :func:`new_figure` and :func:`save_figure`: a bare
  :class:`matplotlib.figure.Figure` in the house style (grid, resolution).
  Never pyplot, never a backend switch: the user's backend and pyplot state
  stay as they are. Matplotlib is imported only when a figure is made.

Private: the program, ``garo_optax.meta`` and :func:`garo_optax.plot_lr_finder`
share it; it is not part of the public API.
"""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

MATPLOTLIB_HINT = (
    'plotting needs matplotlib: pip install "garo_optax[examples]" '
    '(the "bench" and "meta" extras bring it too)'
)
DPI = 110
"""Dots per inch of every saved figure."""
GRID = {"alpha": 0.3}
"""The grid every axes of :func:`new_figure` gets (``Axes.grid`` keywords)."""


class Column(NamedTuple):
    """A column of :func:`format_table`.

    Attributes:
      header: the column's title.
      align: ``">"`` (right: numbers) or ``"<"`` (left: names).
      spec: how a finite float cell is written (see :func:`format_number`): a
        format spec such as ``".2f"``, a function ``float -> str``, or
        ``None`` for three significant digits.
    """

    header: str
    align: str = ">"
    spec: str | Callable[[float], str] | None = None


class Marked(NamedTuple):
    """A cell followed by a mark (the best-mark ``*``; ``""``: none); its column
    keeps a slot as wide as its longest mark in every row."""

    value: Any
    mark: str = "*"


def format_number(x: Any, spec: str | Callable[[float], str] | None = None) -> str:
    """A cell value as the tables write it.

    Args:
      x: an integer (written as it is), a float, ``None`` (``"-"``: missing)
        or a string (unchanged).
      spec: for a finite float: a format spec, a function ``float -> str``,
        or ``None``: three significant digits, in exponent notation below
        1e-3 (0 as ``0``). Non-finite floats are ``nan``, ``inf``, ``-inf``.

    Returns:
      The text.

    >>> [format_number(x) for x in (7, 0.012345, 1234.5, 2.5e-5, -float("inf"))]
    ['7', '0.0123', '1.23e+03', '2.50e-05', '-inf']
    """
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if callable(spec):
        return spec(x)
    if spec is not None:
        return format(x, spec)
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def format_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    *,
    indent: int = 2,
) -> str:
    """A plain-text table; each column as wide as its widest entry.

    Columns are separated by one space; the header and the rows are indented
    by ``indent`` spaces under the title; trailing spaces are dropped.

    Args:
      columns: the :class:`Column` of each position.
      rows: one sequence of cells per row, a cell per column: a string, a
        number or ``None`` (written by :func:`format_number` with the
        column's ``spec``), or a :class:`Marked` one of those.
      title: a first line, or ``None``.
      indent: spaces before the header and each row.

    Returns:
      The table, without a final newline.

    Raises:
      ValueError: a row without one cell per column.

    >>> columns = [Column("optimizer", "<"), Column("loss"), Column("lr", spec=".0e")]
    >>> rows = [["adam", Marked(0.012345), 1e-3], ["sgd", 1.5, None]]
    >>> print(format_table(columns, rows, title="quadratic"))
    quadratic
      optimizer    loss    lr
      adam      0.0123* 1e-03
      sgd          1.5      -
    """
    cells = []
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells for {len(columns)} columns")
        cells.append([_cell(value, c.spec) for value, c in zip(row, columns)])
    marks = [max((len(r[j][1]) for r in cells), default=0) for j in range(len(columns))]
    widths = [
        max([len(c.header)] + [len(r[j][0]) + marks[j] for r in cells])
        for j, c in enumerate(columns)
    ]

    def line(texts):
        return (" " * indent + " ".join(texts)).rstrip()

    lines = [] if title is None else [title]
    lines.append(line(f"{c.header:{c.align}{w}}" for c, w in zip(columns, widths)))
    for r in cells:
        lines.append(
            line(
                f"{text:{c.align}{w - m}}{mark:<{m}}"
                for (text, mark), c, w, m in zip(r, columns, widths, marks)
            )
        )
    return "\n".join(lines)


def _cell(value: Any, spec) -> tuple[str, str]:
    """(text, mark) of one cell."""
    if isinstance(value, Marked):
        return format_number(value.value, spec), value.mark
    return format_number(value, spec), ""


def new_figure(
    figsize: tuple[float, float],
    nrows: int = 1,
    ncols: int = 1,
    *,
    layout: str | None = None,
    **subplots_kwargs,
):
    """A bare figure and its axes in the house style, like ``pyplot.subplots``.

    The figure is a :class:`matplotlib.figure.Figure` that pyplot does not
    know (nothing to close, any backend); every axes gets the :data:`GRID`.

    Args:
      figsize: (width, height) in inches.
      nrows: rows of axes.
      ncols: columns of axes.
      layout: the figure's layout engine (``"tight"``, ``"constrained"`` or
        ``None``).
      **subplots_kwargs: passed to :meth:`matplotlib.figure.Figure.subplots`
        (``squeeze``, ``sharey``, ...).

    Returns:
      ``(figure, axes)``: one ``Axes`` or an array of them, as
      :meth:`~matplotlib.figure.Figure.subplots` returns.

    Raises:
      ImportError: matplotlib is missing (the message names the extra).
    """
    try:
        import matplotlib.figure
    except ImportError as error:
        raise ImportError(MATPLOTLIB_HINT) from error
    fig = matplotlib.figure.Figure(figsize=figsize, layout=layout)
    axes = fig.subplots(nrows, ncols, **subplots_kwargs)
    for ax in fig.axes:
        ax.grid(True, **GRID)
    return fig, axes


def save_figure(fig, path, **savefig_kwargs) -> None:
    """Writes ``fig`` at the house resolution (:data:`DPI`).

    Args:
      fig: a :class:`matplotlib.figure.Figure`.
      path: the file (a PNG unless its suffix or ``format=`` says otherwise).
      **savefig_kwargs: passed to ``fig.savefig`` (``bbox_inches``, ...).
    """
    fig.savefig(path, dpi=DPI, **savefig_kwargs)
