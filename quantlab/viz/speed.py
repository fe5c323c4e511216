"""Figures of the Speed lesson: speedup against batch size, the roofline, and time floors.

Pure functions from `quantlab.kernels.roofline` data to Plotly figures (house style from viz).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from quantlab.lessons import speed
from quantlab.viz.style import PALETTE, SERIES, styled

COLORS = {"bf16": "#475569", "torch_int4": SERIES[1], "w4a16": SERIES[0], "w8a16": SERIES[2], "fp8": SERIES[3],
          "gemlite": SERIES[4], "w4a16_gemv": SERIES[5], "w4a16_mma": SERIES[6], "w4a16_dequant": SERIES[7]}


def _label(method: str) -> str:
    return speed.LABELS.get(method, method)


def _parity_line(fig: go.Figure) -> None:
    """The dashed 1× line and its label. On a log axis an annotation's y is log10 of the value, so
    `add_hline(annotation_text=...)` would put the label at 10×; it is placed by hand at log10(1)."""
    fig.add_hline(y=1.0, line=dict(color=PALETTE["muted"], dash="dash"))
    fig.add_annotation(x=1.0, xref="paper", xanchor="right", y=0.0, yref="y", yanchor="bottom",
                       text="as fast as bf16", showarrow=False, font=dict(color="#64748b"))


def _speedup_axis(fig: go.Figure, values: Sequence[float | None]) -> None:
    """Log speedup axis ticked at 1-2-5 steps written as 0.5×, 2×: plotly's own log ticks read
    "2 5 2 5" between decades, which no one reads as a speedup."""
    finite = [v for v in values if v is not None and v > 0 and math.isfinite(v)] or [1.0]
    lo, hi = min(min(finite), 1.0) / 1.25, max(max(finite), 1.0) * 1.25
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    fig.update_yaxes(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=ticks,
                     ticktext=[f"{t:g}×" for t in ticks])


def _batch_axis(fig: go.Figure, batch_sizes: Sequence[int]) -> None:
    """Log batch axis ticked at the measured sizes and ranged to them (a margin of a quarter decade)."""
    lo, hi = math.log10(min(batch_sizes)), math.log10(max(batch_sizes))
    fig.update_xaxes(type="log", tickvals=list(batch_sizes), ticktext=[str(m) for m in batch_sizes],
                     range=[lo - 0.1, hi + 0.1])


def speedup_chart(res: speed.Results, k: int, n: int, methods: Sequence[str]) -> go.Figure:
    """Speedup over bf16 cuBLAS against batch size; a marker where each method drops below 1x."""
    ms = res.batch_sizes
    fig = go.Figure()
    _parity_line(fig)
    shown = speed.series(res, k, n, methods)
    for method, values in shown.items():
        color = COLORS.get(method)
        fig.add_trace(go.Scatter(x=ms, y=values, mode="lines+markers", name=_label(method),
                                 line=dict(color=color, width=2.5 if method == "w4a16" else 1.8),
                                 hovertemplate="M=%{x}: %{y:.2f}× bf16<extra>" + method + "</extra>"))
        cross = speed.crossover(ms, values)
        if cross is not None and method != "bf16":
            fig.add_trace(go.Scatter(x=[cross], y=[1.0], mode="markers", showlegend=False,
                                     marker=dict(symbol="x", size=13, color=color, line=dict(width=2)),
                                     hovertemplate=f"{method} falls below bf16 at M≈{cross:.0f}<extra></extra>"))
    _batch_axis(fig, ms)
    _speedup_axis(fig, [v for values in shown.values() for v in values])
    return _legend_below(styled(fig, f"Speedup over bf16 cuBLAS, K={k}, N={n} (× marks the crossover below 1×)",
                                "batch size M (tokens per matmul, log scale)", "speedup over bf16 (×, log scale)",
                                height=500))


def history_chart(history: dict[str, tuple[list[int], list[float | None]]], card: str) -> go.Figure:
    """One line per kernel version (`speed.kernel_history`): W4A16 geomean speedup over bf16
    against batch size."""
    fig = go.Figure()
    _parity_line(fig)
    batch_sizes = sorted({m for ms, _ in history.values() for m in ms})
    for i, (version, (ms, values)) in enumerate(history.items()):
        newest = i == len(history) - 1
        fig.add_trace(go.Scatter(x=ms, y=values, mode="lines+markers", name=f"kernel {version}",
                                 line=dict(color=SERIES[0] if newest else SERIES[(i + 4) % len(SERIES)],
                                           width=2.8 if newest else 1.5),
                                 hovertemplate="M=%{x}: %{y:.2f}× bf16<extra>" + version + "</extra>"))
    _batch_axis(fig, batch_sizes)
    _speedup_axis(fig, [v for _, values in history.values() for v in values])
    return _legend_below(styled(fig, f"Same W4A16 weights, different kernels: quantlab's versions on {card}",
                                "batch size M (tokens per matmul, log scale)",
                                "geomean speedup over bf16, five shapes (×, log)", height=460))


def _legend_below(fig: go.Figure) -> go.Figure:
    """Long method names: the legend goes under the plot so it never covers the title."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
                      margin=dict(b=140))
    return fig


