#!/usr/bin/env python3
"""Overhead of tracing on item creates: the same Atlas binary measured with
telemetry off, with OTLP export at sampling ratio 0.0, and at 1.0, in one run.

A local OTLP/HTTP sink (this script) accepts the exported spans and counts
them. Each mode gets a fresh data dir (embedded SQLite); wrk runs
lua/create.lua against it. Modes are measured in rotating order over several
rounds so that drift on the machine hits them alike.

    python3 bench/tracing.py --atlas /var/tmp/atlas-target/release/atlas

Standard library only, plus wrk (installed with apt-get when missing).
"""

import argparse
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


class Sink(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests = 0
    bytes = 0


class SinkHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        self.server.requests += 1
        self.server.bytes += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method: str, url: str, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def wait_ready(base: str):
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("atlas did not become ready")


def measure(args, mode: str, sink_url: str) -> float:
    data = tempfile.mkdtemp(prefix="atlas-trace-bench-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    env.update({
        "ATLAS_DATA_DIR": data,
        "ATLAS_SERVER__BIND": f"127.0.0.1:{port}",
        "ATLAS_SERVER__RATE_LIMIT_PER_SECOND": "0",
        "ATLAS_AUTH__ACCESS_TOKEN_TTL_SECS": "3600",
        "ATLAS_TELEMETRY__LOG_LEVEL": "warn",
    })
    if mode != "off":
        env["ATLAS_TELEMETRY__OTLP_ENDPOINT"] = sink_url
        env["ATLAS_TELEMETRY__TRACE_SAMPLE_RATIO"] = mode
    server = subprocess.Popen([args.atlas, "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        token = call("POST", f"{base}/api/v1/auth/register",
                     {"email": "trace@bench.org", "password": "password-123"})["access_token"]
        collection = call("POST", f"{base}/api/v1/collections", {"name": "Trace"}, token)["id"]
        wrk_env = dict(os.environ,
                       BENCH_LUA_DIR=os.path.join(HERE, "lua"),
                       BENCH_PATH=f"/api/v1/collections/{collection}/items",
                       BENCH_AUTH=f"Bearer {token}")
        out = subprocess.run(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "10s",
             "-s", os.path.join(HERE, "lua", "create.lua"), base],
            env=wrk_env, capture_output=True, text=True, timeout=args.duration + 60, check=True)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
        if not m:
            raise SystemExit(f"no Requests/sec in wrk's output:\n{out.stdout}")
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
        if non2xx:
            raise SystemExit(f"{mode}: {non2xx.group(1)} failed requests")
        return float(m.group(1))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atlas", default="/var/tmp/atlas-target/release/atlas")
    ap.add_argument("--duration", type=int, default=20, help="seconds of load per measurement")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    sink = Sink(("127.0.0.1", 0), SinkHandler)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    modes = ["off", "0.0", "1.0"]
    results = {m: [] for m in modes}
    otlp_bytes = {}
    for r in range(args.rounds):
        order = modes[r % 3:] + modes[:r % 3]
        for mode in order:
            before = (sink.requests, sink.bytes)
            rps = measure(args, mode, sink_url)
            otlp_bytes[mode] = otlp_bytes.get(mode, 0) + (sink.bytes - before[1])
            results[mode].append(rps)
            print(f"round {r + 1}: {mode:>4}: {rps:8.0f} creates/s", flush=True)
    off = sum(results["off"]) / len(results["off"])
    print()
    print("| telemetry | creates/s (mean of rounds) | rounds | vs off | OTLP bytes received |")
    print("|---|---:|---|---:|---:|")
    for mode in modes:
        mean = sum(results[mode]) / len(results[mode])
        label = {"off": "off (no endpoint)", "0.0": "OTLP, sample ratio 0.0", "1.0": "OTLP, sample ratio 1.0"}[mode]
        rounds = ", ".join(f"{v:.0f}" for v in results[mode])
        print(f"| {label} | {mean:.0f} | {rounds} | {100 * (mean - off) / off:+.1f} % | {otlp_bytes[mode]} |")


if __name__ == "__main__":
    main()
