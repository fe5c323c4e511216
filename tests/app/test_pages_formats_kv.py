"""The formats and KV-cache lessons run in AppTest, and their widgets change what is shown."""
from tests.app.apptest_util import markdown_text, run_page


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
    at.radio(key="fmt_gran").set_value("channel").run()
    assert not at.exception and _chart_data(at, 3) != duel_before
    assert at.query_params["fmt_gran"] == "channel"
    at.selectbox(key="fmt_arch").set_value("llama-3.1-8b").run()
    assert not at.exception
    assert "8,030,261,248 parameters" in markdown_text(at)


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
