"""Per-session upload folders: private, capped, and gone with the session."""
import gc
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from quantlab.core.errors import QuantlabError
from quantlab.io import models, uploads


def _file(rows: int, cols: int = 64) -> bytes:
    return save({"a.weight": torch.randn(rows, cols)})


@pytest.fixture
def store():
    s = uploads.UploadStore(session_bytes=3 * len(_file(8)), server_bytes=5 * len(_file(8)))
    yield s
    s.close()


def test_each_session_has_a_private_folder_under_one_private_root(store):
    one, two = store.open_session(), store.open_session()
    a = one.add("id-1", "mine.safetensors", _file(8))
    b = two.add("id-2", "mine.safetensors", _file(8))
    assert Path(a.path).parent == one.folder and Path(b.path).parent == two.folder
    assert one.folder != two.folder and one.folder.parent == two.folder.parent == store.root
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert [t.name for t in models.list_layers(a)] == ["a.weight"] and a.label == "mine.safetensors"


def test_a_rerun_with_the_same_upload_does_not_parse_or_write_again(store, monkeypatch):
    session = store.open_session()
    first = session.add("id-1", "mine.safetensors", _file(8))
    monkeypatch.setattr(models.ModelSource, "from_upload", lambda *a: pytest.fail("parsed twice"))
    assert session.add("id-1", "mine.safetensors", _file(8)) == first


def test_a_session_keeps_its_newest_uploads_within_its_cap(store):
    session = store.open_session()
    sources = [session.add(f"id-{i}", f"f{i}.safetensors", _file(8)) for i in range(5)]
    kept = [Path(s.path).exists() for s in sources]
    assert kept == [False, False, True, True, True]
    assert session.bytes_held == 3 * len(_file(8))
    with pytest.raises(QuantlabError, match="one session may keep") as info:
        session.add("big", "big.safetensors", _file(40))
    assert "\n" not in str(info.value)


def test_the_server_wide_cap_refuses_with_one_line(store):
    full, late = store.open_session(), store.open_session()
    for i in range(3):
        full.add(f"a{i}", "f.safetensors", _file(8))
    late.add("b0", "g.safetensors", _file(8))
    late.add("b1", "g.safetensors", _file(8))  # 5 files: the server is full
    replaced = late.add("b2", "h.safetensors", _file(8))  # its own older upload makes room
    assert Path(replaced.path).exists() and store.bytes_held == store.server_bytes
    newcomer = store.open_session()
    with pytest.raises(QuantlabError, match="already holds") as info:
        newcomer.add("c", "i.safetensors", _file(8))
    assert "\n" not in str(info.value) and newcomer.bytes_held == 0
    del full
    gc.collect()
    assert Path(newcomer.add("c", "i.safetensors", _file(8)).path).exists()


def test_a_session_that_ends_takes_its_folder_and_its_share_of_the_cap(store):
    session = store.open_session()
    session.add("id", "mine.safetensors", _file(8))
    folder = session.folder
    assert folder.exists() and store.bytes_held > 0
    del session
    gc.collect()
    assert not folder.exists() and store.bytes_held == 0


def test_sweep_closes_only_sessions_gone_for_longer_than_the_grace_period(store, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(uploads.time, "monotonic", lambda: clock[0])
    here, left = store.open_session("here"), store.open_session("left")
    here.add("a", "f.safetensors", _file(8))
    left.add("b", "f.safetensors", _file(8))
    connected = {"here", "left"}
    assert store.sweep(connected.__contains__, grace_s=30) == 0
    connected.discard("left")  # the tab closed
    clock[0] += 20
    assert store.sweep(connected.__contains__, grace_s=30) == 0 and left.folder.exists()  # may come back
    clock[0] += 20
    assert store.sweep(connected.__contains__, grace_s=30) == 1
    assert not left.folder.exists() and left.closed and here.folder.exists() and not here.closed
    assert store.bytes_held == here.bytes_held


def test_closing_the_store_removes_every_upload(store):
    session = store.open_session()
    session.add("id", "mine.safetensors", _file(8))
    store.close()
    assert not store.root.exists()


def test_an_uploaded_config_is_checked_kept_privately_and_replaced_by_the_next(store):
    session = store.open_session("a")
    first = session.add_config("config.json", b'{"model_type": "llama", "num_hidden_layers": 2}')
    assert first.parent.parent == session.folder and first.read_bytes().startswith(b'{"model_type"')
    second = session.add_config("config.json", b'{"model_type": "qwen2"}')
    assert second.exists() and not first.exists() and list(session.folder.glob("config-*")) == [second.parent]
    for data, message in [(b"[1, 2]", "no model_type"), (b"\xff\xfe", "not JSON"), (b"{" * 10, "not JSON"),
                          (b" " * (uploads.CONFIG_BYTES + 1), "at most"),
                          (b'{"model_type": "llama", "num_hidden_layers": 1000000000}', "num_hidden_layers"),
                          (b'{"model_type": "llama", "hidden_size": "big"}', "hidden_size")]:
        with pytest.raises(QuantlabError, match=message):
            session.add_config("config.json", data)
