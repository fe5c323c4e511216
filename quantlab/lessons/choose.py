"""Choose a scheme: the lab's own measurements turned into a recommendation, with its reason.

The learner states a priority and the hardware; everything else is measured: the error of each
candidate on the selected layer (layer-output SQNR on real activations, weight SQNR where only
weights exist), the exact checkpoint size of a deployment architecture, the measured speed of
the matching kernel at the learner's batch size (the committed GPU run), and the KV cache at the
learner's context. The policy is a handful of pure functions over those numbers, so every
recommendation carries a one-line reason computed from them, and changes when they change.

The rules, each with the measurement that decides it:
- accuracy: the highest SQNR among the schemes the hardware runs;
- compression: the smallest file whose SQNR meets the learner's floor;
- balance: start from the compression choice and spend bits on finer scales (same code width)
  only while each extra bit per weight buys at least 20·log10(2) = 6.02 dB, which is what one
  more bit of code buys an ideal quantizer: past that point scales are the worse way to spend bits;
- long context: the balance weights plus an FP8 KV cache where the hardware has one;
- throughput: the fastest measured kernel at the learner's batch (NVIDIA, from the H200 run).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from quantlab.core import metrics
from quantlab.core.errors import QuantlabError
from quantlab.core.observers import calibrate, quantize_static
from quantlab.core.quantize import fake_quantize, quantize
from quantlab.core.spec import QuantSpec, scheme, scheme_spec
from quantlab.io import captures, export, sizing
from quantlab.lessons import clipping, hardware, kv_cache, outliers, speed

PRIORITIES: dict[str, str] = {
    "accuracy": "Maximum accuracy",
    "balance": "Balance accuracy and size",
    "compression": "Maximum compression",
    "long-context": "Long context",
    "throughput": "High-throughput serving",
}
# Schemes with a serving path somewhere (Marlin/Machete take 4- and 8-bit codes), as registry slugs.
CANDIDATES: tuple[str, ...] = ("w8a16", "w8a16-channel", "w4a16-g32", "w4a16-g64", "w4a16", "w4a16-asym",
                               "w4a16-channel", "w8a8", "fp8-dynamic")
BIT_DB = 20 * math.log10(2)  # SQNR one more code bit buys a uniform quantizer: 6.02 dB
DEFAULT_FLOOR_DB = 20.0  # RMS error a tenth of the output's RMS
KV_FP8 = kv_cache.kv_spec("FP8", "tensor")  # what vLLM's kv_cache_dtype="fp8" stores
# The committed run times exactly these schemes (kernel method -> registry slug).
TIMED: dict[str, str] = {"w4a16": "w4a16", "w8a16": "w8a16", "fp8-dynamic": "fp8"}
INT4_NAIVE_BYTES_PER_WEIGHT = 0.5


def capability(slug: str) -> str:
    """Which row of the hardware matrix a scheme needs: what its weights are expanded to or its
    matmul computes in. FP4 weights (NVFP4, MXFP4) take the FP4 row with or without FP4
    activations; FP8 activations the FP8 matmul even under INT4 weights (W4AFP8's kernels expand
    the INT4 codes to FP8 for the FP8 tensor cores). MXFP8's E8M0 scales, FP8_BLOCK's tiles and
    NF4's table each need kernels of their own, so each has its own row."""
    spec = scheme_spec(slug)
    acts = spec.activations
    if spec.type == "nf4":
        return "nf4"
    if spec.type == "float" and spec.num_bits == 4:
        return "fp4"
    if spec.scale_dtype == "e8m0":
        return "mxfp8"
    if spec.strategy == "block":
        return "fp8-block"
    if spec.type == "float" or (acts is not None and acts.type == "float"):
        return "fp8-matmul"
    if acts is not None:
        return "int8-matmul"
    return "int4-weight" if spec.num_bits == 4 else "int8-weight"


# -- the measurements ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerError:
    slug: str
    weight_sqnr_db: float
    output_sqnr_db: float | None  # on real activations; None where the lab has none for this layer
    layer_bits: float  # bits this layer stores per weight (codes, scales, zero points)
    skipped: str | None = None  # why the scheme cannot quantize this layer

    @property
    def error_db(self) -> float:
        return self.weight_sqnr_db if self.output_sqnr_db is None else self.output_sqnr_db


