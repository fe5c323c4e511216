"""Write a real compressed-tensors checkpoint: what llm-compressor would save for the same spec.

The folder holds `model.safetensors` (quantized Linear layers in compressed-tensors 0.20's layout,
every other tensor copied unchanged), `config.json` with the `quantization_config` block exactly as
`ModelCompressor.update_config` writes it, and the source's tokenizer and other small files.

Writing is atomic: everything goes to a hidden temporary folder next to the target, which is
renamed into place only when complete, so an error or a full disk never leaves half a checkpoint.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quantlab.core import packing
from quantlab.core.errors import QuantlabError
from quantlab.core.observers import calibrate
from quantlab.core.qparams import FP8_DTYPE, global_scale
from quantlab.core.quantize import quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import models, sizing

# The compressed-tensors release whose on-disk format this module writes (and tests against).
COMPRESSED_TENSORS_VERSION = "0.20.0"
# Files that hold weights: never copied next to the quantized ones (and .bin is never read).
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf"}
_SKIP_FILES = {"model.safetensors.index.json", "config.json"}

# Which runtimes load each format (pack-quantized asymmetric: transformers 5.24 + compressed-tensors
# 0.20 expects unpacked zero points and refuses it; vLLM's compressed-tensors loader reads it).
RUNTIMES = {
    ("pack-quantized", True): "transformers (with compressed-tensors installed) and vLLM",
    ("pack-quantized", False): "vLLM; transformers 5.24 with compressed-tensors 0.20 refuses packed "
                               "asymmetric zero points",
    ("int-quantized", True): "transformers (with compressed-tensors installed) and vLLM",
    ("float-quantized", True): "transformers (with compressed-tensors installed) and vLLM",
    # transformers decompresses FP4/MX weights to bf16 whatever the model's dtype: an fp32 model
    # (MiniLM) loaded in fp32 fails with a dtype mismatch in its first matmul.
    ("nvfp4-pack-quantized", True): "vLLM, and transformers (with compressed-tensors installed) loading it "
                                    "with dtype=torch.bfloat16, the dtype it decompresses to",
    ("mxfp4-pack-quantized", True): "transformers (with compressed-tensors installed) loading it with "
                                    "dtype=torch.bfloat16, the dtype it decompresses to; vLLM depending on its version",
    ("mxfp8-quantized", True): "transformers (with compressed-tensors installed) loading it with "
                               "dtype=torch.bfloat16, the dtype it decompresses to; vLLM depending on its version",
}


def runtimes(spec: QuantSpec) -> str:
    return RUNTIMES.get((sizing.storage_format(spec), spec.symmetric), "compressed-tensors")


# -- quantization_config ----------------------------------------------------------------------

def quantization_config(spec: QuantSpec, ignore: Sequence[str]) -> dict[str, object]:
    """The `quantization_config` block of config.json, as compressed-tensors 0.20 writes it."""
    fmt = sizing.storage_format(spec)
    scheme = {"format": fmt, **spec.to_ct_scheme(), "targets": ["Linear"]}
    return {
        "config_groups": {"group_0": scheme},
        "format": fmt,
        "global_compression_ratio": None,
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "moe_sparsity_config": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": COMPRESSED_TENSORS_VERSION,
    }


# -- tensors ----------------------------------------------------------------------------------

@torch.no_grad()
def compress_weight(weight: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
    """One Linear weight -> its stored tensors, by local name (weight_packed, weight_scale, ...)."""
    qt = quantize(weight, spec)
    fmt = sizing.storage_format(spec)
    out: dict[str, torch.Tensor] = {}
    if fmt.endswith("fp4-pack-quantized"):
        out["weight_packed"] = packing.pack_fp4(qt.q)
    elif fmt == "pack-quantized":
        out["weight_packed"] = packing.pack(qt.q, spec.num_bits)
        out["weight_shape"] = torch.tensor(weight.shape)
        if qt.zero_point is not None and spec.strategy in ("group", "channel"):
            # Zero points pack along the output dimension: [ceil(rows·b/32), groups].
            out["weight_zero_point"] = packing.pack(qt.zero_point, spec.num_bits, dim=-2)
    else:
        out["weight"] = qt.q
    # Microscaling scales are stored as the 8-bit numbers they already are: E4M3 bytes (NVFP4) or
    # E8M0 exponent bytes (MX); every other scale stays in the weight's dtype.
    if spec.scale_dtype == "e4m3":
        out["weight_scale"] = qt.scale.to(FP8_DTYPE)
    elif spec.scale_dtype == "e8m0":
        out["weight_scale"] = packing.e8m0_bytes(qt.scale)
    else:
        out["weight_scale"] = qt.scale
    if qt.global_scale is not None:
        out["weight_global_scale"] = qt.global_scale
    if qt.zero_point is not None and "weight_zero_point" not in out:
        out["weight_zero_point"] = qt.zero_point
    return out


@torch.no_grad()
def input_qparams(source: models.ModelSource, layers: Sequence[str], spec: QuantSpec,
                  kind: str = "general") -> dict[str, dict[str, torch.Tensor]]:
    """Calibrated activation parameters from the real inputs of each layer on calibration text:
    a static scale (and zero point), or the global scale of NVFP4's "local" activations, whose
    group scales are observed at run time under it."""
    acts = spec.activations
    assert acts is not None and acts.dynamic is not True
    if not source.is_embedded:
        raise QuantlabError(
            "calibrated activation scales need calibration inputs, which the lab captures for the embedded "
            "model only: use FP8_DYNAMIC, MXFP8 or a weight-only scheme (W4A16, NVFP4A16) for this model"
        )
    captured = models.activations(kind)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for layer in layers:
        if acts.dynamic == "local":
            out[layer] = {"input_global_scale": global_scale(captured[layer], acts)}
            continue
        scale, zp = calibrate(captured[layer], acts)
        out[layer] = {"input_scale": scale} | ({"input_zero_point": zp} if zp is not None else {})
    return out


def _as_source(source: models.ModelSource | str | os.PathLike[str]) -> models.ModelSource:
    if isinstance(source, models.ModelSource):
        return source
    path = Path(source).expanduser()
    if path.suffix == ".json" or str(source) in sizing.shipped_configs():
        raise QuantlabError(f"{path.name} is a config without weights: it can be sized, not exported")
    return models.ModelSource.local(path)


@torch.no_grad()
def compressed_tensors(source: models.ModelSource, spec: QuantSpec, ignore: Sequence[str] | None = None,
                       kind: str = "general") -> tuple[dict[str, torch.Tensor], sizing.SizeReport]:
    """Every tensor of the compressed checkpoint, and the size report that predicts it."""
    # A scheme compressed-tensors has no config for (NF4, bitsandbytes' own) fails here, in one
    # line, before any weight is read.
    spec.to_ct_scheme()
    checkpoint = sizing.load_checkpoint(source)
    plan = sizing.plan(checkpoint, spec, ignore)
    chosen = {t.name: t for t in plan.quantized}
    acts = spec.activations
    static = (input_qparams(source, [t.layer for t in plan.quantized], spec, kind)
              if acts is not None and acts.dynamic is not True else {})
    files = {info.file for info in models.list_tensors(source).values()}
    out: dict[str, torch.Tensor] = {}
    for file in sorted(files):
        with safe_open(file, framework="pt") as fh:
            for name in fh.keys():
                tensor = fh.get_tensor(name)
                if name not in chosen:
                    out[name] = tensor
                    continue
                layer = chosen[name].layer
                parts = compress_weight(tensor, spec)
                for local, value in static.get(layer, {}).items():
                    parts[local] = value.to(parts["weight_scale"].dtype if local == "input_scale" else value.dtype)
                out.update({f"{layer}.{local}": value.contiguous() for local, value in parts.items()})
    return out, sizing.size_checkpoint(checkpoint, spec, ignore)


# -- the folder -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportResult:
    path: Path
    report: sizing.SizeReport

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file())


def _check_target(out: Path) -> None:
    if out.exists():
        raise QuantlabError(f"{out} already exists: choose a new folder (nothing was written)")
    parent = out.parent
    if not parent.is_dir():
        raise QuantlabError(f"{parent} does not exist: create it first (nothing was written)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise QuantlabError(f"{parent} is not writable (read-only or no permission): nothing was written")


def _copy_companions(src: Path, dst: Path) -> None:
    """Tokenizer, generation config, README...: everything but weights and the config we rewrite."""
    if not src.is_dir():
        return
    for item in sorted(src.iterdir()):
        if item.name in _SKIP_FILES or item.suffix in _WEIGHT_SUFFIXES:
            continue
        if item.is_dir():
            if not any(p.suffix in _WEIGHT_SUFFIXES for p in item.rglob("*")):
                shutil.copytree(item, dst / item.name)
        elif item.is_file():
            shutil.copy2(item, dst / item.name)


def _publish_permissions(folder: Path) -> None:
    """mkdtemp makes the staging folder private (0700); the finished checkpoint gets the usual
    permissions of a folder of files (0755 / 0644), as `save_pretrained` would leave it."""
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    folder.chmod(0o755)


def save_compressed(source: models.ModelSource | str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    spec: QuantSpec, ignore: Sequence[str] | None = None, kind: str = "general") -> ExportResult:
    """Quantize `source` with `spec` and write a compressed-tensors checkpoint folder at `out_dir`."""
    src = _as_source(source)
    out = Path(out_dir).expanduser().absolute()
    _check_target(out)
    tensors, report = compressed_tensors(src, spec, ignore, kind)
    config = dict(sizing.load_checkpoint(src).config or {})
    config["quantization_config"] = quantization_config(spec, report.ignore)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as err:
        raise QuantlabError(f"cannot write in {out.parent}: {err.strerror} (nothing was written)") from None
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _copy_companions(Path(src.path), tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        _publish_permissions(tmp)
        tmp.rename(out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise QuantlabError(f"writing {out} failed: {err.strerror or err} (nothing was left behind)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, report)


def zip_folder(folder: str | os.PathLike[str]) -> bytes:
    """The exported folder as one zip (stored, not deflated: packed weights barely compress)."""
    root = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(path, f"{root.name}/{path.relative_to(root)}")
    return buffer.getvalue()


def export_zip(source: models.ModelSource | str | os.PathLike[str], spec: QuantSpec,
               ignore: Sequence[str] | None = None) -> bytes:
    """Export into a temporary folder and return it zipped (the app's download, built on click)."""
    src = _as_source(source)
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(src.path).stem)
    name = f"{stem}-{spec.label.replace(' ', '-')}"
    with tempfile.TemporaryDirectory() as tmp:
        return zip_folder(save_compressed(src, Path(tmp) / name, spec, ignore).path)
