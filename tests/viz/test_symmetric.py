"""Figures of the Symmetric lesson: the grids over the histogram, SQNR against bits."""
import pytest
import torch

from quantlab.lessons import symmetric
from quantlab.viz import symmetric as viz_symmetric
from tests.viz import assert_titled, real_x


@pytest.fixture(scope="module")
def cmp():
    # A lopsided range, [-0.5, 1]: the two modes fit different grids to it.
    return symmetric.compare_modes(torch.linspace(-0.5, 1.0, 301).reshape(1, -1), 3, bins=30)


def _grid_traces(fig):
    return {t.name: t for t in fig.data if t.type == "scatter"}


def test_grid_overlay_histogram_and_both_grids(cmp):
    fig = viz_symmetric.grid_overlay(cmp, show_sym=True, show_asym=True, log_y=False)
    assert_titled(fig)
    bars = fig.data[0]
    assert bars.type == "bar" and bars.name == "values of the tensor"
    assert list(bars.x) == pytest.approx(cmp.hist.centers.tolist())
    assert list(bars.y) == cmp.hist.counts.tolist() and sum(bars.y) == 301
    grids = _grid_traces(fig)
    assert list(grids) == ["symmetric grid (8 levels)", "asymmetric grid (8 levels)"]
    for trace, mode in zip(grids.values(), (cmp.symmetric, cmp.asymmetric)):
        # One vertical segment per level: x, x, gap.
        assert real_x(trace) == pytest.approx([v for v in mode.levels.tolist() for _ in range(2)])
        top = cmp.hist.counts.max() * 1.08
        assert [y for y in trace.y if y is not None] == pytest.approx([0.0, top] * len(mode.levels))
    # The ranges each grid was fitted to, shaded; a dotted line at real 0.
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(r.x0, r.x1) for r in rects] == [(-1.0, 1.0), (-0.5, 1.0)]
    assert [s.x0 for s in fig.layout.shapes if s.type == "line"] == [0]
    texts = [a.text for a in fig.layout.annotations]
    assert "symmetric range [-1, 1]" in texts and "asymmetric range [-0.5, 1]" in texts
    assert fig.layout.yaxis.type in (None, "linear")


def test_range_labels_sit_on_separate_rows_even_when_the_ranges_share_an_end():
    one_sided = symmetric.compare_modes(torch.linspace(0.0, 1.0, 101).reshape(1, -1), 4, bins=10)
    fig = viz_symmetric.grid_overlay(one_sided, show_sym=True, show_asym=True, log_y=False)
    labels = [a for a in fig.layout.annotations if "range" in a.text]
    assert len(labels) == 2 and len({a.y for a in labels}) == 2  # same x is fine, never the same row


@pytest.mark.parametrize(("show_sym", "show_asym", "names"), [
    (True, False, ["symmetric grid (8 levels)"]),
    (False, True, ["asymmetric grid (8 levels)"]),
    (False, False, []),
])
def test_grid_overlay_switches(cmp, show_sym, show_asym, names):
    fig = viz_symmetric.grid_overlay(cmp, show_sym=show_sym, show_asym=show_asym, log_y=False)
    assert_titled(fig)
    assert list(_grid_traces(fig)) == names
    assert len([s for s in fig.layout.shapes if s.type == "rect"]) == len(names)
    assert fig.data[0].type == "bar"


def test_grid_overlay_log_axis(cmp):
    fig = viz_symmetric.grid_overlay(cmp, show_sym=True, show_asym=False, log_y=True)
    assert_titled(fig)
    assert fig.layout.yaxis.type == "log" and "(log)" in fig.layout.yaxis.title.text
    assert fig.layout.yaxis.dtick == 1  # decades only, never "2 5" minor labels
    # On a log axis the grid lines run from just below one count to well above the tallest bar.
    ys = [y for y in fig.data[1].y if y is not None]
    assert set(ys) == {0.8, float(cmp.hist.counts.max()) * 3}


def test_sqnr_vs_bits_one_line_per_mode_and_the_current_width():
    data = {"bits": [2, 3, 4], "symmetric": [1.0, 7.0, 13.0], "asymmetric": [2.0, 8.5, 14.0]}
    fig = viz_symmetric.sqnr_vs_bits(data, current_bits=3)
    assert_titled(fig)
    assert [t.name for t in fig.data] == ["symmetric", "asymmetric"]
    assert list(fig.data[0].x) == [2, 3, 4] and list(fig.data[0].y) == [1.0, 7.0, 13.0]
    assert list(fig.data[1].y) == [2.0, 8.5, 14.0]
    assert [s.x0 for s in fig.layout.shapes] == [3]
    assert fig.layout.xaxis.dtick == 1
    assert "SQNR" in fig.layout.yaxis.title.text and "bits" in fig.layout.xaxis.title.text


def test_sqnr_vs_bits_from_the_lesson():
    x = torch.linspace(0.0, 1.0, 1001).reshape(1, -1)
    data = symmetric.sqnr_by_bits(x, bits=range(2, 5))
    fig = viz_symmetric.sqnr_vs_bits(data, current_bits=4)
    assert list(fig.data[0].y) == data["symmetric"] and list(fig.data[1].y) == data["asymmetric"]


def test_fine_grids_are_a_strip_above_the_bars_not_a_wall_over_them():
    fine = symmetric.compare_modes(torch.linspace(-0.5, 1.0, 3001).reshape(1, -1), 8, bins=30)
    for log_y in (False, True):
        fig = viz_symmetric.grid_overlay(fine, show_sym=True, show_asym=True, log_y=log_y)
        peak = fine.hist.counts.max()
        bands = [sorted({y for y in t.y if y is not None}) for t in _grid_traces(fig).values()]
        assert all(lo > peak for lo, _ in bands)  # above every bar
        assert bands[0][1] < bands[1][0]  # symmetric strip below the asymmetric one
