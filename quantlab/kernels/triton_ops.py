"""Triton dequant-matmul kernels for `PackedLinear` weights: y = x @ W.T with W dequantized on the fly.

Paths, chosen by the number of rows M of x and the layer's inputs K (`choose_path`):
- "mma" (M <= 256, or 128 when K <= 4096): tensor cores (`tl.dot`) with the roles swapped,
  y.T = W @ x.T. The dequantized weight tile is the dot's left operand, built in registers, and
  the rows of x the right one (a tile of 16 columns up to M = 16, 64 above), so at M = 1 the
  kernel is a weight stream like a GEMV whose multiply-adds run on the matrix unit. Split along K
  when the output has too few tiles to fill the card. Two launch options measured and lost
  (bench/NOTES.md, v7): the usual GEMM orientation (`Config.swap=False`, the weight through
  shared memory) and one pipelined step per operand (`Config.flat`, more programs per
  multiprocessor). Two more, aimed at overlapping the dequantization with the asynchronous wgmma,
  measured in v9 and lost or tied: FLAT with each weight tile read once and held in registers
  (`Config.hold`; ptxas serializes its register-A wgmmas, warning C7515) and the S operands of a
  tile rotating over 2 or 4 accumulators (`Config.nacc`; ties).
- "dequant" (above): the problem is compute-bound and cuBLAS' bf16 GEMM is the best matrix engine
  available, so the weight is expanded once per call into a bf16 buffer and handed to it. That
  costs a bf16 write and re-read of the whole weight through device memory.
- "chunked": the same, a slice of output rows at a time, each slice small enough to stay in the
  L2 cache between the dequantization that writes it and the cuBLAS call that reads it; slice
  i + 1 is dequantized on a second stream while cuBLAS multiplies slice i into its columns of y.
  Measured from M = 64 to 4096, it tied or lost everywhere (bench/NOTES.md, v8): on the H200 a write
  into L2 is no faster than one into device memory (even a plain fill of an L2-sized buffer), and
  the sliced GEMMs fill less of the card. Selectable, not chosen.
- "gemv": the CUDA-core version of the weight stream, one row of x per program. It lost to "mma"
  at every shape measured, and stays selectable so that the lesson can show by how much.
- "wgmma" (`launch_config`, on a Hopper card with NVRTC): not Triton but the CUDA kernel of
  `cuda_ops`, where Triton cannot express what wins there (v10): the dequantization of the next
  k16 step overlaps the asynchronous wgmma of the current one. Chosen from M = 129 to 256, and from
  M = 65 for layers of 8192 outputs or more (`cuda_ops.preferred`).

All read the interleaved layout (layout.py): a 256-input tile, read as 16-bit halves, is S operands
of [rows, 2W] whose element e is input s·2W + e. Codes become numbers through float "magic": OR-ing
a code into the low mantissa bits of a power of two gives exactly that power plus the code, and
subtracting the per-row bias leaves q - zp exactly, with no integer-to-float conversion. In the
tensor-core kernel one shift, one LOP3 and one packed subtract make two 16-bit weights (Marlin's
trick); scales then multiply per-group partial sums rather than single weights.

A split along K is reduced inside the same launch: each program writes its partial tile to a
workspace and bumps a per-tile counter; the last to arrive sums the partials, writes y and resets
the counter, so one call is one launch and needs no zero-filled buffer. Calls that share a
workspace must not run concurrently on different streams (the app measures one call at a time).

The module needs Triton. Set TRITON_INTERPRET=1 before importing it to run the kernels on the CPU.
"""
from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from quantlab.core.errors import QuantlabError
from quantlab.kernels import cuda_ops
from quantlab.kernels.layout import MAGIC, TILE_K, PackedLinear

Path = Literal["gemv", "mma", "dequant", "chunked"]
# Triton's CPU interpreter does bf16 arithmetic on the raw 16-bit integers (seen with 3.9) and runs no
# PTX, so there the tensor-core kernel makes float32 operands; compiled kernels use 16-bit ones.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
PATHS: tuple[Path, ...] = ("gemv", "mma", "dequant", "chunked")
_TILE_K = tl.constexpr(TILE_K)
_MAGIC = tl.constexpr(MAGIC)
# MAGIC's float32 bit pattern: a field OR-ed into its low mantissa bits reads back as MAGIC + field
_MAGIC_BITS = tl.constexpr(struct.unpack("<I", struct.pack("<f", MAGIC))[0])


