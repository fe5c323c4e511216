"""SmoothQuant, AWQ and mixed precision on a real MiniLM layer, and their invariants."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab as ql
from quantlab.core import metrics
from quantlab.io import captures, models
from quantlab.lessons import outliers

LAYER = "encoder.layer.0.intermediate.dense"
W8A8_STATIC = ql.QuantSpec(num_bits=8, strategy="channel", activations=ql.QuantSpec(num_bits=8, strategy="tensor"))


@pytest.fixture(scope="module")
def xw():
    x = models.activation(LAYER)
    w = models.load_tensor(models.ModelSource.embedded(), f"{LAYER}.weight")
    return x, w


def test_minilm_has_a_real_outlier_channel(xw):
    stats = outliers.channel_stats(xw[0])
    assert stats.top_channel == 99
    assert stats.ratio > 10
    assert stats.absmax[99] > 20 and stats.median < 3


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0))
def test_smoothquant_leaves_the_product_unchanged_in_full_precision(alpha):
    x = models.activation(LAYER)
    w = models.load_tensor(models.ModelSource.embedded(), f"{LAYER}.weight")
    xs, ws, s = outliers.smooth(x.double(), w.double(), alpha)
    assert torch.allclose(xs @ ws.T, x.double() @ w.double().T, rtol=1e-9, atol=1e-9)
    expected = x.abs().amax(0).double() ** alpha / w.abs().amax(0).double() ** (1 - alpha)
    assert torch.allclose(s, expected.clamp(min=1e-5))


def test_the_outlier_of_block_0s_ffn_is_the_first_tokens(xw):
    x, _ = xw
    first = captures.first_token_rows(None)
    assert first.shape == (x.shape[0],) and int(first.sum()) == len(models.sample_texts())
    split = outliers.first_token_split(x, first, 99)
    assert split.first > 20 * split.rest  # [CLS] alone carries it
    assert split.rest_ratio < outliers.channel_stats(x).ratio / 2
    with pytest.raises(ql.QuantlabError):
        outliers.first_token_split(x, torch.ones_like(first), 99)


def test_smoothquant_moves_difficulty_and_helps_w8a8(xw):
    x, w = xw
    xs, ws, _ = outliers.smooth(x, w, 0.5)
    assert outliers.channel_stats(xs).ratio < outliers.channel_stats(x).ratio / 2
    curve = outliers.smooth_curve(x, w, W8A8_STATIC, np.linspace(0, 1, 11))
    assert curve.gain_db > 6
    assert 0.3 <= curve.best_alpha <= 0.95
    with pytest.raises(ql.QuantlabError):
        outliers.smooth_scales(torch.ones(3), torch.ones(3), 1.5)


def test_alpha_zero_is_not_no_smoothing(xw):
    """α = 0 gives s = 1/max|W_j|: every weight column ends at 1 and all the range lands on X."""
    x, w = xw
    _, ws, s = outliers.smooth(x, w, 0.0)
    assert torch.allclose(ws.abs().amax(dim=0), torch.ones(w.shape[1]), rtol=1e-6)
    assert not torch.allclose(s, torch.ones_like(s))
    ranges = outliers.smooth_ranges(x, w, 0.0)
    assert ranges.x_spread > 10 and ranges.w_spread < ranges.x_spread / 2  # weight columns start flat
    curve = outliers.smooth_curve(x, w, W8A8_STATIC, np.array([0.0, 0.5]))
    assert curve.at(0.0) < curve.baseline_db - 3  # on this layer α = 0 is worse than leaving X alone


@pytest.mark.parametrize("duo", [True, False])
@pytest.mark.parametrize("spec", [ql.QuantSpec.preset("W4A16"), ql.QuantSpec(num_bits=3, strategy="channel")])
def test_awq_choice_is_never_worse_than_no_scaling(xw, spec, duo):
    x, w = xw
    result = outliers.awq_search(x, w, spec, n_grid=10, duo_scaling=duo)
    # Recompute both losses from scratch, independent of the search's bookkeeping.
    ref = x.double() @ w.double().T
    plain = metrics.mse(ref, x.double() @ ql.fake_quantize(w, spec).double().T)
    s = result.scales
    scaled = x.double() @ (ql.fake_quantize(w * s, spec) / s).double().T
    # The search multiplies in float32, this check in float64: equal to ~1e-7.
    assert metrics.mse(ref, scaled) <= plain * (1 + 1e-5)
    assert result.identity_loss == pytest.approx(plain, rel=1e-5)
    assert result.best_ratio is not None and result.gain_db > 0  # on this layer AWQ does help


def test_awq_grid_pick_is_what_awq_applies_even_when_it_loses():
    search = outliers.AwqSearch(ratios=np.array([0.0, 0.5]), losses=np.array([3.0, 1.5]), identity_loss=1.0,
                                best_ratio=None, scales=torch.ones(2))
    assert search.grid_ratio == 0.5 and search.grid_relative_loss == 1.5  # AWQ's own choice: 50 % worse
    assert search.relative_loss == 1.0  # quantlab's extra candidate s = 1


def test_llm_int8_threshold_picks_the_channels_above_six(xw):
    x, w = xw
    assert outliers.threshold_channels(torch.tensor([[1.0, -6.0, 5.9], [0.0, 2.0, -5.0]])) == 1
    k = outliers.threshold_channels(x)
    assert k == int((x.abs().amax(0) >= 6).sum()) and 1 <= k < 16
    curve = outliers.mixed_precision_curve(x, w, W8A8_STATIC, [0, 16])
    assert curve.threshold_k == k and k in curve.ks


def test_mixed_precision_error_falls_as_k_grows(xw):
    x, w = xw
    curve = outliers.mixed_precision_curve(x, w, W8A8_STATIC, [0, 1, 4, 16, 64])
    assert np.all(np.diff(curve.sqnr_db) > 0)
    assert np.all(np.diff(curve.extra_bytes) > 0)
    assert curve.extra_bytes[1] == w.shape[0]  # one column of 1536 weights, 8 extra bits each
    everything = outliers.mixed_precision_output(x, w, W8A8_STATIC, x.shape[1])
    assert torch.allclose(everything, outliers.layer_output(x, w), rtol=1e-4, atol=1e-4)


def test_mismatched_shapes_are_a_user_error(xw):
    x, w = xw
    with pytest.raises(ql.QuantlabError):
        outliers.quantized_output(x, w.T.contiguous(), W8A8_STATIC)
