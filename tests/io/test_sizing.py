"""Sizing from shapes: byte-exact against compressed-tensors, fast on a 70B config, clear on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import quantlab as ql
from quantlab.core.errors import QuantlabError
from quantlab.io import models, sizing

ct_reference = pytest.importorskip("tests.ct_reference")


def _meta_model(name: str) -> torch.nn.Module:
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(sizing.shipped_configs()[name]))
    cls = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        return cls._from_config(config, dtype=config.dtype)


NEWER_PRESETS = ["NVFP4A16", "NVFP4", "MXFP4A16", "MXFP8A16", "W4AFP8", "FP8_BLOCK"]
ARCHS = ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b"]


@pytest.mark.parametrize("arch,preset", [("llama-3.1-8b", "W4A16"), ("qwen2.5-7b", "W8A8"),
                                         ("mistral-7b", "FP8_DYNAMIC")]
                         + [(arch, preset) for arch in ARCHS for preset in NEWER_PRESETS])
def test_config_sizing_equals_model_compressor_bytes(arch: str, preset: str) -> None:
    """ModelCompressor on a meta-device model gives the exact tensors llm-compressor would save
    (its FP4 and MX compressors have meta paths too)."""
    spec = ql.QuantSpec.preset(preset)
    reference = ct_reference.meta_compressed_bytes(_meta_model(arch), spec, ["lm_head"])
    report = sizing.model_size(arch, spec)
    assert report.total_bytes - report.header_bytes == reference
    assert abs(report.total_bytes - reference) / reference < 0.001  # the header is all that differs


def test_llama_8b_w4a16_breakdown() -> None:
    report = sizing.model_size("llama-3.1-8b", ql.QuantSpec.preset("W4A16"))
    kinds = report.by_kind()
    assert report.quantized_layers == 32 * 7
    assert report.ignore == ("lm_head",)
    # 4 bits for each of the 6.98 B Linear weights, one bf16 scale per 128 of them.
    linear = 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336)
    assert kinds["packed weights"] == linear // 2
    assert kinds["scales"] == linear // 128 * 2
    assert kinds["embeddings"] == kinds["lm_head"] == 128256 * 4096 * 2
    assert report.quantized_bits_per_weight() == pytest.approx(4 + 16 / 128, abs=1e-4)


def test_llama_8b_nvfp4_breakdown() -> None:
    report = sizing.model_size("llama-3.1-8b", ql.QuantSpec.preset("NVFP4A16"))
    kinds = report.by_kind()
    linear = 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336)
    assert report.format == "nvfp4-pack-quantized"
    assert kinds["packed weights"] == linear // 2  # two E2M1 codes per byte
    assert kinds["scales"] == linear // 16  # one E4M3 byte per 16 weights
    assert kinds["global scales"] == 32 * 7 * 4  # one FP32 per layer
    assert report.quantized_bits_per_weight() == pytest.approx(4.5)


@pytest.mark.parametrize("dtype,preset,bits", [
    ("F32", "W4A16", 4 + 32 / 128), ("BF16", "W4A16", 4 + 16 / 128), ("F32", "W4A16_ASYM", 4 + 36 / 128),
    ("BF16", "W8A16", 8 + 16 / 128), ("F32", "W8A8", 8 + 32 / 384),
    # Microscaling scales are 8-bit numbers whatever the weight's dtype; W4AFP8's codes are int8 on disk.
    ("F32", "NVFP4A16", 4 + 8 / 16), ("BF16", "NVFP4", 4 + 8 / 16), ("F32", "MXFP4A16", 4 + 8 / 32),
    ("F16", "MXFP8A16", 8 + 8 / 32), ("BF16", "W4AFP8", 8 + 16 / 128), ("F32", "W4AFP8", 8 + 32 / 128),
])
def test_stored_bits_per_weight_from_the_real_layout(dtype: str, preset: str, bits: float) -> None:
    """The one function: the scale dtype is the weight's (fp32 MiniLM -> 32-bit scales)."""
    assert sizing.stored_bits_per_weight((1536, 384), dtype, ql.QuantSpec.preset(preset)) == pytest.approx(bits)


