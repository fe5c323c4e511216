"""Quality of a quantized causal LM: perplexity and mean KL divergence against the unquantized
model, on a held-out text shipped in the package (`quantlab/data/eval/heldout.txt`).

Perplexity is exp(mean negative log-likelihood of each next token); the KL divergence
KL(p_ref ‖ p_quant) of the next-token distributions, averaged over positions, says how far the
quantized model's predictions moved, even where both would pick the same word. Quantized like
llm-compressor's default scope: every Linear but `lm_head`; weights by RTN or GPTQ (the Hessian of
each layer from the unquantized model's inputs on calibration text), activations fake-quantized on
the fly when the scheme has them (dynamic per token, or static scales calibrated on the same text).
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from quantlab import data
from quantlab.core import gptq
from quantlab.core.errors import QuantlabError
from quantlab.core.metrics import sqnr_db
from quantlab.core.observers import quantize_activation
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.io import decoder, sizing
from quantlab.lessons.outliers import awq_search, smooth_scales

Method = Literal["rtn", "gptq", "awq"]
METHODS: dict[str, str] = {"rtn": "round to nearest", "gptq": "GPTQ", "awq": "AWQ"}
# The presets the whole-model view offers for a decoder: weight-only integer, FP8 and W8A8.
SCHEMES: tuple[str, ...] = ("w8a16", "w4a16", "w4a16-channel", "w3a16", "fp8-dynamic", "w8a8", "w8a8-static")


def gptq_applies(spec: QuantSpec) -> bool:
    """GPTQ and AWQ are offered for weight-only integer schemes (the W4A16 family, W8A16)."""
    return spec.type == "int" and spec.activations is None


def heldout_texts() -> list[str]:
    """The held-out paragraphs, one per line: never used for calibration."""
    text = data.resource("eval", "heldout.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Quality:
    method: str  # "fp" for the unquantized reference
    perplexity: float
    kl_mean: float  # nats per token against the reference
    tokens: int
    tokens_per_s: float


@torch.no_grad()
def _log_probs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position, [tokens, vocab], in float32."""
    return torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)


