"""Tests of the reports' table formatter and figure factory.

Imports the private ``garo_optax._src.report`` (shared by the program,
``garo_optax.meta`` and ``plot_lr_finder``; not public API).
"""

import math
import sys

import numpy as np
import pytest

from garo_optax._src import report
from garo_optax._src.report import Column, Marked


@pytest.mark.parametrize(
    "value, spec, text",
    [
        (3, None, "3"),
        (np.int64(12), ".2f", "12"),  # integers ignore the float spec
        (0.0, None, "0"),
        (0.012345, None, "0.0123"),
        (1234.5, None, "1.23e+03"),
        (-2.5e-5, None, "-2.50e-05"),
        (np.float32(0.5), ".2f", "0.50"),
        (123.456, lambda x: f"{x:.1f}!", "123.5!"),
        (math.nan, ".2f", "nan"),
        (math.inf, None, "inf"),
        (-math.inf, lambda x: "never called", "-inf"),
        (None, ".2f", "-"),
        ("own", ".2f", "own"),
    ],
)
def test_format_number(value, spec, text):
    assert report.format_number(value, spec) == text


def test_widths_come_from_the_content_and_align():
    columns = [Column("name", "<"), Column("n"), Column("x", "<", spec=".1f")]
    rows = [["a", 1, 2.0], ["a_long_name", 12345, 0.25]]
    lines = report.format_table(columns, rows, indent=0).splitlines()
    assert lines == [
        "name            n x",
        "a               1 2.0",
        "a_long_name 12345 0.2",
    ]
    # A header wider than the content sets the width.
    wide = report.format_table([Column("a wide header")], [[1]], indent=0)
    assert wide.splitlines() == ["a wide header", "            1"]


def test_title_indent_and_no_trailing_spaces():
    text = report.format_table(
        [Column("name", "<"), Column("note", "<")], [["a", ""]], title="T", indent=3
    )
    assert text.splitlines() == ["T", "   name note", "   a"]
    assert not text.endswith("\n")


def test_marks_keep_the_values_aligned():
    columns = [Column("optimizer", "<"), Column("loss")]
    rows = [["adam", Marked(0.5)], ["sgd", 12.0], ["x", Marked(1.0, "**")]]
    lines = report.format_table(columns, rows, indent=0).splitlines()
    # The mark column is as wide as the longest mark; the values end together.
    assert lines == [
        "optimizer  loss",
        "adam      0.5*",
        "sgd        12",
        "x           1**",
    ]


def test_a_row_of_the_wrong_length_is_an_error():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        report.format_table([Column("a"), Column("b"), Column("c")], [[1, 2]])


def test_new_figure_is_a_bare_figure_in_the_house_style(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig, axes = report.new_figure((3, 2), 2, 3, squeeze=False, sharey="row")
    assert isinstance(fig, Figure) and axes.shape == (2, 3)
    assert fig.canvas.manager is None  # pyplot does not hold it
    assert all(ax.xaxis.get_gridlines()[0].get_visible() for ax in fig.axes)
    fig, ax = report.new_figure((3, 2), layout="tight")
    ax.plot([1, 2], [3, 4])
    path = tmp_path / "f.png"
    report.save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(path).shape[:2] == (2 * report.DPI, 3 * report.DPI)


def test_new_figure_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "garo_optax\[examples\]"'):
        report.new_figure((3, 2))
