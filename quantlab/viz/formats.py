"""Figures and tables for the Precision formats lesson (pure: data in, `go.Figure` or rows out, house style)."""
from __future__ import annotations

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
    fig.update_xaxes(type="log", exponentformat="power")
    fig.update_yaxes(type="log")
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
        hovertemplate="%{text}: %{x:.1f} binades, %{y:.2f} bits<extra></extra>"))
    fig.update_xaxes(type="log")
    return styled(fig, "Dynamic range against precision",
                  "dynamic range: log2(largest / smallest positive) (binades, log scale)",
                  "precision at the top: log2(largest / last step) (bits)", height=400)


def duel_chart(d: formats_lesson.FormatDuel, title: str) -> go.Figure:
    """Mean relative error of each 8-bit scheme by magnitude band (top) over the share of values per band."""
    # Bands are log-spaced, so the geometric mean is the middle of each on the log axis.
    centers = [(a * b) ** 0.5 for a, b in zip(d.band_edges[:-1], d.band_edges[1:])]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    for i, (label, errs) in enumerate(d.band_rel_error.items()):
        fig.add_trace(go.Scatter(x=centers, y=[100 * e for e in errs], name=f"{label} ({d.sqnr_db[label]:.1f} dB)",
                                 mode="lines+markers", line=dict(color=SERIES[i])), row=1, col=1)
    fig.add_trace(go.Scatter(x=centers, y=[100 * s for s in d.band_share], name="share of values",
                             mode="lines", line=dict(color=PALETTE["data"], shape="hvh"), fill="tozeroy",
                             hovertemplate="%{y:.2f}% of values<extra></extra>"), row=2, col=1)
    fig.update_xaxes(type="log")
    fig = styled(fig, title, "|x| (log scale)", "mean relative error (%, log scale)", height=440)
    fig.update_xaxes(title_text=None, row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="values (%)", row=2, col=1)
    return fig


def memory_table(params: float) -> list[dict[str, object]]:
    """Rows of the memory calculator: bytes of `params` weights in every format, in GB and GiB."""
    return [{"format": r.format, "bits per parameter": r.bits_per_param, "GB (10⁹ B)": r.gb, "GiB (2³⁰ B)": r.gib}
            for r in formats_lesson.weight_memory(params)]
