"""Kernels against a float64 reference: on the CPU through Triton's interpreter (small shapes, in
CI) and, marked `gpu`, compiled on a CUDA card at model sizes. Inputs are drawn fresh on every run
(the seed is in the failure message) and outputs are poisoned with NaN before each launch, so an
element a kernel forgets to write fails the check."""
from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of the kernel modules
pytest.importorskip("triton")

import quantlab as ql  # noqa: E402
from quantlab.core.errors import QuantlabError  # noqa: E402
from quantlab.io import models  # noqa: E402
from quantlab.kernels import triton_ops as ops  # noqa: E402
from quantlab.kernels.fp8 import (  # noqa: E402
    Fp8Linear,
    fp8_linear,
    fp8_reference,
    quantize_per_token,
)
from quantlab.kernels.layout import (  # noqa: E402
    PackedLinear,
    dequantize_packed,
    reference_matmul,
    torch_matmul,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
# ||y - ref|| / ||ref|| bounds: bf16 output rounding alone is ~2^-9 per element; fp16 has 3 more bits.
TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
SPECS = {
    "w4_sym_g128": ql.QuantSpec.preset("W4A16"),
    "w4_asym_g32": ql.QuantSpec(num_bits=4, symmetric=False, strategy="group", group_size=32),
    "w8_sym_g128": ql.QuantSpec.preset("W8A16"),
    "w8_sym_channel": ql.QuantSpec(num_bits=8, strategy="channel"),
    "w4_asym_channel": ql.QuantSpec(num_bits=4, symmetric=False, strategy="channel"),
    "w8_asym_g64": ql.QuantSpec(num_bits=8, symmetric=False, strategy="group", group_size=64),
    "w8_sym_g32": ql.QuantSpec(num_bits=8, strategy="group", group_size=32),
    "w4_sym_g256": ql.QuantSpec(num_bits=4, strategy="group", group_size=256),
}


def fresh_seed() -> int:
    seed = random.SystemRandom().randrange(2**31)
    torch.manual_seed(seed)
    return seed


def layer_for(spec: ql.QuantSpec, n: int, k: int, dtype: torch.dtype) -> PackedLinear:
    w = torch.randn(n, k, dtype=dtype, device=DEVICE) * 0.05
    return PackedLinear.from_quantized(ql.quantize(w, spec))


def run_poisoned(x: torch.Tensor, layer: PackedLinear, cfg: ops.Config | None) -> torch.Tensor:
    out = torch.full((x.shape[0], layer.out_features), float("nan"), dtype=x.dtype, device=x.device)
    y = ops.matmul(x, layer, cfg, out=out)
    assert y.data_ptr() == out.data_ptr()
    return y


def check(y: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, seed: int, what: str) -> None:
    assert torch.isfinite(y).all(), f"{what}: unwritten (NaN) outputs, seed {seed}"
    err = ((y.double().cpu() - ref.cpu()).norm() / ref.norm()).item()
    assert err < TOL[dtype], f"{what}: relative error {err:.2e}, seed {seed}"


# Small tiles on the CPU keep the interpreter fast while still leaving partial tiles in M, N and K.
CPU_CONFIGS = {"gemv": ops.Config("gemv", block_n=32, split_k=2),
               "mma": ops.Config("mma", block_m=16, block_n=32, split_k=2),
               "dequant": ops.Config("dequant", block_n=16),
               "mma_one_pass": ops.Config("mma", block_m=16, block_n=32),
               "gemv_one_pass": ops.Config("gemv", block_n=32),
               "mma_pre_scale": ops.Config("mma", block_m=16, block_n=32, split_k=2, pre_scale=True),
               "mma_gemm": ops.Config("mma", block_m=16, block_n=32, split_k=2, swap=False),
               "mma_flat": ops.Config("mma", block_m=16, block_n=32, split_k=2, flat=True),
               "mma_hold": ops.Config("mma", block_m=16, block_n=32, split_k=2, flat=True, hold=True),
               "mma_nacc2": ops.Config("mma", block_m=16, block_n=32, split_k=2, pre_scale=True, nacc=2),
               "mma_nacc4": ops.Config("mma", block_m=16, block_n=32, pre_scale=True, nacc=4),
               # slices of 32 output rows: N = 72 leaves a short last slice
               "chunked": ops.Config("chunked", block_n=16, chunk_rows=32)}


@pytest.mark.parametrize("spec_name,path,dtype", [
    ("w4_sym_g128", "gemv", torch.bfloat16), ("w4_sym_g128", "mma", torch.float16),
    ("w4_sym_g128", "dequant", torch.bfloat16), ("w4_asym_g32", "gemv", torch.float16),
    ("w4_asym_g32", "mma", torch.bfloat16), ("w8_sym_g128", "gemv", torch.float16),
    ("w8_sym_g128", "mma", torch.bfloat16), ("w8_asym_g64", "dequant", torch.float16),
    ("w8_asym_g64", "mma", torch.float16), ("w4_sym_g128", "mma_one_pass", torch.bfloat16),
    ("w8_asym_g64", "gemv_one_pass", torch.bfloat16), ("w8_sym_g128", "mma_one_pass", torch.float16),
    # per-channel (GROUP == 0): one scale column, read for every tile, K's padding included
    ("w8_sym_channel", "gemv", torch.bfloat16), ("w8_sym_channel", "mma", torch.float16),
    ("w4_asym_channel", "gemv", torch.float16), ("w4_asym_channel", "mma", torch.bfloat16),
    ("w4_asym_channel", "mma_pre_scale", torch.float16), ("w8_sym_channel", "dequant", torch.bfloat16),
    # the GEMM orientation (weight as the right operand), split K and a padded K tile
    ("w4_sym_g128", "mma_gemm", torch.bfloat16), ("w4_asym_g32", "mma_gemm", torch.float16),
    ("w8_sym_channel", "mma_gemm", torch.bfloat16),
    # one pipelined step per operand (a run-time operand index)
    ("w4_sym_g128", "mma_flat", torch.bfloat16), ("w4_asym_g32", "mma_flat", torch.float16),
    ("w8_sym_channel", "mma_flat", torch.bfloat16),
    # the same, each weight tile read once and held in registers for its operands (v9)
    ("w4_sym_g128", "mma_hold", torch.bfloat16), ("w4_asym_g32", "mma_hold", torch.float16),
    ("w8_sym_channel", "mma_hold", torch.bfloat16), ("w4_asym_channel", "mma_hold", torch.bfloat16),
    ("w8_asym_g64", "mma_hold", torch.float16),
    # pre-scaled operands rotating over 2 or 4 accumulators (v9); 8-bit tiles have 2 operands
    ("w4_sym_g128", "mma_nacc4", torch.bfloat16), ("w4_asym_g32", "mma_nacc2", torch.float16),
    ("w4_asym_channel", "mma_nacc4", torch.bfloat16), ("w8_sym_channel", "mma_nacc2", torch.bfloat16),
    ("w8_asym_g64", "mma_nacc4", torch.float16),
    ("w8_sym_g32", "mma", torch.bfloat16), ("w8_sym_g32", "gemv", torch.float16),
    ("w8_sym_g32", "dequant", torch.bfloat16), ("w4_asym_g32", "mma_pre_scale", torch.float16),
    ("w4_sym_g128", "mma_pre_scale", torch.bfloat16), ("w4_sym_g256", "mma", torch.bfloat16),
    # dequantize + matmul one slice of output rows at a time
    ("w4_sym_g128", "chunked", torch.bfloat16), ("w4_asym_g32", "chunked", torch.float16),
    ("w8_sym_channel", "chunked", torch.bfloat16),
])
def test_small_shapes_match_float64(spec_name: str, path: str, dtype: torch.dtype) -> None:
    seed = fresh_seed()
    # N not a multiple of the N tile; K = 384 pads its second 256-input tile, 768 fills three
    n, k = 72, 768 if spec_name == "w4_sym_g256" else 384
    layer = layer_for(SPECS[spec_name], n, k, dtype)
    assert (ops._group_arg(layer) == 0) == spec_name.endswith("_channel")  # the kernels' per-channel path
    for m in (1, 5, 19):
        x = torch.randn(m, k, dtype=dtype, device=DEVICE)
        y = run_poisoned(x, layer, CPU_CONFIGS[path])
        check(y, reference_matmul(x, layer), dtype, seed, f"{spec_name} {path} M={m}")


@pytest.mark.parametrize("bits", [4, 8])
def test_interleaved_layout_round_trips_and_lines_up(bits: int) -> None:
    """Operand s of a tile, read as 16-bit halves, holds inputs s·2W .. s·2W + 2W - 1 in order."""
    from quantlab.core import packing
    from quantlab.kernels.layout import checkpoint_words, interleave

    fresh_seed()
    k = 300  # one full 256-input tile and a padded one
    q = torch.randint(-(1 << bits - 1), 1 << bits - 1, (6, k), dtype=torch.int8)
    words = packing.pack(q, bits)
    tiled = interleave(words, bits, k)
    assert tiled.shape == (6, 2 * 256 * bits // 32) and torch.equal(checkpoint_words(tiled, bits, k), words)
    halves = tiled.view(torch.int16).to(torch.int32) & 0xFFFF
    width = 2 * 256 * bits // 32  # 2W: 64 inputs per operand at 4 bits, 128 at 8
    for s in range(16 // bits):
        codes = (halves[:, :width] >> (s * bits)) & ((1 << bits) - 1)
        assert torch.equal(codes - (1 << bits - 1), q[:, s * width:(s + 1) * width].to(torch.int32)), s


def test_unrolled_k_loop_and_split_k_reduction() -> None:
    """K = 8 tiles of 256: split 2 runs 4 tiles per slice, unrolled 4 at a time; the last slice to
    finish sums the partials and leaves the counters at zero for the next call."""
    seed = fresh_seed()
    assert ops._step(8, 2, 4) == 4 and ops._step(8, 2, 2) == 2 and ops._step(3, 2, 4) == 1
    layer = layer_for(SPECS["w4_sym_g128"], 40, 2048, torch.float16)
    cfg = ops.Config("mma", block_m=16, block_n=32, split_k=2, step=4)
    for m in (3, 17):
        x = torch.randn(m, 2048, dtype=torch.float16, device=DEVICE)
        check(run_poisoned(x, layer, cfg), reference_matmul(x, layer), torch.float16, seed, f"M={m}")
    assert not ops._workspace(torch.device(DEVICE), "counters", 1, torch.int32).any()


def test_default_dispatch_and_torch_path_on_a_batch() -> None:
    seed = fresh_seed()
    layer = layer_for(SPECS["w4_sym_g128"], 40, 256, torch.bfloat16)
    x = torch.randn(2, 3, 256, dtype=torch.bfloat16, device=DEVICE)
    ref = reference_matmul(x.reshape(-1, 256), layer)
    y = ops.matmul(x, layer)
    assert y.shape == (2, 3, 40)
    check(y.reshape(-1, 40), ref, torch.bfloat16, seed, "default path")
    check(torch_matmul(x, layer).reshape(-1, 40), ref, torch.bfloat16, seed, "torch path")


def minilm_layer() -> tuple[str, torch.Tensor, torch.Tensor]:
    """The default MiniLM layer's weight and real inputs. A GPU machine without the embedded model
    package reads the same two tensors from the file named by QUANTLAB_MINILM_FIXTURE."""
    fixture = os.environ.get("QUANTLAB_MINILM_FIXTURE")
    if fixture:
        from safetensors import safe_open
        with safe_open(fixture, "pt") as f:
            return f.metadata()["layer"], f.get_tensor("weight"), f.get_tensor("activations")
    name = models.DEFAULT_LAYER
    weight = models.load_tensor(models.ModelSource.embedded(), f"{name}.weight")
    return name, weight, models.activations("general")[name]


def test_real_minilm_weights_and_activations() -> None:
    seed = fresh_seed()
    name, w, acts = minilm_layer()
    w = w.to(DEVICE, torch.float16)
    acts = acts[: 64 if CUDA else 4].to(DEVICE, torch.float16)
    # Wide tiles: this layer is 1536 x 384, and the interpreter's cost grows with the program count.
    configs = {"gemv": ops.Config("gemv", block_n=256),
               "mma": ops.Config("mma", block_m=16, block_n=256)}
    if CUDA:
        configs = {path: ops.default_config(acts.shape[0], ops_layer, path) for path in ops.PATHS
                   for ops_layer in [PackedLinear.from_quantized(ql.quantize(w, SPECS["w4_sym_g128"]))]}
    for spec in (SPECS["w4_sym_g128"], SPECS["w4_asym_g32"]):
        layer = PackedLinear.from_quantized(ql.quantize(w, spec))
        for path, cfg in configs.items():
            check(run_poisoned(acts, layer, cfg), reference_matmul(acts, layer), torch.float16, seed,
                  f"MiniLM {name} {spec.label} {path}")


def test_kernel_dequantization_is_bit_exact() -> None:
    fresh_seed()
    for spec in SPECS.values():
        w = torch.randn(24, 256, dtype=torch.bfloat16, device=DEVICE)
        qt = ql.quantize(w, spec)
        layer = PackedLinear.from_quantized(qt)
        assert torch.equal(dequantize_packed(layer), qt.dequantize()), spec.label
        kernel = ops.dequantize(layer, torch.bfloat16, CPU_CONFIGS["dequant"])
        if CUDA:
            assert torch.equal(kernel, qt.dequantize()), spec.label
        else:  # the interpreter truncates float32 -> bf16 instead of rounding: one ulp of slack
            torch.testing.assert_close(kernel, qt.dequantize(), rtol=2**-7, atol=0, msg=spec.label)


def test_fp8_per_token_step_matches_quantlab() -> None:
    seed = fresh_seed()
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(7, 200, dtype=dtype, device=DEVICE) * 4
        x[3] = 0  # an all-zero token takes the epsilon scale
        q, s = quantize_per_token(x)
        ref = ql.quantize(x, ql.QuantSpec.preset("FP8_DYNAMIC").activations)
        if CUDA:
            assert torch.equal(s, ref.scale.float()) and torch.equal(q.float(), ref.q.float()), seed
        else:
            # The interpreter truncates instead of rounding when it narrows float32 to bf16 (the
            # scale may be one ulp low) and its float8 cast is wrong outright (127.0 came back as
            # 64), so on the CPU only the scale is checked; the codes are checked on the GPU.
            torch.testing.assert_close(s, ref.scale.float(), rtol=2**-7, atol=0)


@pytest.mark.skipif(not CUDA and not hasattr(torch, "_scaled_mm"), reason="no _scaled_mm")
def test_fp8_linear_matches_float64() -> None:
    seed = fresh_seed()
    w = torch.randn(48, 256, dtype=torch.bfloat16, device=DEVICE) * 0.05
    layer = Fp8Linear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("FP8_DYNAMIC")))
    x = torch.randn(16, 256, dtype=torch.bfloat16, device=DEVICE)
    check(fp8_linear(x, layer), fp8_reference(x, layer), torch.bfloat16, seed, "fp8")


def test_user_errors_are_one_line() -> None:
    layer = layer_for(SPECS["w4_sym_g128"], 16, 128, torch.float16)
    with pytest.raises(QuantlabError, match="features"):
        ops.matmul(torch.randn(2, 64, dtype=torch.float16, device=DEVICE), layer)
    with pytest.raises(QuantlabError, match="float16 or bfloat16"):
        ops.matmul(torch.randn(2, 128, device=DEVICE), layer)
    with pytest.raises(QuantlabError, match="4- or 8-bit"):
        PackedLinear.from_quantized(ql.quantize(torch.randn(8, 64), ql.QuantSpec(num_bits=3, strategy="channel")))


def test_split_k_is_sized_to_the_card() -> None:
    """The split asked for follows the device's own multiprocessor count (none to fill on the CPU)."""
    layer = layer_for(SPECS["w4_sym_g128"], 4096, 4096, torch.bfloat16)
    sms = ops.multiprocessors(layer.device)
    assert sms == (torch.cuda.get_device_properties(layer.device).multi_processor_count if CUDA else 1)
    tiles = 4096 // 64
    split = ops.default_config(1, layer).split_k
    assert split == ops._split_for(tiles, 16, 3 * sms)
    assert ops._split_for(tiles, 16, 1) == 1 and ops._split_for(tiles, 16, 3 * 132) == 4


def test_chunk_rows_fit_the_cache() -> None:
    """Each slice's bf16 weights take a quarter of the L2 (whole 128-row tiles); no cache, one slice."""
    l2 = 60 * 2**20
    assert ops.chunk_rows_for(8192, l2) == 896 and 2 * 896 * 8192 <= l2 // 4
    assert ops.chunk_rows_for(2**20, l2) == 128 and ops.chunk_rows_for(4096, 0) == 0
    layer = layer_for(SPECS["w4_sym_g128"], 40, 256, torch.bfloat16)
    assert ops.default_config(512, layer, "chunked").chunk_rows == ops.chunk_rows_for(256, ops.l2_bytes(layer.device))


def test_path_choice_follows_batch_size() -> None:
    paths = [ops.choose_path(m, 8192) for m in (1, 2, 4, 8, 16, 256, 1024, 4096)]
    assert paths[0] in ("gemv", "mma") and paths[-1] == "dequant"
    # short K: the fused kernel hands over to dequantize + cuBLAS one batch size earlier
    assert ops.choose_path(256, 4096) == "dequant" and ops.choose_path(128, 4096) == "mma"
    order = {p: i for i, p in enumerate(ops.PATHS)}
    assert [order[p] for p in paths] == sorted(order[p] for p in paths)


# -- compiled, at model sizes --------------------------------------------------------------------------

@gpu
@needs_cuda
@pytest.mark.parametrize("k,n", [(4096, 4096), (14336, 4096), (4096, 14336 + 40)])
def test_gpu_model_shapes_every_path(k: int, n: int) -> None:
    seed = fresh_seed()
    for spec_name in ("w4_sym_g128", "w8_sym_g128", "w4_asym_g32", "w8_sym_channel", "w4_asym_channel"):
        layer = layer_for(SPECS[spec_name], n, k, torch.bfloat16)
        w = ops.dequantize(layer, torch.bfloat16).double()
        for m in (1, 3, 16, 100, 300):
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            ref = x.double() @ w.T
            for path in ops.PATHS:
                y = run_poisoned(x, layer, ops.default_config(m, layer, path))
                check(y, ref, torch.bfloat16, seed, f"{spec_name} K={k} N={n} M={m} {path}")


@gpu
@needs_cuda
def test_gpu_launch_options() -> None:
    """The options the defaults do not take at these sizes: TMA loads, unrolled K steps, pre-scaling
    at small M, mma.sync (two warps), a split whose last slices are empty (24 K tiles over 16), the
    GEMM orientation, and one pipelined step per operand, with and without a split."""
    seed = fresh_seed()
    options = {"tma": ops.Config("mma", split_k=4, tma=True), "step2": ops.Config("mma", split_k=2, step=2),
               "pre": ops.Config("mma", split_k=2, pre_scale=True),
               "mma.sync": ops.Config("mma", num_warps=2, split_k=4),
               "uneven": ops.Config("mma", split_k=16, num_stages=4),
               "tma_m64": ops.Config("mma", block_m=64, tma=True),
               "gemm": ops.Config("mma", block_m=128, block_n=128, num_warps=8, num_stages=2, swap=False),
               "gemm_split": ops.Config("mma", block_m=64, block_n=64, split_k=4, swap=False),
               "flat": ops.Config("mma", block_m=128, block_n=64, flat=True),
               "flat_split": ops.Config("mma", block_m=64, block_n=128, num_warps=8, split_k=3, flat=True, tma=True),
               "hold": ops.Config("mma", block_m=128, block_n=128, num_warps=8, num_stages=3, flat=True, hold=True),
               "hold_split": ops.Config("mma", block_m=64, block_n=64, split_k=3, flat=True, hold=True),
               "nacc4": ops.Config("mma", block_m=64, block_n=128, num_warps=8, pre_scale=True, nacc=4),
               "nacc2_split": ops.Config("mma", block_m=128, block_n=128, num_warps=8, num_stages=2, split_k=3,
                                         pre_scale=True, nacc=2),
               "chunked_serial": ops.Config("chunked", block_n=32, chunk_rows=640, overlap=False),
               "chunked_overlap": ops.Config("chunked", block_n=64, num_warps=8, chunk_rows=640)}
    for spec_name in ("w4_sym_g128", "w4_asym_g32", "w8_sym_g128", "w8_sym_channel"):
        layer = layer_for(SPECS[spec_name], 4096 + 40, 6144, torch.bfloat16)  # N past the last full tile
        w = ops.dequantize(layer, torch.bfloat16).double()
        for m in (1, 16, 40):
            x = torch.randn(m, 6144, dtype=torch.bfloat16, device="cuda")
            for name, cfg in options.items():
                check(run_poisoned(x, layer, cfg), x.double() @ w.T, torch.bfloat16, seed, f"{spec_name} M={m} {name}")


@gpu
@needs_cuda
def test_gpu_fp16_activations_and_fp8() -> None:
    seed = fresh_seed()
    layer = layer_for(SPECS["w4_asym_g32"], 4096, 4096, torch.float16)
    for m in (1, 8, 64, 2048):
        x = torch.randn(m, 4096, dtype=torch.float16, device="cuda")
        check(run_poisoned(x, layer, None), reference_matmul(x, layer), torch.float16, seed, f"fp16 M={m}")
    w = torch.randn(4096, 4096, dtype=torch.bfloat16, device="cuda") * 0.02
    f8 = Fp8Linear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("FP8_DYNAMIC")))
    for m in (1, 16, 512):
        x = torch.randn(m, 4096, dtype=torch.bfloat16, device="cuda")
        check(fp8_linear(x, f8), fp8_reference(x, f8), torch.bfloat16, seed, f"fp8 M={m}")


