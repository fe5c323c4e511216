"""Scales, zero points and the quantize/dequantize arithmetic, bit-exact with compressed-tensors 0.20.

The arithmetic mirrors `compressed_tensors.quantization.utils.helpers.calculate_qparams` and
`lifecycle/forward.py`: zero is always inside the range, the scale is computed in the tensor's own
dtype, codes are `round_half_even(clamp(x / scale + zp, qmin, qmax))`, and FP8 clamps to ±448
before the cast (whether a bare cast of 470 to float8_e4m3fn saturates or gives NaN depends on the
torch version: 2.11 gives NaN, 2.13 on CPU saturates). Doing it in the input dtype, not in float32,
is what makes a bf16 weight get the very codes llm-compressor writes for it.

Microscaling follows the same functions: FP4 E2M1 values round half-to-even onto
{0, 0.5, 1, 1.5, 2, 3, 4, 6}; NVFP4's group scales are rounded to E4M3 after being multiplied by
a global scale (448 × 6 / max|x|, so the largest group scale lands on E4M3's largest value), and
MX scales are powers of two, 2^(floor(log2 max|group|) − emax of the element format), rounded the
way compressed-tensors rounds them (the max is first rounded to the element's mantissa width).

FP8_BLOCK's tiles follow the same arithmetic per tile (`blocks` pads a partial edge tile with
zeros, as compressed-tensors does). NF4 is bitsandbytes' arithmetic instead (see `nf4`): fp32
absmax scales, the nearest of 16 table levels, optionally double-quantized scales.

This module takes its parameters as given (observed by min-max here, or by `observers`);
`quantize.quantize` is the one-call path that observes them on the tensor itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quantlab.core import blocks, nf4
from quantlab.core.errors import QuantlabError
from quantlab.core.spec import QuantSpec

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
FP4_MAX = 6.0
# The eight E2M1 magnitudes in code order (code = sign << 3 | index), and the midpoints between
# them: a value on a midpoint goes to the neighbour with an even mantissa bit, alternately down
# (0.25 -> 0, 1.25 -> 1, 2.5 -> 2, 5 -> 4) and up (0.75 -> 1, 1.75 -> 2, 3.5 -> 4).
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_FP4_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))
# compressed-tensors replaces a zero scale (an all-zero group) by the scale dtype's epsilon
# (E8M0 scales count as an integer type there, whose "epsilon" is 1).
_FP8_SCALE_EPS = 0.125
_E8M0_SCALE_EPS = 1.0
E8M0_BIAS = 127
# MX: the element format's largest power of two (FP4 E2M1: 4 = 2^2, FP8 E4M3: 256 = 2^8), which
# the shared exponent leaves room for; the max is rounded at E2M1's one mantissa bit for both.
_MX_EMAX = {4: 2, 8: 8}
_MX_MANTISSA_BITS = 1
_FLOAT_LAYOUT = {torch.float32: (torch.int32, 23, 8), torch.float16: (torch.int16, 10, 5),
                 torch.bfloat16: (torch.int16, 7, 8)}


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes plus the parameters needed to reconstruct the tensor, in compressed-tensors' layout.

    `q` holds int8 codes in [qmin, qmax], float8_e4m3fn values for FP8, uint8 E2M1 codes (sign
    bit 3, magnitude index in bits 0-2) for FP4, or uint8 indices into NF4's 16 levels; `scale`
    is [1] for tensor, [rows, 1] for channel/token, [rows, cols / group_size] for groups and
    [⌈rows / h⌉, ⌈cols / w⌉] for tiles, holding the scale's value (an E4M3 or a power-of-two number
    for microscaling, NF4's fp32 absmax as dequantization uses it); `zero_point` matches `scale` in
    shape (int8) or is None when symmetric; `global_scale` is NVFP4's [1] float32 divisor of every
    group scale; `nested` NF4's double-quantized scales, and `dtype` the dtype `dequantize` returns
    where it is not the scale's (NF4 keeps fp32 scales for a bf16 weight).
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    spec: QuantSpec
    global_scale: torch.Tensor | None = None
    nested: nf4.NestedScales | None = None
    dtype: torch.dtype | None = None

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def dequantize(self) -> torch.Tensor:
        return dequantize(self)


def grid_range(spec: QuantSpec) -> tuple[float, float]:
    """(qmin, qmax) of the target grid: integer codes, ±448 for FP8 E4M3, ±6 for FP4 E2M1 or NF4's
    ±1, onto which x / absmax falls."""
    if spec.type == "nf4":
        return -1.0, 1.0
    if spec.type == "float":
        top = FP4_MAX if spec.num_bits == 4 else FP8_MAX
        return -top, top
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
def global_scale(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor | None:
    """NVFP4's FP32 global scale for `x` (None for every other strategy): E4M3 max × FP4 max over
    max|x|, computed in x's dtype as llm-compressor does, so a bf16 weight gets a bf16-rounded one."""
    if spec.strategy != "tensor_group":
        return None
    lo, hi = torch.aminmax(x)
    return global_scale_from(lo.reshape(1), hi.reshape(1))


