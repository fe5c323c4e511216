"""Plotly figure builders: pure functions from data to `go.Figure`, one consistent look.

Pages never style figures themselves; they call these so every lesson reads the same.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio

from quantlab.core.stats import Histogram

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








def figure_csv(fig: go.Figure) -> str:
    """The numbers a figure draws, one row per point: trace, x, y (and z for a heatmap's cells).
    What a learner downloads beside a chart, so its data can be checked or re-plotted elsewhere."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trace", "x", "y", "z"])
    for i, trace in enumerate(fig.data):
        name = trace.name if getattr(trace, "name", None) else f"trace {i}"
        z = getattr(trace, "z", None)
        if z is not None:
            xs = trace.x if trace.x is not None else range(len(z[0]))
            ys = trace.y if trace.y is not None else range(len(z))
            for y, row in zip(ys, z):
                writer.writerows([name, x, y, v] for x, v in zip(xs, row))
            continue
        xs, ys = getattr(trace, "x", None), getattr(trace, "y", None)
        if xs is None and ys is None:
            continue
        xs = xs if xs is not None else range(len(ys))
        ys = ys if ys is not None else [None] * len(xs)
        writer.writerows([name, x, y, None] for x, y in zip(xs, ys))
    return out.getvalue()


LABEL_CLEARANCE = 0.08  # fraction of the plot's width/height a printed label keeps from another


def clear_labels(xs: list[float], ys: list[float], candidates: list[int]) -> list[int]:
    """The candidates that can carry a label: each one far enough, in axis fractions, from those kept."""
    finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        return []
    span_x = (max(x for x, _ in finite) - min(x for x, _ in finite)) or 1.0
    span_y = (max(y for _, y in finite) - min(y for _, y in finite)) or 1.0
    kept: list[int] = []
    for i in candidates:
        if not (math.isfinite(xs[i]) and math.isfinite(ys[i])):
            continue
        if all(abs(xs[i] - xs[j]) / span_x > LABEL_CLEARANCE or abs(ys[i] - ys[j]) / span_y > LABEL_CLEARANCE
               for j in kept):
            kept.append(i)
    return kept
