"""Shared figure helpers."""
import csv
import io

import plotly.graph_objects as go

from quantlab.viz import style


def test_figure_csv_holds_every_point_of_every_trace():
    fig = go.Figure([go.Scatter(x=[1, 2, 3], y=[4, 5, 6], name="line"), go.Bar(y=[7, 8]),
                     go.Heatmap(z=[[1, 2], [3, 4]], x=["a", "b"], y=["r0", "r1"], name="map")])
    rows = list(csv.reader(io.StringIO(style.figure_csv(fig))))
    assert rows[0] == ["trace", "x", "y", "z"]
    assert rows[1:4] == [["line", "1", "4", ""], ["line", "2", "5", ""], ["line", "3", "6", ""]]
    assert rows[4:6] == [["trace 1", "0", "7", ""], ["trace 1", "1", "8", ""]]
    assert rows[6:] == [["map", "a", "r0", "1"], ["map", "b", "r0", "2"],
                        ["map", "a", "r1", "3"], ["map", "b", "r1", "4"]]
