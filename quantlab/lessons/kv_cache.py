"""The KV cache: how much memory it takes, and what quantizing real keys and values costs attention.

Memory comes from the architecture's config.json alone: each layer keeps one key and one value
vector of `head_dim` numbers per KV head per token, so

    bytes = 2 × layers × kv_heads × head_dim × tokens × batch × bits / 8  (+ the scales)

Grouped-query (GQA) and multi-query (MQA) attention shrink the cache by sharing KV heads among
query heads, which is why `num_key_value_heads`, not `num_attention_heads`, goes into the formula.

The error side runs on real tensors: the embedded MiniLM's query/key/value projections, captured
with forward hooks on shipped text, reshaped to heads. Keys and values are fake-quantized with
`quantlab.quantize` and attention, softmax(QKᵀ/√d)·V, is recomputed with padding masked out.

A KV scheme is a `QuantSpec` whose strategy names the scale granularity over a [tokens, head_dim]
slab of each head: "tensor" (one scale per layer for K, one for V — what vLLM's FP8 cache calibrates),
"channel" (here: one scale per KV head) or "token" (one scale per token per head, computed as the
token is written).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from quantlab.core import blocks
from quantlab.core.errors import QuantlabError
from quantlab.core.metrics import SCALE_BITS, sqnr_db
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec, scheme
from quantlab.io import models, sizing

CACHE_BITS = 16  # an unquantized cache is kept in the model's bf16/fp16

KV_FORMATS: dict[str, QuantSpec] = {
    "FP8": QuantSpec(num_bits=8, type="float"),
    "INT8": QuantSpec(num_bits=8, type="int"),
    "INT4": QuantSpec(num_bits=4, type="int"),
}
# The strategy a KV scheme uses for each granularity (see the module docstring).
GRANULARITIES: dict[str, str] = {"tensor": "tensor", "head": "channel", "token": "token"}


def kv_spec(fmt: str, granularity: str) -> QuantSpec:
    if fmt not in KV_FORMATS:
        raise QuantlabError(f"unknown KV format {fmt!r}: use one of {', '.join(KV_FORMATS)}")
    if granularity not in GRANULARITIES:
        raise QuantlabError(f"unknown KV granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")
    return KV_FORMATS[fmt].with_(strategy=GRANULARITIES[granularity])


def kv_label(spec: QuantSpec | None) -> str:
    if spec is None:
        return f"BF16 ({CACHE_BITS}-bit)"
    fmt = next(name for name, base in KV_FORMATS.items() if base.with_(strategy=spec.strategy) == spec)
    gran = next(g for g, s in GRANULARITIES.items() if s == spec.strategy)
    return f"{fmt} per-{gran}"


# -- architectures --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Architecture:
    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    max_context: int

    @property
    def attention(self) -> str:
        if self.kv_heads == self.heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else f"GQA ({self.heads // self.kv_heads} query heads per KV head)"

    @classmethod
    def from_config(cls, name: str, config: dict) -> Architecture:
        try:
            heads = int(config["num_attention_heads"])
            layers = int(config["num_hidden_layers"])
            head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        except (KeyError, TypeError, ValueError):
            raise QuantlabError(f"{name}: config.json lacks "
                                "num_attention_heads / num_hidden_layers / hidden_size") from None
        kv_heads = int(config.get("num_key_value_heads") or heads)
        return cls(name, layers, heads, kv_heads, head_dim, int(config.get("max_position_embeddings", 0)))


def architectures() -> list[str]:
    """Names of the shipped config.json files (the ones `quantlab.sizing` sizes)."""
    return list(sizing.shipped_configs())


@lru_cache(maxsize=16)
def architecture(name: str) -> Architecture:
    path = sizing.shipped_configs().get(name)
    if path is None:
        raise QuantlabError(f"no shipped config named {name!r}: use one of {', '.join(architectures())}")
    return Architecture.from_config(name, json.loads(path.read_text()))


# -- memory ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KVBytes:
    values: int  # the cached keys and values themselves
    scales: int  # scales (and zero points) a quantized cache keeps beside them

    @property
    def total(self) -> int:
        return self.values + self.scales


def kv_scale_count(arch: Architecture, tokens: int, batch: int, spec: QuantSpec) -> int:
    """Scales stored for the cache: those of one layer's K, as the 2-D tensor `quantize_kv` lays it
    out (a row per KV head for per-head scales, a row per cached token of a head otherwise), for K
    and V of every layer."""
    heads, positions = arch.kv_heads, tokens * batch
    layer = (heads, positions * arch.head_dim) if spec.strategy == "channel" else (heads * positions, arch.head_dim)
    return 2 * arch.layers * blocks.num_scales(spec, layer)


def kv_bytes(arch: Architecture, tokens: int, batch: int = 1, spec: QuantSpec | None = None) -> KVBytes:
    """Bytes of a cache holding `tokens` positions for `batch` sequences (`spec` None: 16-bit)."""
    if tokens < 0 or batch < 1:
        raise QuantlabError("tokens must be ≥ 0 and batch ≥ 1")
    elements = 2 * arch.layers * arch.kv_heads * arch.head_dim * tokens * batch
    bits = CACHE_BITS if spec is None else spec.num_bits
    values = elements * bits // 8
    if spec is None:
        return KVBytes(values, 0)
    zp_bits = 0 if spec.symmetric else spec.num_bits
    return KVBytes(values, kv_scale_count(arch, tokens, batch, spec) * (SCALE_BITS + zp_bits) // 8)


def max_context(arch: Architecture, budget_bytes: float, batch: int = 1, spec: QuantSpec | None = None) -> int:
    """Most tokens per sequence whose cache fits in `budget_bytes` (0 if not even one fits)."""
    fixed = kv_bytes(arch, 0, batch, spec).total
    per_token = kv_bytes(arch, 1, batch, spec).total - fixed
    return max(0, int((budget_bytes - fixed) // per_token))


# The three cache widths the memory lesson compares, each in the scheme it is usually run with.
MEMORY_SCHEMES: tuple[QuantSpec | None, ...] = (None, kv_spec("FP8", "tensor"), kv_spec("INT4", "token"))
# Weight schemes of the memory planner, as registry slugs ("bf16": the checkpoint as published).
WEIGHT_SCHEMES: tuple[str, ...] = ("bf16", "w8a16", "fp8", "w4a16")
GPU_MEMORY_GB: tuple[int, ...] = (24, 48, 80, 141)


def memory_label(spec: QuantSpec | None) -> str:
    """How the memory chart names a cache width, e.g. '4-bit KV (INT4 per-token)'."""
    if spec is None:
        return f"{CACHE_BITS}-bit KV (BF16)"
    return f"{spec.num_bits}-bit KV ({kv_label(spec)})"


def weight_bytes(name: str, scheme_slug: str) -> int:
    """Checkpoint bytes of a shipped architecture at a weight scheme ("bf16": as published)."""
    if scheme_slug not in WEIGHT_SCHEMES:
        raise QuantlabError(f"unknown weight scheme {scheme_slug!r}: use one of {', '.join(WEIGHT_SCHEMES)}")
    spec = scheme(scheme_slug).spec
    report = sizing.model_size(name, spec or QuantSpec.preset("W8A16"))
    return report.original_bytes if spec is None else report.total_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """Weights plus cache against context length, and the longest context each card holds."""

    tokens: tuple[int, ...]
    weights: int
    kv: dict[str, tuple[int, ...]]  # scheme label -> cache bytes at each context length
    fits: dict[str, dict[int, int]]  # scheme label -> GPU size (GB) -> longest context (tokens)
    max_position: int
    unit: int  # bytes in one "GB" of the chart (10⁹ or 2³⁰)

    def totals(self, label: str) -> tuple[float, ...]:
        """Weights plus cache at each context length, in `unit`s."""
        return tuple((self.weights + b) / self.unit for b in self.kv[label])


def memory_plan(name: str, scheme_slug: str, batch: int, gpu_unit: int, points: int = 64) -> MemoryPlan:
    """KV memory for 1 … max_position_embeddings tokens (log-spaced) and what fits on each GPU size.

    `gpu_unit` is the byte count of one "GB" of card memory (10⁹ or 2³⁰): the lesson lets the
    learner see how much the choice moves the answer.
    """
    arch = architecture(name)
    weights = weight_bytes(name, scheme_slug)
    top = arch.max_context or 131072
    # Log-spaced, as the chart's context axis is: short contexts are where a big batch fills a card.
    tokens = tuple(sorted({max(1, round(top ** (i / (points - 1)))) for i in range(points)}))
    kv = {memory_label(spec): tuple(kv_bytes(arch, t, batch, spec).total for t in tokens) for spec in MEMORY_SCHEMES}
    fits = {memory_label(spec): {gb: max_context(arch, gb * gpu_unit - weights, batch, spec) for gb in GPU_MEMORY_GB}
            for spec in MEMORY_SCHEMES}
    return MemoryPlan(tokens, weights, kv, fits, arch.max_context, gpu_unit)


# -- real keys and values -------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class QKV:
    """Query, key and value of every layer and head, [layers, batch, heads, tokens, head_dim].

    `mask` [batch, tokens] marks real tokens; `context` is the model's own attention output per
    layer, [layers, batch, tokens, hidden], kept to check that `attention` recomputes it.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor
    context: torch.Tensor

    @property
    def real_tokens(self) -> int:
        return int(self.mask.sum())


