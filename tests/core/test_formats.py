"""quantlab.formats: exact rounding against torch's casts and an enumerated oracle, fields, ranges."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import formats
from quantlab.core.errors import QuantlabError

TORCH_FORMATS = ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2"]
SMALL_FLOATS = ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.float().view(torch.int32)


def _wide_random(n: int, seed: int, lo_exp: int = -40, hi_exp: int = 20) -> torch.Tensor:
    """Values spread over many binades (both signs), so subnormals and large values all occur."""
    g = torch.Generator().manual_seed(seed)
    mant = torch.rand(n, generator=g) * 2 - 1
    exps = torch.randint(lo_exp, hi_exp, (n,), generator=g).float()
    return mant * torch.exp2(exps)


def _midpoints(name: str) -> torch.Tensor:
    """Exact ties: halfway between neighbouring representable values (all exact in float32)."""
    v = formats.values(name)
    return ((v[1:] + v[:-1]) / 2).float()


@pytest.mark.parametrize("name", TORCH_FORMATS)
def test_round_matches_torch_cast_on_random_values(name):
    fmt = formats.get_format(name)
    # From below the smallest subnormal to past the largest value (float32 permitting).
    lo = fmt.emin - fmt.mantissa_bits - 3
    hi = min(fmt.emax + 2, 127)
    x = _wide_random(400_000, seed=TORCH_FORMATS.index(name), lo_exp=lo, hi_exp=hi)
    ours = formats.round_to_format(x, name)
    ref = x.to(fmt.torch_dtype).float()
    finite = torch.isfinite(ref)
    assert finite.float().mean() > 0.9
    assert torch.equal(_bits(ours[finite]), _bits(ref[finite]))
    # Subnormal results (and flushes to ±0) are among the values checked.
    tiny = (ref.abs() < fmt.min_normal) & finite
    assert tiny.sum() > 1000


@pytest.mark.parametrize("name", TORCH_FORMATS)
def test_round_matches_torch_cast_on_ties(name):
    fmt = formats.get_format(name)
    ties = _midpoints(name)
    ties = ties[ties.abs() <= fmt.max_value]
    ours = formats.round_to_format(ties, name)
    assert torch.equal(_bits(ours), _bits(ties.to(fmt.torch_dtype).float()))
    # Ties to even: the chosen neighbour's lowest mantissa bit is 0.
    if fmt.bits == 8:
        codes = ours.to(fmt.torch_dtype).view(torch.uint8).int()
        assert torch.all(codes % 2 == 0)


@pytest.mark.parametrize("name", TORCH_FORMATS + ["fp32"])
def test_every_bit_pattern_decodes_like_torch(name):
    fmt = formats.get_format(name)
    if fmt.bits == 32:
        codes = torch.randint(-(2**31), 2**31 - 1, (200_000,), dtype=torch.int64,
                              generator=torch.Generator().manual_seed(3))
        ref = codes.to(torch.int32).view(torch.float32).double()
        codes = codes % 2**32
    else:
        codes = torch.arange(2**fmt.bits)
        raw = codes.to(torch.int16 if fmt.bits == 16 else torch.uint8)
        ref = (raw if fmt.bits == 8 else raw.to(torch.int16)).view(fmt.torch_dtype).double()
    ours = formats.decode_codes(codes, name)
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    keep = ~torch.isnan(ref)
    assert torch.equal(ours[keep], ref[keep])


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "int8", "int4", "nf4"])
def test_bit_fields_round_trip_every_code(name):
    fmt = formats.get_format(name)
    for code in range(2**fmt.bits):
        value = formats.decode(code, name)
        if not math.isfinite(value):
            continue
        fields = formats.bit_fields(value, name)
        assert fields.stored == value and fields.error == 0
        if value != 0 or fmt.kind != "table":
            assert fields.code == code, (name, code, value)
        assert int(fields.bits, 2) == fields.code
        assert len(fields.bits) == fmt.bits


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_bit_fields_round_trip_sampled_16_bit_codes(name):
    codes = torch.randint(0, 2**16, (3000,), generator=torch.Generator().manual_seed(5)).tolist()
    for code in codes:
        value = formats.decode(code, name)
        if math.isfinite(value):
            assert formats.bit_fields(value, name).code == code


def test_bit_fields_known_patterns():
    one = formats.bit_fields(1.0, "fp32")
    assert one.segments == (("sign", "0"), ("exponent", "01111111"), ("mantissa", "0" * 23))
    assert formats.bit_fields(-2.0, "fp16").code == 0xC000
    top = formats.bit_fields(448.0, "fp8_e4m3")
    assert top.bits == "01111110" and not top.saturated
    tiny = formats.bit_fields(2.0**-9, "fp8_e4m3")
    assert tiny.bits == "00000001" and tiny.subnormal
    assert formats.bit_fields(-1.0, "int8").bits == "11111111"
    assert formats.bit_fields(3.14159, "fp8_e4m3").stored == 3.25
    sat = formats.bit_fields(1000.0, "fp8_e4m3")
    assert sat.saturated and sat.stored == 448.0
    assert formats.bit_fields(0.3, "nf4").stored == pytest.approx(0.33791524171829224)


def test_saturation_instead_of_inf_or_nan():
    big = torch.tensor([465.0, 470.0, 1e6, float("inf"), -1e30, -float("inf")])
    assert formats.round_to_format(big, "fp8_e4m3").tolist() == [448.0, 448.0, 448.0, 448.0, -448.0, -448.0]
    assert formats.round_to_format(big, "fp8_e5m2").abs().max().item() == 57344.0
    assert formats.round_to_format(torch.tensor([7e4, 65520.0]), "fp16").tolist() == [65504.0, 65504.0]
    assert formats.round_to_format(torch.tensor([100.0, -7.0]), "fp4_e2m1").tolist() == [6.0, -6.0]
    # 464 is the tie between 448 and the (NaN) pattern above it; ties to even keep 448.
    assert formats.round_to_format(torch.tensor([464.0]), "fp8_e4m3").item() == 448.0
    assert math.isnan(formats.round_to_format(torch.tensor([float("nan")]), "fp16").item())


@pytest.mark.parametrize("name", SMALL_FLOATS)
def test_round_matches_enumerated_nearest_even_oracle(name):
    """An independent oracle: the nearest listed value, ties to the one with an even code."""
    grid = formats.values(name)
    codes = {v: formats.bit_fields(v, name).code for v in grid.tolist()}
    fmt = formats.get_format(name)
    x = torch.cat([_wide_random(20_000, seed=11, lo_exp=-12, hi_exp=int(math.log2(fmt.max_value)) + 1),
                   _midpoints(name)]).double()
    x = x[x.abs() <= fmt.max_value]
    ours = formats.round_to_format(x, name).double()
    dist = (x.unsqueeze(1) - grid).abs()
    best = dist.min(dim=1).values
    for i in range(x.numel()):
        candidates = grid[dist[i] == best[i]].tolist()
        expected = candidates[0] if len(candidates) == 1 else next(v for v in candidates if codes[v] % 2 == 0)
        assert ours[i].item() == expected, (name, x[i].item(), candidates)


def test_fp4_matches_compressed_tensors():
    cast = pytest.importorskip("compressed_tensors.quantization.utils.fp4_utils")
    x = torch.cat([_wide_random(50_000, seed=2, lo_exp=-4, hi_exp=4), _midpoints("fp4_e2m1"),
                   torch.tensor([7.0, -9.0])])
    ref = cast.cast_to_fp4(x.clone())
    assert torch.equal(formats.round_to_format(x, "fp4_e2m1"), ref)


def test_float64_input_is_rounded_once():
    # torch goes float64 -> float32 -> float16 and lands on the tie's even neighbour (1.0);
    # the exact value is above the tie, so the correct result is the next fp16 value.
    x = torch.tensor([1 + 2**-11 + 2**-40], dtype=torch.float64)
    assert formats.round_to_format(x, "fp16").item() == 1 + 2**-10
    assert x.to(torch.float16).item() == 1.0


def test_fp32_matches_torch_from_float64():
    g = torch.Generator().manual_seed(9)
    x = (torch.rand(200_000, generator=g, dtype=torch.float64) * 2 - 1) * torch.exp2(
        torch.randint(-160, 120, (200_000,), generator=g).double())
    assert torch.equal(_bits(formats.round_to_format(x, "fp32")), _bits(x.float()))


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_property_round_equals_cast_whenever_the_cast_is_finite(value):
    x = torch.tensor([value], dtype=torch.float32)
    for name in TORCH_FORMATS:
        ref = x.to(formats.get_format(name).torch_dtype).float()
        if torch.isfinite(ref).all() and abs(value) <= formats.get_format(name).max_value:
            assert torch.equal(_bits(formats.round_to_format(x, name)), _bits(ref))


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp32"])
def test_range_constants_match_torch_finfo(name):
    fmt = formats.get_format(name)
    info = torch.finfo(fmt.torch_dtype)
    assert fmt.max_value == info.max
    assert fmt.min_normal == info.smallest_normal
    assert fmt.min_subnormal == info.smallest_normal * info.eps
    assert fmt.bits == info.bits


@pytest.mark.parametrize("name", [n for n, f in formats.FORMATS.items() if f.bits <= 16])
def test_value_counts_and_fixed_points(name):
    fmt = formats.get_format(name)
    grid = formats.values(name)
    assert grid.numel() == fmt.distinct_values
    assert grid.max().item() == fmt.max_value
    assert grid[grid > 0].min().item() == fmt.min_subnormal
    assert torch.equal(formats.round_to_format(grid, name).double(), grid)


def test_known_counts():
    counts = {n: f.distinct_values for n, f in formats.FORMATS.items()}
    assert counts["fp8_e4m3"] == 253 and counts["fp8_e5m2"] == 247 and counts["fp4_e2m1"] == 15
    assert counts["int8"] == 256 and counts["nf4"] == 16
    assert formats.get_format("fp32").finite_codes == 2**32 - 2**24


def test_integer_and_nf4_rounding():
    x = torch.tensor([2.5, 3.5, -2.5, 200.0, -200.0, 0.49])
    assert formats.round_to_format(x, "int8").tolist() == [2.0, 4.0, -2.0, 127.0, -128.0, 0.0]
    assert formats.round_to_format(x, "int4").tolist() == [2.0, 4.0, -2.0, 7.0, -8.0, 0.0]
    table = torch.tensor(formats.NF4_TABLE)
    assert torch.equal(formats.round_to_format(table, "nf4"), table)
    assert formats.round_to_format(torch.tensor([5.0, -0.01]), "nf4").tolist() == [1.0, 0.0]


def test_spacing_is_relative_for_floats_and_absolute_for_integers():
    assert formats.spacing(1.0, "fp16") == 2**-10
    assert formats.spacing(1000.0, "fp16") == 0.5
    assert formats.spacing(300.0, "fp8_e4m3") == 32
    assert formats.spacing(5.0, "int8") == 1.0
    mags = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    assert formats.relative_spacing(mags, "int8").tolist() == [1.0, 0.1, 0.01]
    rel = formats.relative_spacing(torch.logspace(-4, 4, 200, dtype=torch.float64), "fp16")
    normal = rel[torch.logspace(-4, 4, 200, dtype=torch.float64) >= 2**-14]
    assert normal.max() <= 2**-10 and normal.min() > 2**-11


def test_user_errors_are_one_line():
    with pytest.raises(QuantlabError, match="unknown format"):
        formats.round_to_format(torch.ones(2), "fp12")
    with pytest.raises(QuantlabError, match="finite"):
        formats.bit_fields(float("nan"), "fp16")
    with pytest.raises(QuantlabError, match="too many"):
        formats.values("fp32")
