"""Streamlit helpers shared by the lessons: the sidebar picker, URL state, cached data, errors.

Lessons stay thin (widgets -> quantlab -> figure); what every page needs the same way lives here.
The engine (`quantlab`) never imports Streamlit; this module is the only bridge.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

import plotly.graph_objects as go
import streamlit as st
import torch
from streamlit import config as st_config
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from quantlab.core.errors import QuantlabError
from quantlab.io import captures, models, sizing, uploads
from quantlab.lessons import checks, symmetric, warmup
from quantlab.viz import style

ROOT = Path(__file__).resolve().parent
T = TypeVar("T")


def routed() -> None:
    """Make sure a lesson runs inside app.py (router, sidebar, page config), never on its own.

    Streamlit treats an app with a `pages/` folder as a legacy multipage app until a script calls
    `st.navigation`; a deep link (/symmetric?bits=3) as the first request of a fresh server (and
    every AppTest rerun) then runs the page file directly. Switching that flag off and rerunning
    sends the request through app.py like every other.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


@dataclass(frozen=True)
class Lesson:
    file: str
    title: str
    icon: str
    blurb: str
    # The layer the lesson's point shows best on: its default and where "Reset this lesson" goes.
    story_layer: str = models.DEFAULT_LAYER

    @property
    def url(self) -> str:
        """The page's address is its file name, which is also how AppTest's switch_page finds it."""
        return Path(self.file).stem


# The syllabus, in teaching order: app.py builds the navigation from it and the home page links it.
LESSONS: list[Lesson] = [
    Lesson("pages/intro.py", "Why and what", ":material/lightbulb:",
           "Why models are quantized, what can be (weights, activations, KV cache), and eight real weights by hand."),
    Lesson("pages/formats.py", "Precision formats", ":material/numbers:",
           "FP32 to FP4, INT8, INT4 and NF4 down to their bits; FP8 against INT8 on real tensors; model memory."),
    Lesson("pages/symmetric.py", "Symmetric vs asymmetric", ":material/balance:",
           "One scale or a scale plus a zero point: which grid fits weights, which fits activations.",
           story_layer=symmetric.STORY[0]),
    Lesson("pages/granularity.py", "Granularity", ":material/grid_view:",
           "Per-tensor, per-channel or groups of 32-256: error on real layers against bits per weight; bit packing."),
    Lesson("pages/storage.py", "Storage & size", ":material/inventory_2:",
           "Every byte of a compressed-tensors checkpoint; exact sizes of Llama, Qwen, Mistral; download one."),
    Lesson("pages/clipping.py", "Clipping & saturation", ":material/content_cut:",
           "Rounding error against saturation error on real tensors; observers; static vs dynamic calibration."),
    Lesson("pages/outliers.py", "Outliers", ":material/bolt:",
           "Outlier channels in real activations; SmoothQuant, AWQ, mixed precision; the whole model quantized."),
    Lesson("pages/gptq.py", "GPTQ", ":material/tune:",
           "Columns quantized one by one with the error fed forward: GPTQ against RTN on a real layer's output."),
    Lesson("pages/kv_cache.py", "KV cache", ":material/memory:",
           "Cache memory against context on real architectures; FP8/INT8/INT4 on real keys and values."),
    Lesson("pages/compare.py", "What if…", ":material/compare_arrows:",
           "Your schemes side by side: error on real weights and activations against checkpoint size."),
    Lesson("pages/speed.py", "Speed", ":material/speed:",
           "Measured GPU kernels: when 4-bit beats bf16, the roofline, and why int4 can be slower than fp16."),
    Lesson("pages/choose.py", "Choose a scheme", ":material/checklist:",
           "Your priority and hardware in, a scheme out, with the lab's measurements as its reason; recipes."),
]


