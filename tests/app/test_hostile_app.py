"""Hostile model files in the real app (issue 11): one line in the sidebar, the lesson stays, the
session goes on; and a server start that stays off the network."""
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save, save_file

import lab_ui
from tests.app.apptest_util import APP, run_page, use_local_path

ROOT = Path(APP).parent


def terabyte_in_16_bytes() -> bytes:
    raw = json.dumps({"x.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(16)


def million_tensors() -> bytes:
    raw = ("{" + ", ".join(f'"layer.{i}": {{"dtype": "F32", "shape": [1], "data_offsets": [{4 * i}, {4 * i + 4}]}}'
                           for i in range(10**6)) + "}").encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(4 * 10**6)


def assert_one_line_and_the_lesson_stays(at, expected: str) -> None:
    assert not at.exception, at.exception
    messages = [e.value for e in at.sidebar.error]
    assert len(messages) == 1 and expected in messages[0], messages
    assert "\n" not in messages[0]
    assert at.title  # the lesson rendered, on the embedded model, at the lesson's own layer
    assert at.selectbox(key="layer").value == next(s.story_layer for s in lab_ui.LESSONS if s.url == "symmetric")


def test_one_session_survives_every_hostile_path(tmp_path):
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(terabyte_in_16_bytes())
    not_json, no_map = tmp_path / "not-json", tmp_path / "no-map"
    for folder, index in ((not_json, "{oops"), (no_map, '{"metadata": {}}')):
        folder.mkdir()
        save_file({"a.weight": torch.randn(4, 4)}, str(folder / "model.safetensors"))
        (folder / "model.safetensors.index.json").write_text(index)
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    many = tmp_path / "many.safetensors"
    many.write_bytes(million_tensors())

    at = run_page("pages/symmetric.py")
    for path, expected in [(huge, "1000000×1000000 F32"), (not_json, "is not JSON"), (no_map, "no weight_map"),
                           (fifo, "is a named pipe"), (many, "quantlab reads headers up to 64 MiB")]:
        use_local_path(at, str(path))
        assert_one_line_and_the_lesson_stays(at, expected)

    good = tmp_path / "good.safetensors"
    save_file({"layer.weight": torch.randn(64, 64)}, str(good))
    use_local_path(at, str(good))
    assert not at.sidebar.error and at.selectbox(key="layer").value == "layer"


def test_one_session_survives_hostile_uploads():
    at = run_page("pages/symmetric.py")
    at.radio(key="source_kind").set_value("upload").run()
    for data, expected in [(terabyte_in_16_bytes(), "1000000×1000000 F32"),
                           (struct.pack("<Q", 100_000) + b"[" * 100_000, "header is not JSON")]:
        at.file_uploader(key="source_upload").set_value(("evil.safetensors", data, "application/octet-stream")).run()
        assert_one_line_and_the_lesson_stays(at, expected)
    good = save({"layer.weight": torch.randn(64, 64)})
    at.file_uploader(key="source_upload").set_value(("good.safetensors", good, "application/octet-stream")).run()
    assert not at.exception and not at.sidebar.error and at.selectbox(key="layer").value == "layer"


# -- the server starts without reaching out ---------------------------------------------------------

# Runs `streamlit run` in-process after recording every name lookup and connect, and refusing any
# that leaves the machine, so the test itself never touches the network.
_WATCHED_START = """
import socket, sys
LOCAL = {None, "", "localhost", "0.0.0.0", "::", "127.0.0.1", "::1"}
def report(what, host):
    if host not in LOCAL:
        print(f"NETWORK {what} {host}", flush=True)
        raise OSError("quantlab test: no network")
_getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect
def getaddrinfo(host, *args, **kwargs):
    report("lookup", host.decode() if isinstance(host, bytes) else host)
    return _getaddrinfo(host, *args, **kwargs)
def connect(self, address):
    if isinstance(address, tuple):
        report("connect", address[0])
    return _connect(self, address)
socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
from streamlit.web import cli
cli.main(["run", sys.argv[1], "--server.port", sys.argv[2]], prog_name="streamlit")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_output(cwd: Path, script: str, home: Path) -> str:
    """Console output of a server started in `cwd` (which holds .streamlit/config.toml), up to the
    line that shows its URL: Streamlit works out every address it prints before printing any."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # lookups go to the real hosts
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")  # HOME: no user-level streamlit config
    proc = subprocess.Popen([sys.executable, "-c", _WATCHED_START, script, str(free_port())], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120  # a guard against a hung start, not a timing assertion
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "URL:" in line:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    out = "".join(lines)
    assert "URL:" in out, out
    return out


def test_server_start_does_not_reach_out(tmp_path):
    out = start_output(ROOT, "app.py", tmp_path)
    assert "NETWORK" not in out, out
    # The same start without browser.serverAddress looks up the external IP: the watch above sees
    # lookups, so it is the setting that keeps the start quiet.
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'serverAddress = "localhost"' in config
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text(config.replace('serverAddress = "localhost"', ""))
    (tmp_path / "app.py").write_text("import streamlit as st\nst.write('hi')\n")
    bare = start_output(tmp_path, "app.py", tmp_path)
    assert "NETWORK lookup checkip.amazonaws.com" in bare, bare
