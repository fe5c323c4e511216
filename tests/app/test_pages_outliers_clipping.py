"""The Clipping and Outliers lessons in AppTest: they run, and their widgets change what is shown."""
import torch
from safetensors.torch import save_file

from tests.app.apptest_util import run_page, use_local_path


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_clipping_ratio_moves_the_error_and_the_150_example():
    at = run_page("pages/clipping.py")
    assert at.title[0].value.startswith("✂️")
    before = _metrics(at)
    example = [i.value for i in at.info]
    assert any("150.0" in text and "**127**" in text for text in example), example
    at.slider(key="clip_ratio").set_value(1.0).run()
    assert not at.exception
    after = _metrics(at)
    assert after["Values saturated"] == "0.000%" and before["Values saturated"] != after["Values saturated"]
    assert at.success, "at ratio 1 nothing saturates and the page says so"
    assert at.query_params["clip_ratio"] == "1.0"


def test_clipping_calibration_table_follows_the_observer():
    at = run_page("pages/clipping.py")
    table = at.dataframe[0].value
    assert list(table["scale from"])[-1] == "dynamic"
    minmax_sqnr = list(table["SQNR (dB)"])
    at.radio(key="clip_obs").set_value("percentile").run()
    assert not at.exception
    pct_sqnr = list(at.dataframe[0].value["SQNR (dB)"])
    # Percentile clips channel 99 of this layer, whose values are signal: static scales get worse.
    assert all(p < m - 5 for p, m in zip(pct_sqnr[:-1], minmax_sqnr[:-1]))


def test_clipping_weight_view_has_no_calibration_section():
    at = run_page("pages/clipping.py", query={"clip_tensor": "weight", "clip_bits": "4"})
    assert at.radio(key="clip_tensor").value == "weight"
    assert not at.dataframe
    assert "output row" in " ".join(i.value for i in at.info) + " ".join(s.value for s in at.success)


def test_outliers_alpha_and_scheme_change_the_numbers():
    at = run_page("pages/outliers.py")
    m = _metrics(at)
    assert m["Largest channel"].startswith("#99")
    smooth_before = m["…after SmoothQuant α = 0.50"]
    at.slider(key="out_alpha").set_value(0.8).run()
    assert not at.exception
    assert _metrics(at)["…after SmoothQuant α = 0.80"] != smooth_before
    assert at.query_params["out_alpha"] == "0.8"
    cos_static = _metrics(at)["Embedding cosine to fp32"]
    at.selectbox(key="out_scheme").set_value("w8a16").run()
    assert not at.exception
    assert float(_metrics(at)["Embedding cosine to fp32"]) > float(cos_static)
    at.selectbox(key="out_scheme").set_value("w8a8-static").run()
    at.toggle(key="out_smooth").set_value(True).run()
    assert not at.exception
    assert "SmoothQuant α=0.8" in " ".join(c.value for c in at.caption)


def test_outliers_keeping_layers_in_16_bit_costs_bytes():
    at = run_page("pages/outliers.py")
    before = _metrics(at)["Linear weights"]
    at.slider(key="out_keep").set_value(3).run()
    assert not at.exception
    assert _metrics(at)["Linear weights"] != before
    assert "16-bit" in " ".join(c.value for c in at.caption)
    charts = len(at.get("plotly_chart"))
    at.toggle(key="out_sweep").set_value(True).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == charts + 1



def test_a_users_own_weight_gets_the_clipping_lesson_and_an_outliers_notice(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"proj.weight": torch.randn(48, 64)}, str(f))
    at = use_local_path(run_page("pages/clipping.py"), str(f))
    assert at.radio(key="clip_tensor").options == ["weight"]
    assert at.metric and not at.error
    at = use_local_path(run_page("pages/outliers.py"), str(f))
    assert any("Embedded MiniLM" in i.value for i in at.info)
    assert not at.metric


def test_a_nan_weight_is_one_line_on_the_clipping_page(tmp_path):
    w = torch.randn(16, 32)
    w[2, 3] = float("nan")
    f = tmp_path / "nan.safetensors"
    save_file({"proj.weight": w}, str(f))
    at = use_local_path(run_page("pages/clipping.py"), str(f))
    assert any("NaN/Inf" in e.value and "\n" not in e.value for e in at.error)
