"""The Formats lesson's numbers on real tensors: FP8 against INT8 by magnitude band, and model memory per format."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core.errors import QuantlabError
from quantlab.core.formats import FORMATS
from quantlab.core.metrics import sqnr_db
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import models
from quantlab.lessons import outliers

FP8_VS_INT8 = {"INT8": QuantSpec(num_bits=8, type="int"), "FP8 E4M3": QuantSpec(num_bits=8, type="float")}


@dataclass(frozen=True)
class FormatDuel:
    """Error of each 8-bit scheme on one tensor, overall and by magnitude band."""

    sqnr_db: dict[str, float]
    band_edges: tuple[float, ...]  # |x| band edges, log-spaced, len(bands) + 1
    band_share: tuple[float, ...]  # fraction of the tensor's values in each band
    band_rel_error: dict[str, tuple[float, ...]]  # mean |x - x̂| / |x| per band, per scheme

    @property
    def crossover_band(self) -> int | None:
        """First band, from small |x| up, where INT8's relative error drops below FP8's (None: never)."""
        int8, fp8 = self.band_rel_error["INT8"], self.band_rel_error["FP8 E4M3"]
        return next((i for i, share in enumerate(self.band_share) if share > 0 and int8[i] < fp8[i]), None)

    @property
    def crossover(self) -> float | None:
        """|x| at which INT8 starts to beat FP8 (that band's lower edge): one scale, two grids, and
        this is where they trade."""
        band = self.crossover_band
        return None if band is None else self.band_edges[band]

    @property
    def share_above_crossover(self) -> float:
        """Fraction of the tensor's values at or above the crossover: the ones INT8 serves better."""
        band = self.crossover_band
        return 0.0 if band is None else float(sum(self.band_share[band:]))


@torch.no_grad()
def fp8_vs_int8(x: torch.Tensor, strategy: str = "tensor", bands: int = 12) -> FormatDuel:
    """Quantize `x` at INT8 and at FP8 E4M3 with the same granularity and compare where each errs.

    One scale maps the tensor's absmax onto 127 (INT8) or 448 (FP8); INT8 then has the same absolute
    step everywhere, FP8 the same relative step, so which wins depends on how much of the tensor
    lives far below its maximum.
    """
    flat = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x.reshape(1, -1)
    if not torch.isfinite(flat).all():
        raise QuantlabError("this tensor contains NaN/Inf values: FP8 and INT8 can only be compared on finite numbers")
    mag = flat.abs().double()
    positive = mag[mag > 0]
    if positive.numel() == 0:
        raise QuantlabError("this tensor is all zeros: every format stores it exactly, there is nothing to compare")
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


# Block 0's FFN: the up projection's input carries MiniLM's outlier channel, the down projection's
# input the GELU's outliers.
FFN_LAYERS = {"up": "encoder.layer.0.intermediate.dense", "down": "encoder.layer.0.output.dense"}


def _token_spread(x: torch.Tensor) -> float:
    """Median over tokens of (largest |x| of the token ÷ its median |x|): how far one per-token
    scale must stretch past the bulk of its own values."""
    a = x.abs()
    return (a.amax(dim=1) / a.median(dim=1).values.clamp_min(1e-30)).median().item()


def ffn_numbers() -> dict[str, float]:
    """INT8 against FP8 on the embedded model's FFN, the numbers the lesson's FP8-or-INT8 prose
    quotes: per-channel weights ("up_w_int8", …), per-token inputs ("up_int8", …), the same inputs
    without each sentence's first token ("up_rest_int8", …), and per-token spreads ("up_first_spread",
    "down_rest_spread")."""
    model, _ = models.embedded_model()
    modules = dict(model.named_modules())
    acts = models.activations()
    first = outliers.first_token_rows()
    numbers = {}
    for short, name in FFN_LAYERS.items():
        x = acts[name]
        for tag, duel in ((short, fp8_vs_int8(x, "token")), (f"{short}_rest", fp8_vs_int8(x[~first], "token")),
                          (f"{short}_w", fp8_vs_int8(modules[name].weight.detach(), "channel"))):
            numbers[f"{tag}_int8"], numbers[f"{tag}_fp8"] = duel.sqnr_db["INT8"], duel.sqnr_db["FP8 E4M3"]
        numbers[f"{short}_first_spread"] = _token_spread(x[first])
        numbers[f"{short}_rest_spread"] = _token_spread(x[~first])
    return numbers


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
