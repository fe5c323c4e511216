"""Pack b-bit integer codes into int32 words, in compressed-tensors' pack-quantized layout.

The layout (compressed-tensors 0.20, `pack_to_int32` / `unpack_from_int32`):
- each signed code q in [-2^(b-1), 2^(b-1) - 1] is stored as the unsigned u = q + 2^(b-1), so the
  stored field never needs a sign bit;
- along the packed dimension, element i occupies bits [i·b, i·b + b) of one continuous bit stream,
  least significant bit first, and the stream is cut into 32-bit words: for 4 bits, code 0 sits in
  bits 0-3 of word 0 and code 7 in bits 28-31; for 3, 5, 6 or 7 bits a code can straddle two words;
- a row of n codes takes ceil(n·b / 32) words; the tail of the last word is zero;
- words are signed int32 (safetensors has no uint32), so a word with bit 31 set reads negative.

Weights pack along the input dimension (dim -1); compressed-tensors packs asymmetric zero points
along the output dimension (dim -2), which is what `dim` selects.

FP4 E2M1 codes (NVFP4, MXFP4) pack differently: two per byte into uint8, the even column in the
low nibble; and MX scales are stored as their E8M0 byte, the exponent plus 127.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from quantlab.core.errors import QuantlabError

WORD_BITS = 32
_WORD_MASK = (1 << WORD_BITS) - 1


def _check_bits(num_bits: int) -> None:
    if not 1 <= num_bits <= 8:
        raise QuantlabError(f"packing supports 1 to 8 bits per code, not {num_bits}")


def packed_width(n: int, num_bits: int) -> int:
    """Words needed for n codes of `num_bits` bits: ceil(n·b / 32)."""
    _check_bits(num_bits)
    return math.ceil(n * num_bits / WORD_BITS)


def offset(num_bits: int) -> int:
    """What is added to a signed code before it is stored: 2^(b-1)."""
    return 1 << (num_bits - 1)


def _slots(num_bits: int) -> list[tuple[int, int]]:
    """(word, bit offset) of each of the 32 codes that fill exactly `num_bits` words."""
    return [divmod(i * num_bits, WORD_BITS) for i in range(WORD_BITS)]


@torch.no_grad()
def pack(codes: torch.Tensor, num_bits: int, dim: int = -1) -> torch.Tensor:
    """int8 codes -> int32 words along `dim` (-1: weights, -2: asymmetric zero points)."""
    _check_bits(num_bits)
    if codes.dtype != torch.int8:
        raise QuantlabError(f"pack expects int8 codes, got {codes.dtype}")
    if codes.ndim < 2 and dim != -1:
        raise QuantlabError("packing along dim -2 needs a tensor of at least 2 dimensions")
    lo, hi = -offset(num_bits), offset(num_bits) - 1
    if codes.numel() and (codes.min().item() < lo or codes.max().item() > hi):
        raise QuantlabError(f"codes must lie in [{lo}, {hi}] to pack into {num_bits} bits")
    x = codes.transpose(dim, -1) if dim != -1 else codes
    n = x.shape[-1]
    # 32 codes fill exactly num_bits words, so work in blocks of 32 and trim the tail at the end.
    padded = math.ceil(n / WORD_BITS) * WORD_BITS
    u = torch.nn.functional.pad(x.to(torch.int64) + offset(num_bits), (0, padded - n))
    blocks = u.unflatten(-1, (padded // WORD_BITS, WORD_BITS))
    words = torch.zeros(*blocks.shape[:-1], num_bits, dtype=torch.int64, device=codes.device)
    for i, (w, bit) in enumerate(_slots(num_bits)):
        words[..., w] |= blocks[..., i] << bit
        if bit + num_bits > WORD_BITS:  # the high bits spill into the next word
            words[..., w + 1] |= blocks[..., i] >> (WORD_BITS - bit)
    words = words.flatten(-2)[..., : packed_width(n, num_bits)] & _WORD_MASK
    signed = torch.where(words >= 1 << (WORD_BITS - 1), words - (1 << WORD_BITS), words).to(torch.int32)
    return (signed.transpose(dim, -1) if dim != -1 else signed).contiguous()


@torch.no_grad()
def unpack(words: torch.Tensor, num_bits: int, n: int, dim: int = -1) -> torch.Tensor:
    """int32 words -> the first `n` int8 codes along `dim` (inverse of `pack`)."""
    _check_bits(num_bits)
    if words.dtype != torch.int32:
        raise QuantlabError(f"unpack expects int32 words, got {words.dtype}")
    x = words.transpose(dim, -1) if dim != -1 else words
    if x.shape[-1] != packed_width(n, num_bits):
        raise QuantlabError(
            f"{x.shape[-1]} words cannot hold {n} codes of {num_bits} bits (that needs {packed_width(n, num_bits)})"
        )
    blocks_n = math.ceil(n / WORD_BITS)
    u = x.to(torch.int64) & _WORD_MASK
    u = torch.nn.functional.pad(u, (0, blocks_n * num_bits - x.shape[-1]))
    blocks = u.unflatten(-1, (blocks_n, num_bits))
    mask = (1 << num_bits) - 1
    fields = []
    for w, bit in _slots(num_bits):
        field = blocks[..., w] >> bit
        if bit + num_bits > WORD_BITS:
            field = field | (blocks[..., w + 1] << (WORD_BITS - bit))
        fields.append(field & mask)
    codes = (torch.stack(fields, dim=-1).flatten(-2)[..., :n] - offset(num_bits)).to(torch.int8)
    return (codes.transpose(dim, -1) if dim != -1 else codes).contiguous()


@dataclass(frozen=True)
class WordDiagram:
    """How a few codes become one 32-bit word: the numbers behind the lesson's bit diagram."""

    codes: tuple[int, ...]  # signed codes, in storage order
    stored: tuple[int, ...]  # codes + 2^(b-1)
    fields: tuple[str, ...]  # each stored value as b binary digits
    num_bits: int
    word: int  # the int32 as safetensors holds it (may be negative)

    @property
    def binary(self) -> str:
        """The word's 32 bits, most significant first (so code 0 is at the right end)."""
        return format(self.word & _WORD_MASK, "032b")

    @property
    def bit_ranges(self) -> tuple[str, ...]:
        """Where each code sits in the word, e.g. '7..4' for code 1 of an int4 word."""
        b = self.num_bits
        return tuple(f"{b * i + b - 1}..{b * i}" for i in range(len(self.codes)))

    @property
    def hex(self) -> str:
        return f"0x{self.word & _WORD_MASK:08X}"


