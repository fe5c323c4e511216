"""Load benchmark: a room of simulated learners on a real server, over Streamlit's own protocol.

Each simulated learner is what a browser tab is to the server, minus the drawing: it fetches the
page (which, behind deploy/serve.py's nginx, hands out the affinity cookie) and the health check
(which sets Streamlit's XSRF cookie), opens the `/_stcore/stream` websocket with those cookies and
speaks protobuf: `BackMsg.rerun_script` (a `ClientState` naming the page by `page_script_hash`, the
query string, every widget's current value in `WidgetStates`, and the hashes of the big messages it
already holds) goes up; `ForwardMsg`s (new_session, navigation, deltas with the elements, and
script_finished) come down. A learner

  1. arrives (the first at once, the others at random moments of --arrival s) and opens the
     entry page (first-page time: from the first HTTP request to the first finished run, so it
     includes connecting);
  2. visits every page in the navigation the server sends (app.py builds it from
     lab_ui.LESSONS), in order, skipping the default Welcome page it arrived on;
  3. on each lesson, moves --changes of the lesson's own sliders, select sliders, select boxes and
     radios (main area, not the shared sidebar), found in the elements the server sent, to a
     nearby value, waiting a think time of --think s ± --jitter before every action.

A change is timed from sending its rerun BackMsg to receiving the run's script_finished ForwardMsg
(FINISHED_SUCCESSFULLY, or FINISHED_FRAGMENT_RUN_SUCCESSFULLY when the widget lives in an
st.fragment, which the rerun then names). A page visit is timed the same way. A run that shows an
exception, a compile error or no answer within --timeout is an error and its time is left out.

Without --url the benchmark starts a fresh server on a free port through deploy/serve.py, so it
runs as a room does, and stops it at the end: one `streamlit run app.py` reached directly, or with
--replicas R, R of them behind nginx. --mode cold measures that server as the first learners find
it; --mode warm lets serve.py warm every replica first (one session opens every lesson), or, with
--url, sends one learner through every page of the URL first. Server memory (RSS summed over each
replica's and nginx's process tree, peak) and CPU (seconds, cores on average and at peak) are read
from /proc.
The load generator runs on the same machine and its own CPU time is recorded too: on a small
machine it competes with the server, so read client_cpu_s next to the latencies.

Commands for the committed measurements (run on a quiet machine; each writes
bench/results/load_<mode>_<users>u_<replicas>r[_proxy]_<date>.json):

    python bench/load.py --users 1 --mode warm
    python bench/load.py --users 10 --mode warm --replicas 2
    python bench/load.py --users 30 --mode warm --replicas 2
    python bench/load.py --users 30 --mode warm
    python bench/load.py --users 30 --mode cold --replicas 2 --arrival 10 --changes 1

(--replicas 2 is one replica per core of a 2-core machine; use the core count elsewhere.)

Against a server that is already running (its pids make the memory and CPU columns):

    python bench/load.py --proxy http://127.0.0.1:8501 --replicas 2 --users 30 --server-pid PID
"""
from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.Slider_pb2 import Slider
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MOVABLE = ("slider", "select_slider", "selectbox", "radio")
DONE = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)
# The field holding each text element's words, for callers that check what a page shows.
TEXT_FIELDS = {"markdown": "body", "heading": "body", "alert": "body", "text": "body", "metric": "body"}


class RunError(Exception):
    """A run that failed as a learner would see it: exception on the page, no answer, bad upload."""


@dataclass
class Widget:
    id: str
    kind: str  # one of MOVABLE, or the element's own name for others (file_uploader, ...)
    label: str
    proto: object
    path: tuple[int, ...]
    fragment_id: str

    @property
    def key(self) -> str:
        """The `key=` the page gave the widget: Streamlit ids read `$$ID-<hash>-<key>`."""
        parts = self.id.split("-", 2)
        return parts[2] if len(parts) == 3 and parts[0] == "$$ID" else ""

    @property
    def in_sidebar(self) -> bool:
        return self.path[:1] == (1,)  # delta paths start at the root container: 0 main, 1 sidebar


@dataclass
class RunResult:
    seconds: float
    exceptions: list[str]


