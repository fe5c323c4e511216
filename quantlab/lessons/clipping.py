"""The Clipping lesson: rounding error against saturation error, and static activation scales.

A grid shrunk below the tensor's range rounds the values inside it more finely and saturates the
ones outside; the two errors trade off, and observers pick a point on that curve.

Calibration: static activation scales observed on sample text, against dynamic per-token ones.

A static scale is fixed before deployment from a calibration set; every later token must fit
in it or saturate. How well it fits depends on the observer, on how many sentences were seen
and on whether they look like the text the model later reads. A dynamic scale is measured on
each token at run time: no calibration, no saturation, a little extra work per token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quantlab.core.errors import QuantlabError
from quantlab.core.metrics import CLIP_EDGE, clipped_mask, sqnr_db
from quantlab.core.observers import calibrate, quantize_static
from quantlab.core.qparams import (
    QuantizedTensor,
    calculate_qparams,
    check_tensor,
    grid_range,
    observe_minmax,
    quantize_with,
)
from quantlab.core.quantize import quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import captures, models


def calibration_set(kind: str, layer: str, sentences: int, source: captures.Source = None) -> torch.Tensor:
    """The layer's inputs over the first `sentences` sentences of a calibration text."""
    counts = captures.token_counts(source, kind)
    if not 1 <= sentences <= len(counts):
        raise QuantlabError(f"{kind} has {len(counts)} sentences; pick 1 to {len(counts)}")
    # Captured tokens are stored sentence after sentence, so a prefix of rows is a prefix of text.
    return captures.activation(source, layer, kind)[: sum(counts[:sentences])]


@dataclass(frozen=True)
class CalibrationResult:
    calibration: str  # text kind, or "dynamic"
    sentences: int
    scale: float  # the static scale (the largest per-token scale for dynamic)
    sqnr_db: float  # on the evaluation text's activations
    rounding_mse: float
    clipping_mse: float
    clipped_fraction: float

    @property
    def clipping_share(self) -> float:
        total = self.rounding_mse + self.clipping_mse
        return self.clipping_mse / total if total > 0 else 0.0


# Where the calibration text matters: the attention-output input has no fixed outlier channel, so
# its maximum depends on the text; a few sentences of the wrong kind leave the scale too small.
CALIBRATION_LAYER = "encoder.layer.4.attention.output.dense"
CALIBRATION_SENTENCES = 3


@dataclass(frozen=True)
class CalibrationSummary:
    """What the lesson says about one calibration study, from its rows."""

    eval_kind: str
    best: CalibrationResult  # the static scale that did best on the evaluation text
    worst: CalibrationResult
    dynamic: CalibrationResult

    @property
    def spread_db(self) -> float:
        return self.best.sqnr_db - self.worst.sqnr_db

    def numbers(self) -> dict[str, str]:
        return {"eval_kind": self.eval_kind, "best_kind": self.best.calibration, "worst_kind": self.worst.calibration,
                "best_db": f"{self.best.sqnr_db:.1f}", "worst_db": f"{self.worst.sqnr_db:.1f}",
                "spread_db": f"{self.spread_db:.1f}", "dynamic_db": f"{self.dynamic.sqnr_db:.1f}",
                "gain_lo": f"{self.dynamic.sqnr_db - self.best.sqnr_db:.1f}",
                "gain_hi": f"{self.dynamic.sqnr_db - self.worst.sqnr_db:.1f}"}


def summarize(rows: list[CalibrationResult], eval_kind: str) -> CalibrationSummary:
    static = [r for r in rows if r.calibration != "dynamic"]
    dynamic = next(r for r in rows if r.calibration == "dynamic")
    return CalibrationSummary(eval_kind, max(static, key=lambda r: r.sqnr_db), min(static, key=lambda r: r.sqnr_db),
                              dynamic)


def study(layer: str, eval_kind: str, spec: QuantSpec, sentences: int,
          source: captures.Source = None) -> list[CalibrationResult]:
    """One static scale per calibration text (its first `sentences` sentences), each applied to
    `eval_kind`'s activations, plus dynamic per-token quantization as the yardstick."""
    x = captures.activation(source, layer, eval_kind)
    static = spec.with_(strategy="tensor", dynamic=False)
    rows = []
    for kind in models.calibration_kinds():
        n = min(sentences, len(captures.token_counts(source, kind)))
        scale, zp = calibrate(calibration_set(kind, layer, n, source), static)
        qt = quantize_static(x, scale, zp, static)
        rows.append(CalibrationResult(kind, n, scale.item(), sqnr_db(x, qt.dequantize()), *error_split(x, qt)))
    dynamic = spec.with_(strategy="token", dynamic=True)
    qt = quantize(x, dynamic)
    rows.append(CalibrationResult("dynamic", 0, qt.scale.max().item(), sqnr_db(x, qt.dequantize()),
                                  *error_split(x, qt)))
    return rows


