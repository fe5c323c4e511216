"""GPTQ: quantize a weight matrix column by column, feeding each column's error into the rest.

Round-to-nearest (RTN) treats every weight on its own. GPTQ (Frantar et al., 2022) minimises the
layer's *output* error ‖XWᵀ − XŴᵀ‖² on calibration inputs X instead: the quadratic form of that
error is the Hessian H = 2XᵀX/n, and after one column is rounded, the best correction of the
columns not yet quantized is a multiple of that column's row of H⁻¹. Done with the upper Cholesky
factor of H⁻¹, a block of columns at a time, this is llm-compressor's `quantize_weight`
(`llmcompressor/modifiers/gptq/gptq_quantize.py`, v0.14), which this module follows step by step so
that it writes the same codes and scales:

1. scales and zero points are observed on the *original* weight (min-max), before any feedback;
2. act-order permutes columns by descending H diagonal (the inputs with the most energy first) and
   the permutation is undone at the end; each column keeps the group of its original position;
3. dead inputs (H_jj = 0) get H_jj = 1 and a zero weight column; H is dampened by
   `dampening` × mean(diag H) before the Cholesky factorisation; a factorisation that fails falls
   back to RTN (identity factor), as llm-compressor does;
4. inside a block each column is fake-quantized, its error e = (w − q) / U_jj is subtracted from
   the block's later columns, and at the block's end the block's errors update every later column.

"Dynamic" groups are the original GPTQ paper's and AutoGPTQ's variant, offered for comparison: a
group's scale is observed on its columns as they are when the group is reached (after the feedback
of earlier columns), and with act-order the groups follow the permuted order, so a checkpoint
must also store which group each input column belongs to (`g_idx`). compressed-tensors 0.20 has
deprecated that ordering and llm-compressor 0.14 refuses it; `static` is what they write.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from quantlab.core.errors import QuantlabError
from quantlab.core.observers import observe_qparams
from quantlab.core.qparams import QuantizedTensor, calculate_qparams, observe_minmax, quantize_with
from quantlab.core.spec import QuantSpec

Groups = Literal["static", "dynamic"]
# llm-compressor runs GPTQ in float32 whatever the weight's dtype (GPTQ_PRECISION).
PRECISION = torch.float32


@dataclass(frozen=True)
class GptqArgs:
    """GPTQModifier's arguments: `block_size`, `dampening_frac`, `actorder` (static or off), plus
    the lab's `groups` switch. Frozen and hashable: it is part of a page's cache key."""

    block_size: int = 128
    dampening: float = 0.01
    actorder: bool = True
    groups: Groups = "static"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise QuantlabError(f"block size must be at least 1, not {self.block_size}")
        if not 0 <= self.dampening < 1:
            raise QuantlabError(f"dampening must be in [0, 1), not {self.dampening:g}")
        if self.groups not in ("static", "dynamic"):
            raise QuantlabError(f"groups must be 'static' or 'dynamic', not {self.groups!r}")


DEFAULT_ARGS = GptqArgs()  # GPTQModifier's defaults: block 128, dampening 0.01, static act-order


@dataclass(frozen=True, eq=False)
class GptqResult:
    """Codes in the original column order; `scale`/`zero_point` in compressed-tensors' layout.

    `g_idx[j]` is the scale column serving input column j. For static groups it is j // group_size
    (what compressed-tensors assumes, so `quantized` is an ordinary QuantizedTensor); for dynamic
    groups with act-order it is a permutation of that and must be stored with the checkpoint.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    g_idx: torch.Tensor | None
    perm: torch.Tensor | None  # processing order (act-order), None without it
    spec: QuantSpec
    rtn_fallback: bool  # the dampened Hessian was not positive definite: no feedback was applied

    @property
    def has_trivial_groups(self) -> bool:
        return self.g_idx is None or bool(torch.equal(self.g_idx, _natural_groups(self.spec, self.q.shape[1])))

    @property
    def quantized(self) -> QuantizedTensor:
        """The result as compressed-tensors stores it (only when groups follow column order)."""
        if not self.has_trivial_groups:
            raise QuantlabError("dynamic groups with act-order need a g_idx, which compressed-tensors "
                                "0.20 no longer stores: use static groups")
        return QuantizedTensor(q=self.q, scale=self.scale, zero_point=self.zero_point, spec=self.spec)

    def dequantize(self) -> torch.Tensor:
        """Ŵ = (q − zp) · scale with each column's own group, in the scale's dtype."""
        if self.g_idx is None:
            return self.quantized.dequantize()
        values = self.q.to(self.scale.dtype)
        if self.zero_point is not None:
            values = values - self.zero_point[:, self.g_idx].to(self.scale.dtype)
        return values * self.scale[:, self.g_idx]


def _natural_groups(spec: QuantSpec, columns: int) -> torch.Tensor:
    assert spec.group_size is not None
    return torch.arange(columns) // spec.group_size


@torch.no_grad()
def hessian(x: torch.Tensor) -> torch.Tensor:
    """H = 2XᵀX / n over the n rows (tokens) of a layer's input X [tokens, in_features], in
    float32 (accumulated in float64, so that the number of samples does not change its rounding).

    llm-compressor divides by the number of *sequences* its hooks saw rather than tokens: a
    constant factor, which GPTQ is invariant to (dampening is relative to the mean diagonal).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise QuantlabError(f"GPTQ needs calibration inputs shaped [tokens, features], not {tuple(x.shape)}")
    xd = x.double()
    return (2 * xd.T @ xd / x.shape[0]).to(PRECISION)


def _column_spec(spec: QuantSpec) -> QuantSpec:
    """The spec's grid applied to one column, one scale per row (compressed-tensors' CHANNEL view,
    which is how llm-compressor fake-quantizes a column inside the block loop)."""
    return spec.with_(strategy="channel", group_size=None, activations=None)


def _fake_quant_column(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None,
                       spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, dequantized in float32) for one column [rows] with per-row scale [rows]."""
    qt = quantize_with(w[:, None], scale[:, None], None if zp is None else zp[:, None], spec)
    return qt.q[:, 0], qt.dequantize()[:, 0].to(PRECISION)