def test_stored_bits_count_the_int32_padding_of_odd_widths() -> None:
    # 3-bit codes of a 100-wide row fill ceil(300 / 32) = 10 int32 words: 320 bits, not 300.
    spec = ql.QuantSpec(num_bits=3, strategy="channel")
    assert sizing.stored_bits_per_weight((2, 100), "F32", spec) == pytest.approx((320 + 32) / 100)
    with pytest.raises(QuantlabError, match="does not divide"):
        sizing.stored_bits_per_weight((2, 100), "F32", ql.QuantSpec.preset("W4A16"))


def test_microscaling_group_sizes_are_compressed_tensors_own() -> None:
    with pytest.raises(QuantlabError, match="does not divide"):
        sizing.stored_bits_per_weight((2, 40), "BF16", ql.QuantSpec.preset("NVFP4A16"))
    # compressed-tensors picks its FP4 compressor by group size: NVFP4 in 32s would get MX scales.
    with pytest.raises(QuantlabError, match="groups of 16 only"):
        sizing.storage_format(ql.QuantSpec.preset("NVFP4A16").with_(group_size=32))


@pytest.mark.parametrize("preset,bits", [("W4A16", 4.25), ("NVFP4", 4.5), ("MXFP4A16", 4.25), ("MXFP8A16", 8.25)])
def test_report_and_layer_agree_on_bits_per_weight(preset: str, bits: float) -> None:
    spec = ql.QuantSpec.preset(preset)
    report = sizing.model_size(models.ModelSource.embedded(), spec)
    assert report.quantized_bits_per_weight() == pytest.approx(bits)  # every MiniLM block Linear divides by 128
    assert report.quantized_bits_per_weight() == sizing.stored_bits_per_weight((1536, 384), "F32", spec)


@pytest.mark.parametrize("preset", ["W4A16_ASYM", "NVFP4", "MXFP4A16", "MXFP8A16", "W4AFP8", "FP8_BLOCK"])
def test_real_file_size_equals_model_compressor_output(tmp_path: Path, preset: str) -> None:
    """The header arithmetic too: the predicted file is byte-for-byte as long as the real one."""
    from transformers import AutoModel

    spec = ql.QuantSpec.preset(preset)
    model = AutoModel.from_pretrained(models.embedded_model_dir(), dtype=torch.float32)
    calibrated = spec.activations is not None and spec.activations.dynamic is not True
    ref = ct_reference.write_reference(model, spec, ["pooler.dense"], tmp_path / "ref",
                                       models.activations() if calibrated else None)
    checkpoint = sizing.load_checkpoint(models.ModelSource.embedded())
    # transformers drops the position_ids buffer on save; size the tensors it keeps.
    kept = tuple(t for t in checkpoint.tensors if t.name != "embeddings.position_ids")
    report = sizing.size_checkpoint(sizing.Checkpoint(checkpoint.label, kept, None, True), spec)
    assert report.total_bytes == (ref / "model.safetensors").stat().st_size


def test_seventy_b_config_sizes_from_shapes_alone() -> None:
    # How long this takes is measured by benchmarks, not asserted here (see README: 0.05-0.15 s).
    report = sizing.model_size("llama-3.1-70b", ql.QuantSpec.preset("W4A16"))
    assert report.quantized_layers == 80 * 7
    assert 39e9 < report.total_bytes < 40e9


def test_group_size_changes_only_the_scales() -> None:
    g128 = sizing.model_size("mistral-7b", ql.QuantSpec.preset("W4A16")).by_kind()
    g64 = sizing.model_size("mistral-7b", ql.QuantSpec.preset("W4A16").with_(group_size=64)).by_kind()
    assert g64["packed weights"] == g128["packed weights"]
    assert g64["scales"] == 2 * g128["scales"]


