"""quantize/dequantize: properties, bit-exact parity with compressed-tensors 0.20, a second oracle."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab as ql

ct_args = pytest.importorskip("compressed_tensors.quantization")
from compressed_tensors.quantization import QuantizationArgs  # noqa: E402
from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize  # noqa: E402
from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams as ct_calculate_qparams  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _ct_minmax(x: torch.Tensor, spec: ql.QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranges computed the way llm-compressor's min-max observer reduces them."""
    if spec.strategy == "tensor":
        lo, hi = torch.aminmax(x)
        return lo, hi
    if spec.strategy in ("channel", "token"):
        return x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    g = x.reshape(x.shape[0], -1, spec.group_size)
    return g.amin(dim=-1), g.amax(dim=-1)


def _ct_args(spec: ql.QuantSpec) -> QuantizationArgs:
    return QuantizationArgs(num_bits=spec.num_bits, type=spec.type, symmetric=spec.symmetric,
                            strategy=spec.strategy, group_size=spec.group_size)


def _weights(rows: int, cols: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[:, 3] *= 20  # an outlier column, so ranges differ between groups
    w[1] += 0.3  # a shifted row, so asymmetric zero points are not all alike
    return w.to(dtype)


CASES = [
    (bits, sym, strategy, g)
    for bits in (2, 3, 4, 5, 8)
    for sym in (True, False)
    for strategy, g in (("tensor", None), ("channel", None), ("group", 16), ("group", 32), ("group", 128))
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bits,sym,strategy,group", CASES)
@pytest.mark.parametrize("shape", [(8, 128), (48, 256), (17, 384)])
def test_int_bit_exact_with_compressed_tensors(dtype, bits, sym, strategy, group, shape):
    spec = ql.QuantSpec(num_bits=bits, symmetric=sym, strategy=strategy, group_size=group)
    x = _weights(*shape, dtype=dtype, seed=bits * 7 + shape[0])
    ours = ql.quantize(x, spec)
    args = _ct_args(spec)
    scale, zp = ct_calculate_qparams(*_ct_minmax(x, spec), args)
    codes = ct_quantize(x, scale, zp, args, dtype=torch.int8)
    assert torch.equal(ours.q, codes)
    assert ours.scale.dtype == scale.dtype == dtype
    assert torch.equal(ours.scale, scale.reshape(ours.scale.shape))
    if sym:
        assert ours.zero_point is None
        assert not zp.any()
    else:
        assert torch.equal(ours.zero_point, zp.reshape(ours.zero_point.shape))
    back = ct_dequantize(codes, scale, zp, args, dtype=dtype)
    assert torch.equal(ours.dequantize(), back)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("strategy", ["tensor", "channel"])
def test_fp8_bit_exact_with_compressed_tensors(dtype, strategy):
    spec = ql.QuantSpec(num_bits=8, type="float", strategy=strategy)
    x = _weights(32, 256, dtype, seed=3)
    ours = ql.quantize(x, spec)
    args = _ct_args(spec)
    scale, zp = ct_calculate_qparams(*_ct_minmax(x, spec), args)
    codes = ct_quantize(x, scale, zp, args, dtype=torch.float8_e4m3fn)
    assert ours.q.dtype == torch.float8_e4m3fn
    assert torch.equal(ours.q.view(torch.uint8), codes.view(torch.uint8))
    assert torch.equal(ours.scale, scale.reshape(ours.scale.shape))


@pytest.mark.parametrize("bits,sym", [(8, True), (8, False), (4, True)])
def test_dynamic_token_bit_exact_with_compressed_tensors(bits, sym):
    """Per-token activation scales, as compressed-tensors computes them on a [batch, seq, hidden] input."""
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp

    spec = ql.QuantSpec(num_bits=bits, symmetric=sym, strategy="token", dynamic=True)
    x = _weights(20, 384, torch.bfloat16, seed=11).abs()  # post-GELU-like: mostly positive
    ours = ql.quantize(x, spec)
    args = QuantizationArgs(num_bits=bits, symmetric=sym, strategy="token", dynamic=True)
    scale, zp = compute_dynamic_scales_and_zp(x.unsqueeze(0), args, module=torch.nn.Identity())
    codes = ct_quantize(x.unsqueeze(0), scale, zp, args, dtype=torch.int8)
    assert torch.equal(ours.q, codes[0])
    assert torch.equal(ours.scale, scale[0])


def test_fp8_clamps_before_the_cast():
    """Saturate to ±448 ourselves: whether a bare cast saturates or gives NaN depends on torch build."""
    spec = ql.QuantSpec(num_bits=8, type="float", strategy="tensor")
    scale = torch.tensor([1.0])
    qt = ql.quantize_with(torch.tensor([[470.0, -1000.0, 3.0]]), scale, None, spec)
    assert qt.q.float().tolist() == [[448.0, -448.0, 3.0]]


# -- properties ---------------------------------------------------------------------------------

spec_strategy = st.builds(
    lambda bits, sym, gran: ql.QuantSpec(num_bits=bits, symmetric=sym, strategy=gran[0], group_size=gran[1]),
    st.integers(2, 8), st.booleans(),
    st.sampled_from([("tensor", None), ("channel", None), ("group", 8), ("group", 16), ("group", 32)]),
)


@settings(max_examples=150, deadline=None)
@given(spec=spec_strategy, rows=st.integers(1, 12), groups=st.integers(1, 4), seed=st.integers(0, 10_000),
       shift=st.floats(-2, 2), spread=st.floats(1e-3, 1e3))
def test_quantize_properties(spec, rows, groups, seed, shift, spread):
    x = (torch.randn(rows, 32 * groups, generator=torch.Generator().manual_seed(seed)) * spread + shift * spread)
    qt = ql.quantize(x, spec)
    # codes lie on the grid
    assert qt.q.dtype == torch.int8
    assert spec.qmin <= qt.q.min().item() and qt.q.max().item() <= spec.qmax
    # scale layout per strategy (compressed-tensors')
    expected = {"tensor": (1,), "channel": (rows, 1), "group": (rows, x.shape[1] // (spec.group_size or 1))}
    assert tuple(qt.scale.shape) == expected[spec.strategy]
    assert (qt.zero_point is None) == spec.symmetric
    if qt.zero_point is not None:
        assert qt.zero_point.shape == qt.scale.shape and qt.zero_point.dtype == torch.int8
    # min-max ranges clip nothing, so the round trip is off by at most half a step everywhere
    err = (qt.dequantize() - x).abs()
    step = qt.scale.repeat_interleave(spec.group_size, dim=1) if spec.strategy == "group" else qt.scale
    float_slack = 4 * torch.finfo(x.dtype).eps * x.abs()  # the dequantize multiply itself rounds
    assert torch.all(err <= step.expand_as(err) / 2 * (1 + 1e-5) + float_slack)
    # zero stays exactly representable (padding and ReLU zeros must survive)
    zero = ql.quantize_with(torch.zeros_like(x), qt.scale, qt.zero_point, spec).dequantize()
    assert torch.all(zero == 0)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_second_oracle_fake_quantize_per_channel(bits):
    """torch.fake_quantize_per_channel_affine agrees to within one step (it rounds ties differently)."""
    spec = ql.QuantSpec(num_bits=bits, symmetric=False, strategy="channel")
    x = _weights(64, 200, torch.float32, seed=bits)
    qt = ql.quantize(x, spec)
    ours = qt.dequantize()
    theirs = torch.fake_quantize_per_channel_affine(
        x, qt.scale.flatten(), qt.zero_point.flatten().int(), 0,
        spec.qmin, spec.qmax,
    )
    diff_steps = ((ours - theirs).abs() / qt.scale).max().item()
    assert diff_steps <= 1 + 1e-4
    assert (ours == theirs).float().mean().item() > 0.99


def test_symmetric_scale_formula_on_a_real_weight():
    from quantlab.io import models

    w = models.load_tensor(models.ModelSource.embedded(), "encoder.layer.0.attention.self.query.weight")
    qt = ql.quantize(w, ql.QuantSpec(num_bits=4, strategy="tensor"))
    assert qt.scale.item() == pytest.approx(w.abs().max().item() / 7.5, rel=1e-6)
    asym = ql.quantize(w, ql.QuantSpec(num_bits=4, symmetric=False, strategy="tensor"))
    assert asym.scale.item() == pytest.approx((w.max() - w.min()).item() / 15, rel=1e-6)
    assert asym.zero_point.item() == round(-8 - w.min().item() / asym.scale.item())


def test_metrics_closed_forms():
    from quantlab.core import metrics

    x = torch.tensor([1.0, -2.0, 3.0, 4.0])
    y = x + torch.tensor([0.1, -0.1, 0.1, -0.1])
    assert metrics.mse(x, y) == pytest.approx(0.01, rel=1e-5)
    assert metrics.sqnr_db(x, y) == pytest.approx(10 * math.log10(30 / 0.04), rel=1e-5)
    assert metrics.sqnr_db(x, x) == math.inf
    assert metrics.max_abs_error(x, y) == pytest.approx(0.1)
    assert metrics.cosine(x, 2 * x) == pytest.approx(1.0)
    # 4-bit groups of 128 with s-bit scales: 4 + s/128 bits; asymmetric adds a 4-bit zero point per group
    assert metrics.bits_per_weight(ql.QuantSpec.preset("W4A16"), (4096, 4096), 16) == pytest.approx(4.125)
    assert metrics.bits_per_weight(ql.QuantSpec.preset("W4A16"), (4096, 4096), 32) == pytest.approx(4.25)
    assert metrics.bits_per_weight(ql.QuantSpec.preset("W4A16_ASYM"), (4096, 4096), 16) == pytest.approx(4 + 20 / 128)


def test_clipped_and_levels_used():
    from quantlab.core import metrics

    spec = ql.QuantSpec(num_bits=8, strategy="tensor")
    x = torch.linspace(-1, 1, 1001).reshape(1, -1)
    qt = ql.quantize_with(x, torch.tensor([0.5 / 127.5]), None, spec)  # range covers only |x| <= 0.5
    assert metrics.clipped_fraction(x, qt) == pytest.approx(0.5, abs=0.01)
    full = ql.quantize(x, spec)
    assert metrics.clipped_fraction(x, full) == 0
    assert metrics.levels_used_fraction(full) == pytest.approx(255 / 256)
    positive = ql.quantize(x.abs(), spec)  # symmetric grid on one-sided data wastes the negative half
    assert metrics.levels_used_fraction(positive) <= 0.51


def test_symmetric_max_is_not_counted_as_clipped():
    """max/scale lands on qmax + 0.5 (give or take float rounding): that is rounding, not clipping."""
    from quantlab.core import metrics

    for seed in range(20):
        x = torch.randn(64, 256, generator=torch.Generator().manual_seed(seed))
        for bits in (4, 8):
            qt = ql.quantize(x, ql.QuantSpec(num_bits=bits, strategy="channel"))
            assert metrics.clipped_fraction(x, qt) == 0
