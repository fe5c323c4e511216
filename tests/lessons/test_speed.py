"""The Speed lesson's arithmetic: bytes and FLOPs, the roofline verdict, crossovers, and the
geomeans and targets read off a benchmark run."""
from __future__ import annotations

import pytest

from quantlab.lessons import speed


def test_roofline_counts_and_bound() -> None:
    assert speed.flops(1, 4096, 4096) == 2 * 4096 * 4096
    w = speed.weight_bytes("w4a16", 4096, 4096)
    assert w == pytest.approx(4096 * 4096 * (4 + 16 / 128) / 8)
    b1 = speed.bound(1, 4096, 4096, "w4a16", bandwidth_gbps=3000, peak_tflops=750)
    b4k = speed.bound(4096, 4096, 4096, "w4a16", bandwidth_gbps=3000, peak_tflops=750)
    assert b1.memory_bound and not b4k.memory_bound
    assert b1.ridge == pytest.approx(250)
    assert b1.floor_us == pytest.approx(speed.traffic_bytes(1, 4096, 4096, w) / 3000 / 1e3)
    assert speed.roof(1.0, 3000, 750) == pytest.approx(3.0) and speed.roof(1e4, 3000, 750) == 750


def test_crossover_interpolates_in_log_batch() -> None:
    assert speed.crossover([1, 2, 4, 8], [3.0, 2.0, 1.5, 1.2]) is None
    assert speed.crossover([1, 16], [2.0, 0.5]) == pytest.approx(2 ** (4 * (1 / 1.5)))
    assert speed.crossover([4, 8], [0.9, 0.5]) == 4.0


def test_targets_and_geomeans_from_results() -> None:
    rows = []
    for (k, n), base in {(64, 64): 1.0, (128, 128): 4.0}.items():
        for m in (1, 16, 256):
            rows.append({"K": k, "N": n, "M": m, "method": "bf16", "ms": base})
            speedup = 4 if m == 1 else 2 if m == 16 else 0.5
            rows.append({"K": k, "N": n, "M": m, "method": "w4a16", "ms": base / speedup})
            rows.append({"K": k, "N": n, "M": m, "method": "torch_int4", "ms": base / 2})
            rows.append({"K": k, "N": n, "M": m, "method": "w8a16", "ms": base / 2})
    res = speed.Results({"card": "X", "date": "d", "torch": "t", "triton": "r"}, tuple(rows), (), "r")
    assert res.geomean_speedup(1, "w4a16") == pytest.approx(4.0)
    verdict = {t["target"]: t["met"] for t in speed.targets(res)}
    assert verdict["W4A16 vs bf16, geomean, M=1"] and verdict["W4A16 vs bf16, geomean, M=16"] is False
    assert verdict["W4A16 vs bf16, geomean, M=256"] is False and verdict["W8A16 vs bf16, geomean, M=1"]
    assert verdict["W4A16 vs bf16, worst shape at any M"] is False  # 0.5x at M=256 is below the 0.9 floor


def test_overlap_gain_compares_the_two_tensor_core_paths() -> None:
    rows = []
    for (k, n), base in {(64, 64): 1.0, (128, 128): 4.0}.items():
        rows.append({"K": k, "N": n, "M": 256, "method": "bf16", "ms": base})
        rows.append({"K": k, "N": n, "M": 256, "method": "w4a16_mma", "ms": base / 0.5})
        rows.append({"K": k, "N": n, "M": 256, "method": "w4a16_wgmma", "ms": base / 0.8})
    res = speed.Results({"card": "X", "date": "d"}, tuple(rows), (), "r")
    gain = speed.overlap_gain(res)
    assert gain is not None and gain.sequential == pytest.approx(0.5) and gain.overlapped == pytest.approx(0.8)
    assert speed.overlap_gain(res, m=128) is None  # not timed there
    older = speed.Results({"card": "X", "date": "d"}, tuple(r for r in rows if r["method"] != "w4a16_wgmma"), (), "r")
    assert speed.overlap_gain(older) is None


def test_the_newest_committed_run_times_both_paths_at_256() -> None:
    gain = speed.overlap_gain(speed.load_results(speed.committed_results()[0]))
    assert gain is not None and gain.overlapped > gain.sequential


def test_runs_of_one_day_order_by_their_version_number() -> None:
    names = [p.stem for p in speed.committed_results()]
    assert names.index("NVIDIA_H200_2026-12-02_v10") < names.index("NVIDIA_H200_2026-12-02_v9")
    runs = [speed.committed_run(n) for n in ("NVIDIA_H200_2026-12-02_v10", "NVIDIA_H200_2026-12-02_v9")]
    assert list(speed.kernel_history(runs)) == ["v9", "v10"]
