"""Model sources: headers only, one tensor at a time, uploads validated, real activations captured."""
import json
import struct

import pytest
import torch
from safetensors.torch import save, save_file

import quantlab as ql
from quantlab.core.errors import QuantlabError
from quantlab.io import models


def test_embedded_layers_from_header():
    src = models.ModelSource.embedded()
    layers = {t.name: t for t in models.list_layers(src)}
    w = layers["encoder.layer.0.intermediate.dense.weight"]
    assert w.shape == (1536, 384) and w.dtype == "F32" and w.numel == 589_824
    linears = [n for n in layers if ".encoder." in f".{n}" and "embeddings" not in n]
    assert len(linears) == 6 * 6  # q, k, v, attention out, intermediate, output per block
    total = sum(t.numel for t in models.list_tensors(src).values() if t.dtype == "F32")
    assert 22_000_000 < total < 23_000_000


def test_load_one_tensor_matches_header():
    src = models.ModelSource.embedded()
    t = models.load_tensor(src, "encoder.layer.2.output.dense.weight")
    assert tuple(t.shape) == (384, 1536) and t.dtype == torch.float32
    with pytest.raises(QuantlabError, match="no tensor named"):
        models.load_tensor(src, "nope.weight")


def test_upload_roundtrip_and_cap(monkeypatch, tmp_path):
    w = torch.randn(8, 16)
    data = save({"a.weight": w})
    src = models.ModelSource.from_upload("mine.safetensors", data, tmp_path)
    assert [t.name for t in models.list_layers(src)] == ["a.weight"]
    assert torch.equal(models.load_tensor(src, "a.weight"), w)
    monkeypatch.setattr(models, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(QuantlabError, match="capped"):
        models.ModelSource.from_upload("big.safetensors", data, tmp_path)


@pytest.mark.parametrize("blob,message", [
    (b"", "too short"),
    (b"\x00" * 8, "bad header length"),
    (struct.pack("<Q", 50) + b"{}", "truncated"),
    (struct.pack("<Q", 4) + b"nope", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a table"),
    (struct.pack("<Q", 21) + json.dumps({"x": {"shape": [4]}}).encode(), "malformed"),
])
def test_bad_uploads_are_one_line_errors(blob, message, tmp_path):
    with pytest.raises(QuantlabError, match=message) as info:
        models.ModelSource.from_upload("f.safetensors", blob, tmp_path)
    assert "\n" not in str(info.value)


def test_local_rejects_pickles(tmp_path):
    f = tmp_path / "pytorch_model.bin"
    f.write_bytes(b"\x80\x04pickle")
    with pytest.raises(QuantlabError, match="only safetensors"):
        models.ModelSource.local(f)
    with pytest.raises(QuantlabError, match="does not exist"):
        models.ModelSource.local(tmp_path / "missing")


def test_sharded_index_missing_shard(tmp_path):
    save_file({"a.weight": torch.randn(4, 4)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(QuantlabError, match="model-00002-of-00002"):
        models.list_tensors(models.ModelSource(path=str(tmp_path), label="sharded"))


def test_user_tensor_errors():
    spec = ql.QuantSpec(num_bits=4, strategy="group", group_size=128)
    with pytest.raises(QuantlabError, match="NaN/Inf"):
        ql.quantize(torch.tensor([[1.0, float("nan")] * 64]), spec)
    with pytest.raises(QuantlabError, match="2-D"):
        ql.quantize(torch.randn(256), spec)
    with pytest.raises(QuantlabError, match=r"does not divide the input dimension 384.*64"):
        ql.quantize(torch.randn(4, 384), ql.QuantSpec(num_bits=4, strategy="group", group_size=256))
    zeros = ql.quantize(torch.zeros(4, 128), spec)
    assert torch.all(zeros.dequantize() == 0)
    one_d = ql.quantize(torch.randn(100), ql.QuantSpec(num_bits=8, strategy="tensor"))
    assert one_d.q.shape == (100,)


def test_spec_validation_messages():
    with pytest.raises(QuantlabError, match="out of range"):
        ql.QuantSpec(num_bits=9)
    with pytest.raises(QuantlabError, match="unknown strategy"):
        ql.QuantSpec(strategy="row")  # type: ignore[arg-type]
    with pytest.raises(QuantlabError, match="needs a positive group_size"):
        ql.QuantSpec(strategy="group")
    with pytest.raises(QuantlabError, match="unknown preset"):
        ql.QuantSpec.preset("W3A7")
    assert ql.QuantSpec.preset("w4a16") == ql.QuantSpec(num_bits=4, strategy="group", group_size=128)
    assert ql.QuantSpec.preset("W8A8").activations.strategy == "token"
    spec = ql.QuantSpec.preset("W4A16_ASYM")
    assert spec.to_url() == "w4a16-asym" and ql.QuantSpec.from_url("w4a16-asym") == spec
    assert ql.QuantSpec.from_url(ql.QuantSpec.preset("FP8_DYNAMIC").to_url()) == ql.QuantSpec.preset("FP8_DYNAMIC")
    with pytest.raises(QuantlabError, match="not a quantization scheme"):
        ql.QuantSpec.from_url("banana")
    assert len({ql.QuantSpec.preset(p) for p in ql.PRESETS}) == len(ql.PRESETS)  # hashable, distinct


def test_real_activations_have_outlier_channels():
    acts = models.activations()
    x = acts["encoder.layer.0.intermediate.dense"]
    assert x.shape[1] == 384 and x.shape[0] > 300  # real tokens only, padding dropped
    per_channel = x.abs().amax(dim=0)
    assert per_channel.max() > 10 * per_channel.median()
    post_gelu = acts["encoder.layer.0.output.dense"]
    assert post_gelu.min() > -0.2 and post_gelu.max() > 5  # GELU output: one-sided, long tail
    assert len(acts) == 36


def test_concurrent_sessions_do_not_mix_captured_activations():
    """Thirty people share one model object: one pass's hooks must never see another pass's tensors."""
    from concurrent.futures import ThreadPoolExecutor

    model, tokenizer = models.embedded_model()
    texts = {kind: models.sample_texts(kind)[:12] for kind in ("general", "code")}
    alone = {kind: models.capture_linear_inputs(model, tokenizer, t) for kind, t in texts.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [(kind, pool.submit(models.capture_linear_inputs, model, tokenizer, texts[kind]))
                   for _ in range(3) for kind in texts]
        for kind, future in futures:
            together = future.result()
            assert together.keys() == alone[kind].keys()
            for name, x in together.items():
                assert torch.equal(x, alone[kind][name]), name
    assert not any(m._forward_pre_hooks for m in model.modules())  # every hook was removed


def test_first_loads_from_many_sessions_at_once_are_safe():
    """A room opening the app together: model loads and config builds race from many threads."""
    from concurrent.futures import ThreadPoolExecutor

    from quantlab.io import sizing

    models._load_embedded_model.cache_clear()
    sizing._build_from_config.cache_clear()
    jobs = [models.embedded_model, lambda: sizing.model_size("qwen2.5-7b", ql.QuantSpec.preset("W4A16"))]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = [pool.submit(jobs[i % 2]) for i in range(6)]
        outcomes = [r.result() for r in results]
    loaded = {id(o[0]) for o in outcomes[::2]}
    assert len(loaded) == 1  # one model object, loaded once, shared


def test_unknown_dtype_is_a_one_line_error(tmp_path):
    header = json.dumps({"x.weight": {"dtype": "C128", "shape": [2, 2], "data_offsets": [0, 64]}}).encode()
    blob = struct.pack("<Q", len(header)) + header + bytes(64)
    with pytest.raises(QuantlabError, match="dtype C128"):
        models.ModelSource.from_upload("odd.safetensors", blob, tmp_path)


def test_activations_are_captured_once_however_many_ask_at_once(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    runs = []
    original = models.capture_linear_inputs
    monkeypatch.setattr(models, "capture_linear_inputs", lambda *a: runs.append(1) or original(*a))
    models._captured_activations.cache_clear()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: models.activations("science"), range(4)))
    assert len(runs) == 1 and all(r is results[0] for r in results)


def test_a_pickle_upload_is_refused_with_the_reason(tmp_path):
    with pytest.raises(QuantlabError, match="pickle checkpoints are never loaded") as info:
        models.ModelSource.from_upload("pytorch_model.bin", b"\x80\x02 whatever", tmp_path)
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())
