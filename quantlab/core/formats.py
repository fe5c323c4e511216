"""Number formats as data: every format's fields, range and grid, and exact rounding into it.

A floating-point format is fully described by its exponent and mantissa widths, its bias and what it
does with the all-ones exponent (IEEE keeps it for inf/NaN, FP8 E4M3 "fn" keeps only one NaN code,
FP4 E2M1 keeps nothing). Everything else — largest and smallest values, how many values exist, the
spacing at a magnitude — follows from those numbers, so it is computed here, not typed in.

`round_to_format` is the reference rounding: round-to-nearest-even, computed once from the exact
input (in float64, where every value of every format here is exact), then saturated to the largest
finite value. For float32/float16/bfloat16 inputs that is bit for bit what torch's casts give,
wherever torch's result is finite. Two places where torch differs, on purpose not copied:
  * above the largest value: torch returns inf (fp16, bf16, e5m2) or, for e4m3fn, NaN in torch ≤ 2.11
    and a saturated 448 in torch 2.13's CPU cast — an answer that depends on the version is exactly
    why quantizers clamp before they cast;
  * float64 inputs: torch goes through float32 first and can round twice (1 + 2⁻¹¹ + 2⁻⁴⁰ becomes
    1.0 in fp16 instead of 1 + 2⁻¹⁰); here there is one rounding.
Integer formats and NF4 store codes, not real numbers: with a unit scale, rounding into them is
round-half-even then clamp (INT), or the nearest table entry (NF4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from quantlab.core.errors import QuantlabError

Kind = Literal["float", "int", "table"]
NonFinite = Literal["ieee", "fn", "none"]

# QLoRA's NormalFloat-4: quantiles of a standard normal, rescaled to [-1, 1], with an exact zero
# (bitsandbytes' NF4 code book, Dettmers et al. 2023, appendix E).
NF4_TABLE: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
_ENUMERABLE_BITS = 16


@dataclass(frozen=True)
class Format:
    name: str
    label: str
    bits: int
    kind: Kind
    use: str
    exponent_bits: int = 0
    mantissa_bits: int = 0
    non_finite: NonFinite = "none"
    # (group size, scale bits) of the scheme this format usually ships in, for formats that are
    # unusable without a fine-grained scale; None where a per-channel scale is negligible.
    block_scale: tuple[int, int] | None = None

    @property
    def storage_bits(self) -> float:
        """Bits per value including the block scales of its usual scheme."""
        return self.bits + (self.block_scale[1] / self.block_scale[0] if self.block_scale else 0.0)

    # -- float layout -----------------------------------------------------------------------
    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1 if self.kind == "float" else 0

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number (also the exponent subnormals share)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        top = 2**self.exponent_bits - 1
        return (top - 1 if self.non_finite == "ieee" else top) - self.bias

    # -- range ------------------------------------------------------------------------------
    @property
    def max_value(self) -> float:
        if self.kind == "int":
            return float(2 ** (self.bits - 1) - 1)
        if self.kind == "table":
            return max(NF4_TABLE)
        # e4m3fn gives its all-ones mantissa at the top exponent to NaN, so its top mantissa is one lower.
        top_mantissa = 2**self.mantissa_bits - (2 if self.non_finite == "fn" else 1)
        return (1 + top_mantissa / 2**self.mantissa_bits) * 2.0**self.emax

    @property
    def min_value(self) -> float:
        if self.kind == "int":
            return float(-(2 ** (self.bits - 1)))
        if self.kind == "table":
            return min(NF4_TABLE)
        return -self.max_value

    @property
    def min_normal(self) -> float:
        """Smallest positive number stored at full relative precision (1 for INT, by definition)."""
        if self.kind == "float":
            return 2.0**self.emin
        return self.min_subnormal

    @property
    def min_subnormal(self) -> float:
        """Smallest positive representable number."""
        if self.kind == "float":
            return 2.0 ** (self.emin - self.mantissa_bits)
        if self.kind == "int":
            return 1.0
        return min(v for v in NF4_TABLE if v > 0)

    @property
    def finite_codes(self) -> int:
        """Bit patterns that mean a finite number (±0 counted twice for floats)."""
        if self.kind != "float":
            return 2**self.bits
        reserved = {"ieee": 2 * 2**self.mantissa_bits, "fn": 2, "none": 0}[self.non_finite]
        return 2**self.bits - reserved

    @property
    def distinct_values(self) -> int:
        """Different finite numbers the format can hold (+0 and -0 are one number)."""
        return self.finite_codes - 1 if self.kind == "float" else 2**self.bits

    @property
    def dynamic_range_bits(self) -> float:
        """log2(largest / smallest positive value): how many binades the format spans."""
        return math.log2(self.max_value / self.min_subnormal)

    @property
    def top_precision_bits(self) -> float:
        """log2(largest value / the step just below it): relative precision at the top of the range."""
        below = values(self.name) if self.bits <= _ENUMERABLE_BITS else None
        if below is None:
            step = 2.0 ** (self.emax - self.mantissa_bits)
        else:
            step = (below[-1] - below[-2]).item()
        return math.log2(self.max_value / step)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """torch's own dtype for this format, when torch can cast to it."""
        return _TORCH_DTYPES.get(self.name)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("fp32", "FP32", 32, "float", "training master weights", 8, 23, "ieee"),
    Format("fp16", "FP16", 16, "float", "inference; scales", 5, 10, "ieee"),
    Format("bf16", "BF16", 16, "float", "training and inference", 8, 7, "ieee"),
    Format("fp8_e4m3", "FP8 E4M3", 8, "float",
           "weights and activations (OCP E4M3FN: Ada, Hopper, Blackwell, MI350)", 4, 3, "fn"),
    Format("fp8_e5m2", "FP8 E5M2", 8, "float", "gradients; KV cache", 5, 2, "ieee"),
    Format("int8", "INT8", 8, "int", "weights and activations with a scale"),
    Format("int4", "INT4", 4, "int", "weights, W4A16 with a 16-bit scale per 128", block_scale=(128, 16)),
    Format("nf4", "NF4", 4, "table", "QLoRA weights, an fp32 absmax per 64", block_scale=(64, 32)),
    Format("fp4_e2m1", "FP4 E2M1", 4, "float", "NVFP4 weights, an FP8 scale per 16", 2, 1, "none",
           block_scale=(16, 8)),
)}
FLOAT_FORMATS = tuple(n for n, f in FORMATS.items() if f.kind == "float")
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                 "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise QuantlabError(f"unknown format {name!r}: use one of {', '.join(FORMATS)}") from None


