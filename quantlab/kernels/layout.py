"""The weight layout the kernels read, and the plain torch paths that define what they compute.

A checkpoint stores compressed-tensors' pack-quantized layout (`quantlab.packing`): int32 words along
the input dimension, least significant bits first, codes stored as u = q + 2^(b-1), so word w holds
the consecutive inputs 8w..8w+7 (4-bit). Loading repacks once (`interleave`): K is cut into tiles of
TILE_K = 256 inputs held by W words (32 at 4 bits, 64 at 8), and the S = fields/2 fields of each
16-bit half of a word are spread over the tile so that input s·2W + 2c + h is field s of half h of
word c. Read as 16-bit halves, the tile is then S operands of [rows, 2W] with the two halves of one
word side by side: operand s is "field s of every half", which one shift and one LOP3 produce for two
weights at once (two 16-bit floats in one 32-bit register, the trick Marlin uses), and it lines up
with the contiguous activations s·2W .. s·2W + 2W - 1. Nothing is shuffled between threads, which is
what made the checkpoint order slow (bench/NOTES.md). `checkpoint_words` undoes it exactly.

The zero point, which compressed-tensors packs along the output dimension, is unpacked and folded
with the storage offset and a float "magic" bias into one float32 per group,

    bias = 2^23 + 2^(b-1) + zero_point,

so a kernel turns a field u into its centred value with two cheap instructions and no integer to
float conversion: OR u into the mantissa of 2^23 (exactly the float 2^23 + u, since u < 2^23) and
subtract the bias, which leaves u - 2^(b-1) - zp = q - zp exactly. The weight is then (q - zp)·scale,
rounded once to the activation dtype, the same value `quantlab.dequantize` produces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quantlab.core import blocks, packing
from quantlab.core.errors import QuantlabError
from quantlab.core.qparams import QuantizedTensor
from quantlab.core.spec import QuantSpec

MAGIC = float(2**23)
KERNEL_BITS = (4, 8)
# 128 bytes of each row per tile at 4 bits: bench/stream_probe.py streamed 64-byte rows ~30 % slower
TILE_K = 256


def _tile_view(num_bits: int) -> tuple[int, int]:
    """(operands per tile S, words per tile W): input s·2W + 2c + h of a tile is field s + S·h of word c."""
    fields = 32 // num_bits
    return fields // 2, TILE_K // fields


def interleave(words: torch.Tensor, num_bits: int, in_features: int) -> torch.Tensor:
    """Checkpoint words [N, ceil(K·b/32)] -> kernel words [N, ceil(K/256)·256·b/32] (see the module
    docstring); inputs past K, up to the tile boundary, are stored as code 0."""
    n, tiles = words.shape[0], -(-in_features // TILE_K)
    q = packing.unpack(words, num_bits, in_features)
    q = torch.nn.functional.pad(q, (0, tiles * TILE_K - in_features), value=-packing.offset(num_bits))
    s, w = _tile_view(num_bits)
    return packing.pack(q.view(n, tiles, s, w, 2).permute(0, 1, 3, 4, 2).reshape(n, -1), num_bits)


def codes(words: torch.Tensor, num_bits: int, in_features: int) -> torch.Tensor:
    """Kernel words -> the signed int8 codes [N, K] in input order."""
    n = words.shape[0]
    s, w = _tile_view(num_bits)
    q = packing.unpack(words, num_bits, words.shape[1] * (32 // num_bits))
    return q.view(n, -1, w, 2, s).permute(0, 1, 4, 2, 3).reshape(n, -1)[:, :in_features]


def checkpoint_words(words: torch.Tensor, num_bits: int, in_features: int) -> torch.Tensor:
    """Kernel words -> the checkpoint's pack-quantized words (inverse of `interleave`)."""
    return packing.pack(codes(words, num_bits, in_features).contiguous(), num_bits)