# One instruction pair per two weights: shift the word so field s of each 16-bit half sits at bit 0,
# LOP3 keeps those bits and ORs in the magic of both halves, and a packed subtract removes magic +
# 2^(b-1) + zp. $0 out (two 16-bit floats), $1 the word (two int16 halves), $2 the packed bias,
# $3/$5/$7 shift, mask and magic (each arrives twice with pack=2; the copies $4/$6/$8 are unused).
_PAIR_ASM_BF16 = tl.constexpr("{ .reg .b32 t; shr.u32 t, $1, $3; lop3.b32 t, t, $5, $7, 0xea; sub.bf16x2 $0, t, $2; }")
_PAIR_ASM_F16 = tl.constexpr("{ .reg .b32 t; shr.u32 t, $1, $3; lop3.b32 t, t, $5, $7, 0xea; sub.f16x2 $0, t, $2; }")


@triton.jit
def _operand_f32(halves, bias32, S, BITS: tl.constexpr):
    """Operand S of a tile as exact float32 q - zp, [rows, 2W]; `bias32` is MAGIC + 2^(b-1) + zp (`_bias32`).
    OR-ing the code into the mantissa of MAGIC (2^23) gives exactly MAGIC + u, with no int-to-float convert."""
    u = (halves.to(tl.uint16, bitcast=True).to(tl.uint32) >> (S * BITS)) & ((1 << BITS) - 1)
    return (u | _MAGIC_BITS).to(tl.float32, bitcast=True) - bias32


@triton.jit
def _operand(halves, bias32, S, BITS: tl.constexpr, DTYPE: tl.constexpr, PAIRS: tl.constexpr):
    """Operand S as exact q - zp in DTYPE. PAIRS: two weights per instruction through 16-bit magic
    (fp16 1024.0 has room for 8-bit codes, bf16 128.0 for 4-bit ones); else through float32."""
    if PAIRS:
        if DTYPE == tl.float16:
            magic_value: tl.constexpr = 1024.0
            magic: tl.constexpr = 0x64006400
            asm: tl.constexpr = _PAIR_ASM_F16
        else:
            magic_value: tl.constexpr = 128.0
            magic: tl.constexpr = 0x43004300
            asm: tl.constexpr = _PAIR_ASM_BF16
        bias16 = tl.broadcast_to((bias32 - (_MAGIC - magic_value)).to(DTYPE), halves.shape)
        shift = tl.zeros(halves.shape, tl.int32) + S * BITS  # S may be a run-time index (FLAT)
        mask = tl.full(halves.shape, ((1 << BITS) - 1) * 0x10001, tl.int32)
        magics = tl.full(halves.shape, magic, tl.int32)
        return tl.inline_asm_elementwise(asm, "=r,r,r,r,r,r,r,r,r", [halves, bias16, shift, mask, magics],
                                         dtype=bias16.dtype, is_pure=True, pack=2)
    return _operand_f32(halves, bias32, S, BITS).to(DTYPE)


@triton.jit
def _row_ok(n_ok, g, NG, GROUP: tl.constexpr):
    """Rows inside N, and the group inside K (K's padding may index one past the last group)."""
    ok = n_ok
    if GROUP != 0:
        ok = n_ok & (n_ok.to(tl.int32) * 0 + g < NG)  # a tensor even where g and NG are plain ints
    return ok


