"""The GPTQ lesson: GPTQ against round-to-nearest on a real layer's output, where the error goes, and
how the result depends on the calibration text and on how much of it there is.

Every comparison is on the layer's output X·Wᵀ (bias left out) for real inputs X. GPTQ's Hessian
comes from calibration text; the error is measured on an evaluation text. By default GPTQ is fitted
on the *other* shipped texts and judged on the held-out one: fitted and judged on the same ~500
tokens it gains ~10 dB on the story layer, but on a text it has not seen that gain can turn into a
loss (a 384-wide Hessian from a few hundred tokens describes those tokens, not the layer's inputs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from quantlab.core import gptq
from quantlab.core.metrics import sqnr_db
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import captures, models
from quantlab.lessons.clipping import calibration_set
from quantlab.lessons.outliers import layer_output

SAMPLE_COUNTS = (1, 3, 10, 40)  # sentences per text; each point is one GPTQ run (~0.5 s)
OTHERS = "others"  # calibrate on every shipped text but the evaluation text


def calibration_choices() -> list[str]:
    return [OTHERS, *models.calibration_kinds()]


def calibration_inputs(layer: str, calibration: str, sentences: int, eval_kind: str,
                       source: captures.Source = None) -> torch.Tensor:
    """The layer's real inputs on the first `sentences` sentences of one shipped text, or of each
    text but `eval_kind` (`OTHERS`)."""
    kinds = [k for k in models.calibration_kinds() if k != eval_kind] if calibration == OTHERS else [calibration]
    return torch.cat([calibration_set(k, layer, min(sentences, len(captures.token_counts(source, k))), source)
                      for k in kinds])


@dataclass(frozen=True, eq=False)
class ColumnErrors:
    """Per input column, in GPTQ's processing order (act-order: most input energy first).

    `*_weight` is the mean squared weight error of the column; `*_output` is the running sum of
    each column's share of the output error Σ_k (ΔWᵀΔW)_jk (XᵀX/n)_jk, whose total is the output
    MSE summed over output features, normalised so that RTN ends at 1. Shares can be negative:
    GPTQ's errors on different columns are built to cancel in the output.
    """

    order: np.ndarray
    energy: np.ndarray  # (XᵀX/n)_jj on the calibration text: how much input the column sees
    rtn_weight: np.ndarray
    gptq_weight: np.ndarray
    rtn_output: np.ndarray
    gptq_output: np.ndarray


@dataclass(frozen=True, eq=False)
class LayerStudy:
    rtn_output_db: float  # layer-output SQNR on the evaluation inputs
    gptq_output_db: float
    rtn_weight_db: float
    gptq_weight_db: float
    seconds: float  # GPTQ itself, Hessian included
    calibration_tokens: int
    rtn_fallback: bool
    columns: ColumnErrors

    @property
    def gain_db(self) -> float:
        return self.gptq_output_db - self.rtn_output_db

    def numbers(self) -> dict[str, str]:
        """The measured values the lesson's prose quotes."""
        cols = self.columns
        top = max(1, len(cols.order) // 10)
        return {"rtn_db": f"{self.rtn_output_db:.1f}", "gptq_db": f"{self.gptq_output_db:.1f}",
                "gain_db": f"{self.gain_db:.1f}", "rtn_w_db": f"{self.rtn_weight_db:.1f}",
                "gptq_w_db": f"{self.gptq_weight_db:.1f}",
                "w_loss_db": f"{self.rtn_weight_db - self.gptq_weight_db:.1f}",
                "seconds": f"{self.seconds:.2f}", "tokens": f"{self.calibration_tokens:,}",
                # the 10% of columns with the most input energy, against the 10% with the least
                "top_ratio": f"{cols.gptq_weight[:top].mean() / cols.rtn_weight[:top].mean():.2f}",
                "tail_ratio": f"{cols.gptq_weight[-top:].mean() / cols.rtn_weight[-top:].mean():.1f}"}


@torch.no_grad()
def _column_errors(w: torch.Tensor, rtn: torch.Tensor, ours: torch.Tensor, h_calib: torch.Tensor,
                   x_eval: torch.Tensor, order: torch.Tensor) -> ColumnErrors:
    gram = (x_eval.double().T @ x_eval.double()) / x_eval.shape[0]

    def shares(delta: torch.Tensor) -> torch.Tensor:
        return ((delta.T @ delta) * gram).sum(dim=1)[order]

    d_rtn, d_gptq = (rtn - w).double(), (ours - w).double()
    s_rtn, s_gptq = shares(d_rtn), shares(d_gptq)
    total = s_rtn.sum()
    return ColumnErrors(order=order.numpy(), energy=(torch.diagonal(h_calib)[order] / 2).double().numpy(),
                        rtn_weight=(d_rtn**2).mean(dim=0)[order].numpy(),
                        gptq_weight=(d_gptq**2).mean(dim=0)[order].numpy(),
                        rtn_output=(s_rtn.cumsum(0) / total).numpy(), gptq_output=(s_gptq.cumsum(0) / total).numpy())


@torch.no_grad()
def layer_study(w: torch.Tensor, x_calib: torch.Tensor, x_eval: torch.Tensor, spec: QuantSpec,
                args: gptq.GptqArgs) -> LayerStudy:
    """GPTQ fitted on `x_calib` against RTN, both measured on `x_eval`'s layer output."""
    start = time.perf_counter()
    h = gptq.hessian(x_calib)
    result = gptq.gptq(w, h, spec, args)
    seconds = time.perf_counter() - start
    ours = result.dequantize().to(w.dtype)
    rtn = fake_quantize(w, spec)
    ref = layer_output(x_eval, w)
    order = result.perm if result.perm is not None else torch.argsort(torch.diagonal(h), descending=True)
    return LayerStudy(rtn_output_db=sqnr_db(ref, layer_output(x_eval, rtn)),
                      gptq_output_db=sqnr_db(ref, layer_output(x_eval, ours)),
                      rtn_weight_db=sqnr_db(w, rtn), gptq_weight_db=sqnr_db(w, ours), seconds=seconds,
                      calibration_tokens=x_calib.shape[0], rtn_fallback=result.rtn_fallback,
                      columns=_column_errors(w, rtn, ours, h, x_eval, order))


def embedded_study(layer: str, spec: QuantSpec, args: gptq.GptqArgs, calibration: str, sentences: int,
                   eval_kind: str, source: captures.Source = None) -> LayerStudy:
    """`layer_study` on a model's real inputs (the embedded model's unless `source` names a local
    causal LM; see `calibration_inputs`)."""
    w = models.weight_matrix(captures.resolved(source), f"{layer}.weight")
    return layer_study(w, calibration_inputs(layer, calibration, sentences, eval_kind, source),
                       captures.activation(source, layer, eval_kind), spec, args)


@dataclass(frozen=True)
class CalibrationPoint:
    calibration: str  # text kind, OTHERS, or "RTN" for the calibration-free baseline
    sentences: int  # per text
    tokens: int
    output_db: float


def _gptq_point(w: torch.Tensor, x_eval: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, spec: QuantSpec,
                args: gptq.GptqArgs, calibration: str, sentences: int) -> CalibrationPoint:
    ours = gptq.gptq(w, gptq.hessian(x), spec, args).dequantize().to(w.dtype)
    return CalibrationPoint(calibration, sentences, x.shape[0], sqnr_db(ref, layer_output(x_eval, ours)))


def sweep_args(args: gptq.GptqArgs) -> gptq.GptqArgs:
    """The arguments a calibration sweep runs with: the block size only batches the feedback
    (the same result up to float rounding), so every block size shares the default's sweep."""
    return replace(args, block_size=gptq.GptqArgs().block_size)


def calibration_study(layer: str, spec: QuantSpec, args: gptq.GptqArgs, sentences: int,
                      eval_kind: str, source: captures.Source = None) -> list[CalibrationPoint]:
    """GPTQ calibrated on each choice of text (the first `sentences` sentences of each), evaluated
    on `eval_kind`; RTN last, as the yardstick that needs no calibration at all."""
    w = models.weight_matrix(captures.resolved(source), f"{layer}.weight")
    x_eval = captures.activation(source, layer, eval_kind)
    ref = layer_output(x_eval, w)
    rows = [_gptq_point(w, x_eval, ref, calibration_inputs(layer, c, sentences, eval_kind, source), spec, args, c,
                        sentences) for c in calibration_choices()]
    rows.append(CalibrationPoint("RTN", 0, 0, sqnr_db(ref, layer_output(x_eval, fake_quantize(w, spec)))))
    return rows


def samples_curve(layer: str, spec: QuantSpec, args: gptq.GptqArgs, calibration: str,
                  eval_kind: str, source: captures.Source = None) -> list[CalibrationPoint]:
    """Output SQNR on `eval_kind` against how many sentences (per text) built the Hessian.

    With fewer tokens than input features XᵀX is singular: dampening is then all that keeps it
    invertible, and GPTQ fits the few directions it saw at the expense of the rest."""
    w = models.weight_matrix(captures.resolved(source), f"{layer}.weight")
    x_eval = captures.activation(source, layer, eval_kind)
    ref = layer_output(x_eval, w)
    return [_gptq_point(w, x_eval, ref, calibration_inputs(layer, calibration, n, eval_kind, source), spec, args,
                        calibration, n) for n in SAMPLE_COUNTS]
