"""Observers against brute force, static calibration, and the spec's observer_kwargs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab as ql
from quantlab.core import metrics, observers
from quantlab.core.qparams import calculate_qparams, observe_minmax, quantize_with
from quantlab.io import models

ACT_LAYER = "encoder.layer.0.intermediate.dense"


def brute_force_shrink(rows: torch.Tensor, spec: ql.QuantSpec, norm: float, steps: int, grid: float):
    """Every shrink factor, every row, no early stop: the argmin range per row."""
    row_spec = ql.QuantSpec(num_bits=spec.num_bits, symmetric=spec.symmetric, strategy="channel")
    lo, hi = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)
    best_err = torch.full((rows.shape[0],), float("inf"), dtype=torch.float64)
    best_p = torch.ones(rows.shape[0], dtype=torch.float64)
    for i in range(steps):
        p = 1 - i / grid
        scale, zp = calculate_qparams(p * lo, p * hi, row_spec)
        err = ((quantize_with(rows, scale, zp, row_spec).dequantize() - rows).abs().double() ** norm).sum(1)
        better = err < best_err
        best_err[better], best_p[better] = err[better], p
    return best_p


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_mse_observer_matches_brute_force_without_early_stop(symmetric, bits):
    torch.manual_seed(bits)
    x = torch.randn(24, 256) * torch.rand(24, 1) * 3
    x[:, 7] *= 12  # an outlier column: shrinking the range now pays off
    spec = ql.QuantSpec(num_bits=bits, symmetric=symmetric, strategy="channel", observer="mse",
                        observer_kwargs={"patience": 1000, "norm": 2.0})
    lo, hi = observers.observe(x, spec)
    expected_p = brute_force_shrink(x, spec, norm=2.0, steps=20, grid=100.0)
    full_lo, full_hi = observe_minmax(x, spec)
    chosen_p = torch.where(full_hi.abs() > 0, hi / full_hi, lo / full_lo).squeeze(1).double()
    assert torch.allclose(chosen_p, expected_p, atol=1e-6)
    assert (expected_p < 1).any(), "the data should make some rows prefer a clipped range"


def test_mse_observer_never_worse_than_minmax_on_real_weight():
    w = models.load_tensor(models.ModelSource.embedded(), f"{ACT_LAYER}.weight")
    for strategy, g in (("channel", None), ("group", 128), ("tensor", None)):
        base = ql.QuantSpec(num_bits=4, strategy=strategy, group_size=g)
        mse_spec = base.with_(observer="mse", observer_kwargs={"norm": 2.0})
        err_minmax = metrics.mse(w, ql.quantize(w, base).dequantize())
        err_mse = metrics.mse(w, ql.quantize(w, mse_spec).dequantize())
        assert err_mse <= err_minmax
    per_tensor = ql.QuantSpec(num_bits=4)
    assert metrics.mse(w, ql.quantize(w, per_tensor.with_(observer="mse")).dequantize()) < \
        0.8 * metrics.mse(w, ql.quantize(w, per_tensor).dequantize())


def test_mse_patience_stops_early():
    x = models.activation(ACT_LAYER)
    patient = ql.QuantSpec(num_bits=8, observer="mse", observer_kwargs={"patience": 1000})
    hasty = patient.with_(observer_kwargs={"patience": 1})
    # Per-tensor INT8 on this activation prefers (almost) the full range: one step without gain stops.
    assert observers.clip_ratio(x, hasty) >= observers.clip_ratio(x, patient) - 1e-6


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 400), st.floats(90.0, 100.0), st.integers(0, 2**16))
def test_percentile_is_the_order_statistic(n, pct, seed):
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(seed))
    spec = ql.QuantSpec(num_bits=8, observer="percentile", observer_kwargs={"percentile": pct})
    lo, hi = observers.observe(x, spec)
    mags = np.sort(x.abs().flatten().numpy())
    k = min(n, max(1, round(pct / 100 * n)))
    assert hi.item() == pytest.approx(float(mags[k - 1]))
    assert lo.item() == -hi.item()
    assert (x.abs() > hi).sum().item() == n - k


def test_percentile_100_is_minmax_and_shapes_follow_the_strategy():
    w = models.load_tensor(models.ModelSource.embedded(), f"{ACT_LAYER}.weight")
    for strategy, g in (("tensor", None), ("channel", None), ("group", 64), ("token", None)):
        spec = ql.QuantSpec(num_bits=8, strategy=strategy, group_size=g, observer="percentile",
                            observer_kwargs={"percentile": 100})
        lo, hi = observers.observe(w, spec)
        mlo, mhi = observe_minmax(w, spec)
        assert lo.shape == mlo.shape
        assert torch.equal(hi, torch.maximum(mlo.abs(), mhi.abs()))
    asym = ql.QuantSpec(num_bits=8, symmetric=False, observer="percentile", observer_kwargs={"percentile": 99})
    lo, hi = observers.observe(w, asym)
    below, above = (w < lo).double().mean().item(), (w > hi).double().mean().item()
    assert below == pytest.approx(0.005, abs=1e-3) and above == pytest.approx(0.005, abs=1e-3)


def test_observer_kwargs_keep_the_spec_hashable_and_round_trip():
    a = ql.QuantSpec(observer="mse", observer_kwargs={"norm": 2, "grid": 50})
    b = ql.QuantSpec(observer="mse", observer_kwargs=(("grid", 50.0), ("norm", 2.0)))
    assert a == b and hash(a) == hash(b)
    assert a.observer_setting("norm") == 2.0 and a.observer_setting("patience") == 5.0
    assert ql.QuantSpec.from_url(a.to_url()) == a
    assert a.label.endswith("mse")
    for bad in ({"percentile": 99}, {"grid": 0}, {"maxshrink": 1.5}):
        with pytest.raises(ql.QuantlabError):
            ql.QuantSpec(observer="mse", observer_kwargs=bad)
    with pytest.raises(ql.QuantlabError):
        ql.QuantSpec(observer="percentile", observer_kwargs={"percentile": 20})
    with pytest.raises(ql.QuantlabError):
        ql.QuantSpec(observer="kl")


def test_static_scale_saturates_what_calibration_never_saw():
    x = models.activation(ACT_LAYER)
    spec = ql.QuantSpec(num_bits=8)
    small = x[: 20] * 0.5  # calibrate on a quiet slice
    qt = observers.quantize_activation(x, spec, calibration=small)
    assert metrics.clipped_fraction(x, qt) > 0
    dynamic = ql.QuantSpec(num_bits=8, strategy="token", dynamic=True)
    assert metrics.clipped_fraction(x, observers.quantize_activation(x, dynamic)) == 0
    with pytest.raises(ql.QuantlabError):
        observers.calibrate(x, dynamic)
