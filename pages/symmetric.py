"""Lesson: symmetric vs asymmetric quantization, on a real weight or a real activation."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core import metrics
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, snippets, symmetric
from quantlab.viz import symmetric as figures

MODES = ["both", "symmetric", "asymmetric"]
EXAMPLES = {  # (layer, tensor) pairs worth a click: a one-sided distribution, outliers, a weight
    "Skewed: post-GELU input of layer 0 output.dense": symmetric.STORY,
    "Outlier channels: input of layer 0 intermediate.dense": ("encoder.layer.0.intermediate.dense", "input"),
    "A weight: layer 0 query": ("encoder.layer.0.attention.self.query", "weight"),
}


@st.cache_resource(max_entries=256, show_spinner=False)
def comparison(source: ModelSource, layer: str, tensor: str, bits: int) -> symmetric.ModeComparison:
    return symmetric.compare_modes(lab_ui.layer_tensor(source, layer, tensor), bits)


@st.cache_resource(max_entries=64, show_spinner=False)
def by_bits(source: ModelSource, layer: str, tensor: str) -> dict[str, list[float]]:
    return symmetric.sqnr_by_bits(lab_ui.layer_tensor(source, layer, tensor))


@st.cache_resource(max_entries=64, show_spinner=False)
def zero_point_cost(source: ModelSource, layer: str) -> symmetric.ZeroPointCost:
    return symmetric.zero_point_cost(lab_ui.weight(source, f"{layer}.weight"))


def _pick(layer: str, tensor: str) -> None:
    st.session_state["layer"] = layer
    st.session_state["sym_tensor"] = tensor


def _log_follows(tensor: str) -> None:
    """The log axis defaults to the tensor (on for activations, off for weights): whenever the
    tensor changes (radio, story button, a layer without activations), a kept or linked log
    choice belonged to the other tensor and is dropped. A deep link's first run keeps its own."""
    if st.session_state.get("sym_log_for", tensor) != tensor:
        st.session_state.pop("sym_log", None)
        if "sym_log" in st.query_params:
            del st.query_params["sym_log"]
    st.session_state["sym_log_for"] = tensor


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("symmetric", "intro")

c1, c2, c3 = st.columns([1.1, 1.3, 1.6])
choices = lab_ui.tensor_choices(sel)
tensor = lab_ui.control(c1.radio, "Tensor", "sym_tensor", choices[-1], choices,
                        format_func=lab_ui.TENSORS.get, horizontal=True,
                        help="The layer's weight matrix, or the real input it receives on sample text.")
bits = lab_ui.control(c2.slider, "Bits", "sym_bits", 8, min_value=2, max_value=8)
mode = lab_ui.control(c3.segmented_control, "Show grid", "sym_mode", "both", MODES) or "both"
lab_ui.weights_only_note(sel)

if sel.source.is_embedded:  # the stories are MiniLM's layers
    with st.expander("Try a real tensor with a story", expanded=(sel.layer, tensor) != symmetric.STORY):
        for col, (label, (layer, kind)) in zip(st.columns(len(EXAMPLES)), EXAMPLES.items()):
            col.button(label, on_click=_pick, args=(layer, kind), width="stretch",
                       disabled=not sel.has_activations and kind != "weight")

with lab_ui.user_errors():
    cmp = comparison(sel.source, sel.layer, tensor, bits)
    sweep = by_bits(sel.source, sel.layer, tensor)
    zp_cost = zero_point_cost(sel.source, sel.layer)
    stored = (symmetric.stored_bits_by_mode(lab_ui.weight(sel.source, sel.weight_name), cmp)
              if tensor == "weight" else None)

shown = lab_ui.layer_tensor(sel.source, sel.layer, tensor)
lab_ui.check(checks.symmetric_or_asymmetric, shown, bits, key=(sel.source, sel.layer, tensor, bits))
name = f"`{sel.layer}` {lab_ui.TENSORS[tensor]}"
st.markdown(f"**{name}** — {cmp.numel:,} values in [{cmp.x_min:.4g}, {cmp.x_max:.4g}], per-tensor scale, {bits} bits.")
_log_follows(tensor)
log_y = lab_ui.control(st.toggle, "Log count axis", "sym_log", tensor != "weight",
                       help="Outliers are rare: a log axis makes single values visible.")
lab_ui.chart(figures.grid_overlay, cmp, mode in ("both", "symmetric"), mode in ("both", "asymmetric"), log_y,
             key=(sel.source, sel.layer, tensor, bits, mode, log_y),
             code=snippets.symmetric_grid(sel.source, sel.layer, tensor, bits),
             headline=("SQNR, symmetric → asymmetric",
                       f"{cmp.symmetric.report.sqnr_db:.1f} → {cmp.asymmetric.report.sqnr_db:.1f} dB"))

left, right = st.columns(2)
for col, is_symmetric, title in ((left, True, "Symmetric: scale only"),
                                 (right, False, "Asymmetric: scale + zero point")):
    with col.container(border=True):
        st.markdown(f"#### {title}")
        for step in symmetric.derivation(cmp, is_symmetric):
            st.markdown(f"- {step}")
        m = cmp.symmetric if is_symmetric else cmp.asymmetric
        st.metric("Grid levels wasted", f"{m.levels_wasted} of {m.spec.levels}",
                  help=f"Codes no value rounds to; {m.levels_outside_data} of them lie entirely outside the data.")

st.subheader("Error, side by side")
table = metrics.comparison_table({"symmetric": cmp.symmetric.report, "asymmetric": cmp.asymmetric.report}, stored)
st.dataframe(pd.DataFrame(table).set_index("metric"), width="stretch")
lab_ui.lesson_section("symmetric", "reading", **symmetric.reading_numbers(cmp))
lab_ui.check(checks.asymmetric_gain, shown, 4 if bits != 4 else 6, key=(sel.source, sel.layer, tensor, bits))
lab_ui.chart(figures.sqnr_vs_bits, sweep, bits, key=(sel.source, sel.layer, tensor, bits),
             code=snippets.symmetric_bits(sel.source, sel.layer, tensor))
lab_ui.lesson_section("symmetric", "production", **zp_cost.numbers())