# -- rounding -------------------------------------------------------------------------------------

@torch.no_grad()
def round_to_format(x: torch.Tensor, name: str) -> torch.Tensor:
    """The value each element of `x` becomes when stored in format `name`, as float32.

    Round-to-nearest-even from the exact input, saturating at ±max (inf too); NaN stays NaN.
    Every value of every format here is a float32, so the result is exact.
    """
    fmt = get_format(name)
    if not torch.is_floating_point(x):
        raise QuantlabError(f"expected a floating-point tensor, got {x.dtype}")
    x64 = x.double()
    if fmt.kind == "int":
        return torch.clamp(torch.round(x64), fmt.min_value, fmt.max_value).float()
    if fmt.kind == "table":
        table = torch.tensor(NF4_TABLE, dtype=torch.float64)
        nearest = (x64.unsqueeze(-1) - table).abs().argmin(dim=-1)
        return torch.where(torch.isnan(x64), x64, table[nearest]).float()
    mag = x64.abs()
    _, exp = torch.frexp(mag)  # mag = m · 2^exp with m in [0.5, 1)
    # Below the normal range all numbers share the smallest exponent: that is what subnormals are.
    binade = torch.clamp(exp.to(torch.int64) - 1, min=fmt.emin)
    quantum = torch.pow(2.0, (binade - fmt.mantissa_bits).double())
    # mag / quantum is exact (a power-of-two division) and torch.round is half-to-even.
    rounded = torch.minimum(torch.round(mag / quantum) * quantum, torch.tensor(fmt.max_value, dtype=torch.float64))
    return torch.copysign(rounded, x64).float()


