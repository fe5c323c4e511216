"""Exact size of a compressed-tensors checkpoint, from tensor shapes alone.

The input is a table of the original checkpoint's tensors (name, shape, dtype). It comes from the
safetensors headers of a file or folder (no tensor is read), or from a `config.json` instantiated
by transformers on the meta device (no memory is allocated). The output lists every tensor that
compressed-tensors 0.20 would write for a given `QuantSpec`, with its dtype and byte count, plus the
safetensors header, so the total is the size of the `model.safetensors` file byte for byte.

Scope is llm-compressor's usual recipe (`targets="Linear"`, `ignore=["lm_head"]`): the Linear layers
inside the numbered transformer blocks are quantized; embeddings, lm_head, norms, biases and any
other tensor stay as they are.

NF4 is bitsandbytes' format, not compressed-tensors': its layers are sized as the tensors of
bitsandbytes' quantization state that transformers saves for a Linear4bit (packed codes, absmax,
code books), every one exact; only the small JSON blob beside them is left out, and the report
says so.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Union

import torch

from quantlab import data
from quantlab.core import blocks, nf4, packing
from quantlab.core.errors import QuantlabError
from quantlab.core.spec import GROUPED, QuantSpec
from quantlab.io import models

# safetensors writes tensors sorted by dtype (this enum order, descending) then by name; the order
# only changes the digits of the offsets in the header, but the header is part of the file size.
_DTYPE_ORDER = ("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16",
                "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64")
DTYPE_BYTES = models.DTYPE_BYTES
_TORCH_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                 torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                 torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
                 torch.float8_e5m2: "F8_E5M2"}
_SCALE_DTYPES = ("F16", "BF16", "F32", "F64")
_BLOCK = re.compile(r"\.\d+\.")

# Kinds of stored tensors, in the order breakdowns are shown.
KINDS = ("packed weights", "quantized weights", "scales", "zero points", "shapes", "global scales",
         "code books", "activation scales", "linear kept", "embeddings", "lm_head", "norms", "biases", "other")
QUANTIZED_KINDS = KINDS[:KINDS.index("linear kept")]
# What grows with the number of weights. A layer's `weight_shape` (16 bytes), NVFP4's FP32
# `weight_global_scale`, NF4's code books and calibrated `input_scale` / `input_global_scale` are
# one per layer, so they count in file totals but not in "bits per weight" (NVFP4's global scale
# adds 32 bits per layer: 0.0002 bits per weight on MiniLM's 384x384 layers, below the third
# decimal shown).
PER_WEIGHT_KINDS = KINDS[:4]
NF4_FORMAT = "bitsandbytes-nf4"
NF4_NOTE = ("NF4 is bitsandbytes' format, not compressed-tensors': sized as the tensors transformers saves for "
            "each Linear4bit, without the JSON quant-state blob (a few hundred bytes) saved beside them")
# How compressed-tensors 0.20 stores microscaled values: two E2M1 codes per byte with NVFP4's E4M3
# scale per 16 or MXFP4's E8M0 exponent byte per 32; MXFP8 one E4M3 byte per weight.
_MICROSCALING_FORMATS = {(4, "e4m3"): "nvfp4-pack-quantized", (4, "e8m0"): "mxfp4-pack-quantized",
                         (8, "e8m0"): "mxfp8-quantized"}
_MICROSCALING_GROUPS = {"e4m3": 16, "e8m0": 32}
_MICROSCALE_CODES = {"e4m3": "F8_E4M3", "e8m0": "U8"}

Source = Union[models.ModelSource, str, "os.PathLike[str]"]


def torch_dtype_code(dtype: torch.dtype) -> str:
    return _TORCH_DTYPES[dtype]


# -- what a checkpoint holds ---------------------------------------------------------------------

@dataclass(frozen=True)
class SourceTensor(models.TensorMeta):
    """One tensor of the original checkpoint. `linear` is known from module types for configs and
    inferred from the name and shape for safetensors files (which carry no module types)."""

    linear: bool

    @property
    def layer(self) -> str:
        return self.name.removesuffix(".weight")


@dataclass(frozen=True)
class Checkpoint:
    label: str
    tensors: tuple[SourceTensor, ...]
    config: dict[str, object] | None  # config.json contents when there is one
    has_weights: bool  # False for a config-only architecture


def shipped_configs() -> dict[str, Path]:
    """The architectures shipped in quantlab/data/configs, by short name (e.g. 'llama-3.1-8b')."""
    return {name: Path(str(entry)) for name, entry in data.listing("configs", ".json").items()}


def _looks_linear(name: str, shape: tuple[int, ...], dtype: str) -> bool:
    lowered = name.lower()
    return (name.endswith(".weight") and len(shape) == 2 and dtype in _SCALE_DTYPES
            and "embed" not in lowered and "norm" not in lowered
            and not re.search(r"(^|\.)w[tp]e\.", lowered))  # GPT-2's token and position embeddings


def _from_safetensors(source: models.ModelSource) -> Checkpoint:
    infos = models.list_tensors(source)
    # GPT-2's Conv1D is not nn.Linear: llm-compressor's targets=["Linear"] leave it unquantized.
    tensors = tuple(SourceTensor(t.name, t.shape, t.dtype, _looks_linear(t.name, t.shape, t.dtype)
                                 and not models.stored_transposed(source, t.name))
                    for t in infos.values())
    config_file = Path(source.path) / "config.json"
    config = read_json(config_file) if config_file.is_file() else None
    return Checkpoint(source.label, tensors, config, has_weights=True)


def read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise QuantlabError(f"{path.name} is not readable JSON ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise QuantlabError(f"{path.name} is not a config (expected a JSON object)")
    return data


def _from_config(path: Path) -> Checkpoint:
    """Build the model on the meta device: exact names, shapes and dtypes, no memory."""
    with models.exclusive_transformers():  # transformers' lazy class lookups are not thread-safe
        return _build_from_config(path)


@lru_cache(maxsize=16)
def _build_from_config(path: Path) -> Checkpoint:
    import transformers

    raw = read_json(path)
    if "model_type" not in raw:
        raise QuantlabError(f"{path.name} has no model_type: it is not a transformers config.json")
    fields = dict(raw)
    if "torch_dtype" in fields:  # published configs predate the rename; avoid a deprecation warning
        fields.setdefault("dtype", fields.pop("torch_dtype"))
    try:
        config = transformers.AutoConfig.for_model(**fields)
    except (ValueError, KeyError):
        raise QuantlabError(
            f"{path.name}: model_type {raw['model_type']!r} is not an architecture transformers "
            f"{transformers.__version__} knows"
        ) from None
    archs = raw.get("architectures") or []
    cls = getattr(transformers, str(archs[0]), None) if archs else None
    dtype = getattr(config, "dtype", None) or torch.float32
    try:
        with torch.device("meta"):
            # The class named in `architectures` decides the head (lm_head or none), as on load.
            model = (cls._from_config(config, dtype=dtype) if cls is not None
                     else transformers.AutoModelForCausalLM.from_config(config, dtype=dtype))
    except (ValueError, TypeError, AttributeError) as err:
        raise QuantlabError(f"{path.name}: transformers could not build this architecture ({err})") from None
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    rows: list[SourceTensor] = []
    # named_parameters drops tied duplicates (e.g. a tied lm_head), as save_pretrained does.
    for name, p in model.named_parameters():
        rows.append(SourceTensor(name, tuple(p.shape), torch_dtype_code(p.dtype), name in linear))
    for mod_name, module in model.named_modules():
        for buf_name, buf in module._buffers.items():
            if buf is not None and buf_name not in module._non_persistent_buffers_set:
                name = f"{mod_name}.{buf_name}" if mod_name else buf_name
                rows.append(SourceTensor(name, tuple(buf.shape), torch_dtype_code(buf.dtype), False))
    label = str(raw.get("_name_or_path") or path.stem)
    return Checkpoint(label, tuple(rows), raw, has_weights=False)


def load_checkpoint(source: Source) -> Checkpoint:
    """A shipped config name, a config.json, a safetensors file, an HF folder or a ModelSource."""
    if isinstance(source, models.ModelSource):
        return _from_safetensors(source)
    text = str(source)
    shipped = shipped_configs()
    if text in shipped:
        return _from_config(shipped[text])
    path = Path(text).expanduser()
    if path.suffix == ".json" and path.is_file():
        return _from_config(path.resolve())
    if path.is_dir() and not models.safetensors_files(path) and (path / "config.json").exists():
        return _from_config((path / "config.json").resolve())
    if not path.exists():
        names = ", ".join(shipped)
        raise QuantlabError(f"{text} is neither a file, a folder nor a shipped config ({names})")
    return _from_safetensors(models.ModelSource.local(path))


# -- what gets quantized ------------------------------------------------------------------------

def _matches(layer: str, pattern: str) -> bool:
    """compressed-tensors' rule: 're:<regex>' matches from the start, anything else exactly."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], layer) is not None
    return layer == pattern


