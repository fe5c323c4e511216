"""Symmetric vs asymmetric quantization of one tensor, with every intermediate number kept.

The lesson shows the derivation step by step with live numbers, so this module returns the
numbers themselves (ranges, scale, zero point, the grid in real units, levels wasted) rather than
pre-formatted text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quantlab.core import metrics
from quantlab.core.qparams import check_tensor, grid_range, quantize_with
from quantlab.core.quantize import quantize
from quantlab.core.spec import QuantSpec
from quantlab.core.stats import Histogram, histogram
from quantlab.io import sizing

STORY = ("encoder.layer.0.output.dense", "input")  # post-GELU: one-sided, where asymmetry pays


@dataclass(frozen=True, eq=False)
class ModeResult:
    spec: QuantSpec
    range_lo: float  # the range the scale was fitted to: [-α, α] or [min, max] (0 always inside)
    range_hi: float
    scale: float
    zero_point: int  # 0 for symmetric
    levels: np.ndarray  # every representable value in real units, (q - zp) * scale
    levels_outside_data: int  # grid points beyond the data's min/max: can never be hit
    report: metrics.ErrorReport
    example_code: int  # the lesson's worked example: one real value of the tensor, quantized
    example_back: float

    @property
    def codes_used(self) -> int:
        return round(self.report.levels_used * self.spec.levels)

    @property
    def levels_wasted(self) -> int:
        return self.spec.levels - self.codes_used


@dataclass(frozen=True, eq=False)
class ModeComparison:
    x_min: float
    x_max: float
    amax: float
    numel: int
    example: float
    hist: Histogram
    symmetric: ModeResult
    asymmetric: ModeResult


def _example_value(x: torch.Tensor) -> float:
    """A typical real element to quantize by hand: the one closest to the 90th percentile of |x|."""
    flat = x.flatten()
    magnitude = flat.abs()
    target = magnitude.kthvalue(max(1, int(0.9 * flat.numel()))).values  # O(n), unlike a full sort
    return flat[torch.argmin((magnitude - target).abs())].item()


@torch.no_grad()
def _mode(x: torch.Tensor, spec: QuantSpec, example: float, lo: float, hi: float) -> ModeResult:
    qt = quantize(x, spec)
    worked = quantize_with(torch.tensor([example], dtype=x.dtype), qt.scale, qt.zero_point, spec)
    scale = qt.scale.double().item()
    zp = 0 if qt.zero_point is None else int(qt.zero_point.item())
    qmin, qmax = grid_range(spec)
    codes = np.arange(int(qmin), int(qmax) + 1)
    levels = (codes - zp) * scale
    outside = int(np.sum((levels < lo - scale / 2) | (levels > hi + scale / 2)))
    amax = max(abs(lo), abs(hi))
    fitted = (-amax, amax) if spec.symmetric else (min(lo, 0.0), max(hi, 0.0))
    return ModeResult(
        spec=spec, range_lo=fitted[0], range_hi=fitted[1], scale=scale, zero_point=zp,
        levels=levels, levels_outside_data=outside,
        report=metrics.error_report(x, qt),
        example_code=int(worked.q.item()), example_back=worked.dequantize().item(),
    )


@torch.no_grad()
def compare_modes(x: torch.Tensor, num_bits: int, bins: int = 160) -> ModeComparison:
    """Quantize `x` per-tensor at `num_bits` both ways and collect what the lesson explains."""
    sym = QuantSpec(num_bits=num_bits, symmetric=True, strategy="tensor")
    asym = sym.with_(symmetric=False)
    check_tensor(x, sym)
    example = _example_value(x)
    lo, hi = (v.item() for v in torch.aminmax(x))
    return ModeComparison(
        x_min=lo, x_max=hi, amax=max(abs(lo), abs(hi)), numel=x.numel(),
        example=example, hist=histogram(x, bins=bins, lo=lo, hi=hi),
        symmetric=_mode(x, sym, example, lo, hi), asymmetric=_mode(x, asym, example, lo, hi),
    )


def stored_bits_by_mode(w: torch.Tensor, cmp: ModeComparison) -> dict[str, float]:
    """Bits the weight `w` stores per value under each mode's spec (sizing's real layout)."""
    dtype = sizing.scale_dtype(_dtype_code(w.dtype))
    return {name: sizing.stored_bits_per_weight(tuple(w.shape), dtype, mode.spec)
            for name, mode in (("symmetric", cmp.symmetric), ("asymmetric", cmp.asymmetric))}


def reading_numbers(cmp: ModeComparison) -> dict[str, str]:
    """The figures the lesson's reading sentence quotes, for this tensor and bit width."""
    sym, asym = cmp.symmetric.report.sqnr_db, cmp.asymmetric.report.sqnr_db
    return {"bits": str(cmp.symmetric.spec.num_bits), "sym_db": f"{sym:.1f}", "asym_db": f"{asym:.1f}",
            "gain_db": f"{asym - sym:+.1f}"}


