"""Outlier channels and the remedies for them, on one Linear layer: Y = X·Wᵀ.

X is [tokens, in] (real inputs captured from the model), W is [out, in]. Every remedy here keeps
the full-precision product unchanged and only moves where the quantization difficulty sits:

- SmoothQuant divides input channel j of X by s_j and multiplies column j of W by s_j, with
  s_j = max|X_j|^α / max|W_j|^(1−α). No value of α means "no smoothing" (that is s = 1): α = 0 gives
  s_j = 1/max|W_j|, which normalises every weight column to 1 and puts the whole range on the
  activations; α = 1 flattens the activations and puts it all on the weights.
- AWQ scales the same way but for weight-only quantization, s_j = mean|X_j|^r (optionally divided
  by the mean normalized |W_j|^(1−r), llm-compressor's `duo_scaling`), and grid-searches r on the
  layer-output error ‖Q(W·s)(X/s)ᵀ − W·Xᵀ‖². AWQ's own search (llm-compressor, llm-awq) measures
  that error at the parent block's output, keeps the best r even when plain rounding was better
  (with duo scaling r = 0 is not s = 1), and llm-awq adds a clipping search; here the error is the
  one layer's output and s = 1 is reported beside the grid.
- Mixed precision keeps some input channels out of quantization (their X columns and W columns
  stay 16-bit). LLM.int8() picks them at run time, every column of X with a value of magnitude
  ≥ 6.0, and multiplies the rest in vector-wise INT8 (a scale per token and per output channel);
  the curve here ranks channels by their calibration max instead, to show the price of each one.
Errors are measured on the layer's output, where they matter, not on X or W alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from quantlab.core import blocks
from quantlab.core.errors import QuantlabError
from quantlab.core.metrics import mse, sqnr_db
from quantlab.core.observers import quantize_activation
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec

FP16_BITS = 16
AWQ_GRID = 20  # llm-compressor's n_grid
LLM_INT8_THRESHOLD = 6.0  # bitsandbytes' default outlier threshold


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Per-input-channel max|x| of one activation and how far the largest sticks out."""

    absmax: np.ndarray  # [in_features]
    median: float
    top_channel: int
    ratio: float  # max over median


@torch.no_grad()
def channel_stats(x: torch.Tensor) -> ChannelStats:
    absmax = x.abs().amax(dim=0).double()
    median = absmax.median().item()
    top = int(absmax.argmax())
    return ChannelStats(absmax=absmax.numpy(), median=median, top_channel=top,
                        ratio=absmax[top].item() / median if median > 0 else float("inf"))


@dataclass(frozen=True)
class TokenSplit:
    """Where one channel's large values sit: on the first token of each sentence, or everywhere."""

    first: float  # median |x| of the channel over first-token rows
    rest: float  # median |x| of the channel over every other row
    rest_ratio: float  # top channel's max over the median channel's max, first tokens left out


@torch.no_grad()
def first_token_split(x: torch.Tensor, first: torch.Tensor, channel: int) -> TokenSplit:
    if first.shape != (x.shape[0],) or not first.any() or first.all():
        raise QuantlabError("first-token rows must mark some, not all, rows of the activation")
    col = x[:, channel].abs()
    return TokenSplit(first=col[first].median().item(), rest=col[~first].median().item(),
                      rest_ratio=channel_stats(x[~first]).ratio)


def _check_pair(x: torch.Tensor, w: torch.Tensor) -> None:
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise QuantlabError(f"activations {tuple(x.shape)} do not feed weight {tuple(w.shape)} "
                            "(need X [tokens, in] and W [out, in])")


