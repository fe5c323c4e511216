"""What-if comparisons: several schemes on the same layer, the same model, side by side.

The question engineers bring is "what happens if I use g64 / FP8 / W8A8 on my model?"; the honest
answer puts error (on real weights and real activations) next to what the file will weigh.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quantlab.core import metrics
from quantlab.core.errors import QuantlabError
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.io import sizing
from quantlab.lessons import outliers

# The schemes people actually ask about, as registry slugs (labels come from the registry).
CANDIDATES: tuple[str, ...] = ("w4a16-g32", "w4a16-g64", "w4a16", "w4a16-g256", "w4a16-asym", "w4a16-channel",
                               "w4a16-tensor", "w8a16", "w8a16-channel", "w8a8", "fp8", "fp8-dynamic",
                               "fp8-block", "nvfp4a16", "mxfp4a16", "mxfp8a16", "w4afp8", "nf4", "nf4-fp32")
DEFAULT_CHOICE = ("w4a16", "w4a16-g64", "w8a16", "w8a8", "fp8-dynamic")


@dataclass(frozen=True)
class LayerWhatIf:
    name: str
    spec: QuantSpec
    bits_per_weight: float  # sizing.stored_bits_per_weight: this layer's real layout, its scale dtype
    weight_sqnr_db: float
    output_sqnr_db: float | None  # X·Wᵀ error on real activations; None where none were captured
    quantizes_activations: bool
    skipped: str | None = None  # why this scheme cannot apply to this layer (e.g. group size)


@torch.no_grad()
def layer_what_if(name: str, w: torch.Tensor, x: torch.Tensor | None) -> LayerWhatIf:
    """One named candidate on one layer: weight error, layer-output error, storage cost; skipped
    with the reason where the scheme cannot take this layer's weights or inputs (a group that does
    not divide the row: FP8_BLOCK's activation groups of 128 as much as a weight group)."""
    spec = scheme_spec(name)
    w_spec = spec.with_(activations=None)
    try:
        w_hat = fake_quantize(w, w_spec)
        out_sqnr = None
        if x is not None:
            out_sqnr = metrics.sqnr_db(outliers.layer_output(x, w), outliers.quantized_output(x, w, spec))
    except QuantlabError as err:
        nan = float("nan")
        return LayerWhatIf(name, spec, nan, nan, None, spec.activations is not None, skipped=str(err))
    return LayerWhatIf(
        name=name, spec=spec,
        bits_per_weight=sizing.stored_bits_per_weight(tuple(w.shape), sizing.torch_dtype_code(w.dtype), spec),
        weight_sqnr_db=metrics.sqnr_db(w, w_hat), output_sqnr_db=out_sqnr,
        quantizes_activations=spec.activations is not None,
    )


def group_step_bits(w: torch.Tensor, coarse: int = 128, fine: int = 64) -> float | None:
    """Bits per weight that halving the group (g128 -> g64) adds on this layer; None where either
    group does not divide its rows."""
    if w.shape[-1] % coarse or w.shape[-1] % fine:
        return None
    dtype, spec = sizing.torch_dtype_code(w.dtype), QuantSpec(num_bits=4, strategy="group", group_size=coarse)
    return (sizing.stored_bits_per_weight(tuple(w.shape), dtype, spec.with_group_size(fine))
            - sizing.stored_bits_per_weight(tuple(w.shape), dtype, spec))


@dataclass(frozen=True)
class CheckpointSize:
    total_bytes: int
    notes: tuple[str, ...]  # what sizing had to decide, e.g. layers a group size cannot split


def model_sizes(source: sizing.Source, names: tuple[str, ...]) -> dict[str, CheckpointSize]:
    """File size of the whole checkpoint under each candidate (shapes only, no weights read)."""
    reports = {name: sizing.model_size(source, scheme_spec(name)) for name in names}
    return {name: CheckpointSize(r.total_bytes, r.notes) for name, r in reports.items()}
