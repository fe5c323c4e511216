"""Figures for the clipping and outlier lessons: pure functions from results to `go.Figure`."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from quantlab.lessons.outliers import (
    AwqSearch,
    ChannelStats,
    MixedCurve,
    SmoothCurve,
    SmoothRanges,
)
from quantlab.lessons.whole_model import SHORT_NAMES, KeepCurve, WholeModelResult
from quantlab.viz.formats import log_axis
from quantlab.viz.style import PALETTE, TEMPLATE, styled

# Reference lines (no smoothing, plain rounding) in a neutral dark grey, so no chart pairs red with green.
REFERENCE = "#475569"


def channel_absmax(stats: ChannelStats, layer: str) -> go.Figure:
    channels = np.arange(len(stats.absmax))
    colors = np.where(stats.absmax > 6 * stats.median, PALETTE["asym"], PALETTE["data"])
    fig = go.Figure(go.Bar(x=channels, y=stats.absmax, marker=dict(color=colors, line=dict(width=0)),
                           hovertemplate="channel %{x}: max |x| = %{y:.3g}<extra></extra>", name="max |x|"))
    fig.add_hline(y=stats.median, line=dict(color=PALETTE["sym"], dash="dash"),
                  annotation_text=f"median channel {stats.median:.2f}", annotation_position="top right")
    styled(fig, f"Largest |input| of each channel of {layer} (orange: > 6× median)",
           "input channel", "max |x| over all tokens", height=340)
    fig.update_layout(bargap=0, showlegend=False)
    return fig


def outlier_ratios(layers: Sequence[str], ratios: Sequence[float], current: str) -> go.Figure:
    short = [n.removeprefix("encoder.layer.").replace("attention.self.", "").replace("attention.output.", "attn.")
             for n in layers]
    colors = [PALETTE["accent"] if n == current else PALETTE["data"] for n in layers]
    fig = go.Figure(go.Bar(x=short, y=ratios, marker_color=colors,
                           hovertemplate="%{x}: top channel %{y:.1f}× the median<extra></extra>"))
    styled(fig, "How far the top input channel sticks out, every Linear of the model",
           "Linear layer (block.name; purple: the selected one)", "max channel ÷ median channel (×)", height=340)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=10))
    return fig


def smooth_ranges(r: SmoothRanges, alpha: float) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("activations: max |X_j|", "weights: max |W_j|"))
    ch = np.arange(len(r.x_before))
    for col, before, after in ((1, r.x_before, r.x_after), (2, r.w_before, r.w_after)):
        fig.add_trace(go.Scatter(x=ch, y=before, name="before", mode="lines", showlegend=col == 1,
                                 line=dict(color=PALETTE["data"], width=1)), row=1, col=col)
        fig.add_trace(go.Scatter(x=ch, y=after, name=f"after smoothing (α = {alpha:.2f})", mode="lines",
                                 showlegend=col == 1, line=dict(color=PALETTE["sym"], width=1)), row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=400, margin=dict(t=70, b=90),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
                      title=dict(text="Per-channel ranges before and after smoothing: the difficulty migrates", x=0))
    fig.update_annotations(font_size=12)
    fig.update_xaxes(title_text="input channel j")
    for col, values, title in ((1, (r.x_before, r.x_after), "max |value| in channel (log)"),
                               (2, (r.w_before, r.w_after), "max |weight| in column (log)")):
        both = np.concatenate(values)
        positive = both[both > 0]
        if positive.size:
            fig.update_yaxes(**log_axis(float(positive.min()), float(positive.max())), col=col)
        fig.update_yaxes(type="log", title_text=title, col=col)
    return fig


def smooth_curve(curve: SmoothCurve, alpha: float, scheme: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=curve.alphas, y=curve.sqnr_db, mode="lines+markers", name="with SmoothQuant",
                               line=dict(color=PALETTE["sym"]), hovertemplate="α %{x:.2f}: %{y:.1f} dB<extra></extra>"))
    fig.add_hline(y=curve.baseline_db, line=dict(color=REFERENCE, dash="dash"),
                  annotation_text=f"no smoothing (s = 1) {curve.baseline_db:.1f} dB",
                  annotation_position="bottom right")
    best = float(curve.sqnr_db.max())
    fig.add_trace(go.Scatter(x=[curve.best_alpha], y=[best], mode="markers+text", name="best α",
                             marker=dict(color=PALETTE["asym"], size=12, symbol="star"),
                             text=[f"best α = {curve.best_alpha:.2f}: {curve.gain_db:+.1f} dB"],
                             textposition="bottom center", hoverinfo="skip"))
    fig.add_vline(x=alpha, line=dict(color=PALETTE["muted"], width=2))
    styled(fig, f"Layer-output SQNR against α ({scheme})", "migration strength α", "output SQNR (dB)", height=340)
    return fig


def awq_curve(search: AwqSearch) -> go.Figure:
    fig = go.Figure(go.Scatter(x=search.ratios, y=search.losses, mode="lines+markers", name="AWQ scales s(r)",
                               line=dict(color=PALETTE["accent"]),
                               hovertemplate="r %{x:.2f}: MSE %{y:.4g}<extra></extra>"))
    fig.add_hline(y=search.identity_loss, line=dict(color=REFERENCE, dash="dash"),
                  annotation_text="no scaling, s = 1 (quantlab's extra candidate)", annotation_position="top right")
    fig.add_vline(x=search.grid_ratio, line=dict(color=PALETTE["sym"], width=2),
                  annotation_text=f"AWQ's pick r = {search.grid_ratio:.2f}")
    styled(fig, "AWQ grid search: layer-output error for each ratio r",
           "ratio r (0 = weights decide, 1 = activations decide)", "output MSE", height=340)
    return fig


def mixed_curve(curve: MixedCurve) -> go.Figure:
    kib = curve.extra_bytes / 1024
    fig = go.Figure(go.Scatter(x=kib, y=curve.sqnr_db, mode="lines+markers+text", text=[f"k={k}" for k in curve.ks],
                               textposition="bottom right", line=dict(color=PALETTE["sym"]),
                               hovertemplate="+%{x:.1f} KiB: %{y:.1f} dB<extra></extra>",
                               name="k outlier channels in 16-bit"))
    at = int(np.flatnonzero(curve.ks == curve.threshold_k)[0])
    fig.add_trace(go.Scatter(x=[kib[at]], y=[curve.sqnr_db[at]], mode="markers+text", name="LLM.int8() rule",
                             marker=dict(color=PALETTE["asym"], size=13, symbol="star"),
                             text=[f"|x| ≥ 6: k={curve.threshold_k}"], textposition="top left", hoverinfo="skip"))
    styled(fig, f"Keep the top-k outlier channels in 16-bit: error against extra bytes "
                f"(layer: {curve.layer_bytes / 1024:.0f} KiB)", "extra weight storage (KiB)", "output SQNR (dB)",
           height=340)
    return fig


def sqnr_heatmap(result: WholeModelResult, which: str) -> go.Figure:
    grid = result.heatmap(which)
    exact = np.isinf(grid)  # a layer kept in 16-bit has no error of its own
    text = np.where(exact, "16-bit", np.char.mod("%.1f", np.where(exact, 0, grid)))
    fig = go.Figure(go.Heatmap(
        z=np.where(exact, np.nan, grid), x=list(SHORT_NAMES), y=[f"block {i}" for i in range(grid.shape[0])],
        colorscale="Cividis", zmin=0, zmax=50, colorbar=dict(title="dB"),
        text=text, texttemplate="%{text}", hovertemplate="%{y}, %{x}: %{text} dB<extra></extra>"))
    what = "its own error (fp32 input)" if which == "local" else "in the running quantized model"
    styled(fig, f"Output SQNR of every Linear, {what}: darkest hurts most", "Linear in the block", "encoder block",
           height=360)
    fig.update_yaxes(autorange="reversed")
    return fig


def keep_curve(curve: KeepCurve) -> go.Figure:
    mib = curve.extra_bytes / 2**20
    fig = go.Figure(go.Scatter(x=mib, y=curve.rank_correlation, mode="lines+markers+text", name="rank correlation",
                               text=[f"k={k}" for k in curve.ks], textposition="bottom right",
                               line=dict(color=PALETTE["sym"]),
                               hovertemplate="+%{x:.2f} MiB: ρ %{y:.4f}<extra></extra>"))
    styled(fig, "Whole Linears kept in 16-bit, worst first: embedding quality against extra bytes",
           "extra weight storage (MiB)", "rank correlation with fp32 (Spearman ρ)", height=340)
    return fig