def _quantized_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every Linear in llm-compressor's usual scope; GPT-2's Conv1D layers count as Linear here
    (the lab measures what quantizing them does, although llm-compressor's targets skip them)."""
    return [(n, m) for n, m in model.named_modules() if decoder.is_linear(m) and sizing.in_scope(n)]


def smoothing_groups(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Linears fed by one norm, which must share one smoothing vector: {first: group}. These are
    llm-compressor's SmoothQuant mappings for Llama-style decoders (q/k/v after the input norm,
    gate/up after the post-attention norm); o_proj and down_proj have no norm to fold 1/s into."""
    present = set(names)
    groups = {}
    for name in names:
        for first, rest in (("self_attn.q_proj", ("k_proj", "v_proj")), ("mlp.gate_proj", ("up_proj",))):
            if name.endswith(first):
                prefix = name.removesuffix(first.split(".")[-1])
                group = (name, *(prefix + r for r in rest))
                if all(n in present for n in group):
                    groups[name] = group
    return groups


def _smoothing(model: torch.nn.Module, calibration: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    names = [n for n, _ in _quantized_linears(model)]
    smooth = {}
    for first, group in smoothing_groups(names).items():
        w_absmax = torch.stack([decoder.weight_of(modules[n]).float().abs().amax(dim=0) for n in group]).amax(dim=0)
        s = smooth_scales(calibration[first].float().abs().amax(dim=0), w_absmax, alpha)
        smooth.update({n: s for n in group})
    return smooth


@torch.no_grad()
def quantized_model(dec: decoder.Decoder, spec: QuantSpec, method: Method,
                    calibration: dict[str, torch.Tensor], args: gptq.GptqArgs = gptq.DEFAULT_ARGS,
                    smooth_alpha: float | None = None, keep: tuple[str, ...] = ()) -> torch.nn.Module:
    """A copy of the model with every quantized Linear's weight replaced by its fake-quantized
    value, and activation quantization hooked in front of it when `spec` has an activation spec.
    SmoothQuant (`smooth_alpha`) scales each norm-fed group's weight columns by s and its input by
    1/s before both are quantized (the product is unchanged before quantization); the Linears in
    `keep` stay in the model's own precision."""
    act = spec.activations
    if smooth_alpha is not None and act is None:
        raise QuantlabError("SmoothQuant moves difficulty from activations to weights: "
                            "pick a scheme that quantizes activations (W8A8)")
    model = copy.deepcopy(dec.model)
    smooth = _smoothing(model, calibration, smooth_alpha) if smooth_alpha is not None else {}
    weight_spec = spec.with_(activations=None)
    for name, module in _quantized_linears(model):
        if name in keep:
            continue
        w, s = decoder.weight_of(module), smooth.get(name)
        w_s = w if s is None else w * s.to(w.dtype)  # [out, in]
        raw = calibration.get(name)  # only GPTQ, static scales and smoothing need one
        x_calib = None if raw is None else raw.float() if s is None else raw.float() / s
        if method == "gptq":
            w_hat = gptq.gptq(w_s, gptq.hessian(x_calib), weight_spec, args).dequantize()
        elif method == "awq":
            # (x / a)·Q(W·a)ᵀ = x·(Q(W·a) / a)ᵀ: the AWQ scales a fold into the stored weight here.
            # Searched per Linear on its own output (llm-compressor searches per norm-fed group).
            a = awq_search(x_calib, w_s.float(), weight_spec).scales
            w_hat = fake_quantize(w_s.float() * a, weight_spec) / a
        else:
            w_hat = fake_quantize(w_s, weight_spec)
        decoder.set_weight(module, w_hat)
        if act is not None or s is not None:
            module.register_forward_pre_hook(_input_hook(act, x_calib, s))
    return model


def _input_hook(act: QuantSpec | None, calibration: torch.Tensor | None,
                smooth: torch.Tensor | None) -> Callable[..., tuple[torch.Tensor]]:
    """What a quantized Linear multiplies: its input divided by s (SmoothQuant), then quantized
    (dynamically, or with static scales from `calibration`, already divided by s)."""
    def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        x = args[0]
        flat = x.reshape(-1, x.shape[-1]).float()
        if smooth is not None:
            flat = flat / smooth
        if act is not None:
            flat = quantize_activation(flat, act, None if act.dynamic else calibration).dequantize()
        return (flat.reshape(x.shape).to(x.dtype),)

    return hook


@torch.no_grad()
def layer_sqnrs(dec: decoder.Decoder, spec: QuantSpec, calibration: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each quantized Linear's own output SQNR on its calibration inputs (weights and, where the
    scheme has them, activations quantized): the worst are the first to keep in 16-bit."""
    act, weight_spec = spec.activations, spec.with_(activations=None)
    out = {}
    for name, module in _quantized_linears(dec.model):
        x, w = calibration[name].float(), decoder.weight_of(module).float()
        xq = x if act is None else quantize_activation(x, act, None if act.dynamic else x).dequantize()
        out[name] = sqnr_db(x @ w.T, xq @ fake_quantize(w, weight_spec).T)
    return out


def worst_layers(sqnrs: dict[str, float], k: int) -> tuple[str, ...]:
    return tuple(sorted(sqnrs, key=sqnrs.get)[:k])


@torch.no_grad()
def measure(dec: decoder.Decoder, model: torch.nn.Module, reference: list[torch.Tensor] | None,
            method: str) -> tuple[Quality, list[torch.Tensor]]:
    """Perplexity, KL against `reference` log-probs (None: this is the reference) and speed."""
    ids = [decoder.token_ids(dec, text) for text in heldout_texts()]
    start = time.perf_counter()
    with decoder.turn(dec):
        logps = [_log_probs(model, i) for i in ids]
    seconds = time.perf_counter() - start
    nll = sum(-lp[:-1].gather(1, i[0, 1:, None]).sum().item() for lp, i in zip(logps, ids))
    predicted = sum(i.shape[1] - 1 for i in ids)
    positions = sum(lp.shape[0] for lp in logps)
    kl = 0.0 if reference is None else sum((r.exp() * (r - lp)).sum().item() for r, lp in zip(reference, logps))
    return Quality(method, math.exp(nll / predicted), kl / positions, predicted, positions / seconds), logps


def compare(folder: str | Path, specs: dict[str, QuantSpec], methods: tuple[Method, ...] = ("rtn", "gptq"),
            calibration_kind: str = "general") -> dict[str, Quality]:
    """The reference ("fp") and every (scheme, method) pair, keyed "fp" and "<name> <method>"."""
    dec = decoder.load(folder)
    calibration = decoder.activations(folder, calibration_kind).inputs
    reference, ref_logp = measure(dec, dec.model, None, "fp")
    results = {"fp": reference}
    for name, spec in specs.items():
        for method in methods:
            model = quantized_model(dec, spec, method, calibration)
            results[f"{name} {method}"] = measure(dec, model, ref_logp, method)[0]
    return results


@dataclass(frozen=True)
class SchemeQuality:
    """One scheme on the whole decoder against the unquantized model, on the held-out text."""

    slug: str
    method: str
    reference: Quality
    quantized: Quality
    kept: tuple[str, ...] = ()  # Linears left unquantized (the worst by their own output SQNR)

    def numbers(self) -> dict[str, str]:
        """What the lesson's prose quotes."""
        return {"tokens": f"{self.reference.tokens:,}", "ppl_fp": f"{self.reference.perplexity:.2f}",
                "ppl_q": f"{self.quantized.perplexity:.2f}", "kl": f"{self.quantized.kl_mean:.4f}",
                "ppl_change": f"{self.quantized.perplexity / self.reference.perplexity - 1:+.1%}"}


@lru_cache(maxsize=2)  # the unquantized pass is the same for every scheme
def _reference(folder: str) -> tuple[Quality, list[torch.Tensor]]:
    dec = decoder.load(folder)
    return measure(dec, dec.model, None, "fp")


def scheme_quality(folder: str | Path, slug: str, method: Method = "rtn", calibration_kind: str = "general",
                   smooth_alpha: float | None = None, keep: int = 0) -> SchemeQuality:
    """Every in-scope Linear of the decoder quantized with one preset (by RTN, GPTQ or AWQ; optionally
    SmoothQuant at `smooth_alpha`, and the `keep` worst Linears left unquantized), scored against
    the unquantized model's own predictions."""
    spec = scheme_spec(slug)
    if method != "rtn" and not gptq_applies(spec):
        method = "rtn"
    dec = decoder.load(folder)
    reference, ref_logp = _reference(str(Path(folder).resolve()))
    calibration = decoder.activations(folder, calibration_kind).inputs
    kept = worst_layers(layer_sqnrs(dec, spec, calibration), keep) if keep else ()
    model = quantized_model(dec, spec, method, calibration, smooth_alpha=smooth_alpha, keep=kept)
    return SchemeQuality(slug, method, reference, measure(dec, model, ref_logp, method)[0], kept)


def table(results: dict[str, SchemeQuality]) -> dict[str, list[object]]:
    """Columns of the What-if table for decoders: one row per scheme, the original first."""
    if not results:
        return {}
    reference = next(iter(results.values())).reference
    rows = [("original (unquantized)", reference), *((name, r.quantized) for name, r in results.items())]
    return {"scheme": [name for name, _ in rows],
            "perplexity (held-out)": [q.perplexity for _, q in rows],
            "mean KL to original (nats/token)": [q.kl_mean for _, q in rows],
            "tokens / s (CPU)": [q.tokens_per_s for _, q in rows]}