def roofline_chart(res: speed.Results, k: int, n: int, methods: Sequence[str]) -> go.Figure:
    """Achieved TFLOP/s against arithmetic intensity, under the card's measured roofs."""
    bw, peak = float(res.meta["copy_gbps"]), float(res.meta["bf16_tflops"])  # type: ignore[arg-type]
    fp8_peak = float(res.meta.get("fp8_tflops", peak))  # type: ignore[arg-type]
    xs = [0.25 * 2 ** (i / 4) for i in range(4 * 16)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[speed.roof(x, bw, peak) for x in xs], mode="lines",
                             name=f"roof: {bw:,.0f} GB/s copy bandwidth, {peak:,.0f} TFLOP/s bf16",
                             line=dict(color="#0f172a", width=2)))
    fig.add_trace(go.Scatter(x=xs, y=[speed.roof(x, bw, fp8_peak) for x in xs], mode="lines",
                             name=f"fp8 roof: {fp8_peak:,.0f} TFLOP/s",
                             line=dict(color="#0f172a", width=1, dash="dot")))
    read = speed.fastest_read_gbps(res)
    fig.add_trace(go.Scatter(x=xs, y=[speed.roof(x, read, peak) for x in xs], mode="lines",
                             name=f"fastest weight read in this run: {read:,.0f} GB/s",
                             line=dict(color=PALETTE["muted"], width=1.5, dash="dash")))
    for method in methods:
        if method not in speed.SIZED_METHODS:
            continue
        pts = [(speed.intensity(m, k, n, method), res.ms(k, n, m, method), m) for m in res.batch_sizes]
        pts = [(ai, speed.flops(m, k, n) / t / 1e9, m) for ai, t, m in pts if t]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers+lines",
                                 name=_label(method), text=[f"M={p[2]}" for p in pts],
                                 line=dict(color=COLORS.get(method), width=1),
                                 hovertemplate="%{text}: %{x:.1f} FLOP/B, %{y:.1f} TFLOP/s"
                                               "<extra>" + method + "</extra>"))
    fig.update_xaxes(type="log", dtick=1, exponentformat="power")  # decades only, no "2 5" labels
    fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return _legend_below(styled(fig, f"Roofline of {res.meta['card']}, K={k}, N={n}: one point per batch size",
                                "arithmetic intensity (FLOP per byte of device memory, log)", "achieved TFLOP/s (log)",
                                height=560))


def floors_chart(k: int, n: int, bandwidth_gbps: float, peak_tflops: float, batch_sizes: Sequence[int],
                 methods: Sequence[str], chosen_m: int) -> go.Figure:
    """The fastest any kernel could be (max of memory time and compute time) against batch size."""
    fig = go.Figure()
    for method in methods:
        bounds = [speed.bound(m, k, n, method, bandwidth_gbps, peak_tflops) for m in batch_sizes]
        fig.add_trace(go.Scatter(x=list(batch_sizes), y=[b.floor_us for b in bounds], mode="lines",
                                 name=f"{_label(method)}: floor", line=dict(color=COLORS.get(method), width=2)))
    b = speed.bound(chosen_m, k, n, "bf16", bandwidth_gbps, peak_tflops)
    # Shapes and their labels are placed by hand: on a log axis an annotation's x is log10(M), and
    # add_vline's own annotation at x = M pushed the axis out to 10^288.
    fig.add_vline(x=chosen_m, line=dict(color=PALETTE["accent"], dash="dot"))
    fig.add_annotation(x=math.log10(chosen_m), y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                       text=f"M={chosen_m}: {'memory' if b.memory_bound else 'compute'}-bound in bf16",
                       font=dict(color=PALETTE["accent"]))
    ridge_m = [m for m in batch_sizes if not speed.bound(m, k, n, "bf16", bandwidth_gbps, peak_tflops).memory_bound]
    if ridge_m:
        fig.add_vrect(x0=ridge_m[0], x1=batch_sizes[-1], fillcolor=PALETTE["bad"], opacity=0.05, line_width=0)
        fig.add_annotation(x=math.log10(ridge_m[0]), y=0.93, yref="paper", xanchor="left", showarrow=False,
                           text="compute-bound in bf16", font=dict(color="#64748b"))
    _batch_axis(fig, sorted({*batch_sizes, chosen_m}))
    fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return styled(fig, f"Lower bound on time = max(bytes / bandwidth, FLOPs / peak), K={k}, N={n}",
                  "batch size M (log)", "floor (µs, log)", height=420)
