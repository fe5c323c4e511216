"""Lesson: the KV cache — where long-context memory goes, and what quantizing real K and V costs."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core.spec import label
from quantlab.io import sizing
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, kv_cache, snippets
from quantlab.lessons.formats import GB, GIB
from quantlab.viz import kv_cache as figures

UNITS = {"GiB": ("GiB (2³⁰ bytes)", GIB), "GB": ("GB (10⁹ bytes)", GB)}


@st.cache_resource(max_entries=256, show_spinner="Sizing the weights from the config…")
def plan(arch: str, scheme: str, batch: int, unit: int) -> kv_cache.MemoryPlan:
    return kv_cache.memory_plan(arch, scheme, batch, unit)


@st.cache_resource(max_entries=8, show_spinner="Capturing real keys and values and quantizing them nine ways…")
def errors(source: ModelSource | None, kind: str) -> dict[str, kv_cache.KVError]:
    return {kv_cache.kv_label(spec): err for spec, err in kv_cache.kv_errors(kind, source).items()}


@st.cache_resource(max_entries=8, show_spinner=False)
def sink(source: ModelSource | None, kind: str) -> kv_cache.SinkStats:
    return kv_cache.attention_sink(kind, source)


@st.cache_resource(max_entries=128, show_spinner=False)
def channels(source: ModelSource | None, layer: int, head: int) -> tuple[list[float], list[float]]:
    k, v = kv_cache.channel_absmax(layer, head, source=source)
    return k.tolist(), v.tolist()


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("kv_cache", "intro")

# -- memory against context -----------------------------------------------------------------------
uploaded = lab_ui.uploaded_config(st.expander("Size your own config.json", icon=":material/upload_file:"),
                                  "kv_config")
archs = kv_cache.planner_models(sel.source, uploaded)
c1, c2, c3, c4 = st.columns([1.3, 1, 1.2, 1.2])
arch_labels = {kv_cache.SIDEBAR: f"the sidebar's model ({sel.source.label})", kv_cache.UPLOADED: "your config.json"}
arch_choice = lab_ui.control(c1.selectbox, "Architecture", "kv_arch",
                             next(a for a in (kv_cache.UPLOADED, kv_cache.SIDEBAR, "llama-3.1-8b", archs[0])
                                  if a in archs), archs, format_func=lambda a: arch_labels.get(a, a))
arch_name = kv_cache.planner_name(arch_choice, sel.source, uploaded)
scheme = lab_ui.control(c2.selectbox, "Weights", "kv_weights", "bf16", kv_cache.WEIGHT_SCHEMES, format_func=label,
                        help="BF16 as published, or a compressed-tensors scheme (sized by quantlab.sizing).")
batch = lab_ui.control(c3.slider, "Batch (sequences)", "kv_batch", 8, min_value=1, max_value=64)
unit_short = lab_ui.control(c4.radio, "Card sizes in", "kv_unit", "GiB", list(UNITS),
                            format_func=lambda u: UNITS[u][0],
                            help="GPU memory is built in binary units; vendors print 'GB'.")

with lab_ui.user_errors():
    arch = kv_cache.architecture(arch_name)
    p = plan(arch_name, scheme, batch, UNITS[unit_short][1])
per_token = kv_cache.kv_bytes(arch, 1, 1).total
st.markdown(
    f"**{arch.name}**: {arch.layers} layers, {arch.heads} query heads, {arch.kv_heads} KV heads — {arch.attention} — "
    f"head_dim {arch.head_dim}. One token of one sequence at 16 bits: 2 × {arch.layers} × {arch.kv_heads} × "
    f"{arch.head_dim} × 2 bytes = **{per_token:,} bytes**. "
    f"Weights at {label(scheme)}: **{sizing.format_bytes(p.weights)}**."
)
lab_ui.check(checks.kv_larger_than_weights, arch_name, 32768, batch)
lab_ui.chart(figures.memory_chart, p, unit_short, f"{arch.name}, batch {batch}, weights at {label(scheme)}",
             key=(arch_name, scheme, batch, unit_short),
             code=snippets.kv_memory(arch_name, scheme, batch, UNITS[unit_short][1]))

st.markdown(f"**Longest context per sequence that fits** (batch {batch}, after the weights; the model reads at most "
            f"{p.max_position:,} tokens)")
st.dataframe(pd.DataFrame(figures.fit_table(p, unit_short)).set_index("KV cache"), width="stretch")
lab_ui.lesson_section("kv_cache", "memory")

# -- quantizing real keys and values --------------------------------------------------------------
st.subheader("Quantizing real keys and values")
kv_source = kv_cache.real_kv_source(sel.source)
with lab_ui.user_errors():
    errs = errors(kv_source, "general")
    data = kv_cache.capture_qkv("general", kv_source)
layers, seqs, heads, _, head_dim = data.k.shape
st.caption(f"Keys and values of {data.model} on {seqs} shipped sentences: {layers} layers × {heads} KV heads "
           f"({data.q.shape[2]} query heads) × {data.real_tokens} real tokens × head_dim {head_dim}"
           + (", after RoPE, causal attention" if data.causal else "")
           + "; padding masked out of scales, attention and errors.")
lab_ui.lesson_section("kv_cache", "schemes")
lab_ui.check(checks.kv_costlier_half, errs, key=(kv_source, "general"))
table = pd.DataFrame(figures.error_table(errs)).set_index("scheme")
st.dataframe(table, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.2f" if "dB" in c else "%.4f")
                                                   for c in table.columns})
lab_ui.chart(figures.sqnr_chart, errs, key=(kv_source, "general"), code=snippets.kv_errors(kv_source, "general"))
st.markdown("**What the numbers say.**")
for kv_name in ("INT8 per-tensor", "INT4 per-tensor", "INT4 per-token"):
    e = errs[kv_name]
    st.markdown(f"- {kv_name}: the tensors are about equally hard (K {e.k_sqnr_db:.1f} dB, V {e.v_sqnr_db:.1f} dB), "
                f"but attention turns them into output SQNR {e.out_sqnr_db['k']:.1f} dB with only K quantized and "
                f"{e.out_sqnr_db['v']:.1f} dB with only V: the key error is damped by "
                f"{e.k_propagation_db:+.1f} dB, the "
                f"value error changes by {e.v_propagation_db:+.1f} dB on its way to the output.")
s_ = sink(kv_source, "general")
st.markdown(f"- On average **{s_.first_token_share:.0%}** of each query's attention goes to the first token "
            f"({'the sentence start' if data.causal else '[CLS]'}), whose value vectors have "
            f"‖v‖ = {s_.first_token_v_norm:.2f} against {s_.mean_v_norm:.2f} for the average token (the V rows "
            f"attention actually reads average {s_.weighted_v_norm:.2f}).")
lab_ui.lesson_section("kv_cache", "harder")
l1, l2 = st.columns(2)
layer = lab_ui.control(l1.slider, "Layer", "kv_layer", 0, min_value=0, max_value=layers - 1)
head = lab_ui.control(l2.slider, "Head", "kv_head", 0, min_value=0, max_value=heads - 1)
k_max, v_max = channels(kv_source, layer, head)
lab_ui.chart(figures.channel_chart, k_max, v_max, layer, head, key=(kv_source, layer, head),
             code=snippets.kv_channels(kv_source, layer, head))
lab_ui.lesson_section("kv_cache", "llms")
