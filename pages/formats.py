"""Lesson: precision formats down to their bits, on typed numbers and on real tensors."""
import pandas as pd
import streamlit as st

import lab_ui
from quantlab.core import formats
from quantlab.core.errors import QuantlabError
from quantlab.core.spec import QuantSpec
from quantlab.io import sizing
from quantlab.io.models import ModelSource
from quantlab.lessons import checks, snippets
from quantlab.lessons import formats as formats_lesson
from quantlab.viz import formats as figures

FIELD_COLORS = {"sign": "red", "exponent": "blue", "mantissa": "orange", "two's complement": "violet",
                "table index": "violet"}
# slug -> (label, weight strategy, activation strategy)
GRANULARITY = {"tensor": ("per-tensor (one scale)", "tensor", "tensor"),
               "channel": ("per-channel weight / per-token activation", "channel", "token")}
CUSTOM = "custom"


@st.cache_resource(max_entries=128, show_spinner=False)
def duel(source: ModelSource, layer: str, tensor: str, strategy: str) -> formats_lesson.FormatDuel:
    return formats_lesson.fp8_vs_int8(lab_ui.layer_tensor(source, layer, tensor), strategy)


@st.cache_resource(max_entries=64, show_spinner=False)
def block_scales(source: ModelSource, layer: str) -> formats_lesson.BlockScales:
    return formats_lesson.block_scales(lab_ui.weight(source, f"{layer}.weight"))


@st.cache_resource(show_spinner=False)
def ffn_numbers() -> dict[str, float]:
    return formats_lesson.ffn_numbers()


@st.cache_resource(show_spinner="Building the architecture on the meta device…")
def params_of(arch: str) -> int:
    return sizing.model_size(arch, QuantSpec.preset("W8A16")).num_params


@st.cache_resource(show_spinner=False)
def format_table() -> pd.DataFrame:
    return pd.DataFrame(figures.format_rows()).set_index("format")


def bits_markdown(fields: formats.BitFields) -> str:
    return " ".join(f":{FIELD_COLORS[name]}[**{bits}**]" for name, bits in fields.segments)


sel = lab_ui.selection()
lab_ui.title(__file__)
lab_ui.lesson_section("formats", "intro")

# -- a typed number in every format ---------------------------------------------------------------
st.subheader("One number, every format")
value = lab_ui.control(st.number_input, "Type a number", "fmt_value", 3.14159, format="%.8g",
                       help="Try 0.1, 1000, 70000, 1e-5 or −2.75.")
with lab_ui.user_errors():
    rows = [(f, formats.bit_fields(value, name)) for name, f in formats.FORMATS.items()]
legend = " · ".join(f":{c}[{n}]" for n, c in FIELD_COLORS.items() if n != "table index")
lines = ["| format | bits | stored value | error | relative error | note |", "|---|---|---|---|---|---|"]
for f, b in rows:
    note = "saturated at ±max" if b.saturated else ("subnormal" if b.subnormal else "")
    lines.append(f"| {f.label} | {bits_markdown(b)} | {b.stored:.9g} | {b.error:+.3g} | "
                 f"{100 * b.relative_error:.3g}% | {note} |")
st.markdown("\n".join(lines))
st.caption(f"Fields: {legend} · table index (NF4). Integer formats and NF4 store codes: here with scale 1; "
           "a real quantizer divides by a scale first (next lessons).")
lab_ui.lesson_section("formats", "bits")

# -- the formats as data --------------------------------------------------------------------------
st.subheader("The formats side by side")
st.dataframe(format_table(), width="stretch")
log_x = lab_ui.control(st.toggle, "Log value axis", "fmt_logx", False,
                       help="On a log axis float levels are evenly spaced and integer levels crowd at the top.")
lab_ui.check(checks.int4_levels_used, lab_ui.weight(sel.source, sel.weight_name), key=(sel.source, sel.layer))
lab_ui.chart(figures.level_chart, log_x, code=snippets.formats_levels(figures.GRID_FORMATS))
lab_ui.lesson_section("formats", "levels")
left, right = st.columns(2)
lab_ui.chart(figures.precision_chart, where=left, code=snippets.formats_precision())
lab_ui.chart(figures.range_chart, where=right, code=snippets.formats_range())
lab_ui.lesson_section("formats", "range")

# -- FP8 against INT8 on real tensors -------------------------------------------------------------
st.subheader("FP8 or INT8? On a real weight and a real activation")
gran = lab_ui.control(st.radio, "Scale granularity", "fmt_gran", "channel", list(GRANULARITY),
                      format_func=lambda g: GRANULARITY[g][0], horizontal=True)
