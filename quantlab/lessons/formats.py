"""The Formats lesson's numbers on real tensors: FP8 against INT8 by magnitude band, and model memory per format."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core.formats import FORMATS
from quantlab.core.metrics import sqnr_db
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec

FP8_VS_INT8 = {"INT8": QuantSpec(num_bits=8, type="int"), "FP8 E4M3": QuantSpec(num_bits=8, type="float")}


@dataclass(frozen=True)
class FormatDuel:
    """Error of each 8-bit scheme on one tensor, overall and by magnitude band."""

    sqnr_db: dict[str, float]
    band_edges: tuple[float, ...]  # |x| band edges, log-spaced, len(bands) + 1
    band_share: tuple[float, ...]  # fraction of the tensor's values in each band
    band_rel_error: dict[str, tuple[float, ...]]  # mean |x - x̂| / |x| per band, per scheme


@torch.no_grad()
def fp8_vs_int8(x: torch.Tensor, strategy: str = "tensor", bands: int = 12) -> FormatDuel:
    """Quantize `x` at INT8 and at FP8 E4M3 with the same granularity and compare where each errs.

    One scale maps the tensor's absmax onto 127 (INT8) or 448 (FP8); INT8 then has the same absolute
    step everywhere, FP8 the same relative step, so which wins depends on how much of the tensor
    lives far below its maximum.
    """
    flat = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x.reshape(1, -1)
    mag = flat.abs().double()
    positive = mag[mag > 0]
    hi = positive.max().item()
    lo = max(positive.min().item(), hi * 1e-6)
    edges = torch.logspace(math.log10(lo), math.log10(hi), bands + 1, dtype=torch.float64)
    edges[-1] = hi * (1 + 1e-12)
    which = torch.bucketize(mag, edges, right=True) - 1
    inside = (which >= 0) & (which < bands) & (mag > 0)
    counts = torch.bincount(which[inside], minlength=bands).double()
    sqnr: dict[str, float] = {}
    band_err: dict[str, tuple[float, ...]] = {}
    for label, base in FP8_VS_INT8.items():
        approx = fake_quantize(flat, base.with_(strategy=strategy))
        sqnr[label] = sqnr_db(flat, approx)
        rel = (flat.double() - approx.double()).abs() / mag.clamp_min(1e-30)
        sums = torch.bincount(which[inside], weights=rel[inside], minlength=bands)
        band_err[label] = tuple((sums / counts.clamp_min(1)).tolist())
    return FormatDuel(sqnr, tuple(edges.tolist()), tuple((counts / counts.sum()).tolist()), band_err)


GB = 10**9


GIB = 2**30


@dataclass(frozen=True)
class MemoryRow:
    format: str
    bits_per_param: float
    bytes: float
    scale_bytes: float  # the part of `bytes` that is block scales

    @property
    def gb(self) -> float:
        return self.bytes / GB

    @property
    def gib(self) -> float:
        return self.bytes / GIB


def weight_memory(params: float, with_scales: bool = True) -> list[MemoryRow]:
    """Bytes of `params` weights in every format, with or without the block scales of 4-bit schemes."""
    rows = []
    for f in FORMATS.values():
        bits = f.storage_bits if with_scales else float(f.bits)
        rows.append(MemoryRow(f.label, bits, params * bits / 8, params * (bits - f.bits) / 8))
    return rows
