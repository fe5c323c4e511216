"""A local causal LM (Llama, Qwen2, Mistral, GPT-2 families) as a source of real activations.

The folder is loaded with transformers' Auto classes, offline and from safetensors only (a .bin
checkpoint is never unpickled). Before loading, its size is read from the safetensors headers and
compared with the memory this machine has free, so a model that cannot fit is refused in one line
instead of driving the machine into swap. Each Linear's input is captured with a forward hook on
the shipped calibration texts, one sentence per forward pass (decoder tokenizers often have no
padding token, and padding would also change what the model sees), in the model's own dtype.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import torch

from quantlab.core.errors import QuantlabError
from quantlab.core.gptq import single_threaded
from quantlab.io import models

# Loading a checkpoint holds its tensors once plus transformers' working copies while it
# materialises them; a capture adds each Linear's inputs. Measured on the tiny test model and on
# MiniLM the peak stayed under 1.5x the checkpoint; 2x leaves room for the capture and the app.
LOAD_FACTOR = 2.0
MAX_TOKENS_PER_TEXT = 128


def available_bytes() -> int:
    """Memory the kernel says can be allocated without swapping (MemAvailable), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # not Linux: psutil ships with the app's dependencies (streamlit needs it)

    return int(psutil.virtual_memory().available)


def checkpoint_bytes(folder: str | Path) -> int:
    """Bytes of every tensor of the checkpoint, from its headers alone."""
    return sum(t.nbytes for t in models.list_tensors(models.ModelSource.local(folder)).values())


def check_fits(folder: str | Path) -> int:
    """The memory a load needs (LOAD_FACTOR x the checkpoint); a one-line error if it is not free."""
    need = int(checkpoint_bytes(folder) * LOAD_FACTOR)
    free = available_bytes()
    if need > free:
        raise QuantlabError(f"{models.shown(Path(folder).name)} needs about {need / 2**30:.1f} GiB to load and "
                            f"capture, and this machine has {free / 2**30:.1f} GiB free")
    return need


def is_causal_lm(folder: str | Path) -> bool:
    """Whether config.json names a ...ForCausalLM architecture (GPT-2's LMHeadModel included)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    archs = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(archs, list) and any(isinstance(a, str) and a.endswith(("ForCausalLM", "LMHeadModel"))
                                           for a in archs)


# Below this many parameters a forward pass is many small ops, and torch's thread pool costs more
# than it saves (a tiny Llama's capture: 1.2 s on one thread, 10.8 s on this machine's two); above,
# the matmuls are large enough for every core to pay.
SMALL_MODEL_PARAMETERS = 50_000_000


@dataclass(frozen=True, eq=False)
class Decoder:
    model: torch.nn.Module
    tokenizer: object
    load_seconds: float

    @cached_property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


_LOCK = threading.RLock()  # one model object shared by sessions: hooks must not interleave


def load(folder: str | Path) -> Decoder:
    """The causal LM in `folder` and its tokenizer, once per process (checked to fit first).
    transformers' lazy imports are not thread-safe: a first load racing the embedded model's (the
    server's warm-up) raised "cannot import name 'AutoModelForCausalLM'"."""
    with _LOCK, models.exclusive_transformers():
        return _load(str(Path(folder).resolve()))


@lru_cache(maxsize=1)  # one decoder at a time: they are the largest objects the app holds
def _load(folder: str) -> Decoder:
    if not is_causal_lm(folder):
        raise QuantlabError(f"{models.shown(Path(folder).name)} is not a causal LM "
                            "(config.json names no ...ForCausalLM architecture)")
    check_fits(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                     dtype="auto")
    except (OSError, ValueError) as err:
        raise QuantlabError(f"{models.shown(Path(folder).name)} could not be loaded offline "
                            f"({models.shown(str(err).splitlines()[0] if str(err) else type(err).__name__)})") from None
    return Decoder(model.eval(), tokenizer, time.perf_counter() - start)


def token_ids(decoder: Decoder, text: str, max_tokens: int = MAX_TOKENS_PER_TEXT) -> torch.Tensor:
    """One text as a [1, tokens] batch of ids, truncated."""
    with _LOCK:  # one tokenizer shared by sessions: see models.tokenize
        ids = decoder.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)  # type: ignore[operator]
    return ids["input_ids"]


def is_linear(module: torch.nn.Module) -> bool:
    """nn.Linear, or GPT-2's Conv1D: the same matmul with its weight stored [in, out]."""
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def weight_of(module: torch.nn.Module) -> torch.Tensor:
    """The layer's weight as [out, in] (a view: Conv1D's is transposed)."""
    return module.weight.data if isinstance(module, torch.nn.Linear) else module.weight.data.T


def set_weight(module: torch.nn.Module, w: torch.Tensor) -> None:
    """Store an [out, in] weight back in the layer's own orientation and dtype."""
    module.weight.data = (w if isinstance(module, torch.nn.Linear) else w.T.contiguous()).to(module.weight.dtype)


@dataclass(frozen=True, eq=False)
class Capture:
    inputs: dict[str, torch.Tensor]  # Linear name -> [tokens, in_features], model dtype
    seconds: float


@contextmanager
def turn(decoder: Decoder) -> Iterator[None]:
    """Take a turn with the shared model: hooks one pass registers must not see another pass's
    tensors. A small model runs on one thread (see SMALL_MODEL_PARAMETERS)."""
    with _LOCK, (single_threaded() if decoder.parameters < SMALL_MODEL_PARAMETERS else nullcontext()):
        yield


@torch.no_grad()
def capture_inputs(decoder: Decoder, texts: list[str]) -> Capture:
    """Every Linear's input over `texts` (one forward pass per text), sentence after sentence."""
    parts: dict[str, list[torch.Tensor]] = {}
    start = time.perf_counter()
    with turn(decoder):
        handles = []
        for name, module in decoder.model.named_modules():
            if is_linear(module):
                def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], _n: str = name) -> None:
                    parts.setdefault(_n, []).append(args[0].reshape(-1, args[0].shape[-1]))

                handles.append(module.register_forward_pre_hook(hook))
        try:
            for text in texts:
                decoder.model(input_ids=token_ids(decoder, text))
        finally:
            for handle in handles:
                handle.remove()
    return Capture({name: torch.cat(chunks) for name, chunks in parts.items()}, time.perf_counter() - start)


def activations(folder: str | Path, kind: str = "general") -> Capture:
    """`capture_inputs` on one shipped calibration text, once per (model, text) per process."""
    with _LOCK:
        return _captured(str(Path(folder).resolve()), kind)


@lru_cache(maxsize=8)
def _captured(folder: str, kind: str) -> Capture:
    return capture_inputs(load(folder), models.sample_texts(kind))
