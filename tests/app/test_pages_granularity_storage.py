"""The Granularity and Storage lessons run, react to their widgets and handle shipped configs."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from quantlab.core.spec import QuantSpec
from quantlab.io import sizing
from tests.app.apptest_util import run_page


def _page(path: str) -> AppTest:
    return run_page(path, timeout=240)


def _chart_titles(at: AppTest) -> list[str]:
    import json

    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_granularity_lesson_reacts_to_widgets() -> None:
    at = _page("pages/granularity.py")
    titles = _chart_titles(at)
    assert any("layer-output SQNR" in t for t in titles)
    assert any("group of 128" in t for t in titles)
    assert any("int32 of weight_packed" in t for t in titles)
    table = at.dataframe[0].value
    assert "INT4 sym g96" in set(table["scheme"])
    at.radio(key="gran_metric").set_value("weights").run()
    assert not at.exception
    assert any(t.endswith("weight SQNR") for t in _chart_titles(at))
    at.select_slider(key="gran_heat_g").set_value(32).run()
    assert any("group of 32" in t for t in _chart_titles(at))
    at.number_input(key="gran_custom").set_value(100).run()  # does not divide 384 or 1536
    assert not at.exception
    assert any("g100" in w.value for w in at.warning)


def test_storage_lesson_on_the_embedded_file_and_a_shipped_config() -> None:
    at = _page("pages/storage.py")
    total = at.metric[0].value
    assert "MB" in total
    assert at.get("download_button"), "the embedded model can be exported"
    at.select_slider(key="storage_g").set_value(32).run()
    assert at.metric[0].value != total
    at.selectbox(key="storage_arch").set_value("llama-3.1-8b").run()
    assert not at.exception
    g32 = sizing.model_size("llama-3.1-8b", QuantSpec.preset("W4A16").with_(group_size=32))
    assert at.metric[0].value == sizing.format_bytes(g32.total_bytes) == "6.03 GB"
    assert not at.get("download_button") and any("no weights" in i.value for i in at.info)
    at.selectbox(key="storage_scheme").set_value("w8a8").run()
    assert not at.exception and at.metric[0].value.endswith("GB")
    claims = at.dataframe[-1].value
    assert list(claims["verdict"]) == ["holds", "off", "off", "holds"]
