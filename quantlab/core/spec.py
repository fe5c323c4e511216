"""`QuantSpec`: how one tensor is quantized.

Field names follow compressed-tensors' `QuantizationArgs`, so a spec maps one-to-one onto the
`quantization_config` that llm-compressor writes. A spec is frozen and hashable: the same object is
the cache key for computed summaries, the state kept in the page URL and the export config.
A weight spec may carry the spec of the layer's input activations (W8A8, FP8), which is how
compressed-tensors' `QuantizationScheme` pairs `weights` with `input_activations`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, Mapping

from quantlab.core.errors import QuantlabError

QuantType = Literal["int", "float"]
Strategy = Literal["tensor", "channel", "group", "token"]

STRATEGIES: tuple[str, ...] = ("tensor", "channel", "group", "token")
OBSERVERS: tuple[str, ...] = ("minmax", "mse", "percentile")
# The tunable knobs of each observer (compressed-tensors' `observer_kwargs`), with their defaults:
# llm-compressor's MSE observer shrinks the range by 1/grid per step down to (1 - maxshrink) and
# stops after `patience` steps without improvement, scoring each candidate by sum |x - x̂|^norm.
OBSERVER_KWARGS: dict[str, dict[str, float]] = {
    "minmax": {},
    "mse": {"maxshrink": 0.2, "grid": 100.0, "norm": 2.4, "patience": 5.0},
    "percentile": {"percentile": 99.9},
}
FP8_BITS = 8


@dataclass(frozen=True)
class QuantSpec:
    num_bits: int = 8
    type: QuantType = "int"
    symmetric: bool = True
    strategy: Strategy = "tensor"
    group_size: int | None = None
    observer: str = "minmax"
    dynamic: bool = False
    activations: "QuantSpec | None" = None
    # Sorted (name, value) pairs rather than a dict, so the spec stays hashable; a dict is accepted.
    observer_kwargs: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.type not in ("int", "float"):
            raise QuantlabError(f"unknown type {self.type!r}: use 'int' or 'float'")
        if self.type == "int" and not 2 <= self.num_bits <= 8:
            raise QuantlabError(f"num_bits={self.num_bits} is out of range: integer formats here use 2 to 8 bits")
        if self.type == "float" and self.num_bits != FP8_BITS:
            raise QuantlabError(f"float quantization supports FP8 (num_bits=8) only, not {self.num_bits}")
        if self.strategy not in STRATEGIES:
            raise QuantlabError(f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.strategy == "group":
            if self.group_size is None or self.group_size < 1:
                raise QuantlabError("strategy 'group' needs a positive group_size (e.g. 128)")
        elif self.group_size is not None:
            raise QuantlabError(f"group_size is only used with strategy 'group', not {self.strategy!r}")
        if self.observer not in OBSERVERS:
            raise QuantlabError(f"unknown observer {self.observer!r}: use one of {', '.join(OBSERVERS)}")
        self._normalize_observer_kwargs()
        if self.activations is not None and self.activations.activations is not None:
            raise QuantlabError("activation specs cannot carry activation specs of their own")

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
        fmt = "FP8" if self.type == "float" else f"INT{self.num_bits}"
        mode = "sym" if self.symmetric else "asym"
        gran = f"g{self.group_size}" if self.strategy == "group" else self.strategy
        obs = "" if self.observer == "minmax" else f" {self.observer}"
        return f"{fmt} {mode} {gran}{obs}"

    def with_(self, **changes: object) -> "QuantSpec":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a one-line `QuantlabError` if this spec cannot quantize a tensor of `shape`."""
        if len(shape) == 0:
            raise QuantlabError("cannot quantize a scalar: pick a weight matrix or an activation")
        if self.strategy in ("channel", "group", "token") and len(shape) != 2:
            raise QuantlabError(
                f"strategy {self.strategy!r} needs a 2-D tensor [rows, columns]; this one is {tuple(shape)}"
                " (try strategy 'tensor')"
            )
        if self.strategy == "group":
            cols = shape[-1]
            assert self.group_size is not None
            if cols % self.group_size:
                divisors = [g for g in (16, 32, 64, 128, 256, 512) if cols % g == 0]
                hint = f"sizes that divide it: {', '.join(map(str, divisors))}" if divisors else "use strategy 'channel'"
                raise QuantlabError(
                    f"group_size {self.group_size} does not divide the input dimension {cols} ({hint})"
                )

    # -- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "QuantSpec":
        try:
            return PRESETS[name.upper()]
        except KeyError:
            raise QuantlabError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None

    # -- URL / config round trips ------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "QuantSpec":
        fields = dict(data)
        acts = fields.pop("activations", None)
        if isinstance(acts, Mapping):
            fields["activations"] = cls.from_dict(acts)
        return cls(**fields)  # type: ignore[arg-type]

    def to_query(self) -> dict[str, str]:
        """Flat string form for `st.query_params` (weights only; activations go by preset)."""
        q = {"bits": str(self.num_bits), "type": self.type, "sym": "1" if self.symmetric else "0",
             "strategy": self.strategy}
        if self.group_size is not None:
            q["g"] = str(self.group_size)
        return q

    @classmethod
    def from_query(cls, query: Mapping[str, str], default: "QuantSpec | None" = None) -> "QuantSpec":
        """Parse `to_query` output; anything missing or malformed falls back to `default`."""
        base = default or cls()
        try:
            strategy = query.get("strategy", base.strategy)
            group = query.get("g")
            return cls(
                num_bits=int(query.get("bits", base.num_bits)),
                type=query.get("type", base.type),  # type: ignore[arg-type]
                symmetric=query.get("sym", "1" if base.symmetric else "0") == "1",
                strategy=strategy,  # type: ignore[arg-type]
                group_size=int(group) if strategy == "group" and group else
                (base.group_size if strategy == "group" else None),
            )
        except (ValueError, QuantlabError):
            return base


def _int_weights(bits: int, symmetric: bool = True, group_size: int | None = 128) -> QuantSpec:
    strategy: Strategy = "group" if group_size else "channel"
    return QuantSpec(num_bits=bits, symmetric=symmetric, strategy=strategy, group_size=group_size)


# The schemes llm-compressor ships under these names (compressed_tensors.quantization.quant_scheme).
PRESETS: dict[str, QuantSpec] = {
    "W4A16": _int_weights(4),
    "W4A16_ASYM": _int_weights(4, symmetric=False),
    "W8A16": _int_weights(8),  # compressed-tensors 0.20 groups W8A16 by 128 too (not per-channel)
    "W8A8": QuantSpec(
        num_bits=8, strategy="channel",
        activations=QuantSpec(num_bits=8, strategy="token", dynamic=True),
    ),
    "FP8": QuantSpec(
        num_bits=8, type="float", strategy="tensor",
        activations=QuantSpec(num_bits=8, type="float", strategy="tensor"),
    ),
    "FP8_DYNAMIC": QuantSpec(
        num_bits=8, type="float", strategy="channel",
        activations=QuantSpec(num_bits=8, type="float", strategy="token", dynamic=True),
    ),
}
