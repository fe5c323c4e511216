"""Figure and table builders of the formats lesson: data in the traces, titles on every axis."""
import math

import pytest
import torch

from quantlab.core import formats
from quantlab.lessons import formats as formats_lesson
from quantlab.viz import formats as viz_formats
from tests.viz import assert_titled


def test_level_chart_one_row_per_format_with_its_levels():
    fig = viz_formats.level_chart(False)
    assert_titled(fig)
    assert [t.name for t in fig.data] == [formats.get_format(n).label for n in viz_formats.GRID_FORMATS]
    int4 = fig.data[viz_formats.GRID_FORMATS.index("int4")]
    assert list(int4.x) == pytest.approx([k / 7 for k in range(1, 8)])
    assert set(int4.y) == {"INT4"}
    assert fig.layout.xaxis.type == "linear"
    log = viz_formats.level_chart(True)
    assert log.layout.xaxis.type == "log" and "log scale" in log.layout.xaxis.title.text


def test_precision_chart_relative_step_at_one():
    fig = viz_formats.precision_chart(lo=1.0, hi=1.0, points=1)
    assert_titled(fig)
    assert len(fig.data) == len(formats.FORMATS)
    by_name = {t.name: t for t in fig.data}
    # At |x| = 1 the next value is 1 + 2^-mantissa_bits away.
    for label, mantissa in (("FP16", 10), ("BF16", 7), ("FP8 E4M3", 3)):
        assert list(by_name[label].x) == [1.0]
        assert list(by_name[label].y) == pytest.approx([100 * 2.0**-mantissa])


def test_range_chart_one_labelled_point_per_format():
    fig = viz_formats.range_chart()
    assert_titled(fig)
    assert len(fig.data) == 1
    rows = formats.format_table()
    assert list(fig.data[0].text) == [r["format"] for r in rows]
    assert list(fig.data[0].x) == [r["range (binades)"] for r in rows]
    assert list(fig.data[0].y) == [r["precision at top (bits)"] for r in rows]


def test_duel_chart_bands_in_percent_on_two_panels():
    duel = formats_lesson.FormatDuel(sqnr_db={"INT8": 40.0, "FP8 E4M3": 30.0}, band_edges=(1.0, 10.0, 100.0),
                              band_share=(0.25, 0.75), band_rel_error={"INT8": (0.03, 0.001), "FP8 E4M3": (0.02, 0.02)})
    fig = viz_formats.duel_chart(duel, "The weight")
    assert_titled(fig)  # both panels' axes
    assert fig.layout.title.text == "The weight"
    assert [t.name for t in fig.data] == ["INT8 (40.0 dB)", "FP8 E4M3 (30.0 dB)", "share of values", "crossover"]
    # INT8 loses the first band and wins the second: the crossover is the second band's lower edge,
    # drawn as a trace in data coordinates (a vline annotation would land at 10^x on a log axis).
    cross = fig.data[3]
    assert list(cross.x) == [10.0, 10.0] and cross.xaxis == "x" and "75% of values" in cross.text[1]
    assert list(fig.data[0].x) == pytest.approx([math.sqrt(10), math.sqrt(1000)])  # log-band middles
    assert list(fig.data[0].y) == pytest.approx([3.0, 0.1])
    assert list(fig.data[2].y) == pytest.approx([25.0, 75.0])
    assert fig.layout.yaxis.title.text and fig.layout.yaxis2.title.text == "values (%)"
    assert fig.layout.xaxis2.title.text == "|x| (log scale)"


SUPERSCRIPT_DIGITS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def _tick_value(text: str) -> float:
    """The number a tick label names: "20", "1,000", "10⁵" or "2×10⁻⁷"."""
    text = text.replace(",", "")
    if any(c in text for c in "⁰¹²³⁴⁵⁶⁷⁸⁹"):
        mantissa, _, power = text.rpartition("10")
        return float(mantissa.rstrip("×") or 1) * 10.0 ** int(power.translate(SUPERSCRIPT_DIGITS))
    return float(text)


def _labels_are_their_values(axis) -> None:
    """A labelled tick per value: a log axis must never read "2 5" for 20 and 50."""
    values = [_tick_value(t) for t in axis.ticktext]
    assert len(values) >= 3 and values == pytest.approx(list(axis.tickvals))


def test_log_axes_label_every_tick_with_its_value():
    _labels_are_their_values(viz_formats.range_chart().layout.xaxis)
    precision = viz_formats.precision_chart(points=200)
    _labels_are_their_values(precision.layout.xaxis)
    _labels_are_their_values(precision.layout.yaxis)
    assert viz_formats.tick_text(0.5) == "0.5" and viz_formats.tick_text(2e-7) == "2×10⁻⁷"
    assert viz_formats.log_axis(2.8, 277)["tickvals"][:2] == [2.0, 5.0]  # the 4-bit formats get a tick


def test_format_rows_print_constants_in_full():
    rows = {r["format"]: r for r in viz_formats.format_rows()}
    assert rows["FP32"]["largest"] == "3.4028×10³⁸" and rows["FP16"]["largest"] == "65,504"
    assert rows["FP8 E4M3"]["largest"] == "448" and rows["FP8 E4M3"]["smallest positive"] == "0.0019531"
    assert rows["INT8"]["bias"] == "—" and rows["INT8"]["smallest normal"] == "—"
    assert "None" not in str(list(rows.values()))
    assert "MI300" not in str(rows["FP8 E4M3"]["typical use"])  # MI300 runs only the FNUZ variants


def test_memory_table_7b():
    rows = {r["format"]: r for r in viz_formats.memory_table(7e9)}
    assert set(rows) == {f.label for f in formats.FORMATS.values()}
    assert rows["FP16"]["bits per parameter"] == 16
    assert rows["FP16"]["GB (10⁹ B)"] == pytest.approx(14.0)
    assert rows["FP16"]["GiB (2³⁰ B)"] == pytest.approx(14e9 / 2**30)


def test_block_scale_chart_draws_ideal_nvfp4_and_mxfp4_scales():
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))
    b = formats_lesson.block_scales(w)
    fig = viz_formats.block_scale_chart(b)
    assert_titled(fig)
    assert [len(t.y) for t in fig.data] == [len(b.ideal_nvfp4), len(b.nvfp4), len(b.mxfp4)]
    assert fig.layout.yaxis.type == "log"