@torch.no_grad()
def layer_output(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """X·Wᵀ, the reference every error below is measured against (bias left out).

    float32 on purpose: its rounding (~1e-7 of the output) sits more than 60 dB below the
    smallest quantization error shown here, and float64 matmuls made a layer change take seconds.
    """
    return x.float() @ w.float().T


@torch.no_grad()
def quantized_output(x: torch.Tensor, w: torch.Tensor, spec: QuantSpec,
                     calibration: torch.Tensor | None = None) -> torch.Tensor:
    """Q(X)·Q(W)ᵀ for a weight spec; its `activations` spec (if any) quantizes X.

    A static activation spec is calibrated on `calibration` (default: X itself).
    """
    _check_pair(x, w)
    w_hat = fake_quantize(w, spec.with_(activations=None))
    x_hat = x
    if spec.activations is not None:
        calib = x if calibration is None else calibration
        x_hat = quantize_activation(x, spec.activations, calib).dequantize()
    return layer_output(x_hat, w_hat)


# -- SmoothQuant -------------------------------------------------------------------------------

@torch.no_grad()
def smooth_scales(x_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1−α), clamped away from 0 like llm-compressor does.

    No value of α gives s = 1: at α = 0 every weight column is divided by its own max.
    """
    if not 0 <= alpha <= 1:
        raise QuantlabError(f"SmoothQuant's alpha must be in [0, 1], not {alpha:g}")
    s = x_absmax.clamp(min=1e-5) ** alpha / w_absmax.clamp(min=1e-5) ** (1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def smooth(x: torch.Tensor, w: torch.Tensor, alpha: float,
           calibration: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X/s, W·s, s): the same product with difficulty moved from X to W; s from calibration stats."""
    _check_pair(x, w)
    stats = x if calibration is None else calibration
    s = smooth_scales(stats.abs().amax(dim=0), w.abs().amax(dim=0), alpha)
    return x / s, w * s, s


@dataclass(frozen=True, eq=False)
class SmoothRanges:
    """max|X_j| and max|W_j| per input channel, before and after smoothing."""

    x_before: np.ndarray
    x_after: np.ndarray
    w_before: np.ndarray
    w_after: np.ndarray

    @staticmethod
    def _spread(col_max: np.ndarray) -> float:
        return float(col_max.max() / np.median(col_max))

    @property
    def x_spread(self) -> float:
        """Largest channel max over the median channel max, activations before smoothing."""
        return self._spread(self.x_before)

    @property
    def w_spread(self) -> float:
        """The same for the weight columns: small when the columns start flat."""
        return self._spread(self.w_before)


@torch.no_grad()
def smooth_ranges(x: torch.Tensor, w: torch.Tensor, alpha: float) -> SmoothRanges:
    xs, ws, _ = smooth(x, w, alpha)

    def col_max(t: torch.Tensor) -> np.ndarray:
        return t.abs().amax(dim=0).double().numpy()

    return SmoothRanges(col_max(x), col_max(xs), col_max(w), col_max(ws))


@dataclass(frozen=True, eq=False)
class SmoothCurve:
    alphas: np.ndarray
    sqnr_db: np.ndarray  # layer-output SQNR of the W8A8 (or given) scheme after smoothing
    baseline_db: float  # the same scheme without smoothing

    @property
    def best_alpha(self) -> float:
        return float(self.alphas[int(np.argmax(self.sqnr_db))])

    @property
    def gain_db(self) -> float:
        return float(self.sqnr_db.max() - self.baseline_db)

    def at(self, alpha: float) -> float:
        """SQNR at the swept α nearest to `alpha`."""
        return float(self.sqnr_db[int(np.argmin(np.abs(self.alphas - alpha)))])


@torch.no_grad()
def smooth_curve(x: torch.Tensor, w: torch.Tensor, spec: QuantSpec, alphas: np.ndarray,
                 calibration: torch.Tensor | None = None) -> SmoothCurve:
    """Layer-output SQNR of `spec` after smoothing with each α."""
    ref = layer_output(x, w)
    values = []
    for a in alphas:
        xs, ws, s = smooth(x, w, float(a), calibration)
        calib = None if calibration is None else calibration / s
        values.append(sqnr_db(ref, quantized_output(xs, ws, spec, calib)))
    baseline = sqnr_db(ref, quantized_output(x, w, spec, calibration))
    return SmoothCurve(alphas=np.asarray(alphas, dtype=float), sqnr_db=np.array(values), baseline_db=baseline)


# -- AWQ -------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class AwqSearch:
    ratios: np.ndarray
    losses: np.ndarray  # output MSE for each ratio
    identity_loss: float  # output MSE with no scaling (plain round-to-nearest)
    best_ratio: float | None  # None when no ratio beat plain quantization
    scales: torch.Tensor  # the chosen s (all ones when best_ratio is None)

    @property
    def grid_ratio(self) -> float:
        """The ratio AWQ itself applies: the grid's best, whether or not it beats s = 1."""
        return float(self.ratios[int(np.argmin(self.losses))])

    @property
    def grid_relative_loss(self) -> float:
        """The grid's best loss as a fraction of plain round-to-nearest's (> 1: AWQ made it worse)."""
        return float(self.losses.min()) / self.identity_loss if self.identity_loss > 0 else 1.0

    @property
    def best_loss(self) -> float:
        return self.identity_loss if self.best_ratio is None else float(self.losses.min())

    @property
    def relative_loss(self) -> float:
        """Chosen loss as a fraction of plain round-to-nearest's."""
        return self.best_loss / self.identity_loss if self.identity_loss > 0 else 1.0

    @property
    def gain_db(self) -> float:
        """How much lower the chosen loss is than no scaling, in dB (≥ 0)."""
        return 10 * float(np.log10(self.identity_loss / self.best_loss)) if self.best_loss > 0 else float("inf")


@torch.no_grad()
def awq_scales(x: torch.Tensor, w: torch.Tensor, ratio: float, spec: QuantSpec,
               duo_scaling: bool = True) -> torch.Tensor:
    """AWQ's candidate s for one ratio, normalized so that max(s)·min(s) = 1."""
    x_mean = x.abs().double().mean(dim=0)
    s = x_mean.clamp(min=1e-4) ** ratio
    if duo_scaling:
        # Weight magnitude relative to the max of the values sharing its scale (llm-compressor's
        # `_compute_layer_means`), so blocks of different size compare.
        per_scale = blocks.as_rows(w.abs().double(), spec)
        w_rel = (per_scale / per_scale.amax(dim=-1, keepdim=True).clamp(min=1e-12)).reshape(w.shape)
        s = s / w_rel.mean(dim=0).clamp(min=1e-4) ** (1 - ratio)
    s = s / (s.max() * s.min()).sqrt()
    return s.to(w.dtype)


@torch.no_grad()
def awq_loss(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, spec: QuantSpec,
             ref: torch.Tensor | None = None) -> float:
    """‖Q(W·s)·(X/s)ᵀ − W·Xᵀ‖² / N: weight-only error of the layer output for scales s."""
    w_hat = fake_quantize(w * s, spec.with_(activations=None)) / s
    return mse(layer_output(x, w) if ref is None else ref, layer_output(x, w_hat))


@torch.no_grad()
def awq_search(x: torch.Tensor, w: torch.Tensor, spec: QuantSpec, n_grid: int = AWQ_GRID,
               duo_scaling: bool = True) -> AwqSearch:
    """Grid over r = 0, 1/n, …, (n−1)/n; keep the scales with the lowest output error.

    quantlab also scores plain quantization (s = 1) and keeps it when no ratio beats it; AWQ's
    reference search has no such candidate (`grid_ratio` is what it would apply).
    """
    _check_pair(x, w)
    ratios = np.arange(n_grid) / n_grid
    ref = layer_output(x, w)
    losses = np.array([awq_loss(x, w, awq_scales(x, w, float(r), spec, duo_scaling), spec, ref) for r in ratios])
    identity = awq_loss(x, w, torch.ones(w.shape[1], dtype=w.dtype), spec, ref)
    i = int(np.argmin(losses))
    if losses[i] < identity:
        return AwqSearch(ratios, losses, identity, float(ratios[i]),
                         awq_scales(x, w, float(ratios[i]), spec, duo_scaling))
    return AwqSearch(ratios, losses, identity, None, torch.ones(w.shape[1], dtype=w.dtype))


# -- mixed precision ---------------------------------------------------------------------------------

@torch.no_grad()
def threshold_channels(x: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD) -> int:
    """How many input channels LLM.int8() would keep in 16-bit: those with some |x| ≥ threshold."""
    return int((x.abs().amax(dim=0) >= threshold).sum())


@torch.no_grad()
def outlier_channels(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k input channels with the largest max|x|."""
    return x.abs().amax(dim=0).topk(min(k, x.shape[1])).indices


@torch.no_grad()
def mixed_precision_output(x: torch.Tensor, w: torch.Tensor, spec: QuantSpec, k: int,
                           calibration: torch.Tensor | None = None) -> torch.Tensor:
    """Q(X_rest)·Q(W_rest)ᵀ + X_k·W_kᵀ: the k outlier channels bypass quantization."""
    _check_pair(x, w)
    stats = x if calibration is None else calibration
    keep = outlier_channels(stats, k)
    rest = torch.ones(x.shape[1], dtype=torch.bool)
    rest[keep] = False
    calib = None if calibration is None else calibration * rest
    low = quantized_output(x * rest, w * rest, spec, calib)
    return low + layer_output(x[:, keep], w[:, keep])


@dataclass(frozen=True, eq=False)
class MixedCurve:
    ks: np.ndarray
    sqnr_db: np.ndarray
    extra_bytes: np.ndarray  # storage added by keeping those weight columns in 16-bit
    layer_bytes: int  # the layer's weights at spec.num_bits
    threshold_k: int  # channels LLM.int8()'s |x| ≥ 6 rule keeps on this input (one of `ks`)


@torch.no_grad()
def mixed_precision_curve(x: torch.Tensor, w: torch.Tensor, spec: QuantSpec, ks: list[int],
                          calibration: torch.Tensor | None = None) -> MixedCurve:
    ref = layer_output(x, w)
    threshold_k = threshold_channels(x if calibration is None else calibration)
    ks = sorted({*ks, threshold_k})
    sq = [sqnr_db(ref, mixed_precision_output(x, w, spec, k, calibration)) for k in ks]
    extra = [k * w.shape[0] * (FP16_BITS - spec.num_bits) / 8 for k in ks]
    return MixedCurve(ks=np.array(ks), sqnr_db=np.array(sq), extra_bytes=np.array(extra),
                      layer_bytes=w.numel() * spec.num_bits // 8, threshold_k=threshold_k)