def word_diagram(codes: torch.Tensor, num_bits: int) -> WordDiagram:
    """Pack the 32/b codes that fill exactly one word and report every step."""
    per_word = WORD_BITS // num_bits
    if WORD_BITS % num_bits or codes.numel() != per_word:
        raise QuantlabError(f"one word holds exactly {WORD_BITS // num_bits} codes only when b divides 32")
    flat = codes.reshape(1, -1).to(torch.int8)
    word = int(pack(flat, num_bits)[0, 0].item())
    signed = [int(c) for c in flat[0].tolist()]
    stored = [c + offset(num_bits) for c in signed]
    return WordDiagram(tuple(signed), tuple(stored), tuple(format(s, f"0{num_bits}b") for s in stored),
                       num_bits, word)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 E2M1 codes [rows, cols] -> uint8 bytes [rows, cols / 2], the even column low."""
    rows, cols = codes.shape
    if cols % 2:
        raise QuantlabError(f"FP4 packs two values per byte: {cols} columns is odd")
    pairs = codes.reshape(rows, cols // 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 bytes [rows, n] -> uint8 E2M1 codes [rows, 2n] (inverse of `pack_fp4`)."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def e8m0_bytes(scale: torch.Tensor) -> torch.Tensor:
    """Power-of-two MX scales -> their stored E8M0 bytes (exponent + 127)."""
    return (127 + torch.floor(torch.log2(scale.float())).to(torch.int32)).to(torch.uint8)