@torch.no_grad()
def layer_error(slug: str, w: torch.Tensor, x: torch.Tensor | None, dtype: str) -> LayerError:
    """One candidate on one layer: weight error, output error on real inputs, stored bits."""
    spec = scheme_spec(slug)
    try:
        w_hat = fake_quantize(w, spec.with_(activations=None))
    except QuantlabError as err:
        return LayerError(slug, math.nan, None, math.nan, skipped=str(err))
    out = None
    if x is not None:
        out = metrics.sqnr_db(outliers.layer_output(x, w), outliers.quantized_output(x, w, spec))
    bits = sizing.stored_bits_per_weight(tuple(w.shape), dtype, spec)  # W4AFP8 stores int8 codes
    return LayerError(slug, metrics.sqnr_db(w, w_hat), out, bits)


@dataclass(frozen=True)
class FileSize:
    total_bytes: int
    bits_per_parameter: float  # whole file over every parameter
    quantized_bits: float  # per weight of the quantized Linears: what a finer scale costs


def file_sizes(arch: sizing.Source, slugs: Sequence[str]) -> dict[str, FileSize]:
    out = {}
    for slug in slugs:
        r = sizing.model_size(arch, scheme_spec(slug))
        out[slug] = FileSize(r.total_bytes, r.bits_per_weight, r.quantized_bits_per_weight())
    return out


def nearest_batch(res: speed.Results, m: int) -> int:
    """The measured batch size closest to `m` on a log scale (speed moves with log M)."""
    return min(res.batch_sizes, key=lambda b: (abs(math.log2(b) - math.log2(m)), b))


def speedups(res: speed.Results, m: int) -> dict[str, float | None]:
    """Geomean speedup over bf16 at the measured batch nearest `m`, for every timed candidate."""
    b = nearest_batch(res, m)
    return {slug: res.geomean_speedup(b, method) for slug, method in TIMED.items()}


@dataclass(frozen=True)
class Memory:
    """Weights plus KV cache of the deployment architecture at the learner's context and batch."""

    arch: str
    context: int
    batch: int
    weights_bytes: int  # bf16 checkpoint as published
    kv16_bytes: int
    kv8_bytes: int
    fp8_kv_attention_db: float | None  # attention-output SQNR of an FP8 cache on MiniLM's real K/V


def memory(arch: str, context: int, batch: int, fp8_kv_attention_db: float | None) -> Memory:
    a = kv_cache.architecture(arch)
    return Memory(arch, context, batch, kv_cache.weight_bytes(arch, "bf16"), kv_cache.kv_bytes(a, context, batch).total,
                  kv_cache.kv_bytes(a, context, batch, KV_FP8).total, fp8_kv_attention_db)


def fp8_kv_attention_db() -> float:
    """FP8 per-tensor K and V on the embedded model's real keys and values: attention-output SQNR."""
    return kv_cache.kv_error(KV_FP8).out_sqnr_db["kv"]


# -- the evidence table -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """Everything the policy knows about one candidate."""

    slug: str
    error_db: float | None  # layer-output SQNR (weight SQNR without activations); None: skipped
    layer_bits: float | None
    file: FileSize
    speedup: float | None  # over bf16 at the learner's batch; None: not timed or not runnable so
    status: hardware.Status
    cosine: float | None = None  # whole embedded model, embedding cosine to fp32
    skipped: str | None = None

    @property
    def label(self) -> str:
        return scheme(self.slug).label

    @property
    def num_bits(self) -> int:
        return scheme_spec(self.slug).num_bits

    @property
    def usable(self) -> bool:
        return self.status != "none" and self.skipped is None and self.error_db is not None


def evidence(errors: Mapping[str, LayerError], files: Mapping[str, FileSize],
             measured: Mapping[str, float | None], hw: str,
             cosines: Mapping[str, float] | None = None) -> tuple[Row, ...]:
    """One row per candidate. A timing counts only where the hardware runs that scheme the way the
    timed kernel did: a GPU of the vendor timed, with the same execution (FP8 on Ampere runs
    weight-only, so the FP8 W8A8 timing does not apply there)."""
    rows = []
    for slug, err in errors.items():
        e = hardware.entry(hw, capability(slug))
        timed_like = hw in hardware.NVIDIA and (e.status == "native" or capability(slug) != "fp8-matmul")
        rows.append(Row(slug, None if err.skipped else err.error_db, None if err.skipped else err.layer_bits,
                        files[slug], measured.get(slug) if timed_like and e.status != "none" else None,
                        e.status, (cosines or {}).get(slug), err.skipped))
    return tuple(rows)


# -- the policy -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recommendation:
    slug: str
    kv_fp8: bool
    reason: str  # one line, from the numbers


def _size(r: Row) -> str:
    return f"{sizing.format_bytes(r.file.total_bytes)} ({r.file.bits_per_parameter:.2f} bits/parameter)"


