"""Lesson: precision formats down to their bits, on typed numbers and on real tensors."""
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
import streamlit as st

import lab_ui
from quantlab import formats, sizing, viz
from quantlab.models import ModelSource
from quantlab.spec import QuantSpec

FIELD_COLORS = {"sign": "red", "exponent": "blue", "mantissa": "orange", "two's complement": "violet",
                "table index": "violet"}
GRID_FORMATS = ["int8", "fp8_e4m3", "fp8_e5m2", "int4", "nf4", "fp4_e2m1"]
GRANULARITY = {"per-tensor (one scale)": ("tensor", "tensor"),
               "per-channel weight / per-token activation": ("channel", "token")}
CUSTOM = "Custom"
COLORS = dict(zip(formats.FORMATS, viz.SERIES + [viz.PALETTE["data"]]))
LABEL_POSITION = {"INT4": "top center", "NF4": "middle right", "FP4 E2M1": "bottom center"}


@st.cache_data(max_entries=128, show_spinner=False)
def duel(source: ModelSource, layer: str, tensor: str, strategy: str) -> formats.FormatDuel:
    x = lab_ui.weight(source, f"{layer}.weight") if tensor == "weight" else lab_ui.activations()[layer]
    return formats.fp8_vs_int8(x, strategy)


@st.cache_data(show_spinner="Building the architecture on the meta device…")
def params_of(arch: str) -> int:
    return sizing.model_size(arch, QuantSpec.preset("W8A16")).num_params


@st.cache_data(show_spinner=False)
def format_table() -> pd.DataFrame:
    return pd.DataFrame(formats.format_table()).set_index("format")


def bits_markdown(fields: formats.BitFields) -> str:
    return " ".join(f":{FIELD_COLORS[name]}[**{bits}**]" for name, bits in fields.segments)


@st.cache_data(show_spinner=False)
def level_chart(log_x: bool) -> go.Figure:
    fig = go.Figure()
    for name in GRID_FORMATS:
        levels = formats.positive_levels(name).tolist()
        label = formats.get_format(name).label
        fig.add_trace(go.Scatter(x=levels, y=[label] * len(levels), mode="markers", name=label,
                                 marker=dict(symbol="line-ns-open", size=14, color=COLORS[name]),
                                 hovertemplate=f"{label}: %{{x:.4g}} × max<extra></extra>", showlegend=False))
    fig.update_xaxes(type="log" if log_x else "linear")
    return viz.styled(fig, "Where the levels sit: each format's positive values, divided by its largest",
                      "value / largest value (unitless)" + (", log scale" if log_x else ""), "format", height=340)


@st.cache_data(show_spinner=False)
def precision_chart() -> go.Figure:
    fig = go.Figure()
    for name in formats.FORMATS:
        mags, rel = formats.precision_curve(name, 2.0**-26, 2.0**17, points=3000)
        fig.add_trace(go.Scatter(x=mags.tolist(), y=(100 * rel).tolist(), mode="lines",
                                 name=formats.get_format(name).label, line=dict(color=COLORS[name], width=1.4)))
    fig.update_xaxes(type="log", exponentformat="power")
    fig.update_yaxes(type="log")
    return viz.styled(fig, "Relative precision against magnitude (unit scale)", "magnitude |x| (log scale)",
                      "step to the next value / |x| (%, log scale)", height=420)


@st.cache_data(show_spinner=False)
def range_chart() -> go.Figure:
    rows = formats.format_table()
    fig = go.Figure(go.Scatter(
        x=[r["range (binades)"] for r in rows], y=[r["precision at top (bits)"] for r in rows],
        text=[r["format"] for r in rows], mode="markers+text",
        textposition=[LABEL_POSITION.get(str(r["format"]), "top center") for r in rows],
        marker=dict(size=11, color=[COLORS[n] for n in formats.FORMATS]),
        hovertemplate="%{text}: %{x:.1f} binades, %{y:.2f} bits<extra></extra>"))
    fig.update_xaxes(type="log")
    return viz.styled(fig, "Dynamic range against precision", "dynamic range: log2(largest / smallest positive) (binades, log scale)",
                      "precision at the top: log2(largest / last step) (bits)", height=400)


def duel_chart(d: formats.FormatDuel, title: str) -> go.Figure:
    centers = [(a * b) ** 0.5 for a, b in zip(d.band_edges[:-1], d.band_edges[1:])]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    for i, (label, errs) in enumerate(d.band_rel_error.items()):
        fig.add_trace(go.Scatter(x=centers, y=[100 * e for e in errs], name=f"{label} ({d.sqnr_db[label]:.1f} dB)",
                                 mode="lines+markers", line=dict(color=viz.SERIES[i])), row=1, col=1)
    fig.add_trace(go.Scatter(x=centers, y=[100 * s for s in d.band_share], name="share of values",
                             mode="lines", line=dict(color=viz.PALETTE["data"], shape="hvh"), fill="tozeroy",
                             hovertemplate="%{y:.2f}% of values<extra></extra>"), row=2, col=1)
    fig.update_xaxes(type="log")
    fig = viz.styled(fig, title, "|x| (log scale)", "mean relative error (%, log scale)", height=440)
    fig.update_xaxes(title_text=None, row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="values (%)", row=2, col=1)
    return fig


sel = lab_ui.selection()
st.title("🔢 Precision formats")
lab_ui.lesson_section("formats", "intro")

