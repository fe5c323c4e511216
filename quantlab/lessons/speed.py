"""Bytes, FLOPs and the committed benchmark results: the arithmetic behind the Speed lesson.

Pure Python/torch (no Triton, no GPU): the page and the benchmark share these definitions, so the
chart's "achieved GB/s" is computed exactly as the benchmark computed it.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantlab import data
from quantlab.core import metrics
from quantlab.core.errors import QuantlabError
from quantlab.core.spec import scheme

# The registry scheme each timed method stores its weights as (bf16: the unquantized baseline).
METHOD_SCHEMES = {"bf16": "bf16", "w4a16": "w4a16", "w8a16": "w8a16", "fp8": "fp8-dynamic"}
# torch's int4 kernel and gemlite's A16W4 are no compressed-tensors scheme: each keeps a 16-bit
# scale and a 16-bit zero point per group of 128 weights.
SCALE_AND_ZERO_INT4 = ("torch_int4", "gemlite")
SCALE_AND_ZERO_INT4_BITS = 4.0 + 2 * 16 / 128
GPU_SCALE_BITS = 16  # the kernels read bf16/fp16 scales, as an LLM checkpoint stores them
SIZED_METHODS = (*METHOD_SCHEMES, *SCALE_AND_ZERO_INT4)


def bits_per_weight(method: str, k: int, n: int) -> float:
    """Bits a method stores per weight of an [n, k] matrix, scales and zero points included."""
    if method in SCALE_AND_ZERO_INT4:
        return SCALE_AND_ZERO_INT4_BITS
    spec = scheme(METHOD_SCHEMES[method]).spec
    if spec is None:
        return 16.0
    return metrics.bits_per_weight(spec.with_(activations=None), (n, k), scale_bits=GPU_SCALE_BITS)
LABELS = {"bf16": "bf16 cuBLAS (F.linear)", "torch_int4": "torch int4 (_weight_int4pack_mm, g128)",
          "w4a16": "quantlab W4A16 g128", "w8a16": "quantlab W8A16 g128",
          "fp8": "FP8 W8A8 (_scaled_mm)", "w4a16_gemv": "W4A16 GEMV path only",
          "w4a16_mma": "W4A16 tensor-core path only", "w4a16_dequant": "W4A16 dequantize + cuBLAS only",
          "w4a16_chunked": "W4A16 dequantize + cuBLAS in L2-sized slices only",
          "gemlite": "gemlite A16W4 g128 (its H100 config)",
          "w4a16_wgmma": "W4A16 CUDA wgmma path only (Hopper)"}


def flops(m: int, k: int, n: int) -> float:
    """Multiply-adds of y[M, N] = x[M, K] @ W.T, counted as 2 FLOPs each."""
    return 2.0 * m * k * n


def traffic_bytes(m: int, k: int, n: int, weight_bytes: float, act_bytes: int = 2) -> float:
    """Fewest bytes through device memory: the weight once, x once, y once."""
    return weight_bytes + act_bytes * m * k + act_bytes * m * n


def weight_bytes(method: str, k: int, n: int) -> float:
    return bits_per_weight(method, k, n) * k * n / 8


def intensity(m: int, k: int, n: int, method: str) -> float:
    """FLOPs per byte moved: where the layer sits on the roofline's x axis."""
    return flops(m, k, n) / traffic_bytes(m, k, n, weight_bytes(method, k, n))


def roof(ai: float, bandwidth_gbps: float, peak_tflops: float) -> float:
    """Attainable TFLOP/s at arithmetic intensity `ai`: min(bandwidth·ai, peak)."""
    return min(bandwidth_gbps * ai / 1e3, peak_tflops)


@dataclass(frozen=True)
class Bound:
    """Roofline verdict for one layer at one batch size under one method."""

    method: str
    m: int
    intensity: float  # FLOP/byte
    ridge: float  # FLOP/byte where the card turns compute-bound
    memory_us: float  # time to move the bytes at the measured bandwidth
    compute_us: float  # time to do the FLOPs at the measured matmul rate

    @property
    def memory_bound(self) -> bool:
        return self.intensity < self.ridge

    @property
    def floor_us(self) -> float:
        return max(self.memory_us, self.compute_us)


def bound(m: int, k: int, n: int, method: str, bandwidth_gbps: float, peak_tflops: float) -> Bound:
    moved = traffic_bytes(m, k, n, weight_bytes(method, k, n))
    work = flops(m, k, n)
    return Bound(method, m, work / moved, peak_tflops * 1e3 / bandwidth_gbps,
                 moved / bandwidth_gbps / 1e3, work / peak_tflops / 1e6)


