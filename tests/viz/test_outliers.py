"""Figures of the Outliers lesson (and the whole-model figures it shows): outlier channels,
SmoothQuant ranges and α, AWQ's search, mixed precision, the per-Linear SQNR heatmap, keeping layers."""
import numpy as np
import plotly.colors
import pytest
import torch

from quantlab.lessons import outliers, whole_model
from quantlab.viz import outliers as viz_outliers
from quantlab.viz.style import PALETTE
from tests.viz import assert_titled


def test_channel_absmax_marks_channels_beyond_six_medians():
    stats = outliers.ChannelStats(absmax=np.array([1.0, 2.0, 30.0, 1.5]), median=1.75, top_channel=2,
                                  ratio=30 / 1.75)
    fig = viz_outliers.channel_absmax(stats, "layer.0")
    assert_titled(fig)
    bars = fig.data[0]
    assert list(bars.x) == [0, 1, 2, 3] and list(bars.y) == [1.0, 2.0, 30.0, 1.5]
    assert list(bars.marker.color) == [PALETTE["data"], PALETTE["data"], PALETTE["asym"], PALETTE["data"]]
    assert [s.y0 for s in fig.layout.shapes] == [1.75]
    assert "layer.0" in fig.layout.title.text


def test_channel_absmax_of_real_stats():
    x = torch.ones(8, 5)
    x[3, 4] = -20.0
    stats = outliers.channel_stats(x)
    fig = viz_outliers.channel_absmax(stats, "toy")
    assert list(fig.data[0].y) == [1.0, 1.0, 1.0, 1.0, 20.0]
    assert list(fig.data[0].marker.color).count(PALETTE["asym"]) == 1


def test_outlier_ratios_short_names_and_the_selected_layer():
    layers = ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.output.dense",
              "encoder.layer.1.intermediate.dense"]
    fig = viz_outliers.outlier_ratios(layers, [3.0, 5.0, 40.0], current="encoder.layer.1.intermediate.dense")
    assert_titled(fig)
    bars = fig.data[0]
    assert list(bars.x) == ["0.query", "0.attn.dense", "1.intermediate.dense"]
    assert list(bars.y) == [3.0, 5.0, 40.0]
    assert list(bars.marker.color) == [PALETTE["data"], PALETTE["data"], PALETTE["accent"]]


def test_smooth_ranges_two_panels_before_and_after():
    r = outliers.SmoothRanges(x_before=np.array([1.0, 50.0]), x_after=np.array([2.0, 7.0]),
                              w_before=np.array([0.5, 0.4]), w_after=np.array([0.25, 2.9]))
    fig = viz_outliers.smooth_ranges(r, 0.5)
    assert_titled(fig)
    assert [t.name for t in fig.data] == ["before", "after smoothing (α = 0.50)"] * 2
    assert [t.xaxis for t in fig.data] == ["x", "x", "x2", "x2"]
    assert [list(t.y) for t in fig.data] == [[1.0, 50.0], [2.0, 7.0], [0.5, 0.4], [0.25, 2.9]]
    assert all(list(t.x) == [0, 1] for t in fig.data)
    assert [t.showlegend for t in fig.data] == [True, True, False, False]  # one legend entry per line kind
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"
    assert fig.layout.yaxis.title.text != fig.layout.yaxis2.title.text
    assert [a.text for a in fig.layout.annotations] == ["activations: max |X_j|", "weights: max |W_j|"]


def test_smooth_ranges_log_ticks_are_whole_numbers_not_bare_digits():
    r = outliers.SmoothRanges(x_before=np.array([0.02, 30.0]), x_after=np.array([0.5, 3.0]),
                              w_before=np.array([0.1, 0.3]), w_after=np.array([0.05, 0.8]))
    fig = viz_outliers.smooth_ranges(r, 0.5)
    for axis in (fig.layout.yaxis, fig.layout.yaxis2):
        # Every tick is labelled with its own value: 0.5 reads "0.5", never "5".
        assert len(axis.tickvals) >= 3
        assert [float(t) for t in axis.ticktext] == pytest.approx(list(axis.tickvals))
    assert 0.02 in fig.layout.yaxis.tickvals and 20 in fig.layout.yaxis.tickvals


def test_smooth_ranges_of_a_real_smoothing():
    x = torch.tensor([[1.0, 16.0], [-2.0, 4.0]])
    w = torch.tensor([[1.0, 1.0], [0.5, -0.25]])
    fig = viz_outliers.smooth_ranges(outliers.smooth_ranges(x, w, 0.5), 0.5)
    before_x, after_x, before_w, after_w = (list(t.y) for t in fig.data)
    assert before_x == [2.0, 16.0] and before_w == [1.0, 1.0]
    # α = 0.5 with equal weight ranges: s_j = sqrt(max|X_j|), so both sides end at sqrt(max|X_j|).
    assert after_x == pytest.approx([2**0.5, 4.0]) and after_w == pytest.approx([2**0.5, 4.0])