def _dtype_code(dtype: torch.dtype) -> str:
    try:
        return sizing.torch_dtype_code(dtype)
    except KeyError:
        return "F16"  # compressed-tensors' scale dtype for anything that is not a float


@dataclass(frozen=True)
class ZeroPointCost:
    """What a zero point adds on this weight at INT4: bits per weight with and without one."""

    granularity: str  # "g128" where 128 divides the rows, else "per-channel"
    scale_bits: int
    symmetric_bits: float
    asymmetric_bits: float

    def numbers(self) -> dict[str, str]:
        return {"granularity": self.granularity, "scale_bits": str(self.scale_bits),
                "sym_bits": f"{self.symmetric_bits:.4g}", "asym_bits": f"{self.asymmetric_bits:.4g}"}


def zero_point_cost(x: torch.Tensor) -> ZeroPointCost:
    group = x.ndim == 2 and x.shape[1] % 128 == 0
    spec = QuantSpec(num_bits=4, strategy="group" if group else "channel", group_size=128 if group else None)
    dtype = sizing.scale_dtype(_dtype_code(x.dtype))
    shape = tuple(x.shape) if x.ndim == 2 else (1, x.numel())
    return ZeroPointCost("g128" if group else "per-channel", 8 * sizing.DTYPE_BYTES[dtype],
                         sizing.stored_bits_per_weight(shape, dtype, spec),
                         sizing.stored_bits_per_weight(shape, dtype, spec.with_(symmetric=False)))


def derivation(cmp: ModeComparison, symmetric: bool) -> list[str]:
    """The scale (and zero point) derived step by step with this tensor's numbers, as markdown."""
    m = cmp.symmetric if symmetric else cmp.asymmetric
    qmin, qmax = m.spec.qmin, m.spec.qmax
    b = m.spec.num_bits
    x = cmp.example
    common = [
        f"**Grid.** {b} bits give codes q ∈ [{qmin}, {qmax}]: {m.spec.levels} levels.",
    ]
    if symmetric:
        steps = common + [
            f"**Range.** α = max(|min|, |max|) = max({abs(cmp.x_min):.5g}, {abs(cmp.x_max):.5g}) = "
            f"**{cmp.amax:.5g}**; the grid spans [−α, α].",
            f"**Scale.** s = α / ((qmax − qmin) / 2) = {cmp.amax:.5g} / {(qmax - qmin) / 2:g} = **{m.scale:.5g}**.",
            "**Zero point.** none: real 0 is code 0.",
            f"**Quantize** x = {x:.5g}: q = round(x / s) = round({x / m.scale:.3f}) = **{m.example_code}**; "
            f"back: q · s = {m.example_back:.5g} (error {abs(x - m.example_back):.2g}).",
        ]
    else:
        lo, hi = min(cmp.x_min, 0.0), max(cmp.x_max, 0.0)
        steps = common + [
            f"**Range.** [min, max] = [{lo:.5g}, {hi:.5g}] (widened to include 0, which must stay exact).",
            f"**Scale.** s = (max − min) / (qmax − qmin) = {hi - lo:.5g} / {qmax - qmin} = **{m.scale:.5g}**.",
            f"**Zero point.** z = round(qmin − min / s) = round({qmin} − ({lo:.5g} / {m.scale:.5g})) = "
            f"**{m.zero_point}**: real 0 is code {m.zero_point}.",
            f"**Quantize** x = {x:.5g}: q = round(x / s + z) = round({x / m.scale + m.zero_point:.3f}) = "
            f"**{m.example_code}**; back: (q − z) · s = {m.example_back:.5g} (error {abs(x - m.example_back):.2g}).",
        ]
    return steps


@torch.no_grad()
def sqnr_by_bits(x: torch.Tensor, bits: range = range(2, 9)) -> dict[str, list[float]]:
    """SQNR (dB) of per-tensor symmetric and asymmetric quantization at each bit width."""
    out: dict[str, list[float]] = {"bits": list(bits), "symmetric": [], "asymmetric": []}
    for b in bits:
        for mode, sym in (("symmetric", True), ("asymmetric", False)):
            qt = quantize(x, QuantSpec(num_bits=b, symmetric=sym, strategy="tensor"))
            out[mode].append(metrics.sqnr_db(x, qt.dequantize()))
    return out
