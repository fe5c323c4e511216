"""Time quantlab's dequant-matmul kernels against what a user would otherwise run, on one card.

    python bench/gpu_matmul.py --out quantlab/data/gpu        # the full run (about 5 minutes)
    python bench/gpu_matmul.py --out /tmp/r --quick       # two shapes, four batch sizes
    python bench/gpu_matmul.py --out quantlab/data/gpu --plot bench/results/<run>.json   # charts, no GPU

Methods, all on the same random bf16 weight quantized once: bf16 cuBLAS (F.linear), torch's int4
kernel (aten._weight_int4pack_mm, g128), gemlite's A16W4 g128 kernels on the same codes (when the
gemlite package is importable; its H100 config file is loaded, see `gemlite_w4`), quantlab W4A16
g128 (its own choice of path), quantlab W8A16 (the preset: INT8 group 128; run v1 used
per-channel), and FP8 W8A8 (per-token activation quantization + torch._scaled_mm). With --sweep,
every W4A16 path (gemv, mma, dequant) is timed on its own too, which is how the crossovers in
`triton_ops.choose_path` were picked.

Timing: each measurement is a CUDA graph of R back-to-back calls (no Python or launch overhead
between them) replayed 9 times; the median replay divided by R is the time of one call. Calls
rotate over enough copies of the weights that their total is over 3x the L2 cache, so weights come
from device memory as they would in a model whose layers do not fit in L2. Ceilings are measured in
the same run: a 2 GiB device-to-device copy (bytes read + written) and an 8192^3 bf16 matmul.
Writes one JSON (a row per K, N, M, method) and prints a table of speedups over bf16.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantlab as ql  # noqa: E402
from quantlab.kernels import cuda_ops, live  # noqa: E402
from quantlab.kernels import triton_ops as ops  # noqa: E402
from quantlab.kernels.fp8 import Fp8Linear, fp8_linear  # noqa: E402
from quantlab.kernels.layout import PackedLinear  # noqa: E402
from quantlab.lessons import speed  # noqa: E402

SHAPES = [(4096, 4096), (8192, 8192), (4096, 14336), (14336, 4096), (8192, 28672)]  # (K, N)
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]


def ceilings() -> dict[str, float]:
    src = torch.randn(2**30 // 2, dtype=torch.bfloat16, device="cuda")  # 1 GiB each way
    dst = torch.empty_like(src)
    copy_ms = live.time_gpu([lambda: dst.copy_(src)], replays=10)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    mm_ms = live.time_gpu([lambda: a @ b], replays=10)
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    one = torch.ones(1, dtype=torch.float32, device="cuda")
    fp8_ms = live.time_gpu([lambda: torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)],
                        replays=10)
    return {"copy_gbps": 2 * 2**30 / copy_ms / 1e6, "bf16_tflops": 2 * 8192**3 / mm_ms / 1e9,
            "fp8_tflops": 2 * 8192**3 / fp8_ms / 1e9}


def torch_int4(w: torch.Tensor, group: int = 128):
    """Symmetric g128 int4 in the layout aten._weight_int4pack_mm wants: w = (u - 8)·scale + 0."""
    qt = ql.quantize(w, ql.QuantSpec(num_bits=4, strategy="group", group_size=group))
    u = (qt.q.to(torch.int32) + 8)
    packed = ((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8)
    weight = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
    sz = torch.stack([qt.scale.T, torch.zeros_like(qt.scale.T)], dim=-1).to(torch.bfloat16).contiguous()
    return weight, sz, qt


GEMLITE_CONFIG = "h100.json"  # the closest card gemlite ships tuned launch configs for (no H200 file)


def gemlite_setup() -> dict[str, object] | None:
    """Import gemlite and load its H100 config file; None (and the method is left out) without it."""
    if importlib.util.find_spec("gemlite") is None:
        return None
    import gemlite

    path = Path(gemlite.__file__).parent / "configs" / GEMLITE_CONFIG
    if not gemlite.load_config(str(path)):
        raise SystemExit(f"gemlite could not load {path}")
    return {"version": gemlite.__version__, "config": GEMLITE_CONFIG, "borrowed": {}}


def gemlite_borrow(k: int, n: int, info: dict[str, object]) -> None:
    """Give a shape the config file lacks the tuned configs of the file's nearest shape (log distance
    in N and K, same kernel, batch bucket, group and packing), so that gemlite runs tuned launch
    parameters instead of autotuning at run time; which shape lent them is recorded in the results."""
    from gemlite.core import GEMLITE_TRITON_CONFIG_CACHE as cache

    for kernel, entries in cache.items():
        keys = {tuple(json.loads(key.replace("(", "[").replace(")", "]"))): key for key in entries}
        ours = [key for key in keys if key[1:3] == (n, k) and key[3] == 128]
        donors = {key[1:3] for key in keys if key[3] == 128}
        if ours or not donors:
            continue
        dn, dk = min(donors, key=lambda d: abs(math.log(d[0] / n)) + abs(math.log(d[1] / k)))
        for key, name in keys.items():
            if key[1:3] == (dn, dk) and key[3] == 128:
                entries[str((key[0], n, k) + key[3:])] = copy.deepcopy(entries[name])
        info["borrowed"][f"{kernel} K={k} N={n}"] = f"K={dk} N={dn}"  # type: ignore[index]


def gemlite_w4(qt: ql.QuantizedTensor):
    """gemlite's A16W4 layer on the same symmetric g128 codes: HQQ's form W = (u - 8)·scale with u = q + 8."""
    import gemlite

    n, k = qt.q.shape
    layer = gemlite.GemLiteLinear(4, group_size=128, in_features=k, out_features=n, input_dtype=gemlite.DType.BF16,
                                  output_dtype=gemlite.DType.BF16)
    layer.pack((qt.q.to(torch.int16) + 8).to(torch.uint8), qt.scale.to(torch.bfloat16), 8, bias=None)
    return layer


def clone(weight):
    """Another copy of a method's weight, to rotate over (a gemlite layer is an nn.Module)."""
    return copy.deepcopy(weight) if isinstance(weight, torch.nn.Module) else live._clone(weight)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).norm() / ref.norm()).item()