def title(page_file: str) -> None:
    """The lesson's title with its icon, from LESSONS (one place for both); pages pass __file__."""
    lesson = next(lesson for lesson in LESSONS if lesson.url == Path(page_file).stem)
    st.title(f"{lesson.icon} {lesson.title}")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a user's mistake as one line and stop this page's run; the session goes on."""
    try:
        yield
    except QuantlabError as err:
        st.error(str(err), icon=":material/warning:")
        st.stop()


DEEPER = "### Go deeper"


@functools.lru_cache(maxsize=32)
def _lesson_sections(name: str) -> dict[str, str]:
    text = (ROOT / "assets" / "lessons" / f"{name}.md").read_text()
    sections = {}
    for part in text.split("\n## "):
        heading, _, body = part.partition("\n")
        sections[heading.strip().lstrip("# ").strip()] = body.strip()
    return sections


def lesson_text(name: str, section: str, **numbers: object) -> tuple[str, str]:
    """One '## section' of assets/lessons/<name>.md as (shown, deeper): the part before its
    '### Go deeper' line and the part after. `{placeholders}` are filled from `numbers`, so a
    figure in the prose is the one just measured, never a typed copy of it."""
    sections = _lesson_sections(name)
    if section not in sections:
        raise KeyError(f"no section {section!r} in {name}.md")
    text = sections[section].format_map(numbers) if numbers else sections[section]
    shown, _, deeper = text.partition(DEEPER)
    return shown.strip(), deeper.strip()


def lesson_section(name: str, section: str, link_terms: bool = True, **numbers: object) -> None:
    """Render one section of a lesson's prose, so it can sit between charts: what to look at in
    view, the rest folded under "Go deeper"; the first mention of each glossary term links to its
    entry. A presenter shows the chart and its number; the prose folds away under "Notes"."""
    shown, deeper = lesson_text(name, section, **numbers)
    if link_terms:
        shown, deeper = link_glossary(shown), link_glossary(deeper)
    if presenting():
        with st.expander("Notes"):
            st.markdown(shown + ("\n\n" + deeper if deeper else ""))
        return
    if shown:
        st.markdown(shown)
    if deeper:
        with st.expander("Go deeper"):
            st.markdown(deeper)


# -- glossary -------------------------------------------------------------------------------------
# assets/lessons/glossary.md holds one section per term; every lesson's prose links a term's first
# mention (outside code, formulas and existing links) to the glossary page's anchor for it.
GLOSSARY_PAGE = "glossary"
_PROTECTED = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\[[^\]]*\]\([^)]*\)|^#+ .*$", re.S | re.M)


def glossary_terms() -> list[str]:
    return list(_lesson_sections("glossary"))


def glossary_anchor(term: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")


@functools.lru_cache(maxsize=1)
def _term_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((term, re.compile(rf"(?<![\w-])({re.escape(term)})(?![\w-])", re.I)) for term in glossary_terms())


@functools.lru_cache(maxsize=1024)  # pure, and asked for every section of every rerun
def link_glossary(text: str) -> str:
    """`text` with the first mention of each glossary term linked to its glossary entry."""
    if not text:
        return text
    pieces, last = [], 0
    for m in _PROTECTED.finditer(text):
        pieces += [(text[last:m.start()], True), (m.group(0), False)]
        last = m.end()
    pieces.append((text[last:], True))
    linked: set[str] = set()
    out = []
    for piece, free in pieces:
        if free:
            for term, pattern in _term_patterns():
                if term in linked:
                    continue
                piece, n = pattern.subn(rf"[\1](/{GLOSSARY_PAGE}#{glossary_anchor(term)})", piece, count=1)
                if n:
                    linked.add(term)
        out.append(piece)
    return "".join(out)


# -- room, presenter, reset, link -----------------------------------------------------------------
# Room mode is one environment setting for instructors (QUANTLAB_ROOM=1, which deploy/serve.py
# --room sets): no server paths in the sidebar and heavy runs rate-limited per session. Uploads are
# validated, kept per session and capped in every mode (quantlab.io.uploads).
ROOM = os.environ.get("QUANTLAB_ROOM", "0") not in ("", "0")
PRESENT_STYLE = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none;}
.stMainBlockContainer {font-size: 1.3rem; max-width: 100%;}
.stMainBlockContainer h1 {font-size: 3rem;} [data-testid="stMetricValue"] {font-size: 3rem;}
</style>"""