@lru_cache(maxsize=4)
@torch.no_grad()
def capture_qkv(kind: str = "general") -> QKV:
    """Run the embedded model on shipped text and keep every layer's Q, K, V and attention output."""
    model, tokenizer = models.embedded_model()
    batch = tokenizer(models.sample_texts(kind), padding=True, truncation=True, max_length=128,  # type: ignore[operator]
                      return_tensors="pt")
    heads = model.config.num_attention_heads
    captured: dict[str, torch.Tensor] = {}
    with models.exclusive_transformers() as hooks:
        for name, module in model.named_modules():
            if name.endswith(("attention.self.query", "attention.self.key", "attention.self.value")):
                def to_heads(mod: torch.nn.Module, args: tuple, out: torch.Tensor, _name: str = name) -> None:
                    b, t, hidden = out.shape
                    captured[_name] = out.detach().reshape(b, t, heads, hidden // heads).transpose(1, 2)
                hooks.append(module.register_forward_hook(to_heads))
            elif name.endswith("attention.self"):
                def keep_output(mod: torch.nn.Module, args: tuple, out: tuple, _name: str = name) -> None:
                    captured[_name] = out[0].detach()
                hooks.append(module.register_forward_hook(keep_output))
        model(**batch)
    prefixes = [f"encoder.layer.{i}.attention.self" for i in range(model.config.num_hidden_layers)]
    return QKV(
        q=torch.stack([captured[f"{p}.query"] for p in prefixes]),
        k=torch.stack([captured[f"{p}.key"] for p in prefixes]),
        v=torch.stack([captured[f"{p}.value"] for p in prefixes]),
        mask=batch["attention_mask"].bool(),
        context=torch.stack([captured[p] for p in prefixes]),
    )


def _key_mask(mask: torch.Tensor) -> torch.Tensor:
    """[batch, tokens] -> broadcastable over [layers, batch, heads, queries, keys]."""
    return mask[None, :, None, None, :]


def _token_mask(mask: torch.Tensor) -> torch.Tensor:
    """[batch, tokens] -> broadcastable over [layers, batch, heads, tokens, head_dim]."""
    return mask[None, :, None, :, None]


@torch.no_grad()
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d)·V per layer and head, padded keys masked out: shaped like `q`."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~_key_mask(mask), -math.inf)
    return torch.softmax(scores, dim=-1) @ v


