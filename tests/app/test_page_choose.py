"""The Choose-a-scheme capstone in AppTest: the recommendation follows the controls, recipes and the
CSV carry the evidence, and a weights-only local model works with what is missing said."""
import io

import pandas as pd
import streamlit as st
import torch
from safetensors.torch import save_file

from tests.app.apptest_util import markdown_text, run_page, use_local_path

PAGE = "pages/choose.py"
TIMEOUT = 400  # the first run loads the model and captures activations on a shared 2-core machine


def test_recommendation_follows_priority_and_hardware_with_recipes_and_csv(monkeypatch):
    sent = []  # AppTest drops its media store after each run: keep what the page hands the button
    real = st.download_button
    monkeypatch.setattr(st, "download_button", lambda label, data, *a, **kw: (
        kw.get("key") == "ch_csv" and sent.append(data)) or real(label, data, *a, **kw))
    at = run_page(PAGE, timeout=TIMEOUT)
    assert not at.error, [e.value for e in at.error]
    balance = at.success[0].value
    assert "W4A16 asym g128" in balance and "dB per bit" in balance and "embedding cosine" in balance
    codes = [c.value for c in at.code]
    assert any("QuantizationModifier(" in c and "'group_size': 128" in c and "'symmetric': False" in c for c in codes)
    assert any(c.startswith("quantlab export embedded ./minilm-w4a16-asym --scheme w4a16-asym") for c in codes)
    assert at.download_button(key="ch_csv").label == "Download this table (CSV)"
    table = pd.read_csv(io.BytesIO(sent[-1]), index_col=0)
    shown = at.dataframe[0].value
    assert len(shown) == 9 and list(table.index) == list(shown.index)
    assert table.loc["W4A16 g64", "file bytes"] == 5_809_731_472  # Llama-3.1-8B at g64: more than g128
    assert table.loc["W8A16", "layer-output SQNR (dB)"] == shown.loc["W8A16", "layer-output SQNR (dB)"]
    assert "5.70 GB" in markdown_text(at) and "falls below bf16" in markdown_text(at)

    at.radio(key="ch_priority").set_value("accuracy").run()
    assert not at.exception and at.success[0].value.startswith("**W8A16**")
    assert at.query_params["ch_priority"] == "accuracy"
    at.selectbox(key="ch_hw").set_value("mi300").run()  # no weight-only kernels there: FP8 (FNUZ) only
    assert not at.exception and at.success[0].value.startswith("**FP8 dynamic**")
    at.radio(key="ch_priority").set_value("long-context").run()
    assert "+ FP8 KV cache" in at.success[0].value
    assert any('kv_cache_dtype="fp8"' in c.value for c in at.code)


def test_local_weights_only_model_says_what_is_missing(tmp_path):
    path = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_file({"model.layers.0.mlp.up_proj.weight": torch.randn(64, 128),
               "model.layers.0.mlp.down_proj.weight": torch.randn(128, 64)}, str(path))
    at = use_local_path(run_page(PAGE, timeout=TIMEOUT), str(path))
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = " ".join(c.value for c in at.caption)
    assert "gives weights only" in captions and "calibration" in captions
    assert "weight SQNR" in at.success[0].value or "weight SQNR" in " ".join(at.dataframe[0].value.columns)
    assert any(c.value.startswith(f"quantlab export {path}") for c in at.code)
