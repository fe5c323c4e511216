"""A copied link restores every control: change each widget of a lesson, then open the URL fresh.

For every lesson the test changes every keyed widget to a valid non-default value (generically,
by widget type), checks that each change reached the URL, then starts a new AppTest session from
exactly those query parameters and checks that every widget shows the same value again.

`SCENARIOS` lists, per page and in order, the keys the test changes. Some controls hide or disable
others (Clipping's calibration section exists only for the input activation, the formats page's
parameter count only for a custom architecture), so a page may need more than one scenario. The
test also asserts that the widgets actually drawn are exactly the keys listed, so a new control
must be added here and a control that disappears, or stops being written to the URL, fails.
"""
from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Button, DownloadButton, FileUploader, Widget

import lab_ui
from tests.app.apptest_util import run_page

# The sidebar's model source is not a lesson control: switching it loads a different model
# (tests/app/test_app.py covers local paths and uploads).
SKIPPED_KEYS = {"source_kind", "source_path", "source_upload"}
SKIPPED_TYPES = (Button, DownloadButton, FileUploader)
# One AppTest run may recompute a whole lesson at once (Outliers: SmoothQuant sweep, AWQ search and
# seven whole-model passes); on a loaded 2-core machine that takes minutes, not AppTest's default.
RUN_TIMEOUT = 600

# page -> scenarios. A scenario starts from the page's defaults and is a list of batches, each a
# list of keys changed together in one run: a batch's values are picked from what the previous run
# drew (options, bounds, defaults), so a control whose options or default follow another control
# comes in a later batch. One run per batch, not per key, keeps the heavy lessons' recomputation
# (whole-model runs, calibration studies) to the final state. (key, value) names the value where
# the generic choice would hide or disable a control of the same scenario.
Batch = list["str | tuple[str, Any]"]
SCENARIOS: dict[str, list[list[Batch]]] = {
    "pages/formats.py": [
        [["layer", "fmt_value", "fmt_logx", "fmt_gran", "fmt_params"]],
        # a shipped architecture replaces the custom parameter count with its own
        [["fmt_arch"]],
    ],
    "pages/symmetric.py": [
        # sym_log's default follows the tensor (log axis on for activations), so it is changed
        # after sym_tensor, against the new default
        [["layer", "sym_tensor", "sym_bits", "sym_mode"], ["sym_log"]],
    ],
    "pages/granularity.py": [
        # the heatmap's group sizes are those dividing the layer's width, plus the custom size
        [["layer", "gran_custom", "gran_metric", "gran_sym"], ["gran_heat_g"]],
    ],
    "pages/storage.py": [
        # an asymmetric group scheme keeps the group-size slider on screen
        [["layer", "storage_arch", ("storage_scheme", "w4a16-asym"), "storage_g", "storage_claims_arch"]],
    ],
    "pages/clipping.py": [
        # the calibration section exists only for the input activation (the default tensor)
        [["layer", "clip_bits", "clip_ratio", "clip_pct", "clip_eval", "clip_obs", "clip_sentences", "clip_cal_layer"]],
        [["clip_tensor"]],
    ],
    "pages/outliers.py": [
        # out_calib and out_smooth are enabled only for a scheme that quantizes activations
        [["layer", "out_mode", "out_alpha", "out_awq", ("out_scheme", "w8a8"), "out_calib", "out_smooth",
          "out_keep", "out_heat", "out_sweep"]],
    ],
    "pages/kv_cache.py": [
        [["layer", "kv_arch", "kv_weights", "kv_batch", "kv_unit", "kv_layer", "kv_head"]],
    ],
    "pages/compare.py": [
        [["layer", "cmp_schemes", "cmp_target"]],
    ],
    "pages/speed.py": [
        # the methods on offer are the picked run's; an architecture's layers replace the sidebar's
        # single layer in speed_layer
        [["layer", "speed_run", "speed_shape", "speed_origin", "speed_m"], ["speed_methods", "speed_layer"]],
    ],
    "pages/gptq.py": [
        [["layer", "gptq_scheme", "gptq_block", "gptq_damp", "gptq_actorder", "gptq_groups", "gptq_eval",
          "gptq_calib", "gptq_sentences", "gptq_sweep"]],
    ],
    "pages/intro.py": [
        [["layer", "intro_row"]],
    ],
    "pages/choose.py": [
        [["layer", "ch_priority", "ch_hw", "ch_arch", "ch_floor", "ch_batch", "ch_context"]],
    ],
}


def test_every_lesson_has_scenarios():
    assert set(SCENARIOS) == {lesson.file for lesson in lab_ui.LESSONS}