@dataclass
class _Shown:
    element: object
    kind: str
    generation: int
    fragment_id: str


def _state_from_element(widget: Widget) -> WidgetState | None:
    """The value a browser would report for a widget it has just drawn (default or server-set)."""
    p, state = widget.proto, WidgetState(id=widget.id)
    if widget.kind == "slider":
        state.double_array_value.data[:] = list(p.value if p.set_value else p.default)
    elif widget.kind == "select_slider":
        state.string_array_value.data[:] = list(p.raw_value) if p.set_value else [p.options[int(i)] for i in p.default]
    elif widget.kind in ("selectbox", "radio"):
        if p.set_value:
            state.string_value = p.raw_value
        elif p.HasField("default") and p.options:
            state.string_value = p.options[p.default]
        else:
            return None
    else:
        return None
    return state


def next_state(widget: Widget, current: WidgetState, rng: random.Random) -> WidgetState | None:
    """A different value a learner could pick: a few steps along a slider, another option."""
    p, state = widget.proto, WidgetState(id=widget.id)
    if widget.kind == "slider":
        values = list(current.double_array_value.data)
        if len(values) != 1 or p.step <= 0:
            return None  # range sliders: none in the lessons
        steps = round((p.max - p.min) / p.step)
        at = round((values[0] - p.min) / p.step)
        choices = [i for i in range(max(0, at - 3), min(steps, at + 3) + 1) if i != at]
        if not choices:
            return None
        state.double_array_value.data[:] = [round(p.min + rng.choice(choices) * p.step, 12)]
        return state
    options = list(p.options)
    if widget.kind == "select_slider":
        current_values = list(current.string_array_value.data)
        if len(current_values) != 1 or current_values[0] not in options:
            return None
        at = options.index(current_values[0])
        choices = [i for i in range(max(0, at - 3), min(len(options) - 1, at + 3) + 1) if i != at]
        if not choices:
            return None
        state.string_array_value.data[:] = [options[rng.choice(choices)]]
        return state
    others = [o for o in options if o != current.string_value]
    if widget.kind not in ("selectbox", "radio") or not others:
        return None
    state.string_value = rng.choice(others)
    return state


