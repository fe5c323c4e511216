"""How many weights share a scale: error against storage cost, on one real layer.

Each candidate (per-tensor, per-channel, groups of g) is quantized for real; its cost is the bytes
compressed-tensors would store for this layer (`sizing.layer_layout`, packing included), and its
error is the weight SQNR and, when the layer's real inputs were captured, the SQNR of the layer's
output X·Wᵀ, which is what the next layer actually receives. Registered block formats stand on the
same axes: the microscaling ones (8-bit scales per 16 or 32 values), FP8_BLOCK (one scale per
128×128 tile) and bitsandbytes' NF4 (an absmax per 64, in fp32 or double-quantized to 8 bits);
their weights alone are quantized here, as for the integer grids.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core import metrics, packing
from quantlab.core.quantize import quantize
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.core.spec import label as scheme_label
from quantlab.io import sizing

GROUP_SIZES = (32, 64, 128, 256)
# Registered formats drawn beside the integer grids, as registry slugs.
BLOCK_FORMATS: tuple[str, ...] = ("nvfp4a16", "mxfp4a16", "mxfp8a16", "fp8-block", "nf4", "nf4-fp32")
# Scales stored in 8 bits whatever the weight's dtype: E4M3 (NVFP4), E8M0 (MX), NF4's double quant.
EIGHT_BIT_SCALES = 8
NF4_ABSMAX_BITS = 32  # bitsandbytes keeps NF4's absmax in fp32 whatever the weight's dtype
CUSTOM_GROUP = 96  # not a power of two: shows that any divisor of the row works
_MAX_HEATMAP_ROWS = 384


def custom_default(cols: int) -> int | None:
    """The custom group size a layer starts with: 96 where it divides the rows, otherwise the
    largest divisor of the row length up to 96 (a 13-wide upload gets 13); None for 1-wide rows."""
    divisors = [g for g in range(2, min(cols, CUSTOM_GROUP) + 1) if cols % g == 0]
    return divisors[-1] if divisors else None


def heatmap_groups(cols: int, custom_group: int | None = None) -> list[int]:
    """Group sizes the scale heatmap can show on this layer; the whole row when none divides it."""
    usable = sorted({g for g in (*GROUP_SIZES, custom_group) if g and cols % g == 0})
    return usable or [cols]


def heatmap_default(groups: list[int]) -> int:
    return 128 if 128 in groups else groups[0]


def granularities(custom_group: int | None = None) -> list[tuple[str, str, int | None]]:
    """(label, strategy, group size) for every candidate, coarsest last."""
    groups = sorted(set(GROUP_SIZES) | ({custom_group} if custom_group else set()))
    return ([("channel", "channel", None)] + [(f"g{g}", "group", g) for g in groups]
            + [("tensor", "tensor", None)])


def unusable_groups(cols: int, custom_group: int | None = None) -> list[int]:
    """Group sizes among the candidates that do not divide the layer's input dimension (left out)."""
    return [g for _, _, g in granularities(custom_group) if g is not None and cols % g]


def spec_for(bits: int, symmetric: bool, strategy: str, group: int | None) -> QuantSpec:
    return QuantSpec(num_bits=bits, symmetric=symmetric, strategy=strategy, group_size=group)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Point:
    label: str
    spec: QuantSpec
    bits_per_weight: float  # measured: sizing.stored_bits_per_weight, the real layout of this layer
    formula_bits: float  # b + scale bits / g (+ b / g)
    weight_sqnr_db: float
    output_sqnr_db: float | None
    weights: int

    @property
    def stored_bytes(self) -> int:
        return round(self.bits_per_weight * self.weights / 8)




def scale_bits(dtype: torch.dtype) -> int:
    """Bits of one scale as compressed-tensors stores it for a weight of this dtype (its own dtype)."""
    return 8 * sizing.DTYPE_BYTES[sizing.scale_dtype(sizing.torch_dtype_code(dtype))]


def format_scale_bits(spec: QuantSpec, dtype: torch.dtype) -> int:
    """The scale width s the formula b + s / g uses for a registered format on a weight of `dtype`."""
    if spec.scale_dtype is not None:
        return EIGHT_BIT_SCALES
    return NF4_ABSMAX_BITS if spec.type == "nf4" else scale_bits(dtype)


