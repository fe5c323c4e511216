"""FP8_BLOCK against llm-compressor 0.14 and compressed-tensors 0.20 themselves, bit for bit.

The reference path for a weight is llm-compressor's: its min-max weight observer (which zero-pads
the weight to whole 128x128 tiles), compressed-tensors' `calculate_qparams` behind it, then
compressed-tensors' `quantize` / `dequantize` / `fake_quantize` with the block arguments (which pad,
quantize per tile and cut the padding off). Activations take compressed-tensors' dynamic path:
`compute_dynamic_scales_and_zp` per token and group of 128, then `fake_quantize`.
"""
import math

import pytest
import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize
from compressed_tensors.quantization.lifecycle.forward import fake_quantize as ct_fake_quantize
from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize
from compressed_tensors.quantization.lifecycle.initialize import initialize_qparams
from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp

import quantlab as ql
from quantlab.core import blocks
from quantlab.core.errors import QuantlabError
from quantlab.core.observers import quantize_activation
from quantlab.core.spec import FP8_BLOCK, scheme_spec
from quantlab.io import models, sizing
from tests.core.llmcompressor_parts import llmcompressor_module

SPEC = scheme_spec("fp8-block")  # the registry's own spec: what the lab applies is what is tested
WEIGHTS, ACTS = SPEC.with_(activations=None), SPEC.activations
CT = preset_name_to_scheme("FP8_BLOCK", ["Linear"])
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Whole tiles, and edge tiles cut by rows, by columns, by both, and a matrix smaller than one tile.
SHAPES = [(256, 384), (384, 1536), (130, 300), (129, 128), (128, 129), (7, 1000), (1, 5)]


def _weight(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g) * 0.1
    w[0, : shape[1] // 2] *= 40  # an outlier row stretches the tiles it crosses
    if shape[0] >= 256 and shape[1] >= 128:
        w[128:256, :128] = 0  # an all-zero tile: the epsilon scale
    return w.to(dtype)


@pytest.fixture(scope="module")
def observer():
    with llmcompressor_module("llmcompressor.observers.min_max") as module:
        yield module.MemorylessMinMaxObserver


def _reference(w: torch.Tensor, observer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    args = CT.weights.model_copy(deep=True)
    obs = observer("weight", args)
    obs(w)
    scale = obs.get_qparams()["scale"]
    values = ct_quantize(w, scale, None, args, dtype=torch.float8_e4m3fn)
    return scale, values, ct_dequantize(values, scale, None, args), ct_fake_quantize(w, scale, None, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tile_scales_codes_and_values_match_llmcompressor(observer, shape, dtype):
    w = _weight(shape, dtype)
    scale, values, restored, fake = _reference(w, observer)
    qt = ql.quantize(w, WEIGHTS)
    assert tuple(scale.shape) == (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
    assert torch.equal(qt.scale, scale) and qt.scale.dtype == scale.dtype == dtype
    assert qt.q.dtype == torch.float8_e4m3fn and qt.q.shape == w.shape
    assert torch.equal(qt.q.view(torch.uint8), values.view(torch.uint8))  # every byte, signed zeros included
    assert torch.equal(qt.dequantize(), restored) and torch.equal(ql.fake_quantize(w, WEIGHTS), fake)


def test_the_zero_tile_gets_the_epsilon_scale_and_an_edge_tile_only_its_own_range(observer):
    w = _weight((130, 300), torch.float32)
    qt = ql.quantize(w, WEIGHTS)
    # The last row of tiles holds two real rows; its scale is their range, not the padding's zeros.
    assert torch.equal(qt.scale[1, 0], w[128:, :128].abs().max() / 448)
    w = _weight((256, 384), torch.float32)
    assert ql.quantize(w, WEIGHTS).scale[1, 0] == torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_activation_groups_of_128_per_token_match_compressed_tensors(dtype):
    real = models.activation("encoder.layer.0.intermediate.dense")  # [tokens, 384], outlier channels
    g = torch.Generator().manual_seed(1)
    made_up = torch.randn(9, 512, generator=g) * torch.logspace(-3, 2, 512)
    for x in (real.to(dtype), made_up.to(dtype)):
        scale, zp = compute_dynamic_scales_and_zp(x.unsqueeze(0), CT.input_activations, torch.nn.Module())
        want = ct_fake_quantize(x.unsqueeze(0), scale, zp, CT.input_activations)[0]
        qt = quantize_activation(x, ACTS)
        assert torch.equal(qt.scale, scale[0]) and qt.scale.shape == (x.shape[0], x.shape[1] // 128)
        assert torch.equal(qt.dequantize(), want) and qt.dequantize().dtype == dtype


def test_activations_need_whole_groups_of_128():
    with pytest.raises(QuantlabError, match="group_size 128 does not divide the input dimension 300") as err:
        quantize_activation(torch.randn(4, 300), ACTS)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scale_shape_and_stored_bits_are_compressed_tensors_own(shape):
    module = torch.nn.Module()
    initialize_qparams(module, "weight", CT.weights, shape, torch.bfloat16)
    assert blocks.scale_shape(WEIGHTS, shape) == tuple(module.weight_scale.shape)
    layout = {o.name: o for o in sizing.layer_layout(sizing.SourceTensor("l.weight", shape, "BF16", True), SPEC)}
    assert set(layout) == {"l.weight", "l.weight_scale"}  # dynamic activations store nothing
    assert layout["l.weight"].dtype == "F8_E4M3" and layout["l.weight_scale"].shape == tuple(module.weight_scale.shape)
    tiles = math.ceil(shape[0] / 128) * math.ceil(shape[1] / 128)
    assert sizing.stored_bits_per_weight(shape, "BF16", SPEC) == 8 + 16 * tiles / math.prod(shape)
    assert sizing.stored_bits_per_weight(shape, "F32", SPEC) == 8 + 32 * tiles / math.prod(shape)


def test_registry_entry_is_the_compressed_tensors_preset():
    assert ql.QuantSpec.preset("FP8_BLOCK") == SPEC
    assert SPEC.block_structure == FP8_BLOCK
    assert QuantizationArgs(**SPEC.to_ct_args()) == CT.weights
    assert QuantizationArgs(**ACTS.to_ct_args()) == CT.input_activations
    assert SPEC.to_url() == "fp8-block"
    spelled = "fp8-sym-b128x128+fp8-sym-g128-dyn"
    assert ql.QuantSpec.from_url(spelled) == SPEC
    assert ql.QuantSpec.from_url("fp8-sym-b64x32").block_structure == (64, 32)


@pytest.mark.parametrize("fields, message", [
    ({"strategy": "block"}, "needs block_structure"),
    ({"strategy": "block", "block_structure": (128,)}, "needs block_structure"),
    ({"strategy": "block", "block_structure": (0, 128)}, "needs block_structure"),
    ({"strategy": "channel", "block_structure": (128, 128)}, "only used with strategy 'block'"),
    ({"strategy": "block", "block_structure": (128, 128), "group_size": 128}, "group_size is only used"),
])
def test_block_fields_are_validated(fields, message):
    with pytest.raises(QuantlabError, match=message):
        ql.QuantSpec(num_bits=8, type="float", **fields)


def test_block_scales_are_for_weights_only():
    with pytest.raises(QuantlabError, match="block scales are for weights"):
        WEIGHTS.with_(activations=WEIGHTS.with_(dynamic=True))
    listed = ql.QuantSpec(num_bits=8, type="float", strategy="block", block_structure=[64, 64])
    assert listed.block_structure == (64, 64)  # a list, as config.json holds it, becomes a hashable tuple
