"""Figures of the Clipping lesson: rounding against clipping error, the clipped histogram, calibration sets."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from quantlab.core.stats import Histogram
from quantlab.lessons.clipping import CalibrationResult, ClipCurve
from quantlab.viz.style import PALETTE, SERIES, histogram_bars, styled


def clip_curve(curve: ClipCurve, marks: dict[str, float], current: float) -> go.Figure:
    """Rounding, clipping and total MSE against the clipping ratio; where each observer lands."""
    fig = go.Figure()
    for y, name, color, dash in (
            (curve.total_mse, "total error", PALETTE["accent"], "solid"),
            (curve.rounding_mse, "rounding error (values inside the range)", PALETTE["sym"], "dot"),
            (curve.clipping_mse, "clipping error (saturated values)", PALETTE["bad"], "dot")):
        fig.add_trace(go.Scatter(x=curve.ratios, y=y, name=name, mode="lines", line=dict(color=color, dash=dash),
                                 hovertemplate="ratio %{x:.2f}: MSE %{y:.3g}<extra></extra>"))
    positive = np.concatenate([curve.total_mse, curve.rounding_mse, curve.clipping_mse])
    # A tensor already on its grid has no error at all: give the log axis a decade around 1e-12.
    floor = positive[positive > 0].min() if (positive > 0).any() else 1e-12
    span = [floor / 2, max(positive.max(), floor) * 2]
    # Observers often land close together (min-max and MSE near 1), so they go in the legend.
    for i, (label, ratio) in enumerate(marks.items()):
        fig.add_trace(go.Scatter(x=[ratio, ratio], y=span, mode="lines", name=f"{label} lands at {ratio:.2f}",
                                 line=dict(color=SERIES[(i + 2) % len(SERIES)], width=2, dash="dash"),
                                 hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[current, current], y=span, mode="lines", name=f"your ratio {current:.2f}",
                             line=dict(color="#475569", width=2), hoverinfo="skip"))
    styled(fig, "Error against the clipping ratio: rounding falls, saturation rises",
           "clipping ratio (range kept ÷ min-max range)", "mean squared error (log)", height=440)
    # Decades only: plotly's default minor labels read "2 5 2 5" on a log axis.
    fig.update_yaxes(type="log", range=[np.log10(span[0]), np.log10(span[1])], dtick=1, exponentformat="power")
    return fig


def clip_histogram(hist: Histogram, lo: float, hi: float) -> go.Figure:
    """The values, with the kept range shaded: anything outside it saturates to the end level."""
    fig = go.Figure(histogram_bars(hist, name="values"))
    # Blue range, orange edges: no red-against-green pair.
    fig.add_vrect(x0=lo, x1=hi, fillcolor=PALETTE["sym"], opacity=0.08, line_width=0,
                  annotation_text="kept range", annotation_position="top left")
    for x in (lo, hi):
        fig.add_vline(x=x, line=dict(color=PALETTE["asym"], width=1.5))
    styled(fig, "Values and the range the grid covers", "value", "count of values (log)", height=330)
    fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    fig.update_layout(bargap=0, showlegend=False)
    return fig


def calibration_bars(rows: Sequence[CalibrationResult], eval_kind: str) -> go.Figure:
    names = [r.calibration if r.calibration == "dynamic" else f"static: {r.calibration}" for r in rows]
    colors = [PALETTE["good"] if r.calibration == "dynamic" else
              (PALETTE["sym"] if r.calibration == eval_kind else PALETTE["data"]) for r in rows]
    fig = go.Figure(go.Bar(
        x=names, y=[r.sqnr_db for r in rows], marker_color=colors,
        text=[f"{r.clipped_fraction:.3%} saturated" for r in rows], textposition="outside",
        hovertemplate="%{x}: %{y:.1f} dB<extra></extra>"))
    styled(fig, f"Activation SQNR on {eval_kind} text, by where the scale came from",
           "scale calibrated on (blue: same domain)", "SQNR on the evaluation text (dB)", height=360)
    fig.update_yaxes(range=[0, max(r.sqnr_db for r in rows) * 1.2])
    return fig
