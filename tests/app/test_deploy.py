"""deploy/serve.py for real: two replicas behind nginx on localhost, learners over the proxy.

The learners are bench/load.py's protocol client: each has its own cookie jar, fetches the page,
opens the websocket and, for uploads, PUTs the file over plain HTTP, as a browser tab does.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.load import Session, process_tree  # noqa: E402
from deploy import serve  # noqa: E402

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
pytestmark = pytest.mark.skipif(NGINX is None and not os.environ.get("CI"),
                                reason="needs Debian's nginx (CI installs it through .ci/run)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_room(run_dir: Path, replicas: int = 2, *extra: str,
                env: dict | None = None) -> tuple[subprocess.Popen, dict]:
    """`deploy/serve.py` as a user starts it (not warmed: warming opens every lesson on every
    replica, minutes on a small CI machine); returns the process and its state file."""
    state = run_dir / "state.json"
    log = open(run_dir / "serve.out", "wb")
    proc = subprocess.Popen(
        [sys.executable, "deploy/serve.py", "--replicas", str(replicas), "--host", "127.0.0.1",
         "--port", str(_free_port()), "--no-warm", "--run-dir", str(run_dir), "--state", str(state), *extra],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    give_up = time.monotonic() + 300
    while not state.exists():
        if proc.poll() is not None or time.monotonic() > give_up:
            proc.kill()
            pytest.fail(f"serve.py did not get ready:\n{(run_dir / 'serve.out').read_text()[-3000:]}")
        time.sleep(0.25)
    return proc, json.loads(state.read_text())


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """Two replicas in room mode; their temp folder is the test's, and a closed tab's session is
    forgotten after 1 s instead of Streamlit's 2 minutes, so the test can see its uploads go."""
    temp = tmp_path_factory.mktemp("replica-tmp")
    env = dict(os.environ, TMPDIR=str(temp), STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL="1")
    proc, state = _start_room(tmp_path_factory.mktemp("room"), 2, "--room", env=env)
    yield {**state, "temp": temp}
    _stop(proc)


def _session_upload_files(temp: Path) -> list[Path]:
    return sorted(temp.glob("quantlab-uploads-*/session-*/*.safetensors"))


def _access_log(state: dict) -> list[dict]:
    """nginx's log of the room: request, status, the replica that served it, the affinity key."""
    pattern = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) \d+ '
                         r'upstream=(?P<upstream>\S+) affinity=(?P<affinity>\S+)')
    text = Path(state["nginx"]["access_log"]).read_text()
    return [m.groupdict() for m in map(pattern.search, text.splitlines()) if m]


def _lines_of(state: dict, affinity: str, path_prefix: str) -> list[dict]:
    """This learner's logged requests; nginx logs a websocket when it closes, so wait a little."""
    for _ in range(40):
        lines = [e for e in _access_log(state) if e["affinity"] == affinity]
        if any(e["path"].startswith(path_prefix) for e in lines):
            return lines
        time.sleep(0.25)
    return lines


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"  # ended, waiting for its parent to read its status


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_an_upload_through_the_proxy_reaches_the_replica_holding_the_session(room):
    weights = np.arange(24 * 40, dtype=np.float32).reshape(24, 40) / 100
    data = save({"probe.proj.weight": weights})

    async def learner() -> tuple[str, str, str, list[str], list[Path]]:
        async with Session(room["url"], timeout=240) as s:
            await s.goto("symmetric")
            source = next(w for w in s.widgets() if w.key == "source_kind")
            # --room reached the replicas: a participant cannot point the app at server paths.
            assert "Upload" in source.proto.options and "Local path" not in source.proto.options
            await s.change(source, WidgetState(id=source.id, string_value="Upload"))
            uploader = next(w for w in s.widgets() if w.kind == "file_uploader")
            result = await s.upload(uploader, "probe.safetensors", data)
            held = _session_upload_files(room["temp"])
            return s.text(sidebar=True), s.text(sidebar=False), s.cookie(serve.AFFINITY_COOKIE), result.exceptions, held

    sidebar, lesson, affinity, exceptions, held = asyncio.run(learner())
    assert exceptions == [] and len(held) == 1 and held[0].read_bytes() == data
    # The replica that parsed the upload is the one running this session: the layer picker offers
    # the uploaded tensor and the lesson draws it.
    assert "probe.proj" in sidebar.splitlines() and "24×40" in sidebar
    assert "probe.proj" in lesson
    lines = _lines_of(room, affinity, "/_stcore/stream")
    puts = [e for e in lines if e["method"] == "PUT" and e["path"].startswith("/_stcore/upload_file/")]
    assert len(puts) == 1 and puts[0]["status"] == "204"
    assert len({e["upstream"] for e in lines}) == 1, lines

    # The upload lived in that session's own folder and goes once the closed tab's reconnect
    # grace period (1 s here) is over: the replica sweeps every lab_ui.UPLOAD_SWEEP_S seconds.
    give_up = time.monotonic() + 60
    while _session_upload_files(room["temp"]) and time.monotonic() < give_up:
        time.sleep(0.5)
    assert _session_upload_files(room["temp"]) == []


