"""Server-side rerun time of the lessons after a widget change, on the embedded data.

Runs the real app (app.py + sidebar + page) in Streamlit's AppTest, which executes the script
exactly as the server does, minus the websocket. For each page it records: the first run (model
load and activation capture included), reruns whose inputs were never seen (cache misses: the
real cost of moving a slider to a new value) and reruns of seen inputs (cache hits).

    python bench/app_latency.py            # writes bench/results/app_latency.json
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest  # noqa: E402

# (page, [(widget kind, key, value), ...]): each change is applied in turn, then replayed once more.
SCENARIOS: dict[str, list[tuple[str, str, object]]] = {
    "pages/symmetric.py": [
        ("slider", "sym_bits", 3), ("slider", "sym_bits", 5), ("slider", "sym_bits", 8),
        ("radio", "sym_tensor", "input activation"), ("slider", "sym_bits", 2), ("slider", "sym_bits", 6),
        ("selectbox", "layer", "encoder.layer.0.output.dense"), ("slider", "sym_bits", 7),
        ("radio", "sym_tensor", "weight"), ("slider", "sym_bits", 4),
    ],
}


def _timed_run(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, at.exception
    return elapsed * 1000


def measure(page: str, changes: list[tuple[str, str, object]]) -> dict[str, object]:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page(page)
    first = _timed_run(at)
    misses, hits = [], []
    for pass_no, bucket in ((0, misses), (1, hits)):
        for kind, key, value in changes:
            getattr(at, kind)(key=key).set_value(value)
            bucket.append(_timed_run(at))
    return {
        "page": page,
        "first_run_ms": round(first, 1),
        "cache_miss_ms": {"median": round(statistics.median(misses), 1), "max": round(max(misses), 1),
                          "all": [round(m, 1) for m in misses]},
        "cache_hit_ms": {"median": round(statistics.median(hits), 1), "max": round(max(hits), 1)},
    }


def main() -> None:
    results = [measure(page, changes) for page, changes in SCENARIOS.items()]
    out = {
        "what": "server-side rerun time after a widget change (AppTest, embedded MiniLM)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": date.today().isoformat(),
        "results": results,
    }
    path = ROOT / "bench" / "results" / "app_latency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in results:
        print(f"{r['page']}: first {r['first_run_ms']} ms; miss median {r['cache_miss_ms']['median']} "
              f"max {r['cache_miss_ms']['max']} ms; hit median {r['cache_hit_ms']['median']} ms")


if __name__ == "__main__":
    main()