@torch.no_grad()
def quantize_kv(x: torch.Tensor, mask: torch.Tensor, spec: QuantSpec | None) -> torch.Tensor:
    """Fake-quantize K or V [layers, batch, heads, tokens, head_dim] at the spec's granularity.

    `spec` None is the unquantized cache, the baseline every scheme is measured against. Each layer
    has its own cache and so its own scales. Padding positions are zeroed first: they are never
    cached, and with symmetric scales a zero cannot widen a range, so every scale comes from real
    tokens only.
    """
    x = x * _token_mask(mask)
    if spec is None:
        return x
    if not spec.symmetric:
        raise QuantlabError("KV schemes here are symmetric (zero padding must not move a zero point)")
    if spec.strategy not in GRANULARITIES.values():
        raise QuantlabError(f"strategy {spec.strategy!r} is not a KV granularity: use tensor, head or token")
    layers, b, h, t, d = x.shape
    # One row per scale, so one min-max per row gives the scales: per layer, per (layer, head) or
    # per (layer, sequence, head, token) — the last is compressed-tensors' own 'token' layout.
    if spec.strategy == "tensor":
        rows = x.reshape(layers, -1)
    elif spec.strategy == "channel":
        rows = x.transpose(1, 2).reshape(layers * h, -1)
    else:
        rows = x.reshape(-1, d)
    fq = fake_quantize(rows, spec.with_(strategy="token"))
    if spec.strategy == "channel":
        return fq.reshape(layers, h, b, t, d).transpose(1, 2)
    return fq.reshape(x.shape)


