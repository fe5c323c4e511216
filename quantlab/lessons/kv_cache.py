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
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from quantlab.core import blocks
from quantlab.core.errors import QuantlabError
from quantlab.core.metrics import SCALE_BITS, sqnr_db
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec, scheme
from quantlab.io import captures, decoder, models, sizing

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


SIDEBAR = "sidebar"  # the planner's name for the sidebar's own model, when its folder has a config.json
UPLOADED = "uploaded"  # ... and for a config.json uploaded on the lesson's page


def planner_models(source: models.ModelSource, uploaded: str | None = None) -> list[str]:
    """What the memory planner can size: an uploaded config and the sidebar's model (when its
    folder has a config.json) first, then the shipped architectures."""
    own = (Path(source.path) / "config.json").is_file() and not source.is_embedded
    return [*([UPLOADED] if uploaded else []), *([SIDEBAR] if own else []), *architectures()]


def planner_name(choice: str, source: models.ModelSource, uploaded: str | None = None) -> str:
    """The name `architecture` and `memory_plan` take for a planner choice: a shipped name, or the
    folder holding the config.json (the sidebar's model, an uploaded config)."""
    return {SIDEBAR: source.path, UPLOADED: uploaded}.get(choice) or choice


def real_kv_source(source: models.ModelSource) -> captures.Source:
    """Whose keys and values the error part measures: the sidebar's model when the lab can run it
    and read its attention (a local Llama/Qwen2/Mistral-style causal LM), else the embedded model's."""
    if source.is_embedded or not captures.available(source):
        return None
    folder = captures.decoder_folder(source)
    try:
        _attention_modules(decoder.load(folder).model)
    except QuantlabError:  # an attention layout the capture does not know
        return None
    return source


@lru_cache(maxsize=16)
def architecture(name: str) -> Architecture:
    """A shipped config by name, or the config.json of a model folder (the sidebar's own model)."""
    path = sizing.shipped_configs().get(name)
    if path is None and (Path(name) / "config.json").is_file():
        config = sizing.read_json(Path(name) / "config.json")
        label = config.get("_name_or_path") if isinstance(config.get("_name_or_path"), str) else Path(name).name
        return Architecture.from_config(models.shown(str(label)), config)
    if path is None:
        raise QuantlabError(f"no shipped config named {models.shown(name)}: use one of {', '.join(architectures())}")
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
    """Query [layers, batch, heads, tokens, head_dim], key and value [layers, batch, kv_heads,
    tokens, head_dim] of every layer: keys and values per KV head, as the cache holds them (under
    GQA several query heads read one KV head), and after RoPE where the model rotates them.

    `mask` [batch, tokens] marks real tokens; `causal` says each query sees only earlier keys (a
    decoder); `context` is the model's own attention output per layer, [layers, batch, tokens,
    hidden], kept to check that `attention` recomputes it. `model` names where they came from.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor
    context: torch.Tensor
    causal: bool
    model: str

    @property
    def real_tokens(self) -> int:
        return int(self.mask.sum())


def capture_qkv(kind: str = "general", source: captures.Source = None) -> QKV:
    """Every layer's Q, K, V and attention output on shipped text: the embedded encoder's, or a
    local causal LM's (Llama, Qwen2, Mistral: q/k/v projections and RoPE; GPT-2: fused c_attn)."""
    folder = captures.decoder_folder(source)
    return _encoder_qkv(kind) if folder is None else _decoder_qkv(str(folder.resolve()), kind)


@lru_cache(maxsize=4)
@torch.no_grad()
def _encoder_qkv(kind: str) -> QKV:
    model, tokenizer = models.embedded_model()
    batch = models.tokenize(tokenizer, models.sample_texts(kind), padding=True, truncation=True, max_length=128,
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
        causal=False,
        model=models.ModelSource.embedded().label,
    )


def _fused(attn: torch.nn.Module) -> bool:
    """GPT-2's attention: one c_attn makes Q, K and V side by side, c_proj mixes the heads."""
    return all(hasattr(attn, a) for a in ("c_attn", "c_proj", "split_size", "head_dim"))


