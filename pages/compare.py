"""What if…: several quantization schemes side by side on the same layer and the same model."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core.spec import QuantSpec, label
from quantlab.io import sizing
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, compare, decoder_quality, snippets, whole_model
from quantlab.viz import compare as figures

THIS_MODEL = "sidebar"


@st.cache_resource(max_entries=512, show_spinner=False)
def layer_row(source: ModelSource, layer: str, name: str, with_activations: bool) -> compare.LayerWhatIf:
    x = lab_ui.activations(source)[layer] if with_activations else None
    return compare.layer_what_if(name, lab_ui.weight(source, f"{layer}.weight"), x)


@st.cache_resource(max_entries=128, show_spinner="Sizing the checkpoint from shapes…")
def sizes(target: str, source: ModelSource, names: tuple[str, ...]) -> dict[str, compare.CheckpointSize]:
    return compare.model_sizes(source if target == THIS_MODEL else target, names)


@st.cache_resource(max_entries=64, show_spinner="Quantizing every Linear and embedding the test sentences…")
def whole_run(spec: QuantSpec) -> whole_model.WholeModelResult:
    lab_ui.spend_heavy_run("A whole-model run")
    return whole_model.run(spec)


@st.cache_resource(max_entries=64, show_spinner="Quantizing the decoder and scoring the held-out text…")
def decoder_run(source: ModelSource, slug: str) -> decoder_quality.SchemeQuality:
    lab_ui.spend_heavy_run("A whole-model run")
    return decoder_quality.scheme_quality(source.path, slug)


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("compare", "intro")

chosen = lab_ui.control(st.multiselect, "Schemes to compare", "cmp_schemes", list(compare.DEFAULT_CHOICE),
                        compare.CANDIDATES, format_func=label, max_selections=8)
targets = [THIS_MODEL, *sizing.shipped_configs()]
target = lab_ui.control(st.selectbox, "Size the whole checkpoint of", "cmp_target", THIS_MODEL, targets,
                        format_func=lambda t: "the model in the sidebar" if t == THIS_MODEL else t,
                        help="Shipped architectures are sized from their config.json: no weights needed.")
if not chosen:
    st.info("Pick at least one scheme.")
    st.stop()

with lab_ui.user_errors():
    rows = [layer_row(sel.source, sel.layer, n, sel.has_activations) for n in chosen]
    size_by_name = sizes(target, sel.source, tuple(chosen))

usable = [r for r in rows if r.skipped is None]
for r in rows:
    if r.skipped:
        st.warning(f"{label(r.name)}: {r.skipped}", icon=":material/warning:")
metric = "layer-output SQNR on real activations (dB)" if sel.has_activations else "weight SQNR (dB)"
scores = {label(r.name): r.output_sqnr_db if sel.has_activations else r.weight_sqnr_db for r in usable}
lab_ui.check(checks.best_of, scores, metric, f"`{sel.layer}`", key=(tuple(scores.items()), metric, sel.layer))
lab_ui.chart(figures.what_if_scatter, list(scores), [r.bits_per_weight for r in usable], list(scores.values()),
             metric, key=(sel.source, sel.layer, tuple(r.name for r in usable), sel.has_activations),
             code=snippets.compare_layer(sel.source, sel.layer, [r.name for r in usable], sel.has_activations))

lab_ui.check(checks.checkpoint_ratio, size_by_name, sel.source.label if target == THIS_MODEL else target,
             key=(target, sel.source, tuple(chosen)))
table = pd.DataFrame({
    "scheme": [label(r.name) for r in rows],
    "format": [r.spec.label + (f" · A {r.spec.activations.label}" if r.spec.activations else "") for r in rows],
    "stored bits / weight (this layer)": [r.bits_per_weight for r in rows],
    "weight SQNR (dB)": [r.weight_sqnr_db for r in rows],
    "output SQNR (dB)": [r.output_sqnr_db for r in rows],
    "checkpoint size": [sizing.format_bytes(size_by_name[r.name].total_bytes) for r in rows],
}).set_index("scheme")
if not sel.has_activations:  # no captured inputs: a column of dashes says nothing
    table = table.drop(columns="output SQNR (dB)")
st.dataframe(table.style.format({"stored bits / weight (this layer)": "{:.4g}", "weight SQNR (dB)": "{:.1f}",
                                 "output SQNR (dB)": "{:.1f}"}, na_rep="—"), width="stretch")
st.download_button("Download this table (CSV)", table.to_csv().encode(), f"what-if-{sel.layer}.csv", "text/csv",
                   key="cmp_csv", icon=":material/download:", on_click="ignore")
st.caption(f"Layer `{sel.layer}` of {sel.source.label}. Sizes are the compressed-tensors file that "
           "llm-compressor writes for that scheme (packed codes, scales, zero points, tensors kept unquantized).")
for name in chosen:
    for note in size_by_name[name].notes:
        st.caption(f"Size of {label(name)}: {note}")
step = compare.group_step_bits(lab_ui.weight(sel.source, sel.weight_name))
lab_ui.lesson_section("compare", "reading", g64_extra="—" if step is None else f"{step:.3g}")

st.subheader("The whole model")
if not sel.has_activations:
    st.caption("Whole-model runs need the embedded model or a local causal LM (its forward pass runs here).")
elif not sel.source.is_embedded:
    if st.button("Run the decoder under each scheme", key="cmp_dec_run") or st.session_state.get("cmp_dec_ran"):
        st.session_state["cmp_dec_ran"] = True
        with lab_ui.user_errors():
            quality = {label(r.name): decoder_run(sel.source, r.name) for r in usable}
        st.dataframe(pd.DataFrame(decoder_quality.table(quality)).set_index("scheme").style.format(
            {"perplexity (held-out)": "{:.3f}", "mean KL to original (nats/token)": "{:.4f}",
             "tokens / s (CPU)": "{:.0f}"}), width="stretch")
        st.caption("Every Linear but lm_head quantized by round to nearest; perplexity and KL on a held-out "
                   "text the calibration never saw (the Outliers lesson also runs GPTQ).")
elif st.button("Run the embedded model under each scheme", key="cmp_run") or st.session_state.get("cmp_ran"):
    st.session_state["cmp_ran"] = True
    with lab_ui.user_errors():
        results = {label(r.name): whole_run(r.spec) for r in usable}
    distractors = next(iter(results.values())).distractors if results else 0
    found = f"paraphrase found first among {distractors:,} distractors (%)"
    st.dataframe(pd.DataFrame({
        "scheme": list(results),
        "embedding cosine to fp32 (mean)": [r.cosine_mean for r in results.values()],
        "worst sentence cosine": [r.cosine_min for r in results.values()],
        "rank correlation of pair similarities": [r.rank_correlation for r in results.values()],
        found: [100 * r.retrieval_recall for r in results.values()],
    }).set_index("scheme").style.format({"embedding cosine to fp32 (mean)": "{:.4f}", "worst sentence cosine": "{:.4f}",
                                         "rank correlation of pair similarities": "{:.4f}", found: "{:.0f}"}),
                 width="stretch")
    st.caption("All 36 Linear layers quantized; sentence embeddings mean-pooled as sentence-transformers does. "
               "Rank correlation: whether the model still orders sentence pairs from same meaning to unrelated "
               "as fp32 does (1 = same order).")
