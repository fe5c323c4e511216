"""The formats and KV-cache lessons run in AppTest, and their widgets change what is shown."""
import pytest
import torch
from safetensors.torch import save_file

import lab_ui
from tests.app.apptest_util import markdown_text, run_page, use_local_path


def _chart_data(at, index: int) -> str:
    return at.get("plotly_chart")[index].proto.spec


def test_formats_page_number_granularity_and_preset():
    at = run_page("pages/formats.py")
    assert not at.error, [e.value for e in at.error]
    text = markdown_text(at)
    assert "| FP8 E4M3 |" in text and "3.25" in text  # 3.14159 stored in E4M3
    check = at.info[0].value  # the syllabus check
    assert "14.00 GB" in check and "13.04 GiB" in check and "3.61 GB" in check and "109.38 MB" in check
    at.number_input(key="fmt_value").set_value(1000.0).run()
    assert not at.exception
    after = markdown_text(at)
    assert after != text and "saturated at ±max" in after  # 1000 > 448 in E4M3, > 6 in FP4
    duel_before = _chart_data(at, 3)
    assert "crossover" in duel_before  # the default view marks where INT8 starts to win
    at.radio(key="fmt_gran").set_value("tensor").run()
    assert not at.exception and _chart_data(at, 3) != duel_before
    assert at.query_params["fmt_gran"] == "tensor"
    at.selectbox(key="fmt_arch").set_value("llama-3.1-8b").run()
    assert not at.exception
    assert "8,030,261,248 parameters" in markdown_text(at)


def test_formats_prose_quotes_the_measured_duel():
    at = run_page("pages/formats.py")
    text = " ".join(markdown_text(at).split())
    # Per-token INT8 loses to FP8 on the outlier input; per-channel weights go to INT8 (issue 12, item 2).
    assert "FFN up 42.4 against 31.6 dB" in text and "(31.3 against FP8 33.6 dB)" in text
    assert "Without the [CLS] rows INT8 wins (34.7 against 32.4 dB)" in text
    assert "2^−(m+1) and 2^−m" in text and "MI300 implements only the *FNUZ* variants" in text


@pytest.mark.parametrize("fill", [0.0, float("nan")], ids=["zeros", "nan"])
def test_formats_an_all_zero_or_nan_weight_is_one_line_and_the_rest_still_runs(tmp_path, fill):
    f = tmp_path / "w.safetensors"
    save_file({"proj.weight": torch.full((16, 32), fill)}, str(f))
    at = use_local_path(run_page("pages/formats.py"), str(f))
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and all("\n" not in e for e in errors), errors
    assert any("all zeros" in e or "NaN/Inf" in e for e in errors), errors
    assert "parameters** × bits per parameter" in markdown_text(at)  # the memory calculator below still runs


def test_kv_page_memory_widgets_and_real_kv_table():
    at = run_page("pages/kv_cache.py")
    assert not at.error, [e.value for e in at.error]
    text = markdown_text(at)
    assert "131,072 bytes" in text  # Llama-3.1-8B: 2 × 32 × 8 × 128 × 2
    fits = at.dataframe[0].value.copy()
    at.slider(key="kv_batch").set_value(16).run()
    assert not at.exception
    assert not at.dataframe[0].value.equals(fits)
    assert at.query_params["kv_batch"] == "16"
    at.selectbox(key="kv_arch").set_value("qwen2.5-7b").run()
    assert "4 KV heads" in markdown_text(at)
    errors = at.dataframe[1].value
    assert len(errors) == 9 and (errors["K SQNR (dB)"] > 0).all()
    channels = _chart_data(at, 2)
    at.slider(key="kv_head").set_value(5).run()
    assert not at.exception and _chart_data(at, 2) != channels


def test_kv_prose_states_softmax_sensitivity_with_the_attention_weighted_mean():
    shown, deeper = lab_ui.lesson_text("kv_cache", "harder")
    assert "dp_i ≈ p_i(δ_i − Σ_j p_j δ_j)" in deeper and "attention-weighted" in deeper
    assert "mean δ" not in shown + deeper  # the plain mean was the error (issue 12, item 11)
