"""Workshop features of the app: presenter view, reset, the copyable link, room mode's limits."""
import streamlit as st

import lab_ui
from tests.app.apptest_util import run_page


def test_presenter_view_folds_the_prose_and_hides_the_sidebar():
    plain = run_page("pages/symmetric.py")
    shown = run_page("pages/symmetric.py", query={"present": "1"})
    assert not plain.exception and not shown.exception
    assert not [e for e in plain.expander if e.label == "Notes"]
    notes = [e for e in shown.expander if e.label == "Notes"]
    assert len(notes) >= 3 and all(n.markdown for n in notes)  # the lesson text is still there, folded
    assert any("stSidebar" in h.proto.body for h in shown.get("html"))
    shown.slider(key="sym_bits").set_value(6).run()  # the presenter flag outlives the URL rewrite
    assert any("stSidebar" in h.proto.body for h in shown.get("html"))


def test_reset_brings_back_the_lessons_defaults_and_story_layer():
    fresh = run_page("pages/symmetric.py")
    defaults = {"sym_bits": fresh.slider(key="sym_bits").value, "sym_log": fresh.toggle(key="sym_log").value,
                "layer": fresh.selectbox(key="layer").value}
    at = run_page("pages/symmetric.py")
    at.selectbox(key="layer").set_value("encoder.layer.3.attention.self.key").run()
    at.slider(key="sym_bits").set_value(7 if defaults["sym_bits"] != 7 else 6).run()
    at.toggle(key="sym_log").set_value(not defaults["sym_log"]).run()
    assert "sym_bits" in at.query_params and "layer" in at.query_params
    at.button(key="reset_lesson").click().run()
    assert not at.exception
    assert {"sym_bits": at.slider(key="sym_bits").value, "sym_log": at.toggle(key="sym_log").value,
            "layer": at.selectbox(key="layer").value} == defaults
    assert "sym_bits" not in at.query_params and "layer" not in at.query_params


def test_copy_link_carries_every_changed_control():
    at = run_page("pages/symmetric.py")
    bits = 6 if at.slider(key="sym_bits").value != 6 else 5
    at.slider(key="sym_bits").set_value(bits).run()
    at.selectbox(key="layer").set_value("encoder.layer.3.attention.self.key").run()
    link = [c.value for c in at.code if c.proto.language != "python" and "symmetric" in c.value]  # not a snippet
    assert len(link) == 1
    path, _, query = link[0].partition("?")
    changed = {f"{k}={v}" for k, v in at.query_params.items()}
    assert path.endswith("/symmetric") and set(query.split("&")) == changed
    assert {f"sym_bits={bits}", "layer=encoder.layer.3.attention.self.key"} <= changed


def test_room_mode_offers_no_server_paths(monkeypatch):
    monkeypatch.setattr(lab_ui, "ROOM", True)
    at = run_page("pages/home.py")
    assert at.radio(key="source_kind").options == ["Embedded MiniLM", "Upload"]
    at = run_page("pages/home.py", query={"source_kind": "local"})  # a crafted link cannot bring it back
    assert at.radio(key="source_kind").value == "embedded" and not at.text_input


def test_room_mode_rate_limits_heavy_runs_per_session(monkeypatch):
    monkeypatch.setattr(lab_ui, "ROOM", True)
    monkeypatch.setattr(lab_ui, "HEAVY_RUNS_PER_MINUTE", 1)
    st.cache_resource.clear()  # runs another test already made would be shared views, not new heavy runs
    at = run_page("pages/compare.py")
    at.multiselect(key="cmp_schemes").set_value(["w4a16-g64", "w8a16-channel"]).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception
    assert any("1 new heavy runs a minute" in e.value for e in at.error)


def test_an_embedding_table_shows_weights_only_on_every_lesson():
    # The sidebar lists every 2-D weight; real inputs exist only for the Linear layers.
    for page in ("pages/symmetric.py", "pages/formats.py", "pages/granularity.py", "pages/clipping.py"):
        at = run_page(page, query={"layer": "embeddings.word_embeddings"})
        assert not at.exception, page
        assert at.selectbox(key="layer").value == "embeddings.word_embeddings"


def test_presenter_steps_through_the_lesson_one_chart_at_a_time():
    plain = run_page("pages/clipping.py")
    charts = [c.proto.spec for c in plain.get("plotly_chart")]
    assert len(charts) >= 3 and not plain.get("progress")  # no step bar outside the presenter view

    shown = run_page("pages/clipping.py", query={"present": "1"})
    seen = []
    for step in range(len(charts)):
        drawn = shown.get("plotly_chart")
        assert len(drawn) == 1 and drawn[0].proto.spec == charts[step]
        assert shown.get("progress")[0].proto.text == f"Step {step + 1} of {len(charts)}"
        seen.append(drawn[0].proto.spec)
        if step + 1 < len(charts):
            shown.button(key="step_next").click().run()
            assert not shown.exception and shown.query_params["step"] == str(step + 2)
    assert shown.button(key="step_next").disabled and len(set(seen)) == len(charts)
    shown.button(key="step_back").click().run()
    assert shown.get("plotly_chart")[0].proto.spec == charts[-2]

    linked = run_page("pages/clipping.py", query={"present": "1", "step": str(len(charts))})
    assert linked.get("plotly_chart")[0].proto.spec == charts[-1]  # a link opens on its step


def test_a_presented_chart_carries_its_key_number():
    headline = "Best clipping ratio for this tensor"
    shown = run_page("pages/clipping.py", query={"present": "1"})
    assert headline in [m.label for m in shown.metric]  # step 1: the clipping curve and its number
    assert headline not in [m.label for m in run_page("pages/clipping.py").metric]


def test_every_chart_offers_its_data_as_csv_except_to_a_presenter():
    at = run_page("pages/clipping.py")
    charts, buttons = at.get("plotly_chart"), at.get("download_button")
    assert len(charts) >= 3 and len([b for b in buttons if b.proto.label == "Data (CSV)"]) == len(charts)
    shown = run_page("pages/clipping.py", query={"present": "1"})
    assert not [b for b in shown.get("download_button") if b.proto.label == "Data (CSV)"]
