#!/usr/bin/env python3
"""Audit trail benchmark: event-to-audit lag at a fixed write rate, and
audit sink throughput while it drains a backlog.

    cargo build --release
    bench/audit_lag.py                                  # embedded (SQLite)
    bench/audit_lag.py --database-url postgres://postgres@127.0.0.1:5432/atlas_bench
    bench/audit_lag.py --rate 1000 --seconds 30 --burst 20000

Phase 1 (lag): items are created at `--rate` writes/s for `--seconds`; each
write's event reaches the audit trail some time after it occurred. Lag is
`recorded_at - occurred_at` of every audit row of the run, read back through
`GET /api/v1/audit?actor_user_id=<the bench user>` (the user sees their own
actions). Reported: p50, p99, max. Target: p99 < 500 ms at 1,000 writes/s.

Phase 2 (throughput): the server is restarted with `--role api` (no
consumers), `--burst` items are written, then it is restarted with its
workers; once /metrics shows the sink appended them all, the sink's
throughput is the number of rows divided by the time between the first and
the last row's `recorded_at`. Target: >= 10,000
rows/s on PostgreSQL.

Standard library only. Starts and stops its own `atlas` (target/release/atlas,
or --atlas) on 127.0.0.1 with a fresh data directory; prints one JSON object
and a markdown line for bench/RESULTS.md. For NATS JetStream mode, pass its
settings through --env (see bench/RESULTS.md for the exact command).
"""

import argparse
import http.client
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
from datetime import datetime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, atlas, data_dir, database_url, extra_env, role):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
        env.update({
            "ATLAS_DATA_DIR": data_dir,
            "ATLAS_SERVER__RATE_LIMIT_PER_SECOND": "0",
            "ATLAS_TELEMETRY__LOG_LEVEL": "warn",
            "ATLAS_AUDIT__CHECKPOINT_INTERVAL_SECS": "5",
        })
        if database_url:
            env["ATLAS_DATABASE__URL"] = database_url
        env.update(extra_env)
        self.proc = subprocess.Popen(
            [atlas, "serve", "--bind", f"127.0.0.1:{self.port}", "--role", role],
            env=env, cwd=data_dir, stdout=subprocess.DEVNULL, stderr=sys.stderr)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                status, _ = self.request("GET", "/ready")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("atlas did not become ready")

    def request(self, method, path, body=None, token=None, conn=None):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if own:
            conn.close()
        return r.status, (json.loads(data) if data else None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def parse(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def write_items(server, token, collection, count, rate, threads=8):
    """Create `count` items, at `rate` per second (0: as fast as possible)."""
    per_thread = count // threads
    errors = []
    start = time.time() + 0.2

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for i in range(per_thread):
            if rate:
                due = start + (i * threads + t) / rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            status, _ = server.request("POST", f"/api/v1/collections/{collection}/items",
                                       {"title": f"bench {t}/{i}"}, token, conn)
            if status != 201:
                errors.append(status)
        conn.close()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per_thread * threads, errors


def audit_rows(server, token, user_id, expect, timeout=120):
    """Every audit row of the bench user's actions, once `expect` exist."""
    deadline = time.time() + timeout
    while True:
        rows, cursor = [], None
        while True:
            q = f"/api/v1/audit?actor_user_id={user_id}&limit=200" + (f"&cursor={cursor}" if cursor else "")
            status, page = server.request("GET", q, token=token)
            assert status == 200, page
            rows.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        if len(rows) >= expect or time.time() > deadline:
            return rows
        time.sleep(0.5)


def appended_rows(server):
    """The sink's rows appended since this process started, from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith("atlas_audit_rows_appended_total"):
            return int(float(line.split()[-1]))
    return 0


def wait_for_sink(server, expect, timeout=600):
    """Wait until the sink appended `expect` rows, polling the cheap metrics
    endpoint rather than paging through the audit API while it drains."""
    deadline = time.time() + timeout
    while appended_rows(server) < expect and time.time() < deadline:
        time.sleep(0.2)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atlas", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "atlas"))
    ap.add_argument("--database-url", default="")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--burst", type=int, default=20000)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE passed to atlas")
    args = ap.parse_args()
    extra = dict(e.split("=", 1) for e in args.env)
    data_dir = tempfile.mkdtemp(prefix="atlas-bench-audit-")
    mode = "postgres" if args.database_url else "embedded"
    result = {"mode": mode, "rate": args.rate, "seconds": args.seconds}
    try:
        server = Server(args.atlas, data_dir, args.database_url, extra, "all")
        status, reg = server.request("POST", "/api/v1/auth/register",
                                     {"email": f"bench-{int(time.time())}@example.org", "password": "bench-password"})
        assert status == 201, reg
        token, user_id = reg["access_token"], reg["user"]["id"]
        status, col = server.request("POST", "/api/v1/collections", {"name": "audit bench"}, token)
        assert status == 201, col

        written, errors = write_items(server, token, col["id"], args.rate * args.seconds, args.rate)
        rows = audit_rows(server, token, user_id, written + 2)
        lags = [parse(r["recorded_at"]) - parse(r["occurred_at"]) for r in rows if r["type"] == "ItemCreated"]
        result.update({
            "writes": written, "write_errors": len(errors), "audited": len(lags),
            "lag_p50_ms": round(percentile(lags, 50) * 1000, 1),
            "lag_p99_ms": round(percentile(lags, 99) * 1000, 1),
            "lag_max_ms": round(max(lags) * 1000, 1),
        })
        server.stop()

        # Throughput: build a backlog with no consumers running, then drain it.
        api = Server(args.atlas, data_dir, args.database_url, extra, "api")
        before = len(rows)
        written, errors = write_items(api, token, col["id"], args.burst, 0)
        api.stop()
        server = Server(args.atlas, data_dir, args.database_url, extra, "all")
        wait_for_sink(server, written)
        rows = audit_rows(server, token, user_id, before + written, timeout=600)
        drained = sorted(parse(r["recorded_at"]) for r in rows)[before:]
        span = drained[-1] - drained[0] if len(drained) > 1 else float("nan")
        result.update({"burst": written, "sink_rows_per_s": round((len(drained) - 1) / span) if span else None})
        server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print(f"| audit {mode} | {result['rate']} writes/s | lag p50 {result['lag_p50_ms']} ms, "
          f"p99 {result['lag_p99_ms']} ms | sink {result.get('sink_rows_per_s')} rows/s |")


if __name__ == "__main__":
    main()
