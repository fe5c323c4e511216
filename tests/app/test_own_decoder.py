"""Every lesson on a local causal LM (a tiny random Llama saved to a temp folder) as the sidebar's
source: the lessons get its real activations, its first quantized layer, and the decoder's quality."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import lab_ui
from quantlab.io import decoder
from tests.app.apptest_util import run_page, use_local_path
from tests.io.test_decoder import save_tiny_llama

FIRST_QUANTIZED = "model.layers.0.mlp.down_proj"  # natural order; lm_head (kept by every recipe) is not it


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-app"))


def _on_llama(page: str, llama: Path) -> AppTest:
    at = use_local_path(run_page(page), str(llama))
    assert not at.exception, at.exception
    assert not [e.value for e in at.sidebar.error], [e.value for e in at.sidebar.error]
    return at


def _text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info])


@pytest.mark.parametrize("lesson_file", [lesson.file for lesson in lab_ui.LESSONS])
def test_every_lesson_runs_on_a_local_decoder(lesson_file: str, llama: Path) -> None:
    at = _on_llama(lesson_file, llama)
    assert at.selectbox(key="layer").value == FIRST_QUANTIZED
    assert "Real activations come from" not in _text(at)  # no lesson falls back to weights only


def test_the_sidebar_says_how_long_the_capture_took(llama: Path) -> None:
    at = _on_llama("pages/symmetric.py", llama)
    seconds = decoder.activations(llama).seconds
    assert any(f"captured on sample text in {seconds:.1f} s" in c.value for c in at.sidebar.caption)


def test_symmetric_offers_the_decoders_real_input(llama: Path) -> None:
    at = _on_llama("pages/symmetric.py", llama)
    assert "input activation" in at.radio(key="sym_tensor").options
    assert not [b for b in at.button if b.label.startswith("Skewed")]  # MiniLM's story layers are not offered
    at.radio(key="sym_tensor").set_value("input").run()
    assert not at.exception, at.exception
    tokens = decoder.activations(llama).inputs[FIRST_QUANTIZED].shape[0]
    assert any(f"{tokens * 256:,} values" in m.value for m in at.markdown)  # down_proj reads 256 features


def test_gptq_runs_on_the_decoders_layer(llama: Path) -> None:
    at = _on_llama("pages/gptq.py", llama)
    labels = [m.label for m in at.metric]
    assert "Layer-output SQNR, GPTQ" in labels
    assert any(FIRST_QUANTIZED in c.value for c in at.caption)


def test_outliers_shows_the_decoders_perplexity_and_kl(llama: Path) -> None:
    at = _on_llama("pages/outliers.py", llama)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Perplexity on held-out text"]) > 1
    assert float(metrics["Mean KL to the original (nats/token)"]) > 0
    assert "rank correlation" not in _text(at).lower()  # the encoder's embedding view is not shown
    at.radio(key="out_dec_method").set_value("gptq").run()
    assert not at.exception, at.exception
    at.radio(key="out_dec_method").set_value("awq").run()
    assert not at.exception, at.exception
    at.slider(key="out_dec_keep").set_value(2).run()
    assert not at.exception, at.exception
    assert any("Kept unquantized" in c.value for c in at.caption)
    at.selectbox(key="out_dec_scheme").set_value("w8a8-static").run()
    at.toggle(key="out_dec_smooth").set_value(True).run()
    assert not at.exception and not at.error, at.exception


def test_what_if_runs_the_decoder_under_each_scheme(llama: Path) -> None:
    at = _on_llama("pages/compare.py", llama)
    at.button(key="cmp_dec_run").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert table.index[0] == "original (unquantized)" and len(table) == 1 + len(at.multiselect(key="cmp_schemes").value)
    assert (table["mean KL to original (nats/token)"].iloc[1:] > 0).all()


def test_kv_cache_plans_the_decoders_config_and_measures_its_real_keys(llama: Path) -> None:
    at = _on_llama("pages/kv_cache.py", llama)
    assert at.selectbox(key="kv_arch").options[0] == f"the sidebar's model ({llama.name})"
    at.selectbox(key="kv_arch").set_value("sidebar").run()
    assert not at.exception, at.exception
    assert any(f"**{llama.name}**: 2 layers, 4 query heads, 2 KV heads" in m.value for m in at.markdown)
    caption = next(c.value for c in at.caption if "shipped sentences" in c.value)
    assert "2 KV heads (4 query heads)" in caption and "after RoPE, causal attention" in caption


def _upload(page: str, name: str, tensors: dict) -> AppTest:
    from safetensors.torch import save

    at = run_page(page)
    at.radio(key="source_kind").set_value("upload").run()
    at.file_uploader(key="source_upload").set_value((name, save(tensors), "application/octet-stream")).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("lesson_file", ["pages/storage.py", "pages/compare.py"])
def test_a_single_matrix_upload_is_sized_not_refused(lesson_file: str) -> None:
    import torch

    at = _upload(lesson_file, "one-layer.safetensors", {"proj.weight": torch.randn(64, 256)})
    assert not at.error and not at.sidebar.error, [e.value for e in at.error]
    assert at.selectbox(key="layer").value == "proj"


def test_a_shard_upload_says_where_the_whole_model_can_be_read() -> None:
    import torch

    at = _upload("pages/storage.py", "model-00002-of-00004.safetensors",
                 {"model.layers.7.mlp.down_proj.weight": torch.randn(64, 256)})
    note = " ".join(i.value for i in at.sidebar.info)
    assert "shard 2 of 4" in note and "Local path" in note


def test_kv_cache_sizes_an_uploaded_config_and_refuses_a_bad_one() -> None:
    import json

    from quantlab.io import sizing

    config = json.loads(sizing.shipped_configs()["mistral-7b"].read_text())
    at = run_page("pages/kv_cache.py")
    at.file_uploader(key="kv_config").set_value(("config.json", json.dumps(config).encode(), "application/json")).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="kv_arch").options[0] == "your config.json"
    at.selectbox(key="kv_arch").set_value("uploaded").run()
    assert any("**mistralai/Mistral-7B-v0.3**: 32 layers, 32 query heads, 8 KV heads" in m.value for m in at.markdown)
    at.file_uploader(key="kv_config").set_value(("config.json", b"{not json", "application/json")).run()
    assert not at.exception and any(e.value == "config.json is not JSON" for e in at.error)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.io.test_decoder import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-app"))


@pytest.mark.parametrize("lesson_file", [lesson.file for lesson in lab_ui.LESSONS])
def test_every_lesson_runs_on_gpt2s_conv1d_layers(lesson_file: str, gpt2: Path) -> None:
    at = use_local_path(run_page(lesson_file), str(gpt2))
    assert not at.exception, at.exception
    assert at.selectbox(key="layer").value == "transformer.h.0.attn.c_attn"
    assert any("384×128" in c.value and "Conv1D" in c.value for c in at.sidebar.caption)
    # Sizing follows llm-compressor, whose Linear targets skip Conv1D; a lesson that sizes says so in one line.
    assert all("Conv1D" in e.value for e in at.error), [e.value for e in at.error]
    assert "Real activations come from" not in _text(at)
