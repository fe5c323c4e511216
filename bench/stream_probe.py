"""How fast can a Triton program stream a packed weight in quantlab's tile pattern, with no dequantization?

    python bench/stream_probe.py --out DIR

The small-M kernel reads, per program and K step, a [rows, W] block of words: 64 bytes of each of 64
rows. This probe keeps that loop (loads pipelined into shared memory, one tensor-core dot per step
so that Triton pipelines them exactly as in the kernel) but feeds the dot the raw bits instead of
dequantized weights, and times it for 64, 128 and 256 bytes per row and step, with pointer loads
(cp.async) and with tensor descriptors (the TMA copy engine). If the probe streams much faster than
the kernel, the dequantization is the limit; if not, the load pattern is.

    python bench/stream_probe.py --out DIR --dequant

times the W4A16 dequantization kernel alone (the "dequant" and "chunked" paths' producer) writing
bf16 weights of 4 MB to 470 MB into one reused buffer, against a plain fill of the same buffer: if
the kernel wrote faster while its output fits in L2, slicing the weight to fit would pay.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quantlab as ql  # noqa: E402
from quantlab.kernels import live  # noqa: E402
from quantlab.kernels import triton_ops as ops  # noqa: E402
from quantlab.kernels.layout import PackedLinear  # noqa: E402


@triton.jit
def _probe(w_ptr, w_desc, x_ptr, y_ptr, KT, TW: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
           TMA: tl.constexpr):
    # the kernel's own tile loaders, so the probe streams exactly as `_mma_kernel` does
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_e = tl.arange(0, TW)
    rows = w_ptr + offs_n[:, None] * (KT * TW) + offs_e[None, :]
    x = tl.load(x_ptr + offs_e[:, None] * 16 + tl.arange(0, 16)[None, :])
    acc = tl.zeros([BLOCK_N, 16], tl.float32)
    per = tl.cdiv(KT, SPLIT)
    for t in range(tl.program_id(1) * per, tl.minimum(tl.program_id(1) * per + per, KT)):
        if TMA:
            tile = ops._load_tile_tma(w_desc, tl.program_id(0) * BLOCK_N, t, TW // 2)
        else:
            tile = ops._load_tile(rows, t, TW // 2, offs_n >= 0, True)  # every row exists: no mask
        acc = tl.dot(tile.to(tl.bfloat16, bitcast=True), x, acc)
    out = y_ptr + (tl.program_id(1) * tl.num_programs(0) * BLOCK_N + offs_n)[:, None] * 16 + tl.arange(0, 16)[None, :]
    tl.store(out, acc)


def dequant_rates(l2: int) -> list[dict[str, object]]:
    """Write rate of the dequantization kernel and of a plain fill, by bf16 output size at K = 8192
    (the packed weights rotate past 3x L2, so they come from device memory; the output is one buffer)."""
    k, rows = 8192, []
    for n in (256, 512, 1024, 2048, 4096, 8192, 28672):
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
        layer = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W4A16")))
        layers = [layer] + [live._clone(layer) for _ in range(live.copies_for(layer.nbytes, l2) - 1)]
        out = torch.empty(n, k, dtype=torch.bfloat16, device="cuda")
        cfg = ops.default_config(0, layer, "dequant")
        dequant_ms = live.time_gpu([lambda c=c: ops.dequantize(c, torch.bfloat16, cfg, out=out) for c in layers])
        fill_ms = live.time_gpu([lambda: out.fill_(1.0)])
        for variant, ms in (("dequantize", dequant_ms), ("fill", fill_ms)):
            rows.append({"K": k, "N": n, "variant": variant, "out_mb": out.numel() * 2 / 1e6, "ms": ms,
                         "write_gbps": out.numel() * 2 / ms / 1e6})
            print(f"N={n} ({rows[-1]['out_mb']:.0f} MB) {variant}: {ms * 1e3:.1f} us, "
                  f"{rows[-1]['write_gbps']:.0f} GB/s written", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dequant", action="store_true", help="time the dequantization kernel's writes instead")
    args = ap.parse_args()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    if args.dequant:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"card": torch.cuda.get_device_name(0), "l2_bytes": l2, "rows": dequant_rates(l2)}
        (args.out / "dequant_probe.json").write_text(json.dumps(result, indent=1))
        return
    rows = []
    for k, n in [(8192, 8192), (8192, 28672)]:
        halves_per_row = k // 4  # 4-bit codes: K/8 words = K/4 int16 halves
        nbytes = n * halves_per_row * 2
        ws = [torch.randint(-2**15, 2**15, (n, halves_per_row), dtype=torch.int16, device="cuda")
              for _ in range(live.copies_for(nbytes, l2))]
        dense = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") for _ in range(live.copies_for(2 * n * k, l2))]
        xk = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        bf16_ms = live.time_gpu([lambda d=d: F.linear(xk, d) for d in dense])
        rows.append({"K": k, "N": n, "variant": "bf16 F.linear M=1", "ms": bf16_ms, "gbps": 2 * n * k / bf16_ms / 1e6})
        for tw in (32, 64, 128):
            x = torch.randn(tw, 16, dtype=torch.bfloat16, device="cuda")
            kt = halves_per_row // tw
            for split in (1, 2, 4):
                for stages in (3, 4):
                    y = torch.empty(split * n, 16, dtype=torch.float32, device="cuda")
                    grid = (n // 64, split)
                    for kind in ("ptr", "tma"):
                        descs = [TensorDescriptor.from_tensor(w, [64, tw]) if kind == "tma" else None for w in ws]
                        calls = [lambda w=w, d=d, kind=kind: _probe[grid](w, d, x, y, kt, TW=tw, BLOCK_N=64,
                                                                          SPLIT=split, TMA=kind == "tma",
                                                                          num_stages=stages)
                                 for w, d in zip(ws, descs)]
                        try:
                            ms = live.time_gpu(calls)
                        except Exception as err:  # noqa: BLE001 - a variant that does not compile is noted
                            print(f"skip {kind} tw{tw} split{split} st{stages}: {str(err).splitlines()[0][:150]}")
                            continue
                        rows.append({"K": k, "N": n, "variant": f"{kind} {2 * tw} B/row split{split} st{stages}",
                                     "ms": ms, "gbps": nbytes / ms / 1e6})
                        print(f"K={k} N={n} {rows[-1]['variant']}: {ms * 1e3:.1f} us {rows[-1]['gbps']:.0f} GB/s",
                              flush=True)
        print(f"K={k} N={n} bf16 F.linear M=1: {bf16_ms * 1e3:.1f} us", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"card": torch.cuda.get_device_name(0), "rows": rows}
    (args.out / "stream_probe.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
