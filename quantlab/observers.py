"""Observers: how the range [min, max] that a scale must cover is chosen.

min-max covers every value, so nothing saturates but one outlier stretches the grid for all.
percentile ignores the most extreme (100 - p)% and lets them saturate. MSE searches shrunken
ranges p·[min, max], p = 1, 1 - 1/grid, … down to 1 - maxshrink, and keeps the one whose
quantization error sum |x - x̂|^norm is smallest, stopping after `patience` steps that improve no
scale (llm-compressor's MSE observer). Every observer returns ranges shaped like the scale its
spec produces, ready for `calculate_qparams`.

Static activation scales are observed once on calibration text and then applied to new inputs
(`calibrate` then `quantize_static`); dynamic ones are observed on each input itself (`quantize`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quantlab.errors import QuantlabError
from quantlab.metrics import clipped_mask
from quantlab.quantize import (
    QuantizedTensor,
    as_groups,
    calculate_qparams,
    check_tensor,
    dequantize,
    grid_range,
    observe_minmax,
    quantize,
    quantize_with,
)
from quantlab.spec import QuantSpec


def _rows(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` as [number of scales, values per scale]: each row shares one scale."""
    if spec.strategy == "tensor":
        return x.reshape(1, -1)
    if spec.strategy == "group":
        return as_groups(x, spec).reshape(-1, spec.group_size)  # type: ignore[arg-type]
    return x.reshape(x.shape[0], -1)


def _scale_shape(x: torch.Tensor, spec: QuantSpec) -> tuple[int, ...]:
    if spec.strategy == "tensor":
        return (1,)
    if spec.strategy == "group":
        assert spec.group_size is not None
        return (x.shape[0], x.shape[-1] // spec.group_size)
    return (x.shape[0], 1)


def _row_spec(spec: QuantSpec) -> QuantSpec:
    """The same grid applied row by row, which is how every strategy looks after `_rows`."""
    return QuantSpec(num_bits=spec.num_bits, type=spec.type, symmetric=spec.symmetric, strategy="channel")


@torch.no_grad()
def observe_percentile(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Range that leaves the top (100 - p)% of values outside, per scale.

    Symmetric grids care only about magnitude, so the cut is the p-th percentile of |x|;
    asymmetric grids cut both tails at (100 - p)/2 % each. Values are order statistics of the
    data (no interpolation), found with `kthvalue`, which works on tensors of any size.
    """
    rows = _rows(x, spec)
    n = rows.shape[1]
    p = spec.observer_setting("percentile") / 100
    shape = _scale_shape(x, spec)

    def kth(values: torch.Tensor, q: float) -> torch.Tensor:
        k = min(n, max(1, int(round(q * n))))
        return values.kthvalue(k, dim=1).values

    if spec.symmetric:
        hi = kth(rows.abs(), p)
        return (-hi).reshape(shape), hi.reshape(shape)
    tail = (1 - p) / 2
    return kth(rows, tail).reshape(shape), kth(rows, 1 - tail).reshape(shape)


@torch.no_grad()
def observe_mse(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The shrunken range with the smallest p-norm error, per scale, with early stopping."""
    rows = _rows(x, spec)
    row_spec = _row_spec(spec)
    grid = spec.observer_setting("grid")
    steps = int(spec.observer_setting("maxshrink") * grid)
    patience = int(spec.observer_setting("patience"))
    norm = spec.observer_setting("norm")
    lo, hi = observe_minmax(rows, row_spec)
    best = torch.full((rows.shape[0],), torch.inf, dtype=torch.float64)
    best_lo, best_hi = lo.clone(), hi.clone()
    stale = 0
    for i in range(max(steps, 1)):
        p = 1 - i / grid
        scale, zp = calculate_qparams(p * lo, p * hi, row_spec)
        approx = dequantize(quantize_with(rows, scale, zp, row_spec))
        err = ((approx - rows).abs().double() ** norm).sum(dim=1)
        better = err < best
        if better.any():
            best = torch.where(better, err, best)
            best_lo[better], best_hi[better] = p * lo[better], p * hi[better]
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                break
    shape = _scale_shape(x, spec)
    return best_lo.reshape(shape), best_hi.reshape(shape)


@torch.no_grad()
def observe(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scale (min, max) chosen by `spec.observer`, shaped like the scale."""
    if spec.observer == "percentile":
        return observe_percentile(x, spec)
    if spec.observer == "mse":
        return observe_mse(x, spec)
    return observe_minmax(x, spec)


def clip_ratio(x: torch.Tensor, spec: QuantSpec) -> float:
    """Where an observer lands, as a fraction of the min-max range (per-tensor view: 1 = no clipping).

    For a symmetric grid this is the chosen max|range| over max|x|; for asymmetric, the chosen
    width over the full width.
    """
    tensor_spec = spec.with_(strategy="tensor", group_size=None)
    lo, hi = observe(x, tensor_spec)
    full_lo, full_hi = torch.aminmax(x)
    if spec.symmetric:
        full = max(abs(full_lo.item()), abs(full_hi.item()))
        chosen = max(abs(lo.item()), abs(hi.item()))
    else:
        full = (full_hi - full_lo).item()
        chosen = (hi - lo).item()
    return chosen / full if full > 0 else 1.0


# -- static vs dynamic activation scales ---------------------------------------------------------

@torch.no_grad()
def calibrate(calibration: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A static activation scale (and zero point) observed once on calibration activations.

    Static scales are per tensor: one number must serve every future token, whatever its size.
    """
    if spec.strategy != "tensor":
        raise QuantlabError(f"static activation scales are per tensor, not per {spec.strategy}: "
                            "use dynamic quantization for per-token scales")
    check_tensor(calibration, spec)
    lo, hi = observe(calibration, spec)
    return calculate_qparams(lo, hi, spec)


@torch.no_grad()
def quantize_static(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                    spec: QuantSpec) -> QuantizedTensor:
    """Quantize new activations with a calibrated scale: values beyond it saturate."""
    check_tensor(x, spec)
    return quantize_with(x, scale.to(x.dtype), zero_point, spec)


@torch.no_grad()
def quantize_activation(x: torch.Tensor, spec: QuantSpec,
                        calibration: torch.Tensor | None = None) -> QuantizedTensor:
    """Dynamic specs observe `x` itself; static ones use a scale calibrated on `calibration`."""
    if spec.dynamic:
        return quantize(x, spec)
    if calibration is None:
        raise QuantlabError("a static activation scale needs calibration activations")
    scale, zp = calibrate(calibration, spec)
    return quantize_static(x, scale, zp, spec)


# -- clipping: rounding error against saturation error -------------------------------------------

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
    beyond = scaled > spec.qmax + 0.5
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
        return self.example is not None and self.example.scaled > self.qmax + 0.5


@torch.no_grad()
def clip_point(x: torch.Tensor, spec: QuantSpec, ratio: float) -> ClipPoint:
    qt = clipped_quantize(x, spec, ratio)
    lo, hi = grid_limits(qt)
    example = saturation_example(x, qt) if x.ndim == 2 else None
    return ClipPoint(ratio, *error_split(x, qt), lo, hi, spec.qmax, example)
