"""Lesson 0 and the glossary in the app."""
import lab_ui
from quantlab.io import models
from quantlab.lessons import intro
from tests.app.apptest_util import markdown_text, run_page


def test_intro_shows_the_hand_calculation_of_the_chosen_row():
    at = run_page("pages/intro.py")
    at.number_input(key="intro_row").set_value(5).run()
    assert not at.exception and at.query_params["intro_row"] == "5"
    h = intro.by_hand(models.load_tensor(models.ModelSource.embedded(), f"{models.DEFAULT_LAYER}.weight"), 5)
    text = markdown_text(at)
    assert f"**{h.scale:.6f}**" in text and f"**{h.sqnr_db:.1f} dB**" in text and "{" not in text
    table = at.dataframe[1].value
    assert list(table.iloc[:, 3]) == [s.code for s in h.steps]


def test_lessons_link_glossary_terms_to_anchors_that_exist():
    at = run_page("pages/glossary.py")
    anchors = {lab_ui.glossary_anchor(t) for t in lab_ui.glossary_terms()}
    assert {s.proto.anchor for s in at.subheader} == anchors
    linked = lab_ui.link_glossary("Each **scale** and SQNR; `scale` in code and $s$ stay as they are. The scale again.")
    assert linked.count("](/glossary#") == 2 and "`scale`" in linked and "$s$" in linked
    assert linked.endswith("The scale again.")  # only the first mention links
    symmetric = run_page("pages/symmetric.py")
    assert "](/glossary#" in markdown_text(symmetric)
