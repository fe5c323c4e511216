"""Figures and tables for the KV cache lesson (pure: data in, `go.Figure` or rows out, house style)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from quantlab.lessons import kv_cache
from quantlab.viz.formats import log_axis
from quantlab.viz.style import PALETTE, SERIES, styled

# Context ticks in powers of two, as contexts are quoted (4k, 128k).
CONTEXT_TICKS = tuple(2**e for e in range(0, 21, 2))


def _context_text(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens >= 1024 else str(tokens)


def memory_chart(p: kv_cache.MemoryPlan, unit_name: str, title: str) -> go.Figure:
    """Weights plus cache against context length, one line per cache scheme, card sizes as dotted lines.

    Both axes are logarithmic: the cache grows by the batch × context product, so a 70B model at
    batch 64 reaches terabytes while the cards sit between 24 and 141 GB; on linear axes every
    card line and every crossing would collapse into the bottom left corner.
    """
    fig = go.Figure()
    for i, label in enumerate(p.kv):
        fig.add_trace(go.Scatter(x=p.tokens, y=p.totals(label), name=label, mode="lines",
                                 line=dict(color=SERIES[i], width=2.2),
                                 hovertemplate="%{x:,} tokens: %{y:.1f} " + unit_name + "<extra></extra>"))
    first, last = p.tokens[0], p.tokens[-1]
    for gb in kv_cache.GPU_MEMORY_GB:
        # Traces, not add_hline: an hline's annotation on a log axis is placed at 10^y.
        fig.add_trace(go.Scatter(x=[first, last], y=[gb, gb], mode="lines+text", showlegend=False,
                                 line=dict(color=PALETTE["data"], dash="dot", width=1),
                                 text=[f"{gb} {unit_name} card", ""], textposition="top right",
                                 hoverinfo="skip", name=f"{gb} {unit_name} card"))
    totals = [v for label in p.kv for v in p.totals(label)]
    lo = min(min(totals), min(kv_cache.GPU_MEMORY_GB)) / 1.3
    hi = max(max(totals), max(kv_cache.GPU_MEMORY_GB)) * 1.3
    fig.update_yaxes(**log_axis(lo, hi), range=[math.log10(lo), math.log10(hi)])
    ticks = [t for t in CONTEXT_TICKS if first <= t <= last]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[_context_text(t) for t in ticks])
    return styled(fig, title, "context length per sequence (tokens, log scale)",
                  f"weights + KV cache ({unit_name}, log scale)", height=440)


def fit_table(p: kv_cache.MemoryPlan, unit_name: str) -> list[dict[str, str]]:
    """Rows of 'longest context that fits': one per cache scheme, one column per card size."""
    rows = []
    for label, by_gpu in p.fits.items():
        row = {"KV cache": label}
        for gb, tokens in by_gpu.items():
            row[f"{gb} {unit_name}"] = ("weights don't fit" if tokens == 0 else
                                        f"all {p.max_position:,}" if tokens >= p.max_position else f"{tokens:,}")
        rows.append(row)
    return rows


def error_table(errs: dict[str, kv_cache.KVError]) -> list[dict[str, object]]:
    """Rows of the real-K/V error table: one per scheme label."""
    return [{
        "scheme": label, "K SQNR (dB)": e.k_sqnr_db, "V SQNR (dB)": e.v_sqnr_db,
        "output, only K (dB)": e.out_sqnr_db["k"], "output, only V (dB)": e.out_sqnr_db["v"],
        "output, K and V (dB)": e.out_sqnr_db["kv"], "logit RMS change": e.logit_rmse,
    } for label, e in errs.items()]


def sqnr_chart(errs: dict[str, kv_cache.KVError]) -> go.Figure:
    """Grouped bars: attention output SQNR per scheme with only K, only V, or both quantized."""
    labels = list(errs)
    fig = go.Figure()
    for i, (part, name) in enumerate((("k", "only K quantized"), ("v", "only V quantized"), ("kv", "both"))):
        fig.add_trace(go.Bar(x=labels, y=[errs[label].out_sqnr_db[part] for label in labels], name=name,
                             marker_color=SERIES[i], hovertemplate="%{x}: %{y:.1f} dB<extra></extra>"))
    fig.update_layout(barmode="group")
    return styled(fig, "Attention output error on real K and V (higher is better)", "KV scheme",
                  "attention output SQNR (dB)", height=400)


def channel_chart(k: Sequence[float], v: Sequence[float], layer: int, head: int) -> go.Figure:
    """Grouped bars of max |K| and max |V| per head_dim channel of one head."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=list(range(len(k))), y=list(k), name="keys", marker_color=SERIES[0]))
    fig.add_trace(go.Bar(x=list(range(len(v))), y=list(v), name="values", marker_color=SERIES[1]))
    fig.update_layout(barmode="group")
    return styled(fig, f"Largest |K| and |V| per channel, layer {layer} head {head}", "head_dim channel (index)",
                  "max |x| over real tokens (unitless)", height=340)
