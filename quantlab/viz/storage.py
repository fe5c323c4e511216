"""Figures for the Granularity and Storage lessons (pure: data in, `go.Figure` out, house style)."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from quantlab.io import sizing
from quantlab.lessons.storage import Rung
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


def size_by_group(rungs: Sequence[Rung]) -> go.Figure:
    """Bytes of the Linear layers at each granularity, stacked by kind. Layers a group size cannot
    split are written in full precision ("linear kept"), so they stay in the bar, and the rung
    says how many: without them g256 on a 384-wide model would look smaller than g128."""
    kinds = ("packed weights", "quantized weights", "scales", "zero points", "linear kept")
    labels = [r.label if r.note is None else f"{r.label}<br>⚠ {r.note}" for r in rungs]
    fig = go.Figure()
    for color, kind in zip(SERIES, kinds):
        ys = [r.report.by_kind().get(kind, 0) / 1e6 for r in rungs]
        if any(ys):
            name = "Linear layers kept in full precision" if kind == "linear kept" else kind
            fig.add_trace(go.Bar(x=labels, y=ys, name=name, marker_color=color,
                                 hovertemplate="%{x}: %{y:,.1f} MB<extra></extra>"))
    fig.update_layout(barmode="stack")
    return styled(fig, "Bytes of the Linear layers by granularity (embeddings, norms, biases unchanged)",
                  "granularity", "size (MB, 10^6 bytes)", height=400)
