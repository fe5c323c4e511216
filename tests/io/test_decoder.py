"""A local causal LM as a source of real activations: a tiny random Llama saved to a temp folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quantlab.core.errors import QuantlabError
from quantlab.io import decoder, models


def save_tiny_llama(folder: Path) -> Path:
    """A 2-layer random Llama (GQA: 4 heads, 2 KV heads) with MiniLM's tokenizer, as save_pretrained writes it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(models.embedded_model_dir(), local_files_only=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_capture_gives_every_linear_its_real_inputs(tiny_llama: Path) -> None:
    capture = decoder.activations(tiny_llama, "general")
    names = [n for n, m in decoder.load(tiny_llama).model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert list(capture.inputs) == names and len(names) == 2 * 7 + 1  # 7 per block, plus lm_head
    tokens = sum(decoder.token_ids(decoder.load(tiny_llama), t).shape[1] for t in models.sample_texts("general"))
    assert capture.inputs["model.layers.0.self_attn.q_proj"].shape == (tokens, 128)
    assert capture.inputs["model.layers.1.mlp.down_proj"].shape == (tokens, 256)
    assert capture.seconds > 0
    # The q_proj input is the normalised residual stream: real numbers, not zeros.
    assert capture.inputs["model.layers.0.self_attn.q_proj"].std() > 0.1


def test_capture_is_done_once_per_model_and_text(tiny_llama: Path) -> None:
    assert decoder.activations(tiny_llama, "code") is decoder.activations(tiny_llama, "code")


def test_a_model_too_large_for_free_memory_is_refused_in_one_line(tiny_llama: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    need = decoder.check_fits(tiny_llama)
    assert need == int(decoder.checkpoint_bytes(tiny_llama) * decoder.LOAD_FACTOR)
    monkeypatch.setattr(decoder, "available_bytes", lambda: need // 2)
    with pytest.raises(QuantlabError, match=r"needs about .* GiB .* GiB free"):
        decoder.check_fits(tiny_llama)


def test_an_encoder_is_not_a_causal_lm(tmp_path: Path) -> None:
    assert not decoder.is_causal_lm(models.embedded_model_dir())
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(QuantlabError, match="not a causal LM"):
        decoder.load(tmp_path)


def test_a_model_id_in_the_local_hub_cache_is_resolved_offline(tiny_llama: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # The hub cache's layout: snapshot files are symlinks into blobs/.
    repo = tmp_path / "models--acme--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot, blobs = repo / "snapshots" / "0123abcd", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in tiny_llama.iterdir():
        (blobs / f.name).write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(blobs / f.name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    source = models.ModelSource.local("acme/tiny-llama")
    assert source.label == "acme/tiny-llama" and Path(source.path) == snapshot.resolve()
    assert "model.layers.0.mlp.down_proj" in decoder.activations(source.path).inputs
    with pytest.raises(QuantlabError, match="nothing is downloaded"):
        models.ModelSource.local("acme/not-cached")


def save_tiny_gpt2(folder: Path) -> Path:
    """A 2-layer random GPT-2 (Conv1D layers, weights stored [in, out]) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(models.embedded_model_dir(), local_files_only=True)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=128, n_layer=2, n_head=4,
                               n_positions=256)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_gpt2s_conv1d_layers_are_captured_and_read_as_out_by_in(tmp_path: Path) -> None:
    folder = save_tiny_gpt2(tmp_path / "gpt2")
    source = models.ModelSource.local(folder)
    name = "transformer.h.0.attn.c_attn.weight"
    assert models.list_tensors(source)[name].shape == (128, 384)  # as Conv1D stores it
    w = models.weight_matrix(source, name)
    assert w.shape == models.matrix_shape(source, name) == (384, 128)
    x = decoder.activations(folder).inputs["transformer.h.0.attn.c_attn"]
    assert x.shape[1] == w.shape[1] == 128
    assert not models.stored_transposed(source, "transformer.wte.weight")
