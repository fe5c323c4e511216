"""Figures of the Symmetric lesson: both grids over a real tensor's histogram, SQNR against bits."""
from __future__ import annotations

import plotly.graph_objects as go

from quantlab.lessons.symmetric import ModeComparison
from quantlab.viz.style import PALETTE, grid_ticks, histogram_bars, range_band, styled


def grid_overlay(cmp: ModeComparison, show_sym: bool, show_asym: bool, log_y: bool) -> go.Figure:
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
