"""Figures of the Speed lesson: speedup against batch size with crossovers, kernel history,
the roofline and the time floors."""
import math

import pytest

from quantlab.lessons import speed
from quantlab.viz import speed as viz_speed
from tests.viz import assert_titled

META = {"card": "Toy GPU", "date": "2026-01-01", "torch": "t", "triton": "r", "tag": "v9",
        "copy_gbps": 1000.0, "bf16_tflops": 100.0, "fp8_tflops": 200.0}
MS = {  # milliseconds at M = 1, 16, 256 for K = N = 256
    "bf16": (1.0, 1.0, 2.0),
    "w4a16": (0.25, 0.5, 4.0),  # 4×, 2×, 0.5×: falls below bf16 between 16 and 256
    "torch_int4": (0.5, 0.8, 1.0),  # 2×, 1.25×, 2×: never does
    "w4a16_gemv": (0.3, 0.6, 5.0),  # a path, not a storage format: no place on the roofline
}
GBPS = {"bf16": 100.0, "w4a16": 900.0, "torch_int4": 300.0, "w4a16_gemv": 1500.0}


@pytest.fixture(scope="module")
def res():
    rows = tuple({"K": 256, "N": 256, "M": m, "method": method, "ms": t, "gbps": GBPS[method]}
                 for method, times in MS.items() for m, t in zip((1, 16, 256), times))
    return speed.Results(META, rows, (), "toy")


def test_speedup_chart_lines_and_crossover_marks(res):
    fig = viz_speed.speedup_chart(res, 256, 256, ["bf16", "w4a16", "torch_int4"])
    assert_titled(fig)
    lines = [t for t in fig.data if t.showlegend is not False]
    marks = [t for t in fig.data if t.showlegend is False]
    assert [t.name for t in lines] == [speed.LABELS[m] for m in ("bf16", "w4a16", "torch_int4")]
    for t in lines:
        assert list(t.x) == [1, 16, 256]
    assert list(lines[0].y) == [1.0, 1.0, 1.0]
    assert list(lines[1].y) == pytest.approx([4.0, 2.0, 0.5])
    assert list(lines[2].y) == pytest.approx([2.0, 1.25, 2.0])
    # Only W4A16 crosses, at 2^(4 + 2/3 · 4) (interpolated in log2 M), marked on the 1× line.
    assert len(marks) == 1
    assert list(marks[0].x) == pytest.approx([2 ** (4 + 8 / 3)]) and list(marks[0].y) == [1.0]
    assert [s.y0 for s in fig.layout.shapes] == [1.0]
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [1, 16, 256]
    assert fig.layout.yaxis.type == "log"
    assert "K=256, N=256" in fig.layout.title.text
    assert fig.layout.legend.y < 0  # long names: the legend sits below the plot


def test_speedup_chart_of_a_committed_run():
    run = speed.load_results(speed.committed_results()[0])
    k, n = run.shapes[0]
    fig = viz_speed.speedup_chart(run, k, n, ["w4a16", "torch_int4"])
    assert_titled(fig)
    by_name = {t.name: t for t in fig.data if t.showlegend is not False}
    for method in ("w4a16", "torch_int4"):
        assert list(by_name[speed.LABELS[method]].y) == [run.speedup(k, n, m, method) for m in run.batch_sizes]
    assert f"K={k}, N={n}" in fig.layout.title.text


def test_history_chart_one_line_per_kernel_version_newest_bold():
    history = {"v1": ([1, 16], [0.5, 0.8]), "v6": ([1, 16, 256], [2.1, 1.5, None])}
    fig = viz_speed.history_chart(history, "Toy GPU")
    assert_titled(fig)
    assert [t.name for t in fig.data] == ["kernel v1", "kernel v6"]
    assert list(fig.data[0].x) == [1, 16] and list(fig.data[0].y) == [0.5, 0.8]
    assert list(fig.data[1].y) == [2.1, 1.5, None]
    assert fig.data[1].line.width > fig.data[0].line.width
    assert list(fig.layout.xaxis.tickvals) == [1, 16, 256]  # every version's batch sizes
    assert "Toy GPU" in fig.layout.title.text


def test_history_chart_of_the_committed_runs():
    runs = [speed.load_results(p) for p in speed.committed_results()]
    history = speed.kernel_history(runs)
    fig = viz_speed.history_chart(history, "H200")
    assert [t.name for t in fig.data] == [f"kernel {v}" for v in history]
    for trace, (ms, values) in zip(fig.data, history.values()):
        assert list(trace.x) == ms and list(trace.y) == values


