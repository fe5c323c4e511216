"""Lesson 0, why and what: the memory a model needs, what can be quantized, and eight real weights
quantized and restored by hand, every step shown.

The hand calculation is the one every later lesson scales up: a scale from the largest magnitude
(compressed-tensors' symmetric INT4 divides it by (qmax - qmin) / 2 = 7.5), divide, round, clamp,
multiply back; and SQNR, the lab's yardstick, computed on those same eight numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core import metrics
from quantlab.core.qparams import calculate_qparams, quantize_with
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.io import sizing
from quantlab.lessons import kv_cache

HAND_SPEC = QuantSpec(num_bits=4)  # one symmetric scale for the eight values: the simplest grid
HAND_COUNT = 8


@dataclass(frozen=True)
class HandStep:
    """One value's way through quantization."""

    x: float
    scaled: float  # x / scale
    rounded: float  # round half to even
    code: int  # clamped to [qmin, qmax]
    restored: float  # code × scale
    error: float  # restored - x


@dataclass(frozen=True)
class ByHand:
    row: int
    absmax: float
    scale: float
    qmin: int
    qmax: int
    steps: tuple[HandStep, ...]
    sqnr_db: float
    signal: float  # Σ x²
    noise: float  # Σ (x − x̂)²


@torch.no_grad()
def by_hand(weight: torch.Tensor, row: int = 0) -> ByHand:
    """The first eight weights of one output row (the last row for a larger number), quantized to
    INT4 with one symmetric scale."""
    row = min(row, weight.shape[0] - 1)
    x = weight[row, :HAND_COUNT].float()
    lo, hi = torch.aminmax(x)
    scale, zp = calculate_qparams(lo.reshape(1), hi.reshape(1), HAND_SPEC)
    qt = quantize_with(x, scale, zp, HAND_SPEC)
    restored = qt.dequantize()
    scaled = x / scale  # in float32, as the quantizer computes it: -0.10508 / s lands on -7.5 exactly
    steps = tuple(HandStep(float(v), float(d), float(torch.round(d)), int(c), float(r), float(r - v))
                  for v, d, c, r in zip(x, scaled, qt.q, restored))
    signal = float((x.double() ** 2).sum())
    noise = float(((restored - x).double() ** 2).sum())
    return ByHand(row, float(x.abs().max()), float(scale), HAND_SPEC.qmin, HAND_SPEC.qmax, steps,
                  metrics.sqnr_db(x, restored), signal, noise)


@dataclass(frozen=True)
class MemoryMotive:
    """What one model needs at 16 and at 4 bits, and its KV cache at a given context."""

    arch: str
    params: int
    bf16_bytes: int
    w4a16_bytes: int
    naive_int4_bytes: int  # params × 4 bits, what "a 4-bit model" suggests
    kv_bytes: int
    tokens: int
    batch: int


def memory_motive(arch: str = "llama-3.1-8b", tokens: int = 32768, batch: int = 1) -> MemoryMotive:
    w4 = sizing.model_size(arch, scheme_spec("w4a16"))
    params = w4.num_params
    return MemoryMotive(arch, params, w4.original_bytes, w4.total_bytes, math.ceil(params * 4 / 8),
                        kv_cache.kv_bytes(kv_cache.architecture(arch), tokens, batch).total, tokens, batch)


# What a WxAy name says: W bits for weights, A bits for the activations the matmul reads (16: left
# as they are). The examples are registered schemes, so each row is a scheme the lab can apply.
NOTATION: tuple[tuple[str, str], ...] = (
    ("w4a16", "4-bit weights, 16-bit activations: weight-only, the memory saver for decoding"),
    ("w8a16", "8-bit weights, 16-bit activations: near-lossless weight-only"),
    ("w8a8", "8-bit weights and 8-bit activations: integer matmuls, faster when compute-bound"),
    ("fp8-dynamic", "8-bit float weights and activations (W8A8 in FP8): Hopper/Ada/Blackwell tensor cores"),
)
