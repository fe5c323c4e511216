"""Uploaded checkpoints on the server's disk: one private folder per browser session, removed when
the session ends, under a per-session and a server-wide byte cap.

A room of 30 uploading 200 MiB files would otherwise fill the server's temp folder and keep every
file after everyone has gone home. The app holds one `SessionUploads` per browser session, named
by the session's id; `UploadStore.sweep` removes the folders of sessions that have been gone for
longer than the reconnect grace period (a closed tab; a laptop that slept for a minute comes back
to its files). A session object that is collected takes its folder with it too.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from quantlab.core.errors import QuantlabError
from quantlab.io import models

SESSION_BYTES = models.MAX_UPLOAD_BYTES
CONFIG_BYTES = 2**20  # published config.json files are a few KiB
CONFIG_LIMITS = {"num_hidden_layers": 1024, "hidden_size": 65536, "intermediate_size": 1 << 20,
                 "num_attention_heads": 1024, "num_key_value_heads": 1024, "vocab_size": 1 << 24,
                 "num_local_experts": 1024, "num_experts": 1024}
# The whole server's uploads at once; an instructor sizes it to the disk (QUANTLAB_UPLOADS_MIB).
SERVER_BYTES = int(os.environ.get("QUANTLAB_UPLOADS_MIB", "2048")) * 2**20


class UploadStore:
    """Every session's uploads of one server process, under one private temp folder."""

    def __init__(self, session_bytes: int = SESSION_BYTES, server_bytes: int = SERVER_BYTES) -> None:
        self.session_bytes = session_bytes
        self.server_bytes = server_bytes
        self.root = Path(tempfile.mkdtemp(prefix="quantlab-uploads-"))  # mode 0700: this user only
        self._lock = threading.Lock()
        self._sessions: weakref.WeakSet[SessionUploads] = weakref.WeakSet()
        self._remove_root = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)
        atexit.register(self._remove_root)

    def open_session(self, owner: str = "") -> SessionUploads:
        session = SessionUploads(self, owner)
        with self._lock:
            self._sessions.add(session)
        return session

    def sweep(self, is_connected: Callable[[str], bool], grace_s: float) -> int:
        """Close the sessions not connected for more than `grace_s` seconds; returns how many."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions)
        gone = []
        for session in sessions:
            if is_connected(session.owner):
                session.last_seen = now
            elif now - session.last_seen > grace_s:
                gone.append(session)
        for session in gone:
            session.close()
        with self._lock:
            for session in gone:
                self._sessions.discard(session)
        return len(gone)

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return sum(s.bytes_held for s in self._sessions)

    def close(self) -> None:
        self._remove_root()


class SessionUploads:
    """One session's uploaded files, newest last; the folder is deleted with this object."""

    def __init__(self, store: UploadStore, owner: str) -> None:
        self._store = store
        self.owner = owner
        self.last_seen = time.monotonic()
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=store.root))
        self._files: dict[str, tuple[models.ModelSource, int]] = {}  # upload id -> (source, bytes)
        self._remove_folder = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    @property
    def bytes_held(self) -> int:
        return sum(size for _, size in self._files.values())

    def add(self, upload_id: str, name: str, data: bytes) -> models.ModelSource:
        """The source for an upload, validated and written once per upload id (a rerun with the
        same file in the uploader costs nothing). Older uploads of this session make room for a
        new one; the server-wide cap refuses it with one line."""
        if upload_id in self._files:
            return self._files[upload_id][0]
        store = self._store
        if len(data) > store.session_bytes:
            raise QuantlabError(f"{models.shown(name)} is {len(data) / 2**20:.0f} MiB; one session may keep "
                                f"{store.session_bytes // 2**20} MiB of uploads")
        with store._lock:
            held_elsewhere = sum(s.bytes_held for s in store._sessions if s is not self)
            # This session's older uploads (no longer in its uploader) make room first.
            while self._files and (self.bytes_held + len(data) > store.session_bytes
                                   or held_elsewhere + self.bytes_held + len(data) > store.server_bytes):
                self._forget(next(iter(self._files)))
            if held_elsewhere + len(data) > store.server_bytes:
                raise QuantlabError(
                    f"The server already holds {held_elsewhere / 2**20:.0f} MiB of uploads (cap "
                    f"{store.server_bytes // 2**20} MiB); try again when others have left, or use the embedded model")
            source = models.ModelSource.from_upload(name, data, self.folder)
            self._files[upload_id] = (source, len(data))
        return source

    def add_config(self, name: str, data: bytes) -> Path:
        """An uploaded config.json, checked to be a transformers config (a JSON object with a
        model_type, at most CONFIG_BYTES) and kept in this session's folder; a newer one replaces it."""
        if len(data) > CONFIG_BYTES:
            raise QuantlabError(f"{models.shown(name)} is {len(data) / 2**10:.0f} KiB; a config.json is at most "
                                f"{CONFIG_BYTES // 2**10} KiB")
        try:
            config = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise QuantlabError(f"{models.shown(name)} is not JSON") from None
        if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
            raise QuantlabError(f"{models.shown(name)} is not a transformers config.json (no model_type)")
        # Sizing builds the architecture on the meta device, layer by layer: a config asking for a
        # billion layers would hold the server; real models stay far inside these bounds.
        for field, limit in CONFIG_LIMITS.items():
            value = config.get(field)
            if value is not None and not (isinstance(value, int) and 0 < value <= limit):
                raise QuantlabError(f"{models.shown(name)}: {field} = {models.shown(str(value), 40)} is outside "
                                    f"1…{limit:,}")
        target = self.folder / f"config-{hashlib.sha256(data).hexdigest()[:16]}" / "config.json"
        for old in self.folder.glob("config-*/config.json"):
            if old != target:
                old.unlink(missing_ok=True)
                old.parent.rmdir()
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        return target

    def _forget(self, upload_id: str) -> None:
        source, _ = self._files.pop(upload_id)
        if all(kept.path != source.path for kept, _ in self._files.values()):
            Path(source.path).unlink(missing_ok=True)

    @property
    def closed(self) -> bool:
        return not self._remove_folder.alive

    def close(self) -> None:
        self._files.clear()
        self._remove_folder()
