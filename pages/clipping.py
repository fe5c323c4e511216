"""Lesson: clipping and saturation — rounding error against clipping error, observers, calibration."""
import numpy as np
import streamlit as st

import lab_ui
from quantlab.core import observers, stats
from quantlab.core.spec import OBSERVER_LABELS, OBSERVERS, QuantSpec
from quantlab.io import models
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, clipping, snippets
from quantlab.viz import clipping as figures

PERCENTILES = [99.0, 99.9, 99.99, 99.999]
SIDEBAR = "sidebar"
RATIOS = np.round(np.linspace(0.04, 1.0, 25), 4)


def _spec(bits: int, observer: str = "minmax", percentile: float = 99.9) -> QuantSpec:
    kwargs = {"percentile": percentile} if observer == "percentile" else {}
    return QuantSpec(num_bits=bits, observer=observer, observer_kwargs=kwargs)


@st.cache_resource(max_entries=64, show_spinner="Sweeping the clipping ratio…")
def curve(source: ModelSource, layer: str, tensor: str, bits: int) -> clipping.ClipCurve:
    return clipping.clipping_curve(lab_ui.layer_tensor(source, layer, tensor), _spec(bits), RATIOS)


@st.cache_resource(max_entries=64, show_spinner="Running the observers…")
def marks(source: ModelSource, layer: str, tensor: str, bits: int, percentile: float) -> dict[str, float]:
    x = lab_ui.layer_tensor(source, layer, tensor)
    return {"min-max": observers.clip_ratio(x, _spec(bits)),
            f"percentile {percentile:g}": observers.clip_ratio(x, _spec(bits, "percentile", percentile)),
            "MSE": observers.clip_ratio(x, _spec(bits, "mse"))}


@st.cache_resource(max_entries=32, show_spinner=False)
def histogram(source: ModelSource, layer: str, tensor: str) -> stats.Histogram:
    return stats.histogram(lab_ui.layer_tensor(source, layer, tensor), bins=160)


@st.cache_resource(max_entries=256, show_spinner=False)
def at_ratio(source: ModelSource, layer: str, tensor: str, bits: int, ratio: float) -> clipping.ClipPoint:
    return clipping.clip_point(lab_ui.layer_tensor(source, layer, tensor), _spec(bits), ratio)


@st.cache_resource(max_entries=128, show_spinner="Calibrating on every sample text…")
def study(source: ModelSource, layer: str, eval_kind: str, spec: QuantSpec,
          sentences: int) -> list[clipping.CalibrationResult]:
    return clipping.study(layer, eval_kind, spec, sentences, source)


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("clipping", "intro")

tensor_options = lab_ui.tensor_choices(sel)[::-1]  # the real input first: it is where clipping pays
c1, c2, c3, c4 = st.columns([1.3, 1, 1.6, 1.2])
tensor = lab_ui.control(c1.radio, "Tensor", "clip_tensor", tensor_options[0], tensor_options,
                        format_func=lab_ui.TENSORS.get, horizontal=True,
                        help="The real input this layer receives on sample text, or its weight matrix.")
bits = lab_ui.control(c2.select_slider, "Bits", "clip_bits", 8, [2, 3, 4, 5, 6, 7, 8])
ratio = lab_ui.control(c3.slider, "Clipping ratio (range kept ÷ min-max range)", "clip_ratio", 0.85,
                       min_value=0.05, max_value=1.0, step=0.01)
percentile = lab_ui.control(c4.select_slider, "Percentile observer p", "clip_pct", 99.9, PERCENTILES,
                            format_func=lambda p: f"{p:g}")
lab_ui.weights_only_note(sel)

with lab_ui.user_errors():
    sweep = curve(sel.source, sel.layer, tensor, bits)
    where = marks(sel.source, sel.layer, tensor, bits, percentile)
    point = at_ratio(sel.source, sel.layer, tensor, bits, ratio)

shown = lab_ui.layer_tensor(sel.source, sel.layer, tensor)
lab_ui.check(checks.clipping_helps, shown, bits, key=(sel.source, sel.layer, tensor, bits))
lab_ui.check(checks.saturated_share, shown, key=(sel.source, sel.layer, tensor))
st.markdown(f"**`{sel.layer}` {lab_ui.TENSORS[tensor]}**, INT{bits} symmetric, one scale for the whole tensor.")
m1, m2, m3, m4 = st.columns(4)
m1.metric("Total MSE at this ratio", f"{point.total_mse:.3g}")
m2.metric("…of which clipping", f"{point.clipping_share:.1%}")
m3.metric("Values saturated", f"{point.clipped_fraction:.3%}")
m4.metric("Best ratio for this tensor", f"{sweep.best_ratio:.2f}")
lab_ui.chart(figures.clip_curve, sweep, where, ratio, key=(sel.source, sel.layer, tensor, bits, percentile, ratio),
             headline=("Best clipping ratio for this tensor", f"{sweep.best_ratio:.2f}"),
             code=snippets.clipping_curve(sel.source, sel.layer, tensor, bits, percentile, RATIOS))