@dataclass(frozen=True)
class Plan:
    """Which Linear layers get quantized, which are kept and why."""

    quantized: tuple[SourceTensor, ...]
    ignore: tuple[str, ...]  # every Linear left in full precision, as written in quantization_config
    skipped: tuple[str, ...]  # layers the spec cannot quantize (group size), kept and ignored

    @property
    def notes(self) -> list[str]:
        if not self.skipped:
            return []
        head = ", ".join(self.skipped[:3]) + (f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else "")
        return [f"group size does not divide the input dimension of {len(self.skipped)} layer(s) ({head}): "
                "they were kept unquantized and added to the ignore list"]


DEFAULT_IGNORE = ("lm_head",)


def in_scope(layer: str, ignore: Sequence[str] = DEFAULT_IGNORE, blocked: bool = True) -> bool:
    """Whether llm-compressor's usual recipe quantizes this Linear: inside a numbered transformer
    block (when the checkpoint has blocks) and not ignored."""
    return (not blocked or bool(_BLOCK.search(f"{layer}."))) and not any(_matches(layer, p) for p in ignore)


def plan(checkpoint: Checkpoint, spec: QuantSpec, ignore: Sequence[str] | None = None) -> Plan:
    patterns = tuple(ignore) if ignore is not None else DEFAULT_IGNORE
    # A file without numbered blocks (one matrix, one layer saved on its own) quantizes what it holds.
    blocked = any(t.linear and _BLOCK.search(t.name) for t in checkpoint.tensors)
    quantized, kept, skipped = [], [], []
    for t in checkpoint.tensors:
        if not t.linear:
            continue
        if not in_scope(t.layer, patterns, blocked):
            kept.append(t.layer)
        elif spec.strategy in GROUPED and t.shape[-1] % (spec.group_size or 1):
            kept.append(t.layer)
            skipped.append(f"{t.layer} ({t.shape[-1]} columns)")
        else:
            quantized.append(t)
    if not quantized:
        raise QuantlabError(_nothing_to_quantize(checkpoint, spec, skipped))
    return Plan(tuple(quantized), tuple(kept), tuple(skipped))


