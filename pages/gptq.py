"""Lesson: GPTQ on a real layer — error feedback against round-to-nearest, and what calibration decides."""
import streamlit as st

import lab_ui
from quantlab.core.gptq import GptqArgs
from quantlab.core.spec import SCHEMES, label, scheme_spec
from quantlab.io import models
from quantlab.lessons import checks, gptq, snippets
from quantlab.viz import gptq as figures

# Integer weight-only schemes: GPTQ quantizes weights, and these are the ones it is used with.
WEIGHT_SCHEMES = [slug for slug, s in SCHEMES.items()
                  if s.spec is not None and s.spec.activations is None and s.spec.type == "int"]
GROUPS = {"static": "static (scales from the original weight)", "dynamic": "dynamic (scales as each group is reached)"}


@st.cache_resource(max_entries=64, show_spinner="Running GPTQ on the layer…")
def study(source: models.ModelSource, layer: str, slug: str, args: GptqArgs, calibration: str, sentences: int,
          eval_kind: str) -> gptq.LayerStudy:
    return gptq.embedded_study(layer, scheme_spec(slug), args, calibration, sentences, eval_kind, source)


@st.cache_resource(max_entries=32, show_spinner="Calibrating GPTQ on every sample text…")
def by_text(source: models.ModelSource, layer: str, slug: str, args: GptqArgs, sentences: int,
            eval_kind: str) -> list[gptq.CalibrationPoint]:
    lab_ui.spend_heavy_run("GPTQ on every calibration text")
    return gptq.calibration_study(layer, scheme_spec(slug), args, sentences, eval_kind, source)


@st.cache_resource(max_entries=32, show_spinner="Calibrating GPTQ on more and more text…")
def by_samples(source: models.ModelSource, layer: str, slug: str, args: GptqArgs, calibration: str,
               eval_kind: str) -> list[gptq.CalibrationPoint]:
    lab_ui.spend_heavy_run("GPTQ on more and more text")
    return gptq.samples_curve(layer, scheme_spec(slug), args, calibration, eval_kind, source)


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("gptq", "intro")
lab_ui.require_activations(sel, "GPTQ")

c1, c2, c3, c4, c5 = st.columns([1.3, 1, 1, 0.8, 1.5])
slug = lab_ui.control(c1.selectbox, "Scheme", "gptq_scheme", "w4a16", WEIGHT_SCHEMES, format_func=label)
block = lab_ui.control(c2.select_slider, "Block size", "gptq_block", 128, [16, 32, 64, 128, 256],
                       help="Columns updated together before their error reaches the rest (speed only).")
damp = lab_ui.control(c3.select_slider, "Dampening", "gptq_damp", 0.01, [0.001, 0.01, 0.05, 0.1, 0.3],
                      format_func=lambda d: f"{d:g}", help="Added to H's diagonal, as a fraction of its mean.")
actorder = lab_ui.control(c4.toggle, "Act-order", "gptq_actorder", True,
                          help="Quantize the columns with the most input energy first.")
groups = lab_ui.control(c5.radio, "Groups", "gptq_groups", "static", list(GROUPS), format_func=GROUPS.get)
kinds = models.calibration_kinds()
k1, k2, k3 = st.columns(3)
eval_kind = lab_ui.control(k1.selectbox, "Evaluation text (error measured on)", "gptq_eval", "general", kinds)
calibration = lab_ui.control(k2.selectbox, "Calibration text (Hessian from)", "gptq_calib", gptq.OTHERS,
                             gptq.calibration_choices(),
                             format_func=lambda c: "every other text" if c == gptq.OTHERS else c)
sentences = lab_ui.control(k3.slider, "Calibration sentences per text", "gptq_sentences", 40,
                           min_value=1, max_value=40)

with lab_ui.user_errors():
    args = GptqArgs(block_size=block, dampening=damp, actorder=actorder, groups=groups)
    result = study(sel.source, sel.layer, slug, args, calibration, sentences, eval_kind)

view = (sel.source, sel.layer, slug, args, calibration, sentences, eval_kind)
lab_ui.check(checks.gptq_beats_rtn, result, calibration, eval_kind, key=view)
lab_ui.check(checks.gptq_weight_error, result, key=view)
numbers = result.numbers()
m1, m2, m3, m4 = st.columns(4)
m1.metric("Layer-output SQNR, RTN", f"{result.rtn_output_db:.1f} dB")
m2.metric("Layer-output SQNR, GPTQ", f"{result.gptq_output_db:.1f} dB", f"{result.gain_db:+.1f} dB")
m3.metric("Weight SQNR, RTN → GPTQ", f"{result.rtn_weight_db:.1f} → {result.gptq_weight_db:.1f} dB")
m4.metric("GPTQ time", f"{result.seconds:.2f} s", help="Hessian and GPTQ on this machine's CPU, one thread.")
st.caption(f"`{sel.layer}`, {label(slug)}, Hessian from {result.calibration_tokens:,} calibration tokens"
           + (" · the dampened Hessian was not positive definite: GPTQ fell back to RTN" if result.rtn_fallback
              else ""))
lab_ui.lesson_section("gptq", "result", **numbers)

st.subheader("Where the error goes")
lab_ui.chart(figures.column_errors, result.columns,
             key=(sel.source, sel.layer, slug, args, calibration, sentences, eval_kind),
             headline=("GPTQ gain on the layer output", f"{result.gain_db:+.1f} dB"),
             code=snippets.gptq_study(sel.source, sel.layer, scheme_spec(slug), args, calibration, sentences,
                                      eval_kind))
lab_ui.lesson_section("gptq", "columns", **numbers)

st.subheader("Which calibration text")
# Ten more GPTQ runs (every text, then more and more of it): on request, so that moving a control
# above costs one GPTQ run, not eleven, when a room shares the server.
if lab_ui.control(st.toggle, "Compare calibration texts and amounts (10 more GPTQ runs, a few seconds)",
                  "gptq_sweep", False):
    # The block size changes how fast GPTQ runs, not what it computes: the sweeps share one result
    # across block sizes instead of recomputing it for each.
    sweep_args = gptq.sweep_args(args)
    with lab_ui.user_errors():
        rows = by_text(sel.source, sel.layer, slug, sweep_args, sentences, eval_kind)
        curve = by_samples(sel.source, sel.layer, slug, sweep_args, calibration, eval_kind)
    lab_ui.chart(figures.calibration_bars, rows, eval_kind,
                 key=(sel.source, sel.layer, slug, sweep_args, sentences, eval_kind),
                 code=snippets.gptq_calibration(sel.source, sel.layer, scheme_spec(slug), sweep_args, sentences,
                                                eval_kind))
    rtn_db = rows[-1].output_db
    lab_ui.lesson_section("gptq", "calibration", eval_kind=eval_kind,
                          same_db=f"{next(r.output_db for r in rows if r.calibration == eval_kind):.1f}",
                          others_db=f"{rows[0].output_db:.1f}", rtn_db=f"{rtn_db:.1f}")
    lab_ui.chart(figures.samples_curve, curve, rtn_db,
                 key=(sel.source, sel.layer, slug, sweep_args, calibration, eval_kind),
                 code=snippets.gptq_samples(sel.source, sel.layer, scheme_spec(slug), sweep_args, calibration,
                                            eval_kind))
    lab_ui.lesson_section("gptq", "samples", few_tokens=f"{curve[0].tokens:,}", few_db=f"{curve[0].output_db:.1f}",
                          many_tokens=f"{curve[-1].tokens:,}", many_db=f"{curve[-1].output_db:.1f}")
lab_ui.lesson_section("gptq", "takeaways")
