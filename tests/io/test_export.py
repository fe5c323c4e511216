"""Export: bit-for-bit what compressed-tensors' ModelCompressor writes, and loadable by transformers."""
from __future__ import annotations

import copy
import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import quantlab as ql
from quantlab.core.errors import QuantlabError
from quantlab.io import export, models

ct_reference = pytest.importorskip("tests.ct_reference")

PRESETS = ["W4A16", "W4A16_ASYM", "W8A16", "W8A8", "FP8", "NVFP4A16", "NVFP4", "MXFP4A16", "MXFP4", "MXFP8A16",
           "MXFP8", "W4AFP8", "FP8_BLOCK"]
MICROSCALING = ["NVFP4A16", "NVFP4", "MXFP4A16", "MXFP8A16"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[export.ExportResult, Path]]:
    """Each preset exported by quantlab and, for the same model, by compressed-tensors."""
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("export")
    out = {}
    for name in PRESETS:
        spec = ql.QuantSpec.preset(name)
        ours = export.save_compressed(models.ModelSource.embedded(), root / name, spec)
        model = AutoModel.from_pretrained(models.embedded_model_dir(), dtype=torch.float32)
        # Static activations calibrate their scale, NVFP4's "local" ones their global scale.
        static = spec.activations is not None and spec.activations.dynamic is not True
        theirs = ct_reference.write_reference(model, spec, ["pooler.dense"], root / f"ref-{name}",
                                              models.activations() if static else None)
        out[name] = (ours, theirs)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


@pytest.mark.parametrize("name", PRESETS)
def test_every_tensor_matches_model_compressor(exported, name: str) -> None:
    ours, theirs = exported[name]
    with safe_open(ours.path / "model.safetensors", "pt") as a, safe_open(theirs / "model.safetensors", "pt") as b:
        # transformers does not save BERT's position_ids buffer; we copy every source tensor.
        assert set(a.keys()) - set(b.keys()) == {"embeddings.position_ids"}
        assert set(b.keys()) <= set(a.keys())
        for key in b.keys():
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert torch.equal(_bits(x), _bits(y)), key
        assert sum(k.endswith(".weight_scale") for k in b.keys()) == 36  # all six blocks' Linears


@pytest.mark.parametrize("name", PRESETS)
def test_quantization_config_matches_update_config(exported, name: str) -> None:
    ours, theirs = exported[name]
    mine = json.loads((ours.path / "config.json").read_text())
    ref = json.loads((theirs / "config.json").read_text())
    assert mine["quantization_config"] == ref["quantization_config"]
    assert mine["model_type"] == "bert"


@pytest.mark.parametrize("name", PRESETS)
def test_size_report_predicts_the_file(exported, name: str) -> None:
    ours, _ = exported[name]
    assert (ours.path / "model.safetensors").stat().st_size == ours.report.total_bytes


def test_companion_files_are_copied_but_no_weights(exported) -> None:
    ours, _ = exported["W4A16"]
    names = {p.name for p in ours.files}
    assert {"tokenizer.json", "vocab.txt", "modules.json", "config.json", "model.safetensors"} <= names
    assert [p for p in ours.files if p.suffix == ".safetensors"] == [ours.path / "model.safetensors"]
    # readable by whoever serves it, not only by the user who exported it (the staging folder is 0700)
    assert ours.path.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in ours.files} == {0o644}


def _simulated(spec: ql.QuantSpec) -> torch.nn.Module:
    """quantlab's own fake-quantized model: every in-scope Linear weight (and input) quantized."""
    base, _ = models.embedded_model()
    model = copy.deepcopy(base)
    calib = models.activations()
    for name, module in model.named_modules():
        if not (isinstance(module, torch.nn.Linear) and name.startswith("encoder.layer.")):
            continue
        module.weight.data = ql.fake_quantize(module.weight.data, spec)
        acts = spec.activations
        if acts is None:
            continue
        if acts.dynamic:
            def hook(_m, args, a=acts):
                x = args[0]
                return (ql.fake_quantize(x.reshape(-1, x.shape[-1]), a).reshape(x.shape),)
        else:
            lo, hi = torch.aminmax(calib[name])
            scale, zp = ql.calculate_qparams(lo.reshape(1), hi.reshape(1), acts)

            def hook(_m, args, a=acts, s=scale, z=zp):
                return (ql.quantize_with(args[0], s, z, a).dequantize(),)
        module.register_forward_pre_hook(hook)
    return model


