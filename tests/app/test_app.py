"""Every page runs in AppTest without an exception, and widgets change what is shown."""
import pytest
import torch
from safetensors.torch import save_file

import lab_ui
from tests.app.apptest_util import markdown_text as _text
from tests.app.apptest_util import run_page as _app
from tests.app.apptest_util import use_local_path


@pytest.mark.parametrize("lesson", lab_ui.LESSONS, ids=lambda lesson: lesson.url)
def test_every_lesson_runs(lesson):
    at = _app(lesson.file)
    assert at.title, "a lesson starts with its title"
    assert not at.error, [e.value for e in at.error]


def test_home_links_every_lesson():
    at = _app()
    links = at.get("page_link")
    assert len(links) == len(lab_ui.LESSONS)
    assert "quantlab" in _text(at)


def test_symmetric_bits_change_the_numbers_and_the_url():
    at = _app("pages/symmetric.py")
    before = _text(at)
    assert "256 levels" in before  # the lesson opens at 8 bits
    at.slider(key="sym_bits").set_value(6).run()
    assert not at.exception
    after = _text(at)
    assert "64 levels" in after and after != before
    assert at.query_params["sym_bits"] == "6"


def test_symmetric_opens_on_its_story_where_asymmetric_wins():
    at = _app("pages/symmetric.py")
    # the lesson's story: the post-GELU input of output.dense at 8 bits, with nothing in the URL
    assert at.selectbox(key="layer").value == "encoder.layer.0.output.dense"
    assert at.radio(key="sym_tensor").value == "input" and at.slider(key="sym_bits").value == 8
    assert not {"layer", "sym_tensor", "sym_bits"} & set(at.query_params)
    table = at.dataframe[0].value
    sqnr = table.loc[table.index[0]]
    # post-GELU values are one-sided: the symmetric grid wastes ~half its levels, about one bit (6 dB)
    assert float(sqnr["asymmetric"]) > float(sqnr["symmetric"]) + 4


def test_url_state_restores_the_view():
    at = _app("pages/symmetric.py",
              query={"sym_bits": "3", "sym_tensor": "input", "layer": "encoder.layer.1.output.dense"})
    assert at.slider(key="sym_bits").value == 3
    assert at.radio(key="sym_tensor").value == "input"
    assert at.selectbox(key="layer").value == "encoder.layer.1.output.dense"


# -- bad input reaches the UI as one line, and the app keeps working ------------------------------


def test_not_safetensors_file_is_one_line_and_app_goes_on(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    at = use_local_path(_app("pages/symmetric.py"), str(bad))
    messages = [e.value for e in at.sidebar.error]
    assert any("not a safetensors file" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert at.title  # the lesson still rendered, on the embedded model


def test_truncated_file(tmp_path):
    good = tmp_path / "w.safetensors"
    save_file({"layer.weight": torch.randn(64, 64)}, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    at = use_local_path(_app("pages/symmetric.py"), str(cut))
    assert any("truncated" in e.value for e in at.sidebar.error)


def test_nan_tensor_gets_a_message_in_the_page(tmp_path):
    w = torch.randn(32, 64)
    w[3, 5] = float("nan")
    w[4, 6] = float("inf")
    f = tmp_path / "nan.safetensors"
    save_file({"layer.weight": w}, str(f))
    at = use_local_path(_app("pages/symmetric.py"), str(f))
    assert any("NaN/Inf" in e.value for e in at.error)
    at.radio(key="source_kind").set_value("embedded").run()  # and the session recovers
    assert not at.error and not at.exception


def test_all_zero_tensor_quantizes_to_zero(tmp_path):
    f = tmp_path / "zeros.safetensors"
    save_file({"layer.weight": torch.zeros(16, 64)}, str(f))
    at = use_local_path(_app("pages/symmetric.py"), str(f))
    assert not at.error
    assert "[0, 0]" in _text(at)


def test_file_without_matrices(tmp_path):
    f = tmp_path / "vec.safetensors"
    save_file({"norm.weight": torch.ones(64)}, str(f))
    at = use_local_path(_app("pages/symmetric.py"), str(f))
    assert any("no 2-D weight matrix" in e.value for e in at.sidebar.error)


@pytest.mark.parametrize("lesson", lab_ui.LESSONS, ids=lambda lesson: lesson.url)
def test_every_lesson_reroutes_a_deep_link_through_the_router(lesson):
    """A first request straight to a lesson must still get app.py's sidebar (see lab_ui.routed)."""
    source = (lab_ui.ROOT / lesson.file).read_text()
    assert "lab_ui.selection()" in source or "lab_ui.routed()" in source
