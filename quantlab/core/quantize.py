"""The one-call path: quantize a tensor with parameters observed on the tensor itself.

`qparams` holds the arithmetic (bit-exact with compressed-tensors 0.20) and `observers` the choice
of range; this module puts them together the way llm-compressor does for a weight or a dynamic
activation: observe, compute scale and zero point, quantize.
"""
from __future__ import annotations

import torch

from quantlab.core.observers import observe_qparams
from quantlab.core.qparams import QuantizedTensor, dequantize, global_scale, quantize_with
from quantlab.core.spec import QuantSpec


@torch.no_grad()
def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Quantize `x` with parameters observed on `x` itself (by the spec's observer)."""
    gs = global_scale(x, spec)
    return quantize_with(x, *observe_qparams(x, spec, gs), spec, gs)


@torch.no_grad()
def fake_quantize(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize then dequantize: what the model computes with after quantization."""
    return dequantize(quantize(x, spec))
