"""Lesson: clipping and saturation — rounding error against clipping error, observers, calibration."""
import numpy as np
import streamlit as st

import lab_ui
from quantlab.core import observers, stats
from quantlab.core.spec import QuantSpec
from quantlab.io import models
from quantlab.io.models import ModelSource
from quantlab.lessons import clipping
from quantlab.viz import clipping as figures

TENSORS = ["input activation", "weight"]
PERCENTILES = [99.0, 99.9, 99.99, 99.999]
OBSERVER_NAMES = {"min-max": "minmax", "percentile": "percentile", "MSE search": "mse"}
RATIOS = np.round(np.linspace(0.04, 1.0, 25), 4)


def _spec(bits: int, observer: str = "minmax", percentile: float = 99.9) -> QuantSpec:
    kwargs = {"percentile": percentile} if observer == "percentile" else {}
    return QuantSpec(num_bits=bits, observer=observer, observer_kwargs=kwargs)


@st.cache_data(max_entries=64, show_spinner="Sweeping the clipping ratio…")
def curve(source: ModelSource, layer: str, tensor: str, bits: int) -> clipping.ClipCurve:
    return clipping.clipping_curve(lab_ui.layer_tensor(source, layer, tensor), _spec(bits), RATIOS)


@st.cache_data(max_entries=64, show_spinner="Running the observers…")
def marks(source: ModelSource, layer: str, tensor: str, bits: int, percentile: float) -> dict[str, float]:
    x = lab_ui.layer_tensor(source, layer, tensor)
    return {"min-max": observers.clip_ratio(x, _spec(bits)),
            f"percentile {percentile:g}": observers.clip_ratio(x, _spec(bits, "percentile", percentile)),
            "MSE": observers.clip_ratio(x, _spec(bits, "mse"))}


@st.cache_data(max_entries=32, show_spinner=False)
def histogram(source: ModelSource, layer: str, tensor: str) -> stats.Histogram:
    return stats.histogram(lab_ui.layer_tensor(source, layer, tensor), bins=160)


@st.cache_data(max_entries=256, show_spinner=False)
def at_ratio(source: ModelSource, layer: str, tensor: str, bits: int, ratio: float) -> clipping.ClipPoint:
    return clipping.clip_point(lab_ui.layer_tensor(source, layer, tensor), _spec(bits), ratio)


@st.cache_data(max_entries=128, show_spinner="Calibrating on every sample text…")
def study(layer: str, eval_kind: str, spec: QuantSpec, sentences: int) -> list[clipping.CalibrationResult]:
    return clipping.study(layer, eval_kind, spec, sentences)


sel = lab_ui.selection()
st.title("✂️ Clipping & saturation")
lab_ui.lesson_section("clipping", "intro")

tensor_options = TENSORS if sel.has_activations else TENSORS[1:]
c1, c2, c3, c4 = st.columns([1.3, 1, 1.6, 1.2])
tensor = c1.radio("Tensor", tensor_options, key="clip_tensor", horizontal=True,
                  index=tensor_options.index(lab_ui.url_choice("ctensor", tensor_options, tensor_options[0])),
                  help="The real input this layer receives on sample text, or its weight matrix.")
bits = c2.select_slider("Bits", [2, 3, 4, 5, 6, 7, 8], value=lab_ui.url_int("cbits", 8, 2, 8), key="clip_bits")
ratio = c3.slider("Clipping ratio (range kept ÷ min-max range)", 0.05, 1.0, key="clip_ratio",
                  value=lab_ui.url_int("ratio", 85, 5, 100) / 100, step=0.01)
percentile = c4.select_slider("Percentile observer p", PERCENTILES, value=99.9, key="clip_pct",
                              format_func=lambda p: f"{p:g}")
lab_ui.set_url(ctensor=tensor, cbits=bits, ratio=round(ratio * 100))
if not sel.has_activations:
    st.caption("Activations are captured from the embedded model only; this source shows weights.")

with lab_ui.user_errors():
    sweep = curve(sel.source, sel.layer, tensor, bits)
    where = marks(sel.source, sel.layer, tensor, bits, percentile)
    point = at_ratio(sel.source, sel.layer, tensor, bits, ratio)

st.markdown(f"**`{sel.layer}` {tensor}**, INT{bits} symmetric, one scale for the whole tensor.")
m1, m2, m3, m4 = st.columns(4)
m1.metric("Total MSE at this ratio", f"{point.total_mse:.3g}")
m2.metric("…of which clipping", f"{point.clipping_share:.1%}")
m3.metric("Values saturated", f"{point.clipped_fraction:.3%}")
m4.metric("Best ratio for this tensor", f"{sweep.best_ratio:.2f}")
st.plotly_chart(figures.clip_curve(sweep, where, ratio), width="stretch")
lab_ui.lesson_section("clipping", "curve")
st.plotly_chart(figures.clip_histogram(histogram(sel.source, sel.layer, tensor), point.range_lo, point.range_hi), width="stretch")

st.subheader("150 → 127, on a real value")
lab_ui.lesson_section("clipping", "example")
example = point.example
if example is not None:
    where_txt = (f"token {example.row}, channel {example.column}" if tensor != "weight"
                 else f"output row {example.row}, input column {example.column}")
    if point.saturates:
        st.info(f"x = **{example.value:.4g}** ({where_txt}) ÷ scale {example.scale:.4g} = **{example.scaled:.1f}** "
                f"→ clamp to [−{point.qmax + 1}, {point.qmax}] → **{example.code}** → {example.code} × {example.scale:.4g} = "
                f"**{example.restored:.4g}**: {example.lost:.4g} of the value is lost.", icon="✂️")
    else:
        st.success(f"Nothing saturates at ratio {ratio:.2f}: the largest value, x = {example.value:.4g} ({where_txt}), "
                   f"lands on {example.scaled:.1f} and rounds to {example.code}. Lower the ratio to see clipping.",
                   icon="✅")

if sel.has_activations and tensor != "weight":
    st.subheader("Calibration: static or dynamic scales, on which text")
    lab_ui.lesson_section("clipping", "calibration")
    kinds = models.calibration_kinds()
    k1, k2, k3 = st.columns(3)
    eval_kind = k1.selectbox("Text the model reads (evaluation)", kinds, key="clip_eval",
                             index=kinds.index(lab_ui.url_choice("eval", kinds, "code")))
    observer = k2.radio("Calibration observer", list(OBSERVER_NAMES), key="clip_obs", horizontal=True)
    sentences = k3.slider("Calibration sentences", 1, 40, 40, key="clip_sentences")
    lab_ui.set_url(eval=eval_kind)
    with lab_ui.user_errors():
        rows = study(sel.layer, eval_kind, _spec(bits, OBSERVER_NAMES[observer], percentile), sentences)
    st.plotly_chart(figures.calibration_bars(rows, eval_kind), width="stretch")
    st.dataframe(
        {"scale from": [r.calibration for r in rows],
         "sentences": [str(r.sentences) if r.sentences else "each token" for r in rows],
         "scale": [f"{r.scale:.4g}" for r in rows],
         "SQNR (dB)": [round(r.sqnr_db, 2) for r in rows],
         "saturated": [f"{r.clipped_fraction:.3%}" for r in rows],
         "clipping share of error": [f"{r.clipping_share:.0%}" for r in rows]},
        width="stretch", hide_index=True)

lab_ui.lesson_section("clipping", "takeaways")
