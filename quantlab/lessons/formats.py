"""The Formats lesson's numbers on real tensors: FP8 against INT8 by magnitude band, and model memory per format."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core.errors import QuantlabError
from quantlab.core.formats import FORMATS
from quantlab.core.metrics import sqnr_db
from quantlab.core.quantize import fake_quantize, quantize
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.io import captures, models, sizing

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
    first = captures.first_token_rows(None)
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


# -- microscaling: a scale per small block, itself stored in 8 bits --------------------------------

E4M3_MIN_NORMAL = 2.0**-6

@dataclass(frozen=True)
class BlockScales:
    """The first blocks of one row under NVFP4 and MXFP4, and the whole layer's error under each.

    `ideal` is the scale each block would want (its max|x| / 6, FP4's largest value); NVFP4 stores
    it rounded to E4M3 after multiplying by the global scale, MXFP4 replaces it by a power of two
    (E8M0: an exponent byte, no mantissa), 2^(floor(log2 max) - 2) after rounding the max, which
    lands up to 2x above the ideal: the block keeps headroom and gets a coarser grid."""

    row: int
    ideal_nvfp4: tuple[float, ...]  # per 16-value block
    nvfp4: tuple[float, ...]  # the effective scale, E4M3 value / global scale
    ideal_mxfp4: tuple[float, ...]  # per 32-value block
    mxfp4: tuple[float, ...]
    global_scale: float
    below_e4m3_normal: float  # share of the layer's 16-block ideal scales below E4M3's 2^-6
    sqnr_db: dict[str, float]  # NVFP4, MXFP4, INT4 g128 on the whole matrix
    bits: dict[str, float]  # stored bits per weight: 4 + 8/16, 4 + 8/32, 4 + scale bits/128

    @property
    def mx_over_ideal(self) -> float:
        """Median factor by which MXFP4's power-of-two scale exceeds the block's ideal scale: how
        much coarser its grid is than the block needs."""
        ratios = sorted(s / i for i, s in zip(self.ideal_mxfp4, self.mxfp4) if s > 0 and i > 0)
        return ratios[len(ratios) // 2] if ratios else 1.0


@torch.no_grad()
def block_scales(weight: torch.Tensor, row: int = 0, blocks: int = 16) -> BlockScales:
    if weight.ndim != 2 or weight.shape[1] % 32:
        raise QuantlabError(f"microscaling blocks need rows whose length divides by 32; this matrix is "
                            f"{tuple(weight.shape)}")
    nv_spec, mx_spec, int_spec = scheme_spec("nvfp4a16"), scheme_spec("mxfp4a16"), scheme_spec("w4a16")
    nv, mx = quantize(weight, nv_spec), quantize(weight, mx_spec)
    assert nv.global_scale is not None
    gs = float(nv.global_scale)
    top = weight[row].float().abs()
    ideal_nv = top.reshape(-1, 16).amax(dim=1)[:blocks] / 6
    ideal_mx = top.reshape(-1, 32).amax(dim=1)[: blocks // 2] / 6
    specs = {"NVFP4": nv_spec, "MXFP4": mx_spec, "INT4 g128": int_spec}
    usable = {name: spec for name, spec in specs.items() if weight.shape[1] % (spec.group_size or 1) == 0}
    dtype = sizing.torch_dtype_code(weight.dtype)
    every_ideal = weight.float().abs().reshape(-1, 16).amax(dim=1) / 6
    return BlockScales(
        row=row, ideal_nvfp4=tuple(ideal_nv.tolist()), nvfp4=tuple((nv.scale[row, :blocks].float() / gs).tolist()),
        ideal_mxfp4=tuple(ideal_mx.tolist()), mxfp4=tuple(mx.scale[row, : blocks // 2].float().tolist()),
        global_scale=gs, below_e4m3_normal=float((every_ideal < E4M3_MIN_NORMAL).float().mean()),
        sqnr_db={name: sqnr_db(weight, fake_quantize(weight, spec)) for name, spec in usable.items()},
        bits={name: sizing.stored_bits_per_weight(tuple(weight.shape), dtype, spec) for name, spec in usable.items()},
    )
