"""The reference: what compressed-tensors' own ModelCompressor writes for a model and a QuantSpec.

It quantizes with compressed-tensors' arithmetic (its calculate_qparams on min-max ranges, its
compressors), saves with transformers' save_pretrained and writes the config with update_config:
the steps llm-compressor takes after calibration. Shared by the sizing and export tests.
"""
from __future__ import annotations

from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
    apply_quantization_config,
)
from compressed_tensors.quantization.utils import (
    calculate_qparams,
    generate_gparam,
    maybe_pad_tensor_for_block_quant,
)

import quantlab as ql

SCALE_DTYPES = {"e4m3": torch.float8_e4m3fn, "e8m0": torch.uint8}


def ct_args(spec: ql.QuantSpec, static_activation: bool = False) -> QuantizationArgs:
    extra: dict[str, object] = {"observer": "static_minmax"} if static_activation else {}
    if spec.scale_dtype is not None:
        extra["scale_dtype"] = SCALE_DTYPES[spec.scale_dtype]
    if spec.block_structure is not None:
        extra["block_structure"] = list(spec.block_structure)
    return QuantizationArgs(num_bits=spec.num_bits, type=spec.type, symmetric=spec.symmetric,
                            strategy=spec.strategy, group_size=spec.group_size, dynamic=spec.dynamic, **extra)


def ct_scheme(spec: ql.QuantSpec) -> QuantizationScheme:
    acts = spec.activations
    # NVFP4's "local" activations calibrate their global scale, as static ones calibrate their scale.
    return QuantizationScheme(
        targets=["Linear"], weights=ct_args(spec),
        input_activations=ct_args(acts, static_activation=acts.dynamic is not True) if acts is not None else None,
    )


def weight_minmax(w: torch.Tensor, args: QuantizationArgs) -> tuple[torch.Tensor, torch.Tensor]:
    if args.strategy == "tensor":
        lo, hi = torch.aminmax(w)
        return lo.reshape(1), hi.reshape(1)
    if args.strategy == "channel":
        return w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    if args.strategy == "block":  # llm-compressor's observer: zero-padded to whole tiles, one range per tile
        h, width = args.block_structure
        padded = maybe_pad_tensor_for_block_quant(w, (h, width))
        tiles = padded.reshape(padded.shape[0] // h, h, padded.shape[1] // width, width).transpose(1, 2).flatten(-2)
        return tiles.amin(dim=-1), tiles.amax(dim=-1)
    # group and tensor_group
    g = w.reshape(w.shape[0], -1, args.group_size)
    return g.amin(dim=-1), g.amax(dim=-1)


@torch.no_grad()
def calibrate(model: torch.nn.Module, spec: ql.QuantSpec, ignore: list[str],
              inputs: dict[str, torch.Tensor] | None = None) -> None:
    """Attach the scheme and set every qparam with compressed-tensors' own arithmetic."""
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": ct_scheme(spec)}, ignore=ignore))
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None:
            continue
        global_scale = None
        if hasattr(module, "weight_global_scale"):  # NVFP4: llm-compressor's global scale over the whole weight
            lo, hi = torch.aminmax(module.weight)
            global_scale = generate_gparam(lo.reshape(1), hi.reshape(1))
            module.weight_global_scale.data.copy_(global_scale)
        scale, zp = calculate_qparams(*weight_minmax(module.weight, scheme.weights), scheme.weights,
                                      global_scale=global_scale)
        module.weight_scale.data.copy_(scale)
        if zp is not None and hasattr(module, "weight_zero_point"):
            module.weight_zero_point.data.copy_(zp)
        if hasattr(module, "input_scale"):
            assert inputs is not None, "static activations need captured inputs"
            lo, hi = torch.aminmax(inputs[name])
            a_scale, _ = calculate_qparams(lo.reshape(1), hi.reshape(1), scheme.input_activations)
            module.input_scale.data.copy_(a_scale)
        if hasattr(module, "input_global_scale"):
            assert inputs is not None, "NVFP4 activations need captured inputs for their global scale"
            lo, hi = torch.aminmax(inputs[name])
            module.input_global_scale.data.copy_(generate_gparam(lo.reshape(1), hi.reshape(1)))
        module.quantization_status = QuantizationStatus.FROZEN


def write_reference(model: torch.nn.Module, spec: ql.QuantSpec, ignore: list[str], out: Path,
                    inputs: dict[str, torch.Tensor] | None = None) -> Path:
    calibrate(model, spec, ignore, inputs)
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(str(out))
    return out


def meta_compressed_bytes(model: torch.nn.Module, spec: ql.QuantSpec, ignore: list[str]) -> int:
    """Bytes of every tensor ModelCompressor leaves on a meta-device model (no weights needed).

    compressed-tensors' pack-quantized compressor has a meta path that shapes weight_packed and
    weight_shape exactly; asymmetric zero points are not packed on that path, so symmetric only.
    """
    assert spec.symmetric
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": ct_scheme(spec)}, ignore=ignore))
    ModelCompressor.from_pretrained_model(model).compress_model(model)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