def max_abs_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return (y.double() - ref).abs().max().item()


# max |y - ref| over max |ref| that a bf16 output may show: its rounding is 2^-9 of each value, and
# the fp32 accumulation order differs from the reference's
MAX_ABS_TOL = 1e-2


def dispatch_checks(x_k: int, layer: PackedLinear, ms: list[int]) -> list[dict[str, object]]:
    """quantlab's W4A16 dispatch at every timed M against float64 x @ dequantize(W).T: relative and
    max abs error (a fresh x per M)."""
    w = ops.dequantize(layer, torch.bfloat16).double()
    out = []
    for m in ms:
        x = torch.randn(m, x_k, dtype=torch.bfloat16, device="cuda")
        ref = x.double() @ w.T
        y = ops.matmul(x, layer)
        row = {"K": x_k, "N": layer.out_features, "M": m, "path": ops.path_name(ops.launch_config(x, layer)),
               "rel_err": rel_err(y, ref), "max_abs_err": max_abs_err(y, ref), "ref_max_abs": ref.abs().max().item()}
        row["ok"] = bool(torch.isfinite(y).all()) and row["max_abs_err"] <= MAX_ABS_TOL * row["ref_max_abs"]
        out.append(row)
    del w
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, help="only write <results>.html (charts of a results JSON) into --out")
    ap.add_argument("--quick", action="store_true", help="two shapes and M in 1, 16, 256, 4096")
    ap.add_argument("--sweep", action="store_true", help="also time each W4A16 path on its own")
    ap.add_argument("--tag", default="", help="label stored with the results (kernel version)")
    ap.add_argument("--date", default="", help="the run's date as stored and in the file name (default: today)")
    ap.add_argument("--tune", action="store_true", help="first time every launch variant of W4A16 on three shapes")
    ap.add_argument("--tune-only", action="store_true", help="stop after --tune")
    ap.add_argument("--tune-shapes", type=int, nargs="+", default=[0, 1, 2], help="indices into SHAPES")
    ap.add_argument("--tune-ms", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    ap.add_argument("--tune-preset", default="W4A16", help="the QuantSpec preset to tune (W4A16, W8A16)")
    ap.add_argument("--tune-match", default="", help="only the variants whose name matches this regex")
    args = ap.parse_args()
    if args.plot:
        print(write_plots(args.plot, args.out))
        return
    shapes = SHAPES[:2] if args.quick else SHAPES
    ms = [1, 16, 256, 4096] if args.quick else MS
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20)
    meta = {"card": torch.cuda.get_device_name(0), "sms": props.multi_processor_count, "l2_bytes": l2,
            "torch": torch.__version__, "triton": triton.__version__, "tag": args.tag,
            "date": args.date or dt.date.today().isoformat(),
            "timing": "median of 9 CUDA-graph replays, weights rotated past 3x L2"}
    meta.update(ceilings())
    gem = gemlite_setup()
    if gem:
        meta["gemlite"] = gem
    print(json.dumps(meta), flush=True)
    rows, checks, dchecks = [], [], []
    torch.manual_seed(0)
    tuning = tune(l2, [SHAPES[i] for i in args.tune_shapes], args.tune_ms, args.tune_preset,
                  args.tune_match) if args.tune else []
    if args.tune_only:
        save(args.out, meta, [], [], tuning)
        return
    for k, n in shapes:
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
        w4 = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W4A16")))
        w8 = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W8A16")))
        f8 = Fp8Linear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("FP8_DYNAMIC")))
        i4, i4_sz, i4_qt = torch_int4(w)
        if gem:
            gemlite_borrow(k, n, gem)
        gl4 = gemlite_w4(i4_qt) if gem else None
        # Correctness of every method on this shape at M=16 (float64 reference of what each computes).
        x = torch.randn(16, k, dtype=torch.bfloat16, device="cuda")
        ref_w4 = x.double() @ ops.dequantize(w4, torch.bfloat16).double().T
        checks.append({"K": k, "N": n, "bf16": rel_err(F.linear(x, w), x.double() @ w.double().T),
                       "w4a16": rel_err(ops.matmul(x, w4), ref_w4),
                       "torch_int4": rel_err(torch.ops.aten._weight_int4pack_mm(x, i4, 128, i4_sz),
                                             x.double() @ i4_qt.dequantize().double().T),
                       "w8a16": rel_err(ops.matmul(x, w8), x.double() @ ops.dequantize(w8, torch.bfloat16).double().T),
                       "fp8": rel_err(fp8_linear(x, f8), x.double() @ w.double().T)})
        if gem:
            checks[-1]["gemlite"] = rel_err(gl4(x), x.double() @ i4_qt.dequantize().double().T)
        print("check", json.dumps(checks[-1]), flush=True)
        dchecks += dispatch_checks(k, w4, ms)
        mine = [c for c in dchecks if c["K"] == k and c["N"] == n]
        worst = max(c["max_abs_err"] / c["ref_max_abs"] for c in mine)
        print(f"dispatch checks K={k} N={n}: worst max-abs {worst:.2e} of max|ref|, "
              f"{sum(not c['ok'] for c in mine)} failed", flush=True)
        methods = {
            "bf16": (w, lambda x, wt: F.linear(x, wt), w.numel() * 2),
            "torch_int4": ((i4, i4_sz), lambda x, p: torch.ops.aten._weight_int4pack_mm(x, p[0], 128, p[1]), w4.nbytes),
            "w4a16": (w4, lambda x, p: ops.matmul(x, p), w4.nbytes),
            "w8a16": (w8, lambda x, p: ops.matmul(x, p), w8.nbytes),
            "fp8": (f8, lambda x, p: fp8_linear(x, p), f8.weight.numel() + f8.scale.numel() * 4),
        }
        if gem:
            methods["gemlite"] = (gl4, lambda x, p: p(x), w4.nbytes)
        if args.sweep:
            for path in ops.PATHS:
                def on_path(x, p, path=path):
                    return ops.matmul(x, p, ops.default_config(x.shape[0], p, path))
                methods[f"w4a16_{path}"] = (w4, on_path, w4.nbytes)
            if cuda_ops.available(torch.device("cuda")):
                methods["w4a16_wgmma"] = (w4, lambda x, p: cuda_ops.matmul(x, p), w4.nbytes)
        # each path only where it could be chosen (a GEMV re-reads the weight per row of x; slicing
        # the output rows only pays once the GEMM is large)
        path_limit = {"w4a16_gemv": 16, "w4a16_mma": 1024}
        path_floor = {"w4a16_chunked": 64, "w4a16_wgmma": 64}
        for name, (weight, fn, wbytes) in methods.items():
            copies = live.copies_for(wbytes, l2)
            clones = [weight] + [clone(weight) for _ in range(copies - 1)]
            for m in [m for m in ms if path_floor.get(name, m) <= m <= path_limit.get(name, m)]:
                xs = [torch.randn(m, k, dtype=torch.bfloat16, device="cuda") for _ in range(len(clones))]
                calls = [lambda x=x, c=c: fn(x, c) for x, c in zip(xs, clones)]
                try:
                    t = live.time_gpu(calls)
                except (RuntimeError, ValueError, triton.CompilationError) as err:  # record, keep going
                    print(f"skip {name} K={k} N={n} M={m}: {str(err).splitlines()[0][:160]}", flush=True)
                    continue
                flops, nbytes = speed.flops(m, k, n), speed.traffic_bytes(m, k, n, wbytes)
                rows.append({"K": k, "N": n, "M": m, "method": name, "ms": t,
                             "tflops": flops / t / 1e9, "gbps": nbytes / t / 1e6,
                             "pct_copy_bw": 100 * nbytes / t / 1e6 / meta["copy_gbps"]})
            del clones
        save(args.out, meta, checks, rows, tuning, dchecks)  # after each shape, so a cut-off run keeps what it measured
        print(f"shape K={k} N={n} done", flush=True)
        del w, w4, w8, f8, i4, gl4, methods
        torch.cuda.empty_cache()
    print(speed.summary_table(save(args.out, meta, checks, rows, tuning, dchecks)))


