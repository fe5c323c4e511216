"""Lesson: what a quantized checkpoint stores, byte by byte, and the real size of real models."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core.spec import SCHEMES, QuantSpec, label, scheme_spec
from quantlab.io import export, sizing
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, snippets, storage
from quantlab.viz import storage as figures

SIDEBAR = "sidebar"


@st.cache_resource(max_entries=128, show_spinner="Sizing from shapes…")
def report(source: ModelSource | str, spec: QuantSpec) -> sizing.SizeReport:
    return sizing.model_size(source, spec)


@st.cache_resource(max_entries=64, show_spinner="Sizing every group size…")
def ladder(source: ModelSource | str, spec: QuantSpec) -> storage.Ladder:
    return storage.group_ladder(source, spec)


@st.cache_resource(max_entries=16, show_spinner=False)
def claims(arch: str) -> list[storage.Claim]:
    return storage.syllabus_claims(arch)


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("storage", "intro")

shipped = list(sizing.shipped_configs())
choices = [SIDEBAR, *shipped]
c1, c2, c3 = st.columns([1.6, 1.2, 1.2])
picked = lab_ui.control(c1.selectbox, "Model", "storage_arch", SIDEBAR, choices,
                        format_func=lambda c: f"{sel.source.label} (real file)" if c == SIDEBAR
                        else f"{c} (config only)",
                        help="Shipped configs give exact shapes with no download.")
presets = [s.slug for s in SCHEMES.values() if s.preset]
scheme = lab_ui.control(c2.selectbox, "Scheme", "storage_scheme", "w4a16", presets, format_func=label)
spec = scheme_spec(scheme)
if spec.strategy == "group" and spec.type == "int":
    group = lab_ui.control(c3.select_slider, "Group size", "storage_g", spec.group_size, list(storage.GROUPS))
    spec = spec.with_group_size(group)
else:
    c3.caption(f"{label(scheme)} fixes its group at {spec.group_size}." if spec.group_size
               else f"{label(scheme)} uses one scale per {spec.strategy}: no group size.")
source: ModelSource | str = sel.source if picked == SIDEBAR else picked

lab_ui.check(checks.stored_bits_at_g128, lab_ui.weight(sel.source, sel.weight_name), key=(sel.source, sel.layer))
with lab_ui.user_errors():
    rep = report(source, spec)
lab_ui.check(checks.kept_share, rep, key=(source, spec))

m1, m2, m3, m4 = st.columns(4)
m1.metric("model.safetensors", sizing.format_bytes(rep.total_bytes), help=f"{rep.total_bytes:,} bytes, header included")
m2.metric("Unquantized", sizing.format_bytes(rep.original_bytes), help="The same tensors in their original dtype.")
m3.metric("Bits per parameter", f"{rep.bits_per_weight:.3f}", help="Whole file, every tensor counted.")
m4.metric("In quantized layers", f"{rep.quantized_bits_per_weight():.3f} bits", help="Codes + scales + zero points.")
for note in rep.notes:
    st.info(note, icon=":material/content_cut:")
lab_ui.chart(figures.bytes_breakdown, rep, key=(source, spec), code=snippets.storage_breakdown(source, spec))
lab_ui.lesson_section("storage", "breakdown")

st.subheader("The tensor tree")
lab_ui.lesson_section("storage", "tree")
rows = pd.DataFrame(rep.rows())
first_block = rows[rows["tensor"].str.contains(r"\.0\.")]
t1, t2 = st.columns([3, 2])
t1.dataframe(first_block, hide_index=True, width="stretch", height=420)
t2.json(export.quantization_config(spec, rep.ignore), expanded=2)
with st.expander(f"All {len(rows):,} tensors"):
    st.dataframe(rows, hide_index=True, width="stretch")

st.subheader("Group size and file size")
with lab_ui.user_errors():
    steps = ladder(source, spec)
lab_ui.chart(figures.size_by_group, steps.rungs, key=(source, spec), code=snippets.storage_groups(source, spec))
if steps.left_out:
    st.caption(f"Left out: {', '.join(steps.left_out)} divide none of this model's Linear layers.")
lab_ui.lesson_section("storage", "groups", **storage.groups_numbers(steps))

st.subheader("The syllabus' numbers, measured")
sevens = [c for c in shipped if "7b" in c or "8b" in c]
arch = lab_ui.control(st.radio, "Architecture", "storage_claims_arch",
                      "mistral-7b" if "mistral-7b" in sevens else sevens[0], sevens, horizontal=True)
st.dataframe(pd.DataFrame([{
    "syllabus says": c.claim, "stated": sizing.format_bytes(c.stated_bytes),
    "measured": sizing.format_bytes(c.measured_bytes), "verdict": "holds" if c.holds else "off",
    "why": c.detail} for c in claims(arch)]), hide_index=True, width="stretch")
lab_ui.lesson_section("storage", "syllabus")

st.subheader("Take the checkpoint with you")
lab_ui.lesson_section("storage", "download")
static = spec.activations is not None and not spec.activations.dynamic
if not rep.has_weights:
    st.info("A config has shapes but no weights: pick the sidebar's model to export real tensors.",
            icon=":material/info:")
elif static and not sel.source.is_embedded:
    st.info("FP8 needs static activation scales, calibrated on inputs the lab captures for the embedded model "
            "only: use FP8_DYNAMIC for your own model.", icon=":material/info:")
else:
    st.download_button(f"Download {spec.label} checkpoint (.zip, ~{sizing.format_bytes(rep.total_bytes)})",
                       data=lambda: export.export_zip(sel.source, spec), file_name=f"quantlab-{spec.to_url()}.zip",
                       mime="application/zip", icon=":material/download:", on_click="ignore")
    st.caption(f"Built only when clicked. Loads with: {export.runtimes(spec)}.")