def _usable(rows: Sequence[Row], hw: str) -> list[Row]:
    usable = [r for r in rows if r.usable]
    if not usable:
        raise QuantlabError(f"none of the candidate schemes runs on {hardware.HARDWARE[hw]} for this layer")
    return usable


def most_accurate(rows: Sequence[Row], hw: str, metric: str) -> Recommendation:
    ranked = sorted(_usable(rows, hw), key=lambda r: -r.error_db)  # type: ignore[operator]
    best = ranked[0]
    runner = f"; next {ranked[1].label} at {ranked[1].error_db:.1f} dB" if len(ranked) > 1 else ""
    whole = f", whole-model cosine {best.cosine:.4f}" if best.cosine is not None else ""
    return Recommendation(best.slug, False, f"{best.label}: {best.error_db:.1f} dB {metric}{whole}, the highest of "
                                            f"the {len(ranked)} candidate(s) {hardware.HARDWARE[hw]} runs{runner}.")


def smallest(rows: Sequence[Row], hw: str, floor_db: float, metric: str) -> Recommendation:
    usable = _usable(rows, hw)
    passing = [r for r in usable if r.error_db >= floor_db]  # type: ignore[operator]
    if not passing:
        best = max(usable, key=lambda r: r.error_db)  # type: ignore[arg-type, return-value]
        return Recommendation(best.slug, False, f"No scheme reaches your {floor_db:.0f} dB floor here; {best.label} "
                                                f"comes closest at {best.error_db:.1f} dB {metric}.")
    pick = min(passing, key=lambda r: (r.file.total_bytes, -r.error_db))  # type: ignore[operator]
    return Recommendation(pick.slug, False, f"{pick.label}: the smallest file, {_size(pick)}, whose {metric} "
                                            f"({pick.error_db:.1f} dB) meets your {floor_db:.0f} dB floor.")


def _best_step(here: Row, options: Sequence[Row]) -> tuple[Row, float] | None:
    """The finer option that buys the most dB per extra stored bit per weight."""
    steps = [(r, (r.error_db - here.error_db) / (r.file.quantized_bits - here.file.quantized_bits))  # type: ignore[operator]
             for r in options if r.file.quantized_bits > here.file.quantized_bits and r.error_db > here.error_db]  # type: ignore[operator]
    return max(steps, key=lambda s: s[1]) if steps else None


def balanced(rows: Sequence[Row], hw: str, floor_db: float, metric: str) -> Recommendation:
    start = smallest(rows, hw, floor_db, metric)
    here = next(r for r in rows if r.slug == start.slug)
    same_width = [r for r in _usable(rows, hw) if r.num_bits == here.num_bits and r.error_db >= floor_db]  # type: ignore[operator]
    bought = None
    while (step := _best_step(here, same_width)) is not None and step[1] >= BIT_DB:
        bought, here = (here, step), step[0]
    nxt = _best_step(here, same_width)
    stop = (f"the next step, {nxt[0].label}, buys {nxt[1]:.1f} dB per bit, less than the {BIT_DB:.2f} dB a wider "
            "code buys" if nxt else "no finer option of this width gains more")
    if bought is None:
        return Recommendation(here.slug, False, f"{here.label}: the smallest file meeting your floor "
                                                f"({here.error_db:.1f} dB); {stop}.")
    prev, (_, rate) = bought
    extra = here.file.quantized_bits - prev.file.quantized_bits
    return Recommendation(here.slug, False, f"{here.label}: {here.error_db - prev.error_db:+.2f} dB over "
                                            f"{prev.label} for {extra:.3f} bits/weight ({rate:.1f} dB per bit); "
                                            f"{stop}.")


def long_context(rows: Sequence[Row], hw: str, floor_db: float, metric: str, mem: Memory) -> Recommendation:
    weights = balanced(rows, hw, floor_db, metric)
    row = next(r for r in rows if r.slug == weights.slug)
    kv = hardware.entry(hw, "fp8-kv")
    where = f"{mem.context:,} tokens × {mem.batch}"
    if kv.status == "none":
        return Recommendation(weights.slug, False, f"At {where} the 16-bit cache is "
                                                   f"{sizing.format_bytes(mem.kv16_bytes)} beside "
                                                   f"{sizing.format_bytes(row.file.total_bytes)} of {row.label} "
                                                   f"weights; {hardware.HARDWARE[hw]} has no FP8 cache ({kv.note}).")
    err = f" for {mem.fp8_kv_attention_db:.1f} dB attention-output SQNR on real K/V" \
        if mem.fp8_kv_attention_db is not None else ""
    return Recommendation(weights.slug, True, f"At {where} the 16-bit cache is {sizing.format_bytes(mem.kv16_bytes)} "
                                              f"beside {sizing.format_bytes(row.file.total_bytes)} of {row.label} "
                                              f"weights; FP8 halves it to {sizing.format_bytes(mem.kv8_bytes)}{err}.")


