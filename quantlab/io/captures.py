"""Real activations of a model source, whichever model holds them.

The lessons measure a layer's error on the inputs the layer really receives. Two kinds of source
can give them: the embedded MiniLM (captured in one padded batch, `models.activations`) and a local
causal-LM folder (one sentence per forward pass, in the model's own dtype, `decoder.activations`).
Everything else (a single .safetensors file, an upload) holds weights only. This module is the one
place that knows which is which, so a lesson asks for "the inputs of this layer of this source" and
works the same on either model.

A capture stores each Linear's inputs as [tokens, in_features], sentence after sentence, so the rows
of one sentence are contiguous: `token_counts` says how many rows each sentence holds and
`first_token_rows` marks each sentence's first token ([CLS] in MiniLM, <bos> in most decoders).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from quantlab.core.errors import QuantlabError
from quantlab.io import decoder, models

Source = models.ModelSource | None  # None: the embedded model, the lessons' default


def resolved(source: Source) -> models.ModelSource:
    return models.ModelSource.embedded() if source is None else source


def _causal_lm_folder(source: models.ModelSource) -> Path | None:
    folder = Path(source.path)
    return folder if folder.is_dir() and decoder.is_causal_lm(folder) else None


def available(source: Source) -> bool:
    """Whether the lab can run this source on text: the embedded model or a local causal LM."""
    source = resolved(source)
    return source.is_embedded or _causal_lm_folder(source) is not None


def decoder_folder(source: Source) -> Path | None:
    """The causal LM's folder (None for the embedded model); a one-line error for weights-only sources."""
    source = resolved(source)
    if source.is_embedded:
        return None
    folder = _causal_lm_folder(source)
    if folder is None:
        raise QuantlabError(f"{source.label} holds weights only: real activations come from the embedded "
                            "model or a local causal-LM folder (config.json + safetensors + tokenizer)")
    return folder


def inputs(source: Source, kind: str = "general") -> dict[str, torch.Tensor]:
    """Every Linear's real input on one shipped text, [tokens, in_features], once per process."""
    folder = decoder_folder(source)
    return models.activations(kind) if folder is None else decoder.activations(folder, kind).inputs


def activation(source: Source, layer: str, kind: str = "general") -> torch.Tensor:
    acts = inputs(source, kind)
    if layer not in acts:
        raise QuantlabError(f"no captured input for {models.shown(layer)} in {resolved(source).label} "
                            "(only Linear layers that ran on the text have one)")
    return acts[layer]


def capture_seconds(source: Source, kind: str = "general") -> float | None:
    """How long a decoder's capture took (the UI says so); None for the embedded model."""
    folder = decoder_folder(source)
    return None if folder is None else decoder.activations(folder, kind).seconds


def token_counts(source: Source, kind: str) -> tuple[int, ...]:
    """Captured rows of each sentence of a shipped text, in file order."""
    folder = decoder_folder(source)
    return _embedded_token_counts(kind) if folder is None else _decoder_token_counts(str(folder.resolve()), kind)


@lru_cache(maxsize=16)
def _embedded_token_counts(kind: str) -> tuple[int, ...]:
    _, tokenizer = models.embedded_model()
    batch = models.tokenize(tokenizer, models.sample_texts(kind), truncation=True, max_length=128)
    return tuple(len(ids) for ids in batch["input_ids"])


@lru_cache(maxsize=16)
def _decoder_token_counts(folder: str, kind: str) -> tuple[int, ...]:
    dec = decoder.load(folder)
    return tuple(decoder.token_ids(dec, text).shape[-1] for text in models.sample_texts(kind))


def first_token_rows(source: Source, kind: str = "general") -> torch.Tensor:
    """A boolean mask over the captured rows: True on each sentence's first token."""
    counts = token_counts(source, kind)
    first = torch.zeros(sum(counts), dtype=torch.bool)
    first[torch.tensor((0, *counts[:-1])).cumsum(0)] = True
    return first
