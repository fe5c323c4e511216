"""The Granularity and Storage lessons run, react to their widgets and handle shipped configs."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from quantlab.core.spec import QuantSpec
from quantlab.io import sizing
from tests.app.apptest_util import markdown_text, run_page, use_local_path


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


def _export_buttons(at) -> list:
    """The checkpoint download, not the charts' own "Data (CSV)" buttons."""
    return [b for b in at.get("download_button") if b.proto.label != "Data (CSV)"]


def test_storage_lesson_on_the_embedded_file_and_a_shipped_config() -> None:
    at = _page("pages/storage.py")
    total = at.metric[0].value
    assert "MB" in total
    import json

    ladder = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "by granularity" in c.proto.spec)
    assert any("g256" in x and "30 of 36 layers stay unquantized" in x for x in ladder["data"][0]["x"])
    text = " ".join(markdown_text(at).split())
    assert "adds 0.25 bits per quantized weight here (32-bit scales)" in text and "{" not in text
    assert _export_buttons(at), "the embedded model can be exported"
    at.select_slider(key="storage_g").set_value(32).run()
    assert at.metric[0].value != total
    at.selectbox(key="storage_arch").set_value("llama-3.1-8b").run()
    assert not at.exception
    g32 = sizing.model_size("llama-3.1-8b", QuantSpec.preset("W4A16").with_(group_size=32))
    assert at.metric[0].value == sizing.format_bytes(g32.total_bytes) == "6.03 GB"
    assert not _export_buttons(at) and any("no weights" in i.value for i in at.info)
    at.selectbox(key="storage_scheme").set_value("w8a8").run()
    assert not at.exception and at.metric[0].value.endswith("GB")
    claims = at.dataframe[-1].value
    assert list(claims["verdict"]) == ["holds", "off", "off", "holds"]


@pytest.mark.parametrize("name,weight", [
    ("zeros", torch.zeros(16, 64)),  # every scale 0: no median range, no log colour
    ("7x13", torch.randn(7, 13)),  # fewer than 96 columns, and 13 is prime
    ("1xn", torch.randn(1, 200)),
    ("nx1", torch.randn(50, 1)),  # one column: no group size but the row itself
    ("constant", torch.full((8, 32), 0.5)),
])
def test_granularity_on_odd_uploads_is_never_a_crash(tmp_path, name: str, weight: torch.Tensor) -> None:
    f = tmp_path / f"{name}.safetensors"
    save_file({"proj.weight": weight}, str(f))
    at = use_local_path(run_page("pages/granularity.py"), str(f))
    assert not at.exception, at.exception
    assert not at.error
    assert at.get("plotly_chart")
    if weight.shape[1] > 1:  # a kept value that still fits stays; 96 on a narrower layer falls back
        custom = at.number_input(key="gran_custom").value
        assert custom <= weight.shape[1] and (weight.shape[1] % custom == 0 or weight.shape[1] >= 96)
    text = markdown_text(at)
    assert "{" not in text and not re.search(r"\bnan\b", text)  # every placeholder filled: a number or a dash


def test_granularity_prose_quotes_the_measured_channel_range() -> None:
    from quantlab.io import models
    from quantlab.lessons import granularity

    w = models.load_tensor(models.ModelSource.embedded(), "encoder.layer.0.intermediate.dense.weight")
    low, median, high = granularity.where_tensor_fails(
        w, QuantSpec(num_bits=4, strategy="group", group_size=128)).fine_range_db()
    text = " ".join(markdown_text(_page("pages/granularity.py")).split())
    assert f"keeps {low:.0f} to {high:.0f} dB (median {median:.0f})" in text
    assert "s = 32" in text  # fp32 MiniLM stores fp32 scales