def _output_projection(attn: torch.nn.Module) -> torch.nn.Module:
    return attn.c_proj if _fused(attn) else attn.o_proj


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    found = [m for m in model.modules()
             if all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")) or _fused(m)]
    if not found:
        raise QuantlabError("real keys and values are read from attention with q_proj/k_proj/v_proj/o_proj "
                            "(Llama, Qwen2, Mistral) or GPT-2's c_attn; this model has neither")
    return found


def _rotate(module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor,
            position_embeddings: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own RoPE (its modeling module's apply_rotary_pos_emb), as its attention applies it."""
    if position_embeddings is None:
        return q, k
    rope = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb", None)
    if rope is None:
        raise QuantlabError(f"{type(module).__name__} gets rotary embeddings but its module has no "
                            "apply_rotary_pos_emb to apply them with")
    cos, sin = position_embeddings
    return rope(q, k, cos, sin)


def _qkv_of(attn: torch.nn.Module, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Q, K, V of one attention module from its own input, projections and RoPE, [1, heads, tokens, d]."""
    hidden = args[0] if args else kwargs["hidden_states"]
    shape = (*hidden.shape[:-1], -1, attn.head_dim)
    if _fused(attn):  # GPT-2: learned positions were added at the input, there is no RoPE
        return [t.reshape(shape).transpose(1, 2) for t in attn.c_attn(hidden).split(attn.split_size, dim=-1)]
    q = attn.q_proj(hidden).view(shape).transpose(1, 2)
    k = attn.k_proj(hidden).view(shape).transpose(1, 2)
    if hasattr(attn, "q_norm"):  # Qwen3-style: normed per head before RoPE
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = _rotate(attn, q, k, kwargs.get("position_embeddings"))
    return [q, k, attn.v_proj(hidden).view(shape).transpose(1, 2)]


@lru_cache(maxsize=2)
@torch.no_grad()
def _decoder_qkv(folder: str, kind: str) -> QKV:
    """One forward pass per sentence (as the activation capture runs), each layer's Q, K, V
    recomputed from the attention's own input with its projections and RoPE, then padded into one
    batch; the attention output is the output projection's input (o_proj, GPT-2's c_proj)."""
    dec = decoder.load(folder)
    layers = _attention_modules(dec.model)
    per_text: list[list[tuple[torch.Tensor, ...]]] = []
    with decoder.turn(dec):
        for text in models.sample_texts(kind):
            captured: dict[int, list[torch.Tensor]] = {}
            handles = []
            for i, attn in enumerate(layers):
                handles.append(attn.register_forward_pre_hook(
                    lambda m, a, kw, _i=i, _c=captured: _c.__setitem__(_i, _qkv_of(m, a, kw)), with_kwargs=True))
                handles.append(_output_projection(attn).register_forward_pre_hook(
                    lambda m, a, _i=i, _c=captured: _c[_i].append(a[0])))
            try:
                dec.model(input_ids=decoder.token_ids(dec, text))
            finally:
                for handle in handles:
                    handle.remove()
            per_text.append([tuple(t.float() for t in captured[i]) for i in range(len(layers))])
    lengths = [parts[0][0].shape[-2] for parts in per_text]
    longest = max(lengths)

    def padded(t: torch.Tensor, axis: int) -> torch.Tensor:
        pad = [0, 0] * (t.dim() - 1 - axis) + [0, longest - t.shape[axis]]
        return torch.nn.functional.pad(t, pad)

    def stacked(part: int, axis: int) -> torch.Tensor:
        return torch.stack([torch.cat([padded(parts[layer][part], axis) for parts in per_text])
                            for layer in range(len(layers))])

    mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    return QKV(q=stacked(0, 2), k=stacked(1, 2), v=stacked(2, 2), mask=mask, context=stacked(3, 1), causal=True,
               model=models.shown(Path(folder).name))


def _key_mask(mask: torch.Tensor) -> torch.Tensor:
    """[batch, tokens] -> broadcastable over [layers, batch, heads, queries, keys]."""
    return mask[None, :, None, None, :]


def _token_mask(mask: torch.Tensor) -> torch.Tensor:
    """[batch, tokens] -> broadcastable over [layers, batch, heads, tokens, head_dim]."""
    return mask[None, :, None, :, None]


def _per_query_head(kv: torch.Tensor, heads: int) -> torch.Tensor:
    """K or V of each KV head repeated for the query heads that read it (GQA; MHA unchanged)."""
    return kv.repeat_interleave(heads // kv.shape[2], dim=2)


def _allowed(mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """Which (query, key) pairs attention may use: real keys, and for a decoder no later key."""
    allowed = _key_mask(mask)
    if causal:
        tokens = mask.shape[-1]
        allowed = allowed & torch.ones(tokens, tokens, dtype=torch.bool).tril()
    return allowed


def _logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ _per_query_head(k, q.shape[2]).transpose(-1, -2) / math.sqrt(q.shape[-1])


@torch.no_grad()
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
              causal: bool = False) -> torch.Tensor:
    """softmax(QKᵀ/√d)·V per layer and query head, padded (and for a decoder, later) keys masked
    out: shaped like `q`."""
    scores = _logits(q, k).masked_fill(~_allowed(mask, causal), -math.inf)
    return torch.softmax(scores, dim=-1) @ _per_query_head(v, q.shape[2])


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


def kv_error(spec: QuantSpec | None, kind: str = "general", source: captures.Source = None) -> KVError:
    """Quantize the real K and V with `spec`; compare tensors, attention logits and attention output.

    Padded positions are zero in both reference and result, so they add nothing to any sum.
    """
    folder = captures.decoder_folder(source)
    return _kv_error(spec, kind, None if folder is None else str(folder.resolve()))


@lru_cache(maxsize=64)
@torch.no_grad()
def _kv_error(spec: QuantSpec | None, kind: str, folder: str | None) -> KVError:
    data = capture_qkv(kind, None if folder is None else models.ModelSource.local(folder))
    real = _token_mask(data.mask)
    kq, vq = quantize_kv(data.k, data.mask, spec), quantize_kv(data.v, data.mask, spec)
    full = attention(data.q, data.k, data.v, data.mask, data.causal) * real
    outs = {part: sqnr_db(full, attention(data.q, kk, vv, data.mask, data.causal) * real)
            for part, (kk, vv) in {"k": (kq, data.v), "v": (data.k, vq), "kv": (kq, vq)}.items()}
    pairs = (_allowed(data.mask, data.causal) & real).expand(*data.q.shape[:-1], data.q.shape[-2])
    dlogit = _logits(data.q, kq - data.k)
    logit_rmse = math.sqrt((dlogit.double() ** 2 * pairs).sum().item() / pairs.sum().item())
    return KVError(sqnr_db(data.k * real, kq), sqnr_db(data.v * real, vq), outs, logit_rmse)


def kv_errors(kind: str = "general", source: captures.Source = None) -> dict[QuantSpec, KVError]:
    """Every KV scheme of the lesson (format × granularity) on the same captured tensors."""
    return {kv_spec(f, g): kv_error(kv_spec(f, g), kind, source) for f in KV_FORMATS for g in GRANULARITIES}


@torch.no_grad()
def channel_absmax(layer: int, head: int, kind: str = "general",
                   source: captures.Source = None) -> tuple[torch.Tensor, torch.Tensor]:
    """max |K| and max |V| of each head_dim channel of one KV head over real tokens: outlier
    channels show here."""
    data = capture_qkv(kind, source)
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
def attention_sink(kind: str = "general", source: captures.Source = None) -> SinkStats:
    data = capture_qkv(kind, source)
    probs = torch.softmax(_logits(data.q, data.k).masked_fill(~_allowed(data.mask, data.causal), -math.inf), dim=-1)
    v_norm = _per_query_head(data.v, data.q.shape[2]).norm(dim=-1)  # [layers, batch, heads, tokens]
    real = data.mask[None, :, None, :].expand_as(v_norm)
    count = real.sum().item()
    return SinkStats(
        first_token_share=((probs[..., 0] * real).sum() / count).item(),
        first_token_v_norm=v_norm[..., 0].mean().item(),
        mean_v_norm=((v_norm * real).sum() / count).item(),
        weighted_v_norm=(((probs * v_norm.unsqueeze(-2)).sum(-1) * real).sum() / count).item(),
    )