def global_scale_from(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The global scale for an observed range; a range of zero, NaN or overflow gives 1 (none)."""
    top = torch.maximum(torch.minimum(lo, torch.zeros_like(lo)).abs(), torch.maximum(hi, torch.zeros_like(hi)).abs())
    top = torch.clamp(top, min=torch.finfo(top.dtype).tiny)
    scale = torch.nan_to_num(FP8_MAX * FP4_MAX / top, nan=1.0, posinf=1.0, neginf=1.0)
    return scale.to(torch.float32).reshape(1)


def _mx_exponent(top: torch.Tensor, num_bits: int) -> torch.Tensor:
    """E8M0 exponent (biased by 127, as floats) of the MX scale for groups whose max|x| is `top`.

    The max is rounded to the nearest power of two at the element's mantissa width by adding half
    an ulp at that width to its bits and keeping sign and exponent only."""
    int_dtype, mantissa, exponent = _FLOAT_LAYOUT[top.dtype]
    bits = top.view(int_dtype).to(torch.int32) if int_dtype == torch.int16 else top.view(torch.int32)
    half_ulp = 1 << (mantissa - _MX_MANTISSA_BITS - 1)
    keep = ((1 << (exponent + 1)) - 1) << mantissa
    rounded = torch.bitwise_and(bits + half_ulp, keep)
    power = (rounded.to(int_dtype) if int_dtype == torch.int16 else rounded).view(top.dtype)
    return E8M0_BIAS + torch.floor(torch.log2(power)) - _MX_EMAX[num_bits]


@torch.no_grad()
def calculate_qparams(
    min_vals: torch.Tensor, max_vals: torch.Tensor, spec: QuantSpec, global_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero point from observed ranges, in the dtype of the ranges.

    Symmetric: scale = max(|min|, |max|) / ((qmax - qmin) / 2); no zero point.
    Asymmetric: scale = (max - min) / (qmax - qmin); zp = round(clamp(qmin - min / scale)).
    NVFP4 multiplies the scale by the global scale and rounds it to E4M3; MX replaces it by a
    power of two. NF4's scale is the absmax itself (its grid is ±1), in fp32 whatever the weight's
    dtype, and a zero absmax stays zero, as bitsandbytes stores it.
    """
    if spec.type == "nf4":
        min_vals, max_vals = min_vals.float(), max_vals.float()
    dtype = min_vals.dtype
    min_vals = torch.minimum(min_vals, torch.zeros_like(min_vals))
    max_vals = torch.maximum(max_vals, torch.zeros_like(max_vals))
    qmin, qmax = grid_range(spec)
    bit_range = torch.tensor(qmax - qmin, dtype=dtype)
    zero_point: torch.Tensor | None = None
    if spec.symmetric:
        top = torch.maximum(min_vals.abs(), max_vals.abs())
        scale = _mx_exponent(top, spec.num_bits) if spec.scale_dtype == "e8m0" else top / (bit_range / 2)
    else:
        if spec.type == "float":
            raise QuantlabError("asymmetric float formats are not compressed-tensors schemes: use symmetric")
        scale = (max_vals - min_vals) / bit_range
        zp = torch.clamp(qmin - min_vals / scale, qmin, qmax)
        # A zero-width range gives 0/0 above; compressed-tensors' int8 cast turns that NaN into 0.
        zero_point = torch.round(torch.nan_to_num(zp, nan=0.0)).to(torch.int8)
    if global_scale is not None:
        scale = global_scale * scale
    if spec.scale_dtype == "e4m3":
        scale = torch.clamp(scale, -FP8_MAX, FP8_MAX).to(FP8_DTYPE).to(scale.dtype)
    elif spec.scale_dtype == "e8m0":
        exponent = torch.round(torch.clamp(scale, 0, 255)).to(torch.uint8)
        scale = (2.0 ** (exponent.to(torch.int32) - E8M0_BIAS).to(torch.float)).to(dtype)
    if spec.scale_dtype == "e4m3" or dtype == FP8_DTYPE:
        eps = _FP8_SCALE_EPS
    else:
        eps = _E8M0_SCALE_EPS if spec.scale_dtype == "e8m0" else torch.finfo(scale.dtype).eps
    if spec.type != "nf4":
        scale = torch.where(scale == 0, torch.tensor(eps, dtype=scale.dtype), scale)
    return scale, zero_point


def round_to_fp4(scaled: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8: sign << 3 | magnitude index) of values already clamped to ±6."""
    magnitude = scaled.abs()
    index = torch.zeros(scaled.shape, dtype=torch.uint8)
    for midpoint, ties_up in _FP4_MIDPOINTS:
        index += (magnitude >= midpoint if ties_up else magnitude > midpoint).to(torch.uint8)
    return index | ((scaled < 0).to(torch.uint8) << 3)


def fp4_values(codes: torch.Tensor) -> torch.Tensor:
    """The float32 values of E2M1 codes."""
    magnitude = torch.tensor(FP4_VALUES, dtype=torch.float32)[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -magnitude, magnitude)


@torch.no_grad()
def quantize_with(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec,
    global_scale: torch.Tensor | None = None,
) -> QuantizedTensor:
    """Quantize with given parameters (calibrated or searched), not ones observed from `x`."""
    if spec.type == "nf4":
        return _quantize_nf4(x, scale, spec)
    qmin, qmax = grid_range(spec)
    shape = tuple(x.shape)
    step = scale / global_scale if global_scale is not None else scale
    scaled = blocks.as_groups(x, spec) / blocks.expand(step, spec, shape)
    if zero_point is not None:
        scaled = scaled + blocks.expand(zero_point, spec, shape).to(x.dtype)
    clamped = torch.clamp(scaled, qmin, qmax)
    if spec.type == "float" and spec.num_bits == 4:
        codes = round_to_fp4(clamped)
    elif spec.type == "float":
        codes = clamped.to(FP8_DTYPE)
    else:
        codes = torch.round(clamped).to(torch.int8)
    return QuantizedTensor(q=blocks.from_groups(codes, spec, shape), scale=scale, zero_point=zero_point, spec=spec,
                           global_scale=global_scale)


_NF4_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _quantize_nf4(x: torch.Tensor, absmax: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """bitsandbytes' NF4 codes for `x` under fp32 absmax scales, which "dq8" then double-quantizes
    (the codes are chosen with the exact absmax first, as bitsandbytes does)."""
    if x.dtype not in _NF4_DTYPES:
        raise QuantlabError(f"bitsandbytes quantizes fp32, fp16 and bf16 weights to NF4, not {x.dtype}")
    shape = tuple(x.shape)
    absmax = absmax.float()
    normalized = blocks.as_groups(x.float(), spec) * blocks.expand(1 / absmax, spec, shape)
    # An all-zero block is 0 · (1 / 0) = NaN: give it the zero level, which restores it exactly.
    codes = nf4.nf4_codes(torch.nan_to_num(normalized, nan=0.0).clamp(-1, 1))
    nested = nf4.compress(absmax) if spec.scale_dtype == "dq8" else None
    stored = nested.restore().reshape(absmax.shape) if nested is not None else absmax
    return QuantizedTensor(q=blocks.from_groups(codes, spec, shape), scale=stored, zero_point=None, spec=spec,
                           nested=nested, dtype=x.dtype)


@torch.no_grad()
def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    """codes -> (q - zp) * scale (/ global scale), in the scale's dtype, shaped like the original;
    NF4: level × fp32 absmax, rounded once to the weight's dtype."""
    spec, shape = qt.spec, tuple(qt.q.shape)
    step = qt.scale / qt.global_scale if qt.global_scale is not None else qt.scale
    if spec.type == "nf4":
        codes = nf4.NF4_LEVELS[qt.q.long()]
    elif spec.type == "float" and spec.num_bits == 4:
        codes = fp4_values(qt.q)
    else:
        codes = qt.q
    values = blocks.as_groups(codes.to(step.dtype), spec)
    if qt.zero_point is not None:
        values = values - blocks.expand(qt.zero_point, spec, shape).to(step.dtype)
    restored = blocks.from_groups(values * blocks.expand(step, spec, shape), spec, shape)
    return restored.to(qt.dtype) if qt.dtype is not None else restored
