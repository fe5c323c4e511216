"""The Clipping lesson: rounding against clipping error, the syllabus' "150 → 127" on a real value,
one clipping ratio's numbers, and static scales calibrated on sample text."""
import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab.core import metrics
from quantlab.io import captures, models
from quantlab.lessons import clipping

ACT_LAYER = "encoder.layer.0.intermediate.dense"


@pytest.fixture(scope="module")
def act():
    return models.activation(ACT_LAYER)


def test_error_split_adds_up_and_clipping_grows_as_the_range_shrinks(act):
    x = act
    spec = ql.QuantSpec(num_bits=8)
    ratios = np.array([0.1, 0.3, 0.6, 1.0])
    curve = clipping.clipping_curve(x, spec, ratios)
    for r, total in zip(ratios, curve.total_mse):
        approx = clipping.clipped_quantize(x, spec, float(r)).dequantize()
        assert total == pytest.approx(metrics.mse(x, approx), rel=1e-9)
    assert curve.clipping_mse[-1] == 0 and curve.clipped_fraction[-1] == 0
    assert np.all(np.diff(curve.clipping_mse) < 0)
    assert np.all(np.diff(curve.rounding_mse) > 0)


def test_best_ratio_is_the_curves_minimum(act):
    ratios = np.linspace(0.1, 1.0, 10)
    int8 = clipping.clipping_curve(act, ql.QuantSpec(num_bits=8), ratios)
    int4 = clipping.clipping_curve(act, ql.QuantSpec(num_bits=4), ratios)
    for curve in (int8, int4):
        assert curve.best_ratio == ratios[np.argmin(curve.rounding_mse + curve.clipping_mse)]
        assert np.array_equal(curve.ratios, ratios)
    # 256 levels make rounding cheap, so min-max wins; 16 levels make clipping the outliers pay.
    assert int8.best_ratio == 1.0
    assert int4.best_ratio < 0.5


def test_clipped_quantize_shrinks_the_minmax_scale(act):
    spec = ql.QuantSpec(num_bits=8)
    full = clipping.clipped_quantize(act, spec, 1.0)
    half = clipping.clipped_quantize(act, spec, 0.5)
    assert torch.equal(full.q, ql.quantize(act, spec).q)
    assert half.scale.item() == pytest.approx(0.5 * full.scale.item(), rel=1e-6)
    channel = ql.QuantSpec(num_bits=4, strategy="channel", symmetric=False)
    w = torch.tensor([[-1.0, 0.0, 3.0], [-2.0, 0.5, 2.0]])
    a, b = clipping.clipped_quantize(w, channel, 1.0), clipping.clipped_quantize(w, channel, 0.5)
    assert torch.allclose(b.scale, a.scale / 2)  # every row's own range is halved
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ql.QuantlabError, match="clipping ratio"):
            clipping.clipped_quantize(act, spec, bad)


def test_error_split_on_a_known_tensor():
    # Grid of ±1 at 8 bits (ratio 0.5 of ±2): the two values at ±2 saturate to ±127/127.5 = ±0.996...
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.25, 0.5, 2.0]])
    spec = ql.QuantSpec(num_bits=8)
    qt = clipping.clipped_quantize(x, spec, 0.5)
    rounding, clip, frac = clipping.error_split(x, qt)
    assert frac == pytest.approx(2 / 6)
    approx = qt.dequantize()
    assert clip == pytest.approx(((x[0, [0, 5]] - approx[0, [0, 5]]) ** 2).sum().item() / 6, rel=1e-6)
    assert rounding + clip == pytest.approx(metrics.mse(x, approx), rel=1e-9)
    assert clip > 100 * rounding


def test_saturation_example_is_a_real_value_near_150(act):
    x = act
    qt = clipping.clipped_quantize(x, ql.QuantSpec(num_bits=8), 0.85)
    ex = clipping.saturation_example(x, qt)
    assert ex.value == x[ex.row, ex.column].item()
    assert ex.code == 127 and ex.scaled > 127.5
    assert abs(ex.scaled - 150) < 5
    assert ex.restored == pytest.approx(127 * ex.scale) and ex.lost > 0


def test_saturation_example_without_saturation_is_the_highest_value():
    x = torch.tensor([[0.1, -0.3], [0.2, 0.05]])
    qt = clipping.clipped_quantize(x, ql.QuantSpec(num_bits=8, symmetric=False), 1.0)
    ex = clipping.saturation_example(x, qt)
    assert (ex.row, ex.column, ex.value) == (1, 0, pytest.approx(0.2))
    assert ex.code == 127 and ex.scaled <= 127.5
    with pytest.raises(ql.QuantlabError, match="2-D"):
        clipping.saturation_example(x.flatten(), ql.quantize(x.flatten(), ql.QuantSpec(num_bits=8)))
    grouped = ql.QuantSpec(num_bits=8, strategy="group", group_size=2)
    with pytest.raises(ql.QuantlabError, match="without groups"):
        clipping.saturation_example(x, ql.quantize(x, grouped))


