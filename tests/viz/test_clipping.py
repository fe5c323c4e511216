"""Figures of the Clipping lesson: the error curve with observer marks, the clipped histogram and
the calibration bars."""
import math

import numpy as np
import pytest
import torch

from quantlab.core.stats import histogram
from quantlab.lessons.clipping import CalibrationResult, ClipCurve
from quantlab.viz import clipping as viz_clipping
from tests.viz import assert_titled

CURVE = ClipCurve(ratios=np.array([0.25, 0.5, 1.0]), rounding_mse=np.array([1e-4, 4e-4, 1.6e-3]),
                  clipping_mse=np.array([1e-2, 1e-3, 0.0]), clipped_fraction=np.array([0.3, 0.05, 0.0]))


def test_clip_curve_three_errors_then_observer_marks_then_the_slider():
    fig = viz_clipping.clip_curve(CURVE, {"min-max": 1.0, "MSE": 0.5}, current=0.25)
    assert_titled(fig)
    names = [t.name for t in fig.data]
    assert names == ["total error", "rounding error (values inside the range)", "clipping error (saturated values)",
                     "min-max lands at 1.00", "MSE lands at 0.50", "your ratio 0.25"]
    total, rounding, clipping = fig.data[:3]
    for trace in fig.data[:3]:
        assert list(trace.x) == [0.25, 0.5, 1.0]
    assert list(total.y) == pytest.approx([1.01e-2, 1.4e-3, 1.6e-3])
    assert list(rounding.y) == [1e-4, 4e-4, 1.6e-3] and list(clipping.y) == [1e-2, 1e-3, 0.0]
    # Vertical marks span the plotted range: half the smallest positive error to twice the largest.
    span = [0.5e-4, 2 * 1.01e-2]
    for trace, x in zip(fig.data[3:], (1.0, 0.5, 0.25)):
        assert list(trace.x) == [x, x] and list(trace.y) == pytest.approx(span)
    assert fig.layout.yaxis.type == "log"
    assert list(fig.layout.yaxis.range) == pytest.approx([math.log10(span[0]), math.log10(span[1])])


def test_clip_curve_without_marks():
    fig = viz_clipping.clip_curve(CURVE, {}, current=0.5)
    assert_titled(fig)
    assert [t.name for t in fig.data][3:] == ["your ratio 0.50"]
    assert list(fig.data[3].x) == [0.5, 0.5]


def test_clip_curve_with_no_error_at_all_keeps_a_finite_log_range():
    flat = ClipCurve(ratios=np.array([0.5, 1.0]), rounding_mse=np.zeros(2), clipping_mse=np.zeros(2),
                     clipped_fraction=np.zeros(2))
    fig = viz_clipping.clip_curve(flat, {}, current=1.0)
    lo, hi = fig.layout.yaxis.range
    assert math.isfinite(lo) and math.isfinite(hi) and lo < hi


def test_clip_histogram_shades_the_kept_range():
    x = torch.linspace(-2.0, 2.0, 401)
    hist = histogram(x, bins=20)
    fig = viz_clipping.clip_histogram(hist, -1.0, 1.5)
    assert_titled(fig)
    assert len(fig.data) == 1
    assert list(fig.data[0].x) == pytest.approx(hist.centers.tolist())
    assert list(fig.data[0].y) == hist.counts.tolist()
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [(r.x0, r.x1) for r in rects] == [(-1.0, 1.5)]
    assert [ln.x0 for ln in lines] == [-1.0, 1.5]
    assert fig.layout.yaxis.type == "log" and fig.layout.showlegend is False


def _row(kind, sqnr, clipped):
    return CalibrationResult(kind, 0 if kind == "dynamic" else 10, 0.1, sqnr, 1e-4, 1e-5, clipped)


def test_calibration_bars_one_bar_per_source_coloured_by_domain():
    rows = [_row("chat", 30.0, 0.001), _row("code", 20.0, 0.02), _row("dynamic", 40.0, 0.0)]
    fig = viz_clipping.calibration_bars(rows, "chat")
    assert_titled(fig)
    bars = fig.data[0]
    assert list(bars.x) == ["static: chat", "static: code", "dynamic"]
    assert list(bars.y) == [30.0, 20.0, 40.0]
    assert list(bars.text) == ["0.100% saturated", "2.000% saturated", "0.000% saturated"]
    same, other, dynamic = bars.marker.color
    assert len({same, other, dynamic}) == 3  # same domain, another domain and dynamic all differ
    assert list(fig.layout.yaxis.range) == pytest.approx([0, 48.0])
    assert "chat" in fig.layout.title.text
    # Evaluated on code text, the code-calibrated bar takes the same-domain colour instead.
    swapped = viz_clipping.calibration_bars(rows, "code").data[0].marker.color
    assert swapped[1] == same and swapped[0] == other and swapped[2] == dynamic