@dataclass(frozen=True, eq=False)
class PackedLinear:
    """A quantized nn.Linear weight [out_features, in_features] ready for the kernels."""

    words: torch.Tensor  # int32 [N, tiles·256·b/32], interleaved per 256-input tile (`interleave`)
    scale: torch.Tensor  # [N, groups] in the activation dtype
    bias: torch.Tensor  # float32 [N, groups]: 2^23 + 2^(b-1) + zero_point
    num_bits: int
    group_size: int  # codes per scale along K; equals in_features for per-channel
    in_features: int
    symmetric: bool  # no zero points: the kernels skip reading `bias` (it is 2^23 + 2^(b-1) everywhere)

    @property
    def out_features(self) -> int:
        return self.words.shape[0]

    @property
    def groups(self) -> int:
        return self.scale.shape[1]

    @property
    def codes_per_word(self) -> int:
        return 32 // self.num_bits

    @property
    def tile_words(self) -> int:
        """Words per tile, which is also the inputs per field (`interleave`)."""
        return TILE_K // self.codes_per_word

    @property
    def device(self) -> torch.device:
        return self.words.device

    @property
    def nbytes(self) -> int:
        """Bytes a kernel must read for the weight: packed codes + scales (+ the biases if asymmetric)."""
        zero_bytes = 0 if self.symmetric else self.bias.numel() * self.bias.element_size()
        return self.words.numel() * 4 + self.scale.numel() * self.scale.element_size() + zero_bytes

    @classmethod
    def from_compressed(cls, weight_packed: torch.Tensor, weight_scale: torch.Tensor,
                        weight_zero_point: torch.Tensor | None, in_features: int, spec: QuantSpec,
                        dtype: torch.dtype | None = None) -> PackedLinear:
        """From the tensors a compressed-tensors checkpoint stores (`weight_packed`, `weight_scale`,
        `weight_zero_point` packed along the output dim, `weight_shape`'s second entry)."""
        if spec.type != "int" or spec.num_bits not in KERNEL_BITS:
            raise QuantlabError(f"the kernels take 4- or 8-bit integer weights, not {spec.label}")
        if spec.activations is not None:
            # They expand weights to the 16-bit activations: W4AFP8's FP8 (or W8A8's INT8) inputs
            # would silently be computed unquantized.
            raise QuantlabError(f"the kernels are weight-only (16-bit activations): {spec.label} with "
                                f"{spec.activations.label} activations needs a quantized-activation matmul")
        if spec.strategy not in ("group", "channel"):
            raise QuantlabError(f"the kernels take group-wise or per-channel scales, not strategy {spec.strategy!r}")
        n = weight_packed.shape[0]
        group = blocks.block_size(spec, (n, in_features))[-1]
        if spec.strategy == "group" and (group % (32 // spec.num_bits) or (group % TILE_K and TILE_K % group)):
            raise QuantlabError(f"the kernels take group sizes that divide {TILE_K} or are multiples of it "
                                f"(32, 64, 128, 256, 512, ...), not {group}")
        dtype = dtype or weight_scale.dtype
        zp = torch.zeros(weight_scale.shape, dtype=torch.float32, device=weight_scale.device)
        if weight_zero_point is not None:
            zp = packing.unpack(weight_zero_point, spec.num_bits, n, dim=-2).to(torch.float32)
        bias = (MAGIC + packing.offset(spec.num_bits) + zp).contiguous()
        return cls(interleave(weight_packed, spec.num_bits, in_features), weight_scale.to(dtype).contiguous(), bias,
                   spec.num_bits, group, in_features, weight_zero_point is None)

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor, dtype: torch.dtype | None = None) -> PackedLinear:
        """Pack a `QuantizedTensor` exactly as quantlab's export writes it, then load it."""
        spec = qt.spec
        if spec.type != "int":
            raise QuantlabError(f"{spec.label} weights are not integer codes: per-channel FP8 goes through "
                                "`fp8_linear`; the FP4 and MX formats have no kernel here")
        words = packing.pack(qt.q, spec.num_bits)
        zp = None if qt.zero_point is None else packing.pack(qt.zero_point, spec.num_bits, dim=-2)
        return cls.from_compressed(words, qt.scale, zp, qt.q.shape[1], spec, dtype)


@torch.no_grad()
def dequantize_packed(layer: PackedLinear) -> torch.Tensor:
    """The [N, K] weight in the scale's dtype: (q - zp)·scale, rounded once, like the kernels."""
    u = codes(layer.words, layer.num_bits, layer.in_features).to(torch.float32) + packing.offset(layer.num_bits)
    centred = u.unflatten(-1, (layer.groups, -1)) - (layer.bias - MAGIC).unsqueeze(-1)
    return (centred * layer.scale.float().unsqueeze(-1)).flatten(-2).to(layer.scale.dtype)


@torch.no_grad()
def torch_matmul(x: torch.Tensor, layer: PackedLinear) -> torch.Tensor:
    """The plain torch path: unpack, dequantize to the activation dtype, then one dense matmul."""
    return torch.nn.functional.linear(x, dequantize_packed(layer).to(x.dtype))


@torch.no_grad()
def reference_matmul(x: torch.Tensor, layer: PackedLinear) -> torch.Tensor:
    """float64 on the CPU: the oracle every kernel is checked against."""
    return x.detach().cpu().double() @ dequantize_packed(layer).cpu().double().T
