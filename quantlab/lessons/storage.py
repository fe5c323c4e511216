"""The Storage lesson's numbers: the file size against group size, and the syllabus' size claims
measured on a real architecture."""
from __future__ import annotations

from dataclasses import dataclass

from quantlab.core.errors import QuantlabError
from quantlab.core.spec import QuantSpec
from quantlab.io.models import DTYPE_BYTES
from quantlab.io.sizing import SizeReport, Source, format_bytes, load_checkpoint, model_size, plan, size_checkpoint

GROUPS = (32, 64, 128, 256)


@dataclass(frozen=True)
class Rung:
    """One granularity of the group-size ladder, sized on the whole checkpoint."""

    label: str
    spec: QuantSpec
    report: SizeReport
    unquantized: int  # Linear layers this group size cannot split: written in full precision

    @property
    def linear_layers(self) -> int:
        return self.report.quantized_layers + self.unquantized

    @property
    def note(self) -> str | None:
        if not self.unquantized:
            return None
        return f"{self.unquantized} of {self.linear_layers} layers stay unquantized"


@dataclass(frozen=True)
class Ladder:
    rungs: tuple[Rung, ...]
    left_out: tuple[str, ...]  # group sizes that divide no layer at all: no file to size


def group_ladder(source: Source, spec: QuantSpec, groups: tuple[int, ...] = GROUPS) -> Ladder:
    """Per-channel and every group size, same bits and symmetry as `spec` (INT4 for FP8 schemes,
    which have no groups). A group size that does not divide a layer's input leaves that layer in
    full precision, as llm-compressor does; each rung says how many, since those layers make the
    file *larger*, not smaller."""
    base = QuantSpec(num_bits=spec.num_bits if spec.type == "int" else 4, strategy="channel",
                     symmetric=spec.symmetric)
    checkpoint = load_checkpoint(source)
    rungs, left_out = [], []
    for label, step in [("channel", base), *((f"g{g}", base.with_(strategy="group", group_size=g))
                                             for g in sorted(groups, reverse=True))]:
        try:
            rungs.append(Rung(label, step, size_checkpoint(checkpoint, step), len(plan(checkpoint, step).skipped)))
        except QuantlabError:
            left_out.append(label)
    return Ladder(tuple(rungs), tuple(left_out))


@dataclass(frozen=True)
class Claim:
    claim: str
    stated_bytes: float
    measured_bytes: int
    detail: str

    @property
    def holds(self) -> bool:
        """Within 10%: the syllabus rounds, and so may we."""
        return abs(self.measured_bytes - self.stated_bytes) <= 0.1 * self.stated_bytes


def syllabus_claims(source: Source) -> list[Claim]:
    """The syllabus' size figures for a 7B model, measured on a real architecture."""
    w4 = QuantSpec(num_bits=4, strategy="group", group_size=128)
    g128 = model_size(source, w4)
    g64 = model_size(source, w4.with_(group_size=64))
    parts, parts64 = g128.by_kind(), g64.by_kind()
    kept16 = parts.get("embeddings", 0) + parts.get("lm_head", 0)
    billions = g128.num_params / 1e9
    scale_bits = 8 * DTYPE_BYTES[next(t.dtype for t in g128.tensors if t.kind == "scales")]
    return [
        Claim("a 7B model in FP16 needs ~14 GB", 14e9, g128.original_bytes,
              f"{billions:.2f} B parameters × 2 bytes"),
        Claim("with INT4 it needs ~3.5 GB", 3.5e9, g128.total_bytes,
              f"packed 4-bit weights are {format_bytes(parts['packed weights'])}, but embeddings and lm_head stay "
              f"16-bit ({format_bytes(kept16)}) and every group has a scale"),
        Claim("INT4 g128 scales cost ~50 MB", 50e6, parts["scales"],
              f"one {scale_bits}-bit scale per 128 weights = {scale_bits / 128:.3f} extra bits per weight on "
              f"{parts['packed weights'] * 2 / 1e9:.2f} B quantized weights"),
        Claim("g64 is only slightly larger than g128", 0.0 + g128.total_bytes, g64.total_bytes,
              f"+{format_bytes(parts64['scales'] - parts['scales'])} of scales "
              f"(+{(g64.total_bytes / g128.total_bytes - 1):.1%})"),
    ]


def groups_numbers(ladder: Ladder) -> dict[str, str]:
    """The figures the lesson's group-size paragraph quotes, from this ladder."""
    by_label = {r.label: r for r in ladder.rungs}
    scales = next((t for r in ladder.rungs for t in r.report.tensors if t.kind == "scales"), None)
    scale_bits = 8 * DTYPE_BYTES[scales.dtype] if scales is not None else 16
    g64, g128 = by_label.get("g64"), by_label.get("g128")
    growth = (f"{g64.report.total_bytes / g128.report.total_bytes - 1:+.1%}"
              if g64 is not None and g128 is not None and not (g64.unquantized or g128.unquantized) else "—")
    partial = [r for r in ladder.rungs if r.unquantized]
    warning = " ".join(f"Here at {r.label}, {r.note} (marked ⚠): their full-precision bytes make that bar "
                       "taller, not shorter." for r in partial)
    return {"scale_bits": str(scale_bits), "g64_extra": f"{scale_bits / 128:.3g}", "g64_growth": growth,
            "partial": warning}
