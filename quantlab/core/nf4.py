"""NF4: bitsandbytes' 4-bit NormalFloat with its double quantization, from the published algorithm.

QLoRA (Dettmers et al. 2023) and bitsandbytes' `quantize_4bit(..., quant_type="nf4")`:
  * the weight is cut into blocks of 64 consecutive values (bitsandbytes blocks the flattened
    tensor; with a row length that is a multiple of the block, which `QuantSpec.check_shape`
    requires, every block lies inside one row, so the blocks are the lab's groups of 64);
  * each block keeps its absmax in fp32, computed from the values as they are (fp32, fp16 or bf16);
  * each value becomes x · (1 / absmax) in fp32, and its code is the nearest of NF4's 16 levels
    (`formats.NF4_TABLE`), ties to the lower level: bitsandbytes' CUDA kernel walks a decision tree
    on `x > midpoint` with the midpoints as fp32 constants, which `NF4_THRESHOLDS` reproduces;
  * dequantization is level × absmax in fp32, rounded once to the weight's dtype (the CUDA kernel;
    bitsandbytes' pure-torch fallback rounds the level to that dtype first).
Double quantization (`compress_statistics=True`, QLoRA's "DQ") stores the absmax scales in 8 bits:
  * offset = mean of all absmax values of the tensor (fp32);
  * absmax − offset is quantized blockwise in blocks of 256 scales, each block with its own fp32
    absmax, onto bitsandbytes' signed 8-bit dynamic map (`dynamic_map`), nearest code again;
  * a scale is restored as map[code] × block absmax + offset, in fp32, and the weights' levels are
    multiplied by that restored scale (their codes were chosen with the exact absmax first).
Storage per weight: 4 bits of code + 8/64 for the scale codes + 32/(64·256) for the second-level
scales (the offset and both code books are a constant per layer) ≈ 4.127 bits, against 4 + 32/64
= 4.5 with fp32 absmax.

Not checked against bitsandbytes itself, which is not installed here. Where it could differ: its
CUDA build uses fast math, whose approximate reciprocal can move a value lying within an ulp of a
decision boundary to the neighbouring code; its 8-bit binary search breaks exact midpoint ties by
the side it arrives from; and the GPU sums the mean in another order (the offset's last bit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core.formats import NF4_TABLE

NESTED_BLOCK = 256  # absmax scales per second-level scale in double quantization
NESTED_SCALE_BITS = 32  # each second-level scale is an fp32
NF4_LEVELS = torch.tensor(NF4_TABLE, dtype=torch.float32)
# The midpoints between neighbouring levels, rounded to fp32: the constants of bitsandbytes'
# `dQuantizeNF4` tree. A value above a midpoint goes up, one on it stays on the lower level.
NF4_THRESHOLDS = ((NF4_LEVELS[:-1].double() + NF4_LEVELS[1:].double()) / 2).float()


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), sorted, float32.

    Seven decades 10⁻⁶ … 10⁰, the i-th holding 2^i evenly spaced means of [0.1, 1] (more of the
    fraction's bits survive as the exponent shrinks), each with both signs, plus 0 and 1: 256 codes.
    Computed with the same float32 torch operations bitsandbytes uses, so the values are its own.
    """
    exponents = 7
    data: list[float] = []
    for i in range(exponents):
        boundaries = torch.linspace(0.1, 1, 2**i + 1)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        decade = 10 ** (-(exponents - 1) + i)
        data += (decade * means).tolist() + (-decade * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


DYNAMIC_MAP = dynamic_map()
# The CUDA kernel's own midpoints: (lower + upper) · 0.5 in fp32.
_DYNAMIC_THRESHOLDS = (DYNAMIC_MAP[:-1] + DYNAMIC_MAP[1:]) * 0.5


def nearest(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """uint8 index of the nearest code for fp32 values in [-1, 1]: how many midpoints lie below."""
    return torch.searchsorted(thresholds, values.contiguous()).to(torch.uint8)


def nf4_codes(normalized: torch.Tensor) -> torch.Tensor:
    """NF4 codes of values already divided by their block's absmax."""
    return nearest(normalized, NF4_THRESHOLDS)


@dataclass(frozen=True, eq=False)
class NestedScales:
    """Double-quantized absmax scales: what bitsandbytes stores instead of one fp32 per block."""

    codes: torch.Tensor  # uint8 [n], indices into DYNAMIC_MAP
    absmax: torch.Tensor  # fp32 [⌈n / 256⌉], the second-level scales
    offset: torch.Tensor  # fp32 [], the mean absmax subtracted before quantizing

    def restore(self) -> torch.Tensor:
        """The fp32 scales dequantization multiplies by: map[code] × block absmax + offset."""
        n = self.codes.numel()
        values = torch.zeros(self.absmax.numel() * NESTED_BLOCK, dtype=torch.float32)
        values[:n] = DYNAMIC_MAP[self.codes.long()]
        scaled = (values.reshape(-1, NESTED_BLOCK) * self.absmax.reshape(-1, 1)).reshape(-1)[:n]
        return scaled + self.offset


@torch.no_grad()
def compress(absmax: torch.Tensor) -> NestedScales:
    """Double quantization of fp32 absmax scales (any shape, read in row-major order)."""
    flat = absmax.reshape(-1).float()
    offset = flat.mean()
    n = flat.numel()
    blocks = math.ceil(n / NESTED_BLOCK)
    # Zero padding of the last block changes neither its absmax nor its codes.
    centred = torch.zeros(blocks * NESTED_BLOCK, dtype=torch.float32)
    centred[:n] = flat - offset
    groups = centred.reshape(blocks, NESTED_BLOCK)
    top = groups.abs().amax(dim=1)
    # A block whose scales all equal the mean is 0 · (1 / 0): any code restores it exactly, take 0's.
    scaled = torch.nan_to_num(groups * (1 / top).reshape(-1, 1), nan=0.0).clamp(-1, 1)
    codes = nearest(scaled.reshape(-1), _DYNAMIC_THRESHOLDS)[:n]
    return NestedScales(codes, top, offset)
