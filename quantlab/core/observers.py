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

import torch

from quantlab.core import blocks
from quantlab.core.errors import QuantlabError
from quantlab.core.qparams import (
    QuantizedTensor,
    calculate_qparams,
    check_tensor,
    dequantize,
    global_scale,
    observe_minmax,
    quantize_with,
)
from quantlab.core.spec import QuantSpec


def _row_spec(spec: QuantSpec) -> QuantSpec:
    """The same grid applied row by row, which is how every strategy looks after `blocks.as_rows`."""
    return QuantSpec(num_bits=spec.num_bits, type=spec.type, symmetric=spec.symmetric, strategy="channel")


@torch.no_grad()
def observe_percentile(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Range that leaves the top (100 - p)% of values outside, per scale.

    Symmetric grids care only about magnitude, so the cut is the p-th percentile of |x|;
    asymmetric grids cut both tails at (100 - p)/2 % each. Values are order statistics of the
    data (no interpolation), found with `kthvalue`, which works on tensors of any size. An edge
    tile of a block spec counts its zero padding, as llm-compressor's observers see the tile.
    """
    rows = blocks.as_rows(x, spec)
    n = rows.shape[1]
    p = spec.observer_setting("percentile") / 100
    shape = blocks.scale_shape(spec, tuple(x.shape))

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
    rows = blocks.as_rows(x, spec)
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
    shape = blocks.scale_shape(spec, tuple(x.shape))
    return best_lo.reshape(shape), best_hi.reshape(shape)


@torch.no_grad()
def observe(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scale (min, max) chosen by `spec.observer`, shaped like the scale."""
    if spec.observer == "percentile":
        return observe_percentile(x, spec)
    if spec.observer == "mse":
        return observe_mse(x, spec)
    return observe_minmax(x, spec)


@torch.no_grad()
def observe_qparams(x: torch.Tensor, spec: QuantSpec,
                    global_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero point for `x` observed on `x` itself by `spec.observer` (after checking `x`);
    NVFP4's group scales are taken under `global_scale` (see `qparams.global_scale`)."""
    check_tensor(x, spec)
    return calculate_qparams(*observe(x, spec), spec, global_scale)


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
    return observe_qparams(calibration, spec)


@torch.no_grad()
def quantize_static(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                    spec: QuantSpec) -> QuantizedTensor:
    """Quantize new activations with a calibrated scale: values beyond it saturate."""
    check_tensor(x, spec)
    return quantize_with(x, scale.to(x.dtype), zero_point, spec)


@torch.no_grad()
def quantize_activation(x: torch.Tensor, spec: QuantSpec,
                        calibration: torch.Tensor | None = None) -> QuantizedTensor:
    """Dynamic specs observe `x` itself; static ones use a scale calibrated on `calibration`.
    NVFP4's "local" activations observe their group scales on `x` under a global scale calibrated
    on `calibration` (on `x` itself when there is none)."""
    if spec.dynamic == "local":
        gs = global_scale(calibration if calibration is not None else x, spec)
        return quantize_with(x, *observe_qparams(x, spec, gs), spec, gs)
    if spec.dynamic:
        return quantize_with(x, *observe_qparams(x, spec), spec)
    if calibration is None:
        raise QuantlabError("a static activation scale needs calibration activations")
    scale, zp = calibrate(calibration, spec)
    return quantize_static(x, scale, zp, spec)



















