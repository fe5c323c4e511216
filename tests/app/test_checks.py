"""Predict-then-reveal checks in the running app: graded live, a right and a wrong answer each."""
import pytest

import lab_ui
from quantlab.io import models
from quantlab.lessons import checks, intro
from tests.app.apptest_util import run_page


def _check_radio(at, topic: str):
    return next(r for r in at.radio if r.key and r.key.startswith(f"check:{topic}:"))


def _reveal(at, radio, choice: str):
    radio.set_value(choice).run()
    at.button(key=radio.key.replace("check:", "reveal:", 1)).click().run()
    assert not at.exception


def test_a_right_answer_and_a_wrong_one_on_the_formats_lesson():
    at = run_page("pages/formats.py")
    w = models.load_tensor(models.ModelSource.embedded(), f"{models.DEFAULT_LAYER}.weight")
    levels = checks.int4_levels_used(w)
    radio = _check_radio(at, "int4-levels")
    assert radio.options == list(levels.options)
    _reveal(at, radio, levels.answer)
    assert any(levels.answer in s.value and s.value.startswith("Right") for s in at.success)

    duel = checks.int8_or_fp8(w, "channel")
    wrong = next(o for o in duel.options if o != duel.answer)
    _reveal(at, _check_radio(at, "int8-or-fp8"), wrong)
    assert any(f"you said {wrong}" in e.value and duel.answer in e.value for e in at.error)
    assert any("2 of 2 answered, 1 right" in c.value for c in at.caption)


def test_a_new_layer_asks_again_and_grades_on_that_layer():
    at = run_page("pages/formats.py")
    radio = _check_radio(at, "int4-levels")
    _reveal(at, radio, radio.options[0])
    other = "encoder.layer.5.output.dense"
    at.selectbox(key="layer").set_value(other).run()
    fresh = _check_radio(at, "int4-levels")
    assert fresh.key != radio.key and fresh.value is None  # not answered yet on this layer
    w = models.load_tensor(models.ModelSource.embedded(), f"{other}.weight")
    assert checks.int4_levels_used(w).key == fresh.key.removeprefix("check:")


def test_the_hand_check_is_asked_of_the_row_on_screen():
    """Row 0's largest weight is negative (the extra code -8), row 1's positive (clamped to +7)."""
    at = run_page("pages/intro.py")
    w = models.load_tensor(models.ModelSource.embedded(), f"{models.DEFAULT_LAYER}.weight")
    answers = []
    for row in (0, 1):
        at.number_input(key="intro_row").set_value(row).run()
        expected = checks.largest_code(intro.by_hand(w, row))
        radio = _check_radio(at, "hand-code")
        assert radio.key == f"check:{expected.key}"
        _reveal(at, radio, expected.answer)
        assert any(s.value.startswith(f"Right: **{expected.answer}**") for s in at.success)
        answers.append(expected.answer)
    assert answers == ["-8", "+7"]


CHECKED_PAGES = [lesson.file for lesson in lab_ui.LESSONS]  # every lesson, a new one included


def _verdicts(at) -> set[tuple[str, bool]]:
    return {(s.value, True) for s in at.success if s.value.startswith("Right")} | \
        {(e.value, False) for e in at.error if e.value.startswith("Measured")}


@pytest.mark.parametrize("page", CHECKED_PAGES, ids=lambda p: p.split("/")[-1][:-3])
def test_every_check_grades_a_right_and_a_wrong_answer(page):
    """Each check on the page (at least two), answered with its first option: the verdict agrees with the
    measured answer it reveals; a fresh session answering that measured answer is graded right."""
    at = run_page(page)
    keys = [r.key for r in at.radio if r.key and r.key.startswith("check:")]
    assert len(keys) >= 2, page  # at least two per lesson
    measured = {}
    for key in keys:
        before = _verdicts(at)
        radio = next(r for r in at.radio if r.key == key)
        chosen = radio.options[0]
        _reveal(at, radio, chosen)
        (text, right), = _verdicts(at) - before
        measured[key] = text.split("**")[1]
        assert right == (chosen == measured[key]) and measured[key] in radio.options
    fresh = run_page(page)
    for key in keys:
        before = _verdicts(fresh)
        _reveal(fresh, next(r for r in fresh.radio if r.key == key), measured[key])
        (_, right), = _verdicts(fresh) - before
        assert right
    n = len(keys)
    assert any(f"{n} of {n} answered, {n} right" in c.value for c in fresh.caption)
