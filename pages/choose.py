"""Lesson: choose a scheme — a recommendation from the lab's own measurements, with its reason."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core.errors import QuantlabError
from quantlab.core.spec import scheme_spec
from quantlab.io import models, sizing
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, choose, hardware, kv_cache, recipes, snippets, speed, whole_model
from quantlab.viz import choose as figures

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
CONTEXTS = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]


@st.cache_resource(max_entries=128, show_spinner="Quantizing the layer under every candidate…")
def layer_errors(source: ModelSource, layer: str, with_activations: bool) -> dict[str, choose.LayerError]:
    w = lab_ui.weight(source, f"{layer}.weight")
    x = lab_ui.activations(source)[layer] if with_activations else None
    dtype = models.list_tensors(source)[f"{layer}.weight"].dtype
    return {slug: choose.layer_error(slug, w, x, dtype) for slug in choose.CANDIDATES}


@st.cache_resource(max_entries=16, show_spinner="Sizing the checkpoint from its config…")
def file_sizes(arch: str) -> dict[str, choose.FileSize]:
    return choose.file_sizes(arch, choose.CANDIDATES)


@st.cache_resource(show_spinner=False)
def gpu_run(name: str) -> speed.Results:
    return speed.committed_run(name)


@st.cache_resource(max_entries=32, show_spinner="Running the whole embedded model under each candidate…")
def whole_cosine(slug: str) -> float:
    lab_ui.spend_heavy_run("A whole-model run")
    return whole_model.run(scheme_spec(slug)).cosine_mean


@st.cache_resource(show_spinner="Quantizing real keys and values to FP8…")
def fp8_kv_db() -> float:
    return choose.fp8_kv_attention_db()


@st.cache_resource(max_entries=64, show_spinner="Calibrating static scales on more and more sentences…")
def calibration(source: ModelSource, layer: str) -> choose.CalibrationSize:
    return choose.calibration_size(layer, source=source)


@st.cache_resource(max_entries=8, show_spinner=False)
def model_id(arch: str) -> str:
    return sizing.load_checkpoint(arch).label


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("choose", "intro")

c1, c2, c3 = st.columns([1.4, 1.2, 1])
priority = lab_ui.control(c1.radio, "What matters most", "ch_priority", "balance", list(choose.PRIORITIES),
                          format_func=choose.PRIORITIES.get)
hw = lab_ui.control(c2.selectbox, "What runs it", "ch_hw", "hopper", list(hardware.HARDWARE),
                    format_func=hardware.HARDWARE.get)
archs = kv_cache.architectures()
arch = lab_ui.control(c2.selectbox, "Deploy (size, KV, speed shapes)", "ch_arch",
                      "llama-3.1-8b" if "llama-3.1-8b" in archs else archs[0], archs)
floor = lab_ui.control(c3.slider, "Quality floor (dB)", "ch_floor", choose.DEFAULT_FLOOR_DB, min_value=5.0,
                       max_value=50.0, step=1.0, help="The lowest SQNR on the sidebar layer you accept.")
batch = lab_ui.control(c3.select_slider, "Batch (sequences at once)", "ch_batch", 1, BATCHES)
context = lab_ui.control(c3.select_slider, "Context (tokens)", "ch_context", 32768, CONTEXTS)

runs = speed.committed_results()
with lab_ui.user_errors():
    if not runs:
        raise QuantlabError("no committed GPU run in quantlab/data/gpu: the speed evidence is missing")
    res = gpu_run(runs[0].stem)
    errors = layer_errors(sel.source, sel.layer, sel.has_activations)
    sizes = file_sizes(arch)
    # Every candidate's whole-model run costs seconds on a shared CPU: on request only, then cached.
    everyone = sel.source.is_embedded and st.session_state.get("ch_whole", False)
    cosines = {s: whole_cosine(s) for s, e in errors.items() if e.skipped is None} if everyone else None
    mem = choose.memory(arch, context, batch, fp8_kv_db())
    rows = choose.evidence(errors, sizes, choose.speedups(res, batch), hw, cosines)
    metric = "layer-output SQNR" if sel.has_activations else "weight SQNR"
    timed_batch = choose.nearest_batch(res, batch)
    rec = choose.recommend(rows, priority, hw, floor, metric, mem, batch, timed_batch, str(res.meta["card"]))
pick = next(r for r in rows if r.slug == rec.slug)
whole = ""
if sel.source.is_embedded and sel.has_activations:
    with lab_ui.user_errors():
        whole = f" Whole embedded model at {pick.label}: embedding cosine to fp32 {whole_cosine(pick.slug):.4f}."
st.success(f"**{pick.label}**" + (" + FP8 KV cache" if rec.kv_fp8 else "") + f" — {rec.reason}{whole}",
           icon=":material/checklist:")
if not sel.has_activations:
    st.caption(f"{sel.source.label} gives weights only: errors are weight SQNR; layer-output SQNR, whole-model "
               "quality and the calibration check need real activations (the embedded model or a local causal LM).")

# -- recipes -----------------------------------------------------------------------------------------------
st.subheader("Recipes")
lab_ui.lesson_section("choose", "recipes")
export_arg = "embedded" if sel.source.is_embedded else ("./your-model" if lab_ui.ROOM else sel.source.path)
with lab_ui.user_errors():
    rcp = recipes.recipes(rec.slug, model_id(arch), hw, rec.kv_fp8, export_arg)
t1, t2, t3 = st.tabs(["llm-compressor", "Load and serve", "quantlab export"])
t1.code(rcp.llm_compressor, language="python")
t2.code(rcp.load, language=rcp.load_language)
if rcp.load_language == "python":
    t2.caption(f"Reads this checkpoint: {rcp.runtimes}.")
t3.code(rcp.export, language="bash")

# -- evidence ----------------------------------------------------------------------------------------------
st.subheader("The evidence")
lab_ui.check(checks.fastest_kernel, res, batch, key=(res.name, batch))
lab_ui.chart(figures.evidence_scatter, rows, rec.slug, metric, arch, hardware.HARDWARE[hw],
             key=(sel.source, sel.layer, arch, hw, batch, rec.slug),
             code=snippets.choose_evidence(sel.source, sel.layer, sel.has_activations, arch, res.name, batch, hw))
lab_ui.lesson_section("choose", "evidence")
evidence = pd.DataFrame(choose.table(rows, metric, hw)).set_index("scheme")
st.dataframe(evidence.style.format(precision=3, na_rep="—", thousands=","), width="stretch")
if sel.source.is_embedded and sel.has_activations and not everyone:
    st.button("Add whole-model quality for every candidate", key="ch_whole_run",
              on_click=lambda: st.session_state.update(ch_whole=True))
st.download_button("Download this table (CSV)", evidence.to_csv().encode(), f"choose-{sel.layer}-{arch}-{hw}.csv",
                   "text/csv", key="ch_csv", icon=":material/download:")
st.caption(f"Layer `{sel.layer}` of {sel.source.label}; sizes of the {arch} checkpoint compressed-tensors writes; "
           f"speed: geomean over the {res.label} run's shapes at batch {timed_batch}.")
lab_ui.check(checks.weights_or_kv, mem, pick.label, pick.file.total_bytes, key=(arch, context, batch, rec.slug))
bf16 = kv_cache.weight_bytes(arch, "bf16")
bars = [("bf16 + 16-bit KV", bf16, mem.kv16_bytes), (f"{pick.label} + 16-bit KV", pick.file.total_bytes,
                                                     mem.kv16_bytes),
        (f"{pick.label} + FP8 KV", pick.file.total_bytes, mem.kv8_bytes)]
lab_ui.chart(figures.memory_bars, mem, bars, key=(arch, context, batch, rec.slug),
             code=snippets.choose_memory(arch, context, batch, rec.slug))

# -- the syllabus, checked -----------------------------------------------------------------------------------
st.subheader("The syllabus' table, checked")
lab_ui.lesson_section("choose", "syllabus")
with lab_ui.user_errors():
    checked = choose.check_syllabus(rows, hw, floor, metric, mem)
st.dataframe(pd.DataFrame([{"scenario": c.scenario, "syllabus says": c.syllabus, "verdict": c.verdict,
                            "measured": c.evidence} for c in checked]).set_index("scenario"), width="stretch")

# -- hardware --------------------------------------------------------------------------------------------------
st.subheader("Which hardware runs which format")
lab_ui.lesson_section("choose", "hardware")
st.dataframe(pd.DataFrame(hardware.rows()).set_index("hardware"), width="stretch")
with st.expander("Sources, entry by entry"):
    st.dataframe(pd.DataFrame(hardware.source_rows()), hide_index=True, width="stretch")

# -- misconceptions ---------------------------------------------------------------------------------------------
st.subheader("Common misconceptions, measured")
speed_facts = choose.int4_speed(res, batch)
four = choose.four_bit_file()
asym = choose.asym_cost(rows)
kinds = four.by_kind


def _x(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


lab_ui.lesson_section(
    "choose", "misconceptions", card=res.meta["card"], torch_cross=_x(speed_facts.torch_int4_crossover),
    w4_cross=_x(speed_facts.w4a16_crossover), w4_now=f"{speed_facts.at_batch or float('nan'):.2f}",
    params=f"{four.parameters / 1e9:.2f} B", naive=sizing.format_bytes(four.naive_bytes),
    real=sizing.format_bytes(four.total_bytes), embed=sizing.format_bytes(kinds.get("embeddings", 0)),
    head=sizing.format_bytes(kinds.get("lm_head", 0)), scales=sizing.format_bytes(kinds.get("scales", 0)),
    context=f"{context:,}", batch=batch, kv=sizing.format_bytes(mem.kv16_bytes), arch=arch,
    weights=sizing.format_bytes(mem.weights_bytes), asym_gain=f"{asym.asym_db - asym.sym_db:+.2f}",
    asym_bytes=sizing.format_bytes(asym.extra_bytes), asym_runtimes=f"it loads in {asym.runtimes}",
)
if sel.has_activations:
    with lab_ui.user_errors():
        cal = calibration(sel.source, sel.layer)
    lab_ui.lesson_section(
        "choose", "calibration", calib_sentences=" / ".join(map(str, cal.sentences)), calib_text=cal.calibration,
        calib_db=" / ".join(f"{v:.2f}" for v in cal.static_db), eval_text=cal.evaluation,
        dynamic_db=f"{cal.dynamic_db:.2f}")
else:
    st.caption("“More calibration data always helps” is measured on real activations: pick the embedded model "
               "or a local causal LM.")