HEAVY_RUNS_PER_MINUTE = 4


def spend_heavy_run(what: str) -> None:
    """Room mode: each session may start a few heavy runs (whole-model passes, live timing) a
    minute, so one participant cannot queue the server for everyone. Call it where the work
    really happens (inside the cached function), so repeating a cached view costs nothing."""
    if not ROOM:
        return
    now = time.monotonic()
    recent = [s for s in st.session_state.get("heavy_runs", []) if now - s < 60]
    if len(recent) >= HEAVY_RUNS_PER_MINUTE:
        wait = 60 - (now - recent[0])
        raise QuantlabError(f"{what}: this room allows {HEAVY_RUNS_PER_MINUTE} new heavy runs a minute per "
                            f"person; try again in {wait:.0f} s (views already computed stay instant)")
    st.session_state["heavy_runs"] = [*recent, now]


def presenting() -> bool:
    """Presenter view (?present=1): kept for the whole session, since a page switch clears the URL."""
    if st.query_params.get("present") == "1":
        st.session_state["present"] = True
    elif st.query_params.get("present") == "0":
        st.session_state["present"] = False
    return bool(st.session_state.get("present"))


def _reset_lesson() -> None:
    for key in st.session_state.get("control_keys", ()):
        if key not in ("source_kind", "source_path"):
            st.session_state.pop(key, None)
    present = st.query_params.get("present")
    st.query_params.clear()
    if present:
        st.query_params["present"] = present


def view_link(page_path: str) -> str:
    """The address of this exact view: app URL, page and every control's query parameter."""
    base = (st.context.url or "").rstrip("/")
    query = urlencode([(key, value) for key in st.query_params for value in st.query_params.get_all(key)])
    return f"{base}/{page_path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Frame:
    """Slots drawn before the lesson runs and filled after it (when its controls and charts are
    known): the sidebar's link and, for a presenter, the step bar above the lesson."""
    page_path: str
    link: DeltaGenerator
    steps: DeltaGenerator | None


def finish_page(frame: Frame) -> None:
    """After the lesson ran (so every control wrote its URL key): the sidebar's copyable link, and
    the presenter's step bar."""
    if frame.steps is not None:
        _step_bar(frame.steps, st.session_state.get("charts_seen", 0))
    _check_progress(st.container())
    with frame.link.expander("Copy link to this view", icon=":material/link:"):
        st.code(view_link(frame.page_path), language=None, wrap_lines=True)
        st.caption("Everyone who opens it sees this lesson with the same layer and settings.")


# -- presenter steps ------------------------------------------------------------------------------
# A presenter walks a lesson one chart at a time: ?present=1 draws only the chart of the current
# step (?step=N, so a link opens on it), with its key number above it; the rest of the lesson's
# charts are not even built.

def current_step() -> int:
    """The presenter's step on this page, from 0; a page switch clears the URL and starts at 0."""
    raw = st.query_params.get("step", "1")
    return int(raw) - 1 if raw.isdigit() and int(raw) >= 1 else 0


def _go_to_step(step: int) -> None:
    if step:
        st.query_params["step"] = str(step + 1)
    elif "step" in st.query_params:
        del st.query_params["step"]


def _step_bar(slot: DeltaGenerator, total: int) -> None:
    if total < 2:
        return
    step = min(current_step(), total - 1)
    back, where, forward = slot.columns([1, 3, 1], vertical_alignment="center")
    back.button("Previous", icon=":material/arrow_back:", key="step_back", disabled=step == 0,
                on_click=_go_to_step, args=(step - 1,), width="stretch")
    where.progress((step + 1) / total, text=f"Step {step + 1} of {total}")
    forward.button("Next", icon=":material/arrow_forward:", key="step_next", disabled=step == total - 1,
                   on_click=_go_to_step, args=(step + 1,), width="stretch")


