"""Figures of the Choose-a-scheme lesson."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from quantlab.lessons.choose import Memory, Row
from quantlab.viz.style import PALETTE, clear_labels, styled

GB = 1e9
STATUS_COLORS = {"native": PALETTE["good"], "weight-only": PALETTE["sym"], "none": PALETTE["muted"]}


def evidence_scatter(rows: Sequence[Row], chosen: str, metric: str, arch: str, hw_name: str) -> go.Figure:
    """Error on the selected layer against the deployment file size, coloured by what the hardware
    does with each scheme; the recommendation is ringed. Up and to the left is better."""
    fig = go.Figure()
    placed = [r for r in rows if r.error_db is not None]
    # The W4A16 variants sit within a few hundred MB and 2 dB of each other: print a name only where
    # it keeps clear of names already printed (the pick first); every point names itself on hover.
    order = sorted(range(len(placed)), key=lambda i: placed[i].slug != chosen)
    named = {placed[i].slug for i in clear_labels([r.file.total_bytes / GB for r in placed],
                                                  [float(r.error_db) for r in placed], order)}
    for status, color in STATUS_COLORS.items():
        shown = [r for r in placed if r.status == status]
        if not shown:
            continue
        fig.add_trace(go.Scatter(
            x=[r.file.total_bytes / GB for r in shown], y=[r.error_db for r in shown], mode="markers+text",
            text=[r.label if r.slug in named else "" for r in shown], customdata=[r.label for r in shown],
            textposition="top center", name=f"{status} on {hw_name}", marker=dict(size=13, color=color),
            hovertemplate="%{customdata}<br>%{x:.2f} GB<br>%{y:.1f} dB<extra></extra>",
        ))
    pick = next((r for r in rows if r.slug == chosen and r.error_db is not None), None)
    if pick is not None:
        fig.add_trace(go.Scatter(x=[pick.file.total_bytes / GB], y=[pick.error_db], mode="markers",
                                 name=f"recommended: {pick.label}", hoverinfo="skip",
                                 marker=dict(size=26, color="rgba(0,0,0,0)",
                                             line=dict(width=3, color=PALETTE["accent"]))))
    return styled(fig, f"Error on this layer against the {arch} checkpoint", f"{arch} file size (GB)",
                  f"{metric} (dB)", height=460)


def memory_bars(mem: Memory, bars: Sequence[tuple[str, int, int]]) -> go.Figure:
    """Weights plus KV cache at the learner's context and batch, one stacked bar per (name, weight
    bytes, cache bytes): where the memory goes."""
    names = [b[0] for b in bars]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[b[1] / GB for b in bars], name="weights", marker_color=PALETTE["sym"]))
    fig.add_trace(go.Bar(x=names, y=[b[2] / GB for b in bars], name="KV cache", marker_color=PALETTE["asym"]))
    fig.update_layout(barmode="stack")
    return styled(fig, f"{mem.arch}: memory at {mem.context:,} tokens × {mem.batch} sequences", "", "GB",
                  height=400)
