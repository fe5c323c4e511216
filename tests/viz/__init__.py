"""Shared checks for the figure builders' tests."""
from __future__ import annotations

import re

import plotly.graph_objects as go

_AXIS = re.compile(r"^[xy]axis\d*$")


def axes_of(fig: go.Figure) -> set[str]:
    """Every cartesian axis of the figure: those in its layout and those its traces draw on."""
    names = {k for k in fig.layout.to_plotly_json() if _AXIS.match(k)}
    for trace in fig.data:
        for letter in ("x", "y"):
            if letter + "axis" in trace:  # cartesian traces only
                ref = getattr(trace, letter + "axis") or letter
                names.add(letter + "axis" + ref[1:])
    return names


def _title(fig: go.Figure, axis: str) -> str | None:
    """An axis' title; a shared axis (`matches`, as make_subplots' shared axes) reads its partner's."""
    layout = fig.layout[axis]
    if layout.title.text:
        return layout.title.text
    partner = layout.matches  # e.g. "x2"
    return fig.layout[partner[0] + "axis" + partner[1:]].title.text if partner else None


def assert_titled(fig: go.Figure) -> None:
    """The figure has a title and every axis it has or draws on is titled (a chart without them is a bug)."""
    assert fig.layout.title.text, "the figure has no title"
    axes = axes_of(fig)
    assert {"xaxis", "yaxis"} <= axes, f"no x and y axis found: {sorted(axes)}"
    untitled = sorted(a for a in axes if not _title(fig, a))
    assert not untitled, f"axes without a title: {untitled}"


def real_x(trace) -> list[float]:
    """The x values of a trace drawn as separate segments (None between them), gaps dropped."""
    return [v for v in trace.x if v is not None]
