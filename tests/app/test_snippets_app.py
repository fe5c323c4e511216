"""Every chart's "Show the code" in the app: run each snippet as a learner would paste it, and find
every number it prints among the numbers its page shows (chart data, tables, metrics, prose).

A snippet that drifts from its page (another layer, a setting left at its default, a renamed
function) prints numbers the page does not show, or fails to run."""
import base64
import contextlib
import io
import json
import re
from decimal import Decimal

import numpy as np
import pytest

import lab_ui
from tests.app.apptest_util import run_page

TIMEOUT = 400  # a page's first run loads the model and captures activations on a shared 2-core machine
# Each lesson away from its defaults, so that a snippet which ignored a setting would print other numbers.
SETTINGS = {
    "symmetric": {"sym_bits": "5", "layer": "encoder.layer.1.attention.self.query"},
    "formats": {"fmt_gran": "tensor", "layer": "encoder.layer.2.output.dense"},
    "granularity": {"gran_sym": "0", "layer": "encoder.layer.3.intermediate.dense"},
    "storage": {"storage_g": "64"},
    "clipping": {"clip_bits": "6", "clip_ratio": "0.7", "clip_sentences": "5"},
    "outliers": {"out_alpha": "0.8", "out_keep": "2"},
    "gptq": {"gptq_damp": "0.05", "gptq_sentences": "10"},
    "kv_cache": {"kv_batch": "4", "kv_layer": "2", "kv_head": "3"},
    "compare": {"cmp_schemes": ["w4a16", "w8a8-static"]},
    "speed": {"speed_m": "64"},
    "choose": {"ch_batch": "16", "ch_context": "65536"},
}
# A number in prose, a label or a formatted cell: "−3.2", "1,234", "4.5e-05" (not the 0 of "layer.0"
# or the 4 of "INT4").
NUMBER = re.compile(r"(?<![\w.])[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?", re.I)
PRECISION = 0.01  # a rounded number on the page stands for a printed one only if it pins it to 1%


def _numbers_in(text: str) -> list[Decimal]:
    found = (Decimal(t.replace(",", "").replace("−", "-")) for t in NUMBER.findall(text))
    return [d for d in found if abs(d.adjusted()) < 300]  # "0x1e999…" in a hex word is no number


def _leaves(node: object, exact: list[float], texts: list[str]) -> None:
    """Every number and every string in a figure's JSON; plotly writes numpy arrays as base64."""
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            exact.extend(np.frombuffer(base64.b64decode(node["bdata"]), dtype=node["dtype"]).astype(float).tolist())
            return
        for child in node.values():
            _leaves(child, exact, texts)
    elif isinstance(node, list):
        for child in node:
            _leaves(child, exact, texts)
    elif isinstance(node, bool):
        return
    elif isinstance(node, int | float):
        exact.append(float(node))
    elif isinstance(node, str):
        texts.append(node)


class PageNumbers:
    """What a page shows: full-precision numbers (chart data, table cells) and rounded ones (text)."""

    def __init__(self, at) -> None:
        exact: list[float] = []
        texts = [e.value for kind in ("markdown", "caption", "info", "success", "warning", "error")
                 for e in getattr(at, kind)]
        texts += [f"{m.label} {m.value} {m.proto.help}" for m in at.metric]
        for chart in at.get("plotly_chart"):
            _leaves(json.loads(chart.proto.spec), exact, texts)
        for frame in at.dataframe:
            table = frame.value
            for column in table.columns:
                cells = table[column].tolist()
                exact += [float(c) for c in cells if isinstance(c, int | float | np.number) and not isinstance(c, bool)]
                texts += [c for c in cells if isinstance(c, str)]
            texts += [str(i) for i in table.index]
        self.exact = np.sort(np.array([v for v in exact if np.isfinite(v)]))
        self.rounded = [d for text in texts for d in _numbers_in(text)]

    def shows(self, v: float) -> bool:
        i = int(np.searchsorted(self.exact, v))
        near = self.exact[max(0, i - 1):i + 1]
        if np.any(np.isclose(near, v, rtol=1e-6, atol=1e-12)):
            return True
        for candidate in (v, 100 * v):  # a share printed as 0.123 is shown as 12.3%
            for d in self.rounded:
                half_step = 0.5 * 10.0 ** d.as_tuple().exponent
                if float(d) == candidate or (abs(float(d) - candidate) <= half_step * (1 + 1e-9)
                                             and half_step <= PRECISION * abs(candidate)):
                    return True
        return False


def _run_snippet(code: str) -> list[float]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {})
    printed = [float(d) for d in _numbers_in(out.getvalue())]
    assert printed, f"the snippet printed no number:\n{code}"
    return printed


def snippets(at) -> list[str]:
    return [c.value for box in at.expander if box.label == lab_ui.CODE_LABEL for c in box.code]


def test_settings_name_real_lessons():
    assert set(SETTINGS) <= {lesson.url for lesson in lab_ui.LESSONS}


@pytest.mark.parametrize("lesson", lab_ui.LESSONS, ids=lambda lesson: lesson.url)
def test_every_chart_has_code_whose_numbers_the_page_shows(lesson):
    page = lesson.file
    at = run_page(page, query=SETTINGS.get(lesson.url), timeout=TIMEOUT)
    codes = snippets(at)
    # Every lesson that draws charts has SETTINGS: none is checked at its defaults alone.
    assert len(codes) == len(at.get("plotly_chart")) and bool(codes) == (lesson.url in SETTINGS)
    seen = PageNumbers(at)
    for code in codes:
        missing = [v for v in _run_snippet(code) if not seen.shows(v)]
        assert not missing, f"{page}: the page shows none of {missing[:5]} that this prints:\n{code}"


def test_a_presenter_sees_no_code():
    at = run_page("pages/symmetric.py", query={"present": "1"})
    assert at.get("plotly_chart") and not snippets(at)
