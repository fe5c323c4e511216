"""Figure of the What-if lesson: error against cost, one named point per scheme."""
from quantlab.viz import compare as viz_compare
from quantlab.viz.style import SERIES
from tests.viz import assert_titled


def test_what_if_scatter_one_named_point_per_scheme():
    names, bits, sqnr = ["W4A16", "W8A16", "FP8"], [4.125, 8.125, 8.0], [19.0, 43.0, 31.5]
    fig = viz_compare.what_if_scatter(names, bits, sqnr, "layer-output SQNR (dB)")
    assert_titled(fig)
    assert [t.name for t in fig.data] == names
    assert [(t.x[0], t.y[0]) for t in fig.data] == list(zip(bits, sqnr))
    assert all(len(t.x) == 1 and t.mode == "markers" for t in fig.data)
    assert fig.layout.yaxis.title.text == "layer-output SQNR (dB)"
    assert "bits per weight" in fig.layout.xaxis.title.text
    assert len({t.marker.color for t in fig.data}) == 3


def test_what_if_scatter_marker_shapes_tell_apart_more_schemes_than_colours():
    n = len(SERIES) + 2
    fig = viz_compare.what_if_scatter([f"s{i}" for i in range(n)], list(range(n)), [float(i) for i in range(n)], "dB")
    assert_titled(fig)
    first, wrapped = fig.data[0], fig.data[len(SERIES)]
    assert first.marker.color == wrapped.marker.color
    assert (first.marker.symbol, wrapped.marker.symbol) == ("circle", "diamond")
    assert len({(t.marker.color, t.marker.symbol) for t in fig.data}) == n  # every scheme looks different


def test_what_if_scatter_empty():
    fig = viz_compare.what_if_scatter([], [], [], "dB")
    assert fig.data == ()
    assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
