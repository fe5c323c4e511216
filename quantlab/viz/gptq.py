"""Figures of the GPTQ lesson: where the error goes column by column, and how calibration decides it."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from quantlab.lessons.gptq import OTHERS, CalibrationPoint, ColumnErrors
from quantlab.viz.style import PALETTE, styled

RTN_COLOR, GPTQ_COLOR = PALETTE["asym"], PALETTE["sym"]


def column_errors(cols: ColumnErrors) -> go.Figure:
    """Top: each column's weight error, RTN against GPTQ. Bottom: the output error piling up as
    the columns are quantized, as a fraction of RTN's total. Columns in GPTQ's processing order."""
    rank = np.arange(1, len(cols.order) + 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.55, 0.45])
    hover = "column %{customdata} (rank %{x}): %{y:.3g}<extra></extra>"
    for y, name, color, row in ((cols.rtn_weight, "RTN: weight error of the column", RTN_COLOR, 1),
                                (cols.gptq_weight, "GPTQ: weight error of the column", GPTQ_COLOR, 1),
                                (cols.rtn_output, "RTN: output error so far", RTN_COLOR, 2),
                                (cols.gptq_output, "GPTQ: output error so far", GPTQ_COLOR, 2)):
        fig.add_trace(go.Scatter(x=rank, y=y, name=name, customdata=cols.order, hovertemplate=hover,
                                 mode="markers" if row == 1 else "lines",
                                 marker=dict(color=color, size=4, opacity=0.6), line=dict(color=color, width=2)),
                      row=row, col=1)
    styled(fig, "Where the error goes: GPTQ moves weight error onto the columns that see little input",
           "", "", height=560)
    fig.update_xaxes(title_text="input column, by input energy (most first: the order GPTQ quantizes in)",
                     row=2, col=1)
    fig.update_yaxes(title_text="weight MSE (log)", type="log", exponentformat="power", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="output error (RTN total = 1)", row=2, col=1)
    return fig


def _label(point: CalibrationPoint) -> str:
    if point.calibration == "RTN":
        return "RTN (no calibration)"
    return "GPTQ: the other texts" if point.calibration == OTHERS else f"GPTQ: {point.calibration}"


def calibration_bars(rows: Sequence[CalibrationPoint], eval_kind: str) -> go.Figure:
    """Layer-output SQNR on the evaluation text for each calibration choice; RTN as the yardstick.
    The bar calibrated on the evaluation text itself is marked: it is fitted to what it is judged on."""
    colors = [RTN_COLOR if r.calibration == "RTN" else PALETTE["muted"] if r.calibration == eval_kind
              else GPTQ_COLOR for r in rows]
    text = ["" if r.calibration == "RTN" else ("same text: in-sample · " if r.calibration == eval_kind else "")
            + f"{r.tokens:,} tokens" for r in rows]
    fig = go.Figure(go.Bar(x=[_label(r) for r in rows], y=[r.output_db for r in rows], marker_color=colors,
                           text=text, textposition="outside", hovertemplate="%{x}: %{y:.1f} dB<extra></extra>"))
    styled(fig, f"Layer-output SQNR on {eval_kind} text, by the text GPTQ was calibrated on",
           "calibration (grey: the evaluation text itself)", "layer-output SQNR (dB)", height=380)
    fig.update_yaxes(range=[0, max(r.output_db for r in rows) * 1.15])
    return fig


def samples_curve(rows: Sequence[CalibrationPoint], rtn_db: float) -> go.Figure:
    """Held-out layer-output SQNR against the calibration tokens behind the Hessian."""
    tokens = [r.tokens for r in rows]
    fig = go.Figure(go.Scatter(x=tokens, y=[r.output_db for r in rows], mode="lines+markers", name="GPTQ",
                               line=dict(color=GPTQ_COLOR, width=2),
                               customdata=[r.sentences for r in rows],
                               hovertemplate="%{x:,} tokens (%{customdata} sentences per text): "
                                             "%{y:.1f} dB<extra></extra>"))
    fig.add_trace(go.Scatter(x=[min(tokens), max(tokens)], y=[rtn_db, rtn_db], mode="lines", name="RTN",
                             line=dict(color=RTN_COLOR, dash="dash"), hoverinfo="skip"))
    styled(fig, "More calibration tokens, a Hessian closer to the layer's real inputs",
           "calibration tokens (log)", "layer-output SQNR on the evaluation text (dB)", height=360)
    fig.update_xaxes(type="log")
    return fig
