"""Figures of the GPTQ lesson: the column view, the calibration bars and the samples curve."""
import numpy as np

from quantlab.lessons.gptq import OTHERS, CalibrationPoint, ColumnErrors
from quantlab.viz import gptq as viz_gptq
from quantlab.viz.style import PALETTE
from tests.viz import assert_titled

COLS = ColumnErrors(order=np.array([2, 0, 1]), energy=np.array([3.0, 2.0, 1.0]),
                    rtn_weight=np.array([1e-3, 1e-3, 1e-3]), gptq_weight=np.array([1e-3, 2e-3, 5e-3]),
                    rtn_output=np.array([0.5, 0.8, 1.0]), gptq_output=np.array([0.4, 0.3, 0.35]))
ROWS = [CalibrationPoint(OTHERS, 40, 3000, 25.7), CalibrationPoint("general", 40, 556, 30.9),
        CalibrationPoint("code", 40, 1183, 22.4), CalibrationPoint("RTN", 0, 0, 21.1)]


def test_column_errors_weight_errors_on_top_and_running_output_error_below():
    fig = viz_gptq.column_errors(COLS)
    assert_titled(fig)
    top, top2, bottom, bottom2 = fig.data
    assert [t.name for t in fig.data] == ["RTN: weight error of the column", "GPTQ: weight error of the column",
                                         "RTN: output error so far", "GPTQ: output error so far"]
    assert list(top.x) == [1, 2, 3] and list(top.customdata) == [2, 0, 1]  # rank, and the real column index
    assert list(top2.y) == [1e-3, 2e-3, 5e-3] and list(bottom2.y) == [0.4, 0.3, 0.35]
    assert top.yaxis == "y" and bottom.yaxis == "y2"
    assert fig.layout.yaxis.type == "log"


def test_calibration_bars_grey_out_the_in_sample_bar_and_end_with_rtn():
    fig = viz_gptq.calibration_bars(ROWS, "general")
    assert_titled(fig)
    bars = fig.data[0]
    assert list(bars.x) == ["GPTQ: the other texts", "GPTQ: general", "GPTQ: code", "RTN (no calibration)"]
    assert list(bars.marker.color) == [viz_gptq.GPTQ_COLOR, PALETTE["muted"], viz_gptq.GPTQ_COLOR,
                                       viz_gptq.RTN_COLOR]
    assert bars.text[1].startswith("same text: in-sample") and bars.text[3] == ""


def test_samples_curve_against_the_rtn_line():
    points = [CalibrationPoint(OTHERS, n, 60 * n, 20 + n / 10) for n in (1, 3, 10, 40)]
    fig = viz_gptq.samples_curve(points, 21.1)
    assert_titled(fig)
    curve, rtn = fig.data
    assert list(curve.x) == [60, 180, 600, 2400] and list(curve.customdata) == [1, 3, 10, 40]
    assert list(rtn.y) == [21.1, 21.1] and list(rtn.x) == [60, 2400]
    assert fig.layout.xaxis.type == "log"