def _check_scalar(value: float) -> float:
    if not math.isfinite(value):
        raise QuantlabError(f"{value} is not a finite number: type a finite value")
    return float(value)


def spacing(value: float, name: str) -> float:
    """Gap between the value stored for |value| and the next representable magnitude above it."""
    fmt = get_format(name)
    stored = abs(round_to_format(torch.tensor([_check_scalar(value)], dtype=torch.float64), name).item())
    if fmt.kind == "int":
        return 1.0
    if fmt.kind == "table":
        above = [v for v in NF4_TABLE if v > stored]
        return (above[0] if above else stored) - (stored if above else max(v for v in NF4_TABLE if v < stored))
    binade = max(math.frexp(stored)[1] - 1, fmt.emin) if stored else fmt.emin
    return 2.0 ** (binade - fmt.mantissa_bits)


@torch.no_grad()
def relative_spacing(magnitudes: torch.Tensor, name: str) -> torch.Tensor:
    """Step to the next value divided by the magnitude, for positive magnitudes inside the range.

    Floats keep this in (2^-(m+1), 2^-m] over all normal numbers (a sawtooth), so round-to-nearest
    errs by at most half that, 2^-(m+1) of the value; a unit-scale integer grid has step 1
    everywhere, so its relative step falls as 1/x.
    """
    fmt = get_format(name)
    mags = magnitudes.double()
    if fmt.kind == "float":
        _, exp = torch.frexp(mags)
        binade = torch.clamp(exp.to(torch.int64) - 1, min=fmt.emin)
        step = torch.pow(2.0, (binade - fmt.mantissa_bits).double())
    else:
        grid = values(name)
        grid = grid[grid >= 0]
        idx = torch.clamp(torch.searchsorted(grid, mags, right=True), 1, grid.numel() - 1)
        step = grid[idx] - grid[idx - 1]
    return step / mags


