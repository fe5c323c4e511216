"""Triton dequant-matmul kernels for `PackedLinear` weights: y = x @ W.T with W dequantized on the fly.

Three paths, chosen by the number of rows M of x (`choose_path`):
- "gemv": CUDA cores, one program per block of output features walking all of K. At M <= a few
  rows the work is reading the packed weight once, so the kernel is a streaming reduction.
- "mma": tensor cores (`tl.dot`), the weight tile dequantized in registers then fed to the matrix
  unit; optionally split along K (fp32 atomics) so that small M still fills every multiprocessor.
- "dequant": at large M the problem is compute-bound and cuBLAS' bf16 GEMM is the best matrix
  engine available, so the weight is expanded once per call into a bf16 buffer and handed to it.

Every kernel unpacks words with the same `_unpack` (see layout.py for the float "magic" bias) and
keeps the K order of the checkpoint, so activations are read contiguously.

The module needs Triton. Set TRITON_INTERPRET=1 before importing it to run the kernels on the CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl

from quantlab.errors import QuantlabError
from quantlab.kernels.layout import PackedLinear

Path = Literal["gemv", "mma", "dequant"]
# Triton's CPU interpreter multiplies bf16 dot operands as raw 16-bit integers (seen with 3.9), so
# there the tensor-core kernel feeds tl.dot float32; compiled kernels always use the 16-bit operands.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
PATHS: tuple[Path, ...] = ("gemv", "mma", "dequant")


@triton.jit
def _field(words, J: tl.constexpr, BITS: tl.constexpr):
    """Field J of each word OR-ed into the mantissa of 2^23: exactly the float32 2^23 + u, with no
    integer-to-float conversion (a quarter-rate instruction on Hopper)."""
    return (((words >> (J * BITS)) & ((1 << BITS) - 1)) | 0x4B000000).to(tl.float32, bitcast=True)


@triton.jit
def _unpack_fields(words, BITS: tl.constexpr):
    """int32 words [R, W] -> float32 2^23 + u [R, W·32/BITS] in checkpoint order.

    Field j of a word is element 8w + j (4-bit). `tl.join` appends a trailing axis of 2, so joining
    fields j and j+4, then pairs 2 apart, then 1 apart, makes the last three axes (a, b, c) hold
    field 4a + 2b + c, and the reshape lays them out as 8w + j.
    """
    w = words.to(tl.uint32, bitcast=True)  # logical shifts: no sign extension to undo
    if BITS == 4:
        fields = tl.join(tl.join(tl.join(_field(w, 0, 4), _field(w, 4, 4)), tl.join(_field(w, 2, 4), _field(w, 6, 4))),
                         tl.join(tl.join(_field(w, 1, 4), _field(w, 5, 4)), tl.join(_field(w, 3, 4), _field(w, 7, 4))))
        values = tl.reshape(fields, [words.shape[0], words.shape[1] * 8])
    else:
        fields = tl.join(tl.join(_field(w, 0, 8), _field(w, 2, 8)), tl.join(_field(w, 1, 8), _field(w, 3, 8)))
        values = tl.reshape(fields, [words.shape[0], words.shape[1] * 4])
    return values


@triton.jit
def _unpack(words, bias, BITS: tl.constexpr):
    """int32 words [R, W] -> float32 (q - zp) [R, W·32/BITS], bias per row (see layout.py)."""
    return _unpack_fields(words, BITS) - bias[:, None]


@triton.jit
def _load_words(ptrs, n_ok, kw, KW, EVEN: tl.constexpr):
    """A [BLOCK_N, BLOCK_KW] tile of packed words at `ptrs`; EVEN (the tiles divide N and K) drops
    the masks, which cost an integer compare and select per element."""
    if EVEN:
        words = tl.load(ptrs)
    else:
        words = tl.load(ptrs, mask=n_ok[:, None] & (kw < KW)[None, :], other=0)
    return words


@triton.jit
def _bias(b_ptr, offs_n, n_ok, NG, g, BITS: tl.constexpr, ASYM: tl.constexpr):
    """2^23 + 2^(b-1) + zero point per row; symmetric weights have no zero point to read."""
    if ASYM:
        return tl.load(b_ptr + offs_n * NG + g, mask=n_ok, other=0.0)
    return tl.full(offs_n.shape, 8388608.0 + (1 << (BITS - 1)), tl.float32)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, KW, NG, GROUP, stride_xm, stride_ym,
                 BITS: tl.constexpr, ASYM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_KW: tl.constexpr):
    # A K tile never straddles two groups (BLOCK_K divides GROUP), so its scale is one per row.
    # Products stay in the layout the unpacked tile already has (each thread reduces its own run of
    # K first): broadcasting into a 3-D [M, N, K] product instead made Triton shuffle the whole
    # dequantized tile through shared memory every iteration.
    BLOCK_K: tl.constexpr = BLOCK_KW * (32 // BITS)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    first_m = tl.program_id(1) * BLOCK_M
    offs_kw = tl.arange(0, BLOCK_KW)
    offs_k = tl.arange(0, BLOCK_K)
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for kw0 in range(0, KW, BLOCK_KW):
        kw = kw0 + offs_kw
        words = tl.load(w_ptr + offs_n[:, None] * KW + kw[None, :], mask=n_ok[:, None] & (kw < KW)[None, :], other=0)
        g = (kw0 * (32 // BITS)) // GROUP
        scale = tl.load(s_ptr + offs_n * NG + g, mask=n_ok, other=0.0).to(tl.float32)
        bias = _bias(b_ptr, offs_n, n_ok, NG, g, BITS, ASYM)
        w = _unpack(words, bias, BITS)
        k = kw0 * (32 // BITS) + offs_k
        for mi in tl.static_range(BLOCK_M):
            # Padding codes past K are stored as 0, which is not a zero weight: x is masked there.
            x = tl.load(x_ptr + (first_m + mi) * stride_xm + k, mask=(k < K) & (k * 0 + first_m + mi < M), other=0.0)
            part = tl.sum(w * x.to(tl.float32)[None, :], axis=1) * scale
            acc = tl.where(tl.arange(0, BLOCK_M)[:, None] == mi, acc + part[None, :], acc)
    offs_m = first_m + tl.arange(0, BLOCK_M)
    y = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=(offs_m < M)[:, None] & n_ok[None, :])


@triton.jit
def _dequant_tile(w_ptr, s_ptr, b_ptr, offs_n, n_ok, kw, KW, NG, GROUP, kw0, BITS: tl.constexpr, ASYM: tl.constexpr,
                  OUT_DTYPE: tl.constexpr, EVEN: tl.constexpr):
    words = _load_words(w_ptr + offs_n[:, None] * KW + kw[None, :], n_ok, kw, KW, EVEN)
    g = (kw0 * (32 // BITS)) // GROUP
    scale = tl.load(s_ptr + offs_n * NG + g, mask=n_ok, other=0.0).to(tl.float32)
    bias = _bias(b_ptr, offs_n, n_ok, NG, g, BITS, ASYM)
    return (_unpack(words, bias, BITS) * scale[:, None]).to(OUT_DTYPE)


@triton.jit
def _mma_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, KW, NG, GROUP, stride_xm, stride_ym,
                BITS: tl.constexpr, ASYM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_KW: tl.constexpr, SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr, DOT_F32: tl.constexpr,
                EVEN: tl.constexpr):
    BLOCK_K: tl.constexpr = BLOCK_KW * (32 // BITS)
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    # Neighbouring programs share weight columns, so a band of GROUP_M row tiles reuses them from L2.
    band = pid // (GROUP_M * num_n)
    first_m = band * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % rows
    pid_n = (pid % (GROUP_M * num_n)) // rows
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_kw = tl.arange(0, BLOCK_KW)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    x_base = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]  # the loop adds only the K offset
    for kw0 in range(tl.program_id(1) * BLOCK_KW, KW, BLOCK_KW * SPLIT_K):
        k = kw0 * (32 // BITS) + offs_k
        if EVEN:
            x = tl.load(x_base + kw0 * (32 // BITS), mask=m_ok[:, None], other=0.0)
        else:
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & (k < K)[None, :],
                        other=0.0)
        w = _dequant_tile(w_ptr, s_ptr, b_ptr, offs_n, n_ok, kw0 + offs_kw, KW, NG, GROUP, kw0, BITS, ASYM,
                          x_ptr.dtype.element_ty, EVEN)
        if DOT_F32:
            acc = tl.dot(x.to(tl.float32), tl.trans(w).to(tl.float32), acc)
        else:
            acc = tl.dot(x, tl.trans(w), acc)
    y = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
    if SPLIT_K == 1:
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    else:
        tl.atomic_add(y, acc, mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _dequant_kernel(w_ptr, s_ptr, b_ptr, out_ptr, N, K, KW, NG, GROUP,
                    BITS: tl.constexpr, ASYM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr,
                    EVEN: tl.constexpr):
    BLOCK_K: tl.constexpr = BLOCK_KW * (32 // BITS)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    kw0 = tl.program_id(1) * BLOCK_KW
    n_ok = offs_n < N
    w = _dequant_tile(w_ptr, s_ptr, b_ptr, offs_n, n_ok, kw0 + tl.arange(0, BLOCK_KW), KW, NG, GROUP, kw0, BITS, ASYM,
                      out_ptr.dtype.element_ty, EVEN)
    k = kw0 * (32 // BITS) + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + offs_n[:, None] * K + k[None, :], w, mask=n_ok[:, None] & (k < K)[None, :])


@dataclass(frozen=True)
class Config:
    """Launch parameters of one path; `block_k` counts codes (a multiple of the codes per word)."""

    path: Path
    block_m: int = 1
    block_n: int = 64
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    group_m: int = 8


# Crossover measured on an H200 (bench/NOTES.md): the fused tensor-core kernel up to MMA_MAX_M
# rows (0.60x bf16 at M=64 against 0.42x for dequantize-then-cuBLAS), dequantize-then-cuBLAS from
# M=128 on (0.42x against 0.33x). The GEMV path stays selectable for comparison: it lost to the
# split-K tensor-core kernel at every M.
MMA_MAX_M = 64


def choose_path(m: int) -> Path:
    return "mma" if m <= MMA_MAX_M else "dequant"


def _fit_block_k(block_k: int, layer: PackedLinear) -> int:
    """K tile (a power of two, >= one word) that never straddles two groups, so a tile has one
    scale per row: the largest power of two <= block_k dividing the group size. Per-channel
    weights have a single group, and any tile fits."""
    per = layer.codes_per_word
    if layer.groups == 1:
        return max(per, block_k)
    bk = block_k
    while bk > per and layer.group_size % bk:
        bk //= 2
    return bk


def default_config(m: int, layer: PackedLinear, path: Path | None = None) -> Config:
    path = path or choose_path(m)
    n = layer.out_features
    if path == "gemv":
        # The per-row loop is unrolled, so rows per program stay few; more rows mean more programs.
        return Config("gemv", block_m=min(4, triton.next_power_of_2(max(m, 1))), block_n=32 if n >= 8192 else 16,
                      block_k=_fit_block_k(256, layer), num_warps=4, num_stages=4)
    if path == "mma" and m <= 64:
        # Tile shape from the v1 sweep on H200 (bm16 bn64 bk128 won at M=1 and 16); split K until
        # about four programs per multiprocessor are in flight.
        tiles = triton.cdiv(n, 64)
        split = 1
        while split < 8 and tiles * split * 2 <= 4 * 132:
            split *= 2
        return Config("mma", block_m=16 if m <= 16 else 32 if m <= 32 else 64, block_n=64,
                      block_k=_fit_block_k(128, layer), split_k=split, num_warps=4, num_stages=4)
    if path == "mma":
        return Config("mma", block_m=128, block_n=128, block_k=_fit_block_k(64, layer), num_warps=8, num_stages=3)
    return Config("dequant", block_n=32, block_k=_fit_block_k(256, layer), num_warps=4, num_stages=1)


def _check(x: torch.Tensor, layer: PackedLinear) -> None:
    if x.shape[-1] != layer.in_features:
        raise QuantlabError(f"x has {x.shape[-1]} features but the layer takes {layer.in_features}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise QuantlabError(f"activations must be float16 or bfloat16, not {x.dtype}")
    if x.device != layer.device:
        raise QuantlabError(f"x is on {x.device} but the weight is on {layer.device}")


def dequantize(layer: PackedLinear, dtype: torch.dtype, config: Config | None = None) -> torch.Tensor:
    """The dense [N, K] weight in `dtype`, written by one Triton launch."""
    cfg = config or default_config(0, layer, "dequant")
    n, k = layer.out_features, layer.in_features
    out = torch.empty(n, k, dtype=dtype, device=layer.device)
    bkw = _fit_block_k(cfg.block_k, layer) // layer.codes_per_word
    grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(layer.words.shape[1], bkw))
    even = n % cfg.block_n == 0 and layer.words.shape[1] % bkw == 0
    _dequant_kernel[grid](layer.words, layer.scale, layer.bias, out, n, k, layer.words.shape[1], layer.groups,
                          layer.group_size, BITS=layer.num_bits, ASYM=not layer.symmetric, BLOCK_N=cfg.block_n, BLOCK_KW=bkw,
                          EVEN=even,
                          num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out


def matmul(x: torch.Tensor, layer: PackedLinear, config: Config | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T for x [..., K] in fp16/bf16; the path and tiles follow `choose_path` unless given."""
    _check(x, layer)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, layer.in_features)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, n, k = x2.shape[0], layer.out_features, layer.in_features
    cfg = config or default_config(m, layer)
    y = out if out is not None else torch.empty(*lead, n, dtype=x.dtype, device=x.device)
    y2 = y.view(-1, n)
    if m == 0:
        return y
    kw_total = layer.words.shape[1]
    bkw = _fit_block_k(cfg.block_k, layer) // layer.codes_per_word
    common = (layer.words, layer.scale, layer.bias)
    if cfg.path == "dequant":
        y2.copy_(torch.nn.functional.linear(x2, dequantize(layer, x.dtype, cfg)))
    elif cfg.path == "gemv":
        grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m))
        _gemv_kernel[grid](x2, *common, y2, m, n, k, kw_total, layer.groups, layer.group_size, x2.stride(0),
                           y2.stride(0), BITS=layer.num_bits, ASYM=not layer.symmetric, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                           BLOCK_KW=bkw, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        target = y2 if cfg.split_k == 1 else torch.zeros(m, n, dtype=torch.float32, device=x.device)
        grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), cfg.split_k)
        _mma_kernel[grid](x2, *common, target, m, n, k, kw_total, layer.groups, layer.group_size, x2.stride(0),
                          target.stride(0), BITS=layer.num_bits, ASYM=not layer.symmetric, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                          BLOCK_KW=bkw, SPLIT_K=cfg.split_k, GROUP_M=cfg.group_m, DOT_F32=_INTERPRETED,
                          EVEN=n % cfg.block_n == 0 and kw_total % bkw == 0, num_warps=cfg.num_warps,
                          num_stages=cfg.num_stages)
        if cfg.split_k > 1:
            y2.copy_(target)
    return y
