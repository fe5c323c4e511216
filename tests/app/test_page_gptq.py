"""The GPTQ lesson in AppTest: it runs on the real layer, quotes what it measured, and its controls
change the numbers; without real inputs it says why it cannot run."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from tests.app.apptest_util import markdown_text, run_page, use_local_path


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _db(value: str) -> float:
    return float(value.split()[0])


def test_gptq_beats_rtn_on_the_default_layer_and_the_prose_quotes_it() -> None:
    at = run_page("pages/gptq.py")
    assert at.title[0].value.endswith("GPTQ")
    shown = _metrics(at)
    rtn, ours = _db(shown["Layer-output SQNR, RTN"]), _db(shown["Layer-output SQNR, GPTQ"])
    assert ours > rtn + 2, shown  # held-out text: calibrated on the other four
    text = " ".join(markdown_text(at).split())
    assert f"({rtn:.1f} → {ours:.1f} dB)" in text
    assert len(at.get("plotly_chart")) == 1  # the ten-run calibration sweeps wait for their toggle
    at.toggle(key="gptq_sweep").set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3 and at.query_params["gptq_sweep"] == "1"


def test_calibrating_on_the_evaluation_text_is_in_sample_and_scores_higher() -> None:
    at = run_page("pages/gptq.py")
    held_out = _db(_metrics(at)["Layer-output SQNR, GPTQ"])
    at.selectbox(key="gptq_calib").set_value("general").run()
    assert not at.exception
    assert at.query_params["gptq_calib"] == "general"
    assert _db(_metrics(at)["Layer-output SQNR, GPTQ"]) > held_out + 3


def test_act_order_and_a_coarser_scheme_change_the_result() -> None:
    at = run_page("pages/gptq.py", query={"gptq_scheme": "w4a16-channel"})
    with_order = _metrics(at)["Layer-output SQNR, GPTQ"]
    at.toggle(key="gptq_actorder").set_value(False).run()
    assert not at.exception
    assert _metrics(at)["Layer-output SQNR, GPTQ"] != with_order
    assert at.query_params["gptq_actorder"] == "0"


def test_a_source_without_activations_gets_one_line(tmp_path) -> None:
    path = tmp_path / "one.safetensors"
    save_file({"layer.weight": torch.randn(32, 64)}, str(path))
    at = use_local_path(run_page("pages/gptq.py"), str(path))
    assert any("real inputs" in i.value for i in at.info)
    assert not at.get("plotly_chart")
