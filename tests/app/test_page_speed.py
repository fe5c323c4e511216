"""The Speed lesson: committed GPU results, the roofline, the user's shape, and live CPU timing."""
import pytest
import torch

from quantlab.lessons import speed
from tests.app.apptest_util import markdown_text, run_page

PAGE = "pages/speed.py"


def test_committed_results_are_real_runs() -> None:
    files = speed.committed_results()
    assert files, "bench/results holds no GPU matmul results"
    res = speed.load_results(files[0])
    assert {"bf16", "torch_int4", "w4a16", "w8a16", "fp8"} <= set(res.methods)
    assert res.batch_sizes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
    assert len(res.shapes) == 5 and all(r["ms"] > 0 for r in res.rows)


def test_page_runs_and_labels_card_and_date() -> None:
    at = run_page(PAGE)
    res = speed.load_results(speed.committed_results()[0])
    captions = " ".join(c.value for c in at.caption)
    assert str(res.meta["card"]) in captions and str(res.meta["date"]) in captions
    assert len(at.get("plotly_chart")) >= 3


def test_shape_choice_changes_the_measured_answer() -> None:
    at = run_page(PAGE)
    before = markdown_text(at)
    shapes = at.selectbox(key="speed_shape").options
    at.selectbox(key="speed_shape").set_value(shapes[-1]).run()
    assert not at.exception
    assert markdown_text(at) != before
    assert "torch's built-in int4 kernel runs" in markdown_text(at)


def test_architecture_preset_and_batch_move_the_bound() -> None:
    at = run_page(PAGE)
    at.selectbox(key="speed_origin").set_value("llama-3.1-8b").run()
    assert "model.layers.0.mlp.down_proj" in at.selectbox(key="speed_layer").options
    at.selectbox(key="speed_layer").set_value("model.layers.0.mlp.down_proj").run()
    table = at.dataframe[0].value
    assert set(table["bound"]) == {"memory"}  # one token: every method waits for memory
    at.select_slider(key="speed_m").set_value(8192).run()
    assert not at.exception
    assert "compute" in set(at.dataframe[0].value["bound"])
    assert "K = 14336, N = 4096" in markdown_text(at)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the page offers GPU timing instead")
def test_live_timing_is_labelled_cpu_without_a_gpu() -> None:
    at = run_page(PAGE)
    at.button(key="speed_cpu").click().run()
    assert not at.exception
    live = at.dataframe[1].value  # the table after the bound table
    assert set(live["device"]) == {"CPU"}
    assert set(live.index) == {"bf16", "w4a16 (torch path)"} and (live["ms per call"] > 0).all()


def test_one_live_measurement_at_a_time_across_sessions():
    from quantlab.kernels import live

    calls = []
    with live.MEASURING:  # another session is mid-measurement
        assert live.measure_if_free(lambda: calls.append(1)) is None
    assert calls == []
    assert live.measure_if_free(lambda: "timed") == "timed"
    assert live.MEASURING.acquire(blocking=False)  # released again after the measurement
    live.MEASURING.release()


def test_gpu_branch_offers_gpu_timing_and_labels_the_card(monkeypatch) -> None:
    """The page's CUDA branch, driven through a stand-in measurement (CI has no GPU; the real
    `live.measure_gpu` runs in tests/test_kernels.py's `gpu` tests on a card)."""
    from quantlab.kernels import live

    seen = []

    def fake_measure(m: int, k: int, n: int) -> live.LiveTiming:
        seen.append((m, k, n))
        return live.LiveTiming("cuda: NVIDIA H200", m, k, n, {"bf16": 0.0134, "w4a16": 0.0088})

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(live, "measure_gpu", fake_measure)
    at = run_page(PAGE)
    assert not at.exception and not at.button(key="speed_gpu").disabled
    assert "This app has a GPU (NVIDIA H200)" in " ".join(c.value for c in at.caption)
    at.button(key="speed_gpu").click().run()
    assert not at.exception and seen == [(1, 384, 1536)]  # the sidebar layer at M = 1
    table = at.dataframe[1].value
    assert set(table["device"]) == {"cuda: NVIDIA H200"}
    assert table.loc["w4a16", "speedup over bf16"] == pytest.approx(1.5)


def test_kernel_explanation_is_part_of_the_lesson() -> None:
    at = run_page(PAGE)
    assert "Magic numbers instead of conversions" in markdown_text(at)


def test_kernel_history_orders_versions_and_shows_the_gain() -> None:
    runs = [speed.load_results(p) for p in speed.committed_results()]
    history = speed.kernel_history(runs)
    newest_tag = speed.load_results(speed.committed_results()[0]).meta["tag"]
    assert list(history)[0] == "v1" and list(history)[-1] == newest_tag
    (ms, v1), (_, newest) = history["v1"], list(history.values())[-1]
    assert ms[0] == 1
    first, last = v1[0], newest[0]  # M = 1
    assert first is not None and last is not None and first < 1.0 < 2 * first < last
    at = run_page(PAGE)
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("different kernels" in t for t in titles)
