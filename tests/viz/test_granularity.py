"""Figures of the Granularity lesson: the error-vs-bits scatter and its Pareto front, the scale
heatmap, the per-channel failure plot and the bits of one packed word."""
import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab.core import packing
from quantlab.lessons import granularity
from quantlab.viz import granularity as viz_granularity
from tests.viz import assert_titled

SYM4 = ql.QuantSpec(num_bits=4)
ASYM4 = SYM4.with_(symmetric=False)
SYM8 = ql.QuantSpec(num_bits=8)
ASYM8 = SYM8.with_(symmetric=False)


def _point(label, spec, bits, weight_db, output_db):
    return granularity.Point(label, spec, bits, bits, weight_db, output_db, 0)


POINTS = [
    _point("g32", SYM4, 5.0, 20.0, 15.0),
    _point("g128", SYM4, 4.25, 18.0, 16.0),
    _point("tensor", SYM4, 4.0, 2.0, 1.0),
    _point("g128", ASYM4, 4.28, 17.5, 16.5),  # costs more than INT4 sym g128 and is worse: dominated
    _point("g32", ASYM4, 5.125, 21.7, 14.0),
    _point("channel", SYM8, 8.08, 42.0, 35.0),
    _point("channel", ASYM8, 8.08, 41.0, 36.0),  # same cost, lower SQNR: dominated
]


def test_pareto_one_trace_per_family_with_its_points():
    fig = viz_granularity.pareto(POINTS, output=False)
    assert_titled(fig)
    assert [t.name for t in fig.data] == ["INT4 sym", "INT4 asym", "INT8 sym", "INT8 asym", "Pareto front"]
    sym4, asym4, sym8, asym8 = fig.data[:4]
    assert list(sym4.x) == [5.0, 4.25, 4.0] and list(sym4.y) == [20.0, 18.0, 2.0]
    assert list(sym4.customdata) == ["g32", "g128", "tensor"]  # every point names itself on hover
    # Printed labels: front points only (INT4 asym g128 is dominated), clear of each other.
    # (INT4 asym g32 sits too close to INT4 sym g32 for a second label)
    assert list(sym4.text) == ["g32", "g128", "tensor"] and list(asym4.text) == ["", ""]
    assert list(asym4.x) == [4.28, 5.125] and list(asym4.y) == [17.5, 21.7]
    assert list(sym8.y) == [42.0] and list(asym8.y) == [41.0]
    assert sym4.marker.symbol == "circle" and asym4.marker.symbol == "diamond"
    assert "weight SQNR" in fig.layout.title.text
    assert "bits per weight" in fig.layout.xaxis.title.text


def test_pareto_front_marks_only_undominated_points():
    front = viz_granularity.pareto(POINTS, output=False).data[-1]
    assert front.mode == "lines"
    assert list(front.x) == [4.0, 4.25, 5.0, 5.125, 8.08]
    assert list(front.y) == [2.0, 18.0, 20.0, 21.7, 42.0]


def test_pareto_output_switch_uses_the_layer_output_sqnr():
    fig = viz_granularity.pareto(POINTS, output=True)
    assert_titled(fig)
    assert "layer-output SQNR" in fig.layout.title.text
    assert list(fig.data[0].y) == [15.0, 16.0, 1.0]
    front = fig.data[-1]
    # On output SQNR g32 sym (15 dB at 5 bits) is beaten by g128 asym (16.5 dB at 4.28 bits).
    assert list(front.x) == [4.0, 4.25, 4.28, 8.08]
    assert list(front.y) == [1.0, 16.0, 16.5, 36.0]


def test_pareto_of_a_real_tradeoff():
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(0))
    points = granularity.tradeoff(w, None, bits_options=(4,))
    fig = viz_granularity.pareto(points, output=False)
    assert_titled(fig)
    plotted = sorted((x, y) for t in fig.data[:-1] for x, y in zip(t.x, t.y))
    assert plotted == sorted((p.bits_per_weight, p.weight_sqnr_db) for p in points)
    front = list(zip(fig.data[-1].x, fig.data[-1].y))
    for x, y in front:  # nothing cheaper-and-better than a point of the front
        assert not any(p.bits_per_weight <= x and p.weight_sqnr_db > y for p in points)
    assert front[0][0] == min(p.bits_per_weight for p in points)  # the cheapest point starts it


def test_pareto_labels_of_the_real_layer_never_pile_up():
    from quantlab.io import models

    layer = "encoder.layer.0.intermediate.dense"
    points = granularity.tradeoff(models.load_tensor(models.ModelSource.embedded(), f"{layer}.weight"),
                                  models.activation(layer), 96)
    fig = viz_granularity.pareto(points, output=True)
    placed = [(x, y) for t in fig.data[:-1] for x, y, text in zip(t.x, t.y, t.text) if text]
    xs, ys = [p.bits_per_weight for p in points], [p.output_sqnr_db for p in points]
    span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
    assert len(placed) >= 3
    for i, (x1, y1) in enumerate(placed):
        for x2, y2 in placed[i + 1:]:
            assert abs(x1 - x2) / span_x > 0.05 or abs(y1 - y2) / span_y > 0.05


