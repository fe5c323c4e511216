"""The weight layout the kernels read, and the plain torch paths that define what they compute.

The packed words are compressed-tensors' pack-quantized layout unchanged (`quantlab.packing`): int32
words along the input dimension, least significant bits first, codes stored as u = q + 2^(b-1).
Only the per-group parameters are rearranged once at load time (the one repack): the zero point,
which compressed-tensors packs along the output dimension, is unpacked and folded with the storage
offset and a float "magic" bias into one float32 per group,

    bias = 2^23 + 2^(b-1) + zero_point,

so a kernel turns a field u into its centred value with two cheap instructions and no integer to
float conversion: OR u into the mantissa of 2^23 (exactly the float 2^23 + u, since u < 2^23) and
subtract the bias, which leaves u - 2^(b-1) - zp = q - zp exactly. The weight is then (q - zp)·scale,
rounded once to the activation dtype, the same value `quantlab.dequantize` produces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quantlab import packing
from quantlab.errors import QuantlabError
from quantlab.quantize import QuantizedTensor
from quantlab.spec import QuantSpec

MAGIC = float(2**23)
KERNEL_BITS = (4, 8)


@dataclass(frozen=True, eq=False)
class PackedLinear:
    """A quantized nn.Linear weight [out_features, in_features] ready for the kernels."""

    words: torch.Tensor  # int32 [N, K·b/32], compressed-tensors pack-quantized
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
                        dtype: torch.dtype | None = None) -> "PackedLinear":
        """From the tensors a compressed-tensors checkpoint stores (`weight_packed`, `weight_scale`,
        `weight_zero_point` packed along the output dim, `weight_shape`'s second entry)."""
        if spec.type != "int" or spec.num_bits not in KERNEL_BITS:
            raise QuantlabError(f"the kernels take 4- or 8-bit integer weights, not {spec.label}")
        if spec.strategy not in ("group", "channel"):
            raise QuantlabError(f"the kernels take group-wise or per-channel scales, not strategy {spec.strategy!r}")
        n = weight_packed.shape[0]
        group = spec.group_size if spec.strategy == "group" else in_features
        assert group is not None
        if group % (32 // spec.num_bits):
            raise QuantlabError(f"group size {group} must hold whole int32 words ({32 // spec.num_bits} codes)")
        dtype = dtype or weight_scale.dtype
        zp = torch.zeros(weight_scale.shape, dtype=torch.float32, device=weight_scale.device)
        if weight_zero_point is not None:
            zp = packing.unpack(weight_zero_point, spec.num_bits, n, dim=-2).to(torch.float32)
        bias = (MAGIC + packing.offset(spec.num_bits) + zp).contiguous()
        return cls(weight_packed.contiguous(), weight_scale.to(dtype).contiguous(), bias, spec.num_bits, group,
                   in_features, weight_zero_point is None)

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor, dtype: torch.dtype | None = None) -> "PackedLinear":
        """Pack a `QuantizedTensor` exactly as quantlab's export writes it, then load it."""
        spec = qt.spec
        if spec.type != "int":
            raise QuantlabError("FP8 weights go through `fp8_linear`, not the integer kernels")
        words = packing.pack(qt.q, spec.num_bits)
        zp = None if qt.zero_point is None else packing.pack(qt.zero_point, spec.num_bits, dim=-2)
        return cls.from_compressed(words, qt.scale, zp, qt.q.shape[1], spec, dtype)


@torch.no_grad()
def dequantize_packed(layer: PackedLinear) -> torch.Tensor:
    """The [N, K] weight in the scale's dtype: (q - zp)·scale, rounded once, like the kernels."""
    u = packing.unpack(layer.words, layer.num_bits, layer.in_features).to(torch.float32) + packing.offset(layer.num_bits)
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