class Session:
    """One browser tab: its cookies, its websocket, and what the server has drawn in it."""

    def __init__(self, base_url: str, timeout: float = 180.0):
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        self._http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.session_id = ""
        self.pages: list = []  # AppPage protos from the last navigation message
        self.page_script_hash = ""
        self.query_string = ""
        self._shown: dict[tuple[int, ...], _Shown] = {}
        self._values: dict[str, WidgetState] = {}
        self._big: dict[str, ForwardMsg] = {}  # cacheable messages by hash, as the browser keeps them
        self._generation = 0
        self._runs: asyncio.Queue = asyncio.Queue()
        self._file_urls: dict[str, asyncio.Future] = {}
        self._ws = None
        self._reader: asyncio.Task | None = None

    # -- connection --------------------------------------------------------------------------

    def _get(self, path: str) -> bytes:
        with self._http.open(self.base + path, timeout=self.timeout) as resp:
            return resp.read()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    async def open(self) -> None:
        await asyncio.to_thread(self._get, "/")
        await asyncio.to_thread(self._get, "/_stcore/health")
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        ws_url = "ws" + self.base.removeprefix("http") + "/_stcore/stream"
        self._ws = await connect(ws_url, subprotocols=["streamlit"], additional_headers={"Cookie": cookies},
                                 max_size=None, open_timeout=self.timeout)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- what comes down ------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                self._handle(msg)
        finally:
            # Whoever waits on a run learns that none will come.
            self._runs.put_nowait(None)

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "ref_hash":
            cached = self._big.get(msg.ref_hash)
            if cached is None:
                return
            body = ForwardMsg()
            body.CopyFrom(cached)
            body.metadata.CopyFrom(msg.metadata)
            msg, kind = body, "delta"
        elif msg.metadata.cacheable:
            self._big[msg.hash] = msg
        if kind == "new_session":
            # Every full run starts with one: what it draws replaces what the last run drew.
            self._generation += 1
            self.page_script_hash = msg.new_session.page_script_hash
            if msg.new_session.HasField("initialize"):
                self.session_id = msg.new_session.initialize.session_id
        elif kind == "navigation":
            self.pages = list(msg.navigation.app_pages)
        elif kind == "page_info_changed":
            self.query_string = msg.page_info_changed.query_string
        elif kind == "delta":
            self._on_delta(msg)
        elif kind == "script_finished":
            if msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                # As the browser does at the end of a full run: drop what this run did not draw.
                self._shown = {p: s for p, s in self._shown.items() if s.generation == self._generation}
            if msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                self._runs.put_nowait(msg.script_finished)
        elif kind == "file_urls_response":
            waiter = self._file_urls.pop(msg.file_urls_response.response_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg.file_urls_response)
        elif kind == "page_not_found":
            self._shown[(-1,)] = _Shown(None, "page_not_found", self._generation, "")

    def _on_delta(self, msg: ForwardMsg) -> None:
        delta = msg.delta
        path = tuple(msg.metadata.delta_path)
        if delta.WhichOneof("type") != "new_element":
            self._shown.pop(path, None)
            return
        element = delta.new_element
        kind = element.WhichOneof("type")
        proto = getattr(element, kind)
        if kind == "slider" and proto.type == Slider.SELECT_SLIDER:
            kind = "select_slider"
        self._shown[path] = _Shown(proto, kind, self._generation, delta.fragment_id)
        widget_id = getattr(proto, "id", "")
        if kind in MOVABLE and widget_id and (widget_id not in self._values or proto.set_value):
            state = _state_from_element(self._as_widget(path, self._shown[path]))
            if state is not None:
                self._values[widget_id] = state

    @staticmethod
    def _as_widget(path: tuple[int, ...], shown: _Shown) -> Widget:
        return Widget(shown.element.id, shown.kind, shown.element.label, shown.element, path, shown.fragment_id)

    # -- what the page shows --------------------------------------------------------------------

    def widgets(self) -> list[Widget]:
        return [self._as_widget(p, s) for p, s in sorted(self._shown.items())
                if s.element is not None and getattr(s.element, "id", "") and hasattr(s.element, "label")]

    def movable(self) -> list[Widget]:
        """The lesson's own controls a learner moves (not the shared sidebar, not disabled)."""
        return [w for w in self.widgets() if w.kind in MOVABLE and not w.in_sidebar
                and not w.proto.disabled and w.id in self._values]

    def value(self, widget: Widget) -> WidgetState:
        return self._values[widget.id]

    def exceptions(self) -> list[str]:
        out = [f"{s.element.type or 'exception'}: {s.element.message[:300]}" for s in self._shown.values()
               if s.kind == "exception" and not s.element.is_warning]
        if any(s.kind == "page_not_found" for s in self._shown.values()):
            out.append("page not found")
        return out

    def text(self, sidebar: bool | None = None) -> str:
        """Every text the page shows (bodies, labels, options), optionally of one area only."""
        lines = []
        for path, s in sorted(self._shown.items()):
            if s.element is None or (sidebar is not None and (path[:1] == (1,)) != sidebar):
                continue
            if s.kind in TEXT_FIELDS:
                lines.append(getattr(s.element, TEXT_FIELDS[s.kind]))
            if hasattr(s.element, "label"):
                lines.append(s.element.label)
            if s.kind in ("selectbox", "radio", "select_slider"):
                lines.extend(s.element.options)
        return "\n".join(lines)

    # -- what goes up ---------------------------------------------------------------------------

    async def _rerun(self, *, page_script_hash: str | None = None, page_name: str = "",
                     fragment_id: str = "", query_string: str | None = None) -> RunResult:
        msg = BackMsg()
        state = msg.rerun_script
        state.page_script_hash = self.page_script_hash if page_script_hash is None else page_script_hash
        state.page_name = page_name
        state.query_string = self.query_string if query_string is None else query_string
        state.fragment_id = fragment_id
        active = {getattr(s.element, "id", "") for s in self._shown.values() if s.element is not None}
        state.widget_states.widgets.extend(v for k, v in self._values.items() if k in active)
        state.cached_message_hashes.extend(self._big)
        while not self._runs.empty():  # an answer nobody waited for must not end this run
            self._runs.get_nowait()
        start = time.perf_counter()
        await self._ws.send(msg.SerializeToString())
        try:
            status = await asyncio.wait_for(self._runs.get(), self.timeout)
        except asyncio.TimeoutError:
            raise RunError(f"no script_finished within {self.timeout:.0f} s") from None
        elapsed = time.perf_counter() - start
        if status is None:
            raise RunError("the server closed the websocket")
        if status not in DONE:
            raise RunError(f"script finished with status {ForwardMsg.ScriptFinishedStatus.Name(status)}")
        return RunResult(elapsed, self.exceptions())

    async def goto(self, url_path: str = "", *, query_string: str = "") -> RunResult:
        """Open a page: by name on the first run (as a typed or shared link), then as a nav click."""
        if not self.pages:
            return await self._rerun(page_script_hash="", page_name=url_path, query_string=query_string)
        page = next((p for p in self.pages if p.url_pathname == url_path), None)
        if page is None:
            raise RunError(f"no page {url_path!r} in the navigation")
        return await self._rerun(page_script_hash=page.page_script_hash, query_string=query_string)

    async def change(self, widget: Widget, state: WidgetState) -> RunResult:
        self._values[widget.id] = state
        return await self._rerun(fragment_id=widget.fragment_id)

    async def upload(self, widget: Widget, name: str, data: bytes) -> RunResult:
        """Send a file as st.file_uploader's frontend does: ask for URLs, PUT it, rerun with it."""
        request = BackMsg()
        request.file_urls_request.request_id = str(uuid.uuid4())
        request.file_urls_request.file_names.append(name)
        request.file_urls_request.session_id = self.session_id
        waiter = asyncio.get_running_loop().create_future()
        self._file_urls[request.file_urls_request.request_id] = waiter
        await self._ws.send(request.SerializeToString())
        response = await asyncio.wait_for(waiter, self.timeout)
        if response.error_msg:
            raise RunError(f"upload refused: {response.error_msg}")
        urls = response.file_urls[0]
        await asyncio.to_thread(self._put_file, urls.upload_url, name, data)
        state = WidgetState(id=widget.id)
        info = state.file_uploader_state_value.uploaded_file_info.add()
        info.file_id, info.name, info.size = urls.file_id, name, len(data)
        info.file_urls.CopyFrom(urls)
        return await self.change(widget, state)

    def _put_file(self, path: str, name: str, data: bytes) -> None:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.base + path, data=body, method="PUT", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-Xsrftoken": self.cookie("_streamlit_xsrf") or "",
        })
        try:
            with self._http.open(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as err:
            raise RunError(f"upload PUT answered {err.code}: {err.read().decode(errors='replace')[:200]}") from None


# -- the simulated room --------------------------------------------------------------------------

@dataclass
class Record:
    first_page: list[float] = field(default_factory=list)
    pages: dict[str, list[float]] = field(default_factory=dict)
    changes: dict[str, list[float]] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    users_finished: int = 0


def lesson_paths(session: Session, only: list[str] | None) -> list[str]:
    """Every page of the navigation but the default one, in the router's order."""
    paths = [p.url_pathname for p in session.pages if not p.is_default]
    return [p for p in paths if p in only] if only else paths


async def learner(index: int, args: argparse.Namespace, start_at: float, deadline: float, rec: Record) -> None:
    rng = random.Random(f"{args.seed}-{index}")
    lo, hi = args.think * (1 - args.jitter), args.think * (1 + args.jitter)

    async def think() -> None:
        await asyncio.sleep(rng.uniform(lo, hi))

    where, action = args.entry or "(entry)", "open"

    def fail(err: Exception) -> None:
        rec.errors.append({"user": index, "page": where, "action": action, "error": str(err) or type(err).__name__})

    await asyncio.sleep(start_at)
    session = Session(args.url, timeout=args.timeout)
    try:
        start = time.perf_counter()
        await session.open()
        first = await session.goto(args.entry)
        if first.exceptions:
            fail(RunError("; ".join(first.exceptions)))
        else:
            rec.first_page.append(time.perf_counter() - start)
        for path in lesson_paths(session, args.lessons):
            where, action = path, "visit"
            if time.monotonic() > deadline:
                raise RunError("deadline reached")
            await think()
            result = await session.goto(path)
            if result.exceptions:
                fail(RunError("; ".join(result.exceptions)))
            else:
                rec.pages.setdefault(path, []).append(result.seconds)
            for _ in range(args.changes):
                choices = [(w, s) for w in session.movable()
                           if (s := next_state(w, session.value(w), rng)) is not None]
                if not choices:
                    break
                widget, state = rng.choice(choices)
                action = f"change {widget.key or widget.label}"
                await think()
                result = await session.change(widget, state)
                if result.exceptions:
                    fail(RunError("; ".join(result.exceptions)))
                else:
                    rec.changes.setdefault(path, []).append(result.seconds)
        rec.users_finished += 1
    except (RunError, OSError, asyncio.TimeoutError) as err:
        fail(err)
    except Exception as err:  # a websocket closed mid-run, a malformed message: the learner is gone
        fail(RuntimeError(f"{type(err).__name__}: {err}"))
    finally:
        await session.close()


async def _visit(session: Session, path: str) -> list[str]:
    try:
        return [f"{path or '/'}: {e}" for e in (await session.goto(path)).exceptions]
    except RunError as err:
        return [f"{path or '/'}: {err}"]


async def warm(url: str, timeout: float = 300.0, only: list[str] | None = None) -> list[str]:
    """One learner opens the entry page and every lesson once, so that the caches of the
    process behind `url` hold the default views; returns what went wrong, one line each."""
    async with Session(url, timeout=timeout) as session:
        problems = await _visit(session, "")
        if not session.pages:
            return problems + ["/: the server sent no navigation"]
        for path in lesson_paths(session, only):
            problems += await _visit(session, path)
    return problems


# -- the server's side: processes, memory, CPU ---------------------------------------------------

def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, CPU ticks used, resident pages), from /proc/<pid>/stat."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:  # the process ended between listdir and open
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parens
        table[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]))
    return table


