"""The Hopper wgmma W4A16 kernel (quantlab/kernels/w4a16_wgmma.cu).

Without a GPU: the word order the kernel reads is checked against the lane arithmetic written in
the kernel, and every configuration is compiled by NVRTC for sm_90a (no GPU needed) and its machine
code read: register-operand HGMMA, one wgmma left in flight while the next weights are dequantized,
no spills. On an H100/H200 (marked gpu): results against a float64 reference at model-like shapes,
partial tiles, split K, zero points, per-channel scales and fp16."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import quantlab as ql
from quantlab.core import packing
from quantlab.core.errors import QuantlabError
from quantlab.kernels import cuda_ops
from quantlab.kernels.layout import PackedLinear, interleave, reference_matmul

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
gpu = pytest.mark.gpu
needs_hopper = pytest.mark.skipif(not HOPPER, reason="needs a Hopper GPU (compute capability 9.0)")


def fresh_seed() -> int:
    seed = random.SystemRandom().randrange(2**31)
    torch.manual_seed(seed)
    return seed


def test_cuda_word_order_gives_each_lane_its_fragment_inputs() -> None:
    """Lane (gid, tig)'s k16 step j of slab s, as the kernel reads it: vector (j // 2)·4 + tig of the
    tile, word (j % 2)·2 + b, field s of both halves, must hold inputs s·64 + 16j + 8b + 2·tig + h."""
    fresh_seed()
    n, k = 3, 512
    q = torch.randint(-8, 8, (n, k), dtype=torch.int8)
    words = cuda_ops.cuda_words(interleave(packing.pack(q, 4), 4, k))
    u = q.to(torch.int32) + 8
    vectors = words.view(n, k // 256, 8, 4)  # [row, tile, uint4, word]
    for t in range(k // 256):
        for tig in range(4):
            for j in range(4):
                for b in range(2):
                    word = vectors[:, t, (j // 2) * 4 + tig, (j % 2) * 2 + b].to(torch.int64) & 0xFFFFFFFF
                    for s in range(4):
                        for h in range(2):
                            field = (word >> (16 * h + 4 * s)) & 0xF
                            col = t * 256 + s * 64 + 16 * j + 8 * b + 2 * tig + h
                            assert torch.equal(field.to(torch.int32), u[:, col]), (t, tig, j, b, s, h)


def _nvrtc_or_skip() -> None:
    pytest.importorskip("cuda.bindings.nvrtc")
    from cuda.bindings import nvrtc

    try:
        ok = nvrtc.nvrtcVersion()[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS
    except Exception as err:  # no libnvrtc on this machine
        pytest.skip(f"NVRTC not loadable: {err}")
    if not ok:
        pytest.skip("NVRTC not loadable")


def _cuobjdump() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(tool) if tool.exists() else shutil.which("cuobjdump")


COMPILED = [(cuda_ops.CudaConfig(block_m=bm, warpgroups=wg, weight_tiles=wt, depth=d, tma=tma), group, asym, half)
            for bm, wg, wt, d, tma in [(16, 2, 4, 3, True), (64, 2, 3, 3, False), (128, 2, 2, 1, False),
                                       (256, 2, 2, 3, True), (256, 2, 2, 1, False), (128, 1, 3, 3, True)]
            for group, asym, half in [(128, False, False), (0, True, True)]]


def _config_id(v) -> str:
    if isinstance(v, cuda_ops.CudaConfig):
        return f"bm{v.block_m}wg{v.warpgroups}wt{v.weight_tiles}d{v.depth}{'tma' if v.tma else 'cpasync'}"
    return str(v)


@pytest.mark.parametrize("cfg,group,asym,half", COMPILED, ids=_config_id)
def test_every_configuration_compiles_to_async_register_operand_wgmma(cfg, group, asym, half, tmp_path) -> None:
    _nvrtc_or_skip()
    cubin, log = cuda_ops.compile_cubin(cfg, group, asym, half, verbose=True)
    assert re.search(r"\b0 bytes spill stores", log), log
    assert "C7515" not in log and "serialized" not in log, log  # ptxas would serialize the wgmmas
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump to read the machine code")
    path = tmp_path / "k.cubin"
    path.write_bytes(cubin)
    sass = subprocess.run([tool, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    dtype = r"\.F32 " if half else r"\.F32\.BF16 "  # cuobjdump names fp16 inputs by omission
    # A from registers (R…), B from a shared-memory descriptor, 4 k16 steps per 64-input slab
    mmas = re.findall(rf"HGMMA\.64x{cfg.block_m}x16{dtype}R\d+, R\d+, gdesc", sass)
    assert len(mmas) >= 4, sass[:2000]
    # each wait lets the wgmma just issued run on while the next weights are dequantized
    assert f"WARPGROUP.DEPBAR.LE gsb0, {cfg.depth:#x}" in sass
    if cfg.tma:
        assert "UTMALDG.2D" in sass  # x through the copy engine
    else:
        assert "LDGSTS" in sass and "UTMALDG" not in sass


def test_supports_refuses_what_the_kernel_does_not_compute() -> None:
    x = torch.zeros(2, 256, dtype=torch.bfloat16)
    w = torch.randn(64, 256) * 0.05
    w8 = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W8A16")), torch.bfloat16)
    g32 = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec(num_bits=4, strategy="group", group_size=32)),
                                      torch.bfloat16)
    assert not cuda_ops.supports(x, w8) and not cuda_ops.supports(x, g32)
    w4 = PackedLinear.from_quantized(ql.quantize(w, ql.QuantSpec.preset("W4A16")), torch.bfloat16)
    assert not cuda_ops.supports(x, w4)  # a CPU tensor: no Hopper card
    with pytest.raises(QuantlabError, match="wgmma kernel takes"):
        cuda_ops.matmul(x, w4)


SPECS = {
    "sym_g128": ql.QuantSpec.preset("W4A16"),
    "asym_g64": ql.QuantSpec(num_bits=4, symmetric=False, strategy="group", group_size=64),
    "asym_channel": ql.QuantSpec(num_bits=4, symmetric=False, strategy="channel"),
    "sym_g256": ql.QuantSpec(num_bits=4, strategy="group", group_size=256),
}


def _layer(spec: ql.QuantSpec, n: int, k: int, dtype: torch.dtype) -> PackedLinear:
    w = torch.randn(n, k, dtype=dtype, device="cuda") * 0.05
    return PackedLinear.from_quantized(ql.quantize(w, spec))


def _check(x, layer, cfg, seed, what) -> None:
    out = torch.full((x.shape[0], layer.out_features), float("nan"), dtype=x.dtype, device=x.device)
    y = cuda_ops.matmul(x, layer, cfg, out=out)
    ref = reference_matmul(x, layer)
    assert torch.isfinite(y).all(), f"{what}: unwritten (NaN) outputs, seed {seed}"
    err = ((y.double().cpu() - ref).norm() / ref.norm()).item()
    tol = 2e-3 if x.dtype == torch.float16 else 1e-2
    assert err < tol, f"{what}: relative error {err:.2e}, seed {seed}"


@gpu
@needs_hopper
@pytest.mark.parametrize("spec_name,dtype", [("sym_g128", torch.bfloat16), ("asym_g64", torch.float16),
                                             ("asym_channel", torch.bfloat16), ("sym_g256", torch.float16)])
def test_partial_tiles_match_float64(spec_name: str, dtype: torch.dtype) -> None:
    """N not a multiple of 128, K not a multiple of 256 (nor 64), M below, at and past each token tile."""
    seed = fresh_seed()
    k = {"sym_g128": 1152, "asym_g64": 1088, "asym_channel": 1000, "sym_g256": 1280}[spec_name]
    layer = _layer(SPECS[spec_name], 200, k, dtype)
    for m in (1, 5, 16, 33, 64, 100, 128, 200, 256, 300):
        x = torch.randn(m, k, dtype=dtype, device="cuda")
        _check(x, layer, None, seed, f"{spec_name} M={m}")


@gpu
@needs_hopper
def test_every_tile_shape_and_split_matches_float64() -> None:
    seed = fresh_seed()
    layer = _layer(SPECS["sym_g128"], 1024, 4096, torch.bfloat16)
    for bm in cuda_ops.TOKENS:
        for wg, wt, st, sk, d, tma in [(2, 2, 4, 1, 3, True), (2, 3, 3, 2, 3, False), (1, 2, 6, 4, 3, True),
                                        (2, 4, 4, 16, 1, False)]:
            cfg = cuda_ops.CudaConfig(block_m=bm, warpgroups=wg, stages=st, weight_tiles=wt, split_k=sk, depth=d,
                                      tma=tma)
            for m in (bm - 3, bm + 5):
                x = torch.randn(max(m, 1), 4096, dtype=torch.bfloat16, device="cuda")
                _check(x, layer, cfg, seed, f"{cfg} M={m}")
    counters = cuda_ops._workspace(torch.device("cuda"), "counters", 1, torch.int32)
    assert not counters.any()  # the last program of each tile reset its counter


@gpu
@needs_hopper
def test_equals_dequantize_then_matmul_on_model_shapes() -> None:
    """At 4096 x 14336 the kernel's sum order differs from cuBLAS's, nothing else: the weights are
    the same bf16 values, so the outputs agree to accumulation rounding."""
    seed = fresh_seed()
    layer = _layer(SPECS["sym_g128"], 14336, 4096, torch.bfloat16)
    from quantlab.kernels.layout import dequantize_packed

    w = dequantize_packed(layer)
    for m in (16, 128, 256, 1024):
        x = torch.randn(m, 4096, dtype=torch.bfloat16, device="cuda")
        y = cuda_ops.matmul(x, layer).float()
        ref = (x.float() @ w.float().T)
        err = ((y - ref).norm() / ref.norm()).item()
        assert err < 5e-3, f"M={m}: {err:.2e} against fp32 x @ dequantized W, seed {seed}"


def test_dispatch_takes_the_wgmma_kernel_where_v10_measured_it_faster(monkeypatch) -> None:
    """With the kernel available, `triton_ops.launch_config` picks it only in the batch range where
    it won on the H200 (M = 129-256 everywhere, 65-128 with >= 8192 outputs), with the tuned launch."""
    pytest.importorskip("triton")
    from quantlab.kernels import triton_ops as ops

    monkeypatch.setattr(cuda_ops, "supports", lambda x, layer: True)
    monkeypatch.setattr(cuda_ops, "multiprocessors", lambda device: 132)
    spec = ql.QuantSpec.preset("W4A16")
    wide = PackedLinear.from_quantized(ql.quantize(torch.randn(8192, 256) * 0.05, spec), torch.bfloat16)
    narrow = PackedLinear.from_quantized(ql.quantize(torch.randn(4096, 256) * 0.05, spec), torch.bfloat16)

    def path(m: int, layer: PackedLinear) -> str:
        return ops.path_name(ops.launch_config(torch.zeros(m, 256, dtype=torch.bfloat16), layer))

    assert [path(m, wide) for m in (64, 65, 128, 256, 257, 1024)] == ["mma", "wgmma", "wgmma", "wgmma", "dequant",
                                                                      "dequant"]
    assert [path(m, narrow) for m in (128, 129, 256, 257)] == ["mma", "wgmma", "wgmma", "dequant"]
    # 8192 outputs at M = 256: 128 one-warpgroup row tiles, under 1.5 programs per SM, so K is split
    cfg = ops.launch_config(torch.zeros(256, 256, dtype=torch.bfloat16), wide)
    assert (cfg.block_m, cfg.warpgroups, cfg.stages, cfg.split_k) == (256, 1, 3, 2)
    cfg = ops.launch_config(torch.zeros(200, 256, dtype=torch.bfloat16), narrow)
    assert (cfg.block_m, cfg.warpgroups, cfg.split_k) == (128, 2, 2)
    with pytest.raises(QuantlabError, match="depth=3"):
        cuda_ops.CudaConfig(tma=True, depth=1)
