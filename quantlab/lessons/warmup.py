"""What the lessons' default views need, computed once per process before the first learner asks.

A fresh server otherwise makes its first wave of visitors queue behind the model load, the
activation capture and the first whole-model and KV runs. Everything here fills a per-process
cache that the lessons read (the activations, the fp32 reference pass, the KV captures, the shipped
configs built on the meta device), so a page arriving later finds it ready.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from quantlab.core.spec import scheme_spec
from quantlab.io import models, sizing
from quantlab.lessons import choose, kv_cache, whole_model

# In the order the first visitors need them: every activation lesson waits on the capture.
STEPS: tuple[tuple[str, Callable[[], object]], ...] = (
    ("the embedded model", models.embedded_model),
    ("real activations on the sample text", models.activations),
    ("the fp32 reference pass", whole_model.reference),
    ("the whole model at W8A8 static", lambda: whole_model.run(scheme_spec("w8a8-static"))),
    ("keys and values of every layer", kv_cache.kv_errors),
    ("the attention sink", kv_cache.attention_sink),
    ("Llama-3.1-8B's tensors from its config", lambda: sizing.model_size("llama-3.1-8b", scheme_spec("w4a16"))),
    # Choose a scheme's default view recommends W4A16 asym g128 on the default layer and shows its
    # whole-model cosine; a different pick only means that run is computed on first request.
    ("the whole model at W4A16 asym", lambda: whole_model.run(scheme_spec("w4a16-asym"))),
    ("FP8 on real keys and values", choose.fp8_kv_attention_db),
    # Last, once the default views are ready: the Outliers lesson's scheme menu, so the first
    # learners who try another scheme for the whole model find it computed (about a second each).
    *((f"the whole model at {slug}", (lambda slug=slug: whole_model.run(scheme_spec(slug))))
      for slug in whole_model.SCHEMES),
)


def warm_default_views(steps: tuple[tuple[str, Callable[[], object]], ...] = STEPS,
                       stop: threading.Event | None = None) -> dict[str, float]:
    """Run every step once; returns seconds per step (a failed step is skipped: it is only a warm-up,
    and the lesson that needs it will report the problem to its learner). `stop` ends it between
    steps: a process exiting mid-step inside torch aborts instead of exiting."""
    seconds: dict[str, float] = {}
    for name, step in steps:
        if stop is not None and stop.is_set():
            break
        start = time.perf_counter()
        try:
            step()
        except Exception:  # noqa: BLE001 - see the docstring: the lesson reports it
            continue
        seconds[name] = time.perf_counter() - start
    return seconds
