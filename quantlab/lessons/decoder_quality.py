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
from pathlib import Path
from typing import Literal

import torch

from quantlab import data
from quantlab.core import gptq
from quantlab.core.observers import quantize_activation
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec
from quantlab.io import decoder

Method = Literal["rtn", "gptq"]
KEPT = ("lm_head",)  # llm-compressor's default ignore list


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


def _quantized_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.split(".")[-1] not in KEPT]


@torch.no_grad()
def quantized_model(dec: decoder.Decoder, spec: QuantSpec, method: Method,
                    calibration: dict[str, torch.Tensor], args: gptq.GptqArgs = gptq.DEFAULT_ARGS) -> torch.nn.Module:
    """A copy of the model with every quantized Linear's weight replaced by its fake-quantized
    value, and activation quantization hooked in front of it when `spec` has an activation spec."""
    model = copy.deepcopy(dec.model)
    for name, module in _quantized_linears(model):
        w = module.weight.data
        if method == "gptq":
            w_hat = gptq.gptq(w, gptq.hessian(calibration[name].float()), spec, args).dequantize()
        else:
            w_hat = fake_quantize(w, spec)
        module.weight.data = w_hat.to(w.dtype)
        if spec.activations is not None:
            module.register_forward_pre_hook(_activation_hook(spec.activations, calibration[name]))
    return model


def _activation_hook(act: QuantSpec, calibration: torch.Tensor) -> Callable[..., tuple[torch.Tensor]]:
    def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        x = args[0]
        flat = x.reshape(-1, x.shape[-1])
        q = quantize_activation(flat, act, None if act.dynamic else calibration).dequantize()
        return (q.reshape(x.shape).to(x.dtype),)

    return hook


@torch.no_grad()
def measure(dec: decoder.Decoder, model: torch.nn.Module, reference: list[torch.Tensor] | None,
            method: str) -> tuple[Quality, list[torch.Tensor]]:
    """Perplexity, KL against `reference` log-probs (None: this is the reference) and speed."""
    ids = [decoder.token_ids(dec, text) for text in heldout_texts()]
    start = time.perf_counter()
    with gptq.single_threaded():
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