@pytest.fixture
def controls(monkeypatch) -> dict[str, dict[str, Any]]:
    """What each lab_ui.control call of the latest run passed: default, options, bounds.

    AppTest shows choice widgets' options only as formatted labels; the page's own control() call
    knows the option values and the default in effect (some defaults follow other controls).
    """
    seen: dict[str, dict[str, Any]] = {}
    real = lab_ui.control

    def spy(widget, label, key, default, options=None, **kwargs):
        seen[key] = {"default": default, "options": None if options is None else list(options), **kwargs}
        return real(widget, label, key, default, options, **kwargs)

    monkeypatch.setattr(lab_ui, "control", spy)
    return seen


def _widgets(at: AppTest) -> dict[str, Widget]:
    """Every keyed, user-settable widget on screen (main area and sidebar), by key."""
    found: dict[str, Widget] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Widget):
            # a check's answer is the learner's own, deliberately not part of a shared link
            if (node.key and node.key not in SKIPPED_KEYS and not node.key.startswith("check:")
                    and not isinstance(node, SKIPPED_TYPES)):
                found[node.key] = node
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return found


def _new_value(widget: Widget, info: dict[str, Any]) -> Any:
    """A valid value other than the current one and other than the default, by widget type.

    Returns the current value when the only other choice is the default (a toggle whose default
    followed another control): it is already non-default, so it is in the URL as it stands.
    """
    current, default = widget.value, info["default"]
    options = info["options"]
    if widget.type == "multiselect":
        chosen = list(current)
        extra = [o for o in options if o not in chosen]
        # drop the last pick and add the first unpicked option: a different, non-empty subset
        new = chosen[:-1] + extra[:1] if extra else chosen[:-1]
        assert new and new != default, widget.key
        return new
    if options is not None:  # radio, selectbox, select_slider, segmented control
        start = options.index(current)
        for step in range(1, len(options)):
            option = options[(start + step) % len(options)]
            if option != default:
                return option
        return current
    if widget.type in ("toggle", "checkbox"):
        return current if current != default else not current
    if widget.type == "slider":
        lo, hi = info["min_value"], info["max_value"]
        return hi if hi not in (current, default) else lo
    if widget.type == "number_input":
        step = info.get("step") or 1
        hi, lo = info.get("max_value"), info.get("min_value")
        up = round(current + step, 10)
        if (hi is None or up <= hi) and up != default:
            return type(current)(up)
        down = round(current - step, 10)
        assert lo is None or down >= lo, widget.key
        return type(current)(down)
    if widget.type == "text_input":
        return f"{current}x"
    raise AssertionError(f"no generic change for {widget.type} {widget.key!r}")


def _values(at: AppTest) -> dict[str, Any]:
    return {key: w.value for key, w in _widgets(at).items()}


# (not named `page`: pytest-playwright's fixture of that name would parametrize it by browser)
@pytest.mark.parametrize("lesson_file", list(SCENARIOS), ids=lambda p: p.split("/")[-1][:-3])
def test_a_link_restores_every_control(lesson_file, controls):
    page = lesson_file
    drawn: set[str] = set()
    listed: set[str] = set()
    for scenario in SCENARIOS[page]:
        at = run_page(page, timeout=RUN_TIMEOUT)
        drawn |= set(_widgets(at))
        changed: dict[str, Any] = {}
        for batch in scenario:
            widgets = _widgets(at)
            for step in batch:
                key, wanted = step if isinstance(step, tuple) else (step, None)
                listed.add(key)
                assert key in widgets, f"{page}: {key} is not on screen (order of SCENARIOS?)"
                widget = widgets[key]
                assert not widget.disabled, f"{page}: {key} is disabled here (order of SCENARIOS?)"
                assert key in controls, f"{page}: {key} is not drawn through lab_ui.control, so not in the URL"
                changed[key] = _new_value(widget, controls[key]) if wanted is None else wanted
                if changed[key] != widget.value:
                    widget.set_value(changed[key])
            at.run()
            assert not at.exception, (page, batch, at.exception)
            drawn |= set(_widgets(at))

        recorded = _values(at)
        for key, value in changed.items():
            # a control changed early must survive the later changes, on screen and non-default
            assert recorded.get(key) == value, (page, key, recorded.get(key), value)
            assert value != controls[key]["default"], (page, key, "the test picked the default")
            assert key in at.query_params, f"{page}: {key}={value!r} is not in the URL {at.query_params}"

        fresh = run_page(page, query=dict(at.query_params), timeout=RUN_TIMEOUT)
        restored = _values(fresh)
        assert restored.keys() == recorded.keys(), (page, restored.keys() ^ recorded.keys())
        for key, value in recorded.items():
            assert restored[key] == value, (
                f"{page}: link {dict(at.query_params)} restores {key}={restored[key]!r}, not {value!r}")
        assert fresh.query_params == at.query_params, page
    # the list above names every control the page draws: new or vanished controls fail here
    assert drawn == listed, (page, "drawn but not listed", drawn - listed, "listed but not drawn", listed - drawn)