def _presented_now() -> bool:
    """For a chart about to be drawn: whether it is the presenter's current step (counting it)."""
    index = st.session_state.get("charts_seen", 0)
    st.session_state["charts_seen"] = index + 1
    return index == current_step()


# -- predict, then reveal ---------------------------------------------------------------------
# A check asks about the data on screen; the learner commits to an answer, then sees the measured
# one (quantlab.lessons.checks grades it live). Answers stay in the session; the room's tally per
# question (counts only, no names) is what a presenter sees in place of the question's widget.

@st.cache_resource(show_spinner=False)
def _room_tally() -> tuple[threading.Lock, dict[str, dict[str, int]]]:
    return threading.Lock(), {}


def room_tally(topic: str) -> dict[str, int]:
    lock, tally = _room_tally()
    with lock:
        return dict(tally.get(topic, {}))


def _answer(item: checks.Check) -> None:
    choice = st.session_state.get(f"check:{item.key}")
    if choice is None:
        return
    st.session_state.setdefault("answers", {})[item.key] = (choice, item.is_right(choice))
    lock, tally = _room_tally()
    with lock:
        counts = tally.setdefault(item.topic, {})
        counts[choice] = counts.get(choice, 0) + 1


@st.cache_resource(max_entries=1024, show_spinner=False)
def _check(key: tuple, _build: Callable[..., checks.Check | None], _args: tuple) -> checks.Check | None:
    return _build(*_args)


def check(build: Callable[..., checks.Check | None], *args: object, key: tuple | None = None,
          where: DeltaGenerator | None = None) -> None:
    """Ask the question `build(*args)` makes of the data on screen (cached under `key`, as `chart`
    is; nothing when it does not apply), then reveal the measured answer."""
    item = _check((build.__module__, build.__qualname__, *(args if key is None else key)), build, args)
    if item is None:
        return
    st.session_state.setdefault("checks_seen", []).append(item.key)
    box = (where or st).container(border=True)
    box.markdown(f"**Predict first:** {item.question}")
    if presenting():
        counts = room_tally(item.topic)
        total = sum(counts.values())
        spread = " · ".join(f"{o}: {counts.get(o, 0)}" for o in item.options)
        box.caption(f"The room so far ({total} answers): {spread}")
        with box.expander("Answer"):
            st.markdown(f"**{item.answer}** — {item.why}")
        return
    answered = st.session_state.get("answers", {}).get(item.key)
    box.radio("Your answer", item.options, index=None, key=f"check:{item.key}", horizontal=True,
              label_visibility="collapsed", disabled=answered is not None)
    if answered is None:
        box.button("Reveal the measured answer", key=f"reveal:{item.key}", on_click=_answer, args=(item,),
                   disabled=st.session_state.get(f"check:{item.key}") is None)
    elif answered[1]:
        box.success(f"Right: **{item.answer}**. {item.why}", icon=":material/check_circle:")
    else:
        box.error(f"Measured: **{item.answer}** (you said {answered[0]}). {item.why}", icon=":material/cancel:")


def _check_progress(slot: DeltaGenerator) -> None:
    seen = st.session_state.get("checks_seen", [])
    if not seen:
        return
    answers = st.session_state.get("answers", {})
    done = [answers[k] for k in seen if k in answers]
    slot.caption(f"Checks on this page: {len(done)} of {len(seen)} answered, "
                 f"{sum(right for _, right in done)} right.")


# -- figures, built once per server ---------------------------------------------------------------
# Building a Plotly figure (go.Figure validates every property it is given) was the largest part of
# a warm rerun on a real server; the figure for a given view is the same for every learner, so it
# is built once per process and shared. st.plotly_chart only serialises it.

