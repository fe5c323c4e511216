"""Figures of the What-if lesson."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from quantlab.viz.style import SERIES, styled


def what_if_scatter(names: Sequence[str], bits: Sequence[float], sqnr: Sequence[float], y_title: str) -> go.Figure:
    """Error against storage cost, one point per scheme (named in the legend): up and left is better."""
    fig = go.Figure()
    for i, (name, x, y) in enumerate(zip(names, bits, sqnr)):
        fig.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers", name=name,
            marker=dict(size=14, color=SERIES[i % len(SERIES)],
                        symbol=["circle", "diamond", "square"][i // len(SERIES) % 3]),
            hovertemplate=f"{name}<br>%{{x:.3f}} bits per weight<br>%{{y:.1f}} dB<extra></extra>",
        ))
    styled(fig, "Error against cost on this layer (up and to the left is better)",
           "bits per weight (codes + scales + zero points)", y_title, height=440)
    return fig
