"""Lesson 0: why quantize, what can be quantized, and eight real weights quantized by hand."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core.spec import label
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, intro


@st.cache_resource(show_spinner="Sizing Llama-3.1-8B from its config…")
def motive() -> intro.MemoryMotive:
    return intro.memory_motive()


@st.cache_resource(max_entries=64, show_spinner=False)
def by_hand(source: ModelSource, layer: str, row: int) -> intro.ByHand:
    return intro.by_hand(lab_ui.weight(source, f"{layer}.weight"), row)


sel = lab_ui.selection()
lab_ui.title(__file__)
with lab_ui.user_errors():
    m = motive()
lab_ui.lesson_section("intro", "intro", arch=m.arch, params_b=m.params / 1e9, bf16_gb=m.bf16_bytes / 1e9,
                      kv_gb=m.kv_bytes / 1e9, w4_gb=m.w4a16_bytes / 1e9, naive_gb=m.naive_int4_bytes / 1e9,
                      batch=m.batch, tokens=m.tokens)
c1, c2, c3 = st.columns(3)
c1.metric(f"{m.arch} weights, bf16", f"{m.bf16_bytes / 1e9:.1f} GB")
c2.metric("…at W4A16 (real file)", f"{m.w4a16_bytes / 1e9:.2f} GB")
c3.metric(f"KV cache, {m.tokens:,} tokens", f"{m.kv_bytes / 1e9:.1f} GB")

st.subheader("What can be quantized")
lab_ui.lesson_section("intro", "what")
st.dataframe(pd.DataFrame({"scheme": [label(slug) for slug, _ in intro.NOTATION],
                           "reads as": [meaning for _, meaning in intro.NOTATION]}),
             hide_index=True, width="stretch")

st.subheader("Eight real weights, quantized by hand")
# No max_value: a bound that followed the layer's row count would make Streamlit treat the widget
# as a new one (and reset it) whenever the sidebar's layer changes; by_hand clamps instead.
row = lab_ui.control(st.number_input, "Output row of the sidebar's layer", "intro_row", 0, min_value=0, step=1)
with lab_ui.user_errors():
    h = by_hand(sel.source, sel.layer, row)
lab_ui.check(checks.largest_code, h, key=(sel.source, sel.layer, h.row))
lab_ui.lesson_section("intro", "hand", absmax=h.absmax, scale=h.scale)
st.dataframe(pd.DataFrame({
    "x (weight)": [s.x for s in h.steps], "x ÷ s": [s.scaled for s in h.steps],
    "rounded": [s.rounded for s in h.steps], f"code (clamped to {h.qmin}…{h.qmax})": [s.code for s in h.steps],
    "code × s": [s.restored for s in h.steps], "error": [s.error for s in h.steps],
}).style.format("{:.5f}", subset=["x (weight)", "code × s", "error"]).format("{:.3f}", subset=["x ÷ s"])
             .format("{:.0f}", subset=["rounded"]), hide_index=True, width="stretch")
st.caption(f"`{sel.layer}`, row {h.row}, input columns 0–{len(h.steps) - 1}, {sel.source.label}.")
lab_ui.check(checks.hand_sqnr, h, key=(sel.source, sel.layer, h.row))
lab_ui.lesson_section("intro", "sqnr", signal=h.signal, noise=h.noise, sqnr=h.sqnr_db)