def fastest(rows: Sequence[Row], hw: str, floor_db: float, metric: str, batch: int, timed_batch: int,
            card: str) -> Recommendation:
    timed = [r for r in _usable(rows, hw) if r.speedup is not None and r.error_db >= floor_db]  # type: ignore[operator]
    if not timed:
        fallback = smallest(rows, hw, floor_db, metric)
        return replace(fallback, reason=f"No timing in this lab applies to {hardware.HARDWARE[hw]} at your floor; "
                                        f"the fewest bytes per token wins when decoding is memory-bound: "
                                        + fallback.reason)
    best = max(timed, key=lambda r: r.speedup)  # type: ignore[arg-type, return-value]
    others = ", ".join(f"{r.label} {r.speedup:.2f}×" for r in timed if r is not best)
    verdict = "" if best.speedup >= 1 else " Nothing beats bf16 here: quantize for memory, not speed."  # type: ignore[operator]
    untimed = [r.label for r in _usable(rows, hw) if r.speedup is None and r.status == "native"]
    note = f" Not timed here: {', '.join(untimed)}." if untimed else ""
    return Recommendation(best.slug, False, f"{best.label}: {best.speedup:.2f}× bf16 at batch {timed_batch} "
                                            f"(nearest measured to your {batch}) on the {card} run"
                                            + (f"; {others}" if others else "") + f".{verdict}{note}")


def recommend(rows: Sequence[Row], priority: str, hw: str, floor_db: float, metric: str, mem: Memory,
              batch: int, timed_batch: int, card: str) -> Recommendation:
    if priority == "accuracy":
        return most_accurate(rows, hw, metric)
    if priority == "compression":
        return smallest(rows, hw, floor_db, metric)
    if priority == "balance":
        return balanced(rows, hw, floor_db, metric)
    if priority == "long-context":
        return long_context(rows, hw, floor_db, metric, mem)
    if priority == "throughput":
        return fastest(rows, hw, floor_db, metric, batch, timed_batch, card)
    raise QuantlabError(f"unknown priority {priority!r}: use one of {', '.join(PRIORITIES)}")


# -- the syllabus' table, checked ---------------------------------------------------------------------

@dataclass(frozen=True)
class SyllabusRow:
    scenario: str
    syllabus: str
    verdict: str  # "holds", "partly", "wrong"
    evidence: str


def _row(rows: Sequence[Row], slug: str) -> Row:
    return next(r for r in rows if r.slug == slug)


def check_syllabus(rows: Sequence[Row], hw: str, floor_db: float, metric: str, mem: Memory) -> list[SyllabusRow]:
    acc = most_accurate(rows, hw, metric)
    w8, g128, g64, g32, chan = (_row(rows, s) for s in ("w8a16", "w4a16", "w4a16-g64", "w4a16-g32", "w4a16-channel"))
    holds = acc.slug.startswith("w8a16")
    w8_text = "" if holds or w8.error_db is None else f" W8A16: {w8.error_db:.1f} dB."
    out = [SyllabusRow("Maximum accuracy needed", "INT8 (W8A16)", "holds" if holds else "partly", acc.reason + w8_text)]
    bal = balanced(rows, hw, floor_db, metric)
    out.append(SyllabusRow("Balance accuracy/size", "INT4 with g128", "holds" if bal.slug == "w4a16" else "partly",
                           bal.reason))
    smallest_4bit = min((r for r in rows if r.num_bits == 4), key=lambda r: r.file.total_bytes)
    sizes = ", ".join(f"{r.label} {sizing.format_bytes(r.file.total_bytes)}" for r in (g32, g64, g128, chan))
    gain = (f"; g64 buys {g64.error_db - g128.error_db:+.2f} dB over g128 here"
            if g64.error_db is not None and g128.error_db is not None else "")
    out.append(SyllabusRow("Maximum compression", "INT4 with g64 or smaller",
                           "wrong" if g64.file.total_bytes > g128.file.total_bytes else "holds",
                           f"Smaller groups store more scales, so files grow: {sizes}{gain}. The smallest INT4 file is "
                           f"{smallest_4bit.label}."))
    saving = mem.kv16_bytes - mem.kv8_bytes
    total = mem.weights_bytes + mem.kv16_bytes
    out.append(SyllabusRow("Long context workloads", "Add KV cache quantization",
                           "holds" if mem.kv16_bytes >= g128.file.total_bytes else "partly",
                           f"{mem.arch} at {mem.context:,} tokens × {mem.batch}: 16-bit KV "
                           f"{sizing.format_bytes(mem.kv16_bytes)} against "
                           f"{sizing.format_bytes(g128.file.total_bytes)} of W4A16 weights; "
                           f"FP8 KV saves {sizing.format_bytes(saving)} "
                           f"({saving / total:.0%} of bf16 weights + cache)."))
    return out


