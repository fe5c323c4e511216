"""Packing must be bit-for-bit what compressed-tensors writes, for every width and odd shapes."""
import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import (
    pack_to_int32,
    unpack_from_int32,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import packing
from quantlab.core.errors import QuantlabError


def random_codes(shape: tuple[int, ...], bits: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)
    return torch.randint(lo, hi, shape, generator=g, dtype=torch.int8)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(3, 32), (5, 37), (2, 128), (1, 7), (4, 200)])
def test_pack_matches_compressed_tensors(bits: int, shape: tuple[int, int]) -> None:
    codes = random_codes(shape, bits, seed=bits * 1000 + shape[1])
    ours = packing.pack(codes, bits)
    theirs = pack_to_int32(codes, bits)
    assert ours.dtype == torch.int32
    assert torch.equal(ours, theirs)
    assert torch.equal(packing.unpack(ours, bits, shape[1]), codes)
    assert torch.equal(unpack_from_int32(ours, bits, torch.Size(shape)), codes)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_zero_points_pack_along_rows_like_compressed_tensors(bits: int) -> None:
    codes = random_codes((45, 6), bits, seed=bits)
    ours = packing.pack(codes, bits, dim=-2)
    assert torch.equal(ours, pack_to_int32(codes, bits, packed_dim=0))
    assert torch.equal(packing.unpack(ours, bits, 45, dim=-2), codes)


def test_three_dimensional_codes_pack_each_slice() -> None:
    codes = random_codes((3, 4, 40), 3, seed=7)
    assert torch.equal(packing.pack(codes, 3), pack_to_int32(codes, 3))


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 4), cols=st.integers(1, 100), seed=st.integers(0, 2**16))
def test_round_trip_and_width(bits: int, rows: int, cols: int, seed: int) -> None:
    codes = random_codes((rows, cols), bits, seed)
    words = packing.pack(codes, bits)
    assert words.shape == (rows, packing.packed_width(cols, bits))
    assert torch.equal(packing.unpack(words, bits, cols), codes)
    assert torch.equal(words, pack_to_int32(codes, bits))


def test_int4_word_by_hand() -> None:
    # Codes -8..-1 are stored as 0..7; code 0 lands in the lowest nibble.
    codes = torch.arange(-8, 0, dtype=torch.int8)
    d = packing.word_diagram(codes, 4)
    assert d.stored == (0, 1, 2, 3, 4, 5, 6, 7)
    assert d.hex == "0x76543210"
    assert d.binary.endswith("0010" "0001" "0000")
    # A stored 8 or above in the top nibble sets bit 31: the int32 reads negative.
    top = packing.word_diagram(torch.tensor([0] * 8, dtype=torch.int8), 4)
    assert top.hex == "0x88888888" and top.word < 0


def test_three_bit_code_straddles_words() -> None:
    # Element 10 of a 3-bit row occupies bits 30..32: two bits in word 0, one in word 1.
    codes = torch.full((1, 11), -4, dtype=torch.int8)  # stored as 0
    codes[0, 10] = 3  # stored as 7 = 0b111
    words = packing.pack(codes, 3)
    assert words.shape == (1, 2)
    assert (int(words[0, 0]) & 0xFFFFFFFF) == 0b11 << 30
    assert int(words[0, 1]) == 1


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(QuantlabError, match="int8"):
        packing.pack(torch.zeros(2, 8, dtype=torch.int32), 4)
    with pytest.raises(QuantlabError, match=r"\[-8, 7\]"):
        packing.pack(torch.full((1, 8), 9, dtype=torch.int8), 4)
    with pytest.raises(QuantlabError, match="needs 1"):
        packing.unpack(torch.zeros(1, 2, dtype=torch.int32), 4, 8)
    with pytest.raises(QuantlabError, match="1 to 8"):
        packing.pack(torch.zeros(1, 8, dtype=torch.int8), 9)