lab_ui.lesson_section("clipping", "curve")
lab_ui.chart(figures.clip_histogram, histogram(sel.source, sel.layer, tensor), point.range_lo, point.range_hi,
             key=(sel.source, sel.layer, tensor, bits, ratio),
             code=snippets.clipping_histogram(sel.source, sel.layer, tensor, bits, ratio, bins=160))

st.subheader("150 → 127, on a real value")
lab_ui.lesson_section("clipping", "example")
example = point.example
if example is not None:
    where_txt = (f"token {example.row}, channel {example.column}" if tensor != "weight"
                 else f"output row {example.row}, input column {example.column}")
    if point.saturates:
        st.info(f"x = **{example.value:.4g}** ({where_txt}) ÷ scale {example.scale:.4g} = **{example.scaled:.1f}** "
                f"→ clamp to [−{point.qmax + 1}, {point.qmax}] → **{example.code}** → "
                f"{example.code} × {example.scale:.4g} = "
                f"**{example.restored:.4g}**: {example.lost:.4g} of the value is lost.", icon=":material/content_cut:")
    else:
        st.success(f"Nothing saturates at ratio {ratio:.2f}: the largest value, x = {example.value:.4g} ({where_txt}), "
                   f"lands on {example.scaled:.1f} and rounds to {example.code}. Lower the ratio to see clipping.",
                   icon=":material/check_circle:")

if sel.has_activations and tensor != "weight":
    st.subheader("Calibration: static or dynamic scales, on which text")
    lab_ui.lesson_section("clipping", "calibration")
    kinds = models.calibration_kinds()
    k0, k1, k2, k3 = st.columns([1.6, 1, 1.4, 1])
    cal_layers = [SIDEBAR, *lab_ui.activations(sel.source)]
    cal_layer = lab_ui.control(k0.selectbox, "Layer calibrated", "clip_cal_layer",
                               clipping.CALIBRATION_LAYER if clipping.CALIBRATION_LAYER in cal_layers else SIDEBAR,
                               cal_layers, format_func=lambda n: (
                                   f"the sidebar's ({sel.layer})" if n == SIDEBAR else n),
                               help="Starts on a layer whose largest input depends on the text it reads.")
    layer = sel.layer if cal_layer == SIDEBAR else cal_layer
    eval_kind = lab_ui.control(k1.selectbox, "Text the model reads (evaluation)", "clip_eval", "code", kinds)
    observer = lab_ui.control(k2.radio, "Calibration observer", "clip_obs", "minmax", list(OBSERVERS),
                              format_func=OBSERVER_LABELS.get, horizontal=True)
    sentences = lab_ui.control(k3.slider, "Calibration sentences", "clip_sentences", clipping.CALIBRATION_SENTENCES,
                               min_value=1, max_value=40)
    with lab_ui.user_errors():
        rows = study(sel.source, layer, eval_kind, _spec(bits, observer, percentile), sentences)
    lab_ui.chart(figures.calibration_bars, rows, eval_kind,
                 key=(sel.source, layer, eval_kind, bits, observer, percentile, sentences),
                 code=snippets.clipping_calibration(sel.source, layer, eval_kind, _spec(bits, observer, percentile),
                                                   sentences))
    lab_ui.lesson_section("clipping", "calibration result", layer=layer, sentences=sentences,
                          **clipping.summarize(rows, eval_kind).numbers())
    st.dataframe(
        {"scale from": [r.calibration for r in rows],
         "sentences": [str(r.sentences) if r.sentences else "each token" for r in rows],
         "scale": [f"{r.scale:.4g}" for r in rows],
         "SQNR (dB)": [round(r.sqnr_db, 2) for r in rows],
         "saturated": [f"{r.clipped_fraction:.3%}" for r in rows],
         "clipping share of error": [f"{r.clipping_share:.0%}" for r in rows]},
        width="stretch", hide_index=True)

lab_ui.lesson_section("clipping", "takeaways")
