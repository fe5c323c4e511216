"""Figures of the Granularity lesson: error against stored bits, scale heatmap, per-channel failure, a packed word."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from quantlab.core.packing import WordDiagram
from quantlab.lessons.granularity import ChannelFailure, Point, ScaleMap
from quantlab.viz.style import PALETTE, SERIES, clear_labels, styled


def _pareto_front(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of points no other point beats on both fewer bits and higher SQNR."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], float("-inf")
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def _family(p: Point) -> tuple[str, int, str]:
    """Integer grids by width and symmetry; the microscaling formats (FP4/FP8 values with 8-bit
    block scales), the tiled formats (FP8_BLOCK) and NF4 (with and without double quantization)
    each as one family of their own."""
    if p.spec.type == "nf4":
        return ("NF4", 0, "")
    if p.spec.strategy == "block":
        return (f"{'FP' if p.spec.type == 'float' else 'INT'}{p.spec.num_bits} tiles", 0, "")
    if p.spec.scale_dtype is not None:
        return ("microscaling", 0, "")
    return ("INT", p.spec.num_bits, "sym" if p.spec.symmetric else "asym")


def _family_name(family: tuple[str, int, str]) -> str:
    kind, bits, mode = family
    return f"INT{bits} {mode}" if kind == "INT" else kind


def pareto(points: Sequence[Point], output: bool) -> go.Figure:
    fig = go.Figure()
    value = (lambda p: p.output_sqnr_db) if output else (lambda p: p.weight_sqnr_db)
    xs, ys = [p.bits_per_weight for p in points], [value(p) for p in points]
    front = _pareto_front(xs, ys)
    # Sym and asym points of one granularity sit almost on top of each other, and INT4's choices all
    # fall within half a bit: only points on the front get a printed label, and only where it
    # keeps clear of the labels already placed. Every point names itself on hover.
    on_front = {id(points[i]) for i in clear_labels(xs, ys, front)}
    # The name last in the key: families of other formats tie on the rest, and a set's order is not stable.
    families = sorted({_family(p) for p in points}, key=lambda f: (f[0] != "INT", f[1], f[2] != "sym", f[0]))
    for color, family in zip(SERIES, families):
        group = [p for p in points if _family(p) == family]
        marker = {"sym": "circle", "asym": "diamond"}.get(family[2], "square")
        fig.add_trace(go.Scatter(
            x=[p.bits_per_weight for p in group], y=[value(p) for p in group], mode="markers+text",
            text=[p.label if id(p) in on_front else "" for p in group], customdata=[p.label for p in group],
            # Asym below right, sym above left; the other formats above right, clear of INT4's cluster.
            textposition={"asym": "bottom right", "sym": "top left"}.get(family[2], "top right"),
            textfont=dict(size=11, color=color), name=_family_name(family),
            marker=dict(size=10, color=color, symbol=marker),
            hovertemplate="%{customdata}: %{x:.3f} bits/weight, %{y:.2f} dB<extra></extra>"))
    fig.add_trace(go.Scatter(x=[xs[i] for i in front], y=[ys[i] for i in front], mode="lines", name="Pareto front",
                             line=dict(color=PALETTE["muted"], dash="dot"), hoverinfo="skip"))
    what = "layer-output SQNR on real inputs" if output else "weight SQNR"
    return styled(fig, f"Error against storage: {what}", "stored bits per weight (bits)",
                  "SQNR (dB, higher is better)", height=430)


def scale_heatmap(smap: ScaleMap, label: str) -> go.Figure:
    rows = "output channel" if smap.rows_per_cell == 1 else f"output channel (max over blocks of {smap.rows_per_cell})"
    values = smap.values.numpy()
    # Log colour: one outlier scale would otherwise paint every other cell the same dark blue.
    fig = go.Figure(go.Heatmap(
        z=np.log10(np.where(values > 0, values, np.nan)),  # a zero scale (all-zero group) has no log
        y=np.arange(values.shape[0]) * smap.rows_per_cell, customdata=values,
        colorscale="Viridis", colorbar=dict(title="log10 scale"),
        hovertemplate="channel %{y}, group %{x}: scale %{customdata:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    # Group indices are whole numbers: at most ~12 integer ticks, never 0.5 or 1.5.
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(values.shape[1] / 12)))
    return styled(fig, f"Scales of {label}: one per output channel × group of {smap.group_size}",
                  f"group index (each covers {smap.group_size} input columns)", rows, height=420)


def channel_failure(fail: ChannelFailure) -> go.Figure:
    fig = go.Figure()
    # Blue against orange, not red against green: readable with any colour vision.
    for sqnr, spec, color in ((fail.sqnr_coarse, fail.coarse, PALETTE["asym"]),
                              (fail.sqnr_fine, fail.fine, PALETTE["sym"])):
        fig.add_trace(go.Scattergl(x=fail.absmax.numpy(), y=sqnr.numpy(), mode="markers", name=spec.label,
                                   marker=dict(size=5, color=color, opacity=0.6),
                                   hovertemplate="max |w| %{x:.3g}: %{y:.1f} dB<extra></extra>"))
    fig.update_xaxes(type="log", dtick=1, exponentformat="power")  # decades only, no "2 5" labels
    return styled(fig, "Where one scale fails: each dot is an output channel",
                  "largest |weight| in the channel (log scale)", "channel SQNR (dB)", height=400)


def word_bits(diagram: WordDiagram) -> go.Figure:
    """32 bits of one int32 word, most significant on the left, coloured by the code they hold."""
    b = diagram.num_bits
    positions = list(range(31, -1, -1))
    owner = [p // b for p in positions]
    bits = list(diagram.binary)
    fig = go.Figure(go.Heatmap(
        z=[owner], x=[str(p) for p in positions], y=["bit"], text=[bits], texttemplate="%{text}",
        textfont=dict(size=15, color="white"), colorscale=[[i / 7, SERIES[i % len(SERIES)]] for i in range(8)],
        showscale=False, xgap=2, hovertemplate="bit %{x}: %{text} (code %{z})<extra></extra>"))
    for i, (code, stored) in enumerate(zip(diagram.codes, diagram.stored)):
        fig.add_annotation(x=str(i * b + b - 1), y=1.0, yref="paper", xanchor="left", yanchor="bottom",
                           showarrow=False, text=f"#{i}: {code:+d}→{stored}", font=dict(size=11))
    fig.update_yaxes(showticklabels=False)
    fig.update_xaxes(type="category")  # keep bit 31 on the left, as the word is written in binary
    return styled(fig, f"One int32 of weight_packed: {diagram.hex} (reads {diagram.word:,} as a signed int32)",
                  "bit position (31 = most significant; code #0 sits in bits 3..0)", "one word", height=230)
