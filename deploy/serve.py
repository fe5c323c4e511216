"""Serve a room: N replicas of the lab behind nginx with sticky sessions, in one command.

    python deploy/serve.py --replicas 3 --port 8501 [--room]

starts N `streamlit run app.py` processes on free ports of 127.0.0.1, warms each of them (one
session opens every lesson, so the first learners find the models loaded and the default views
cached), starts Debian's nginx with a config generated into a run folder, and prints the address
to give the participants. Ctrl-C or SIGTERM stops nginx, then the replicas, and removes the run
folder; if a replica or nginx dies, everything stops with exit status 1. Children also get
SIGTERM from the kernel if this process is killed outright, so nothing is left running.

Why several processes: one Streamlit process runs its sessions' scripts in threads of one Python
interpreter, so it uses about one core; a room needs one replica per core. Why sticky sessions:
a Streamlit session lives in one process, and besides its websocket it is reached over plain
HTTP (file uploads, media), which must land on the same replica or Streamlit answers "Invalid
session_id". See deploy/README.md for the affinity choice and for serving from several machines:

    python deploy/serve.py --replicas 2 --port 8601 --host 0.0.0.0 --backends-only --room  # each app machine
    python deploy/serve.py --print-nginx-site 10.0.0.11:8601 10.0.0.11:8602 --port 80     # the proxy's site
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AFFINITY_COOKIE = "quantlab_affinity"
# Streamlit's own cap (server.maxUploadSize, MB); nginx's default of 1 MB would refuse uploads first.
MAX_UPLOAD_MB = 200
WILDCARD = ("0.0.0.0", "")  # --host values meaning every (IPv4) interface


def replica_command(port: int, host: str) -> list[str]:
    # serverAddress is set even for a wildcard host: left unset, a headless Streamlit asks a web
    # service for the machine's external IP just to print it.
    shown = socket.gethostname() if host in WILDCARD else host
    return [sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.port", str(port), "--server.address", host, "--server.headless", "true",
            "--browser.serverAddress", shown,
            # No file watcher: a room does not edit the code, and N watchers would poll the tree.
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--browser.gatherUsageStats", "false"]


def replica_env(replicas: int, room: bool) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if room:  # lab_ui's room mode: no server paths, heavy runs rate-limited per session
        env["QUANTLAB_ROOM"] = "1"
    # Each replica's torch would start one thread per core; N replicas would then oversubscribe the
    # cores N times over. A user's own OMP_NUM_THREADS wins.
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // replicas)))
    return env


def site_config(upstreams: list[str], listen: str, access_log: str) -> str:
    """The http-level nginx config of a room: affinity, upstream, websocket upgrade, uploads."""
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=10s;" for u in upstreams)
    return f"""\
# Sticky sessions: a learner's first response sets a random cookie, and every later request
# (websocket, uploads, media) is hashed on it, so each browser stays on one replica while a room
# behind one NAT still spreads over all of them. Without the cookie (the first request, or a
# client that refuses cookies) the client's address is the key. `consistent` hashing moves only
# the sessions of a replica that is added or goes down.
map $cookie_{AFFINITY_COOKIE} $quantlab_affinity {{
    ""      $remote_addr;
    default $cookie_{AFFINITY_COOKIE};
}}
map $cookie_{AFFINITY_COOKIE} $quantlab_set_affinity {{
    ""      "{AFFINITY_COOKIE}=$request_id; Path=/; HttpOnly; SameSite=Lax";
    default "";
}}
map $http_upgrade $quantlab_connection {{
    default upgrade;
    ""      close;
}}
log_format quantlab '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                    'upstream=$upstream_addr affinity=$quantlab_affinity time=$request_time';

upstream quantlab {{
    hash $quantlab_affinity consistent;
{servers}
}}

server {{
    listen {listen};
    access_log {access_log} quantlab;
    client_max_body_size {MAX_UPLOAD_MB}m;

    location / {{
        proxy_pass http://quantlab;
        proxy_http_version 1.1;
        # Streamlit accepts a websocket only from its own origin: keep the Host the browser used.
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $quantlab_connection;
        # A learner reading a lesson keeps an idle websocket open.
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
        # Stream both ways: script output reaches the browser as it is drawn, uploads reach
        # Streamlit (which enforces its own size cap) without a temp file.
        proxy_buffering off;
        proxy_request_buffering off;
        add_header Set-Cookie $quantlab_set_affinity always;
    }}
}}
"""


def nginx_config(run_dir: Path, upstreams: list[str], listen: str) -> str:
    """A whole nginx.conf for a private nginx: every path inside the run folder."""
    site = site_config(upstreams, listen, str(run_dir / "access.log"))
    temp = "\n".join(f"    {kind}_temp_path {run_dir / 'tmp' / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
# Generated by deploy/serve.py for one run; removed when it stops.
# One worker is plenty for a room's connections; the cores belong to the replicas.
worker_processes 1;
worker_rlimit_nofile 8192;
pid {run_dir / 'nginx.pid'};
error_log {run_dir / 'error.log'} warn;
events {{
    worker_connections 4096;
}}
http {{
{temp}
{site}}}
"""