def write_plots(results: Path, out: Path) -> Path:
    """One HTML page: speedup against batch size for every shape, and the roofline of the largest."""
    from quantlab.viz import speed as viz_speed

    res = speed.load_results(results)
    methods = [m for m in res.methods if m != "bf16"]
    figs = [viz_speed.speedup_chart(res, k, n, ["bf16"] + methods) for k, n in res.shapes]
    figs.append(viz_speed.roofline_chart(res, *res.shapes[-1], ["bf16", "torch_int4", "w4a16", "w8a16", "fp8"]))
    body = "".join(f.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False) for i, f in enumerate(figs))
    target = out / f"{results.stem}.html"
    target.write_text(f"<html><head><meta charset='utf-8'><title>{res.label}</title></head><body>"
                      f"<h2>{res.label}</h2>"
                      f"<pre>{speed.summary_table({'meta': res.meta, 'rows': list(res.rows)})}</pre>"
                      f"{body}</body></html>")
    return target


def save(out: Path, meta: dict, checks: list, rows: list, tuning: list, dispatch: list | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{meta['card'].replace(' ', '_')}_{meta['date']}{'_' + meta['tag'] if meta['tag'] else ''}"
    result = {"meta": meta, "checks": checks, "rows": rows, "tuning": tuning}
    if dispatch:
        result["dispatch_checks"] = dispatch
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return result


def cuda_variants(m: int) -> dict[str, cuda_ops.CudaConfig]:
    """v10: the CUDA wgmma kernel (tokens per program, warpgroups, x stages, weight tiles in flight,
    K splits, wgmmas in flight, x by TMA or cp.async) around its default for batch size m."""
    c = cuda_ops.CudaConfig
    if m <= 16:
        grid = [(16, 2, 8, 4, sk, 3, True) for sk in (2, 4)] + [(16, 1, 8, 4, 8, 3, True)]
    elif m <= 64:
        grid = [(64, 2, 4, 3, sk, d, tma) for sk in (2, 4) for d, tma in ((3, True), (1, False), (3, False))]
        grid += [(64, 1, 6, 3, sk, 3, True) for sk in (2, 4)]
    elif m <= 128:
        grid = [(128, 2, 4, 3, sk, d, tma) for sk in (1, 2) for d, tma in ((3, True), (1, False), (3, False))]
        grid += [(128, 1, 4, 3, 2, 3, True), (128, 2, 6, 3, 2, 3, True)]
    elif m <= 256:
        grid = [(256, 2, 4, 2, sk, 3, True) for sk in (1, 2)] + [(256, 2, 3, 2, 2, 3, True)]
        # one warpgroup per program: two or three programs share a multiprocessor, out of step
        grid += [(bm, 1, st, wt, sk, 3, True) for bm, st, wt in ((256, 3, 2), (128, 4, 3), (128, 6, 3))
                 for sk in (1, 2)]
    else:
        grid = [(256, 2, st, 2, 1, 3, True) for st in (3, 4)]
        grid += [(256, 1, 3, 2, 1, 3, True), (128, 1, 4, 3, 1, 3, True), (128, 1, 6, 3, 1, 3, True)]
    variants = {f"cuda bm{bm} wg{wg} st{st} wt{wt} split{sk} d{d}{'' if tma else ' cpasync'}":
                c(block_m=bm, warpgroups=wg, stages=st, weight_tiles=wt, split_k=sk, depth=d, tma=tma)
                for bm, wg, st, wt, sk, d, tma in grid}
    # the same pipelines with no dequantization (wrong results): what the weights' expansion costs
    probes = {f"{name} probe-nodequant": dataclasses.replace(cfg, probe=1) for name, cfg in variants.items()
              if m >= 128 and cfg.split_k == 1 and cfg.block_m >= 128}
    return variants | probes


def tune_variants(m: int, bits: int, k: int, l2: int) -> dict[str, ops.Config | cuda_ops.CudaConfig]:
    """The launch variants `--tune` times at batch size m for K inputs on a card with l2 bytes of L2
    (every path that could serve it)."""
    c = ops.Config
    out: dict[str, ops.Config | cuda_ops.CudaConfig] = {}
    if bits == 4 and cuda_ops.available(torch.device("cuda")):
        out.update(cuda_variants(m))
    if m >= 64:
        # v9: the per-tile kernel, pre-scaled, with the S operands of a tile rotating over NACC
        # accumulators, so that a dot does not feed the next and Triton leaves it in flight
        grid2 = [(128, 64, 8, 3, 4), (128, 64, 8, 3, 2)] + ([(64, 64, 4, 3, 2), (128, 64, 8, 3, 1)] if m <= 64
                                                              else [(128, 128, 8, 2, 2)])
        for bn, bm, nw, st, nacc in grid2:
            for sk in (1, 2, 4) if m <= 64 else (1, 2) if m <= 256 else (1,):
                out[f"nacc{nacc} bn{bn} bm{bm} w{nw} st{st} split{sk}"] = c(
                    "mma", block_m=bm, block_n=bn, num_warps=nw, num_stages=st, split_k=sk, pre_scale=True, nacc=nacc)
        # v9: one operand per step with the weight tile read once and held in registers (HOLD), so
        # each step's dot is issued asynchronously and the next step's dequantization overlaps it
        # (block_n, block_m, warps, stages, splits)
        grid = {64: [(64, 64, 4, 4, (1, 2, 4)), (128, 64, 8, 4, (1, 2))],
                128: [(128, 128, 8, 3, (1, 2)), (128, 128, 8, 4, (1, 2)), (64, 128, 4, 4, (1, 2)),
                      (128, 64, 8, 4, (1, 2))],
                256: [(128, 256, 8, 3, (1, 2)), (128, 256, 8, 4, (1, 2)), (128, 128, 8, 4, (1, 2)),
                      (64, 256, 4, 4, (1,))]}.get(m, [(128, 256, 8, 3, (1,)), (128, 256, 8, 4, (1,)),
                                                     (128, 128, 8, 4, (1,))])
        for bn, bm, nw, st, splits in grid:
            for sk in splits:
                out[f"hold bn{bn} bm{bm} w{nw} st{st} split{sk}"] = c("mma", block_m=bm, block_n=bn, num_warps=nw,
                                                                       num_stages=st, split_k=sk, flat=True, hold=True)
    if bits == 8 and m <= 16:  # 8-bit tiles are twice the bytes: fewer programs fit, so fewer stages
        return {f"mma bm16 bn64 w4 split{sk} st{st}{' tma' * tma}": c("mma", block_m=16, split_k=sk, num_stages=st,
                                                                       tma=tma)
                for sk in (1, 2, 4, 8) for st in (2, 3) for tma in (False, True)}
    if m == 1:
        out.update({f"gemv bn{bn} split{sk}": c("gemv", block_n=bn, split_k=sk) for bn in (64, 128) for sk in (4, 8)})
    if m <= 16:
        # bn64 w4 is one warpgroup (wgmma); 1-2 warps per program made Triton use mma.sync, with fewer
        # instructions per weight and no wait on each matrix instruction, and tied (bench/NOTES.md)
        for tma in (False, True):
            for sk in (1, 2, 4, 8):
                for st in (3, 4):
                    out[f"mma bm16 bn64 w4 split{sk} st{st}{' tma' * tma}"] = c(
                        "mma", block_m=16, block_n=64, split_k=sk, num_stages=st, tma=tma)
            for sk in (2, 4, 8):
                out[f"mma bm16 bn128 w8 split{sk}{' tma' * tma}"] = c("mma", block_m=16, block_n=128, num_warps=8,
                                                                      split_k=sk, tma=tma)
    elif m <= 64:
        # st2 halves the shared memory per program, so two programs (two warpgroups) share a
        # multiprocessor and one's dequantization can overlap the other's wgmma
        for sk in (1, 2, 4):
            for st in (2, 3):
                out[f"mma bm64 bn64 split{sk} st{st}"] = c("mma", block_m=64, split_k=sk, num_stages=st)
                out[f"gemm bm64 bn64 split{sk} st{st}"] = c("mma", block_m=64, split_k=sk, num_stages=st, swap=False)
            out[f"mma bm64 bn64 split{sk} st3 tma"] = c("mma", block_m=64, split_k=sk, tma=True)
            out[f"mma bm64 bn128 w8 split{sk} st2"] = c("mma", block_m=64, block_n=128, num_warps=8, split_k=sk,
                                                        num_stages=2)
            for st in (3, 4):
                out[f"flat bm64 bn64 split{sk} st{st}"] = c("mma", block_m=64, split_k=sk, num_stages=st, flat=True)
            out[f"flat bm64 bn128 w8 split{sk} st3"] = c("mma", block_m=64, block_n=128, num_warps=8, split_k=sk,
                                                         flat=True)
    else:
        # swapped (weight from registers) against the GEMM orientation (weight through shared
        # memory, where Triton can keep a wgmma in flight), with wider x tiles than before
        for bn, bm, nw, st in ((128, 128, 8, 2), (64, 128, 4, 2), (64, 128, 4, 3), (128, 64, 8, 3)):
            for sk in (1, 2) if m <= 256 else (1,):
                out[f"mma bn{bn} bm{bm} w{nw} st{st} split{sk} pre"] = c("mma", block_m=bm, block_n=bn, num_warps=nw,
                                                                          num_stages=st, split_k=sk, pre_scale=True)
        for bm, bn, nw, st in ((128, 128, 8, 2), (128, 256, 8, 2), (256, 128, 8, 2), (64, 128, 4, 3), (128, 64, 4, 3),
                               (128, 128, 4, 2)):
            for sk in (1, 2) if m <= 256 else (1,):
                out[f"gemm bm{bm} bn{bn} w{nw} st{st} split{sk}"] = c("mma", block_m=bm, block_n=bn, num_warps=nw,
                                                                       num_stages=st, split_k=sk, swap=False)
        # one operand per pipelined step: a quarter of the x tile per stage, so 2-3 programs fit
        for bn, bm, nw, st in ((64, 128, 4, 3), (64, 128, 4, 4), (128, 128, 8, 3), (128, 128, 8, 4), (64, 256, 4, 3),
                               (128, 256, 8, 3), (64, 64, 4, 4)):
            for sk in (1, 2) if m <= 256 else (1,):
                out[f"flat bn{bn} bm{bm} w{nw} st{st} split{sk}"] = c("mma", block_m=bm, block_n=bn, num_warps=nw,
                                                                       num_stages=st, split_k=sk, flat=True)
        out["dequant bn32"] = c("dequant", block_n=32, num_warps=4, num_stages=1)
        out["dequant bn64"] = c("dequant", block_n=64, num_warps=4, num_stages=1)
        out["dequant bn128 w8"] = c("dequant", block_n=128, num_warps=8, num_stages=1)
    if m >= 64:
        # slices of output rows whose bf16 weights fit the L2, dequantized one slice ahead on a side
        # stream (or on the caller's stream, "serial"); shares of the L2 per slice buffer
        for share in (0.125, 0.25, 0.375):
            out[f"chunked {share:g}L2 bn32"] = c("chunked", block_n=32, num_stages=1,
                                                     chunk_rows=ops.chunk_rows_for(k, l2, share))
        for share in (0.25, 0.5):
            out[f"chunked {share:g}L2 bn32 serial"] = c("chunked", block_n=32, num_stages=1, overlap=False,
                                                            chunk_rows=ops.chunk_rows_for(k, l2, share))
        for bn, nw in ((64, 4), (128, 8)):
            out[f"chunked 0.25L2 bn{bn} w{nw}"] = c("chunked", block_n=bn, num_warps=nw, num_stages=1,
                                                 chunk_rows=ops.chunk_rows_for(k, l2, 0.25))
    return out


def tune(l2: int, shapes: list[tuple[int, int]], ms: list[int], preset: str = "W4A16",
         match: str = "") -> list[dict[str, object]]:
    """Time every variant of `tune_variants` (whose name matches the regex `match`) for a preset against
    bf16 cuBLAS; print the best per case."""
    out = []
    spec = ql.QuantSpec.preset(preset)
    for k, n in shapes:
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
        layer = PackedLinear.from_quantized(ql.quantize(w, spec))
        clones = [layer] + [live._clone(layer) for _ in range(live.copies_for(layer.nbytes, l2) - 1)]
        dense = [w] + [w.clone() for _ in range(live.copies_for(w.numel() * 2, l2) - 1)]
        for m in ms:
            xs = [torch.randn(m, k, dtype=torch.bfloat16, device="cuda") for _ in range(max(len(clones), len(dense)))]
            base = live.time_gpu([lambda x=x, d=d: F.linear(x, d) for x, d in zip(xs, dense)])
            ref = xs[0].double() @ ops.dequantize(layer, torch.bfloat16).double().T
            best = None
            variants = {"ship": ops.launch_config(xs[0], layer), **tune_variants(m, spec.num_bits, k, l2)}
            for name, cfg in variants.items():
                if not re.search(match, name):
                    continue
                try:
                    y = ops.matmul(xs[0], layer, cfg)
                    err, abs_err = rel_err(y, ref), max_abs_err(y, ref)
                    t = live.time_gpu([lambda x=x, c=c, cfg=cfg: ops.matmul(x, c, cfg) for x, c in zip(xs, clones)],
                                      target_ms=2.0, replays=7)
                except Exception as e:  # a config that does not compile or fit is skipped, noted
                    print(f"tune skip K={k} N={n} M={m} {name}: {str(e).splitlines()[0][:160]}", flush=True)
                    continue
                out.append({"K": k, "N": n, "M": m, "preset": preset, "variant": name,
                            "config": dataclasses.asdict(cfg), "ms": t, "bf16_ms": base, "rel_err": err,
                            "max_abs_err": abs_err, "ref_max_abs": ref.abs().max().item()})
                print(f"  K={k} N={n} M={m} {name}: {t * 1e3:.1f} us ({base / t:.2f}x), rel {err:.1e}, "
                      f"max-abs {abs_err / out[-1]['ref_max_abs']:.1e} of max|ref|", flush=True)
                if best is None or t < best[1]:
                    best = (name, t)
            if best:
                print(f"tune K={k} N={n} M={m}: bf16 {base * 1e3:.1f} us, best {best[0]} {best[1] * 1e3:.1f} us "
                      f"= {base / best[1]:.2f}x", flush=True)
        del clones, dense
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    main()