@triton.jit
def _per_weight(p_ptr, offs_n, n_ok, NG, g, offs_e, OTHER: tl.constexpr, GROUP: tl.constexpr, W: tl.constexpr):
    """A per-group parameter spread over an operand that spans 2W / GROUP groups, as float32 [rows, 2W]:
    one load per row and group, then a select per weight (a gather would load every weight's)."""
    out = tl.zeros([offs_n.shape[0], 2 * W], tl.float32)
    for j in tl.static_range(2 * W // GROUP):
        col = tl.load(p_ptr + offs_n * NG + g + j, mask=_row_ok(n_ok, g + j, NG, GROUP), other=OTHER)
        out = tl.where((offs_e // GROUP == j)[None, :], col.to(tl.float32)[:, None], out)
    return out


@triton.jit
def _bias32(b_ptr, offs_n, n_ok, NG, g, offs_e, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP: tl.constexpr,
            W: tl.constexpr):
    """MAGIC + 2^(b-1) + zero point, [rows, 1] or, when an operand spans several groups, [rows, 2W];
    symmetric weights have no zero point to read. Past N or K (padding) it is MAGIC, which leaves a
    finite code whose activation or scale is zero."""
    if not ASYM:
        bias = tl.full([offs_n.shape[0], 1], _MAGIC + (1 << (BITS - 1)), tl.float32)
    elif GROUP != 0 and GROUP < 2 * W:
        bias = _per_weight(b_ptr, offs_n, n_ok, NG, g, offs_e, _MAGIC, GROUP, W)
    else:
        bias = tl.load(b_ptr + offs_n * NG + g, mask=_row_ok(n_ok, g, NG, GROUP), other=_MAGIC)[:, None]
    return bias


@triton.jit
def _scale(s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP: tl.constexpr, W: tl.constexpr):
    """Scales of operand columns: [rows, 2W] when an operand spans several groups, else [rows, 1];
    zero past N or K."""
    if GROUP != 0 and GROUP < 2 * W:
        scale = _per_weight(s_ptr, offs_n, n_ok, NG, g, offs_e, 0.0, GROUP, W).to(s_ptr.dtype.element_ty)
    else:
        scale = tl.load(s_ptr + offs_n * NG + g, mask=_row_ok(n_ok, g, NG, GROUP), other=0.0)[:, None]
    return scale


@triton.jit
def _group(t, S, W: tl.constexpr, GROUP: tl.constexpr):
    """Scale column of operand S of tile t (GROUP 0: per-channel, one column)."""
    if GROUP == 0:
        return 0
    return (t * _TILE_K + S * 2 * W) // GROUP


@triton.jit
def _load_tile(w_rows, t, W: tl.constexpr, n_ok, EVEN_N: tl.constexpr):
    """Tile t of each row as [rows, 2W] int16 halves of its W words."""
    if EVEN_N:
        return tl.load(w_rows + t * 2 * W)
    return tl.load(w_rows + t * 2 * W, mask=n_ok[:, None], other=0)


@triton.jit
def _load_tile_tma(w_desc, first_row, t, W: tl.constexpr):
    """The same tile through the TMA copy engine (rows past N come back as zeros)."""
    return w_desc.load([first_row, t * 2 * W])


@triton.jit
def _k_range(KT, SPLIT_K: tl.constexpr):
    """The contiguous run of K tiles this program's K slice covers."""
    per = tl.cdiv(KT, SPLIT_K)
    first = tl.program_id(2) * per
    return first, tl.minimum(first + per, KT)


@triton.jit
def _finish(acc, y_ptrs, y_mask, ws_ptr, lock_ptr, local, tile, TILES, TILE_ELEMS: tl.constexpr,
            SPLIT_K: tl.constexpr):
    """Store acc into y, or, with a split K, hand it to the split-K reduction (module docstring)."""
    if SPLIT_K == 1:
        tl.store(y_ptrs, acc.to(y_ptrs.dtype.element_ty), mask=y_mask)
    else:
        tl.store(ws_ptr + (tl.program_id(2) * TILES + tile) * TILE_ELEMS + local, acc)
        tl.debug_barrier()  # every thread's partial is written before the counter says so
        arrived = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            total = tl.zeros(acc.shape, tl.float32)
            for s in tl.static_range(SPLIT_K):
                # .cg reads from L2: L1 may still hold this address from an earlier call
                total += tl.load(ws_ptr + (s * TILES + tile) * TILE_ELEMS + local, cache_modifier=".cg")
            tl.store(y_ptrs, total.to(y_ptrs.dtype.element_ty), mask=y_mask)
            tl.atomic_xchg(lock_ptr + tile, 0)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, KT, NG, stride_xm, stride_ym,
                 BITS: tl.constexpr, ASYM: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                 SPLIT_K: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, PER_SCALE: tl.constexpr):
    # grid (N tiles, M, K slices): one row of x per program; the [BLOCK_N, 2W] products stay in the
    # layout the words were loaded in, and reduce across 2W only once, at the end.
    S: tl.constexpr = 16 // BITS
    W: tl.constexpr = _TILE_K // (2 * S)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1)
    offs_e = tl.arange(0, 2 * W)
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_N, 2 * W], dtype=tl.float32)
    w_rows = w_ptr + offs_n[:, None] * (KT * 2 * W) + offs_e[None, :]
    x_row = x_ptr + m * stride_xm + offs_e
    first, last = _k_range(KT, SPLIT_K)
    for t in range(first, last):
        halves = _load_tile(w_rows, t, W, n_ok, EVEN_N)
        part = tl.zeros([BLOCK_N, 2 * W], dtype=tl.float32)
        for s in tl.static_range(S):
            g = _group(t, s, W, GROUP)
            k0 = t * _TILE_K + s * 2 * W
            if EVEN_K:
                x = tl.load(x_row + k0).to(tl.float32)
            else:
                x = tl.load(x_row + k0, mask=k0 + offs_e < K, other=0.0).to(tl.float32)
            a = _operand_f32(halves, _bias32(b_ptr, offs_n, n_ok, NG, g, offs_e, BITS, ASYM, GROUP, W), s, BITS)
            if PER_SCALE == 0:  # an operand spans several groups: scale each weight
                acc += a * x[None, :] * _scale(s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W).to(tl.float32)
            else:
                part += a * x[None, :]
                if (s + 1) % PER_SCALE == 0:
                    acc += part * _scale(s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W).to(tl.float32)
                    part = tl.zeros([BLOCK_N, 2 * W], dtype=tl.float32)
    tile = tl.program_id(0) * M + m
    _finish(tl.sum(acc, axis=1), y_ptr + m * stride_ym + offs_n, n_ok, ws_ptr, lock_ptr, tl.arange(0, BLOCK_N), tile,
            tl.num_programs(0) * M, BLOCK_N, SPLIT_K)


