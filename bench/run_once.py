"""Run one quantlab W4A16 g128 matmul a few times, for a profiler to pick up:

    ncu -k regex:_mma_kernel -s 5 -c 1 --section WarpStateStats python3 bench/run_once.py --k 8192 --n 8192 --m 1

`--set` overrides fields of the default launch config, e.g. `--set block_m=128 swap=False`; `--cuda`
starts from the Hopper wgmma kernel's (`cuda_ops.CudaConfig`, kernel name w4a16_wgmma).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantlab as ql  # noqa: E402
from quantlab.kernels import cuda_ops  # noqa: E402
from quantlab.kernels import triton_ops as ops  # noqa: E402
from quantlab.kernels.layout import PackedLinear  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--k", type=int, default=8192)
ap.add_argument("--n", type=int, default=8192)
ap.add_argument("--m", type=int, default=1)
ap.add_argument("--path", choices=ops.PATHS)
ap.add_argument("--cuda", action="store_true", help="the CUDA wgmma kernel")
ap.add_argument("--runs", type=int, default=10)
ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override a field of the launch config")
args = ap.parse_args()
w = torch.randn(args.n, args.k, dtype=torch.bfloat16, device="cuda") * 0.02
layer = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W4A16")))
x = torch.randn(args.m, args.k, dtype=torch.bfloat16, device="cuda")
cfg = cuda_ops.default_config(args.m, layer) if args.cuda else ops.default_config(args.m, layer, args.path)
kinds = {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
overrides = dict(item.split("=", 1) for item in args.set)
cfg = dataclasses.replace(cfg, **{f: v == "True" if kinds[f] is bool else kinds[f](v) for f, v in overrides.items()})
print(cfg)
for _ in range(args.runs):
    ops.matmul(x, layer, cfg)
torch.cuda.synchronize()