@dataclass(frozen=True)
class KVError:
    """How much one scheme changes keys, values and the attention output (all layers, real tokens)."""

    k_sqnr_db: float
    v_sqnr_db: float
    out_sqnr_db: dict[str, float]  # attention output SQNR with only K, only V, or both quantized
    logit_rmse: float  # RMS change of QKᵀ/√d over real (query, key) pairs when K is quantized

    @property
    def k_propagation_db(self) -> float:
        """Output SQNR minus tensor SQNR: positive when attention damps the key error."""
        return self.out_sqnr_db["k"] - self.k_sqnr_db

    @property
    def v_propagation_db(self) -> float:
        return self.out_sqnr_db["v"] - self.v_sqnr_db


@lru_cache(maxsize=64)
@torch.no_grad()
def kv_error(spec: QuantSpec | None, kind: str = "general") -> KVError:
    """Quantize the real K and V with `spec`; compare tensors, attention logits and attention output.

    Padded positions are zero in both reference and result, so they add nothing to any sum.
    """
    data = capture_qkv(kind)
    real = _token_mask(data.mask)
    kq, vq = quantize_kv(data.k, data.mask, spec), quantize_kv(data.v, data.mask, spec)
    full = attention(data.q, data.k, data.v, data.mask) * real
    outs = {part: sqnr_db(full, attention(data.q, kk, vv, data.mask) * real)
            for part, (kk, vv) in {"k": (kq, data.v), "v": (data.k, vq), "kv": (kq, vq)}.items()}
    pairs = (_key_mask(data.mask) & real).expand(*data.q.shape[:-1], data.q.shape[-2])
    dlogit = (data.q @ (kq - data.k).transpose(-1, -2)) / math.sqrt(data.q.shape[-1])
    logit_rmse = math.sqrt((dlogit.double() ** 2 * pairs).sum().item() / pairs.sum().item())
    return KVError(sqnr_db(data.k * real, kq), sqnr_db(data.v * real, vq), outs, logit_rmse)


def kv_errors(kind: str = "general") -> dict[QuantSpec, KVError]:
    """Every KV scheme of the lesson (format × granularity) on the same captured tensors."""
    return {kv_spec(f, g): kv_error(kv_spec(f, g), kind) for f in KV_FORMATS for g in GRANULARITIES}


@torch.no_grad()
def channel_absmax(layer: int, head: int, kind: str = "general") -> tuple[torch.Tensor, torch.Tensor]:
    """max |K| and max |V| of each head_dim channel of one head over real tokens: outlier channels show here."""
    data = capture_qkv(kind)
    real = _token_mask(data.mask)[0]
    k = (data.k[layer] * real)[:, head].abs().amax(dim=(0, 1))
    v = (data.v[layer] * real)[:, head].abs().amax(dim=(0, 1))
    return k, v


@dataclass(frozen=True)
class SinkStats:
    """How much attention lands on the first token ([CLS]) and how small its value vector is."""

    first_token_share: float  # mean attention weight on position 0, over real queries, heads, layers
    first_token_v_norm: float  # mean ‖v‖ of position 0
    mean_v_norm: float  # mean ‖v‖ over all real tokens
    weighted_v_norm: float  # mean of Σ p_j ‖v_j‖: the size of the V rows attention actually reads


@torch.no_grad()
def attention_sink(kind: str = "general") -> SinkStats:
    data = capture_qkv(kind)
    scores = data.q @ data.k.transpose(-1, -2) / math.sqrt(data.q.shape[-1])
    probs = torch.softmax(scores.masked_fill(~_key_mask(data.mask), -math.inf), dim=-1)
    v_norm = data.v.norm(dim=-1)  # [layers, batch, heads, tokens]
    real = data.mask[None, :, None, :].expand_as(v_norm)
    count = real.sum().item()
    return SinkStats(
        first_token_share=((probs[..., 0] * real).sum() / count).item(),
        first_token_v_norm=v_norm[..., 0].mean().item(),
        mean_v_norm=((v_norm * real).sum() / count).item(),
        weighted_v_norm=(((probs * v_norm.unsqueeze(-2)).sum(-1) * real).sum() / count).item(),
    )