@torch.no_grad()
def error_split(x: torch.Tensor, qt: QuantizedTensor) -> tuple[float, float, float]:
    """(rounding MSE, clipping MSE, clipped fraction): total MSE is the sum of the two parts.

    A value is clipped when it lies more than half a step beyond the grid's end (nearer than
    that, it would round onto the end level anyway); its whole error counts as clipping error.
    FP8 grids are treated as ±448.
    """
    err2 = (x.double() - qt.dequantize().double()) ** 2
    clipped = clipped_mask(x, qt)
    n = x.numel()
    return err2[~clipped].sum().item() / n, err2[clipped].sum().item() / n, clipped.double().mean().item()


@dataclass(frozen=True, eq=False)
class ClipCurve:
    """Error against the clipping ratio r: each scale covers r × its min-max range."""

    ratios: np.ndarray
    rounding_mse: np.ndarray
    clipping_mse: np.ndarray
    clipped_fraction: np.ndarray

    @property
    def total_mse(self) -> np.ndarray:
        return self.rounding_mse + self.clipping_mse

    @property
    def best_ratio(self) -> float:
        return float(self.ratios[int(np.argmin(self.total_mse))])


@torch.no_grad()
def clipped_quantize(x: torch.Tensor, spec: QuantSpec, ratio: float) -> QuantizedTensor:
    """Quantize with each scale's min-max range shrunk to `ratio` of itself (1 = min-max)."""
    check_tensor(x, spec)
    if not 0 < ratio <= 1:
        raise QuantlabError(f"the clipping ratio must be in (0, 1], not {ratio:g}")
    lo, hi = observe_minmax(x, spec)
    scale, zp = calculate_qparams(ratio * lo, ratio * hi, spec)
    return quantize_with(x, scale, zp, spec)


@torch.no_grad()
def clipping_curve(x: torch.Tensor, spec: QuantSpec, ratios: np.ndarray) -> ClipCurve:
    parts = np.array([error_split(x, clipped_quantize(x, spec, float(r))) for r in ratios])
    return ClipCurve(ratios=np.asarray(ratios, dtype=float), rounding_mse=parts[:, 0],
                     clipping_mse=parts[:, 1], clipped_fraction=parts[:, 2])


@dataclass(frozen=True)
class SaturationExample:
    """One real value pushed through a grid: x / scale may land beyond qmax and get clamped."""

    value: float
    scale: float
    scaled: float  # x / scale (+ zero point): where it would land without the clamp
    code: int
    restored: float  # (code − zp) · scale
    row: int
    column: int

    @property
    def lost(self) -> float:
        return self.value - self.restored


@torch.no_grad()
def saturation_example(x: torch.Tensor, qt: QuantizedTensor, target: float = 150.0) -> SaturationExample:
    """The saturated value of a 2-D `x` that lands nearest `target` grid units (the syllabus'
    "150 → 127"); when nothing saturates, the value that lands highest."""
    spec = qt.spec
    if x.ndim != 2 or spec.type != "int" or spec.strategy == "group":
        raise QuantlabError("the saturation example needs a 2-D tensor on an integer grid without groups")
    scale = qt.scale.double().expand(x.shape)
    zp = torch.zeros_like(scale) if qt.zero_point is None else qt.zero_point.double().expand(x.shape)
    scaled = x.double() / scale + zp
    beyond = scaled > spec.qmax + CLIP_EDGE
    if beyond.any():
        distance = torch.where(beyond, (scaled - target).abs(), torch.full_like(scaled, torch.inf))
        flat = int(distance.argmin())
    else:
        flat = int(scaled.argmax())
    r, c = divmod(flat, x.shape[1])
    code = int(qt.q[r, c])
    return SaturationExample(value=x[r, c].item(), scale=scale[r, c].item(), scaled=scaled[r, c].item(),
                             code=code, restored=(code - zp[r, c].item()) * scale[r, c].item(), row=r, column=c)


def grid_limits(qt: QuantizedTensor) -> tuple[float, float]:
    """The real values a per-tensor grid reaches: (qmin − zp)·scale and (qmax − zp)·scale."""
    if qt.scale.numel() != 1:
        raise QuantlabError("grid limits are shown for per-tensor scales only")
    zp = 0.0 if qt.zero_point is None else float(qt.zero_point.item())
    scale = qt.scale.item()
    qmin, qmax = grid_range(qt.spec)
    return (qmin - zp) * scale, (qmax - zp) * scale


@dataclass(frozen=True)
class ClipPoint:
    """Everything the lesson shows for one clipping ratio of a per-tensor grid."""

    ratio: float
    rounding_mse: float
    clipping_mse: float
    clipped_fraction: float
    range_lo: float
    range_hi: float
    qmax: int
    example: SaturationExample | None  # None for tensors that are not 2-D

    @property
    def total_mse(self) -> float:
        return self.rounding_mse + self.clipping_mse

    @property
    def clipping_share(self) -> float:
        return self.clipping_mse / self.total_mse if self.total_mse > 0 else 0.0

    @property
    def saturates(self) -> bool:
        return self.example is not None and self.example.scaled > self.qmax + CLIP_EDGE


@torch.no_grad()
def clip_point(x: torch.Tensor, spec: QuantSpec, ratio: float) -> ClipPoint:
    qt = clipped_quantize(x, spec, ratio)
    lo, hi = grid_limits(qt)
    example = saturation_example(x, qt) if x.ndim == 2 else None
    return ClipPoint(ratio, *error_split(x, qt), lo, hi, spec.qmax, example)