def _nothing_to_quantize(checkpoint: Checkpoint, spec: QuantSpec, skipped: list[str]) -> str:
    if skipped:
        return (f"group size {spec.group_size} divides none of the Linear layers of {checkpoint.label} "
                f"(e.g. {skipped[0]}): pick a smaller group or strategy 'channel'")
    conv1d = any(t.name.endswith(models.CONV1D_WEIGHTS) for t in checkpoint.tensors)
    return (f"{checkpoint.label} has no Linear layer inside numbered transformer blocks to quantize"
            + (" (GPT-2's Conv1D layers are not nn.Linear: llm-compressor's targets=['Linear'] skip them)"
               if conv1d else ""))


# -- what compressed-tensors writes --------------------------------------------------------------

def storage_format(spec: QuantSpec) -> str:
    """The compressed-tensors format a spec is saved in (its `infer_module_format` rule, whose
    microscaling compressors come first: MXFP4 is FP4 in groups of 32, NVFP4 FP4 in groups of 16,
    MXFP8 FP8 in groups of 32 with E8M0 scales); NF4 is bitsandbytes' own."""
    if spec.type == "nf4":
        return NF4_FORMAT
    if spec.scale_dtype is not None:
        if spec.group_size != _MICROSCALING_GROUPS[spec.scale_dtype]:
            # compressed-tensors picks the FP4 compressor by group size alone: any other size would
            # be written with the other format's scale encoding.
            raise QuantlabError(f"compressed-tensors 0.20 stores {spec.label} in groups of "
                                f"{_MICROSCALING_GROUPS[spec.scale_dtype]} only, not {spec.group_size}")
        return _MICROSCALING_FORMATS[(spec.num_bits, spec.scale_dtype)]
    acts = spec.activations
    if spec.type == "int" and acts is not None:
        return "int-quantized"
    if spec.type == "int":
        return "pack-quantized"
    if acts is not None and acts.type == "float":
        return "float-quantized"
    return "naive-quantized"


