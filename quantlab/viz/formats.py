"""Figures and tables for the Precision formats lesson (pure: data in, `go.Figure` or rows out, house style)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from quantlab.core import formats
from quantlab.lessons import formats as formats_lesson
from quantlab.viz.style import PALETTE, SERIES, styled

# The formats worth comparing level by level: the 16/32-bit grids are too dense to see.
GRID_FORMATS = ("int8", "fp8_e4m3", "fp8_e5m2", "int4", "nf4", "fp4_e2m1")
# One colour per format, the same in every chart of the lesson.
COLORS = dict(zip(formats.FORMATS, SERIES + [PALETTE["data"]]))
# INT4, NF4 and FP4 land almost on one point of the range chart: push their labels apart.
LABEL_POSITION = {"INT4": "top center", "NF4": "middle right", "FP4 E2M1": "bottom center"}


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_text(v: float) -> str:
    """A full number for every tick, so a log axis never reads "2 5" for 20 and 50 or 0.2 and 0.5."""
    if 1e-3 <= v < 1e5:
        return f"{v:,g}"
    exponent = math.floor(math.log10(v) + 1e-9)
    mantissa = round(v / 10**exponent, 6)
    power = "10" + str(exponent).translate(SUPERSCRIPT)
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def log_axis(lo: float, hi: float) -> dict[str, object]:
    """Log-axis settings whose ticks (1-2-5 steps, or decades over a wide span) all carry labels."""
    if not 0 < lo <= hi:
        raise ValueError(f"a log axis needs 0 < lo <= hi, got {lo}, {hi}")
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    candidates = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9))
    steps = candidates[0] if last - first > 4 else candidates[1]
    ticks: list[float] = []
    for mult in (steps, candidates[2]):
        # A little beyond the data: the axis pads its range, and a tick it does not show costs nothing.
        ticks = [m * 10.0**d for d in range(first - 1, last + 1) for m in mult if lo / 2 <= m * 10.0**d <= hi * 2]
        if len(ticks) >= 3:
            break
    else:  # a span narrower than the 1…9 steps: the ends and the middle, to two digits
        ticks = sorted({float(f"{v:.2g}") for v in (lo, math.sqrt(lo * hi), hi)})
    return dict(type="log", tickvals=ticks, ticktext=[tick_text(v) for v in ticks])


def level_chart(log_x: bool, names: Sequence[str] = GRID_FORMATS) -> go.Figure:
    """Each format's positive values divided by its largest, one row of ticks per format."""
    fig = go.Figure()
    for name in names:
        levels = formats.positive_levels(name).tolist()
        label = formats.get_format(name).label
        fig.add_trace(go.Scatter(x=levels, y=[label] * len(levels), mode="markers", name=label,
                                 marker=dict(symbol="line-ns-open", size=14, color=COLORS[name]),
                                 hovertemplate=f"{label}: %{{x:.4g}} × max<extra></extra>", showlegend=False))
    fig.update_xaxes(type="log" if log_x else "linear")
    return styled(fig, "Where the levels sit: each format's positive values, divided by its largest",
                  "value / largest value (unitless)" + (", log scale" if log_x else ""), "format", height=340)


def precision_chart(lo: float = 2.0**-26, hi: float = 2.0**17, points: int = 3000) -> go.Figure:
    """Relative step (%) against magnitude for every format, on log-log axes."""
    fig = go.Figure()
    for name in formats.FORMATS:
        mags, rel = formats.precision_curve(name, lo, hi, points=points)
        fig.add_trace(go.Scatter(x=mags.tolist(), y=(100 * rel).tolist(), mode="lines",
                                 name=formats.get_format(name).label, line=dict(color=COLORS[name], width=1.4)))
    ys = [v for trace in fig.data for v in trace.y if v > 0]
    fig.update_xaxes(**log_axis(lo, hi))
    fig.update_yaxes(**log_axis(min(ys), max(ys)))
    return styled(fig, "Relative precision against magnitude (unit scale)", "magnitude |x| (log scale)",
                  "step to the next value / |x| (%, log scale)", height=420)


def range_chart() -> go.Figure:
    """One labelled point per format: dynamic range (binades) against precision at the top (bits)."""
    rows = formats.format_table()
    fig = go.Figure(go.Scatter(
        x=[r["range (binades)"] for r in rows], y=[r["precision at top (bits)"] for r in rows],
        text=[r["format"] for r in rows], mode="markers+text",
        textposition=[LABEL_POSITION.get(str(r["format"]), "top center") for r in rows],
        marker=dict(size=11, color=[COLORS[n] for n in formats.FORMATS]),
        hovertemplate="%{text}: %{x:.1f} binades, %{y:.2f} bits = log2(largest / last step)<extra></extra>"))
    binades = [float(r["range (binades)"]) for r in rows]  # type: ignore[arg-type]
    fig.update_xaxes(**log_axis(min(binades), max(binades)))
    return styled(fig, "Dynamic range against precision",
                  "dynamic range: log2(largest / smallest positive) (binades, log scale)",
                  "precision at the top (bits)", height=400)


def _db_text(db: float) -> str:
    # A constant or one-hot tensor lands exactly on the FP8 grid: no noise, infinite SQNR.
    return "exact" if math.isinf(db) else f"{db:.1f} dB"


