"""Lesson: how many weights share one scale, and what each choice costs in error and in bytes."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core import packing
from quantlab.core.spec import QuantSpec
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, granularity, snippets
from quantlab.viz import granularity as figures


@st.cache_resource(max_entries=64, show_spinner="Quantizing the layer at every granularity…")
def tradeoff(source: ModelSource, layer: str, custom: int, with_outputs: bool) -> list[granularity.Point]:
    inputs = lab_ui.activations(source)[layer] if with_outputs else None
    return granularity.tradeoff(lab_ui.weight(source, f"{layer}.weight"), inputs, custom)


@st.cache_resource(max_entries=64, show_spinner=False)
def scales(source: ModelSource, layer: str, spec: QuantSpec) -> granularity.ScaleMap:
    return granularity.scale_map(lab_ui.weight(source, f"{layer}.weight"), spec)


@st.cache_resource(max_entries=64, show_spinner=False)
def failure(source: ModelSource, layer: str, spec: QuantSpec) -> granularity.ChannelFailure:
    return granularity.where_tensor_fails(lab_ui.weight(source, f"{layer}.weight"), spec)


@st.cache_resource(max_entries=64, show_spinner=False)
def word(source: ModelSource, layer: str) -> packing.WordDiagram | None:
    return granularity.first_word(lab_ui.weight(source, f"{layer}.weight"), QuantSpec.preset("W4A16"))


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("granularity", "intro")

with lab_ui.user_errors():
    weight = lab_ui.weight(sel.source, sel.weight_name)
cols = weight.shape[1]
c1, c2, c3 = st.columns([1.2, 1.2, 1.6])
custom_start = granularity.custom_default(cols)
custom = 0 if custom_start is None else int(lab_ui.control(
    c1.number_input, "Custom group size", "gran_custom", custom_start, min_value=2, max_value=cols, step=1,
    help="Add your own group size to the comparison; it must divide the input dimension."))
outputs_ok = sel.has_activations
metric = lab_ui.control(c2.radio, "Error measured on", "gran_metric", "output" if outputs_ok else "weights",
                        ["output", "weights"] if outputs_ok else ["weights"], horizontal=True,
                        format_func={"output": "layer output", "weights": "weights"}.get,
                        help="Layer output = X·Wᵀ with the layer's real captured inputs X.")
if not outputs_ok:
    st.caption("Layer-output SQNR needs the layer's real inputs, which the lab captures for the embedded model "
               "only; for this source the chart shows weight SQNR.")
skipped = granularity.unusable_groups(cols, custom)
if skipped:
    c3.warning(f"Left out: g{', g'.join(map(str, skipped))} (a group size must divide this layer's {cols} "
               "input columns).", icon=":material/content_cut:")

lab_ui.check(checks.g64_beats_g128, weight, key=(sel.source, sel.layer))
with lab_ui.user_errors():
    points = tradeoff(sel.source, sel.layer, custom, outputs_ok)
lab_ui.chart(figures.pareto, points, metric == "output", key=(sel.source, sel.layer, custom, outputs_ok, metric),
             code=snippets.granularity_tradeoff(sel.source, sel.layer, custom, outputs_ok, metric == "output"))

table = pd.DataFrame([{
    "scheme": p.spec.label, "formula bits/weight": p.formula_bits,
    "stored bits/weight": p.bits_per_weight, "stored bytes": p.stored_bytes,
    "weight SQNR (dB)": p.weight_sqnr_db,
    **({"output SQNR (dB)": p.output_sqnr_db} if p.output_sqnr_db is not None else {}),
} for p in points])
lab_ui.lesson_section("granularity", "bits per weight", scale_bits=granularity.scale_bits(weight.dtype))
st.dataframe(table.style.format({"formula bits/weight": "{:.4g}", "stored bits/weight": "{:.4g}",
                                 "stored bytes": "{:,}", "weight SQNR (dB)": "{:.2f}", "output SQNR (dB)": "{:.2f}"},
                                na_rep="—"), hide_index=True, width="stretch")

st.subheader("The scales themselves")
groups = granularity.heatmap_groups(cols, custom)
g1, g2 = st.columns(2)
group = (lab_ui.control(g1.select_slider, "Group size for the heatmap", "gran_heat_g",
                        granularity.heatmap_default(groups), groups) if len(groups) > 1 else groups[0])
symmetric = lab_ui.control(g2.toggle, "Symmetric", "gran_sym", True)
heat_spec = QuantSpec(num_bits=4, symmetric=symmetric, strategy="group", group_size=group)
lab_ui.chart(figures.scale_heatmap, scales(sel.source, sel.layer, heat_spec), sel.layer,
             key=(sel.source, sel.layer, heat_spec), code=snippets.granularity_scales(sel.source, sel.layer, heat_spec))
lab_ui.lesson_section("granularity", "heatmap")

st.subheader("Where one scale for the whole tensor fails")
lab_ui.check(checks.channel_gain_over_tensor, weight, key=(sel.source, sel.layer))
fail = failure(sel.source, sel.layer, heat_spec)
lab_ui.chart(figures.channel_failure, fail, key=(sel.source, sel.layer, heat_spec),
             code=snippets.granularity_failure(sel.source, sel.layer, heat_spec))
st.dataframe(pd.DataFrame(fail.worst(5)).style.format(precision=4, na_rep="—"), hide_index=True, width="stretch")
lab_ui.lesson_section("granularity", "failure", **fail.numbers())

st.subheader("Eight INT4 codes in one int32")
diagram = word(sel.source, sel.layer)
if diagram is None:
    st.caption(f"This layer's rows have {cols} weight(s): no int32 word is full, so there is none to show.")
else:
    lab_ui.chart(figures.word_bits, diagram, key=(sel.source, sel.layer),
                 code=snippets.granularity_word(sel.source, sel.layer, QuantSpec.preset("W4A16")))
    st.dataframe(pd.DataFrame({"code #": range(len(diagram.codes)), "signed code": diagram.codes,
                               "stored (code + 8)": diagram.stored, "4 bits": diagram.fields,
                               "bits in the word": diagram.bit_ranges}),
                 hide_index=True, width="stretch")
lab_ui.lesson_section("granularity", "packing")
