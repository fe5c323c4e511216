"""Figures of the Symmetric lesson: both grids over a real tensor's histogram, SQNR against bits."""
from __future__ import annotations

import plotly.graph_objects as go

from quantlab.lessons.symmetric import ModeComparison
from quantlab.viz.style import PALETTE, grid_ticks, histogram_bars, styled

RUG_ABOVE = 32  # levels drawn full height up to 5 bits; finer grids become a strip above the bars


def _rug_band(peak: float, row: int, log_y: bool) -> tuple[float, float]:
    """(bottom, top) of mode `row`'s strip of grid marks, above the tallest bar."""
    if log_y:
        return peak * 1.5 * 2.2 ** row, peak * 2.0 * 2.2 ** row
    return peak * (1.1 + 0.14 * row), peak * (1.2 + 0.14 * row)


def grid_overlay(cmp: ModeComparison, show_sym: bool, show_asym: bool, log_y: bool) -> go.Figure:
    """Histogram of a tensor with the symmetric and/or asymmetric grids and their ranges on top."""
    fig = go.Figure(histogram_bars(cmp.hist, name="values of the tensor"))
    peak = float(cmp.hist.counts.max())
    top = peak * (3 if log_y else 1.08)
    bottom = 0.8 if log_y else 0.0
    # Both ranges often start or end at the same value (the max, for one-sided data): each label
    # gets its own row above the plot so they never overlap.
    for row, (shown, mode, color, label) in enumerate((
        (show_sym, cmp.symmetric, PALETTE["sym"], "symmetric"),
        (show_asym, cmp.asymmetric, PALETTE["asym"], "asymmetric"),
    )):
        if not shown:
            continue
        name = f"{label} grid ({mode.spec.levels} levels)"
        if mode.spec.levels <= RUG_ABOVE:
            fig.add_trace(grid_ticks(mode.levels, name, color, top, bottom))
        else:  # hundreds of full-height lines would hide the histogram: a strip above it instead
            lo, hi = _rug_band(peak, row, log_y)
            fig.add_trace(grid_ticks(mode.levels, name, color, hi, lo))
        fig.add_vrect(x0=mode.range_lo, x1=mode.range_hi, fillcolor=color, opacity=0.08, line_width=0)
        fig.add_annotation(x=mode.range_lo, y=1.0 - 0.07 * row, xref="x", yref="paper", xanchor="left",
                           yanchor="top", showarrow=False, font=dict(color=color, size=12),
                           bgcolor="rgba(255,255,255,0.8)",
                           text=f"{label} range [{mode.range_lo:.3g}, {mode.range_hi:.3g}]")
    fig.add_vline(x=0, line=dict(color="#475569", width=1, dash="dot"))
    styled(fig, "Where the grid levels fall on the real values", "value", "count of values")
    if log_y:
        # Ticks at 1, 10, 100, ... only: plotly's default log ticks read "2 5 2 5" between decades.
        fig.update_yaxes(type="log", title_text="count of values (log)", dtick=1, exponentformat="power")
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
