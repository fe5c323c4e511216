"""NF4 with double quantization, against bitsandbytes' published algorithm (bitsandbytes itself is
not installed: the oracles are its construction of the levels, the constants of its CUDA kernel,
closed forms and error bounds)."""
import math

import pytest
import torch

import quantlab as ql
from quantlab.core import metrics, nf4
from quantlab.core.errors import QuantlabError
from quantlab.core.formats import round_to_format
from quantlab.core.spec import scheme_spec
from quantlab.io import models, sizing

DQ, FP32 = scheme_spec("nf4"), scheme_spec("nf4-fp32")
LAYER = "encoder.layer.0.intermediate.dense"
# bitsandbytes' csrc/kernels.cu, dQuantizeNF4: the decision tree's fp32 constants, in order.
CUDA_TREE = (-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
             -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
             0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
             0.5016634166240692, 0.6427869200706482, 0.8614784181118011)


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    return models.load_tensor(models.ModelSource.embedded(), f"{LAYER}.weight")


def test_levels_are_bitsandbytes_normal_map_as_it_builds_it():
    """`create_normal_map(offset=0.9677083)`: 8 positive and 7 negative normal quantiles and 0,
    scaled to [-1, 1]; its distinct values are the 16 levels, to the bit."""
    norm = pytest.importorskip("scipy.stats").norm
    offset = 0.9677083
    positive = norm.ppf(torch.linspace(offset, 0.5, 9)[:-1]).tolist()
    negative = (-norm.ppf(torch.linspace(offset, 0.5, 8)[:-1])).tolist()
    values = torch.Tensor(positive + [0] * (256 - 15) + negative).sort().values
    assert torch.equal(torch.unique(values / values.max()), nf4.NF4_LEVELS)


def test_codes_follow_the_cuda_decision_tree_ties_to_the_lower_level():
    assert torch.equal(nf4.NF4_THRESHOLDS, torch.tensor(CUDA_TREE, dtype=torch.float32))
    x = torch.linspace(-1, 1, 20001)
    assert torch.equal(nf4.nf4_codes(x), (x.unsqueeze(1) > nf4.NF4_THRESHOLDS).sum(dim=1).to(torch.uint8))
    assert torch.equal(nf4.nf4_codes(nf4.NF4_THRESHOLDS), torch.arange(15, dtype=torch.uint8))  # on a midpoint
    assert torch.equal(nf4.nf4_codes(nf4.NF4_LEVELS), torch.arange(16, dtype=torch.uint8))
    # Away from the midpoints it is the nearest level, as the Formats lesson rounds into NF4.
    assert torch.equal(nf4.NF4_LEVELS[nf4.nf4_codes(x).long()], round_to_format(x, "nf4"))


def test_dynamic_map_is_bitsandbytes_signed_8_bit_map():
    code = nf4.DYNAMIC_MAP
    assert code.numel() == 256 and code.dtype == torch.float32
    assert torch.all(code[1:] > code[:-1])  # 256 distinct codes, sorted
    assert code[-1] == 1 and (code == 0).sum() == 1
    assert torch.equal(code[:127], -code[128:255].flip(0))  # both signs of every mean, 1.0 alone on top
    # Decade i, [10^(i-7), 10^(i-6)), holds 2^i means: the more exponent, the fewer fraction bits.
    positive = code[(code > 0) & (code < 1)]
    assert [int(((positive >= 10.0 ** (i - 7)) & (positive < 10.0 ** (i - 6))).sum()) for i in range(7)] == \
        [2**i for i in range(7)]
    assert code[-2] == pytest.approx((1 + 1 - 0.9 / 64) / 2)  # the mean of the top interval of [0.1, 1]


