"""Error and cost measures of a quantized tensor, each one small function with one meaning.

Errors are computed in float64 so that an 8-bit error is not drowned by the float32 rounding of
the measurement itself.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from quantlab.core import blocks, nf4
from quantlab.core.qparams import QuantizedTensor, grid_range
from quantlab.core.spec import QuantSpec

SCALE_BITS = 16  # compressed-tensors stores scales in the weight's dtype: bf16/fp16 for LLMs


@torch.no_grad()
def mse(ref: torch.Tensor, approx: torch.Tensor) -> float:
    return torch.mean((ref.double() - approx.double()) ** 2).item()


@torch.no_grad()
def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio, 10·log10(‖x‖² / ‖x − x̂‖²); +inf when exact."""
    signal = torch.sum(ref.double() ** 2).item()
    noise = torch.sum((ref.double() - approx.double()) ** 2).item()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


@torch.no_grad()
def cosine(ref: torch.Tensor, approx: torch.Tensor) -> float:
    a, b = ref.double().flatten(), approx.double().flatten()
    denom = (a.norm() * b.norm()).item()
    return 1.0 if denom == 0 else (a @ b).item() / denom


@torch.no_grad()
def max_abs_error(ref: torch.Tensor, approx: torch.Tensor) -> float:
    return (ref.double() - approx.double()).abs().max().item()


# How far beyond the grid's end (in steps) a value must land to count as clipped: half a step
# beyond still rounds onto the end level, so it is rounding error; the symmetric max lands on
# qmax + 0.5 exactly, give or take float32 rounding (hence the slack).
CLIP_EDGE = 0.5 + 1e-3


@torch.no_grad()
def clipped_mask(x: torch.Tensor, qt: QuantizedTensor) -> torch.Tensor:
    """Which values fell outside the grid and were saturated to qmin/qmax (shaped like `x`)."""
    spec, shape = qt.spec, tuple(x.shape)
    scaled = blocks.as_groups(x, spec).float() / blocks.expand(qt.scale, spec, shape).float()
    if qt.zero_point is not None:
        scaled = scaled + blocks.expand(qt.zero_point, spec, shape).float()
    qmin, qmax = grid_range(spec)
    return blocks.from_groups((scaled < qmin - CLIP_EDGE) | (scaled > qmax + CLIP_EDGE), spec, shape)


@torch.no_grad()
def clipped_fraction(x: torch.Tensor, qt: QuantizedTensor) -> float:
    """Share of values that fell outside the grid and were saturated to qmin/qmax."""
    return clipped_mask(x, qt).double().mean().item()


@torch.no_grad()
def levels_used_fraction(qt: QuantizedTensor) -> float:
    """Distinct codes present divided by the grid's 2^b levels (INT only): unused levels are waste."""
    # bincount over the raw byte patterns is a single pass; unique() would sort the whole tensor
    present = torch.bincount(qt.q.view(torch.uint8).flatten().long(), minlength=256).count_nonzero().item()
    return present / (256 if qt.spec.type == "float" else qt.spec.levels)


def bits_per_weight(spec: QuantSpec, shape: tuple[int, ...], scale_bits: int) -> float:
    """The closed form b + s / g (+ b / g for a zero point), for a given scale width s; NF4's
    double-quantized scales add their own fp32 scale per 256 of them: + 32 / (256·g).

    What a real layer stores (packing into int32 words, the scale dtype of the actual weight) is
    `quantlab.io.sizing.stored_bits_per_weight`; this formula is what the lessons explain it with.
    """
    numel = math.prod(shape)
    n_scales = blocks.num_scales(spec, shape)
    zp_bits = 0 if spec.symmetric else spec.num_bits
    nested_bits = math.ceil(n_scales / nf4.NESTED_BLOCK) * nf4.NESTED_SCALE_BITS if spec.scale_dtype == "dq8" else 0
    return spec.num_bits + (n_scales * (scale_bits + zp_bits) + nested_bits) / numel


@dataclass(frozen=True)
class ErrorReport:
    mse: float
    sqnr_db: float
    cosine: float
    max_abs_error: float
    clipped_fraction: float
    levels_used: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def error_report(x: torch.Tensor, qt: QuantizedTensor) -> ErrorReport:
    """Every measure at once, for tables that compare schemes side by side."""
    approx = qt.dequantize()
    return ErrorReport(
        mse=mse(x, approx),
        sqnr_db=sqnr_db(x, approx),
        cosine=cosine(x, approx),
        max_abs_error=max_abs_error(x, approx),
        clipped_fraction=clipped_fraction(x, qt),
        levels_used=levels_used_fraction(qt),
    )


METRIC_LABELS: dict[str, str] = {
    "sqnr_db": "SQNR (dB, higher is better)",
    "mse": "MSE",
    "cosine": "cosine similarity",
    "max_abs_error": "max |error|",
    "clipped_fraction": "values clipped (%)",
    "levels_used": "grid levels used (%)",
}
BITS_LABEL = "stored bits per weight (codes + scales + zero points)"


def comparison_table(reports: dict[str, ErrorReport],
                     stored_bits: dict[str, float] | None = None) -> dict[str, list[str]]:
    """Reports side by side, one column per scheme, formatted for display with units; the stored
    bits row only where they are given (a weight's, from its real layout; activations are not stored)."""
    table: dict[str, list[str]] = {"metric": list(METRIC_LABELS.values()) + ([BITS_LABEL] if stored_bits else [])}
    for name, r in reports.items():
        table[name] = [
            f"{r.sqnr_db:.2f}", f"{r.mse:.3e}", f"{r.cosine:.6f}", f"{r.max_abs_error:.4g}",
            f"{100 * r.clipped_fraction:.2f}", f"{100 * r.levels_used:.1f}",
            *([f"{stored_bits[name]:.4g}"] if stored_bits else []),
        ]
    return table