def _die_with_parent() -> None:
    """Runs in each child before exec: the kernel sends it SIGTERM if this process dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:  # held together, so the n ports differ
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.read() == b"ok"
    except OSError:
        return False


def participant_url(host: str, port: int) -> str:
    return f"http://{socket.gethostname() if host in WILDCARD else host}:{port}"


def local_url(host: str, port: int) -> str:
    """Where this machine itself reaches a listener (for health checks and warm-up)."""
    return f"http://{'127.0.0.1' if host in WILDCARD else host}:{port}"


class Stopped(Exception):
    """A stop (Ctrl-C, SIGTERM) asked for while the room was still starting."""


class Room:
    def __init__(self, args: argparse.Namespace, stop: threading.Event):
        self.args, self.stop_requested = args, stop
        self.own_dir = args.run_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="quantlab-room-")) if self.own_dir else args.run_dir.resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # nginx started by root runs its workers as `nobody`: they need the temp folders
            self.dir.chmod(0o755)
        self.replicas: list[tuple[subprocess.Popen, int, str]] = []  # (process, port, url)
        self.nginx: subprocess.Popen | None = None
        self.warm_up: list[dict] = []  # per replica: seconds taken, what went wrong

    def _spawn(self, cmd: list[str], log_name: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.dir / log_name, "wb") as log:
            # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the children
            # in order (nginx first, so no request meets a replica that is going away).
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.dir / name
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start_replicas(self) -> None:
        a = self.args
        if a.backends_only:
            host, ports = a.host, [a.port + i for i in range(a.replicas)]
        else:
            host, ports = "127.0.0.1", _free_ports(a.replicas)
        env = replica_env(a.replicas, a.room)
        for i, port in enumerate(ports, 1):
            proc = self._spawn(replica_command(port, host), f"replica-{i}.log", env)
            url = local_url(host, port)
            self.replicas.append((proc, port, url))
            print(f"replica {i}: pid {proc.pid}, {host}:{port}", flush=True)
        give_up = time.monotonic() + a.start_timeout
        waiting = list(enumerate(self.replicas, 1))
        while waiting:
            if self.stop_requested.is_set():
                raise Stopped
            for i, (proc, _, url) in list(waiting):
                if proc.poll() is not None:
                    raise RuntimeError(f"replica {i} exited with {proc.returncode}:\n"
                                       f"{self.log_tail(f'replica-{i}.log')}")
                if _healthy(url):
                    waiting.remove((i, (proc, _, url)))
            if waiting and time.monotonic() > give_up:
                raise RuntimeError(f"replicas {[i for i, _ in waiting]} not healthy after {a.start_timeout:.0f} s")
            time.sleep(0.25)

    def warm_replicas(self) -> None:
        """Every replica at once (each is its own process): one session opens every lesson."""
        # The load benchmark's protocol client opens the sessions. Imported here, not at the top, so
        # that the stop handlers are in place before the slow import of Streamlit's protobufs.
        sys.path.insert(0, str(ROOT))
        from bench.load import warm

        print(f"warming {len(self.replicas)} replica(s): one session opens every lesson…", flush=True)
        results: dict[int, tuple[float, list[str]]] = {}

        def one(i: int, url: str) -> None:
            start = time.perf_counter()
            try:
                problems = asyncio.run(warm(url, timeout=self.args.start_timeout))
            except Exception as err:  # a replica that cannot be warmed is reported, not fatal
                problems = [f"{type(err).__name__}: {err}"]
            results[i] = (time.perf_counter() - start, problems)

        threads = [threading.Thread(target=one, args=(i, url), daemon=True)
                   for i, (_, _, url) in enumerate(self.replicas, 1)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if self.stop_requested.wait(0.25):
                raise Stopped
        for i, (seconds, problems) in sorted(results.items()):
            print(f"replica {i} warm in {seconds:.1f} s" + "".join(f"\n  warning: {p}" for p in problems), flush=True)
            self.warm_up.append({"replica": i, "seconds": round(seconds, 1), "problems": problems})

    def start_nginx(self) -> None:
        a = self.args
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
        conf = self.dir / "nginx.conf"
        upstreams = [f"127.0.0.1:{port}" for _, port, _ in self.replicas]
        conf.write_text(nginx_config(self.dir, upstreams, f"{a.host}:{a.port}"))
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.nginx = self._spawn([binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log"),
                                  "-g", "daemon off;"], "nginx.log")
        url = local_url(a.host, a.port)
        give_up = time.monotonic() + 30
        while not _healthy(url):
            if self.nginx.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"nginx did not start:\n{self.log_tail('nginx.log')}{self.log_tail('error.log')}")
            time.sleep(0.1)
        print(f"nginx: pid {self.nginx.pid}, config {conf}", flush=True)

    def state(self) -> dict:
        a = self.args
        if self.nginx is not None:
            url = participant_url(a.host, a.port)
        else:
            url = self.replicas[0][2] if len(self.replicas) == 1 else None
        return {
            "url": url,
            "run_dir": str(self.dir),
            "replicas": [{"pid": p.pid, "port": port, "url": u} for p, port, u in self.replicas],
            "warm_up": self.warm_up,
            "nginx": None if self.nginx is None else {"pid": self.nginx.pid, "config": str(self.dir / "nginx.conf"),
                                                      "access_log": str(self.dir / "access.log")},
        }

    def dead(self) -> str | None:
        for i, (proc, _, _) in enumerate(self.replicas, 1):
            if proc.poll() is not None:
                return f"replica {i} exited with {proc.returncode}:\n{self.log_tail(f'replica-{i}.log')}"
        if self.nginx is not None and self.nginx.poll() is not None:
            return f"nginx exited with {self.nginx.returncode}:\n{self.log_tail('error.log')}"
        return None

    def stop(self) -> None:
        procs = ([self.nginx] if self.nginx else []) + [p for p, _, _ in self.replicas]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        give_up = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(max(0.1, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.args.state:  # it describes a running room
            self.args.state.unlink(missing_ok=True)
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See deploy/README.md.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=max(1, len(os.sched_getaffinity(0))),
                    help="Streamlit processes (default: one per core)")
    ap.add_argument("--port", type=int, default=8501, help="where participants connect (nginx); with "
                                                           "--backends-only, the first replica's port")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on (default: every interface)")
    ap.add_argument("--backends-only", action="store_true",
                    help="start the replicas on --host, ports --port, --port+1, ..., and no nginx: an app "
                         "machine behind a shared proxy")
    ap.add_argument("--room", action="store_true",
                    help="room mode for strangers (QUANTLAB_ROOM=1): no server paths in the sidebar, heavy "
                         "runs rate-limited per learner")
    ap.add_argument("--no-warm", dest="warm", action="store_false", help="skip warming the replicas")
    ap.add_argument("--run-dir", type=Path,
                    help="keep config and logs here (default: a temporary folder, removed at exit)")
    ap.add_argument("--state", type=Path, help="write pids, ports and the URL here as JSON once ready")
    ap.add_argument("--start-timeout", type=float, default=600.0, help="seconds a replica may take to start and warm")
    ap.add_argument("--print-nginx-site", nargs="+", metavar="HOST:PORT",
                    help="print the nginx site config for these replicas (listening on --port) and exit")
    args = ap.parse_args(argv)
    if args.replicas < 1:
        ap.error("--replicas must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_nginx_site:
        print(site_config(args.print_nginx_site, str(args.port), "/var/log/nginx/quantlab.access.log"), end="")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    room = Room(args, stop)
    try:
        room.start_replicas()
        if args.warm:
            room.warm_replicas()
        if not args.backends_only:
            room.start_nginx()
        state = room.state()
        if args.state:  # whole or not at all: readers poll for it
            partial = args.state.with_name(args.state.name + ".partial")
            partial.write_text(json.dumps(state, indent=2) + "\n")
            partial.replace(args.state)
        if args.backends_only:
            name = socket.gethostname() if args.host in WILDCARD else args.host
            print("replicas ready; in the proxy's upstream block:\n" +
                  "\n".join(f"    server {name}:{r['port']};" for r in state["replicas"]), flush=True)
        else:
            print(f"Room ready. Participants open: {state['url']}"
                  + (" (or this machine's IP address)" if args.host in WILDCARD else "")
                  + "\nStop with Ctrl-C.", flush=True)
        while not stop.wait(0.5):
            problem = room.dead()
            if problem:
                print(problem, file=sys.stderr, flush=True)
                return 1
        return 0
    except Stopped:
        return 0
    except RuntimeError as err:
        print(err, file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping…", flush=True)
        room.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