@gpu
@needs_cuda
def test_gpu_results_do_not_depend_on_the_run() -> None:
    """A race shows up as outputs that move between identical launches (the split-K reduction sums
    the partials in a fixed order, so the results must be bit-identical)."""
    layer = layer_for(SPECS["w4_sym_g128"], 8192, 8192, torch.bfloat16)
    x = torch.randn(1, 8192, dtype=torch.bfloat16, device="cuda")
    first = run_poisoned(x, layer, None).clone()
    for _ in range(3):
        assert torch.equal(run_poisoned(x, layer, None), first)


@gpu
@needs_cuda
def test_gpu_chunked_path_inside_a_cuda_graph() -> None:
    """The chunked path forks a side stream and reuses two buffers: captured in one graph, two calls
    on different layers (the second reusing the buffers the first filled) must both come out right."""
    seed = fresh_seed()
    layers = [layer_for(SPECS[name], 3000, 4096, torch.bfloat16) for name in ("w4_sym_g128", "w8_sym_channel")]
    cfg = ops.Config("chunked", chunk_rows=512)  # six slices, the last one short
    xs = [torch.randn(300, 4096, dtype=torch.bfloat16, device="cuda") for _ in layers]
    outs = [torch.full((300, 3000), float("nan"), dtype=torch.bfloat16, device="cuda") for _ in layers]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compile outside the capture
        for x, layer, out in zip(xs, layers, outs):
            ops.matmul(x, layer, cfg, out=out)
    torch.cuda.current_stream().wait_stream(stream)
    for out in outs:
        out.fill_(float("nan"))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for x, layer, out in zip(xs, layers, outs):
            ops.matmul(x, layer, cfg, out=out)
    graph.replay()
    torch.cuda.synchronize()
    for x, layer, out in zip(xs, layers, outs):
        check(out, x.double() @ ops.dequantize(layer, torch.bfloat16).double().T, torch.bfloat16, seed, "graph")


@gpu
@needs_cuda
def test_gpu_live_measurement_for_the_lesson() -> None:
    from quantlab.kernels import live

    timing = live.measure_gpu(1, 4096, 4096)
    assert timing.device.startswith("cuda: ") and set(timing.ms) == {"bf16", "w4a16"}
    assert all(0 < t < 10 for t in timing.ms.values())  # ms per call: a 4096² matvec takes microseconds