# -- a typed number in every format ---------------------------------------------------------------
st.subheader("One number, every format")
value = st.number_input("Type a number", value=3.14159, format="%.8g", key="fmt_value",
                        help="Try 0.1, 1000, 70000, 1e-5 or −2.75.")
with lab_ui.user_errors():
    rows = [(f, formats.bit_fields(value, name)) for name, f in formats.FORMATS.items()]
legend = " · ".join(f":{c}[{n}]" for n, c in FIELD_COLORS.items() if n != "table index")
lines = ["| format | bits | stored value | error | relative error | note |", "|---|---|---|---|---|---|"]
for f, b in rows:
    note = "saturated at ±max" if b.saturated else ("subnormal" if b.subnormal else "")
    lines.append(f"| {f.label} | {bits_markdown(b)} | {b.stored:.9g} | {b.error:+.3g} | {100 * b.relative_error:.3g}% | {note} |")
st.markdown("\n".join(lines))
st.caption(f"Fields: {legend} · table index (NF4). Integer formats and NF4 store codes: here with scale 1; "
           "a real quantizer divides by a scale first (next lessons).")
lab_ui.lesson_section("formats", "bits")

# -- the formats as data --------------------------------------------------------------------------
st.subheader("The formats side by side")
st.dataframe(format_table(), width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.4g")
                            for c in ("largest", "smallest normal", "smallest positive")})
log_x = st.toggle("Log value axis", value=False, key="fmt_logx",
                  help="On a log axis float levels are evenly spaced and integer levels crowd at the top.")
st.plotly_chart(level_chart(log_x), width="stretch")
lab_ui.lesson_section("formats", "levels")
left, right = st.columns(2)
left.plotly_chart(precision_chart(), width="stretch")
right.plotly_chart(range_chart(), width="stretch")
lab_ui.lesson_section("formats", "range")

# -- FP8 against INT8 on real tensors -------------------------------------------------------------
st.subheader("FP8 or INT8? On a real weight and a real activation")
gran = st.radio("Scale granularity", list(GRANULARITY), key="fmt_gran", horizontal=True,
                index=list(GRANULARITY).index(lab_ui.url_choice("fmt_gran", list(GRANULARITY), list(GRANULARITY)[0])))
lab_ui.set_url(fmt_gran=gran)
w_strategy, a_strategy = GRANULARITY[gran]
with lab_ui.user_errors():
    tensors = [("weight", w_strategy)] + ([("input activation", a_strategy)] if sel.has_activations else [])
    duels = {t: duel(sel.source, sel.layer, t, s) for t, s in tensors}
st.markdown(f"Layer `{sel.layer}` (pick another in the sidebar).")
cols = st.columns(len(duels))
for col, (tensor, d) in zip(cols, duels.items()):
    col.plotly_chart(duel_chart(d, f"The {tensor}: error by magnitude"), width="stretch")
if not sel.has_activations:
    st.caption("Activations are captured from the embedded model only; this source shows the weight.")
lab_ui.lesson_section("formats", "duel")

# -- model memory ---------------------------------------------------------------------------------
st.subheader("Model memory calculator")
presets = [CUSTOM] + list(sizing.shipped_configs())
preset = st.selectbox("Architecture", presets, key="fmt_arch",
                      index=presets.index(lab_ui.url_choice("arch", presets, CUSTOM)),
                      help="Parameter counts of shipped config.json files, built on the meta device (no weights).")
lab_ui.set_url(arch=preset)
if preset == CUSTOM:
    params = st.number_input("Parameters (billions)", min_value=0.001, max_value=2000.0, value=7.0, step=0.5,
                             key="fmt_params") * 1e9
else:
    with lab_ui.user_errors():
        params = params_of(preset)
st.markdown(f"**{params:,.0f} parameters** × bits per parameter ÷ 8 = bytes. "
            f"1 GB = 10⁹ bytes; 1 GiB = 2³⁰ = {formats.GIB:,} bytes.")
memory = pd.DataFrame([{"format": r.format, "bits per parameter": r.bits_per_param,
                        "GB (10⁹ B)": r.gb, "GiB (2³⁰ B)": r.gib} for r in formats.weight_memory(params)])
st.dataframe(memory.set_index("format"), width="stretch",
             column_config={"bits per parameter": st.column_config.NumberColumn(format="%.4g"),
                            **{c: st.column_config.NumberColumn(format="%.2f") for c in memory.columns[2:]}})
seven = {r.format: r for r in formats.weight_memory(7e9)}
bare = {r.format: r for r in formats.weight_memory(7e9, with_scales=False)}
st.info(f"**Syllabus check.** \"A 7B model in FP16 needs ~14 GB\": 7×10⁹ × 16 bits = {seven['FP16'].gb:.2f} GB "
        f"= {seven['FP16'].gib:.2f} GiB — right in GB, 7% high if read as GiB. \"INT4 needs ~3.5 GB\": the 4-bit "
        f"codes alone are {bare['INT4'].gb:.2f} GB, but with one 16-bit scale per 128 weights it is "
        f"{seven['INT4'].gb:.2f} GB ({seven['INT4'].gib:.2f} GiB); the scales add "
        f"{sizing.format_bytes(seven['INT4'].scale_bytes)}, not the ~50 MB the syllabus quotes.", icon="🔎")
lab_ui.lesson_section("formats", "memory")