@st.cache_resource(max_entries=2048, show_spinner=False)
def _figure(key: tuple, _build: Callable[..., go.Figure], _args: tuple) -> go.Figure:
    return _build(*_args)


def chart(build: Callable[..., go.Figure], *args: object, key: tuple | None = None,
          where: DeltaGenerator | None = None, headline: tuple[str, str] | None = None,
          code: str | None = None) -> None:
    """Draw `build(*args)`, cached under `key`: the small inputs (slugs, layer, controls) that decide
    the figure. Without a key the arguments themselves are the key, so they must be small values.
    `headline` is the chart's key number (label, value), shown large above it for a presenter;
    `code` the quantlab calls behind its numbers (quantlab.lessons.snippets), folded under it."""
    if presenting() and not _presented_now():
        return
    cache_key = (build.__module__, build.__qualname__, *(args if key is None else key))
    figure = _figure(cache_key, build, args)
    target = where or st
    if presenting() and headline:
        target.metric(*headline)
    target.plotly_chart(figure, width="stretch")
    if not presenting():
        # The data and the code behind it share one row under the chart: two lines folded to one.
        row = target.container(horizontal=True, vertical_alignment="top")
        # Built only when clicked (a callable): a rerun sends a button, not the data.
        row.download_button("Data (CSV)", data=functools.partial(style.figure_csv, figure),
                            file_name=f"{build.__name__}.csv", mime="text/csv", on_click="ignore",
                            key=f"csv:{hashlib.sha1(repr(cache_key).encode()).hexdigest()[:12]}",
                            type="tertiary", icon=":material/download:")
        if code:
            show_code(row, code)


CODE_LABEL = "Show the code"


def show_code(where: DeltaGenerator, code: str) -> None:
    """A chart's snippet, copyable, folded so that it costs one line until a learner opens it."""
    with where.expander(CODE_LABEL, icon=":material/code:"):
        st.code(code, language="python", wrap_lines=True)


# -- URL state ------------------------------------------------------------------------------------
# Every control of every lesson lives in the address bar under its widget key, so a copied link
# restores the whole view. Choice widgets carry str(option): options are slugs or numbers, and
# labels come from `format_func`, so renaming a label never breaks a shared link. Streamlit's own
# `bind="query-params"` writes the *formatted* label into the URL, which is why this helper exists.

def _decode(raw: str | list[str] | None, default: T, options: Sequence[T] | None, kwargs: dict) -> T:
    """The value a URL parameter names, or `default` when it is missing or not a valid value."""
    if raw is None:
        return default
    if options is not None:
        by_text = {str(opt): opt for opt in options}
        if isinstance(default, list):
            return [by_text[r] for r in raw if r in by_text] or default  # type: ignore[return-value]
        return by_text.get(str(raw), default)
    try:
        if isinstance(default, bool):
            return {"1": True, "0": False}[str(raw)]  # type: ignore[return-value]
        if isinstance(default, (int, float)):
            value = type(default)(str(raw))
            return value if value == value and _in_bounds(value, kwargs) else default  # type: ignore[return-value]
    except (KeyError, ValueError):
        return default
    return str(raw)  # type: ignore[return-value]


def _encode(value: object) -> str | list[str]:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _in_bounds(value: object, kwargs: dict) -> bool:
    """Inside the widget's min_value/max_value, where it has them."""
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    return (lo is None or value >= lo) and (hi is None or value <= hi)  # type: ignore[operator]


def _valid(value: object, default: T, options: Sequence[T] | None, kwargs: dict) -> bool:
    """Whether a kept value still fits the widget (options and bounds can change with the layer)."""
    if options is None:
        return _in_bounds(value, kwargs)
    if isinstance(default, list):
        return isinstance(value, list) and all(v in options for v in value)
    return value in options