@dataclass(frozen=True)
class OutTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    weights: int = 0  # original weights this tensor stands for (for bits per weight)
    # The quantized Linear a tensor belongs to (None for tensors kept as they were): not always the
    # name minus its last part, since bitsandbytes names NF4's state `<layer>.weight.absmax`.
    layer: str | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def scale_dtype(weight_dtype: str) -> str:
    """compressed-tensors keeps scales in the weight's float dtype (float16 for anything else)."""
    return weight_dtype if weight_dtype in _SCALE_DTYPES else "F16"


def _nf4_layout(t: SourceTensor, spec: QuantSpec) -> list[OutTensor]:
    """The tensors of bitsandbytes' QuantState for one Linear4bit: two codes per byte, an absmax
    per block (fp32, or one byte with double quantization plus an fp32 per 256 of them) and the
    code books (NF4's 16 levels; the 256-entry dynamic map of the nested absmax)."""
    weight = f"{t.layer}.weight"
    n_blocks = blocks.num_scales(spec, t.shape)
    out = [OutTensor(weight, (math.ceil(t.numel / 2), 1), "U8", "packed weights", t.numel)]
    if spec.scale_dtype == "dq8":
        out += [OutTensor(f"{weight}.absmax", (n_blocks,), "U8", "scales"),
                OutTensor(f"{weight}.nested_absmax", (math.ceil(n_blocks / nf4.NESTED_BLOCK),), "F32", "scales"),
                OutTensor(f"{weight}.nested_quant_map", (nf4.DYNAMIC_MAP.numel(),), "F32", "code books")]
    else:
        out.append(OutTensor(f"{weight}.absmax", (n_blocks,), "F32", "scales"))
    out.append(OutTensor(f"{weight}.quant_map", (nf4.NF4_LEVELS.numel(),), "F32", "code books"))
    return out


def layer_layout(t: SourceTensor, spec: QuantSpec) -> list[OutTensor]:
    """The tensors compressed-tensors writes for one quantized Linear weight (bitsandbytes' for NF4)."""
    out = _nf4_layout(t, spec) if spec.type == "nf4" else _ct_layout(t, spec)
    return [replace(o, layer=t.layer) for o in out]