@pytest.mark.parametrize("spec", [DQ, FP32], ids=lambda s: s.label)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_round_trip_is_level_times_scale_rounded_once(weight, spec, dtype):
    w = weight.to(dtype)
    qt = ql.quantize(w, spec)
    assert qt.q.dtype == torch.uint8 and int(qt.q.max()) <= 15 and qt.q.shape == w.shape
    assert qt.scale.dtype == torch.float32 and qt.scale.shape == (1536, 384 // 64)
    restored = qt.dequantize()
    want = (nf4.NF4_LEVELS[qt.q.long()].reshape(1536, 6, 64) * qt.scale.unsqueeze(-1)).reshape(w.shape).to(dtype)
    assert restored.dtype == dtype and torch.equal(restored, want)
    assert torch.equal(ql.fake_quantize(w, spec), restored)
    # The codes were chosen against the exact absmax: the nearest level to x / absmax, every value.
    absmax = w.float().reshape(1536, 6, 64).abs().amax(dim=-1, keepdim=True)
    normalized = (w.float().reshape(1536, 6, 64) * (1 / absmax)).reshape(w.shape)
    assert torch.equal(qt.q, nf4.nf4_codes(normalized))
    if spec is FP32:
        assert torch.equal(qt.scale, absmax.squeeze(-1)) and qt.nested is None


def test_each_block_max_is_restored_exactly_with_fp32_absmax_and_a_zero_block_stays_zero():
    w = torch.randn(4, 128, generator=torch.Generator().manual_seed(0))
    w[1, 64:] = 0
    qt = ql.quantize(w, FP32)
    restored = qt.dequantize()
    top = w.reshape(4, 2, 64).abs().argmax(dim=-1)
    blocks_of = w.reshape(4, 2, 64)
    assert torch.equal(restored.reshape(4, 2, 64).gather(-1, top.unsqueeze(-1)),
                       blocks_of.gather(-1, top.unsqueeze(-1)))  # ±absmax is level ±1
    assert qt.scale[1, 1] == 0 and torch.equal(restored[1, 64:], torch.zeros(64))
    assert torch.equal(ql.quantize(w, DQ).dequantize()[1, 64:], torch.zeros(64))


def test_double_quantized_scales_stay_within_half_a_code_step(weight):
    qt_fp32, qt_dq = ql.quantize(weight, FP32), ql.quantize(weight, DQ)
    absmax, nested = qt_fp32.scale.reshape(-1), qt_dq.nested
    assert nested is not None and nested.codes.dtype == torch.uint8
    assert nested.codes.numel() == absmax.numel() and nested.absmax.numel() == math.ceil(absmax.numel() / 256)
    assert torch.equal(nested.offset, absmax.mean())
    # Each restored scale is off by at most half the gap between its code and the neighbour on the
    # side of the error, times its block's second-level scale (plus fp32 rounding of the sums).
    error = qt_dq.scale.reshape(-1) - absmax
    code = nested.codes.long()
    neighbour = torch.where(error > 0, (code - 1).clamp(min=0), (code + 1).clamp(max=255))
    gap = (nf4.DYNAMIC_MAP[code] - nf4.DYNAMIC_MAP[neighbour]).abs()
    second = nested.absmax.repeat_interleave(256)[: absmax.numel()]
    assert torch.all(error.abs() <= gap / 2 * second + 4 * torch.finfo(torch.float32).eps * absmax)
    assert error.abs().max() < 0.01 * absmax.max()  # the map's coarsest step is 0.9/64 of [-1, 1]
    # The weights keep their codes; only the scale they are multiplied by moves.
    assert torch.equal(qt_dq.q, qt_fp32.q)
    assert abs(metrics.sqnr_db(weight, qt_dq.dequantize()) - metrics.sqnr_db(weight, qt_fp32.dequantize())) < 0.05


def test_a_partial_last_block_of_scales_gets_its_own_second_level_scale():
    absmax = torch.rand(300, generator=torch.Generator().manual_seed(3)) + 0.5
    absmax[-1] = 9.0  # the last 44 scales' block is the only one this outlier widens
    nested = nf4.compress(absmax)
    centred = absmax - absmax.mean()
    assert nested.absmax.shape == (2,)
    assert torch.equal(nested.absmax, torch.stack([centred[:256].abs().max(), centred[256:].abs().max()]))
    # The first block's error is bounded by its own, narrower second-level scale (coarsest half step).
    coarsest = (nf4.DYNAMIC_MAP[1:] - nf4.DYNAMIC_MAP[:-1]).max() / 2
    assert (nested.restore() - absmax)[:256].abs().max() <= coarsest * nested.absmax[0] + 1e-6
    assert nested.absmax[0] < nested.absmax[1] / 4


@pytest.mark.parametrize("shape", [(1536, 384), (4096, 4096), (100, 64)])
def test_stored_bits_per_weight(shape):
    n = math.prod(shape)
    blocks = n // 64
    assert sizing.stored_bits_per_weight(shape, "BF16", FP32) == 4 + 32 / 64
    assert sizing.stored_bits_per_weight(shape, "BF16", DQ) == 4 + 8 / 64 + 32 * math.ceil(blocks / 256) / n
    assert sizing.stored_bits_per_weight(shape, "F32", DQ) == sizing.stored_bits_per_weight(shape, "BF16", DQ)
    if blocks % 256 == 0:
        assert sizing.stored_bits_per_weight(shape, "BF16", DQ) == 4 + 8 / 64 + 32 / (64 * 256)


def test_nf4_layer_layout_is_bitsandbytes_quant_state():
    layout = sizing.layer_layout(sizing.SourceTensor("l.weight", (1536, 384), "BF16", True), DQ)
    got = {o.name: (o.shape, o.dtype, o.kind) for o in layout}
    assert got == {
        "l.weight": ((1536 * 384 // 2, 1), "U8", "packed weights"),
        "l.weight.absmax": ((1536 * 6,), "U8", "scales"),
        "l.weight.nested_absmax": ((1536 * 6 // 256,), "F32", "scales"),
        "l.weight.nested_quant_map": ((256,), "F32", "code books"),
        "l.weight.quant_map": ((16,), "F32", "code books"),
    }


@pytest.mark.parametrize("fields, message", [
    ({"num_bits": 3}, "NF4 is 4-bit"),
    ({"symmetric": False}, "NF4 is 4-bit"),
    ({"strategy": "channel", "group_size": None}, "NF4 is 4-bit"),
    ({"group_size": 96}, "blocks of 32, 64"),
    ({"observer": "mse"}, "no observer"),
    ({"scale_dtype": "e4m3"}, "no observer"),
    ({"activations": ql.QuantSpec(num_bits=8, strategy="token", dynamic=True)}, "weights only"),
])
def test_nf4_rules_are_one_line_errors(fields, message):
    with pytest.raises(QuantlabError, match=message) as err:
        FP32.with_(**fields)
    assert "\n" not in str(err.value)


def test_nf4_spec_round_trips_and_has_no_compressed_tensors_config():
    for spec in (DQ, FP32, FP32.with_(group_size=128)):
        assert ql.QuantSpec.from_url(spec.to_url()) == spec
    assert DQ.to_url() == "nf4" and ql.QuantSpec.from_url("nf4-sym-g64-dq8") == DQ
    with pytest.raises(QuantlabError, match="dq8"):
        ql.QuantSpec(num_bits=4, strategy="group", group_size=64, scale_dtype="dq8")
    with pytest.raises(QuantlabError, match="weights only"):
        ql.QuantSpec(num_bits=8, strategy="channel", activations=FP32)
    with pytest.raises(QuantlabError, match="not a compressed-tensors scheme"):
        DQ.to_ct_scheme()
    with pytest.raises(QuantlabError, match="fp32, fp16 and bf16"):
        ql.quantize(torch.randn(2, 64, dtype=torch.float64), DQ)