def duel_chart(d: formats_lesson.FormatDuel, title: str) -> go.Figure:
    """Mean relative error of each 8-bit scheme by magnitude band (top) over the share of values per band."""
    # Bands are log-spaced, so the geometric mean is the middle of each on the log axis.
    centers = [(a * b) ** 0.5 for a, b in zip(d.band_edges[:-1], d.band_edges[1:])]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    for i, (label, errs) in enumerate(d.band_rel_error.items()):
        fig.add_trace(go.Scatter(x=centers, y=[100 * e for e in errs], name=f"{label} ({_db_text(d.sqnr_db[label])})",
                                 mode="lines+markers", line=dict(color=SERIES[i])), row=1, col=1)
    fig.add_trace(go.Scatter(x=centers, y=[100 * s for s in d.band_share], name="share of values",
                             mode="lines", line=dict(color=PALETTE["data"], shape="hvh"), fill="tozeroy",
                             hovertemplate="%{y:.2f}% of values<extra></extra>"), row=2, col=1)
    errors = [100 * e for errs in d.band_rel_error.values() for e in errs if e > 0]
    # Four decades below the worst band: a band both grids store exactly (each scale's own maximum)
    # would otherwise stretch the axis to 10⁻⁸ %.
    floor = max(min(errors), max(errors) * 1e-4) if errors else 0.0
    if d.crossover is not None and errors:
        lo, hi = math.log10(d.band_edges[0]), math.log10(d.band_edges[-1])
        right_half = hi > lo and (math.log10(d.crossover) - lo) / (hi - lo) > 0.5
        # A trace, not add_vline: a vline's annotation on a log axis is placed at 10^x.
        fig.add_trace(go.Scatter(
            x=[d.crossover, d.crossover], y=[floor, max(errors)], mode="lines+text",
            line=dict(color="#475569", dash="dash", width=1.5), name="crossover", showlegend=False,
            text=["", f"INT8 wins above {d.crossover:.3g} ({d.share_above_crossover:.0%} of values)"],
            textposition="top left" if right_half else "top right", hoverinfo="skip"), row=1, col=1)
    fig.update_xaxes(**log_axis(d.band_edges[0], d.band_edges[-1]))
    fig = styled(fig, title, "|x| (log scale)", "mean relative error (%)", height=440)
    fig.update_xaxes(title_text=None, row=1, col=1)
    fig.update_layout(margin=dict(l=80))
    if errors:
        fig.update_yaxes(**log_axis(floor, max(errors)), row=1, col=1,
                         range=[math.log10(floor) - 0.1, math.log10(max(errors)) + 0.3])
    fig.update_yaxes(title_text="values (%)", row=2, col=1)
    return fig


NOT_APPLICABLE = "—"


def number_text(v: float) -> str:
    """A format constant in full where it is short (65,504; 448), else to 5 digits with its power
    of ten (3.4028×10³⁸): a table cell must never cut it to "3.40282…"."""
    if float(v).is_integer() and abs(v) < 1e7:
        return f"{int(v):,}"
    if 1e-3 <= abs(v) < 1e7:
        return f"{v:.5g}"
    exponent = math.floor(math.log10(abs(v)))
    return f"{v / 10**exponent:.5g}×10" + str(exponent).translate(SUPERSCRIPT)


def format_rows() -> list[dict[str, object]]:
    """`formats.format_table()` for display: constants as text, "—" where a field does not apply."""
    shown = ("bias", "largest", "smallest normal", "smallest positive")
    return [{k: (NOT_APPLICABLE if v is None else number_text(float(v))) if k in shown else
             (f"{v:,}" if k == "distinct values" else v) for k, v in row.items()}
            for row in formats.format_table()]


def memory_table(params: float) -> list[dict[str, object]]:
    """Rows of the memory calculator: bytes of `params` weights in every format, in GB and GiB."""
    return [{"format": r.format, "bits per parameter": r.bits_per_param, "GB (10⁹ B)": r.gb, "GiB (2³⁰ B)": r.gib}
            for r in formats_lesson.weight_memory(params)]


def block_scale_chart(b: formats_lesson.BlockScales) -> go.Figure:
    """The scale each block wants against what NVFP4 and MXFP4 store for it, on one row."""
    fig = go.Figure()
    nv_x = list(range(len(b.ideal_nvfp4)))
    mx_x = [2 * i + 0.5 for i in range(len(b.ideal_mxfp4))]  # a 32-block spans two 16-blocks
    fig.add_trace(go.Scatter(x=nv_x, y=list(b.ideal_nvfp4), mode="markers", name="ideal per 16 (max|x| ÷ 6)",
                             marker=dict(color=PALETTE["muted"], size=9, symbol="line-ew-open", line=dict(width=3))))
    fig.add_trace(go.Scatter(x=nv_x, y=list(b.nvfp4), mode="markers", name="NVFP4: E4M3 scale ÷ global scale",
                             marker=dict(color=SERIES[0], size=8)))
    fig.add_trace(go.Scatter(x=mx_x, y=list(b.mxfp4), mode="markers", name="MXFP4: power of two (E8M0) per 32",
                             marker=dict(color=SERIES[1], size=10, symbol="square")))
    fig.update_yaxes(type="log")
    return styled(fig, f"Block scales of row {b.row}: NVFP4 tracks each block, MXFP4 snaps to powers of two",
                  "block of 16 values along the row", "scale (log)", height=360)
