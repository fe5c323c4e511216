"""The Storage lesson's numbers: the syllabus' size claims measured on a real architecture."""
from __future__ import annotations

from dataclasses import dataclass

from quantlab.core.spec import QuantSpec
from quantlab.io.models import DTYPE_BYTES
from quantlab.io.sizing import Source, format_bytes, model_size


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
