"""Streamlit helpers shared by the lessons: the sidebar picker, URL state, cached data, errors.

Lessons stay thin (widgets -> quantlab -> figure); what every page needs the same way lives here.
The engine (`quantlab`) never imports Streamlit; this module is the only bridge.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import streamlit as st
import torch

from quantlab.core.errors import QuantlabError
from quantlab.io import models

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

    @property
    def url(self) -> str:
        """The page's address is its file name, which is also how AppTest's switch_page finds it."""
        return Path(self.file).stem


# The syllabus, in teaching order: app.py builds the navigation from it and the home page links it.
LESSONS: list[Lesson] = [
    Lesson("pages/formats.py", "Precision formats", "🔢",
           "FP32 to FP4, INT8, INT4 and NF4 down to their bits; FP8 against INT8 on real tensors; model memory."),
    Lesson("pages/symmetric.py", "Symmetric vs asymmetric", "⚖️",
           "One scale or a scale plus a zero point: which grid fits weights, which fits activations."),
    Lesson("pages/granularity.py", "Granularity", "🧱",
           "Per-tensor, per-channel or groups of 32-256: error on real layers against bits per weight; bit packing."),
    Lesson("pages/storage.py", "Storage & size", "📦",
           "Every byte of a compressed-tensors checkpoint; exact sizes of Llama, Qwen, Mistral; download one."),
    Lesson("pages/clipping.py", "Clipping & saturation", "✂️",
           "Rounding error against saturation error on real tensors; observers; static vs dynamic calibration."),
    Lesson("pages/outliers.py", "Outliers", "⚡",
           "Outlier channels in real activations; SmoothQuant, AWQ, mixed precision; the whole model quantized."),
    Lesson("pages/kv_cache.py", "KV cache", "🗄️",
           "Cache memory against context on real architectures; FP8/INT8/INT4 on real keys and values."),
    Lesson("pages/compare.py", "What if…", "🔀",
           "Your schemes side by side: error on real weights and activations against checkpoint size."),
    Lesson("pages/speed.py", "Speed", "🏎️",
           "Measured GPU kernels: when 4-bit beats bf16, the roofline, and why int4 can be slower than fp16."),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a user's mistake as one line and stop this page's run; the session goes on."""
    try:
        yield
    except QuantlabError as err:
        st.error(str(err), icon="⚠️")
        st.stop()


def lesson_section(name: str, section: str) -> None:
    """Render one '## section' of assets/lessons/<name>.md, so prose can sit between charts."""
    text = (ROOT / "assets" / "lessons" / f"{name}.md").read_text()
    parts = text.split("\n## ")
    for part in parts:
        heading, _, body = part.partition("\n")
        if heading.strip().lstrip("# ").strip() == section:
            st.markdown(body.strip())
            return
    raise KeyError(f"no section {section!r} in {name}.md")


# -- URL state ------------------------------------------------------------------------------------

def url_choice(key: str, options: Sequence[T], default: T) -> T:
    """The option named in the URL (?key=...), else `default`: lets a copied link restore a view."""
    raw = st.query_params.get(key)
    for opt in options:
        if str(opt) == raw:
            return opt
    return default


def url_int(key: str, default: int, lo: int, hi: int) -> int:
    raw = st.query_params.get(key)
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if lo <= value <= hi else default


def set_url(**values: object) -> None:
    """Write the page's state to the URL (only keys that changed, to avoid needless reruns)."""
    for key, value in values.items():
        if st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


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
        return self.source.is_embedded


@st.cache_resource(show_spinner="Loading tensor…", max_entries=64)
def weight(source: models.ModelSource, name: str) -> torch.Tensor:
    """One weight tensor, shared read-only by every session in this process."""
    return models.load_tensor(source, name)


@st.cache_resource(show_spinner="Running the model on sample text to capture real activations…")
def activations(kind: str = "general") -> dict[str, torch.Tensor]:
    return models.activations(kind)


def layer_tensor(source: models.ModelSource, layer: str, tensor: str) -> torch.Tensor:
    """The layer's weight matrix ("weight"), or the real input it receives on the sample text
    (any other choice, e.g. "input activation"; captured for the embedded model only)."""
    if tensor == "weight":
        return weight(source, f"{layer}.weight")
    return activations()[layer]


@st.cache_resource(show_spinner=False)
def _warm_up_activations() -> threading.Thread:
    """Capture the default activations in the background once per process, so the first learner
    who switches to an activation does not wait for the model to run (models.activations caches)."""
    thread = threading.Thread(target=models.activations, name="quantlab-warm-up", daemon=True)
    thread.start()
    return thread


def _source_from_sidebar() -> models.ModelSource:
    choice = st.sidebar.radio("Model", ["Embedded MiniLM", "Local path", "Upload"], key="source_kind",
                              horizontal=True, help="The embedded model needs no download.")
    if choice == "Local path":
        path = st.sidebar.text_input("Path to a .safetensors file or HF folder", key="source_path")
        if path:
            try:
                return models.ModelSource.local(path)
            except QuantlabError as err:
                st.sidebar.error(str(err), icon="⚠️")
    elif choice == "Upload":
        up = st.sidebar.file_uploader("A .safetensors file", type=["safetensors"], key="source_upload")
        if up is not None:
            try:
                return models.ModelSource.from_upload(up.name, up.getvalue())
            except QuantlabError as err:
                st.sidebar.error(str(err), icon="⚠️")
    return models.ModelSource.embedded()


def _layer_names(source: models.ModelSource) -> list[str]:
    return [models.layer_name(t.name) for t in models.list_layers(source)]


def sidebar() -> Selection:
    """Model source and layer picker, shown on every page; the choice is kept in the URL."""
    _warm_up_activations()
    source = _source_from_sidebar()
    try:
        layers = _layer_names(source)
        if not layers:
            raise QuantlabError(f"{source.label} has no 2-D weight matrix to quantize; showing the embedded model.")
    except QuantlabError as err:
        st.sidebar.error(str(err), icon="⚠️")
        source = models.ModelSource.embedded()
        layers = _layer_names(source)
    default = models.DEFAULT_LAYER if models.DEFAULT_LAYER in layers else layers[0]
    layer = st.sidebar.selectbox("Layer", layers, index=layers.index(url_choice("layer", layers, default)),
                                 key="layer", help="A Linear layer's weight matrix [out, in].")
    if source.is_embedded:
        set_url(layer=layer)
    info = models.list_tensors(source)[f"{layer}.weight"]
    st.sidebar.caption(f"{source.label} · `{layer}` · {info.shape[0]}×{info.shape[1]} {info.dtype} · "
                       f"{info.numel:,} weights")
    selection = Selection(source, layer)
    st.session_state["selection"] = selection
    return selection


def selection() -> Selection:
    """What the sidebar picked on this run (app.py draws the sidebar before the page).

    Every lesson calls this first, which is also where a page run outside app.py is rerouted.
    """
    routed()
    sel = st.session_state.get("selection")
    return sel if isinstance(sel, Selection) else Selection(models.ModelSource.embedded(), models.DEFAULT_LAYER)
