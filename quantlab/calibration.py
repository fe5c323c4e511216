"""Calibration: static activation scales observed on sample text, against dynamic per-token ones.

A static scale is fixed before deployment from a calibration set; every later token must fit
in it or saturate. How well it fits depends on the observer, on how many sentences were seen
and on whether they look like the text the model later reads. A dynamic scale is measured on
each token at run time: no calibration, no saturation, a little extra work per token.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from quantlab import models
from quantlab.errors import QuantlabError
from quantlab.metrics import sqnr_db
from quantlab.observers import calibrate, error_split, quantize_static
from quantlab.quantize import quantize
from quantlab.spec import QuantSpec


@lru_cache(maxsize=16)
def token_counts(kind: str) -> tuple[int, ...]:
    """Real tokens of each sentence of a calibration text, in file order."""
    _, tokenizer = models.embedded_model()
    batch = tokenizer(models.sample_texts(kind), truncation=True, max_length=128)  # type: ignore[operator]
    return tuple(len(ids) for ids in batch["input_ids"])


def calibration_set(kind: str, layer: str, sentences: int) -> torch.Tensor:
    """The layer's inputs over the first `sentences` sentences of a calibration text."""
    counts = token_counts(kind)
    if not 1 <= sentences <= len(counts):
        raise QuantlabError(f"{kind} has {len(counts)} sentences; pick 1 to {len(counts)}")
    # Captured tokens are stored sentence after sentence, so a prefix of rows is a prefix of text.
    return models.activation(layer, kind)[: sum(counts[:sentences])]


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


def study(layer: str, eval_kind: str, spec: QuantSpec, sentences: int) -> list[CalibrationResult]:
    """One static scale per calibration text (its first `sentences` sentences), each applied to
    `eval_kind`'s activations, plus dynamic per-token quantization as the yardstick."""
    x = models.activation(layer, eval_kind)
    static = spec.with_(strategy="tensor", dynamic=False)
    rows = []
    for kind in models.calibration_kinds():
        n = min(sentences, len(token_counts(kind)))
        scale, zp = calibrate(calibration_set(kind, layer, n), static)
        qt = quantize_static(x, scale, zp, static)
        rows.append(CalibrationResult(kind, n, scale.item(), sqnr_db(x, qt.dequantize()), *error_split(x, qt)))
    dynamic = spec.with_(strategy="token", dynamic=True)
    qt = quantize(x, dynamic)
    rows.append(CalibrationResult("dynamic", 0, qt.scale.max().item(), sqnr_db(x, qt.dequantize()),
                                  *error_split(x, qt)))
    return rows
