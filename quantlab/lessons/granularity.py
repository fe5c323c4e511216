"""How many weights share a scale: error against storage cost, on one real layer.

Each candidate (per-tensor, per-channel, groups of g) is quantized for real; its cost is the bytes
compressed-tensors would store for this layer (`sizing.layer_layout`, packing included), and its
error is the weight SQNR and, when the layer's real inputs were captured, the SQNR of the layer's
output X·Wᵀ, which is what the next layer actually receives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core import metrics, packing
from quantlab.core.quantize import quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import sizing

GROUP_SIZES = (32, 64, 128, 256)
_MAX_HEATMAP_ROWS = 384


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
    bits_per_weight: float  # measured: stored bytes of this layer · 8 / weights
    formula_bits: float  # b + scale bits / g (+ b / g)
    weight_sqnr_db: float
    output_sqnr_db: float | None
    stored_bytes: int


def stored_bytes(shape: tuple[int, int], dtype: str, spec: QuantSpec) -> int:
    layer = sizing.SourceTensor("layer.weight", shape, dtype, True)
    return sum(t.nbytes for t in sizing.layer_layout(layer, spec) if t.kind != "shapes")


@torch.no_grad()
def tradeoff(weight: torch.Tensor, inputs: torch.Tensor | None, custom_group: int | None = None,
             bits_options: tuple[int, ...] = (4, 8)) -> list[Point]:
    """Every (bits, symmetric, granularity) candidate on this layer, quantized for real."""
    shape = (weight.shape[0], weight.shape[1])
    dtype = sizing.torch_dtype_code(weight.dtype)
    scale_bits = 8 * sizing.DTYPE_BYTES[sizing.scale_dtype(dtype)]
    reference = inputs.to(weight.dtype) @ weight.T if inputs is not None else None
    points = []
    for bits in bits_options:
        for symmetric in (True, False):
            for label, strategy, group in granularities(custom_group):
                if group is not None and shape[1] % group:
                    continue  # reported by `unusable_groups`
                spec = spec_for(bits, symmetric, strategy, group)
                approx = quantize(weight, spec).dequantize()
                out_sqnr = (metrics.sqnr_db(reference, inputs.to(weight.dtype) @ approx.T)
                            if reference is not None and inputs is not None else None)
                nbytes = stored_bytes(shape, dtype, spec)
                points.append(Point(label, spec, 8 * nbytes / weight.numel(),
                                    metrics.bits_per_weight(spec, shape, scale_bits),
                                    metrics.sqnr_db(weight, approx), out_sqnr, nbytes))
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
        return [{"channel": int(i), "max |w|": self.absmax[i].item(), "range / median": self.absmax[i].item() / median,
                 f"SQNR {self.coarse.label} (dB)": self.sqnr_coarse[i].item(),
                 f"SQNR {self.fine.label} (dB)": self.sqnr_fine[i].item()} for i in order.tolist()]


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


def first_word(weight: torch.Tensor, spec: QuantSpec) -> packing.WordDiagram:
    """The first eight INT4 codes of row 0, as they land in the first int32 of weight_packed."""
    codes = quantize(weight, spec.with_(num_bits=4)).q[0, :8]
    return packing.word_diagram(codes, 4)
