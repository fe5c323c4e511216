"""Figures of the Storage lesson: where a checkpoint's bytes go, and bytes by granularity."""
import pytest

import quantlab as ql
from quantlab.io import models, sizing
from quantlab.lessons import storage
from quantlab.viz import storage as viz_storage
from tests.viz import assert_titled

W4 = ql.QuantSpec(num_bits=4, strategy="group", group_size=128)


@pytest.fixture(scope="module")
def mistral():
    return sizing.model_size("mistral-7b", W4)


def test_bytes_breakdown_one_stacked_bar_per_kind(mistral):
    fig = viz_storage.bytes_breakdown(mistral)
    assert_titled(fig)
    parts = mistral.by_kind()
    assert [t.name for t in fig.data] == list(parts) + ["safetensors header"]
    for trace, n in zip(fig.data, [*parts.values(), mistral.header_bytes]):
        assert list(trace.x) == [n / 1e6] and list(trace.y) == ["file"]
        assert trace.orientation == "h"
    assert sum(t.x[0] for t in fig.data) == pytest.approx(mistral.total_bytes / 1e6)
    assert fig.layout.barmode == "stack"
    assert sizing.format_bytes(mistral.total_bytes) in fig.layout.title.text
    assert W4.label in fig.layout.title.text
    assert "MB" in fig.layout.xaxis.title.text


def test_bytes_breakdown_of_the_embedded_model():
    report = sizing.model_size(models.ModelSource.embedded(), W4.with_(symmetric=False))
    fig = viz_storage.bytes_breakdown(report)
    assert_titled(fig)
    names = [t.name for t in fig.data]
    assert {"packed weights", "scales", "zero points", "safetensors header"} <= set(names)
    assert sum(t.x[0] for t in fig.data) == pytest.approx(report.total_bytes / 1e6)


def _rung(label, report):
    return storage.Rung(label, report.spec, report, 0)


def test_size_by_group_stacks_the_quantized_kinds(mistral):
    rungs = [_rung("g32", sizing.model_size("mistral-7b", W4.with_(group_size=32))), _rung("g128", mistral),
             _rung("channel", sizing.model_size("mistral-7b", W4.with_(strategy="channel", group_size=None)))]
    fig = viz_storage.size_by_group(rungs)
    assert_titled(fig)
    # Symmetric INT4: packed codes and scales only (no int8 weights, no zero points, so no empty bars).
    assert [t.name for t in fig.data] == ["packed weights", "scales"]
    for trace in fig.data:
        assert list(trace.x) == ["g32", "g128", "channel"]
        assert list(trace.y) == pytest.approx([r.report.by_kind()[trace.name] / 1e6 for r in rungs])
    packed, scales = fig.data
    assert len(set(packed.y)) == 1  # the codes do not depend on the granularity
    assert scales.y[0] == pytest.approx(4 * scales.y[1]) and scales.y[2] < scales.y[1]
    assert fig.layout.barmode == "stack"


def test_size_by_group_shows_zero_points_and_int8_weights_when_present():
    # With quantized activations compressed-tensors keeps INT8 weights unpacked (int-quantized).
    w8a8 = ql.QuantSpec(num_bits=8, strategy="group", group_size=128, symmetric=False,
                        activations=ql.QuantSpec(num_bits=8, strategy="token", dynamic=True))
    reports = [sizing.model_size("mistral-7b", w8a8), sizing.model_size("mistral-7b", W4.with_(symmetric=False))]
    assert [r.format for r in reports] == ["int-quantized", "pack-quantized"]
    fig = viz_storage.size_by_group([_rung("W8A8 g128", reports[0]), _rung("W4A16 g128", reports[1])])
    assert_titled(fig)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == ["packed weights", "quantized weights", "scales", "zero points"]
    assert list(by_name["quantized weights"].y)[1] == 0 and list(by_name["packed weights"].y)[0] == 0
    assert by_name["quantized weights"].y[0] == pytest.approx(2 * by_name["packed weights"].y[1])
    assert all(y > 0 for y in by_name["zero points"].y)


def test_size_by_group_annotates_g256_on_the_embedded_model_and_keeps_its_fp32_bytes():
    """256 divides only the 1536-wide inputs of MiniLM: 30 of its 36 block Linears stay fp32."""
    ladder = storage.group_ladder(models.ModelSource.embedded(), W4)
    fig = viz_storage.size_by_group(ladder.rungs)
    labels = list(fig.data[0].x)
    assert labels[0] == "channel" and labels[2:] == ["g128", "g64", "g32"]
    assert labels[1] == "g256<br>⚠ 30 of 36 layers stay unquantized"
    kept = {t.name: t for t in fig.data}["Linear layers kept in full precision"]
    heights = [sum(t.y[i] for t in fig.data) for i in range(len(labels))]
    assert heights[1] > heights[2]  # the real g256 file is larger than g128's, and the bar says so
    assert kept.y[1] > 10 * kept.y[2]