@triton.jit
def _operand_and_x(halves, x_tile, x_ok, t, s, offs_n, n_ok, offs_e, K, NG, b_ptr, BITS: tl.constexpr,
                   ASYM: tl.constexpr, GROUP: tl.constexpr, W: tl.constexpr, EVEN_K: tl.constexpr,
                   SWAP: tl.constexpr, DOT_F32: tl.constexpr, PAIRS: tl.constexpr):
    """Operand s of tile t as exact q - zp, [BLOCK_N, 2W], and the x inputs it multiplies, laid out
    for the dot (SWAP: [2W, BLOCK_M], else [BLOCK_M, 2W])."""
    k0 = t * _TILE_K + s * 2 * W
    if EVEN_K:
        x = tl.load(x_tile + k0, mask=x_ok, other=0.0)
    elif SWAP:
        x = tl.load(x_tile + k0, mask=x_ok & (k0 + offs_e < K)[:, None], other=0.0)
    else:
        x = tl.load(x_tile + k0, mask=x_ok & (k0 + offs_e < K)[None, :], other=0.0)
    bias = _bias32(b_ptr, offs_n, n_ok, NG, _group(t, s, W, GROUP), offs_e, BITS, ASYM, GROUP, W)
    if DOT_F32:
        a = _operand_f32(halves, bias, s, BITS)
        x = x.to(tl.float32)
    else:
        a = _operand(halves, bias, s, BITS, x_tile.dtype.element_ty, PAIRS)
    return a, x


@triton.jit
def _scaled_dot(acc, a, x, s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP: tl.constexpr, W: tl.constexpr,
                SWAP: tl.constexpr):
    """acc plus the product of a weight-by-weight scaled operand with x, in the kernel's orientation."""
    a = a * _scale(s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W).to(a.dtype)
    # one return: Triton still traces the statements after a return inside a constexpr branch
    if SWAP:
        out = tl.dot(a, x, acc)
    else:
        out = tl.dot(x, tl.trans(a), acc)
    return out