def test_grid_limits_are_per_tensor_only():
    x = torch.linspace(-1.0, 3.0, 401).reshape(1, -1)
    asym = ql.QuantSpec(num_bits=8, symmetric=False)
    lo, hi = clipping.grid_limits(ql.quantize(x, asym))
    assert lo == pytest.approx(-1.0, abs=4 / 255) and hi == pytest.approx(3.0, abs=4 / 255)
    sym_lo, sym_hi = clipping.grid_limits(ql.quantize(x, ql.QuantSpec(num_bits=8)))
    assert sym_lo == pytest.approx(-128 * 3 / 127.5) and sym_hi == pytest.approx(127 * 3 / 127.5)
    with pytest.raises(ql.QuantlabError, match="per-tensor"):
        clipping.grid_limits(ql.quantize(torch.cat([x, 2 * x]), ql.QuantSpec(num_bits=8, strategy="channel")))


def test_clip_point_of_a_shrunk_grid(act):
    spec = ql.QuantSpec(num_bits=8)
    point = clipping.clip_point(act, spec, 0.85)
    qt = clipping.clipped_quantize(act, spec, 0.85)
    assert (point.range_lo, point.range_hi) == clipping.grid_limits(qt)
    assert point.range_hi == pytest.approx(127 * 0.85 * act.abs().max().item() / 127.5, rel=1e-6)
    assert (point.rounding_mse, point.clipping_mse, point.clipped_fraction) == clipping.error_split(act, qt)
    assert point.total_mse == pytest.approx(metrics.mse(act, qt.dequantize()), rel=1e-9)
    assert 0 < point.clipping_share < 1 and point.qmax == 127
    assert point.saturates and point.example == clipping.saturation_example(act, qt)


def test_clip_point_of_an_asymmetric_grid_and_of_a_1d_tensor():
    x = torch.linspace(-1.0, 3.0, 401).reshape(1, -1)
    point = clipping.clip_point(x, ql.QuantSpec(num_bits=8, symmetric=False), 0.5)
    assert point.range_lo == pytest.approx(-0.5, abs=2 / 255) and point.range_hi == pytest.approx(1.5, abs=2 / 255)
    assert point.clipped_fraction == pytest.approx(((x < -0.51) | (x > 1.51)).double().mean().item(), abs=0.01)
    assert point.saturates
    flat = clipping.clip_point(x.flatten(), ql.QuantSpec(num_bits=8), 0.5)
    assert flat.example is None and not flat.saturates and flat.clipping_mse > 0


def test_min_max_never_saturates_at_8_bits(act):
    point = clipping.clip_point(act, ql.QuantSpec(num_bits=8), 1.0)
    assert point.clipping_mse == 0 and point.clipped_fraction == 0 and point.clipping_share == 0
    assert not point.saturates


def test_min_max_never_saturates_at_4_bits(act):
    point = clipping.clip_point(act, ql.QuantSpec(num_bits=4), 1.0)
    assert point.clipping_mse == 0 and point.clipped_fraction == 0
    assert not point.saturates


def test_calibration_study_covers_every_text_and_prefixes_are_prefixes():
    counts = captures.token_counts(None, "code")
    assert all(n > 2 for n in counts)  # [CLS] … [SEP] around at least one real token
    part = clipping.calibration_set("code", ACT_LAYER, 3)
    assert part.shape[0] == sum(counts[:3])
    assert torch.equal(part, models.activation(ACT_LAYER, "code")[: part.shape[0]])
    assert sum(counts) == models.activation(ACT_LAYER, "code").shape[0]
    rows = clipping.study(ACT_LAYER, "chat", ql.QuantSpec(num_bits=8, observer="percentile"), 10)
    assert [r.calibration for r in rows] == models.calibration_kinds() + ["dynamic"]
    static = [r for r in rows if r.calibration != "dynamic"]
    assert all(r.clipped_fraction > 0 for r in static)  # percentile clips by design
    assert all(r.sentences == min(10, len(captures.token_counts(None, r.calibration))) for r in static)
    dynamic = rows[-1]
    assert dynamic.sentences == 0 and dynamic.clipped_fraction == 0 and dynamic.clipping_share == 0
    assert all(dynamic.sqnr_db > r.sqnr_db for r in static)  # a scale per token fits every token
    with pytest.raises(ql.QuantlabError):
        clipping.calibration_set("code", ACT_LAYER, 0)
    with pytest.raises(ql.QuantlabError, match="sentences"):
        clipping.calibration_set("code", ACT_LAYER, len(counts) + 1)


def test_calibration_story_layer_spreads_and_summary_reads_its_rows():
    rows = clipping.study(clipping.CALIBRATION_LAYER, "code", ql.QuantSpec(num_bits=8), clipping.CALIBRATION_SENTENCES)
    summary = clipping.summarize(rows, "code")
    static = [r for r in rows if r.calibration != "dynamic"]
    assert summary.best.sqnr_db == max(r.sqnr_db for r in static)
    assert summary.worst.sqnr_db == min(r.sqnr_db for r in static)
    assert summary.dynamic.calibration == "dynamic" and summary.dynamic.sqnr_db > summary.best.sqnr_db
    assert summary.spread_db > 5  # measured 11.1 dB: numbers text 21.5 against code text 32.6
    assert summary.numbers()["gain_hi"] == f"{summary.dynamic.sqnr_db - summary.worst.sqnr_db:.1f}"
