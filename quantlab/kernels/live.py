"""The timing harness shared by bench/gpu_matmul.py and the Speed lesson's live buttons.

GPU: a CUDA graph of R back-to-back calls, replayed several times; the median replay divided by R
is one call. Calls rotate over copies of the weights whose total exceeds 3x the L2 cache, so each
call reads its weight from device memory as a real model's layers do. CPU: wall clock around
whole calls after one warm-up, median of a few.

Only one measurement runs at a time in a process (`MEASURING`): two sessions timing at once
would share the card and each see roughly half of it.
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import quantlab as ql
from quantlab.kernels.layout import PackedLinear, torch_matmul

MEASURING = threading.Lock()


def time_gpu(calls: Sequence[Callable[[], object]], target_ms: float = 2.0, replays: int = 9,
             max_reps: int = 400) -> float:
    """Median milliseconds of one call, from CUDA-graph replays of R calls rotating over `calls`."""
    calls = list(calls)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (compilation, handles) outside the graph, as capture needs
        for c in calls * 2:
            c()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for c in calls:
        c()
    torch.cuda.synchronize()
    est_ms = max((time.perf_counter() - t0) * 1e3 / len(calls), 1e-3)
    reps = max(len(calls), min(max_reps, math.ceil(target_ms / est_ms)))
    reps = math.ceil(reps / len(calls)) * len(calls)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(reps):
            calls[i % len(calls)]()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    del graph
    return statistics.median(times)


def time_cpu(call: Callable[[], object], repeats: int = 3) -> float:
    """Median milliseconds of `call` on the CPU, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copies_for(weight_bytes: int, l2_bytes: int) -> int:
    """Weight copies to rotate over so that their total is over 3x the L2 cache (at most 16)."""
    return max(1, min(16, math.ceil(3 * l2_bytes / max(weight_bytes, 1))))


@dataclass(frozen=True)
class LiveTiming:
    device: str  # "cuda: NVIDIA H200" or "cpu"
    m: int
    k: int
    n: int
    ms: dict[str, float]  # method -> median ms of one call


@torch.no_grad()
def measure_if_free(measure: Callable[[], LiveTiming]) -> LiveTiming | None:
    """Run one measurement unless another session is measuring (then None: timings would collide)."""
    if not MEASURING.acquire(blocking=False):
        return None
    try:
        return measure()
    finally:
        MEASURING.release()


def measure_cpu(m: int, k: int, n: int) -> LiveTiming:
    """bf16 F.linear against quantlab's plain torch W4A16 path (unpack, dequantize, matmul) on the CPU."""
    w = torch.randn(n, k, dtype=torch.bfloat16) * 0.02
    layer = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W4A16")))
    x = torch.randn(m, k, dtype=torch.bfloat16)
    return LiveTiming("cpu", m, k, n, {"bf16": time_cpu(lambda: F.linear(x, w)),
                                       "w4a16 (torch path)": time_cpu(lambda: torch_matmul(x, layer))})


@torch.no_grad()
def measure_gpu(m: int, k: int, n: int) -> LiveTiming:
    """bf16 cuBLAS against quantlab's W4A16 g128 kernels on this process's GPU (needs Triton)."""
    from quantlab.kernels import triton_ops

    w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
    layer = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W4A16")))
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20)
    ms: dict[str, float] = {}
    for name, weight, nbytes, fn in [("bf16", w, w.numel() * 2, F.linear),
                                     ("w4a16", layer, layer.nbytes, triton_ops.matmul)]:
        weights = [weight] + [_clone(weight) for _ in range(copies_for(nbytes, l2) - 1)]
        xs = [torch.randn(m, k, dtype=torch.bfloat16, device="cuda") for _ in weights]
        ms[name] = time_gpu([lambda x=x, c=c, fn=fn: fn(x, c) for x, c in zip(xs, weights)])
    return LiveTiming(f"cuda: {torch.cuda.get_device_name(0)}", m, k, n, ms)


def _clone(weight):
    if isinstance(weight, torch.Tensor):
        return weight.clone()
    if isinstance(weight, tuple):
        return tuple(t.clone() for t in weight)
    fields = {f: getattr(weight, f) for f in weight.__dataclass_fields__}
    return type(weight)(**{f: v.clone() if isinstance(v, torch.Tensor) else v for f, v in fields.items()})
