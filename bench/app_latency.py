"""Server-side rerun time of the lessons after a widget change, on the embedded data.

Runs the real app (app.py + sidebar + page) in Streamlit's AppTest, which executes the script
exactly as the server does, minus the websocket. For each lesson it records: the first run (model
load and activation capture included), reruns after each widget is moved to a value never seen
(cache misses: the real cost of moving a slider) and the same changes replayed (cache hits). The
Symmetric lesson follows a scripted tour; every other lesson moves each of its widgets once.

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

from streamlit.runtime.pages_manager import PagesManager  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import lab_ui  # noqa: E402
from tests.app.apptest_util import routed_pages_manager_init  # noqa: E402

SYMMETRIC_TOUR: list[tuple[str, str, object]] = [
    ("slider", "sym_bits", 3), ("slider", "sym_bits", 5), ("slider", "sym_bits", 8),
    ("radio", "sym_tensor", "input activation"), ("slider", "sym_bits", 2), ("slider", "sym_bits", 6),
    ("selectbox", "layer", "encoder.layer.0.output.dense"), ("slider", "sym_bits", 7),
    ("radio", "sym_tensor", "weight"), ("slider", "sym_bits", 4),
]
# Widgets whose change asks for a new computation (buttons and free-text boxes are left alone).
MOVABLE = ("slider", "select_slider", "selectbox", "radio", "toggle", "checkbox", "button_group")


def _timed_run(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, at.exception
    return elapsed * 1000


def _next_value(widget) -> object | None:
    """A different valid value: the next option, one step along, or the other state.

    AppTest only exposes options as displayed text, so option widgets whose display differs from
    their value are skipped.
    """
    if widget.type in ("toggle", "checkbox"):
        return not widget.value
    if widget.type == "slider":
        if isinstance(widget.value, (tuple, list)):
            return None
        up = widget.value + widget.step
        return up if up <= widget.max else widget.value - widget.step
    options = list(getattr(widget, "options", []))
    if len(options) < 2:
        return None
    current = widget.value[0] if isinstance(widget.value, list) and widget.value else widget.value
    if current not in options:
        return None
    return options[(options.index(current) + 1) % len(options)]


def _widget(at: AppTest, kind: str, key: str):
    """The widget, or None when an earlier change hid it (widgets can depend on each other)."""
    return next((w for w in at.get(kind) if w.key == key), None)


def _default_tour(at: AppTest) -> list[tuple[str, str, object]]:
    tour = []
    for kind in MOVABLE:
        for w in at.get(kind):
            if w.key and w.key not in ("source_kind", "layer") and not getattr(w, "disabled", False):
                value = _next_value(w)
                if value is not None:
                    tour.append((kind, w.key, value))
    return tour


def measure(page: str, tour: list[tuple[str, str, object]] | None = None) -> dict[str, object]:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.switch_page(page)
    first = _timed_run(at)
    tour = _default_tour(at) if tour is None else tour
    misses, hits, moved = [], [], []
    for bucket in (misses, hits):  # the second pass replays values already seen: cache hits
        for kind, key, value in tour:
            widget = _widget(at, kind, key)
            if widget is None or getattr(widget, "disabled", False):
                continue
            widget.set_value(value)
            bucket.append(_timed_run(at))
            if bucket is misses:
                moved.append(f"{key}={value}")
    summary = lambda xs: {"median": round(statistics.median(xs), 1), "max": round(max(xs), 1),  # noqa: E731
                          "all": [round(x, 1) for x in xs]} if xs else None
    return {"page": page, "first_run_ms": round(first, 1),
            "changes": moved,
            "cache_miss_ms": summary(misses), "cache_hit_ms": summary(hits)}


def main() -> None:
    PagesManager.__init__ = routed_pages_manager_init(PagesManager.__init__)
    pages = [("pages/symmetric.py", SYMMETRIC_TOUR)]
    pages += [(lesson.file, None) for lesson in lab_ui.LESSONS if lesson.file != "pages/symmetric.py"]
    results = [measure(page, tour) for page, tour in pages]
    out = {
        "what": "server-side rerun time after a widget change (AppTest, embedded MiniLM)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "date": date.today().isoformat(),
        "results": results,
    }
    path = ROOT / "bench" / "results" / "app_latency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in results:
        miss, hit = r["cache_miss_ms"] or {}, r["cache_hit_ms"] or {}
        print(f"{r['page']:<24} first {r['first_run_ms']:>8} ms | new value: median {miss.get('median')} "
              f"max {miss.get('max')} ms | seen value: median {hit.get('median')} ms")


if __name__ == "__main__":
    main()
