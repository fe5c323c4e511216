"""`quantlab whatif`: the What-if lesson's numbers for every quantized layer of a model, from a terminal.

For each scheme: every Linear the checkpoint would quantize, with its weight SQNR, its layer-output
SQNR on real inputs where the model can be run here (the embedded MiniLM, or a local causal LM
through `quantlab.io.decoder`), the bits and bytes it stores; the file size of the whole
checkpoint; and for a causal LM, perplexity and mean KL divergence on the held-out text.

Layer outputs are measured on the What-if lesson's text (`EVAL_KIND`), so the numbers are the
lesson's. GPTQ, where asked for and where it applies, is fitted on every other shipped text, as
the GPTQ lesson does by default: fitted and judged on the same few hundred tokens it would look
better than it is. The perplexity of a GPTQ model uses those same weights, and static activation
scales are calibrated on that same text, never on what is measured.

The command lives here rather than in `quantlab.io.cli` because it needs the lessons, which io may
not import; `main` hands it to io's command line as an extra subcommand.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch

from quantlab.core import gptq, metrics
from quantlab.core.spec import scheme, scheme_spec
from quantlab.io import captures, cli, decoder, models, sizing
from quantlab.lessons import compare, decoder_quality, outliers

EVAL_KIND = "general"  # the text the What-if lesson measures layer outputs on
Kind = Literal["embedded", "decoder", "weights", "config"]
Method = Literal["rtn", "gptq"]


@dataclass(frozen=True)
class LayerRow:
    layer: str
    shape: tuple[int, ...]
    bits_per_weight: float  # codes + scales (+ zero points) per weight: sizing.stored_bits_per_weight
    stored_bytes: int  # every tensor the checkpoint writes for this layer (weight_shape, input_scale too)
    weight_sqnr_db: float
    output_sqnr_db: float | None  # None where no real input of this layer was captured


@dataclass(frozen=True)
class SchemeResult:
    scheme: str  # registry slug
    label: str
    method: Method  # what ran: "rtn" where GPTQ was asked for but does not apply
    total_bytes: int  # the whole model.safetensors file
    bits_per_param: float  # whole file per parameter of the original model
    quantized_bits_per_weight: float  # the quantized layers only
    compression: float
    quantized_layers: int
    layers: tuple[LayerRow, ...]  # empty for a config without weights
    quality: decoder_quality.Quality | None  # causal LMs only
    seconds: float
    notes: tuple[str, ...]

    def mean_db(self, field: Literal["weight_sqnr_db", "output_sqnr_db"]) -> float | None:
        values = [v for v in (getattr(r, field) for r in self.layers) if v is not None]
        return sum(values) / len(values) if values else None

    def worst_output_db(self) -> float | None:
        values = [r.output_sqnr_db for r in self.layers if r.output_sqnr_db is not None]
        return min(values) if values else None


@dataclass(frozen=True)
class WhatIf:
    model: str
    kind: Kind
    activations: str | None  # the text layer outputs were measured on; None without activations
    original_bytes: int
    reference: decoder_quality.Quality | None  # the unquantized causal LM on the held-out text
    schemes: tuple[SchemeResult, ...]
    seconds: float
    notes: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class _Model:
    """What one run knows about MODEL: where sizes come from, weights, and real inputs if any."""

    kind: Kind
    label: str
    size_source: sizing.Source
    weights: models.ModelSource | None
    inputs_of: Callable[[str], dict[str, torch.Tensor]] | None  # a calibration text -> each layer's inputs
    decoder: decoder.Decoder | None


def _resolve(model: str) -> _Model:
    if model == "embedded":
        source = models.ModelSource.embedded()
    else:
        checkpoint = sizing.load_checkpoint(model)  # a missing path fails here, in one line
        if not checkpoint.has_weights:
            return _Model("config", checkpoint.label, model, None, None, None)
        source = models.ModelSource.local(model)
    # quantlab.io.captures decides which sources have real inputs (the embedded model, a causal LM).
    if not captures.available(source):
        return _Model("weights", source.label, source, source, None, None)
    folder = captures.decoder_folder(source)
    return _Model("embedded" if folder is None else "decoder", source.label, source, source,
                  functools.partial(captures.inputs, source), None if folder is None else decoder.load(folder))


def _calibration(m: _Model) -> dict[str, torch.Tensor]:
    """Every layer's inputs over each shipped text but `EVAL_KIND` (GPTQ's Hessians, static scales)."""
    assert m.inputs_of is not None
    captures = [m.inputs_of(kind) for kind in models.calibration_kinds() if kind != EVAL_KIND]
    return {name: torch.cat([c[name] for c in captures]) for name in captures[0]}


def _layer_bytes(report: sizing.SizeReport) -> dict[str, int]:
    """Bytes written for each quantized layer (sizing tags every tensor with the layer it stores)."""
    out: dict[str, int] = {}
    for t in report.tensors:
        if t.layer is not None:
            out[t.layer] = out.get(t.layer, 0) + t.nbytes
    return out


@torch.no_grad()
def _layer_rows(source: models.ModelSource, report: sizing.SizeReport, slug: str, method: Method,
                inputs: dict[str, torch.Tensor], quantized: dict[str, torch.nn.Module],
                calibration: dict[str, torch.Tensor]) -> tuple[list[LayerRow], list[str]]:
    """One row per quantized layer; GPTQ weights come from the decoder's quantized copy when there is
    one (the weights its perplexity was measured with), else from GPTQ on `calibration`. Also the
    layers GPTQ had to leave rounded to nearest (no captured inputs)."""
    rows, rounded = [], []
    # Each layer is a few small quantize/matmul steps: torch's thread pool costs more than it saves
    # (all of MiniLM's 36 layers at W8A8: 1.8 s on one thread, 5-11 s on this shared machine's two).
    with gptq.single_threaded():
        for layer, nbytes in _layer_bytes(report).items():
            w = models.weight_matrix(source, f"{layer}.weight")
            x = inputs.get(layer)
            row = compare.layer_what_if(slug, w, x)  # RTN; its stored bits hold for GPTQ too
            w_hat = None
            if method == "gptq" and layer in quantized:
                w_hat = quantized[layer].weight
            elif method == "gptq" and layer in calibration:
                w_hat = gptq.gptq(w, gptq.hessian(calibration[layer].float()), report.spec).dequantize().to(w.dtype)
            elif method == "gptq":
                rounded.append(layer)
            if w_hat is not None:
                row = replace(row, weight_sqnr_db=metrics.sqnr_db(w, w_hat), output_sqnr_db=None if x is None else
                              metrics.sqnr_db(outliers.layer_output(x, w), outliers.layer_output(x, w_hat)))
            rows.append(LayerRow(layer, tuple(w.shape), row.bits_per_weight, nbytes, row.weight_sqnr_db,
                                 row.output_sqnr_db))
    return rows, rounded


def _scheme(m: _Model, slug: str, use_gptq: bool, calibration: Callable[[], dict[str, torch.Tensor]],
            reference: list[torch.Tensor] | None) -> SchemeResult:
    start = time.perf_counter()
    spec = scheme_spec(slug)
    report = sizing.model_size(m.size_source, spec)
    notes = list(report.notes)
    method: Method = "rtn"
    if use_gptq:
        if not decoder_quality.gptq_applies(spec):
            notes.append("GPTQ applies to weight-only integer schemes here: rounded to nearest")
        elif m.inputs_of is None:
            notes.append("GPTQ needs real inputs, and this model cannot be run here: rounded to nearest")
        else:
            method = "gptq"
    quality = None
    quantized: dict[str, torch.nn.Module] = {}
    if m.decoder is not None:
        # quantized_model looks up every layer's calibration inputs for GPTQ and for activation hooks
        # (a dynamic hook leaves them unused): capture the other texts only then.
        needs = method == "gptq" or spec.activations is not None
        model = decoder_quality.quantized_model(m.decoder, spec, method, calibration() if needs else {})
        quality = decoder_quality.measure(m.decoder, model, reference, method)[0]
        quantized = dict(model.named_modules())
    rows: list[LayerRow] = []
    if m.weights is not None:
        inputs = m.inputs_of(EVAL_KIND) if m.inputs_of is not None else {}
        rows, rounded = _layer_rows(m.weights, report, slug, method, inputs, quantized,
                                    calibration() if method == "gptq" else {})
        if rounded:  # e.g. GPT-2's Conv1D layers, which the capture (Linear hooks) does not see
            notes.append(f"{len(rounded)} layer(s) had no captured inputs and were rounded to nearest "
                         f"(e.g. {rounded[0]})")
    return SchemeResult(
        scheme=scheme(slug).slug, label=scheme(slug).label, method=method, total_bytes=report.total_bytes,
        bits_per_param=report.bits_per_weight, quantized_bits_per_weight=report.quantized_bits_per_weight(),
        compression=report.compression, quantized_layers=report.quantized_layers, layers=tuple(rows),
        quality=quality, seconds=time.perf_counter() - start, notes=tuple(notes))


def run(model: str, schemes: Sequence[str], use_gptq: bool = False) -> WhatIf:
    """Every scheme on MODEL: "embedded", a local .safetensors file or HF folder, a config.json or a
    shipped config name (sizes only)."""
    start = time.perf_counter()
    slugs = [scheme(name).slug for name in schemes]  # a bad name fails before any model is loaded
    for slug in slugs:
        scheme_spec(slug)
    m = _resolve(model)
    cached: list[dict[str, torch.Tensor]] = []

    def calibration() -> dict[str, torch.Tensor]:
        if not cached:
            cached.append(_calibration(m))
        return cached[0]

    reference, ref_logp = None, None
    if m.decoder is not None:
        reference, ref_logp = decoder_quality.measure(m.decoder, m.decoder.model, None, "fp")
    results = tuple(_scheme(m, slug, use_gptq, calibration, ref_logp) for slug in slugs)
    notes = {
        "config": f"sizes only: {m.label} is an architecture without weights (no SQNR, no perplexity)",
        "weights": "weights only: no real inputs for this model here, so no layer-output SQNR and no perplexity "
                   "(a local causal-LM folder or 'embedded' has them)",
        "embedded": "an encoder: no perplexity (the What-if lesson's whole-model run measures its embeddings)",
        "decoder": "",
    }[m.kind]
    original = sizing.load_checkpoint(m.size_source)
    return WhatIf(model=m.label, kind=m.kind, activations=None if m.inputs_of is None else EVAL_KIND,
                  original_bytes=sum(t.nbytes for t in original.tensors), reference=reference, schemes=results,
                  seconds=time.perf_counter() - start, notes=(notes,) if notes else ())


# -- the command ----------------------------------------------------------------------------------

def _finite(value: object) -> object:
    """JSON without NaN or Infinity (not JSON): a non-finite SQNR (an exact layer) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(result: WhatIf) -> str:
    return json.dumps(_finite(asdict(result)), indent=1, allow_nan=False)


