"""NVFP4, MXFP4, MXFP8 and W4AFP8 against compressed-tensors 0.20 itself, bit for bit.

The reference path is llm-compressor's for a weight: a min-max observer per group (and over the
whole tensor for NVFP4's global scale, `generate_gparam`), compressed-tensors' `calculate_qparams`
for the scales, and its `quantize` / `dequantize` for the values.
"""
import pytest
import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize
from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize
from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

from quantlab.core import qparams
from quantlab.core.errors import QuantlabError
from quantlab.core.quantize import fake_quantize, quantize
from quantlab.core.spec import QuantSpec, scheme_spec

# The registry's own specs, so what is tested against compressed-tensors is what the lab applies.
SPECS = {name: scheme_spec(name) for name in ("NVFP4A16", "MXFP4A16", "MXFP8A16")}
NVFP4, MXFP4, MXFP8 = SPECS["NVFP4A16"], SPECS["MXFP4A16"], SPECS["MXFP8A16"]
SHAPES = [(16, 64), (384, 1536), (7, 96), (1, 32), (130, 160)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _weight(shape: tuple[int, int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g) * 0.1
    w[0, : shape[1] // 2] *= 40  # an outlier row stretches some groups and the global scale
    if shape[1] >= 64:
        w[-1, 32:64] = 0  # an all-zero group: the epsilon scale
    return w.to(dtype)


def _reference(w: torch.Tensor, args: QuantizationArgs):
    g = w.reshape(w.shape[0], -1, args.group_size)
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    gs = None
    if args.strategy == "tensor_group":
        tlo, thi = torch.aminmax(w)
        gs = generate_gparam(tlo.reshape(1), thi.reshape(1))
    scale, zp = calculate_qparams(lo, hi, args, global_scale=gs)
    values = ct_quantize(w, scale, zp, args, global_scale=gs)
    restored = ct_dequantize(values, scale, zp, args, global_scale=gs)
    return gs, scale, values, restored


@pytest.mark.parametrize("preset", sorted(SPECS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scales_codes_and_values_match_compressed_tensors(preset, dtype, shape):
    spec = SPECS[preset]
    if shape[1] % spec.group_size:
        pytest.skip("group does not divide")
    args = preset_name_to_scheme(preset, ["Linear"]).weights
    w = _weight(shape, dtype, seed=sum(shape))
    gs, scale, values, restored = _reference(w, args)
    qt = quantize(w, spec)
    assert torch.equal(qt.scale, scale) and qt.scale.dtype == scale.dtype
    if gs is None:
        assert qt.global_scale is None
    else:
        assert torch.equal(qt.global_scale, gs)
    ours = qparams.fp4_values(qt.q) if spec.num_bits == 4 else qt.q.float()
    assert torch.equal(ours, values.float())
    assert torch.equal(qt.dequantize().to(dtype), restored.to(dtype))


def test_fp4_rounding_is_compressed_tensors_cast_including_every_tie():
    from compressed_tensors.quantization.utils.fp4_utils import cast_to_fp4

    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    x = torch.cat([ties, -ties, torch.linspace(-6, 6, 4801), torch.tensor([0.0, -0.0, 1e-8, -1e-8])])
    codes = qparams.round_to_fp4(x)
    assert torch.equal(qparams.fp4_values(codes), cast_to_fp4(x.clone()))
    assert qparams.fp4_values(qparams.round_to_fp4(ties)).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    # a small negative value keeps its sign (code 8, -0.0), as compressed-tensors' packing reads it
    assert qparams.round_to_fp4(torch.tensor([-1e-8])).item() == 8


def test_mx_scales_are_powers_of_two_and_nvfp4_scales_are_e4m3_numbers():
    w = _weight((64, 256), torch.bfloat16, seed=3)
    mx = quantize(w, MXFP4).scale.float()
    assert torch.equal(torch.log2(mx), torch.log2(mx).round())
    nv = quantize(w, NVFP4)
    assert torch.equal(nv.scale, nv.scale.to(torch.float8_e4m3fn).float())
    assert nv.scale.max().item() == 448.0  # the global scale puts the largest group on E4M3's top


def test_nvfp4_beats_mxfp4_on_a_real_spread_of_groups():
    w = _weight((256, 512), torch.float32, seed=5)
    def err(spec):
        return (fake_quantize(w, spec) - w).pow(2).mean().item()
    assert err(NVFP4) < err(MXFP4)  # finer groups and non-power-of-two scales


@pytest.mark.parametrize("preset", ["NVFP4", "MXFP4", "MXFP8", "W4AFP8"])
def test_activation_fake_quantization_matches_compressed_tensors(preset):
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize as ct_fake
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp

    from quantlab.core.observers import quantize_activation

    acts = scheme_spec(preset).activations
    assert acts is not None
    args = preset_name_to_scheme(preset, ["Linear"]).input_activations
    x = _weight((24, 128), torch.bfloat16, seed=11)
    module = torch.nn.Linear(128, 8)
    gs = None
    if args.strategy == "tensor_group":
        lo, hi = torch.aminmax(x)
        gs = generate_gparam(lo.reshape(1), hi.reshape(1))
    batch = x.unsqueeze(0)  # a Linear's input as compressed-tensors sees it: [batch, tokens, features]
    scale, zp = compute_dynamic_scales_and_zp(batch, args, module, global_scale=gs)
    expected = ct_fake(batch, scale, zp, args, global_scale=gs)[0]
    ours = quantize_activation(x, acts, calibration=x).dequantize().to(x.dtype)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32}, "8-bit group scales"),
    ({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 16, "scale_dtype": "e8m0"}, "groups of 32"),
    ({"num_bits": 8, "type": "float", "strategy": "group", "group_size": 32, "scale_dtype": "e4m3"}, "global scale"),
    ({"num_bits": 8, "strategy": "tensor_group", "group_size": 16, "scale_dtype": "e4m3"}, "NVFP4"),
    ({"num_bits": 4, "type": "float", "symmetric": False, "strategy": "group", "group_size": 32,
      "scale_dtype": "e8m0"}, "asymmetric"),
    ({"num_bits": 8, "strategy": "token", "dynamic": "local"}, "tensor_group"),
    ({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32, "scale_dtype": "e8m0",
      "observer": "mse"}, "MSE"),
])
def test_impossible_microscaling_specs_are_one_line_errors(kwargs, message):
    with pytest.raises(QuantlabError, match=message) as info:
        QuantSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_microscaling_specs_round_trip_through_the_url():
    for spec in (NVFP4, MXFP4, MXFP8, NVFP4.with_(dynamic="local")):
        assert QuantSpec.from_url(spec.to_url()) == spec


def test_fp4_packing_and_e8m0_bytes_are_what_compressed_tensors_stores():
    from compressed_tensors.compressors.mx_utils import compress_mx_scale
    from compressed_tensors.compressors.nvfp4.helpers import pack_fp4_to_uint8

    from quantlab.core import packing

    w = _weight((48, 128), torch.bfloat16, seed=9)
    nv = quantize(w, NVFP4)
    theirs = pack_fp4_to_uint8(qparams.fp4_values(nv.q).to(torch.bfloat16))
    assert torch.equal(packing.pack_fp4(nv.q), theirs)
    assert torch.equal(packing.unpack_fp4(theirs), nv.q)
    mx = quantize(w, MXFP4)
    assert torch.equal(packing.e8m0_bytes(mx.scale), compress_mx_scale(mx.scale, torch.uint8))
    with pytest.raises(QuantlabError, match="odd"):
        packing.pack_fp4(torch.zeros(2, 3, dtype=torch.uint8))
