"""Plotly figure builders: pure functions from data to `go.Figure`, one consistent look.

Pages never style figures themselves; they call these so every lesson reads the same.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from quantlab.stats import Histogram

if TYPE_CHECKING:
    from quantlab.symmetry import ModeComparison

PALETTE = {
    "data": "#94a3b8",
    "sym": "#2563eb",
    "asym": "#ea580c",
    "good": "#16a34a",
    "bad": "#dc2626",
    "muted": "#cbd5e1",
    "accent": "#7c3aed",
}
SERIES = ["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]

pio.templates["quantlab"] = go.layout.Template(
    layout=go.Layout(
        font=dict(family="Inter, system-ui, sans-serif", size=13, color="#1e293b"),
        colorway=SERIES,
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin=dict(l=60, r=20, t=90, b=50),
        xaxis=dict(showgrid=True, gridcolor="#eef2f7", zeroline=False, linecolor="#94a3b8", ticks="outside"),
        yaxis=dict(showgrid=True, gridcolor="#eef2f7", zeroline=False, linecolor="#94a3b8", ticks="outside"),
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0),
        hoverlabel=dict(font_size=12),
    )
)
TEMPLATE = "quantlab"


def styled(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 380) -> go.Figure:
    """Apply the house template, a title and both axis titles (a chart without them is a bug)."""
    fig.update_layout(template=TEMPLATE, height=height,
                      title=dict(text=title, x=0, xanchor="left", y=0.98, yanchor="top"))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def histogram_bars(hist: Histogram, name: str = "values", color: str | None = None) -> go.Bar:
    return go.Bar(
        x=hist.centers, y=hist.counts, width=hist.width, name=name,
        marker=dict(color=color or PALETTE["data"], line=dict(width=0)),
        hovertemplate="%{x:.4g}: %{y} values<extra></extra>",
    )


def grid_ticks(levels: Sequence[float], name: str, color: str, y_top: float, y_bottom: float = 0.0) -> go.Scatter:
    """Each representable value of a quantization grid as a thin vertical line."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for v in levels:
        xs += [v, v, None]
        ys += [y_bottom, y_top, None]
    return go.Scatter(x=xs, y=ys, mode="lines", name=name, line=dict(color=color, width=1.2),
                      hoverinfo="skip")


def range_band(lo: float, hi: float, color: str, label: str) -> dict:
    """A shaded x-interval, as a layout shape (for `fig.add_vrect`)."""
    return dict(x0=lo, x1=hi, fillcolor=color, opacity=0.08, line_width=0,
                annotation_text=label, annotation_position="top left")


def grid_overlay(cmp: "ModeComparison", show_sym: bool, show_asym: bool, log_y: bool) -> go.Figure:
    """Histogram of a tensor with the symmetric and/or asymmetric grids and their ranges on top."""
    fig = go.Figure(histogram_bars(cmp.hist, name="values of the tensor"))
    top = float(cmp.hist.counts.max()) * (3 if log_y else 1.08)
    bottom = 0.8 if log_y else 0.0
    for shown, mode, color, label in (
        (show_sym, cmp.symmetric, PALETTE["sym"], "symmetric"),
        (show_asym, cmp.asymmetric, PALETTE["asym"], "asymmetric"),
    ):
        if not shown:
            continue
        fig.add_trace(grid_ticks(mode.levels, f"{label} grid ({mode.spec.levels} levels)", color, top, bottom))
        span = f"[{mode.range_lo:.3g}, {mode.range_hi:.3g}]"
        fig.add_vrect(**range_band(mode.range_lo, mode.range_hi, color, f"{label} range {span}"))
    fig.add_vline(x=0, line=dict(color="#475569", width=1, dash="dot"))
    styled(fig, "Where the grid levels fall on the real values", "value", "count of values")
    if log_y:
        fig.update_yaxes(type="log", title_text="count of values (log)")
    fig.update_layout(bargap=0, height=430)
    return fig


def sqnr_vs_bits(data: dict[str, list[float]], current_bits: int) -> go.Figure:
    fig = go.Figure()
    for mode, color in (("symmetric", PALETTE["sym"]), ("asymmetric", PALETTE["asym"])):
        fig.add_trace(go.Scatter(x=data["bits"], y=data[mode], mode="lines+markers", name=mode,
                                 line=dict(color=color), hovertemplate="%{x} bits: %{y:.1f} dB<extra></extra>"))
    fig.add_vline(x=current_bits, line=dict(color="#475569", dash="dot"))
    styled(fig, "Signal-to-noise ratio against bit width (per-tensor)", "bits per value", "SQNR (dB)", height=340)
    fig.update_xaxes(dtick=1)
    return fig


def what_if_scatter(names: Sequence[str], bits: Sequence[float], sqnr: Sequence[float], y_title: str) -> go.Figure:
    """Error against storage cost, one point per scheme (named in the legend): up and left is better."""
    fig = go.Figure()
    for i, (name, x, y) in enumerate(zip(names, bits, sqnr)):
        fig.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers", name=name,
            marker=dict(size=14, color=SERIES[i % len(SERIES)], symbol=["circle", "diamond", "square"][i // len(SERIES) % 3]),
            hovertemplate=f"{name}<br>%{{x:.3f}} bits per weight<br>%{{y:.1f}} dB<extra></extra>",
        ))
    styled(fig, "Error against cost on this layer (up and to the left is better)",
           "bits per weight (codes + scales + zero points)", y_title, height=440)
    return fig