def _db(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def to_text(result: WhatIf) -> str:
    has_quality = result.reference is not None
    lines = [f"{result.model}: unquantized {sizing.format_bytes(result.original_bytes)}; "
             + (f"layer outputs on real inputs ('{result.activations}' text)" if result.activations
                else "no real inputs")]
    head = f"{'scheme':<26} {'method':<6} {'file size':>11} {'bits/param':>10} {'bits/weight':>11} " \
           f"{'weight dB':>9} {'output dB':>9} {'worst':>6}"
    if has_quality:
        head += f" {'perplexity':>10} {'KL nats':>8}"
    lines += ["", head]
    if result.reference is not None:
        lines.append(f"{'unquantized':<26} {'':<6} {sizing.format_bytes(result.original_bytes):>11} {'':>10} "
                     f"{'':>11} {'':>9} {'':>9} {'':>6} {result.reference.perplexity:>10.3f} {0:>8.4f}")
    for s in result.schemes:
        line = (f"{s.label:<26} {s.method:<6} {sizing.format_bytes(s.total_bytes):>11} {s.bits_per_param:>10.3f} "
                f"{s.quantized_bits_per_weight:>11.3f} {_db(s.mean_db('weight_sqnr_db')):>9} "
                f"{_db(s.mean_db('output_sqnr_db')):>9} {_db(s.worst_output_db()):>6}")
        if s.quality is not None:
            line += f" {s.quality.perplexity:>10.3f} {s.quality.kl_mean:>8.4f}"
        lines.append(line)
    lines.append("dB: SQNR, mean over the quantized layers (worst: the lowest layer-output SQNR); "
                 "bits/weight: quantized layers only" + ("; KL: mean per token against unquantized, "
                                                         "on the held-out text" if has_quality else ""))
    for s in result.schemes:
        if not s.layers:
            continue
        width = max(len(r.layer) for r in s.layers)
        lines += ["", f"{s.label} ({s.method}), {s.quantized_layers} layers, {s.seconds:.1f} s",
                  f"{'layer':<{width}} {'shape':>11} {'bits/w':>7} {'bytes':>13} {'weight dB':>9} {'output dB':>9}"]
        lines += [f"{r.layer:<{width}} {'x'.join(map(str, r.shape)):>11} {r.bits_per_weight:>7.3f} "
                  f"{r.stored_bytes:>13,} {_db(r.weight_sqnr_db):>9} {_db(r.output_sqnr_db):>9}" for r in s.layers]
    lines.append("")
    lines += [f"note: {n}" for n in result.notes]
    lines += [f"note: {s.label}: {n}" for s in result.schemes for n in s.notes]
    lines.append(f"{result.seconds:.1f} s")
    return "\n".join(lines)


def cmd_whatif(args: argparse.Namespace) -> int:
    from transformers.utils import logging

    logging.disable_progress_bar()  # the loading bars would bury the table (and the one-line errors)
    result = run(args.model, [s for s in args.schemes.split(",") if s.strip()], args.gptq)
    print(to_json(result) if args.json else to_text(result))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `whatif` subcommand, for `quantlab.io.cli.main(extra=...)`."""
    p = sub.add_parser(
        "whatif", help="per-layer error, bytes and file size (and perplexity / KL) under several schemes",
        description="Compare schemes on MODEL: each quantized layer's weight SQNR, layer-output SQNR on real "
                    "inputs (the embedded model, or a local causal-LM folder, run here on the CPU), the bits and "
                    "bytes it stores, the checkpoint's size, and for a causal LM perplexity and mean KL on a "
                    "held-out text. MODEL is 'embedded', a local .safetensors file or model folder, a "
                    "config.json or a shipped architecture (" + ", ".join(sizing.shipped_configs()) + "; "
                    "sizes only). Nothing is downloaded.")
    p.add_argument("model", metavar="MODEL", nargs="?", default="embedded")
    p.add_argument("--schemes", default=",".join(compare.DEFAULT_CHOICE), metavar="S1,S2,...",
                   help="comma-separated schemes (slugs or llm-compressor preset names, e.g. W4A16,W8A8,FP8_DYNAMIC); "
                        f"default {','.join(compare.DEFAULT_CHOICE)}")
    p.add_argument("--gptq", action="store_true",
                   help="GPTQ instead of round-to-nearest for weight-only integer schemes (needs real inputs)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(run=cmd_whatif)


def main(argv: Sequence[str] | None = None) -> int:
    """The `quantlab` command with `whatif` added: size, export and whatif."""
    return cli.main(argv, extra=(add_parser,))


if __name__ == "__main__":
    sys.exit(main())