def _ct_layout(t: SourceTensor, spec: QuantSpec) -> list[OutTensor]:
    fmt, layer, rows = storage_format(spec), t.layer, t.shape[0]
    sshape, sdtype = blocks.scale_shape(spec, t.shape), scale_dtype(t.dtype)
    out: list[OutTensor] = []
    if fmt.endswith("fp4-pack-quantized"):
        out.append(OutTensor(f"{layer}.weight_packed", (rows, t.shape[1] // 2), "U8", "packed weights", t.numel))
    elif fmt == "pack-quantized":
        out.append(OutTensor(f"{layer}.weight_packed", (rows, packing.packed_width(t.shape[1], spec.num_bits)),
                             "I32", "packed weights", t.numel))
        out.append(OutTensor(f"{layer}.weight_shape", (2,), "I64", "shapes"))
    else:
        code = "F8_E4M3" if spec.type == "float" else "I8"
        out.append(OutTensor(f"{layer}.weight", t.shape, code, "quantized weights", t.numel))
    out.append(OutTensor(f"{layer}.weight_scale", sshape,
                         _MICROSCALE_CODES[spec.scale_dtype] if spec.scale_dtype else sdtype, "scales"))
    if spec.strategy == "tensor_group":
        out.append(OutTensor(f"{layer}.weight_global_scale", (1,), "F32", "global scales"))
    if not spec.symmetric:
        if fmt == "pack-quantized" and spec.strategy in ("group", "channel"):
            zshape = (packing.packed_width(rows, spec.num_bits), sshape[1])
            out.append(OutTensor(f"{layer}.weight_zero_point", zshape, "I32", "zero points"))
        else:
            out.append(OutTensor(f"{layer}.weight_zero_point", sshape, "I8", "zero points"))
    acts = spec.activations
    if acts is not None and acts.dynamic == "local":
        # NVFP4 activations: group scales are observed at run time, their global scale is calibrated.
        out.append(OutTensor(f"{layer}.input_global_scale", (1,), "F32", "activation scales"))
    elif acts is not None and not acts.dynamic:
        if acts.strategy != "tensor":
            raise QuantlabError(f"static activation quantization needs strategy 'tensor', not {acts.strategy!r}")
        out.append(OutTensor(f"{layer}.input_scale", (1,), sdtype, "activation scales"))
        if not acts.symmetric:
            out.append(OutTensor(f"{layer}.input_zero_point", (1,), "I8", "activation scales"))
    return out


def stored_bits_per_weight(shape: tuple[int, ...], dtype: str, spec: QuantSpec) -> float:
    """Bits compressed-tensors stores per weight of one Linear layer: codes (packed into int32 words
    where it packs, two FP4 codes per byte), scales (in the weight's own dtype, or the E4M3 / E8M0
    bytes of the microscaling formats) and zero points, from the real layout.

    The one place the lab decides this number: fp32 MiniLM at W4A16 g128 stores 4 + 32/128 = 4.25,
    a bf16 LLM 4 + 16/128 = 4.125; NVFP4 4 + 8/16 = 4.5, MXFP4 4 + 8/32 = 4.25 and MXFP8 8.25 in
    any dtype; W4AFP8 8 + 16/128 in bf16, its 4-bit codes being stored one per int8; FP8_BLOCK
    8 + 16/128² in bf16 (one scale per tile, edge tiles included); NF4 4 + 32/64 = 4.5 with fp32
    absmax, 4 + 8/64 + 32/(64·256) with double quantization, in any dtype.
    """
    t = SourceTensor("layer.weight", tuple(shape), dtype, True)
    if spec.strategy in GROUPED and t.shape[-1] % (spec.group_size or 1):
        raise QuantlabError(f"group size {spec.group_size} does not divide the {t.shape[-1]} input columns: "
                            "this layer would stay unquantized")
    stored = sum(o.nbytes for o in layer_layout(t, spec) if o.kind in PER_WEIGHT_KINDS)
    return 8 * stored / t.numel


def kept_kind(t: SourceTensor) -> str:
    lowered = t.name.lower()
    if "norm" in lowered or re.search(r"(^|\.)ln_?\w*\.", lowered):
        return "norms"
    if t.name.endswith(".bias"):
        return "biases"
    if lowered.startswith("lm_head"):
        return "lm_head"
    if "embed" in lowered or re.search(r"(^|\.)w[tp]e\.", lowered):
        return "embeddings"
    return "linear kept" if t.linear else "other"


def header_bytes(tensors: Iterable[tuple[str, tuple[int, ...], str]], metadata: dict[str, str] | None = None) -> int:
    """Length of the safetensors header as written: 8-byte length, compact JSON, space padding to 8."""
    rank = {d: i for i, d in enumerate(_DTYPE_ORDER)}
    ordered = sorted(tensors, key=lambda t: (-rank[t[2]], t[0]))
    entries = []
    offset = 0
    for name, shape, dtype in ordered:
        end = offset + math.prod(shape) * DTYPE_BYTES[dtype]
        entries.append(json.dumps(name) + ":" + json.dumps(
            {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}, separators=(",", ":")))
        offset = end
    meta = json.dumps({"__metadata__": metadata or {"format": "pt"}}, separators=(",", ":"))[1:-1]
    text = "{" + ",".join([meta, *entries]) + "}"
    n = len(text.encode())
    return 8 + n + (-n) % 8


# -- the report ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SizeReport:
    label: str
    spec: QuantSpec
    format: str
    tensors: tuple[OutTensor, ...]
    ignore: tuple[str, ...]
    notes: tuple[str, ...]
    original_bytes: int  # the unquantized checkpoint's tensor bytes
    header_bytes: int
    num_params: int
    has_weights: bool
    quantized_layers: int = field(default=0)

    @property
    def total_bytes(self) -> int:
        """The model.safetensors file: header plus every tensor."""
        return self.header_bytes + sum(t.nbytes for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Bits of the whole file per parameter of the original model."""
        return 8 * self.total_bytes / self.num_params

    @property
    def compression(self) -> float:
        return self.original_bytes / self.total_bytes

    def by_kind(self) -> dict[str, int]:
        sums = {k: 0 for k in KINDS}
        for t in self.tensors:
            sums[t.kind] += t.nbytes
        return {k: v for k, v in sums.items() if v}

    def quantized_bits_per_weight(self) -> float:
        """Bits per weight of the quantized Linear layers only, counted as `stored_bits_per_weight`
        counts one layer: codes + scales (+ zero points)."""
        weights = sum(t.weights for t in self.tensors if t.kind in PER_WEIGHT_KINDS)
        stored = sum(t.nbytes for t in self.tensors if t.kind in PER_WEIGHT_KINDS)
        return 8 * stored / weights

    def rows(self) -> list[dict[str, object]]:
        return [{"tensor": t.name, "kind": t.kind, "dtype": t.dtype, "shape": "×".join(map(str, t.shape)),
                 "bytes": t.nbytes} for t in self.tensors]


def size_checkpoint(checkpoint: Checkpoint, spec: QuantSpec, ignore: Sequence[str] | None = None) -> SizeReport:
    p = plan(checkpoint, spec, ignore)
    chosen = {t.name for t in p.quantized}
    out: list[OutTensor] = []
    for t in checkpoint.tensors:
        if t.name in chosen:
            out.extend(layer_layout(t, spec))
        else:
            out.append(OutTensor(t.name, t.shape, t.dtype, kept_kind(t), t.numel))
    return SizeReport(
        label=checkpoint.label, spec=spec, format=storage_format(spec), tensors=tuple(out), ignore=p.ignore,
        notes=tuple(p.notes) + ((NF4_NOTE,) if spec.type == "nf4" else ()),
        original_bytes=sum(t.nbytes for t in checkpoint.tensors),
        header_bytes=header_bytes((t.name, t.shape, t.dtype) for t in out),
        num_params=sum(t.numel for t in checkpoint.tensors if t.dtype in _SCALE_DTYPES),
        has_weights=checkpoint.has_weights, quantized_layers=len(p.quantized),
    )


def model_size(source: Source, spec: QuantSpec, ignore: Sequence[str] | None = None) -> SizeReport:
    """Size of the compressed-tensors checkpoint `spec` would give `source`, from shapes only.

    `ignore` lists Linear layers to keep (names, or 're:' regexes as in llm-compressor); the
    default keeps lm_head, which lies outside the blocks anyway.
    """
    return size_checkpoint(load_checkpoint(source), spec, ignore)


def format_bytes(n: float) -> str:
    """Decimal units (GB = 10^9 bytes), as model cards and the syllabus quote sizes."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:,.2f} {unit}"
    return f"{n:,.0f} B"