def test_scale_heatmap_ticks_are_whole_group_indices():
    smap = granularity.ScaleMap(torch.rand(4, 3) + 0.1, 1, 128)
    assert viz_granularity.scale_heatmap(smap, "w").layout.xaxis.dtick == 1
    wide = granularity.ScaleMap(torch.rand(4, 48) + 0.1, 1, 32)
    assert viz_granularity.scale_heatmap(wide, "w").layout.xaxis.dtick == 4


def test_scale_heatmap_of_zero_scales_has_no_infinite_colour():
    fig = viz_granularity.scale_heatmap(granularity.ScaleMap(torch.zeros(2, 2), 1, 8), "zeros")
    assert np.isnan(np.asarray(fig.data[0].z, dtype=float)).all()


def test_scale_heatmap_colours_log_scales_and_hovers_the_scales():
    values = torch.tensor([[1.0, 10.0], [100.0, 1000.0], [0.1, 0.01]])
    fig = viz_granularity.scale_heatmap(granularity.ScaleMap(values, rows_per_cell=1, group_size=64), "layer.0")
    assert_titled(fig)
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert np.allclose(np.asarray(heat.z), [[0, 1], [2, 3], [-1, -2]])
    assert np.array_equal(np.asarray(heat.customdata), values.numpy())
    assert list(heat.y) == [0, 1, 2]
    assert heat.colorbar.title.text == "log10 scale"
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.yaxis.title.text == "output channel"
    assert "64" in fig.layout.xaxis.title.text and "layer.0" in fig.layout.title.text


def test_scale_heatmap_of_pooled_rows_labels_the_blocks():
    w = torch.randn(800, 128, generator=torch.Generator().manual_seed(1))
    smap = granularity.scale_map(w, ql.QuantSpec(num_bits=4, strategy="group", group_size=64))
    assert smap.rows_per_cell == 3
    fig = viz_granularity.scale_heatmap(smap, "w")
    assert_titled(fig)
    assert "max over blocks of 3" in fig.layout.yaxis.title.text
    assert list(fig.data[0].y) == [3 * i for i in range(smap.values.shape[0])]  # real channel numbers
    assert np.array_equal(np.asarray(fig.data[0].customdata), smap.values.numpy())
    assert np.allclose(np.asarray(fig.data[0].z), np.log10(smap.values.numpy()))


def test_channel_failure_two_clouds_on_a_log_axis():
    fine = ql.QuantSpec(num_bits=4, strategy="channel")
    fail = granularity.ChannelFailure(absmax=torch.tensor([0.1, 1.0, 10.0]),
                                      sqnr_coarse=torch.tensor([-1.0, 5.0, 19.0]),
                                      sqnr_fine=torch.tensor([19.5, 19.0, 19.0]),
                                      coarse=fine.with_(strategy="tensor"), fine=fine)
    fig = viz_granularity.channel_failure(fail)
    assert_titled(fig)
    assert [t.name for t in fig.data] == [fail.coarse.label, fail.fine.label]
    for trace in fig.data:
        assert list(trace.x) == pytest.approx([0.1, 1.0, 10.0])
    assert list(fig.data[0].y) == [-1.0, 5.0, 19.0] and list(fig.data[1].y) == [19.5, 19.0, 19.0]
    assert fig.layout.xaxis.type == "log"


def test_word_bits_shows_the_packed_word_bit_by_bit():
    codes = torch.tensor([0, 1, 2, 3, -1, -2, -8, 7], dtype=torch.int8)
    diagram = packing.word_diagram(codes, 4)
    fig = viz_granularity.word_bits(diagram)
    assert_titled(fig)
    heat = fig.data[0]
    assert list(heat.x) == [str(p) for p in range(31, -1, -1)]
    assert list(heat.z[0]) == [p // 4 for p in range(31, -1, -1)]  # which code owns each bit
    assert "".join(heat.text[0]) == diagram.binary
    # Code #0 is 0 + 8 = 1000 in the lowest nibble; code #7 is 7 + 8 = 1111 in the highest.
    assert diagram.binary.endswith("1000") and diagram.binary.startswith("1111")
    notes = [a.text for a in fig.layout.annotations]
    assert notes == [f"#{i}: {c:+d}→{c + 8}" for i, c in enumerate(codes.tolist())]
    assert [a.x for a in fig.layout.annotations] == [str(4 * i + 3) for i in range(8)]
    assert diagram.hex in fig.layout.title.text and f"{diagram.word:,}" in fig.layout.title.text
    assert fig.layout.xaxis.type == "category"
    assert diagram.word == packing.pack(codes.reshape(1, 8), 4)[0, 0].item()


def test_microscaling_formats_are_a_family_of_their_own():
    nvfp4 = ql.QuantSpec.preset("NVFP4A16")
    fig = viz_granularity.pareto([*POINTS, _point("NVFP4 (weights)", nvfp4, 4.5, 19.5, 17.0)], output=False)
    names = [t.name for t in fig.data]
    assert names[:4] == ["INT4 sym", "INT4 asym", "INT8 sym", "INT8 asym"] and names[4] == "microscaling"
    assert list(fig.data[4].customdata) == ["NVFP4 (weights)"] and fig.data[4].marker.symbol == "square"