# -- committed results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Results:
    meta: Mapping[str, object]
    rows: tuple[Mapping[str, object], ...]
    checks: tuple[Mapping[str, object], ...]
    name: str

    @property
    def label(self) -> str:
        return f"{self.meta['card']} · {self.meta['date']} · torch {self.meta['torch']} · triton {self.meta['triton']}"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return sorted({(int(r["K"]), int(r["N"])) for r in self.rows}, key=lambda s: (s[0] * s[1], s))

    @property
    def methods(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.setdefault(str(r["method"]), None)
        return list(seen)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({int(r["M"]) for r in self.rows})

    def ms(self, k: int, n: int, m: int, method: str) -> float | None:
        for r in self.rows:
            if (r["K"], r["N"], r["M"], r["method"]) == (k, n, m, method):
                return float(r["ms"])  # type: ignore[arg-type]
        return None

    def speedup(self, k: int, n: int, m: int, method: str, baseline: str = "bf16") -> float | None:
        t, base = self.ms(k, n, m, method), self.ms(k, n, m, baseline)
        return None if t is None or base is None else base / t

    def geomean_speedup(self, m: int, method: str, baseline: str = "bf16") -> float | None:
        ratios = [self.speedup(k, n, m, method, baseline) for k, n in self.shapes]
        if not ratios or any(r is None for r in ratios):
            return None
        return math.exp(sum(math.log(r) for r in ratios if r) / len(ratios))


def fastest_read_gbps(res: Results) -> float:
    """The best weight-streaming rate any method reached in the run (GB/s, bytes it had to move).

    Reading needs no write, so this exceeds the copy bandwidth (read + write) the roofline uses."""
    return max(float(r["gbps"]) for r in res.rows)  # type: ignore[arg-type]


def load_results(path: Path) -> Results:
    try:
        data = json.loads(Path(path).read_text())
        return Results(data["meta"], tuple(data["rows"]), tuple(data.get("checks", ())), Path(path).stem)
    except (OSError, ValueError, KeyError) as err:
        raise QuantlabError(f"cannot read benchmark results {Path(path).name}: {err}") from None


def _run_order(date: str, name: str) -> tuple[str, tuple[object, ...]]:
    """Runs by date, then by name with its numbers compared as numbers (v9 before v10)."""
    return date, tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def committed_results() -> list[Path]:
    """The GPU matmul runs shipped in quantlab/data/gpu (committed from bench/gpu_matmul.py), newest first."""
    found: list[tuple[str, str, Path]] = []
    for path in (Path(str(entry)) for entry in data.listing("gpu", ".json").values()):
        try:
            meta = json.loads(path.read_text()).get("meta", {})
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and "card" in meta and "copy_gbps" in meta:
            found.append((str(meta.get("date", "")), path.name, path))
    return [p for _, _, p in sorted(found, key=lambda f: _run_order(f[0], f[1]), reverse=True)]


def committed_run(name: str) -> Results:
    """One shipped run by its file stem (e.g. 'NVIDIA_H200_2026-11-28_v6')."""
    for path in committed_results():
        if path.stem == name:
            return load_results(path)
    raise QuantlabError(f"no committed GPU run named {name!r}")


def kernel_history(runs: Sequence[Results], method: str = "w4a16") -> dict[str, tuple[list[int], list[float | None]]]:
    """Each run's batch sizes and geomean speedup of `method` over bf16 at each, oldest run first,
    keyed by the run's tag (its kernel version): how much the kernel, not the format, decides."""
    ordered = sorted(runs, key=lambda r: _run_order(str(r.meta.get("date", "")), r.name))
    return {str(r.meta.get("tag") or r.name): (r.batch_sizes, [r.geomean_speedup(m, method) for m in r.batch_sizes])
            for r in ordered if method in r.methods}


def crossover(batch_sizes: Sequence[int], speedups: Sequence[float | None]) -> float | None:
    """Smallest batch size where the speedup drops below 1, interpolated in log2(M) between the
    last measured point above 1 and the first below; None if it never does."""
    prev: tuple[int, float] | None = None
    for m, s in zip(batch_sizes, speedups):
        if s is None:
            continue
        if s < 1.0:
            if prev is None:
                return float(m)
            (m0, s0), (m1, s1) = prev, (m, s)
            frac = (s0 - 1.0) / (s0 - s1)
            return 2 ** (math.log2(m0) + frac * (math.log2(m1) - math.log2(m0)))
        prev = (m, s)
    return None


# The kernel targets of the current GPU issue (H200, geomean over the benchmark's shapes).
W4A16_GOALS = {1: 2.6, 16: 2.5, 64: 2.0, 128: 1.3, 256: 0.95}
W4A16_LARGE_M_GOAL = 0.95
W4A16_FLOOR = 0.9
W8A16_GOAL_AT_1 = 1.6


def targets(res: Results) -> list[dict[str, object]]:
    """The issue's targets, each with the measured value and whether it is met."""
    out: list[dict[str, object]] = []

    def add(name: str, value: float | None, goal: float) -> None:
        out.append({"target": name, "goal": goal, "measured": value,
                    "met": value is not None and value >= goal})

    for m, goal in W4A16_GOALS.items():
        if m in res.batch_sizes:
            add(f"W4A16 vs bf16, geomean, M={m}", res.geomean_speedup(m, "w4a16"), goal)
    for m in [m for m in res.batch_sizes if m > 256]:
        add(f"W4A16 vs bf16, geomean, M={m}", res.geomean_speedup(m, "w4a16"), W4A16_LARGE_M_GOAL)
    every = [res.speedup(k, n, m, "w4a16") for k, n in res.shapes for m in res.batch_sizes]
    add("W4A16 vs bf16, worst shape at any M", min((s for s in every if s), default=None), W4A16_FLOOR)
    add("W8A16 vs bf16, geomean, M=1", res.geomean_speedup(1, "w8a16"), W8A16_GOAL_AT_1)
    return out


def summary_table(result: Mapping[str, object]) -> str:
    """Plain-text table of geomean speedups over bf16 per method and batch size, then the targets."""
    res = Results(result["meta"], tuple(result["rows"]), tuple(result.get("checks", ())), "run")  # type: ignore[arg-type]
    ms = res.batch_sizes
    lines = [f"{res.label}  copy {res.meta['copy_gbps']:.0f} GB/s  bf16 {res.meta['bf16_tflops']:.0f} TFLOP/s",
             "geomean speedup over bf16 across shapes",
             f"{'method':<16}" + "".join(f"{m:>7}" for m in ms)]
    for method in res.methods:
        vals = [res.geomean_speedup(m, method) for m in ms]
        lines.append(f"{method:<16}" + "".join(f"{v:7.2f}" if v else f"{'-':>7}" for v in vals))
    for t in targets(res):
        v = t["measured"]
        lines.append(f"{'MET ' if t['met'] else 'MISS'} {t['target']}: {v:.2f} (goal {t['goal']})" if v is not None
                     else f"MISS {t['target']}: not measured")
    return "\n".join(lines)


def series(res: Results, k: int, n: int, methods: Iterable[str],
           baseline: str = "bf16") -> dict[str, list[float | None]]:
    """Speedup over `baseline` against batch size, per method, for one shape."""
    return {m: [res.speedup(k, n, b, m, baseline) for b in res.batch_sizes] for m in methods}


# -- the shape a learner picks ----------------------------------------------------------------------

def preset_layers(arch: str) -> dict[str, tuple[int, int]]:
    """The Linear layers of one block of a shipped architecture (plus the LM head), as (K, N)."""
    from quantlab.io import sizing

    checkpoint = sizing.load_checkpoint(arch)
    out: dict[str, tuple[int, int]] = {}
    for t in checkpoint.tensors:
        if t.linear and len(t.shape) == 2 and (".layers.0." in t.name or "lm_head" in t.name):
            out[t.layer] = (int(t.shape[1]), int(t.shape[0]))
    if not out:
        raise QuantlabError(f"{arch}: no Linear layers found in its config")
    return out


@dataclass(frozen=True)
class WhyNumbers:
    """The measured answer to "why is my int4 model slower than fp16?" on one shape."""

    k: int
    n: int
    int4_at_1: float | None  # torch int4 speedup over bf16 at M=1
    int4_at_16: float | None
    int4_at_max: float | None  # at the largest measured M
    max_m: int
    int4_crossover: float | None  # M where torch int4 drops below bf16
    ours_at_1: float | None  # quantlab W4A16 at M=1
    ideal_at_1: float  # bytes of bf16 over bytes of W4A16 g128: the memory-bound ceiling


def why_slower(res: Results, k: int, n: int) -> WhyNumbers:
    ms = res.batch_sizes
    int4 = [res.speedup(k, n, m, "torch_int4") for m in ms]
    return WhyNumbers(k, n, res.speedup(k, n, 1, "torch_int4"), res.speedup(k, n, 16, "torch_int4"),
                      res.speedup(k, n, ms[-1], "torch_int4"), ms[-1], crossover(ms, int4),
                      res.speedup(k, n, 1, "w4a16"),
                      bits_per_weight("bf16", k, n) / bits_per_weight("w4a16", k, n))


@dataclass(frozen=True)
class OverlapNumbers:
    """What overlapping the dequantization with the tensor cores bought, at one batch size: the
    Triton kernel (the same warps unpack, then multiply) against the CUDA wgmma kernel (they unpack
    the next step while the tensor cores multiply this one), geomean over the run's shapes."""

    m: int
    sequential: float  # W4A16 Triton tensor-core path over bf16
    overlapped: float  # W4A16 CUDA wgmma path over bf16


def overlap_gain(res: Results, m: int = 256) -> OverlapNumbers | None:
    """None for runs without both paths timed at M = m (runs before v10, or without --sweep)."""
    sequential, overlapped = res.geomean_speedup(m, "w4a16_mma"), res.geomean_speedup(m, "w4a16_wgmma")
    if sequential is None or overlapped is None:
        return None
    return OverlapNumbers(m, sequential, overlapped)
