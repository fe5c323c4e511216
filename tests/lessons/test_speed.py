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
