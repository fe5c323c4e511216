"""Figure and table builders of the formats and KV-cache lessons: data in the traces, titles on every axis."""
import math

import plotly.graph_objects as go
import pytest

from quantlab.core import formats
from quantlab.lessons import formats as formats_lesson
from quantlab.lessons import kv_cache
from quantlab.viz import formats as viz_formats
from quantlab.viz import kv_cache as viz_kv


def _titled(fig: go.Figure) -> None:
    assert fig.layout.title.text
    assert fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text


def test_level_chart_one_row_per_format_with_its_levels():
    fig = viz_formats.level_chart(False)
    _titled(fig)
    assert [t.name for t in fig.data] == [formats.get_format(n).label for n in viz_formats.GRID_FORMATS]
    int4 = fig.data[viz_formats.GRID_FORMATS.index("int4")]
    assert list(int4.x) == pytest.approx([k / 7 for k in range(1, 8)])
    assert set(int4.y) == {"INT4"}
    assert fig.layout.xaxis.type == "linear"
    log = viz_formats.level_chart(True)
    assert log.layout.xaxis.type == "log" and "log scale" in log.layout.xaxis.title.text


def test_precision_chart_relative_step_at_one():
    fig = viz_formats.precision_chart(lo=1.0, hi=1.0, points=1)
    _titled(fig)
    assert len(fig.data) == len(formats.FORMATS)
    by_name = {t.name: t for t in fig.data}
    # At |x| = 1 the next value is 1 + 2^-mantissa_bits away.
    for label, mantissa in (("FP16", 10), ("BF16", 7), ("FP8 E4M3", 3)):
        assert list(by_name[label].x) == [1.0]
        assert list(by_name[label].y) == pytest.approx([100 * 2.0**-mantissa])


def test_range_chart_one_labelled_point_per_format():
    fig = viz_formats.range_chart()
    _titled(fig)
    assert len(fig.data) == 1
    rows = formats.format_table()
    assert list(fig.data[0].text) == [r["format"] for r in rows]
    assert list(fig.data[0].x) == [r["range (binades)"] for r in rows]
    assert list(fig.data[0].y) == [r["precision at top (bits)"] for r in rows]


def test_duel_chart_bands_in_percent_on_two_panels():
    duel = formats_lesson.FormatDuel(sqnr_db={"INT8": 40.0, "FP8 E4M3": 30.0}, band_edges=(1.0, 10.0, 100.0),
                              band_share=(0.25, 0.75), band_rel_error={"INT8": (0.01, 0.001), "FP8 E4M3": (0.02, 0.02)})
    fig = viz_formats.duel_chart(duel, "The weight")
    assert fig.layout.title.text == "The weight"
    assert len(fig.data) == 3
    assert [t.name for t in fig.data] == ["INT8 (40.0 dB)", "FP8 E4M3 (30.0 dB)", "share of values"]
    assert list(fig.data[0].x) == pytest.approx([math.sqrt(10), math.sqrt(1000)])  # log-band middles
    assert list(fig.data[0].y) == pytest.approx([1.0, 0.1])
    assert list(fig.data[2].y) == pytest.approx([25.0, 75.0])
    assert fig.layout.yaxis.title.text and fig.layout.yaxis2.title.text == "values (%)"
    assert fig.layout.xaxis2.title.text == "|x| (log scale)"


def test_memory_table_7b():
    rows = {r["format"]: r for r in viz_formats.memory_table(7e9)}
    assert set(rows) == {f.label for f in formats.FORMATS.values()}
    assert rows["FP16"]["bits per parameter"] == 16
    assert rows["FP16"]["GB (10⁹ B)"] == pytest.approx(14.0)
    assert rows["FP16"]["GiB (2³⁰ B)"] == pytest.approx(14e9 / 2**30)


def _plan() -> kv_cache.MemoryPlan:
    gb = formats_lesson.GB
    return kv_cache.MemoryPlan(tokens=(1, 2), weights=10 * gb, kv={"16-bit": (gb, 2 * gb), "8-bit": (0, gb)},
                              fits={"16-bit": {24: 0, 48: 1000, 80: 5000}}, max_position=4096, unit=gb)


def test_memory_chart_weights_plus_cache_and_card_lines():
    fig = viz_kv.memory_chart(_plan(), "GB", "llama, batch 1")
    _titled(fig)
    assert [t.name for t in fig.data] == ["16-bit", "8-bit"]
    assert list(fig.data[0].y) == pytest.approx([11.0, 12.0])
    assert list(fig.data[1].x) == [1, 2]
    assert [s.y0 for s in fig.layout.shapes] == list(kv_cache.GPU_MEMORY_GB)
    assert "(GB)" in fig.layout.yaxis.title.text


def test_fit_table_cells():
    assert viz_kv.fit_table(_plan(), "GiB") == [
        {"KV cache": "16-bit", "24 GiB": "weights don't fit", "48 GiB": "1,000", "80 GiB": "all 4,096"}]


def _errs() -> dict[str, kv_cache.KVError]:
    return {"INT8 per-tensor": kv_cache.KVError(30.0, 31.0, {"k": 40.0, "v": 29.0, "kv": 28.0}, 0.01),
            "INT4 per-token": kv_cache.KVError(12.0, 13.0, {"k": 20.0, "v": 11.0, "kv": 10.0}, 0.2)}


def test_error_table_rows():
    rows = viz_kv.error_table(_errs())
    assert [r["scheme"] for r in rows] == ["INT8 per-tensor", "INT4 per-token"]
    assert rows[1]["output, only K (dB)"] == 20.0 and rows[1]["output, K and V (dB)"] == 10.0
    assert rows[0]["logit RMS change"] == 0.01


def test_sqnr_chart_three_bar_groups():
    fig = viz_kv.sqnr_chart(_errs())
    _titled(fig)
    assert [t.name for t in fig.data] == ["only K quantized", "only V quantized", "both"]
    assert list(fig.data[0].x) == ["INT8 per-tensor", "INT4 per-token"]
    assert list(fig.data[1].y) == [29.0, 11.0]


def test_channel_chart_keys_and_values():
    fig = viz_kv.channel_chart([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], layer=2, head=5)
    _titled(fig)
    assert "layer 2 head 5" in fig.layout.title.text
    assert [t.name for t in fig.data] == ["keys", "values"]
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.data[1].y) == [4.0, 5.0, 6.0]
