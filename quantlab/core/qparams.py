"""Scales, zero points and the quantize/dequantize arithmetic, bit-exact with compressed-tensors 0.20.

The arithmetic mirrors `compressed_tensors.quantization.utils.helpers.calculate_qparams` and
`lifecycle/forward.py`: zero is always inside the range, the scale is computed in the tensor's own
dtype, codes are `round_half_even(clamp(x / scale + zp, qmin, qmax))`, and FP8 clamps to ±448
before the cast (whether a bare cast of 470 to float8_e4m3fn saturates or gives NaN depends on the
torch version: 2.11 gives NaN, 2.13 on CPU saturates). Doing it in the input dtype, not in float32,
is what makes a bf16 weight get the very codes llm-compressor writes for it.

This module takes its parameters as given (observed by min-max here, or by `observers`);
`quantize.quantize` is the one-call path that observes them on the tensor itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quantlab.core import blocks
from quantlab.core.errors import QuantlabError
from quantlab.core.spec import QuantSpec

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
# compressed-tensors replaces a zero scale (an all-zero group) by the scale dtype's epsilon.
_FP8_SCALE_EPS = 0.125


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes plus the parameters needed to reconstruct the tensor, in compressed-tensors' layout.

    `q` holds int8 codes in [qmin, qmax] (or float8_e4m3fn values for FP8); `scale` is [1] for
    tensor, [rows, 1] for channel/token and [rows, cols / group_size] for group;
    `zero_point` matches `scale` in shape (int8) or is None when symmetric.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    spec: QuantSpec

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def dequantize(self) -> torch.Tensor:
        return dequantize(self)


def grid_range(spec: QuantSpec) -> tuple[float, float]:
    """(qmin, qmax) of the target grid: integer codes, or ±448 for FP8 e4m3."""
    if spec.type == "float":
        return -FP8_MAX, FP8_MAX
    return float(spec.qmin), float(spec.qmax)


def check_tensor(x: torch.Tensor, spec: QuantSpec) -> None:
    """One-line errors for tensors a user might hand us that cannot be quantized as asked."""
    if not torch.is_floating_point(x):
        raise QuantlabError(f"expected a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise QuantlabError("the tensor is empty")
    spec.check_shape(tuple(x.shape))
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        raise QuantlabError(f"the tensor has {bad} NaN/Inf values out of {x.numel()}: "
                            "quantization needs finite numbers")


@torch.no_grad()
def observe_minmax(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scale min and max of `x`, shaped like the scale this spec produces."""
    lo, hi = torch.aminmax(blocks.as_groups(x, spec), dim=-1)
    return lo, hi


@torch.no_grad()
def calculate_qparams(
    min_vals: torch.Tensor, max_vals: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero point from observed ranges, in the dtype of the ranges.

    Symmetric: scale = max(|min|, |max|) / ((qmax - qmin) / 2); no zero point.
    Asymmetric: scale = (max - min) / (qmax - qmin); zp = round(clamp(qmin - min / scale)).
    """
    dtype = min_vals.dtype
    min_vals = torch.minimum(min_vals, torch.zeros_like(min_vals))
    max_vals = torch.maximum(max_vals, torch.zeros_like(max_vals))
    qmin, qmax = grid_range(spec)
    bit_range = torch.tensor(qmax - qmin, dtype=dtype)
    zero_point: torch.Tensor | None = None
    if spec.symmetric:
        scale = torch.maximum(min_vals.abs(), max_vals.abs()) / (bit_range / 2)
    else:
        if spec.type == "float":
            raise QuantlabError("asymmetric FP8 is not a compressed-tensors scheme: use symmetric")
        scale = (max_vals - min_vals) / bit_range
        zp = torch.clamp(qmin - min_vals / scale, qmin, qmax)
        # A zero-width range gives 0/0 above; compressed-tensors' int8 cast turns that NaN into 0.
        zero_point = torch.round(torch.nan_to_num(zp, nan=0.0)).to(torch.int8)
    eps = _FP8_SCALE_EPS if dtype == FP8_DTYPE else torch.finfo(dtype).eps
    scale = torch.where(scale == 0, torch.tensor(eps, dtype=dtype), scale)
    return scale, zero_point


@torch.no_grad()
def quantize_with(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
) -> QuantizedTensor:
    """Quantize with given parameters (calibrated or searched), not ones observed from `x`."""
    qmin, qmax = grid_range(spec)
    shape = tuple(x.shape)
    scaled = blocks.as_groups(x, spec) / blocks.expand(scale, spec, shape)
    if zero_point is not None:
        scaled = scaled + blocks.expand(zero_point, spec, shape).to(x.dtype)
    clamped = torch.clamp(scaled, qmin, qmax)
    if spec.type == "float":
        codes = clamped.to(FP8_DTYPE)
    else:
        codes = torch.round(clamped).to(torch.int8)
    return QuantizedTensor(q=codes.reshape(shape), scale=scale, zero_point=zero_point, spec=spec)


@torch.no_grad()
def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    """codes -> (q - zp) * scale, in the scale's dtype, shaped like the original tensor."""
    spec, shape = qt.spec, tuple(qt.q.shape)
    values = blocks.as_groups(qt.q, spec).to(qt.scale.dtype)
    if qt.zero_point is not None:
        values = values - blocks.expand(qt.zero_point, spec, shape).to(qt.scale.dtype)
    return (values * blocks.expand(qt.scale, spec, shape)).reshape(shape)