def test_tied_embeddings_are_stored_once(tmp_path: Path) -> None:
    cfg = json.loads(sizing.shipped_configs()["qwen2.5-7b"].read_text())
    cfg.update(tie_word_embeddings=True, num_hidden_layers=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    report = sizing.model_size(tmp_path / "config.json", ql.QuantSpec.preset("W4A16"))
    assert "lm_head" not in report.by_kind() and report.by_kind()["embeddings"] == 152064 * 3584 * 2


# -- safetensors sources ------------------------------------------------------------------------

def _tiny(tmp_path: Path, cols: tuple[int, ...] = (256, 256)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(50, 256, generator=g, dtype=torch.bfloat16),
               "lm_head.weight": torch.randn(50, 256, generator=g, dtype=torch.bfloat16)}
    for i, c in enumerate(cols):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(64, c, generator=g, dtype=torch.bfloat16)
        tensors[f"model.layers.{i}.norm.weight"] = torch.ones(c, dtype=torch.bfloat16)
    return tensors


def test_sharded_folder_is_sized_from_its_index(tmp_path: Path) -> None:
    tensors = _tiny(tmp_path)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
        weight_map.update({k: shard for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    report = sizing.model_size(tmp_path, ql.QuantSpec.preset("W4A16"))
    assert report.quantized_layers == 2
    assert report.by_kind()["packed weights"] == 2 * 64 * 256 // 2
    assert report.by_kind()["lm_head"] == report.by_kind()["embeddings"] == 50 * 256 * 2


def test_sharded_index_naming_a_missing_shard(tmp_path: Path) -> None:
    save_file(_tiny(tmp_path), str(tmp_path / "model-00001-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(QuantlabError, match="model-00002-of-00002.safetensors"):
        sizing.model_size(tmp_path, ql.QuantSpec.preset("W4A16"))


def test_group_size_that_does_not_divide_a_layer(tmp_path: Path) -> None:
    save_file(_tiny(tmp_path, cols=(256, 200)), str(tmp_path / "model.safetensors"))
    report = sizing.model_size(tmp_path / "model.safetensors", ql.QuantSpec.preset("W4A16"))
    assert report.quantized_layers == 1
    assert "model.layers.1.mlp.up_proj" in report.ignore
    assert len(report.notes) == 1 and "model.layers.1.mlp.up_proj (200 columns)" in report.notes[0]
    assert "kept unquantized" in report.notes[0]
    with pytest.raises(QuantlabError, match="divides none"):
        sizing.model_size(tmp_path / "model.safetensors", ql.QuantSpec.preset("W4A16").with_(group_size=512))


def test_unknown_architecture_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "quantum-llama", "hidden_size": 8}))
    with pytest.raises(QuantlabError, match="'quantum-llama' is not an architecture"):
        sizing.model_size(tmp_path / "config.json", ql.QuantSpec.preset("W4A16"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(QuantlabError, match="not readable JSON"):
        sizing.model_size(tmp_path / "broken.json", ql.QuantSpec.preset("W4A16"))


def test_missing_path_names_the_shipped_configs() -> None:
    with pytest.raises(QuantlabError, match="llama-3.1-8b"):
        sizing.model_size("/no/such/model", ql.QuantSpec.preset("W4A16"))


def test_ignore_list_keeps_layers() -> None:
    spec = ql.QuantSpec.preset("W4A16")
    full = sizing.model_size(models.ModelSource.embedded(), spec)
    fewer = sizing.model_size(models.ModelSource.embedded(), spec, ignore=["re:.*intermediate"])
    assert full.quantized_layers == 36 and fewer.quantized_layers == 30
    assert fewer.total_bytes > full.total_bytes
    assert fewer.by_kind()["linear kept"] - full.by_kind()["linear kept"] == 6 * 1536 * 384 * 4


def test_header_bytes_matches_safetensors(tmp_path: Path) -> None:
    tensors = _tiny(tmp_path) | {"x.weight_shape": torch.tensor([3, 4]), "y.q": torch.zeros(3, dtype=torch.int8)}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    predicted = sizing.header_bytes((k, tuple(v.shape), sizing.torch_dtype_code(v.dtype)) for k, v in tensors.items())
    payload = sum(v.numel() * v.element_size() for v in tensors.values())
    assert predicted + payload == (tmp_path / "t.safetensors").stat().st_size