def test_roofline_chart_roofs_and_measured_points(res):
    fig = viz_speed.roofline_chart(res, 256, 256, ["bf16", "w4a16", "w4a16_gemv"])
    assert_titled(fig)
    bf16_roof, fp8_roof, read_roof, *points = fig.data
    assert "1,000 GB/s" in bf16_roof.name and "100 TFLOP/s" in bf16_roof.name
    assert "200 TFLOP/s" in fp8_roof.name and "1,500 GB/s" in read_roof.name  # fastest read of the run
    for trace, bw, peak in ((bf16_roof, 1000, 100), (fp8_roof, 1000, 200), (read_roof, 1500, 100)):
        assert list(trace.y) == pytest.approx([min(bw * x / 1e3, peak) for x in trace.x])
    assert max(bf16_roof.y) == 100 and min(bf16_roof.y) < 100  # both the slope and the flat roof
    # The GEMV path stores nothing of its own: no point on the roofline.
    assert [t.name for t in points] == [speed.LABELS["bf16"], speed.LABELS["w4a16"]]
    for trace, method in zip(points, ("bf16", "w4a16")):
        assert list(trace.x) == pytest.approx([speed.intensity(m, 256, 256, method) for m in (1, 16, 256)])
        assert list(trace.y) == pytest.approx([speed.flops(m, 256, 256) / t / 1e9
                                               for m, t in zip((1, 16, 256), MS[method])])
        assert list(trace.text) == ["M=1", "M=16", "M=256"]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert "Toy GPU" in fig.layout.title.text


@pytest.mark.parametrize(("chosen", "verdict"), [(16, "memory"), (4096, "compute")])
def test_floors_chart_floors_and_the_ridge(chosen, verdict):
    ms = [1, 16, 256, 1024, 4096]
    fig = viz_speed.floors_chart(4096, 4096, 3000.0, 750.0, ms, ["bf16", "w4a16"], chosen)
    assert_titled(fig)
    assert [t.name for t in fig.data] == [f"{speed.LABELS[m]}: floor" for m in ("bf16", "w4a16")]
    for trace, method in zip(fig.data, ("bf16", "w4a16")):
        assert list(trace.x) == ms
        assert list(trace.y) == pytest.approx([speed.bound(m, 4096, 4096, method, 3000, 750).floor_us for m in ms])
    # At one token the weight read decides: 4-bit weights are about 4× faster to stream.
    assert fig.data[0].y[0] / fig.data[1].y[0] == pytest.approx(16 / 4.125, rel=0.01)
    # The ridge is 250 FLOP/B: bf16 at M = 256 still sits below it (227 FLOP/B), M = 1024 above.
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(r.x0, r.x1) for r in rects] == [(1024, 4096)]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [s.x0 for s in lines] == [chosen]
    notes = [a.text for a in fig.layout.annotations]
    assert f"M={chosen}: {verdict}-bound in bf16" in notes
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_floors_chart_without_a_compute_bound_batch_has_no_ridge_band():
    fig = viz_speed.floors_chart(4096, 4096, 3000.0, 750.0, [1, 2, 4], ["bf16"], 2)
    assert_titled(fig)
    assert not [s for s in fig.layout.shapes if s.type == "rect"]
    assert all(math.isfinite(y) for y in fig.data[0].y)


@pytest.mark.parametrize("chosen", [1, 16, 4096, 8192])
def test_floors_chart_x_axis_stays_within_the_batch_sizes(chosen):
    """add_vline's annotation at x = M on a log axis once stretched the axis to 10^288."""
    ms = tuple(2**i for i in range(14))
    fig = viz_speed.floors_chart(4096, 4096, 3000.0, 750.0, ms, ["bf16", "w4a16"], chosen)
    lo, hi = fig.layout.xaxis.range
    assert math.log10(1) - 0.2 < lo and hi < math.log10(8192) + 0.2
    for note in fig.layout.annotations:  # every label sits inside the axis, in log10 coordinates
        if note.xref in (None, "x"):
            assert lo <= note.x <= hi, note.text
    label = next(a for a in fig.layout.annotations if a.text.startswith(f"M={chosen}:"))
    assert label.x == pytest.approx(math.log10(chosen))


def test_parity_label_sits_on_the_1x_line_and_ticks_read_as_speedups(res):
    fig = viz_speed.speedup_chart(res, 256, 256, ["bf16", "w4a16", "torch_int4"])
    label = next(a for a in fig.layout.annotations if a.text == "as fast as bf16")
    assert label.yref == "y" and label.y == 0.0  # log10(1×), not 1 (which a log axis reads as 10×)
    ticks = list(fig.layout.yaxis.ticktext)
    assert "1×" in ticks and all(t.endswith("×") for t in ticks)
    lo, hi = fig.layout.yaxis.range
    assert lo <= math.log10(0.5) and hi >= math.log10(4.0)  # every measured speedup is inside
    assert fig.layout.xaxis.range[1] < math.log10(256) + 0.2