def precision_curve(name: str, lo: float, hi: float, points: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """(magnitudes, relative spacing) on a log grid from `lo` to `hi`, kept inside the format's range."""
    fmt = get_format(name)
    mags = torch.logspace(math.log10(lo), math.log10(hi), points, dtype=torch.float64)
    mags = mags[(mags >= fmt.min_subnormal) & (mags < fmt.max_value)]
    return mags, relative_spacing(mags, name)


def positive_levels(name: str) -> torch.Tensor:
    """The format's positive values divided by its largest one: where its levels sit in (0, 1]."""
    grid = values(name)
    return grid[grid > 0] / get_format(name).max_value


def format_table() -> list[dict[str, object]]:
    """One row per format with its layout and range, for display."""
    rows = []
    for f in FORMATS.values():
        layout = (f"1 sign · {f.exponent_bits} exponent · {f.mantissa_bits} mantissa" if f.kind == "float"
                  else "two's complement integer" if f.kind == "int" else "4-bit index into 16 normal quantiles")
        rows.append({
            "format": f.label, "bits": f.bits, "layout": layout,
            "bias": f.bias if f.kind == "float" else None,
            "largest": f.max_value, "smallest normal": f.min_normal if f.kind == "float" else None,
            "smallest positive": f.min_subnormal, "distinct values": f.distinct_values,
            "range (binades)": round(f.dynamic_range_bits, 1),
            "precision at top (bits)": round(f.top_precision_bits, 2),
            "typical use": f.use,
        })
    return rows


# -- codes and bit fields ---------------------------------------------------------------------------

@torch.no_grad()
def decode_codes(codes: torch.Tensor, name: str) -> torch.Tensor:
    """The number each bit pattern (an integer in [0, 2^bits)) stands for, as float64."""
    fmt = get_format(name)
    codes = codes.to(torch.int64)
    if fmt.kind == "int":
        return torch.where(codes >= 2 ** (fmt.bits - 1), codes - 2**fmt.bits, codes).double()
    if fmt.kind == "table":
        return torch.tensor(NF4_TABLE, dtype=torch.float64)[codes]
    m, e_bits = fmt.mantissa_bits, fmt.exponent_bits
    sign = torch.where((codes >> (fmt.bits - 1)) & 1 == 1, -1.0, 1.0).double()
    exp = (codes >> m) & (2**e_bits - 1)
    man = (codes & (2**m - 1)).double()
    normal = (1 + man / 2**m) * torch.pow(2.0, (exp - fmt.bias).double())
    sub = man * 2.0 ** (fmt.emin - m)
    value = sign * torch.where(exp == 0, sub, normal)
    top = exp == 2**e_bits - 1
    if fmt.non_finite == "ieee":
        value = torch.where(top & (man == 0), sign * math.inf, value)
        value = torch.where(top & (man != 0), math.nan, value)
    elif fmt.non_finite == "fn":
        value = torch.where(top & (man == 2**m - 1), math.nan, value)
    return value


def decode(code: int, name: str) -> float:
    fmt = get_format(name)
    if not 0 <= code < 2**fmt.bits:
        raise QuantlabError(f"code {code} does not fit in {fmt.bits} bits")
    return decode_codes(torch.tensor([code]), name).item()


def values(name: str) -> torch.Tensor:
    """Every finite value of a format of at most 16 bits, sorted, each once (float64)."""
    fmt = get_format(name)
    if fmt.bits > _ENUMERABLE_BITS:
        raise QuantlabError(f"{fmt.label} has {fmt.distinct_values:,} values: too many to list")
    all_values = decode_codes(torch.arange(2**fmt.bits), name)
    return torch.unique(all_values[torch.isfinite(all_values)])


@dataclass(frozen=True)
class BitFields:
    """How one typed number is stored in one format: the bit segments, the code and the error."""

    name: str
    value: float
    stored: float
    code: int
    segments: tuple[tuple[str, str], ...]  # (field name, bits), most significant first
    subnormal: bool
    saturated: bool

    @property
    def bits(self) -> str:
        return "".join(b for _, b in self.segments)

    @property
    def error(self) -> float:
        return self.stored - self.value

    @property
    def relative_error(self) -> float:
        return abs(self.error) / abs(self.value) if self.value else 0.0


def bit_fields(value: float, name: str) -> BitFields:
    """Round `value` into format `name` and split the stored pattern into its fields."""
    fmt = get_format(name)
    value = _check_scalar(value)
    stored = round_to_format(torch.tensor([value], dtype=torch.float64), name).item()
    saturated = abs(value) > fmt.max_value or value < fmt.min_value
    if fmt.kind == "int":
        code = int(stored) % 2**fmt.bits
        pattern = format(code, f"0{fmt.bits}b")
        return BitFields(name, value, stored, code, (("sign", pattern[0]), ("two's complement", pattern[1:])),
                         False, saturated)
    if fmt.kind == "table":
        code = NF4_TABLE.index(stored)
        return BitFields(name, value, stored, code, (("table index", format(code, f"0{fmt.bits}b")),),
                         False, saturated)
    sign = 1 if math.copysign(1.0, stored) < 0 else 0
    mag = abs(stored)
    subnormal = 0 < mag < fmt.min_normal
    if mag == 0 or subnormal:
        exp, man = 0, round(mag / fmt.min_subnormal)
    else:
        binade = math.frexp(mag)[1] - 1
        exp, man = binade + fmt.bias, round((mag / 2.0**binade - 1) * 2**fmt.mantissa_bits)
    code = (sign << (fmt.bits - 1)) | (exp << fmt.mantissa_bits) | man
    segments = (("sign", str(sign)), ("exponent", format(exp, f"0{fmt.exponent_bits}b")),
                ("mantissa", format(man, f"0{fmt.mantissa_bits}b")))
    return BitFields(name, value, stored, code, segments, subnormal, saturated)