@triton.jit
def _mma_kernel(x_ptr, w_ptr, w_desc, s_ptr, b_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, KT, NG, stride_xm, stride_ym,
                BITS: tl.constexpr, ASYM: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_M: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
                PER_SCALE: tl.constexpr, PAIRS: tl.constexpr, DOT_F32: tl.constexpr, STEP: tl.constexpr,
                TMA: tl.constexpr, SWAP: tl.constexpr, FLAT: tl.constexpr, HOLD: tl.constexpr,
                NACC: tl.constexpr = 1):
    # grid (N tiles, M tiles, K slices). SWAP: acc is y.T's [BLOCK_N, BLOCK_M] tile and the weight
    # the dot's left operand, straight from registers; else acc is y's [BLOCK_M, BLOCK_N] tile and
    # the dequantized weight the right operand, which goes through shared memory (the usual GEMM
    # orientation). With PER_SCALE > 0 the dot of each operand is exact q - zp times x and scales
    # multiply the partial sums once per group; with 0 (small groups, large M where the
    # dequantization is shared by many rows, or not SWAP) each weight is scaled before the dot,
    # rounded once to the activation dtype exactly as `quantlab.dequantize` rounds it.
    # FLAT: one pipelined step per operand (2W inputs) instead of per 256-input tile, so a stage
    # holds a quarter of the x rows and more programs fit in shared memory; the weight tile is
    # loaded again for each of its operands (those loads hit L1/L2), unless HOLD: then it is read
    # once, at the tile's first operand (the other steps' loads are masked off and move no bytes),
    # and held in registers for the other S - 1. Either way each step's dot is the loop's only
    # dot, so Triton issues it asynchronously and the next step's dequantization overlaps it (the
    # per-tile loop chains S dots, and Triton waits for each of the first S - 1 to finish).
    S: tl.constexpr = 16 // BITS
    W: tl.constexpr = _TILE_K // (2 * S)
    PRE_SCALE: tl.constexpr = PER_SCALE == 0
    tl.static_assert(SWAP or PRE_SCALE, "the GEMM orientation scales weights before the dot")
    tl.static_assert(not FLAT or (PRE_SCALE and STEP == 1), "FLAT steps scale weights one operand at a time")
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, 2 * W)
    n_ok = offs_n < N
    m_ok = offs_m < M
    w_rows = w_ptr + offs_n[:, None] * (KT * 2 * W) + offs_e[None, :]
    if SWAP:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        x_tile = x_ptr + offs_m[None, :] * stride_xm + offs_e[:, None]
        x_ok = m_ok[None, :]
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        x_tile = x_ptr + offs_m[:, None] * stride_xm + offs_e[None, :]
        x_ok = m_ok[:, None]
    first, last = _k_range(KT, SPLIT_K)
    if FLAT:
        held = tl.zeros([BLOCK_N, 2 * W], dtype=tl.int16)
        for j in range(first * S, last * S):
            t = j // S
            s = j % S
            if HOLD:
                fresh = (offs_e[None, :] * 0 + s) == 0  # a tensor also where s is a plain int (interpreter)
                new = tl.load(w_rows + t * 2 * W, mask=n_ok[:, None] & fresh, other=0)
                held = tl.where(fresh, new, held)
                halves = held
            elif TMA:
                halves = _load_tile_tma(w_desc, tl.program_id(0) * BLOCK_N, t, W)
            else:
                halves = _load_tile(w_rows, t, W, n_ok, EVEN_N)
            a, x = _operand_and_x(halves, x_tile, x_ok, t, s, offs_n, n_ok, offs_e, K, NG, b_ptr, BITS, ASYM, GROUP,
                                  W, EVEN_K, SWAP, DOT_F32, PAIRS)
            acc = _scaled_dot(acc, a, x, s_ptr, offs_n, n_ok, NG, _group(t, s, W, GROUP), offs_e, GROUP, W, SWAP)
    else:
        # NACC > 1 (pre-scaled): operand s accumulates into acc number s % NACC, so a dot does not feed
        # the next one and Triton leaves it in flight while the next operand is dequantized
        acc2 = tl.zeros(acc.shape, dtype=tl.float32)
        acc3 = tl.zeros(acc.shape, dtype=tl.float32)
        acc4 = tl.zeros(acc.shape, dtype=tl.float32)
        for t0 in range(first, last, STEP):
            for u in tl.static_range(STEP):
                t = t0 + u
                if TMA:
                    halves = _load_tile_tma(w_desc, tl.program_id(0) * BLOCK_N, t, W)
                else:
                    halves = _load_tile(w_rows, t, W, n_ok, EVEN_N)
                part = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
                for s in tl.static_range(S):
                    g = _group(t, s, W, GROUP)
                    a, x = _operand_and_x(halves, x_tile, x_ok, t, s, offs_n, n_ok, offs_e, K, NG, b_ptr, BITS, ASYM,
                                          GROUP, W, EVEN_K, SWAP, DOT_F32, PAIRS)
                    if PRE_SCALE:
                        if s % NACC == 1:
                            acc2 = _scaled_dot(acc2, a, x, s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W, SWAP)
                        elif s % NACC == 2:
                            acc3 = _scaled_dot(acc3, a, x, s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W, SWAP)
                        elif s % NACC == 3:
                            acc4 = _scaled_dot(acc4, a, x, s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W, SWAP)
                        else:
                            acc = _scaled_dot(acc, a, x, s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W, SWAP)
                    else:
                        part = tl.dot(a, x, part)
                        if (s + 1) % PER_SCALE == 0:
                            acc += part * _scale(s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W).to(tl.float32)
                            part = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        if NACC > 1:
            acc += acc2
        if NACC > 2:
            acc += acc3 + acc4
    if SWAP:
        y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
        y_mask = n_ok[:, None] & m_ok[None, :]
        local = tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
    else:
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
        y_mask = m_ok[:, None] & n_ok[None, :]
        local = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    _finish(acc, y_ptrs, y_mask, ws_ptr, lock_ptr, local, tile, tl.num_programs(0) * tl.num_programs(1),
            BLOCK_N * BLOCK_M, SPLIT_K)


