"""Figures for the Granularity and Storage lessons (pure: data in, `go.Figure` out, house style)."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from quantlab.io import sizing
from quantlab.viz.style import SERIES, styled


def bytes_breakdown(report: sizing.SizeReport) -> go.Figure:
    parts = report.by_kind() | {"safetensors header": report.header_bytes}
    fig = go.Figure()
    for color, (kind, n) in zip(SERIES * 2, parts.items()):
        fig.add_trace(go.Bar(x=[n / 1e6], y=["file"], orientation="h", name=kind, marker_color=color,
                             hovertemplate=f"{kind}: {sizing.format_bytes(n)} "
                                           f"({n / report.total_bytes:.1%})<extra></extra>"))
    fig.update_layout(barmode="stack")
    return styled(fig, f"Where the {sizing.format_bytes(report.total_bytes)} go ({report.spec.label})",
                  "size (MB, 10^6 bytes)", "model.safetensors", height=260)


def size_by_group(labels: Sequence[str], reports: Sequence[sizing.SizeReport]) -> go.Figure:
    kinds = ("packed weights", "quantized weights", "scales", "zero points")
    fig = go.Figure()
    for color, kind in zip(SERIES, kinds):
        ys = [r.by_kind().get(kind, 0) / 1e6 for r in reports]
        if any(ys):
            fig.add_trace(go.Bar(x=list(labels), y=ys, name=kind, marker_color=color,
                                 hovertemplate="%{x}: %{y:,.1f} MB<extra></extra>"))
    fig.update_layout(barmode="stack")
    return styled(fig, "Quantized layers' bytes by granularity (everything else is unchanged)",
                  "granularity", "size (MB, 10^6 bytes)", height=380)