def control(widget: Callable[..., object], label: str, key: str, default: T,
            options: Sequence[T] | None = None, **kwargs: object) -> T:
    """Draw `widget` (st.slider, st.radio, ... or a column's) bound to ?key=… in the URL.

    The first run of a session takes the value from the URL (a shared link), later runs keep what
    the learner or a button set; the URL is rewritten only when the value differs from `default`.
    """
    st.session_state.setdefault("control_keys", set()).add(key)
    if key not in st.session_state or not _valid(st.session_state[key], default, options, kwargs):
        st.session_state[key] = _decode(_url_value(key, default), default, options, kwargs)
    if options is not None:
        kwargs["options"] = options
    value = widget(label, key=key, **kwargs)
    encoded = _encode(value)
    if value == default:
        if key in st.query_params:
            del st.query_params[key]
    elif _url_value(key, default) != encoded:
        st.query_params[key] = encoded
    return value  # type: ignore[return-value]


def _url_value(key: str, default: object) -> str | list[str] | None:
    if isinstance(default, list):
        return st.query_params.get_all(key) if key in st.query_params else None
    return st.query_params.get(key)


# -- model source and layer: the shared sidebar -------------------------------------------------

@dataclass(frozen=True)
class Selection:
    source: models.ModelSource
    layer: str  # Linear layer name, e.g. encoder.layer.0.intermediate.dense

    @property
    def weight_name(self) -> str:
        return f"{self.layer}.weight"

    @property
    def has_activations(self) -> bool:
        """Real inputs exist for this layer: a Linear of the embedded model or of a local causal LM
        that ran on the sample text (not an embedding table, not a weights-only file)."""
        return self.layer in captured_layers(self.source)


def captured_layers(source: models.ModelSource) -> frozenset[str]:
    """The layers whose real inputs the lab has for this source (none for weights-only sources, or
    when a decoder cannot be loaded here: the sidebar says why)."""
    if not captures.available(source):
        return frozenset()
    try:
        return frozenset(activations(source))
    except QuantlabError:
        return frozenset()


@st.cache_resource(show_spinner="Loading tensor…", max_entries=64)
def weight(source: models.ModelSource, name: str) -> torch.Tensor:
    """One weight tensor, shared read-only by every session in this process."""
    return models.weight_matrix(source, name)


@st.cache_resource(show_spinner="Running the model on sample text to capture real activations…", max_entries=16)
def activations(source: models.ModelSource | None = None, kind: str = "general") -> dict[str, torch.Tensor]:
    """Every Linear's real input on a shipped text: the embedded model's, or a local causal LM's."""
    return captures.inputs(source, kind)


ACTIVATIONS_FROM = "the embedded model or a local causal-LM folder"


def weights_only_note(sel: Selection) -> None:
    """One line where a lesson falls back to weights because this source has no real inputs."""
    if not sel.has_activations:
        st.caption(f"Real activations come from {ACTIVATIONS_FROM}; {sel.source.label} shows weights here.")


def require_activations(sel: Selection, lesson: str) -> None:
    """Stop a lesson that has nothing to show without real inputs, saying where to get them."""
    if not sel.has_activations:
        st.info(f"{lesson} runs on a layer's real inputs, which the lab captures for {ACTIVATIONS_FROM}: pick "
                "one of those and one of its Linear layers in the sidebar.", icon=":material/info:")
        st.stop()


# Which tensor of a layer a lesson looks at: slug -> label.
TENSORS = {"weight": "weight", "input": "input activation"}


def tensor_choices(sel: Selection) -> list[str]:
    """Weights always; the real input only where the lab captured activations."""
    return list(TENSORS) if sel.has_activations else ["weight"]


def layer_tensor(source: models.ModelSource, layer: str, tensor: str) -> torch.Tensor:
    """The layer's weight matrix ("weight"), or the real input it receives on the sample text
    ("input"; captured for the embedded model and local causal LMs)."""
    if tensor == "weight":
        return weight(source, f"{layer}.weight")
    return activations(source)[layer]