@triton.jit
def _dequant_kernel(w_ptr, s_ptr, b_ptr, out_ptr, N, K, KT, NG, BITS: tl.constexpr, ASYM: tl.constexpr,
                    GROUP: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    # grid (N tiles, K tiles); writes W[n, k] in the checkpoint's K order
    S: tl.constexpr = 16 // BITS
    W: tl.constexpr = _TILE_K // (2 * S)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    t = tl.program_id(1)
    offs_e = tl.arange(0, 2 * W)
    n_ok = offs_n < N
    halves = _load_tile(w_ptr + offs_n[:, None] * (KT * 2 * W) + offs_e[None, :], t, W, n_ok, EVEN_N)
    for s in tl.static_range(S):
        g = _group(t, s, W, GROUP)
        k = t * _TILE_K + s * 2 * W + offs_e
        scale = _scale(s_ptr, offs_n, n_ok, NG, g, offs_e, GROUP, W).to(tl.float32)
        w = _operand_f32(halves, _bias32(b_ptr, offs_n, n_ok, NG, g, offs_e, BITS, ASYM, GROUP, W), s, BITS) * scale
        tl.store(out_ptr + offs_n[:, None] * K + k[None, :], w.to(out_ptr.dtype.element_ty),
                 mask=n_ok[:, None] & (k < K)[None, :])


@dataclass(frozen=True)
class Config:
    """Launch parameters of one path. block_m is ignored by "gemv" (one row of x per program)."""

    path: Path
    block_m: int = 16
    block_n: int = 64
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    pre_scale: bool = False  # "mma": scale each weight before the dot instead of each partial sum
    step: int = 1  # "mma": K tiles per loop iteration; each costs its own shared-memory buffers per stage
    tma: bool = False  # "mma": weight tiles through the TMA copy engine (a tensor descriptor) instead of cp.async
    swap: bool = True  # "mma": y.T = W·x.T (weight from registers); False: y = x·W.T, weights pre-scaled
    flat: bool = False  # "mma": one pipelined step per 64-input operand, not per 256-input tile (pre-scaled)
    hold: bool = False  # "mma" with flat: read each weight tile once and keep it in registers for its operands
    nacc: int = 1  # "mma", pre-scaled per-tile steps: accumulators the S operands of a tile rotate over (1, 2, 4)
    chunk_rows: int = 0  # "chunked": output rows dequantized per slice (0: all of them, one slice)
    overlap: bool = True  # "chunked": dequantize the next slice on a second stream during the GEMM


# Tiles and crossovers from the --tune runs on an H200 (bench/NOTES.md): the swapped tensor-core
# kernel wins from M = 1 (the CUDA-core GEMV lost at every shape, by 5-35 %) up to M = 256, where it
# ties dequantize-then-cuBLAS, except on short K: with K = 4096 each program's loop is too short to
# amortise its pipeline fill and split-K reduction, and at M = 256 dequantize-then-cuBLAS ties
# (4096²) or wins by 9-16 % (4096 -> 14336; runs v7, v8 and tuning round 11). From M = 512 cuBLAS on the
# dequantized weight wins.
MMA_MAX_M = 256
MMA_MAX_M_SHORT_K = 128
SHORT_K = 4096


@functools.cache
def multiprocessors(device: torch.device) -> int:
    """The card's multiprocessors, which set how far K is split; the CPU interpreter runs programs one
    after another, so there it is 1 (no split asked for)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def choose_path(m: int, k: int) -> Path:
    """The path for M rows of x against a layer of K inputs."""
    return "mma" if m <= (MMA_MAX_M_SHORT_K if k <= SHORT_K else MMA_MAX_M) else "dequant"


# Each of the "chunked" path's two slice buffers takes this share of the L2 cache, leaving the rest
# for x, the slice of y being written and the other buffer.
CHUNK_L2_SHARE = 0.25


@functools.cache
def l2_bytes(device: torch.device) -> int:
    """The card's L2 cache, which sizes the "chunked" path's slices; 0 on the CPU (no cache to fit)."""
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).L2_cache_size


def chunk_rows_for(k: int, cache_bytes: int, share: float = CHUNK_L2_SHARE) -> int:
    """Output rows whose bf16 weights fill `share` of the cache (whole 128-row tiles, at least one);
    0 (one slice) without a cache."""
    if cache_bytes == 0:
        return 0
    return max(128, int(share * cache_bytes) // (2 * k) // 128 * 128)


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def _split_for(tiles: int, tiles_k: int, programs: int) -> int:
    """The smallest power-of-two split of K that puts `programs` programs on the card (at most 16,
    and at least four K tiles per slice)."""
    split = 1
    while split < 16 and tiles * split < programs and tiles_k >= 8 * split:
        split *= 2
    return split


def default_config(m: int, layer: PackedLinear, path: Path | None = None) -> Config:
    path = path or choose_path(m, layer.in_features)
    n, tiles_k = layer.out_features, layer.words.shape[1] // layer.tile_words
    m = max(m, 1)
    sms = multiprocessors(layer.device)
    if path == "gemv":
        return Config("gemv", block_n=64, split_k=_split_for(triton.cdiv(n, 64) * m, tiles_k, 4 * sms))
    if path == "dequant":
        return Config("dequant", block_n=32, num_warps=4, num_stages=1)
    if path == "chunked":
        return Config("chunked", block_n=32, num_warps=4, num_stages=1,
                      chunk_rows=chunk_rows_for(layer.in_features, l2_bytes(layer.device)))
    if m <= 16:  # weight streaming: enough programs per multiprocessor to keep loads in flight; 8-bit
        # tiles take twice the shared memory, so fewer programs fit and fewer are asked for
        programs = 3 * sms if layer.num_bits == 4 else 3 * sms // 2
        return Config("mma", block_m=16, block_n=64, split_k=_split_for(triton.cdiv(n, 64), tiles_k, programs))
    if m <= 64:
        return Config("mma", block_m=64, block_n=64, split_k=_split_for(triton.cdiv(n, 64), tiles_k, 3 * sms // 2))
    # Towards compute-bound: the dequantization is shared by 64 rows of x, so weights are scaled
    # before the dot (one accumulator instead of two); 3 stages of 48 KB fit in shared memory, one
    # program per multiprocessor. K is split only while the tiles fill under half the card (round 8:
    # 4096² at M = 128 ran 0.56x bf16 unsplit, 0.77x split in two; 8192², with twice the tiles, lost
    # 14 % by splitting).
    tiles = triton.cdiv(n, 128) * triton.cdiv(m, 64)
    return Config("mma", block_m=64, block_n=128, num_warps=8, num_stages=3, pre_scale=True,
                  split_k=_split_for(tiles, tiles_k, sms // 2 + 1))


def launch_config(x: torch.Tensor, layer: PackedLinear) -> Config | cuda_ops.CudaConfig:
    """What `matmul` runs for x when given no config: the Hopper wgmma kernel (`cuda_ops`) where it
    is there and measured faster, else `default_config`'s Triton path."""
    m = x.numel() // max(layer.in_features, 1)
    if cuda_ops.supports(x, layer) and cuda_ops.preferred(m, layer):
        return cuda_ops.default_config(m, layer)
    return default_config(m, layer)


def path_name(cfg: Config | cuda_ops.CudaConfig) -> str:
    return "wgmma" if isinstance(cfg, cuda_ops.CudaConfig) else cfg.path


def _check(x: torch.Tensor, layer: PackedLinear) -> None:
    if x.shape[-1] != layer.in_features:
        raise QuantlabError(f"x has {x.shape[-1]} features but the layer takes {layer.in_features}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise QuantlabError(f"activations must be float16 or bfloat16, not {x.dtype}")
    if x.device != layer.device:
        raise QuantlabError(f"x is on {x.device} but the weight is on {layer.device}")


def _group_arg(layer: PackedLinear) -> int:
    """GROUP as the kernels take it: 0 for per-channel (one scale column, also over K's padding)."""
    return 0 if layer.groups == 1 else layer.group_size


def _per_scale(layer: PackedLinear, pre_scale: bool = False) -> int:
    """Operands (2W inputs each) that share one scale in a tile; 0 when the kernel scales weight by
    weight: asked for, or one operand spans several groups (8-bit g32)."""
    operands, width = 16 // layer.num_bits, 2 * layer.tile_words
    if pre_scale:
        return 0
    if layer.groups == 1 or layer.group_size >= TILE_K:
        return operands
    return layer.group_size // width


_WORKSPACES: dict[tuple[torch.device, str, torch.dtype], torch.Tensor] = {}


def _workspace(device: torch.device, kind: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-device buffer reused across calls (the counters must start at zero and are left at zero)."""
    buf = _WORKSPACES.get((device, kind, dtype))
    if buf is None or buf.numel() < numel:
        buf = torch.zeros(max(numel, 1 << 16), dtype=dtype, device=device)
        _WORKSPACES[(device, kind, dtype)] = buf
    return buf


def dequantize(layer: PackedLinear, dtype: torch.dtype, config: Config | None = None,
               rows: tuple[int, int] | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The dense [N, K] weight in `dtype`, or its output rows first..last - 1 (`rows`), written by one
    Triton launch into `out` when given (contiguous, [rows, K])."""
    cfg = config or default_config(0, layer, "dequant")
    first, last = rows or (0, layer.out_features)
    n, k = last - first, layer.in_features
    out = out if out is not None else torch.empty(n, k, dtype=dtype, device=layer.device)
    tiles_k = layer.words.shape[1] // layer.tile_words
    # a range of rows is a contiguous slice of each row-major tensor of the layer
    _dequant_kernel[(triton.cdiv(n, cfg.block_n), tiles_k)](
        layer.words[first:last].view(torch.int16), layer.scale[first:last], layer.bias[first:last], out, n, k,
        tiles_k, layer.groups, BITS=layer.num_bits, ASYM=not layer.symmetric, GROUP=_group_arg(layer),
        BLOCK_N=cfg.block_n, EVEN_N=n % cfg.block_n == 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out


def _chunked_linear(x2: torch.Tensor, layer: PackedLinear, y2: torch.Tensor, cfg: Config) -> None:
    """y2 = x2 @ W.T one slice of output rows at a time, each dequantized into a buffer that stays in
    L2 until cuBLAS has read it. With `cfg.overlap` (on a GPU) slices alternate between two buffers
    and are dequantized on a side stream, one slice ahead of the GEMMs on the caller's stream."""
    n, k = layer.out_features, layer.in_features
    rows = min(cfg.chunk_rows or n, n)
    overlap = cfg.overlap and x2.is_cuda
    slots = 2 if overlap else 1
    buffers = _workspace(x2.device, "chunks", slots * rows * k, x2.dtype)[: slots * rows * k].view(slots, rows, k)
    if overlap:
        main, side = torch.cuda.current_stream(x2.device), _side_stream(x2.device)
        side.wait_stream(main)  # after all queued on the caller's stream: the last call's GEMMs read the buffers
        read: list[torch.cuda.Event | None] = [None] * slots
    for i, first in enumerate(range(0, n, rows)):
        last = min(first + rows, n)
        w = buffers[i % slots, : last - first]
        if overlap:
            with torch.cuda.stream(side):
                if read[i % slots] is not None:
                    side.wait_event(read[i % slots])  # the GEMM two slices back is done with this buffer
                dequantize(layer, x2.dtype, cfg, (first, last), w)
            # waiting on the last slice also joins the side stream back, which graph capture requires
            main.wait_event(side.record_event())
        else:
            dequantize(layer, x2.dtype, cfg, (first, last), w)
        # cuBLAS writes the column slice in place: its leading dimension is y's row stride
        torch.mm(x2, w.T, out=y2[:, first:last])
        if overlap:
            read[i % slots] = main.record_event()


def _step(tiles_k: int, split_k: int, most: int) -> int:
    """K tiles per loop iteration (unrolled, to spread the loop's fixed cost): at most `most`, and
    dividing every K slice."""
    return next((step for step in (4, 2) if step <= most and tiles_k % (split_k * step) == 0), 1)


def _pairs(dtype: torch.dtype, num_bits: int) -> bool:
    """Whether the two-weights-per-instruction magic fits: bf16's 128.0 leaves 7 mantissa bits (4-bit
    codes only), fp16's 1024.0 leaves 10."""
    return dtype == torch.float16 or num_bits == 4


def matmul(x: torch.Tensor, layer: PackedLinear, config: Config | cuda_ops.CudaConfig | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T for x [..., K] in fp16/bf16; the path and tiles follow `choose_path` unless given
    (a `cuda_ops.CudaConfig` runs the Hopper wgmma kernel)."""
    _check(x, layer)
    cfg = config or launch_config(x, layer)
    if isinstance(cfg, cuda_ops.CudaConfig):
        return cuda_ops.matmul(x, layer, cfg, out)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, layer.in_features)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, n, k = x2.shape[0], layer.out_features, layer.in_features
    y = out if out is not None else torch.empty(*lead, n, dtype=x.dtype, device=x.device)
    y2 = y.view(-1, n)
    if m == 0:
        return y
    if cfg.path == "dequant":
        torch.nn.functional.linear(x2, dequantize(layer, x.dtype, cfg), out=y2)
        return y
    if cfg.path == "chunked":
        _chunked_linear(x2, layer, y2, cfg)
        return y
    tiles_k = layer.words.shape[1] // layer.tile_words
    if cfg.path == "gemv":
        grid = (triton.cdiv(n, cfg.block_n), m, cfg.split_k)
        tile_elems = cfg.block_n
    else:
        grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m), cfg.split_k)
        tile_elems = cfg.block_n * cfg.block_m
    partials = _workspace(x.device, "partials", cfg.split_k * grid[0] * grid[1] * tile_elems, torch.float32)
    counters = _workspace(x.device, "counters", grid[0] * grid[1], torch.int32)
    halves = layer.words.view(torch.int16)
    # by name: the two kernels' signatures differ, and a positional tuple would bind silently wrong
    args = dict(s_ptr=layer.scale, b_ptr=layer.bias, y_ptr=y2, ws_ptr=partials, lock_ptr=counters, M=m, N=n, K=k,
                KT=tiles_k, NG=layer.groups, stride_xm=x2.stride(0), stride_ym=y2.stride(0), BITS=layer.num_bits,
                ASYM=not layer.symmetric, GROUP=_group_arg(layer), BLOCK_N=cfg.block_n, SPLIT_K=cfg.split_k,
                EVEN_N=n % cfg.block_n == 0, EVEN_K=k % TILE_K == 0, num_warps=cfg.num_warps,
                num_stages=cfg.num_stages)
    if cfg.path == "gemv":
        _gemv_kernel[grid](x_ptr=x2, w_ptr=halves, PER_SCALE=_per_scale(layer), **args)
    else:
        tma = cfg.tma and not _INTERPRETED
        desc = TensorDescriptor.from_tensor(halves, [cfg.block_n, 2 * layer.tile_words]) if tma else None
        _mma_kernel[grid](x_ptr=x2, w_ptr=halves, w_desc=desc, BLOCK_M=cfg.block_m, TMA=tma, SWAP=cfg.swap,
                          FLAT=cfg.flat, HOLD=cfg.flat and cfg.hold and not tma,
                          NACC=cfg.nacc if (cfg.pre_scale or not cfg.swap) and not cfg.flat else 1,
                          PER_SCALE=_per_scale(layer, cfg.pre_scale or cfg.flat or not cfg.swap),
                          PAIRS=_pairs(x.dtype, layer.num_bits), DOT_F32=_INTERPRETED,
                          STEP=1 if cfg.flat else _step(tiles_k, cfg.split_k, cfg.step), **args)
    return y