def _inverse_factor(h: torch.Tensor, dampening: float) -> tuple[torch.Tensor, bool]:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = dampening · mean(diag H); identity if H + λI is
    not positive definite (llm-compressor's RTN fallback)."""
    damp = dampening * torch.mean(torch.diag(h))
    torch.diagonal(h).add_(damp)
    factor, info = torch.linalg.cholesky_ex(h, check_errors=False)
    if info.item() != 0:
        return torch.eye(h.shape[0], dtype=h.dtype), True
    return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True), False


_THREADS_LOCK = threading.Lock()
_threads_saved: list[int] = []  # the thread count to restore, while any GPTQ run is active
_threads_users = 0


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread meanwhile (GPTQ's column loop, small models' forward passes).

    GPTQ's loop is thousands of small elementwise updates; waking torch's thread pool for each costs
    more than it saves, and on a shared 2-core machine far more (one 1536x384 layer measured 0.37 s
    on one thread, 3.8 s on two; capturing a tiny Llama's inputs on 40 sentences, 1.2 s against
    10.8 s). The setting is per process, so overlapping runs share one save/restore and the last
    to finish restores it.
    """
    global _threads_users
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_saved[:] = [torch.get_num_threads()]
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved[0])


@torch.no_grad()
def gptq(w: torch.Tensor, h: torch.Tensor, spec: QuantSpec, args: GptqArgs = DEFAULT_ARGS) -> GptqResult:
    """Quantize weight `w` [out, in] with GPTQ, given the Hessian `h` [in, in] of its inputs."""
    with single_threaded():
        return _gptq(w, h, spec, args)


def _gptq(w: torch.Tensor, h: torch.Tensor, spec: QuantSpec, args: GptqArgs) -> GptqResult:
    if w.ndim != 2 or tuple(h.shape) != (w.shape[1], w.shape[1]):
        raise QuantlabError(f"GPTQ needs a weight [out, in] and a Hessian [in, in]; got {tuple(w.shape)} "
                            f"and {tuple(h.shape)}")
    if spec.strategy == "token":
        raise QuantlabError("per-token scales are for activations; GPTQ quantizes weights")
    rows, cols = w.shape
    dynamic = args.groups == "dynamic" and spec.strategy == "group"
    if dynamic:
        assert spec.group_size is not None
        if args.block_size % spec.group_size and spec.group_size % args.block_size:
            raise QuantlabError(f"dynamic groups need a block size ({args.block_size}) that is a multiple or "
                                f"a divisor of the group size ({spec.group_size})")
    # Step 1: qparams from the original weight, in its dtype (memoryless min-max on the weight).
    scale, zero_point = observe_qparams(w, spec)
    col_spec = _column_spec(spec)
    W = w.to(PRECISION).clone()
    H = h.to(PRECISION).clone()

    perm: torch.Tensor | None = None
    if args.actorder:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        H = H[perm][:, perm]
        W = W[:, perm]
    # Scale column serving each processed column (static: the group of its original position).
    if spec.strategy == "group":
        natural = _natural_groups(spec, cols)
        col_group = natural if (perm is None or dynamic) else natural[perm]
    else:
        col_group = torch.zeros(cols, dtype=torch.long)

    dead = torch.diagonal(H) == 0
    if dead.any():
        torch.diagonal(H).masked_fill_(dead, 1.0)
        W[:, dead] = 0
    U, fallback = _inverse_factor(H, args.dampening)

    per_row = spec.strategy != "tensor"
    new_scale = torch.empty_like(scale) if dynamic else scale
    new_zp = (torch.empty_like(zero_point) if zero_point is not None else None) if dynamic else zero_point
    Q = torch.empty((rows, cols), dtype=torch.float8_e4m3fn if spec.type == "float" else torch.int8)
    for i1 in range(0, cols, args.block_size):
        i2 = min(i1 + args.block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            g = int(col_group[c])
            if dynamic and c % spec.group_size == 0:  # type: ignore[operator]
                # The group's columns as they are now: inside this block they live in W1; a group
                # wider than the block starts at a block start, where W already holds every update.
                size = spec.group_size
                assert size is not None
                current = W1[:, i:i + size] if i + size <= i2 - i1 else W[:, c:c + size]
                s, z = calculate_qparams(*observe_minmax(current.to(w.dtype), col_spec), col_spec)
                new_scale[:, g] = s[:, 0]
                if new_zp is not None and z is not None:
                    new_zp[:, g] = z[:, 0]
            s_col = new_scale[:, g] if per_row else new_scale.expand(rows)
            z_col = None if new_zp is None else (new_zp[:, g] if per_row else new_zp.expand(rows))
            codes, q = _fake_quant_column(W1[:, i], s_col, z_col, col_spec)
            Q[:, c] = codes
            err = (W1[:, i] - q) / U1[i, i]
            Err1[:, i] = err
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]

    g_idx: torch.Tensor | None = None
    if perm is not None:
        inverse = torch.argsort(perm)
        Q = Q[:, inverse]
        if dynamic:
            g_idx = col_group[inverse]
    return GptqResult(q=Q, scale=new_scale, zero_point=new_zp, g_idx=g_idx, perm=perm, spec=spec,
                      rtn_fallback=fallback)