@pytest.mark.parametrize("name", ["W4A16", "W8A16", "W8A8", "FP8", "FP8_BLOCK"])
def test_transformers_loads_export_and_matches_simulation(exported, name: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    ours, _ = exported[name]
    tokenizer = AutoTokenizer.from_pretrained(ours.path)
    batch = tokenizer(models.sample_texts()[:6], padding=True, return_tensors="pt")
    loaded = AutoModel.from_pretrained(ours.path, add_pooling_layer=False).eval()
    with torch.no_grad():
        got = loaded(**batch).last_hidden_state
        want = _simulated(ql.QuantSpec.preset(name))(**batch).last_hidden_state
        full = models.embedded_model()[0](**batch).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, full, atol=1e-3)  # it really runs quantized


@pytest.mark.parametrize("name,stored", [
    ("NVFP4A16", {"weight_packed": (torch.uint8, (384, 192)), "weight_scale": (torch.float8_e4m3fn, (384, 24)),
                  "weight_global_scale": (torch.float32, (1,))}),
    ("NVFP4", {"weight_packed": (torch.uint8, (384, 192)), "weight_scale": (torch.float8_e4m3fn, (384, 24)),
               "weight_global_scale": (torch.float32, (1,)), "input_global_scale": (torch.float32, (1,))}),
    ("MXFP4A16", {"weight_packed": (torch.uint8, (384, 192)), "weight_scale": (torch.uint8, (384, 12))}),
    ("MXFP8A16", {"weight": (torch.float8_e4m3fn, (384, 384)), "weight_scale": (torch.uint8, (384, 12))}),
    # 4-bit codes, but one int8 per weight on disk: int-quantized does not pack.
    ("W4AFP8", {"weight": (torch.int8, (384, 384)), "weight_scale": (torch.float32, (384, 3))}),
    # one scale per 128x128 tile in the weight's dtype; per-token-group activations store nothing
    ("FP8_BLOCK", {"weight": (torch.float8_e4m3fn, (384, 384)), "weight_scale": (torch.float32, (3, 3))}),
])
def test_new_formats_store_what_compressed_tensors_names(exported, name: str, stored: dict) -> None:
    ours, _ = exported[name]
    layer = "encoder.layer.0.attention.self.query"
    with safe_open(ours.path / "model.safetensors", "pt") as fh:
        got = {k.removeprefix(f"{layer}."): fh.get_tensor(k) for k in fh.keys() if k.startswith(f"{layer}.")}
    assert {k: (v.dtype, tuple(v.shape)) for k, v in got.items() if k != "bias"} == stored
    fmt = json.loads((ours.path / "config.json").read_text())["quantization_config"]["format"]
    assert fmt == ours.report.format