def test_learners_spread_over_both_replicas_and_each_stays_on_one(room):
    """Learners come from one address (as a room behind one NAT does): only the cookie spreads them."""
    replicas = {f"127.0.0.1:{r['port']}" for r in room["replicas"]}

    async def learner() -> str:
        async with Session(room["url"], timeout=240) as s:
            result = await s.goto("")
            assert result.exceptions == [] and s.pages
            return s.cookie(serve.AFFINITY_COOKIE)

    served: dict[str, set[str]] = {}
    for _ in range(16):  # each learner lands on either replica with chance 1/2
        affinity = asyncio.run(learner())
        lines = _lines_of(room, affinity, "/_stcore/stream")
        assert {e["path"].split("?")[0] for e in lines} >= {"/_stcore/health", "/_stcore/stream"}
        served[affinity] = {e["upstream"] for e in lines}
        if {u for us in served.values() for u in us} == replicas:
            break
    assert all(len(us) == 1 for us in served.values()), served
    assert {u for us in served.values() for u in us} == replicas


def test_stopping_the_room_leaves_nothing_running(tmp_path):
    proc, state = _start_room(tmp_path)
    started = process_tree([proc.pid])
    ports = [r["port"] for r in state["replicas"]] + [int(state["url"].rsplit(":", 1)[1])]
    # serve.py itself, 2 replicas, the nginx master and its worker
    assert len(started) >= 5 and state["nginx"]["pid"] in started
    assert not any(_refuses(p) for p in ports)

    assert _stop(proc) == 0
    assert all(_gone(pid) for pid in started)
    assert all(_refuses(p) for p in ports)
    assert not (tmp_path / "state.json").exists()


def test_replicas_and_nginx_end_even_when_serve_py_is_killed(tmp_path):
    proc, state = _start_room(tmp_path, replicas=1)
    children = process_tree([proc.pid]) - {proc.pid}
    proc.kill()  # SIGKILL: no handler runs, only the kernel's parent-death signal reaches the children
    proc.wait()
    give_up = time.monotonic() + 60
    while not all(_gone(pid) for pid in children) and time.monotonic() < give_up:
        time.sleep(0.25)
    assert children and all(_gone(pid) for pid in children)


def test_the_multi_host_example_is_what_serve_py_generates(capsys):
    example = (ROOT / "deploy" / "nginx-multi-host.conf").read_text()
    command = re.search(r"^# Generated by: python deploy/serve.py (.+)$", example, re.M).group(1).split()
    assert serve.main(command) == 0
    generated = capsys.readouterr().out
    assert example.endswith(generated) and "server 10.0.0.12:8602" in generated
