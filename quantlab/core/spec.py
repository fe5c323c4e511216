"""`QuantSpec`: how one tensor is quantized.

Field names follow compressed-tensors' `QuantizationArgs`, so a spec maps one-to-one onto the
`quantization_config` that llm-compressor writes. A spec is frozen and hashable: the same object is
the cache key for computed summaries, the state kept in the page URL and the export config.
A weight spec may carry the spec of the layer's input activations (W8A8, FP8), which is how
compressed-tensors' `QuantizationScheme` pairs `weights` with `input_activations`.

Microscaling formats are specs too: FP4 E2M1 or FP8 E4M3 values in small groups whose scales are
themselves stored in 8 bits (`scale_dtype`): an E4M3 scale per 16 values under one FP32 global
scale for the tensor (NVFP4, strategy "tensor_group"), or a power-of-two E8M0 scale per 32 values
(MXFP4, MXFP8). FP8_BLOCK gives each 2-D tile of a weight one scale (strategy "block",
`block_structure` [rows, columns] as compressed-tensors names it: DeepSeek-V3's 128×128).

NF4 (type "nf4") is the one scheme here that is not compressed-tensors': bitsandbytes' 4-bit
NormalFloat, a 16-entry table of normal quantiles scaled by the absmax of each block of 64, whose
absmax scales may themselves be stored in 8 bits (`scale_dtype` "dq8", bitsandbytes' double
quantization; see `quantlab.core.nf4`). It can be quantized, measured and sized, not exported.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from quantlab.core.errors import QuantlabError

QuantType = Literal["int", "float", "nf4"]
Strategy = Literal["tensor", "channel", "group", "token", "tensor_group", "block"]
# How a scale itself is stored: in the tensor's dtype (None; NF4: bitsandbytes' fp32 absmax), as
# an FP8 E4M3 number (NVFP4), as an E8M0 power-of-two exponent byte (the OCP MX formats), or as an
# 8-bit code of bitsandbytes' dynamic map with an fp32 scale per 256 of them (NF4 double quant).
ScaleDtype = Literal["e4m3", "e8m0", "dq8"]
# Activations: static (False), observed on every batch (True), or "local": NVFP4's group scales
# observed on every batch under a global scale calibrated once.
Dynamic = bool | Literal["local"]

STRATEGIES: tuple[str, ...] = ("tensor", "channel", "group", "token", "tensor_group", "block")
GROUPED: tuple[str, ...] = ("group", "tensor_group")
SCALE_DTYPES: tuple[str, ...] = ("e4m3", "e8m0", "dq8")
FLOAT_BITS: tuple[int, ...] = (4, 8)  # FP4 E2M1, FP8 E4M3
MX_GROUP = 32  # the OCP MX block: compressed-tensors takes E8M0 scales only in groups of 32
NVFP4_GROUP = 16
FP8_BLOCK = (128, 128)  # compressed-tensors' FP8_BLOCK weight tiles; its activations go in groups of 128
NF4_GROUP = 64  # bitsandbytes' default blocksize for 4-bit weights
# The block sizes bitsandbytes' quantize_4bit accepts.
NF4_GROUPS: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096)
OBSERVERS: tuple[str, ...] = ("minmax", "mse", "percentile")
OBSERVER_LABELS: dict[str, str] = {"minmax": "min-max", "mse": "MSE search", "percentile": "percentile"}
# The tunable knobs of each observer (compressed-tensors' `observer_kwargs`), with their defaults:
# llm-compressor's MSE observer shrinks the range by 1/grid per step down to (1 - maxshrink) and
# stops after `patience` steps without improvement, scoring each candidate by sum |x - x̂|^norm.
OBSERVER_KWARGS: dict[str, dict[str, float]] = {
    "minmax": {},
    "mse": {"maxshrink": 0.2, "grid": 100.0, "norm": 2.4, "patience": 5.0},
    "percentile": {"percentile": 99.9},
}
FP8_BITS = 8
# How compressed-tensors 0.20 spells each scale dtype in config.json.
CT_SCALE_DTYPES: dict[str, str] = {"e4m3": "torch.float8_e4m3fn", "e8m0": "torch.uint8"}


@dataclass(frozen=True)
class QuantSpec:
    num_bits: int = 8
    type: QuantType = "int"
    symmetric: bool = True
    strategy: Strategy = "tensor"
    group_size: int | None = None
    observer: str = "minmax"
    dynamic: Dynamic = False
    activations: QuantSpec | None = None
    # Sorted (name, value) pairs rather than a dict, so the spec stays hashable; a dict is accepted.
    observer_kwargs: tuple[tuple[str, float], ...] = ()
    scale_dtype: ScaleDtype | None = None
    # [rows, columns] of the tile one scale covers, for strategy "block" only; a tuple so that the
    # spec stays hashable (a list is accepted).
    block_structure: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.type not in ("int", "float", "nf4"):
            raise QuantlabError(f"unknown type {self.type!r}: use 'int', 'float' or 'nf4'")
        if self.type == "int" and not 2 <= self.num_bits <= 8:
            raise QuantlabError(f"num_bits={self.num_bits} is out of range: integer formats here use 2 to 8 bits")
        if self.type == "float" and self.num_bits not in FLOAT_BITS:
            raise QuantlabError(f"float quantization supports FP8 E4M3 (num_bits=8) and FP4 E2M1 (num_bits=4), "
                                f"not {self.num_bits} bits")
        if self.type == "float" and not self.symmetric:
            raise QuantlabError("asymmetric float formats are not compressed-tensors schemes: use symmetric")
        if self.strategy not in STRATEGIES:
            raise QuantlabError(f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.strategy in GROUPED:
            if self.group_size is None or self.group_size < 1:
                raise QuantlabError(f"strategy {self.strategy!r} needs a positive group_size (e.g. 128)")
        elif self.group_size is not None:
            raise QuantlabError(f"group_size is only used with grouped strategies, not {self.strategy!r}")
        self._check_block()
        self._check_nf4()
        self._check_microscaling()
        if self.observer not in OBSERVERS:
            raise QuantlabError(f"unknown observer {self.observer!r}: use one of {', '.join(OBSERVERS)}")
        self._normalize_observer_kwargs()
        if self.activations is not None:
            if self.activations.activations is not None:
                raise QuantlabError("activation specs cannot carry activation specs of their own")
            if self.activations.type == "nf4":
                raise QuantlabError("NF4 quantizes weights only: bitsandbytes keeps activations in 16 bits")
            if self.activations.strategy == "block":
                raise QuantlabError("block scales are for weights: compressed-tensors quantizes activations "
                                    "per tensor, per token or per group")
            if not self.activations.dynamic and self.activations.strategy != "tensor":
                raise QuantlabError(f"static activation scales are per tensor, not per {self.activations.strategy}: "
                                    "use dynamic quantization for per-token scales")

    def _check_block(self) -> None:
        """Strategy "block" and `block_structure` go together: one scale per [rows, columns] tile."""
        if self.strategy != "block":
            if self.block_structure is not None:
                raise QuantlabError(f"block_structure is only used with strategy 'block', not {self.strategy!r}")
            return
        raw = self.block_structure
        try:
            block = tuple(int(v) for v in raw) if raw is not None else ()  # type: ignore[union-attr]
        except (TypeError, ValueError):
            block = ()
        if len(block) != 2 or min(block) < 1 or block != tuple(raw or ()):
            raise QuantlabError(f"strategy 'block' needs block_structure [rows, columns] of two positive whole "
                                f"numbers (e.g. [128, 128]), not {raw!r}")
        object.__setattr__(self, "block_structure", block)

    def _check_nf4(self) -> None:
        """NF4 is bitsandbytes' weight format: absmax scales (no observer to choose, no zero point) over
        blocks of one of the sizes its kernels take; its scales may be double-quantized ("dq8"), and
        nothing else takes "dq8"."""
        if self.type != "nf4":
            if self.scale_dtype == "dq8":
                raise QuantlabError("scale_dtype 'dq8' (double-quantized absmax scales) is NF4's: use type 'nf4'")
            return
        if self.num_bits != 4 or not self.symmetric or self.strategy != "group":
            raise QuantlabError("NF4 is 4-bit, symmetric (absmax) and blockwise: num_bits 4, symmetric, "
                                "strategy 'group'")
        if self.group_size not in NF4_GROUPS:
            raise QuantlabError(f"bitsandbytes quantizes NF4 in blocks of {', '.join(map(str, NF4_GROUPS))}, "
                                f"not {self.group_size}")
        if self.scale_dtype not in (None, "dq8") or self.observer != "minmax" or self.dynamic:
            raise QuantlabError("NF4 scales are each block's absmax, stored in fp32 or double-quantized ('dq8'): "
                                "no observer, scale dtype or dynamic mode to choose")
        if self.activations is not None:
            raise QuantlabError("NF4 quantizes weights only: bitsandbytes keeps activations in 16 bits")

    def _check_microscaling(self) -> None:
        """The combinations compressed-tensors 0.20 computes: NVFP4's E4M3 scales under a global
        scale, MX's E8M0 scales in groups of 32 for float elements; nothing else."""
        if self.dynamic not in (True, False, "local"):
            raise QuantlabError(f"dynamic must be true, false or 'local', not {self.dynamic!r}")
        if self.dynamic == "local" and self.strategy != "tensor_group":
            raise QuantlabError("dynamic 'local' (group scales per batch under a calibrated global scale) "
                                "needs strategy 'tensor_group'")
        if self.scale_dtype is not None and self.scale_dtype not in SCALE_DTYPES:
            raise QuantlabError(f"unknown scale_dtype {self.scale_dtype!r}: use one of {', '.join(SCALE_DTYPES)}")
        if self.strategy == "tensor_group" and (self.type, self.num_bits, self.scale_dtype) != ("float", 4, "e4m3"):
            raise QuantlabError("strategy 'tensor_group' is NVFP4's: FP4 values (type float, 4 bits) "
                                "with E4M3 group scales (scale_dtype 'e4m3')")
        if self.scale_dtype == "e4m3" and self.strategy != "tensor_group":
            raise QuantlabError("E4M3 scales need the FP32 global scale of strategy 'tensor_group' (NVFP4)")
        if self.scale_dtype == "e8m0" and (self.type != "float" or self.strategy != "group"
                                           or self.group_size != MX_GROUP):
            raise QuantlabError(f"E8M0 (MX) scales go with float values in groups of {MX_GROUP}")
        if self.type == "float" and self.num_bits == 4 and self.scale_dtype is None:
            raise QuantlabError("FP4 values need 8-bit group scales: scale_dtype 'e4m3' (NVFP4) or 'e8m0' (MXFP4)")
        if self.scale_dtype is not None and self.observer == "mse":
            raise QuantlabError("the MSE search is not offered for microscaling formats: use min-max or percentile")

    def _normalize_observer_kwargs(self) -> None:
        raw = self.observer_kwargs
        items = raw.items() if isinstance(raw, Mapping) else raw
        try:
            kwargs = tuple(sorted((str(k), float(v)) for k, v in items))
        except (TypeError, ValueError):
            raise QuantlabError("observer_kwargs must be (name, number) pairs") from None
        allowed = OBSERVER_KWARGS[self.observer]
        for key, value in kwargs:
            if key not in allowed:
                hint = ", ".join(allowed) or "none"
                raise QuantlabError(f"observer {self.observer!r} has no setting {key!r} (settings: {hint})")
            if key == "percentile" and not 50 < value <= 100:
                raise QuantlabError(f"percentile must be in (50, 100], not {value:g}")
            if key in ("grid", "patience") and value < 1:
                raise QuantlabError(f"{key} must be at least 1, not {value:g}")
            if key == "maxshrink" and not 0 < value < 1:
                raise QuantlabError(f"maxshrink must be in (0, 1), not {value:g}")
            if key == "norm" and value <= 0:
                raise QuantlabError(f"norm must be positive, not {value:g}")
        object.__setattr__(self, "observer_kwargs", kwargs)

    def observer_setting(self, key: str) -> float:
        """One observer setting: the spec's own value, else the observer's default."""
        return dict(self.observer_kwargs).get(key, OBSERVER_KWARGS[self.observer][key])

    # -- the integer grid --------------------------------------------------------------------
    @property
    def qmin(self) -> int:
        """Smallest code; for FP8 the grid is handled by the float format, so these are bounds."""
        return -(2 ** (self.num_bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.num_bits - 1) - 1

    @property
    def levels(self) -> int:
        return 2**self.num_bits

    @property
    def label(self) -> str:
        """Short human name, e.g. 'INT4 sym g128' or 'FP8 channel'."""
        if self.scale_dtype == "e4m3":
            return "NVFP4"
        if self.scale_dtype == "e8m0":
            return f"MXFP{self.num_bits}"
        if self.type == "nf4":
            return f"NF4 g{self.group_size}" + (" double-quant" if self.scale_dtype == "dq8" else "")
        fmt = f"FP{self.num_bits}" if self.type == "float" else f"INT{self.num_bits}"
        mode = "sym" if self.symmetric else "asym"
        if self.block_structure is not None:
            gran = "block {}x{}".format(*self.block_structure)
        else:
            gran = f"g{self.group_size}" if self.strategy == "group" else self.strategy
        obs = "" if self.observer == "minmax" else f" {self.observer}"
        return f"{fmt} {mode} {gran}{obs}"

    def with_(self, **changes: object) -> QuantSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a one-line `QuantlabError` if this spec cannot quantize a tensor of `shape`."""
        if len(shape) == 0:
            raise QuantlabError("cannot quantize a scalar: pick a weight matrix or an activation")
        if self.strategy in ("channel", "token", "block", *GROUPED) and len(shape) != 2:
            raise QuantlabError(
                f"strategy {self.strategy!r} needs a 2-D tensor [rows, columns]; this one is {tuple(shape)}"
                " (try strategy 'tensor')"
            )
        if self.strategy in GROUPED:
            cols = shape[-1]
            assert self.group_size is not None
            if cols % self.group_size:
                sizes = NF4_GROUPS if self.type == "nf4" else (16, 32, 64, 128, 256, 512)
                divisors = [g for g in sizes if cols % g == 0]
                fallback = "no NF4 block size divides it" if self.type == "nf4" else "use strategy 'channel'"
                hint = f"sizes that divide it: {', '.join(map(str, divisors))}" if divisors else fallback
                raise QuantlabError(
                    f"group_size {self.group_size} does not divide the input dimension {cols} ({hint})"
                )

    # -- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> QuantSpec:
        """One of llm-compressor's presets by its name (W4A16, W8A8, FP8_DYNAMIC, ...)."""
        try:
            return PRESETS[name.upper()]
        except KeyError:
            raise QuantlabError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None

    def with_group_size(self, group_size: int) -> QuantSpec:
        """The same scheme with weights in groups of `group_size` (what `--group-size` and the
        Storage lesson's slider mean): integer (or NF4) weights only, whatever their strategy was."""
        if self.type == "float":
            raise QuantlabError(f"{self.label} is a float format, which has no group size to choose here")
        return self.with_(strategy="group", group_size=group_size)

    # -- compressed-tensors config ----------------------------------------------------------
    def to_ct_args(self, calibrated: bool = False) -> dict[str, object]:
        """`QuantizationArgs.model_dump()` for this spec, as compressed-tensors 0.20 writes it in
        config.json (fields left at their default omitted). `calibrated` marks a static activation
        spec, whose scale comes from the min and max over all calibration tokens."""
        if self.type == "nf4":
            raise QuantlabError("NF4 is bitsandbytes' format, not a compressed-tensors scheme: there is no "
                                "compressed-tensors checkpoint or quantization_config to write (bitsandbytes "
                                "quantizes at load time, through transformers' BitsAndBytesConfig)")
        args: dict[str, object] = {"dynamic": self.dynamic, "group_size": self.group_size,
                                   "num_bits": self.num_bits, "strategy": self.strategy,
                                   "symmetric": self.symmetric, "type": self.type}
        if self.block_structure is not None:
            args["block_structure"] = list(self.block_structure)
        if self.scale_dtype is not None:
            args["scale_dtype"] = CT_SCALE_DTYPES[self.scale_dtype]
        if calibrated:
            args["observer"] = "static_minmax"
        elif self.observer != "minmax":
            args["observer"] = self.observer
            if self.observer_kwargs:
                args["observer_kwargs"] = dict(self.observer_kwargs)
        return args

    def to_ct_scheme(self) -> dict[str, object]:
        """The weights / input_activations pair of a compressed-tensors `QuantizationScheme`."""
        acts = self.activations
        # NVFP4's "local" activations calibrate their global scale, as static ones do their scale.
        calibrated = acts is not None and acts.dynamic is not True
        return {"input_activations": acts.to_ct_args(calibrated=calibrated) if acts is not None else None,
                "output_activations": None, "weights": self.to_ct_args()}

    # -- URL and cache-key form ---------------------------------------------------------------
    def to_url(self) -> str:
        """A registered scheme's slug, else a compact spelling of every field (`from_url` reads both)."""
        for slug, scheme in SCHEMES.items():
            if scheme.spec == self:
                return slug
        return _spell(self)

    @classmethod
    def from_url(cls, text: str) -> QuantSpec:
        """Parse `to_url` output; a malformed value is a one-line `QuantlabError`."""
        if text in SCHEMES and SCHEMES[text].spec is not None:
            return SCHEMES[text].spec  # type: ignore[return-value]
        weights, _, acts = text.partition("+")
        spec = _parse(weights)
        return spec.with_(activations=_parse(acts)) if acts else spec


def _spell(spec: QuantSpec) -> str:
    fmt = {"float": f"fp{spec.num_bits}", "int": f"int{spec.num_bits}", "nf4": "nf4"}[spec.type]
    if spec.block_structure is not None:
        gran = "b{}x{}".format(*spec.block_structure)
    else:
        gran = {"group": f"g{spec.group_size}", "tensor_group": f"tg{spec.group_size}"}.get(spec.strategy,
                                                                                           spec.strategy)
    parts = [fmt, "sym" if spec.symmetric else "asym", gran]
    if spec.scale_dtype:
        parts.append(spec.scale_dtype)
    if spec.dynamic == "local":
        parts.append("local")
    elif spec.dynamic:
        parts.append("dyn")
    if spec.observer != "minmax":
        parts.append(spec.observer + "".join(f",{k}={v:g}" for k, v in spec.observer_kwargs))
    text = "-".join(parts)
    return f"{text}+{_spell(spec.activations)}" if spec.activations is not None else text


def _parse(text: str) -> QuantSpec:
    parts = text.split("-")
    try:
        fmt, mode, gran, *rest = parts
        if mode not in ("sym", "asym") or not fmt.startswith(("fp", "int", "nf4")):
            raise ValueError
        if fmt == "nf4":
            fields: dict[str, object] = {"type": "nf4", "num_bits": 4}
        elif fmt.startswith("fp"):
            fields = {"type": "float", "num_bits": int(fmt[2:])}
        else:
            fields = {"type": "int", "num_bits": int(fmt[3:])}
        fields["symmetric"] = mode == "sym"
        if gran.startswith("tg"):
            fields.update(strategy="tensor_group", group_size=int(gran[2:]))
        elif gran.startswith("g"):
            fields.update(strategy="group", group_size=int(gran[1:]))
        elif gran.startswith("b"):
            rows, cols = gran[1:].split("x")
            fields.update(strategy="block", block_structure=(int(rows), int(cols)))
        else:
            fields["strategy"] = gran
        for part in rest:
            if part == "dyn":
                fields["dynamic"] = True
            elif part == "local":
                fields["dynamic"] = "local"
            elif part in SCALE_DTYPES:
                fields["scale_dtype"] = part
            else:
                name, *settings = part.split(",")
                fields["observer"] = name
                fields["observer_kwargs"] = tuple((k, float(v)) for k, v in (s.split("=") for s in settings))
        return QuantSpec(**fields)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise QuantlabError(f"{text!r} is not a quantization scheme (e.g. w4a16 or int4-sym-g64)") from None


# -- the one registry of named schemes ------------------------------------------------------------

@dataclass(frozen=True)
class Scheme:
    """A named scheme: the slug is what URLs, cache keys and the CLI carry; pages show the label.

    `spec` is None for the unquantized baseline. `preset` is compressed-tensors' preset name when
    the scheme is one of llm-compressor's (W4A16, FP8_DYNAMIC, ...).
    """

    slug: str
    label: str
    description: str
    spec: QuantSpec | None
    preset: str | None = None


def _int_weights(bits: int, group_size: int | None = 128, symmetric: bool = True,
                 strategy: Strategy = "group") -> QuantSpec:
    if group_size is None:
        return QuantSpec(num_bits=bits, symmetric=symmetric, strategy=strategy)
    return QuantSpec(num_bits=bits, symmetric=symmetric, strategy="group", group_size=group_size)


def _fp4(strategy: Strategy, group_size: int, scale_dtype: ScaleDtype) -> QuantSpec:
    return QuantSpec(num_bits=4, type="float", strategy=strategy, group_size=group_size, scale_dtype=scale_dtype)


_NVFP4 = _fp4("tensor_group", NVFP4_GROUP, "e4m3")
_MXFP4 = _fp4("group", MX_GROUP, "e8m0")
_MXFP8 = QuantSpec(num_bits=8, type="float", strategy="group", group_size=MX_GROUP, scale_dtype="e8m0")
_FP8_PER_TOKEN = QuantSpec(num_bits=8, type="float", strategy="token", dynamic=True)
# DeepSeek-V3's recipe: a weight scale per 128x128 tile, activations per token in groups of 128.
_FP8_BLOCK = QuantSpec(num_bits=8, type="float", strategy="block", block_structure=FP8_BLOCK,
                       activations=QuantSpec(num_bits=8, type="float", strategy="group",
                                             group_size=FP8_BLOCK[1], dynamic=True))
_NF4 = QuantSpec(num_bits=4, type="nf4", strategy="group", group_size=NF4_GROUP)
_W8A8_DYNAMIC = QuantSpec(num_bits=8, strategy="channel",
                          activations=QuantSpec(num_bits=8, strategy="token", dynamic=True))

SCHEMES: dict[str, Scheme] = {s.slug: s for s in (
    Scheme("bf16", "BF16", "unquantized 16-bit weights", None),
    Scheme("w4a16", "W4A16 g128", "4-bit weights, groups of 128", _int_weights(4), "W4A16"),
    Scheme("w4a16-asym", "W4A16 asym g128", "4-bit weights with zero points, groups of 128",
           _int_weights(4, symmetric=False), "W4A16_ASYM"),
    Scheme("w4a16-g32", "W4A16 g32", "4-bit weights, groups of 32", _int_weights(4, 32)),
    Scheme("w4a16-g64", "W4A16 g64", "4-bit weights, groups of 64", _int_weights(4, 64)),
    Scheme("w4a16-g256", "W4A16 g256", "4-bit weights, groups of 256", _int_weights(4, 256)),
    Scheme("w4a16-channel", "W4A16 per-channel", "4-bit weights, one scale per output channel",
           _int_weights(4, None, strategy="channel")),
    Scheme("w4a16-tensor", "W4A16 per-tensor", "4-bit weights, one scale for the whole matrix",
           _int_weights(4, None, strategy="tensor")),
    Scheme("w3a16", "W3A16 g128", "3-bit weights, groups of 128", _int_weights(3)),
    # compressed-tensors 0.20 groups W8A16 by 128 too (not per-channel).
    Scheme("w8a16", "W8A16", "8-bit weights, groups of 128", _int_weights(8), "W8A16"),
    Scheme("w8a16-channel", "W8A16 per-channel", "8-bit weights, one scale per output channel",
           _int_weights(8, None, strategy="channel")),
    Scheme("w8a8", "W8A8 (dynamic per-token)", "8-bit weights per channel, activations scaled per token at run time",
           _W8A8_DYNAMIC, "W8A8"),
    Scheme("w8a8-static", "W8A8 (static per-tensor)", "8-bit weights per channel, one calibrated activation scale",
           _W8A8_DYNAMIC.with_(activations=QuantSpec(num_bits=8, strategy="tensor"))),
    Scheme("fp8", "FP8 (static per-tensor)", "FP8 weights and activations, one calibrated scale each",
           QuantSpec(num_bits=8, type="float", activations=QuantSpec(num_bits=8, type="float")), "FP8"),
    Scheme("fp8-dynamic", "FP8 dynamic", "FP8 weights per channel, activations scaled per token at run time",
           QuantSpec(num_bits=8, type="float", strategy="channel", activations=_FP8_PER_TOKEN), "FP8_DYNAMIC"),
    Scheme("nvfp4a16", "NVFP4 (weights)", "FP4 weights, an E4M3 scale per 16 under one FP32 global scale",
           _NVFP4, "NVFP4A16"),
    Scheme("nvfp4", "NVFP4", "FP4 weights and activations; activation group scales per batch, global scale calibrated",
           _NVFP4.with_(activations=_NVFP4.with_(dynamic="local")), "NVFP4"),
    Scheme("mxfp4a16", "MXFP4 (weights)", "FP4 weights, a power-of-two E8M0 scale per 32", _MXFP4, "MXFP4A16"),
    Scheme("mxfp4", "MXFP4", "FP4 weights and activations, E8M0 scales per 32 (activations per batch)",
           _MXFP4.with_(activations=_MXFP4.with_(dynamic=True)), "MXFP4"),
    Scheme("mxfp8a16", "MXFP8 (weights)", "FP8 weights, a power-of-two E8M0 scale per 32", _MXFP8, "MXFP8A16"),
    Scheme("mxfp8", "MXFP8", "FP8 weights and activations, E8M0 scales per 32 (activations per batch)",
           _MXFP8.with_(activations=_MXFP8.with_(dynamic=True)), "MXFP8"),
    Scheme("w4afp8", "W4AFP8", "4-bit integer weights in groups of 128, FP8 activations per token",
           _int_weights(4).with_(activations=_FP8_PER_TOKEN), "W4AFP8"),
    Scheme("fp8-block", "FP8 block 128×128", "FP8 weights, a scale per 128×128 tile; activations per token "
           "in groups of 128 at run time", _FP8_BLOCK, "FP8_BLOCK"),
    # bitsandbytes, not compressed-tensors: no preset, and no export.
    Scheme("nf4", "NF4 double-quant", "bitsandbytes' 4-bit NormalFloat, an absmax per 64 stored in 8 bits "
           "(QLoRA's recipe)", _NF4.with_(scale_dtype="dq8")),
    Scheme("nf4-fp32", "NF4 (fp32 absmax)", "bitsandbytes' 4-bit NormalFloat, an fp32 absmax per 64", _NF4),
)}

# llm-compressor's presets under their own names (compressed_tensors.quantization.quant_scheme).
PRESETS: dict[str, QuantSpec] = {s.preset: s.spec for s in SCHEMES.values() if s.preset and s.spec}


def scheme(name: str) -> Scheme:
    """A scheme by slug or by compressed-tensors preset name (`W4A16_ASYM` is `w4a16-asym`)."""
    slug = name.strip().lower().replace("_", "-")
    if slug not in SCHEMES:
        raise QuantlabError(f"unknown scheme {name!r}: use one of {', '.join(SCHEMES)}")
    return SCHEMES[slug]


def scheme_spec(name: str) -> QuantSpec:
    """The QuantSpec of a quantizing scheme (not the unquantized baseline)."""
    spec = scheme(name).spec
    if spec is None:
        raise QuantlabError(f"{name} is the unquantized baseline: pick a quantized scheme")
    return spec


def label(slug: str) -> str:
    """The display label of a registered slug (for `format_func` of a widget holding slugs)."""
    return scheme(slug).label