@pytest.mark.parametrize("name", MICROSCALING)
def test_transformers_decompresses_microscaling_to_our_dequantized_weights(exported, name: str) -> None:
    """transformers decompresses FP4/MX weights to bf16 (so an fp32 model loads with dtype=bfloat16)."""
    from transformers import AutoModel

    ours, _ = exported[name]
    loaded = AutoModel.from_pretrained(ours.path, add_pooling_layer=False, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        loaded(input_ids=torch.tensor([[101, 102]]))  # compressed layers decompress on their first call
    base, _ = models.embedded_model()
    spec = ql.QuantSpec.preset(name)
    for layer in ("encoder.layer.0.attention.self.query", "encoder.layer.5.output.dense"):
        got = loaded.get_submodule(layer).weight
        want = ql.fake_quantize(base.get_submodule(layer).weight.data, spec)
        assert torch.equal(got, want.to(torch.bfloat16)), layer
    assert "bfloat16" in export.runtimes(spec)


def test_transformers_refuses_packed_asymmetric_zero_points(exported) -> None:
    """The caveat the app states: transformers 5.24 + compressed-tensors 0.20 cannot load W4A16_ASYM."""
    from transformers import AutoModel

    ours, _ = exported["W4A16_ASYM"]
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModel.from_pretrained(ours.path, add_pooling_layer=False)
    assert "refuses" in export.runtimes(ql.QuantSpec.preset("W4A16_ASYM"))


def test_zip_holds_the_whole_folder(exported) -> None:
    import io
    import zipfile

    ours, _ = exported["W8A8"]
    names = zipfile.ZipFile(io.BytesIO(export.zip_folder(ours.path))).namelist()
    assert sorted(names) == sorted(f"W8A8/{p.relative_to(ours.path)}" for p in ours.files)


# -- bad input: one line, nothing left behind --------------------------------------------------

def test_existing_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(QuantlabError, match="already exists"):
        export.save_compressed(models.ModelSource.embedded(), tmp_path / "out", ql.QuantSpec.preset("W4A16"))


def test_missing_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantlabError, match="does not exist"):
        export.save_compressed(models.ModelSource.embedded(), tmp_path / "a" / "b", ql.QuantSpec.preset("W4A16"))


def test_read_only_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores permission bits, so simulate what the OS answers for a read-only mount.
    def refuse(*_a, **_k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(export.tempfile, "mkdtemp", refuse)
    with pytest.raises(QuantlabError, match="Read-only file system"):
        export.save_compressed(models.ModelSource.embedded(), tmp_path / "out", ql.QuantSpec.preset("W4A16"))
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "save_file", disk_full)
    with pytest.raises(QuantlabError, match="No space left"):
        export.save_compressed(models.ModelSource.embedded(), tmp_path / "out", ql.QuantSpec.preset("W8A8"))
    assert list(tmp_path.iterdir()) == []


def test_nf4_is_refused_in_one_line_before_any_weight_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reading(*_a, **_k):
        raise AssertionError("a weight was read")

    monkeypatch.setattr(export, "safe_open", no_reading)
    for slug in ("nf4", "nf4-fp32"):
        with pytest.raises(QuantlabError, match="bitsandbytes' format, not a compressed-tensors scheme") as err:
            export.save_compressed(models.ModelSource.embedded(), tmp_path / slug, ql.QuantSpec.from_url(slug))
        assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_config_without_weights_cannot_be_exported(tmp_path: Path) -> None:
    with pytest.raises(QuantlabError, match="without weights"):
        export.save_compressed("llama-3.1-8b", tmp_path / "out", ql.QuantSpec.preset("W4A16"))


def test_static_activations_need_captured_inputs(tmp_path: Path) -> None:
    src = models.ModelSource.embedded()
    with safe_open(models.list_tensors(src)["encoder.layer.0.intermediate.dense.weight"].file, "pt") as fh:
        weights = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("encoder.layer.0.")}
    from safetensors.torch import save_file

    save_file(weights, str(tmp_path / "one-block.safetensors"))
    with pytest.raises(QuantlabError, match="FP8_DYNAMIC"):
        export.save_compressed(tmp_path / "one-block.safetensors", tmp_path / "out", ql.QuantSpec.preset("FP8"))
    result = export.save_compressed(tmp_path / "one-block.safetensors", tmp_path / "out",
                                    ql.QuantSpec.preset("FP8_DYNAMIC"))
    assert (result.path / "model.safetensors").stat().st_size == result.report.total_bytes
    assert json.loads((result.path / "config.json").read_text())["quantization_config"]["format"] == "float-quantized"


def test_export_zip_is_what_the_download_button_serves() -> None:
    import io
    import zipfile

    data = export.export_zip(models.ModelSource.embedded(), ql.QuantSpec.preset("W4A16"))
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    assert any(n.endswith("/model.safetensors") for n in names) and any(n.endswith("/tokenizer.json") for n in names)
    root = names[0].split("/")[0]
    config = json.loads(zf.read(f"{root}/config.json"))
    assert config["quantization_config"]["format"] == "pack-quantized"