def process_tree(roots: list[int], table: dict[int, tuple[int, int, int]] | None = None) -> set[int]:
    """The roots and every process below them."""
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


class ServerMeter:
    """Samples RSS and CPU of the server's process trees (one tree per replica, and nginx)."""

    def __init__(self, roots: list[int], interval: float = 0.5):
        self.roots, self.interval = roots, interval
        self.tick = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.samples: list[tuple[float, int, list[int]]] = []  # (time, CPU ticks, RSS bytes per root)

    def sample(self) -> None:
        table = _proc_table()
        ticks, rss = 0, []
        for root in self.roots:
            tree = process_tree([root], table)
            ticks += sum(table[p][1] for p in tree)
            rss.append(sum(table[p][2] for p in tree) * self.page)
        self.samples.append((time.monotonic(), ticks, rss))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
        self.sample()

    def summary(self) -> dict:
        (t0, c0, _), (t1, c1, _) = self.samples[0], self.samples[-1]
        cpu_s = (c1 - c0) / self.tick
        rates = [(b[1] - a[1]) / self.tick / (b[0] - a[0])
                 for a, b in zip(self.samples, self.samples[1:]) if b[0] > a[0]]
        per_root = [max(s[2][i] for s in self.samples) for i in range(len(self.roots))]
        return {
            "pids": self.roots,
            "rss_peak_mb": round(max(sum(s[2]) for s in self.samples) / 2**20, 1),
            "rss_peak_mb_per_process_tree": [round(b / 2**20, 1) for b in per_root],
            "cpu_s": round(cpu_s, 2),
            "cpu_cores_avg": round(cpu_s / (t1 - t0), 2) if t1 > t0 else None,
            "cpu_cores_peak": round(max(rates), 2) if rates else None,
            "sample_interval_s": self.interval,
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnServer:
    """A fresh server for one benchmark, started through deploy/serve.py so it runs exactly as a
    room does: one replica on its own, or `replicas` behind nginx."""

    def __init__(self, replicas: int | None, warm_up: bool, room: bool, start_timeout: float = 900.0):
        self.replicas, self.warm_up, self.room, self.start_timeout = replicas, warm_up, room, start_timeout
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="quantlab-load-"))

    def start(self) -> tuple[str, list[int], list[dict]]:
        state = self.dir / "state.json"
        cmd = [sys.executable, str(ROOT / "deploy" / "serve.py"), "--host", "127.0.0.1",
               "--port", str(_free_port()), "--state", str(state)]
        cmd += ["--replicas", str(self.replicas)] if self.replicas else ["--replicas", "1", "--backends-only"]
        cmd += [] if self.warm_up else ["--no-warm"]
        cmd += ["--room"] if self.room else []
        log = open(self.dir / "serve.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        give_up = time.monotonic() + self.start_timeout
        while not state.exists():
            if self.proc.poll() is not None or time.monotonic() > give_up:
                raise SystemExit(f"deploy/serve.py did not get ready:\n{(self.dir / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        info = json.loads(state.read_text())
        roots = [r["pid"] for r in info["replicas"]] + ([info["nginx"]["pid"]] if info["nginx"] else [])
        return info["url"], roots, info["warm_up"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for path in sorted(self.dir.iterdir()):
            path.unlink()
        self.dir.rmdir()


# -- the run and its report ----------------------------------------------------------------------

def stats(values: list[float]) -> dict:
    """Nearest-rank percentiles (each one is a time a learner really waited), in seconds."""
    if not values:
        return {"n": 0}
    s = sorted(values)

    def rank(p: int) -> float:
        return round(s[max(0, -(-len(s) * p // 100) - 1)], 4)

    return {"n": len(s), "p50": rank(50), "p95": rank(95), "p99": rank(99), "max": round(s[-1], 4),
            "mean": round(sum(s) / len(s), 4)}


async def room(args: argparse.Namespace, roots: list[int]) -> tuple[Record, dict | None, float, float]:
    rec = Record()
    rng = random.Random(args.seed)
    # The first learner comes at once, the others at random moments of the arrival window.
    arrivals = [0.0] + sorted(rng.uniform(0, args.arrival) for _ in range(args.users - 1))
    meter, stop = (ServerMeter(roots) if roots else None), asyncio.Event()
    sampling = asyncio.create_task(meter.run(stop)) if meter else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = time.monotonic() + args.deadline
    await asyncio.gather(*(learner(i, args, at, deadline, rec) for i, at in enumerate(arrivals)))
    wall, client_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stop.set()
    if sampling:
        await sampling
    return rec, meter.summary() if meter else None, wall, client_cpu


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text()
    mem = next((ln.split()[1] for ln in meminfo.splitlines() if ln.startswith("MemTotal")), "0")
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "mem_total_gb": round(int(mem) / 2**20, 1), "python": sys.version.split()[0]}


def report(args: argparse.Namespace, rec: Record, server: dict | None, wall: float, client_cpu: float,
           load_before: tuple, warm_up: list[dict]) -> dict:
    lessons = list(dict.fromkeys([*rec.pages, *rec.changes]))  # in the order the learners met them
    all_changes = [t for ts in rec.changes.values() for t in ts]
    all_pages = [t for ts in rec.pages.values() for t in ts]
    return {
        "benchmark": "load",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": {**machine(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()], "note": args.note},
        "target": {"url": args.url, "replicas": args.replicas or 1, "via_proxy": args.via_proxy,
                   "started_by_benchmark": args.started, "room_mode": args.room if args.started else None},
        "config": {"mode": args.mode, "users": args.users, "arrival_window_s": args.arrival, "think_s": args.think,
                   "think_jitter": args.jitter, "changes_per_lesson": args.changes, "entry": args.entry,
                   "lessons": args.lessons or "all", "timeout_s": args.timeout, "seed": args.seed},
        "warm_up": warm_up,
        "first_page_s": stats(rec.first_page),
        "change_s": {"overall": stats(all_changes), "per_lesson": {p: stats(rec.changes.get(p, [])) for p in lessons}},
        "visit_s": {"overall": stats(all_pages), "per_lesson": {p: stats(rec.pages.get(p, [])) for p in lessons}},
        "errors": {"count": len(rec.errors), "samples": rec.errors[:30]},
        "users_finished": rec.users_finished,
        "server": server,
        "client_cpu_s": round(client_cpu, 2),
        "wall_s": round(wall, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    target = ap.add_argument_group("target (default: start a fresh server, stop it at the end)")
    target.add_argument("--url", help="an app already running, e.g. http://127.0.0.1:8501")
    target.add_argument("--proxy", metavar="URL", help="the same, naming an nginx in front of replicas")
    target.add_argument("--replicas", type=int, help="replicas behind nginx (started: deploy/serve.py --replicas N; "
                                                     "with --url/--proxy: recorded only)")
    target.add_argument("--room", action="store_true", help="start the server in room mode (serve.py --room)")
    target.add_argument("--server-pid", type=int, action="append", default=[],
                        help="with --url/--proxy: a server process whose tree is measured (repeatable)")
    ap.add_argument("--mode", choices=["cold", "warm"], default="warm",
                    help="cold: the fresh server as the first learners find it; warm: one learner visits every "
                         "page first (default)")
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--arrival", type=float, default=10.0, help="learners arrive at random in this window (s)")
    ap.add_argument("--think", type=float, default=3.0, help="mean think time before each action (s)")
    ap.add_argument("--jitter", type=float, default=0.5, help="think time spread: ± this fraction")
    ap.add_argument("--changes", type=int, default=3, help="widget changes per lesson")
    ap.add_argument("--lessons", type=lambda s: [p for p in s.split(",") if p],
                    help="comma-separated url paths (e.g. symmetric,granularity); default every lesson")
    ap.add_argument("--entry", default="", help="url path the learners arrive on (default: the Welcome page)")
    ap.add_argument("--timeout", type=float, default=180.0, help="longest wait for one run (s)")
    ap.add_argument("--deadline", type=float, default=1800.0, help="no new action after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="stored with the machine, e.g. 'quiet machine'")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/load_<mode>_<users>u_<replicas>r"
                                             "[_proxy]_<date>.json)")
    args = ap.parse_args(argv)
    if args.url and args.proxy:
        ap.error("give --url or --proxy, not both")
    args.via_proxy = bool(args.proxy) or (args.url is None and args.replicas is not None)
    args.url = args.proxy or args.url
    args.started = args.url is None
    if args.server_pid and args.started:
        ap.error("--server-pid goes with --url/--proxy; a server the benchmark starts is measured anyway")
    if args.room and not args.started:
        ap.error("--room starts a server in room mode; a running server is what it is")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()
    server = OwnServer(args.replicas, warm_up=args.mode == "warm", room=args.room) if args.started else None
    # SIGTERM ends the run the way Ctrl-C does, so the server it started is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        roots, warm_up = args.server_pid, []
        if server:  # serve.py warms every replica it starts (in warm mode) and says how it went
            args.url, roots, warm_up = server.start()
        elif args.mode == "warm":
            start = time.perf_counter()
            problems = asyncio.run(warm(args.url, args.timeout, args.lessons))
            warm_up = [{"url": args.url, "seconds": round(time.perf_counter() - start, 1), "problems": problems}]
        rec, measured, wall, client_cpu = asyncio.run(room(args, roots))
    finally:
        if server:
            server.stop()
    result = report(args, rec, measured, wall, client_cpu, load_before, warm_up)
    out = args.out or RESULTS / (f"load_{args.mode}_{args.users}u_{args.replicas or 1}r"
                                 f"{'_proxy' if args.via_proxy else ''}_{datetime.now().date().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ch, fp = result["change_s"]["overall"], result["first_page_s"]
    print(f"{args.users} users, {args.mode}, {args.replicas or 1} replica(s) at {args.url}: "
          f"change p50 {ch.get('p50')} s p95 {ch.get('p95')} s p99 {ch.get('p99')} s (n={ch['n']}); "
          f"first page p50 {fp.get('p50')} s p95 {fp.get('p95')} s; errors {result['errors']['count']}; "
          f"server RSS peak {measured and measured['rss_peak_mb']} MB; wrote {out}")
    return result


if __name__ == "__main__":
    main()