_, w_strategy, a_strategy = GRANULARITY[gran]
strategies = {t: w_strategy if t == "weight" else a_strategy for t in lab_ui.tensor_choices(sel)}
st.markdown(f"Layer `{sel.layer}` (pick another in the sidebar).")
# A tensor the duel cannot use (all zeros, NaN) is one line; the memory calculator below still runs.
try:
    duels = {t: duel(sel.source, sel.layer, t, s) for t, s in strategies.items()}
except QuantlabError as err:
    st.error(str(err), icon=":material/warning:")
    duels = {}
if duels:
    lab_ui.check(checks.int8_or_fp8, lab_ui.weight(sel.source, sel.weight_name), w_strategy,
                 key=(sel.source, sel.layer, w_strategy))
for col, (tensor, d) in zip(st.columns(max(len(duels), 1)), duels.items()):
    lab_ui.chart(figures.duel_chart, d, f"The {lab_ui.TENSORS[tensor]}: error by magnitude",
                 key=(sel.source, sel.layer, tensor, strategies[tensor]), where=col,
                 code=snippets.formats_duel(sel.source, sel.layer, tensor, strategies[tensor]))
lab_ui.weights_only_note(sel)
lab_ui.lesson_section("formats", "duel", **ffn_numbers())

# -- microscaling: a scale per block -----------------------------------------------------------
st.subheader("FP4 needs a scale per block: NVFP4 and MXFP4")
try:
    blocks = block_scales(sel.source, sel.layer)
except QuantlabError as err:  # rows that 32 does not divide have no MX blocks
    st.info(str(err), icon=":material/info:")
else:
    lab_ui.chart(figures.block_scale_chart, blocks, key=(sel.source, sel.layer),
                 code=snippets.formats_blocks(sel.source, sel.layer),
                 headline=("NVFP4 against MXFP4 on this layer",
                           f"{blocks.sqnr_db['NVFP4']:.1f} vs {blocks.sqnr_db['MXFP4']:.1f} dB"))
    lab_ui.lesson_section("formats", "microscaling", nv_db=blocks.sqnr_db["NVFP4"], mx_db=blocks.sqnr_db["MXFP4"],
                          int_db=blocks.sqnr_db.get("INT4 g128", float("nan")), nv_bits=blocks.bits["NVFP4"],
                          mx_bits=blocks.bits["MXFP4"], int_bits=blocks.bits.get("INT4 g128", float("nan")),
                          gs=blocks.global_scale, mx_over=blocks.mx_over_ideal, below=blocks.below_e4m3_normal)

# -- model memory ---------------------------------------------------------------------------------
st.subheader("Model memory calculator")
presets = [CUSTOM] + list(sizing.shipped_configs())
preset = lab_ui.control(st.selectbox, "Architecture", "fmt_arch", CUSTOM, presets,
                        format_func=lambda p: "Custom" if p == CUSTOM else p,
                        help="Parameter counts of shipped config.json files, built on the meta device (no weights).")
if preset == CUSTOM:
    params = lab_ui.control(st.number_input, "Parameters (billions)", "fmt_params", 7.0, min_value=0.001,
                            max_value=2000.0, step=0.5) * 1e9
else:
    with lab_ui.user_errors():
        params = params_of(preset)
st.markdown(f"**{params:,.0f} parameters** × bits per parameter ÷ 8 = bytes. "
            f"1 GB = 10⁹ bytes; 1 GiB = 2³⁰ = {formats_lesson.GIB:,} bytes.")
memory = pd.DataFrame(figures.memory_table(params))
st.dataframe(memory.set_index("format"), width="stretch",
             column_config={"bits per parameter": st.column_config.NumberColumn(format="%.4g"),
                            **{c: st.column_config.NumberColumn(format="%.2f") for c in memory.columns[2:]}})
seven = {r.format: r for r in formats_lesson.weight_memory(7e9)}
bare = {r.format: r for r in formats_lesson.weight_memory(7e9, with_scales=False)}
st.info(f"**Syllabus check.** \"A 7B model in FP16 needs ~14 GB\": 7×10⁹ × 16 bits = {seven['FP16'].gb:.2f} GB "
        f"= {seven['FP16'].gib:.2f} GiB — right in GB, 7% high if read as GiB. \"INT4 needs ~3.5 GB\": the 4-bit "
        f"codes alone are {bare['INT4'].gb:.2f} GB, but with one 16-bit scale per 128 weights it is "
        f"{seven['INT4'].gb:.2f} GB ({seven['INT4'].gib:.2f} GiB); the scales add "
        f"{sizing.format_bytes(seven['INT4'].scale_bytes)}, not the ~50 MB the syllabus quotes.",
        icon=":material/search:")
lab_ui.lesson_section("formats", "memory")
