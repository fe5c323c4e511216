"""FP8 W8A8: weights in float8 e4m3 with one scale per output channel, activations quantized per
token on the fly (the FP8_DYNAMIC scheme), then one `torch._scaled_mm` on the fp8 tensor cores.

The per-token step is a Triton kernel that reproduces `quantlab.quantize` with the FP8_DYNAMIC
activation spec bit for bit: scale = amax / 448 rounded to the activation dtype (a zero row gets
the dtype's epsilon), codes = clamp(x / scale, ±448) with the division rounded to that dtype too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from quantlab.core.errors import QuantlabError
from quantlab.core.qparams import FP8_DTYPE, FP8_MAX, QuantizedTensor

_FP8_MAX = tl.constexpr(FP8_MAX)


@dataclass(frozen=True, eq=False)
class Fp8Linear:
    weight: torch.Tensor  # float8_e4m3fn [N, K]
    scale: torch.Tensor  # float32 [1, N]: _scaled_mm's row-wise layout for its second operand

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor) -> Fp8Linear:
        if qt.q.dtype != FP8_DTYPE or qt.spec.strategy != "channel":
            raise QuantlabError(f"FP8 W8A8 takes per-channel float8 weights, not {qt.spec.label}")
        return cls(qt.q.contiguous(), qt.scale.float().reshape(1, -1).contiguous())


@triton.jit
def _per_token_kernel(x_ptr, q_ptr, s_ptr, K, stride_x, stride_q, EPS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    amax = tl.zeros([BLOCK], dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_x + k, mask=k < K, other=0.0)
        amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
    dtype = x_ptr.dtype.element_ty
    scale = (tl.max(amax, axis=0) / _FP8_MAX).to(dtype).to(tl.float32)
    scale = tl.where(scale == 0.0, EPS, scale)
    tl.store(s_ptr + row, scale)
    for k0 in range(0, K, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_x + k, mask=k < K, other=0.0)
        scaled = (x.to(tl.float32) / scale).to(dtype).to(tl.float32)
        q = tl.minimum(tl.maximum(scaled, -_FP8_MAX), _FP8_MAX)
        tl.store(q_ptr + row * stride_q + k, q.to(q_ptr.dtype.element_ty), mask=k < K)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] fp16/bf16 -> (float8 codes [M, K], float32 scales [M, 1])."""
    m, k = x.shape
    q = torch.empty(m, k, dtype=FP8_DTYPE, device=x.device)
    s = torch.empty(m, 1, dtype=torch.float32, device=x.device)
    if m:
        _per_token_kernel[(m,)](x, q, s, k, x.stride(0), q.stride(0), EPS=torch.finfo(x.dtype).eps,
                                BLOCK=min(4096, triton.next_power_of_2(k)), num_warps=8)
    return q, s


def fp8_linear(x: torch.Tensor, layer: Fp8Linear) -> torch.Tensor:
    """y = x @ W.T through per-token FP8 quantization of x and the fp8 tensor cores."""
    lead = x.shape[:-1]
    xq, xs = quantize_per_token(x.reshape(-1, x.shape[-1]))
    y = torch._scaled_mm(xq, layer.weight.t(), scale_a=xs, scale_b=layer.scale, out_dtype=x.dtype)
    return y.reshape(*lead, layer.out_features)


def fp8_reference(x: torch.Tensor, layer: Fp8Linear) -> torch.Tensor:
    """float64 on the CPU of what fp8_linear computes: dequantized activations times dequantized weights."""
    xq, xs = quantize_per_token(x.reshape(-1, x.shape[-1]))
    xd = xq.cpu().double() * xs.cpu().double()
    wd = layer.weight.cpu().double() * layer.scale.cpu().double().T
    return (xd @ wd.T).reshape(*x.shape[:-1], layer.out_features)


__all__ = ["FP8_MAX", "Fp8Linear", "fp8_linear", "fp8_reference", "quantize_per_token"]
