"""Figure and table builders of the KV-cache lesson: data in the traces, titles on every axis."""
import math

import pytest

from quantlab.lessons import formats as formats_lesson
from quantlab.lessons import kv_cache
from quantlab.lessons.formats import GIB
from quantlab.viz import kv_cache as viz_kv
from tests.viz import assert_titled


def _plan() -> kv_cache.MemoryPlan:
    gb = formats_lesson.GB
    return kv_cache.MemoryPlan(tokens=(1, 2), weights=10 * gb, kv={"16-bit": (gb, 2 * gb), "8-bit": (0, gb)},
                              fits={"16-bit": {24: 0, 48: 1000, 80: 5000}}, max_position=4096, unit=gb)


def test_memory_chart_weights_plus_cache_and_card_lines():
    fig = viz_kv.memory_chart(_plan(), "GB", "llama, batch 1")
    assert_titled(fig)
    assert [t.name for t in fig.data[:2]] == ["16-bit", "8-bit"]
    assert list(fig.data[0].y) == pytest.approx([11.0, 12.0])
    assert list(fig.data[1].x) == [1, 2]
    # Card lines are traces (an hline's annotation would sit at 10^y on the log axis).
    cards = fig.data[2:]
    assert [t.y[0] for t in cards] == list(kv_cache.GPU_MEMORY_GB) and not fig.layout.shapes
    assert [t.text[0] for t in cards] == [f"{gb} GB card" for gb in kv_cache.GPU_MEMORY_GB]
    assert "(GB, log scale)" in fig.layout.yaxis.title.text


def test_memory_chart_lines_stay_apart_at_70b_and_batch_64():
    """Issue 12: on linear axes the card lines and the three cache lines collapsed at 70B × batch 64."""
    plan = kv_cache.memory_plan("llama-3.1-70b", "bf16", 64, GIB)
    fig = viz_kv.memory_chart(plan, "GiB", "70B, batch 64")
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    lo, hi = fig.layout.yaxis.range  # log10 units
    cards = [math.log10(gb) for gb in kv_cache.GPU_MEMORY_GB]
    assert lo < cards[0] and cards[-1] < hi and max(v for t in fig.data[:3] for v in t.y) < 10**hi
    gaps = [(b - a) / (hi - lo) for a, b in zip(cards, cards[1:])]
    assert min(gaps) > 0.05  # each card line at least 5 % of the plot's height from the next
    # Where each cache width fills the 141 GiB card: 2× apart per halving of bits, visibly apart on log x.
    full = [plan.fits[label][141] for label in plan.kv]
    assert full == sorted(full) and 0 < full[0]
    x_span = math.log10(plan.tokens[-1]) - math.log10(plan.tokens[0])
    assert min(math.log10(b / a) for a, b in zip(full, full[1:])) / x_span > 0.05
    assert all(t.ticktext for t in (fig.layout.xaxis, fig.layout.yaxis))


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
    assert_titled(fig)
    assert [t.name for t in fig.data] == ["only K quantized", "only V quantized", "both"]
    assert list(fig.data[0].x) == ["INT8 per-tensor", "INT4 per-token"]
    assert list(fig.data[1].y) == [29.0, 11.0]


def test_channel_chart_keys_and_values():
    fig = viz_kv.channel_chart([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], layer=2, head=5)
    assert_titled(fig)
    assert "layer 2 head 5" in fig.layout.title.text
    assert [t.name for t in fig.data] == ["keys", "values"]
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.data[1].y) == [4.0, 5.0, 6.0]


def test_memory_chart_of_a_real_plan_carries_its_totals():
    plan = kv_cache.memory_plan("llama-3.1-8b", "bf16", 1, 10**9, points=5)
    fig = viz_kv.memory_chart(plan, "GB", "Llama-3.1-8B")
    assert_titled(fig)
    assert [t.name for t in fig.data[:len(plan.kv)]] == list(plan.kv)
    for trace, label in zip(fig.data, plan.kv):
        assert list(trace.x) == list(plan.tokens)
        assert list(trace.y) == pytest.approx([(plan.weights + b) / 1e9 for b in plan.kv[label]])
        assert trace.y[0] == pytest.approx(plan.weights / 1e9, rel=1e-4)  # one token: almost only weights
    rows = viz_kv.fit_table(plan, "GB")
    assert [r["KV cache"] for r in rows] == list(plan.fits)
    for row, by_gpu in zip(rows, plan.fits.values()):
        assert set(row) == {"KV cache"} | {f"{gb} GB" for gb in kv_cache.GPU_MEMORY_GB}
        for gb, tokens in by_gpu.items():
            cell = row[f"{gb} GB"]
            assert cell == (f"all {plan.max_position:,}" if tokens >= plan.max_position else f"{tokens:,}")


def test_fit_table_in_gib_names_its_columns_in_gib():
    rows = viz_kv.fit_table(_plan(), "GiB")
    assert list(rows[0]) == ["KV cache", "24 GiB", "48 GiB", "80 GiB"]