@st.cache_resource(show_spinner=False)
def _warm_up() -> threading.Thread:
    """Compute what the default views need in the background, once per process, while the first
    visitor reads the welcome page (see quantlab.lessons.warmup)."""
    stop = threading.Event()
    thread = threading.Thread(target=warmup.warm_default_views, kwargs={"stop": stop}, name="quantlab-warm-up",
                              daemon=True)
    thread.start()
    atexit.register(_finish_warm_up, thread, stop)
    return thread


def _finish_warm_up(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(timeout=120)


UPLOAD_SWEEP_S = 10.0


def _connected(session_id: str) -> bool:
    runtime = Runtime.instance() if Runtime.exists() else None
    return runtime is None or runtime.is_active_session(session_id)


def _sweep_uploads(store: uploads.UploadStore) -> None:
    # A closed tab's session may come back within Streamlit's reconnect grace period; after it,
    # Streamlit forgets the session and its uploads go too.
    grace = float(st_config.get_option("server.disconnectedSessionTTL"))
    while True:
        time.sleep(UPLOAD_SWEEP_S)
        store.sweep(_connected, grace)


@st.cache_resource(show_spinner=False)
def upload_store() -> uploads.UploadStore:
    store = uploads.UploadStore()
    threading.Thread(target=_sweep_uploads, args=(store,), name="quantlab-upload-sweep", daemon=True).start()
    return store


def _session_uploads() -> uploads.SessionUploads:
    """This session's upload folder (quantlab.io.uploads): private, capped, gone with the session."""
    if "uploads" not in st.session_state or st.session_state["uploads"].closed:
        ctx = get_script_run_ctx()
        st.session_state["uploads"] = upload_store().open_session(ctx.session_id if ctx else "")
    return st.session_state["uploads"]


def uploaded_config(where: DeltaGenerator, key: str) -> str | None:
    """A config.json uploaded in `where`, kept in this session's private folder: the folder's path
    (what the planners take), or None; a bad file is one line there."""
    up = where.file_uploader("A transformers config.json (architecture only, no weights)", type=["json"], key=key)
    if up is None:
        return None
    try:
        return str(_session_uploads().add_config(up.name, up.getvalue()).parent)
    except QuantlabError as err:
        where.error(str(err), icon=":material/warning:")
        return None


SOURCE_KINDS = {"embedded": "Embedded MiniLM", "local": "Local path", "upload": "Upload"}


def _source_from_sidebar() -> models.ModelSource:
    # In a room a server path would let participants probe the server's filesystem.
    kinds = [k for k in SOURCE_KINDS if not (ROOM and k == "local")]
    choice = control(st.sidebar.radio, "Model", "source_kind", "embedded", kinds,
                     format_func=SOURCE_KINDS.get, horizontal=True, help="The embedded model needs no download.")
    if choice == "local":
        path = control(st.sidebar.text_input, "Path to a .safetensors file or HF folder", "source_path", "",
                       help="Or a model id already in the local Hugging Face cache (org/name); nothing is downloaded.")
        if path:
            try:
                return models.ModelSource.local(path)
            except QuantlabError as err:
                st.sidebar.error(str(err), icon=":material/warning:")
    elif choice == "upload":
        up = st.sidebar.file_uploader("A .safetensors file", key="source_upload",
                                      type=["safetensors", *(s.lstrip(".") for s in models.PICKLE_SUFFIXES)],
                                      help=f"One file up to {models.MAX_UPLOAD_BYTES // 2**20} MiB. A sharded model "
                                           "or a causal LM with its tokenizer: use a local folder instead.")
        if up is not None:
            try:
                source = _session_uploads().add(up.file_id, up.name, up.getvalue())
            except QuantlabError as err:
                st.sidebar.error(str(err), icon=":material/warning:")
            else:
                if note := models.shard_note(up.name):
                    st.sidebar.info(note, icon=":material/info:")
                return source
    return models.ModelSource.embedded()


LAYER_LABEL_CHARS = 30  # what the sidebar's box shows before it cuts


def layer_label(name: str) -> str:
    """A layer as the sidebar shows it: the end of a long name, which is the part that tells
    layers apart (…0.intermediate.dense, not encoder.layer.0.interm…)."""
    return name if len(name) <= LAYER_LABEL_CHARS else "…" + name[-(LAYER_LABEL_CHARS - 1):]


def _natural(name: str) -> list[object]:
    """layers.2 before layers.10: block numbers sort as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _layer_names(source: models.ModelSource) -> list[str]:
    return sorted((models.layer_name(t.name) for t in models.list_layers(source)), key=_natural)


def _default_layer(source: models.ModelSource, layers: list[str], story: str) -> str:
    """The lesson's story layer on the embedded model; elsewhere the first layer a scheme would
    quantize (a Llama checkpoint lists lm_head first, the one layer the recipes keep)."""
    blocked = any(sizing.in_scope(name) for name in layers)
    return next((name for name in (story, models.DEFAULT_LAYER) if name in layers), None) or next(
        (name for name in layers if sizing.in_scope(name, blocked=blocked)), layers[0])


def _capture_note(source: models.ModelSource) -> None:
    """For a local causal LM: how long capturing its activations took, or why it could not run."""
    if source.is_embedded or not captures.available(source):
        return
    try:
        layers = activations(source)
        seconds = captures.capture_seconds(source)
    except QuantlabError as err:
        st.sidebar.error(f"Weights only: {err}", icon=":material/warning:")
        return
    st.sidebar.caption(f"Real activations: {len(layers)} Linear inputs captured on sample text in {seconds:.1f} s.")


def sidebar(page_path: str) -> Frame:
    """Model source and layer picker, shown on every page; the choice is kept in the URL.

    Returns the slots `finish_page` fills once the lesson has run."""
    _warm_up()
    st.session_state["charts_seen"] = 0
    st.session_state["checks_seen"] = []
    steps = None
    if presenting():
        st.html(PRESENT_STYLE)
        steps = st.container()
    source = _source_from_sidebar()
    try:
        layers = _layer_names(source)
        if not layers:
            raise QuantlabError(f"{source.label} has no 2-D weight matrix to quantize; showing the embedded model.")
    except QuantlabError as err:
        st.sidebar.error(str(err), icon=":material/warning:")
        source = models.ModelSource.embedded()
        layers = _layer_names(source)
    story = next((lesson.story_layer for lesson in LESSONS if lesson.url == page_path), models.DEFAULT_LAYER)
    default = _default_layer(source, layers, story)
    layer = control(st.sidebar.selectbox, "Layer", "layer", default, layers, format_func=layer_label,
                    help="A Linear layer's weight matrix [out, in].")
    info = models.list_tensors(source)[f"{layer}.weight"]
    rows, cols = models.matrix_shape(source, info.name)
    st.sidebar.caption(f"{source.label} · `{layer}` · {rows}×{cols} {info.dtype} · {info.numel:,} weights"
                       + (" (GPT-2's Conv1D stores it [in, out])" if models.stored_transposed(source, info.name)
                          else ""))
    _capture_note(source)
    st.session_state["selection"] = Selection(source, layer)
    st.sidebar.button("Reset this lesson", on_click=_reset_lesson, icon=":material/restart_alt:", key="reset_lesson",
                      help="Back to the lesson's defaults and its story layer.")
    return Frame(page_path, st.sidebar.empty(), steps)


def selection() -> Selection:
    """What the sidebar picked on this run (app.py draws the sidebar before the page).

    Every lesson calls this first, which is also where a page run outside app.py is rerouted.
    """
    routed()
    sel = st.session_state.get("selection")
    return sel if isinstance(sel, Selection) else Selection(models.ModelSource.embedded(), models.DEFAULT_LAYER)