# -- misconceptions, answered by measurement -------------------------------------------------------------

@dataclass(frozen=True)
class Int4Speed:
    torch_int4_crossover: float | None  # batch where torch's int4 kernel falls below bf16
    w4a16_crossover: float | None
    at_batch: float | None  # quantlab W4A16 at the nearest measured batch
    timed_batch: int


def int4_speed(res: speed.Results, m: int) -> Int4Speed:
    ms = res.batch_sizes
    cross = {method: speed.crossover(ms, [res.geomean_speedup(b, method) for b in ms])
             for method in ("torch_int4", "w4a16")}
    b = nearest_batch(res, m)
    return Int4Speed(cross["torch_int4"], cross["w4a16"], res.geomean_speedup(b, "w4a16"), b)


@dataclass(frozen=True)
class FourBitFile:
    arch: str
    parameters: int
    naive_bytes: float  # parameters × 0.5 bytes
    total_bytes: int
    by_kind: dict[str, int]


def four_bit_file(arch: str = "llama-3.1-8b") -> FourBitFile:
    r = sizing.model_size(arch, scheme_spec("w4a16"))
    return FourBitFile(arch, r.num_params, r.num_params * INT4_NAIVE_BYTES_PER_WEIGHT, r.total_bytes, r.by_kind())


@dataclass(frozen=True)
class AsymCost:
    sym_db: float
    asym_db: float
    extra_bytes: int  # on the deployment architecture
    runtimes: str


def asym_cost(rows: Sequence[Row]) -> AsymCost:
    sym, asym = _row(rows, "w4a16"), _row(rows, "w4a16-asym")
    return AsymCost(sym.error_db or math.nan, asym.error_db or math.nan,
                    asym.file.total_bytes - sym.file.total_bytes, export.runtimes(scheme_spec(asym.slug)))


@dataclass(frozen=True)
class CalibrationSize:
    sentences: tuple[int, ...]
    static_db: tuple[float, ...]  # static INT8 per-tensor scale from that many sentences, on other text
    dynamic_db: float  # per-token scales measured at run time
    calibration: str
    evaluation: str


@torch.no_grad()
def calibration_size(layer: str, sentences: tuple[int, ...] = (1, 4, 16, 40), calibration: str = "general",
                     evaluation: str = "code", source: captures.Source = None) -> CalibrationSize:
    """INT8 static scales calibrated with min-max on more and more sentences of one text, applied to
    another: min-max only ever widens with more data, so more sentences cannot shrink the grid."""
    spec = QuantSpec(num_bits=8)
    x = captures.activation(source, layer, evaluation)
    scores = []
    for n in sentences:
        scale, zp = calibrate(clipping.calibration_set(calibration, layer, n, source), spec)
        scores.append(metrics.sqnr_db(x, quantize_static(x, scale, zp, spec).dequantize()))
    dyn = quantize(x, spec.with_(strategy="token", dynamic=True)).dequantize()
    return CalibrationSize(sentences, tuple(scores), metrics.sqnr_db(x, dyn), calibration, evaluation)


# -- data out ---------------------------------------------------------------------------------------------

def table(rows: Sequence[Row], metric: str, hw: str) -> list[dict[str, object]]:
    """The evidence table as plain records (the page shows it and offers it as CSV)."""
    return [{"scheme": r.label, "slug": r.slug, f"{metric} (dB)": r.error_db,
             "bits/weight (this layer)": r.layer_bits, "file bytes": r.file.total_bytes,
             "file bits/parameter": r.file.bits_per_parameter,
             # NaN, not None: numeric columns stay numeric, and a table shows a missing number as a dash.
             "speedup vs bf16": math.nan if r.speedup is None else r.speedup,
             "whole-model cosine": math.nan if r.cosine is None else r.cosine, f"on {hardware.HARDWARE[hw]}": r.status,
             "note": r.skipped or hardware.entry(hw, capability(r.slug)).note} for r in rows]