def test_smooth_curve_alpha_line_and_baseline():
    curve = outliers.SmoothCurve(alphas=np.array([0.0, 0.5, 1.0]), sqnr_db=np.array([20.0, 30.0, 25.0]),
                                 baseline_db=21.0)
    fig = viz_outliers.smooth_curve(curve, 0.5, "W8A8")
    assert_titled(fig)
    assert list(fig.data[0].x) == [0.0, 0.5, 1.0] and list(fig.data[0].y) == [20.0, 30.0, 25.0]
    horizontal = [s for s in fig.layout.shapes if s.y0 == s.y1]
    vertical = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert [s.y0 for s in horizontal] == [21.0] and [s.x0 for s in vertical] == [0.5]
    assert "no smoothing (s = 1) 21.0 dB" in [a.text for a in fig.layout.annotations]
    assert "W8A8" in fig.layout.title.text
    best = fig.data[1]
    assert list(best.x) == [0.5] and list(best.y) == [30.0] and best.text[0] == "best α = 0.50: +9.0 dB"


@pytest.mark.parametrize("identity", [2.0, 0.5])
def test_awq_curve_marks_the_ratio_awq_applies_even_when_plain_rounding_wins(identity):
    search = outliers.AwqSearch(ratios=np.array([0.0, 0.25, 0.5]), losses=np.array([2.0, 1.0, 1.5]),
                                identity_loss=identity, best_ratio=0.25 if identity > 1 else None,
                                scales=torch.ones(4))
    fig = viz_outliers.awq_curve(search)
    assert_titled(fig)
    assert list(fig.data[0].x) == [0.0, 0.25, 0.5] and list(fig.data[0].y) == [2.0, 1.0, 1.5]
    assert [s.y0 for s in fig.layout.shapes if s.y0 == s.y1] == [identity]
    assert [s.x0 for s in fig.layout.shapes if s.x0 == s.x1] == [0.25]
    assert "AWQ's pick r = 0.25" in [a.text for a in fig.layout.annotations]
    assert search.grid_relative_loss == pytest.approx(1.0 / identity)


def test_mixed_curve_extra_kib_against_sqnr():
    curve = outliers.MixedCurve(ks=np.array([0, 1, 4]), sqnr_db=np.array([10.0, 20.0, 24.0]),
                                extra_bytes=np.array([0, 1024, 4096]), layer_bytes=512 * 1024, threshold_k=1)
    fig = viz_outliers.mixed_curve(curve)
    assert_titled(fig)
    trace = fig.data[0]
    assert list(trace.x) == [0.0, 1.0, 4.0] and list(trace.y) == [10.0, 20.0, 24.0]
    assert list(trace.text) == ["k=0", "k=1", "k=4"]
    assert "512 KiB" in fig.layout.title.text and "KiB" in fig.layout.xaxis.title.text
    rule = fig.data[1]  # LLM.int8()'s |x| ≥ 6 choice, on the curve
    assert list(rule.x) == [1.0] and list(rule.y) == [20.0] and "k=1" in rule.text[0]


def _result() -> whole_model.WholeModelResult:
    layers = tuple(f"encoder.layer.{b}.{kind}" for b in range(2) for kind in whole_model.BLOCK_LINEARS)
    local = np.arange(12, dtype=float)
    local[4] = np.inf  # block 0's FFN up kept in 16-bit
    return whole_model.WholeModelResult(
        label="W4A16", layers=layers, cosine=np.array([0.99, 0.98]), rank_correlation=0.9, retrieval_recall_fp32=0.8,
        retrieval_recall=0.75, distractors=10,
        local_sqnr_db=local, running_sqnr_db=np.arange(12.0) + 20,
        weight_bytes=1000, fp16_bytes=4000, seconds=0.1)


def test_sqnr_heatmap_one_cell_per_linear_with_kept_layers_as_text():
    result = _result()
    fig = viz_outliers.sqnr_heatmap(result, "local")
    assert_titled(fig)
    heat = fig.data[0]
    assert list(heat.x) == list(whole_model.SHORT_NAMES) and list(heat.y) == ["block 0", "block 1"]
    z = np.asarray(heat.z, dtype=float)
    expected = result.heatmap("local")
    assert np.isnan(z[0, 4]) and np.isinf(expected[0, 4])
    finite = np.isfinite(expected)
    assert np.array_equal(z[finite], expected[finite])
    assert heat.text[0][4] == "16-bit" and heat.text[1][0] == "6.0"
    assert fig.layout.yaxis.autorange == "reversed"
    assert "fp32 input" in fig.layout.title.text
    # Colour-blind safe: the blue-to-yellow Cividis scale, no red against green.
    assert [c for _, c in heat.colorscale] == [c for _, c in plotly.colors.get_colorscale("Cividis")]


def test_sqnr_heatmap_running_switch():
    result = _result()
    fig = viz_outliers.sqnr_heatmap(result, "running")
    assert_titled(fig)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.array_equal(z, result.heatmap("running")) and z[0, 4] == 24.0
    assert "running quantized model" in fig.layout.title.text


def test_keep_curve_extra_mib_against_rank_correlation():
    curve = whole_model.KeepCurve(ks=np.array([0, 1, 2]), extra_bytes=np.array([0, 2**20, 3 * 2**20]),
                                  cosine_mean=np.array([0.95, 0.97, 0.99]), rank_correlation=np.array([0.8, 0.9, 1.0]))
    fig = viz_outliers.keep_curve(curve)
    assert_titled(fig)
    trace = fig.data[0]
    assert list(trace.x) == [0.0, 1.0, 3.0] and list(trace.y) == [0.8, 0.9, 1.0]
    assert list(trace.text) == ["k=0", "k=1", "k=2"]
    assert "MiB" in fig.layout.xaxis.title.text
