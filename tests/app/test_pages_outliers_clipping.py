"""The Clipping and Outliers lessons in AppTest: they run, and their widgets change what is shown."""
import re

import torch
from safetensors.torch import save_file

from tests.app.apptest_util import run_page, use_local_path


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_clipping_ratio_moves_the_error_and_the_150_example():
    at = run_page("pages/clipping.py")
    assert at.title[0].value.endswith("Clipping & saturation")
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
    at = run_page("pages/clipping.py", query={"clip_cal_layer": "sidebar"})  # intermediate.dense
    table = at.dataframe[0].value
    assert list(table["scale from"])[-1] == "dynamic"
    minmax_sqnr = list(table["SQNR (dB)"])
    at.radio(key="clip_obs").set_value("percentile").run()
    assert not at.exception
    pct_sqnr = list(at.dataframe[0].value["SQNR (dB)"])
    # Percentile clips channel 99 of this layer, whose values are signal: static scales get worse.
    assert all(p < m - 5 for p, m in zip(pct_sqnr[:-1], minmax_sqnr[:-1]))


def test_clipping_calibration_opens_where_the_text_matters_and_quotes_it():
    from quantlab.core.spec import QuantSpec
    from quantlab.lessons import clipping

    at = run_page("pages/clipping.py")
    sqnr = list(at.dataframe[0].value["SQNR (dB)"])
    assert max(sqnr[:-1]) - min(sqnr[:-1]) > 5  # the calibration text decides several dB here
    summary = clipping.summarize(clipping.study(clipping.CALIBRATION_LAYER, "code", QuantSpec(num_bits=8),
                                                clipping.CALIBRATION_SENTENCES), "code")
    text = " ".join(" ".join(m.value for m in at.markdown).split())
    n = summary.numbers()
    assert f"a {n['spread_db']} dB spread" in text and f"beat them by {n['gain_lo']} to {n['gain_hi']} dB" in text
    at.slider(key="clip_sentences").set_value(40).run()
    more = list(at.dataframe[0].value["SQNR (dB)"])
    assert max(more[:-1]) - min(more[:-1]) < max(sqnr[:-1]) - min(sqnr[:-1])  # more text, less luck


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
    rho_static = _metrics(at)["Rank correlation with fp32 (ρ)"]
    at.selectbox(key="out_scheme").set_value("w8a16").run()
    assert not at.exception
    assert float(_metrics(at)["Embedding cosine to fp32"]) > float(cos_static)
    assert float(_metrics(at)["Rank correlation with fp32 (ρ)"]) > float(rho_static)
    at.selectbox(key="out_scheme").set_value("w8a8-static").run()
    at.toggle(key="out_smooth").set_value(True).run()
    assert not at.exception
    assert "SmoothQuant α=0.8" in " ".join(c.value for c in at.caption)


def test_outliers_prose_carries_the_measured_numbers():
    at = run_page("pages/outliers.py")
    text = " ".join(" ".join(m.value.split()) for m in at.markdown)
    assert "channel 99 reaches 28.5, 17× the median" in text
    # Go deeper: α = 0 against no smoothing, both measured on the default static W8A8 view.
    assert "α = 0 scores 17.6 dB" in text and "against 23.9 dB with no smoothing" in text
    prose = re.sub(r"\$\$.*?\$\$", "", text)  # LaTeX keeps its braces
    assert not re.search(r"\{[a-z_0-9]+(:[^}]*)?\}", prose)  # every placeholder filled
    assert "W4 per tensor" in text
    # The outlier is the [CLS] token's: measured, not the "every token" the lesson used to claim.
    assert "median |x| is 28.42 on [CLS]" in text and "against 0.47 on all other tokens" in text


def test_outliers_prose_corrects_alpha_zero_awq_and_llm_int8():
    import lab_ui

    def deeper(section: str, **numbers: object) -> str:
        return " ".join(lab_ui.lesson_text("outliers", section, **numbers)[1].split())

    smooth = deeper("smoothquant", alpha0=1.0, baseline=2.0, w_spread=3.0, ratio=4.0)
    assert "α = 0 leaves the activations alone" not in smooth and "s_j = 1/max|W_j|" in smooth
    awq = deeper("awq", grid_ratio=0.25, grid_loss=0.7)
    assert "quantlab's addition" in awq and "parent block's output" in awq and "clipping" in awq
    mixed = deeper("mixed", threshold_k=4)
    assert "|x| ≥ 6.0" in mixed and "vector-wise INT8" in mixed
    channels = deeper("channels", top=99, top_max=28.5, ratio=17.1, first=28.4, rest=0.47, rest_ratio=6.7)
    assert "massive activations" in channels and "100,000×" in channels


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
    assert any("local causal-LM folder" in i.value for i in at.info)
    assert not at.metric


def test_a_nan_weight_is_one_line_on_the_clipping_page(tmp_path):
    w = torch.randn(16, 32)
    w[2, 3] = float("nan")
    f = tmp_path / "nan.safetensors"
    save_file({"proj.weight": w}, str(f))
    at = use_local_path(run_page("pages/clipping.py"), str(f))
    assert any("NaN/Inf" in e.value and "\n" not in e.value for e in at.error)