@torch.no_grad()
def tradeoff(weight: torch.Tensor, inputs: torch.Tensor | None, custom_group: int | None = None,
             bits_options: tuple[int, ...] = (4, 8)) -> list[Point]:
    """Every (bits, symmetric, granularity) candidate on this layer, quantized for real, and the
    registered block formats (`BLOCK_FORMATS`) beside them, weights only."""
    shape = (weight.shape[0], weight.shape[1])
    dtype = sizing.torch_dtype_code(weight.dtype)
    reference = inputs.to(weight.dtype) @ weight.T if inputs is not None else None

    def point(label: str, spec: QuantSpec, formula_scale_bits: int) -> Point:
        approx = quantize(weight, spec).dequantize().to(weight.dtype)
        out_sqnr = (metrics.sqnr_db(reference, inputs.to(weight.dtype) @ approx.T)
                    if reference is not None and inputs is not None else None)
        return Point(label, spec, sizing.stored_bits_per_weight(shape, dtype, spec),
                     metrics.bits_per_weight(spec, shape, formula_scale_bits),
                     metrics.sqnr_db(weight, approx), out_sqnr, weight.numel())

    points = []
    for bits in bits_options:
        for symmetric in (True, False):
            for label, strategy, group in granularities(custom_group):
                if group is not None and shape[1] % group:
                    continue  # reported by `unusable_groups`
                points.append(point(label, spec_for(bits, symmetric, strategy, group), scale_bits(weight.dtype)))
    for slug in BLOCK_FORMATS:
        spec = scheme_spec(slug).with_(activations=None)
        if spec.group_size is None or shape[1] % spec.group_size == 0:  # tiles fit any shape
            points.append(point(scheme_label(slug), spec, format_scale_bits(spec, weight.dtype)))
    return points


@dataclass(frozen=True)
class ScaleMap:
    values: torch.Tensor  # [rows shown, groups]: max-pooled over row blocks for big layers
    rows_per_cell: int
    group_size: int


def scale_map(weight: torch.Tensor, spec: QuantSpec) -> ScaleMap:
    """The scale of every (output channel, group), pooled to at most a few hundred rows."""
    scale = quantize(weight, spec).scale.float()
    if scale.dim() == 1:
        scale = scale.reshape(1, 1)
    pool = max(1, math.ceil(scale.shape[0] / _MAX_HEATMAP_ROWS))
    if pool > 1:
        pad = (-scale.shape[0]) % pool
        padded = torch.nn.functional.pad(scale, (0, 0, 0, pad))
        scale = padded.reshape(-1, pool, scale.shape[1]).amax(dim=1)
    return ScaleMap(scale, pool, spec.group_size or weight.shape[1])


@dataclass(frozen=True)
class ChannelFailure:
    """Per output channel: its range and its SQNR under a per-tensor scale vs a finer one."""

    absmax: torch.Tensor
    sqnr_coarse: torch.Tensor
    sqnr_fine: torch.Tensor
    coarse: QuantSpec
    fine: QuantSpec

    def worst(self, k: int = 5) -> list[dict[str, float]]:
        order = torch.argsort(self.sqnr_coarse)[:k]
        median = self.absmax.median().item()
        # An all-zero matrix has no median range to compare with: NaN, shown as a dash.
        return [{"channel": int(i), "max |w|": self.absmax[i].item(),
                 "range / median": self.absmax[i].item() / median if median > 0 else math.nan,
                 f"SQNR {self.coarse.label} (dB)": self.sqnr_coarse[i].item(),
                 f"SQNR {self.fine.label} (dB)": self.sqnr_fine[i].item()} for i in order.tolist()]


    def fine_range_db(self) -> tuple[float, float, float]:
        """(lowest, median, highest) channel SQNR under the finer scales: what the prose quotes.
        Channels that are all zero (no signal, no error) are left out; NaN when every one is."""
        finite = self.sqnr_fine[torch.isfinite(self.sqnr_fine) & (self.absmax > 0)]
        if not finite.numel():
            return math.nan, math.nan, math.nan
        return finite.min().item(), finite.median().item(), finite.max().item()


    def numbers(self) -> dict[str, str]:
        """What the lesson's sentence quotes: the finer scheme and its channel SQNR range."""
        low, median, high = (("—" if math.isnan(v) else f"{v:.0f}") for v in self.fine_range_db())
        return {"fine": self.fine.label, "low": low, "median": median, "high": high}


def _row_sqnr(w: torch.Tensor, approx: torch.Tensor) -> torch.Tensor:
    signal = (w.double() ** 2).sum(dim=1)
    noise = ((w.double() - approx.double()) ** 2).sum(dim=1).clamp_min(1e-300)
    return 10 * torch.log10(signal.clamp_min(1e-300) / noise)


@torch.no_grad()
def where_tensor_fails(weight: torch.Tensor, fine: QuantSpec) -> ChannelFailure:
    """One scale for the whole matrix is set by the widest channel; narrow channels pay for it."""
    coarse = fine.with_(strategy="tensor", group_size=None)
    return ChannelFailure(weight.abs().amax(dim=1).float(),
                          _row_sqnr(weight, quantize(weight, coarse).dequantize()).float(),
                          _row_sqnr(weight, quantize(weight, fine).dequantize()).float(), coarse, fine)


def first_word(weight: torch.Tensor, spec: QuantSpec) -> packing.WordDiagram | None:
    """The first eight INT4 codes of row 0, as they land in the first int32 of weight_packed
    (per-channel scales where the spec's group does not divide the row); None when a row has
    fewer than eight weights, so no word is full."""
    if weight.shape[-1] < 8:
        return None
    spec = spec.with_(num_bits=4)
    if spec.strategy == "group" and weight.shape[-1] % (spec.group_size or 1):
        spec = spec.with_(strategy="channel", group_size=None)
    codes = quantize(weight, spec).q[0, :8]
    return packing.word_diagram(codes, 4)
