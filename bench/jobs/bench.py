#!/usr/bin/env python3
"""Job queue benchmark: no-op job throughput with 1 and 2 `atlas serve --role
worker` processes on PostgreSQL and SQLite, enqueue-to-start latency at a
steady 100 jobs/s on PostgreSQL, and a Python queue (procrastinate) on the
same PostgreSQL as a reference. Everything runs on 127.0.0.1.

Usage: bench/jobs/bench.py --atlas PATH/TO/atlas [--jobs 20000] [--rate-seconds 10]
Needs: psycopg and procrastinate (pip install procrastinate "psycopg[binary]").
"""

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg

ADMIN = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres")
TS = "to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_pg_db(name):
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg_db(name):
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def atlas_env(url, data_dir):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ATLAS_DATABASE__URL": url,
        "ATLAS_DATA_DIR": data_dir,
        "ATLAS_JOBS__CONCURRENCY": "64",
        "ATLAS_JOBS__POLL_INTERVAL_MS": "200",
        "ATLAS_TELEMETRY__LOG_LEVEL": "warn",
    }
    return env


def migrate(atlas, url, data_dir):
    subprocess.run([atlas, "migrate", "up"], env=atlas_env(url, data_dir), check=True, stdout=subprocess.DEVNULL)


def start_workers(atlas, url, data_dir, n):
    procs = []
    for _ in range(n):
        port = free_port()
        p = subprocess.Popen(
            [atlas, "serve", "--role", "worker", "--bind", f"127.0.0.1:{port}"],
            env=atlas_env(url, data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append((p, port))
    for p, port in procs:
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("worker did not start")
                time.sleep(0.05)
    time.sleep(0.5)
    return [p for p, _ in procs]


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


def pg_throughput(atlas, n_jobs, workers):
    name = f"atlas_bench_jobs_{uuid.uuid4().hex[:8]}"
    url = create_pg_db(name)
    data_dir = tempfile.mkdtemp()
    try:
        migrate(atlas, url, data_dir)
        procs = start_workers(atlas, url, data_dir, workers)
        with psycopg.connect(url, autocommit=True) as c:
            t0 = time.perf_counter()
            c.execute(
                f"""INSERT INTO jobs (id, type, status, payload, attempts, max_attempts, priority, run_at, created_at, updated_at)
                    SELECT 'b' || lpad(i::text, 9, '0'), 'NOOP', 'queued', '{{}}', 0, 5, 0, {TS}, {TS}, {TS}
                    FROM generate_series(1, %s) AS i""",
                (n_jobs,),
            )
            c.execute("SELECT pg_notify('atlas_jobs', '')")
            while True:
                done = c.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
                if done >= n_jobs:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
        stop(procs)
        return n_jobs / elapsed
    finally:
        drop_pg_db(name)
        shutil.rmtree(data_dir, ignore_errors=True)


def pg_latency(atlas, seconds, rate=100):
    name = f"atlas_bench_jobs_{uuid.uuid4().hex[:8]}"
    url = create_pg_db(name)
    data_dir = tempfile.mkdtemp()
    try:
        migrate(atlas, url, data_dir)
        procs = start_workers(atlas, url, data_dir, 1)
        total = int(seconds * rate)
        with psycopg.connect(url, autocommit=True) as c:
            start = time.perf_counter()
            for i in range(total):
                # What JobQueue::enqueue does: the insert and its NOTIFY in one transaction.
                with c.transaction():
                    c.execute(
                        f"""INSERT INTO jobs (id, type, status, payload, attempts, max_attempts, priority, run_at, created_at, updated_at)
                            VALUES (%s, 'NOOP', 'queued', '{{}}', 0, 5, 0, {TS}, {TS}, {TS})""",
                        (f"l{i:09d}",),
                    )
                    c.execute("SELECT pg_notify('atlas_jobs', '')")
                next_at = start + (i + 1) / rate
                time.sleep(max(0.0, next_at - time.perf_counter()))
            while c.execute("SELECT COUNT(*) FROM jobs WHERE status <> 'succeeded'").fetchone()[0]:
                time.sleep(0.05)
            rows = c.execute(
                "SELECT EXTRACT(EPOCH FROM (started_at::timestamptz - run_at::timestamptz)) * 1000 FROM jobs"
            ).fetchall()
        stop(procs)
        lat = sorted(float(r[0]) for r in rows)
        return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], len(lat)
    finally:
        drop_pg_db(name)
        shutil.rmtree(data_dir, ignore_errors=True)


def sqlite_throughput(atlas, n_jobs, workers):
    data_dir = tempfile.mkdtemp()
    path = os.path.join(data_dir, "atlas.db")
    url = f"sqlite://{path}"
    try:
        migrate(atlas, url, data_dir)
        procs = start_workers(atlas, url, data_dir, workers)
        db = sqlite3.connect(path, timeout=30)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 1))
        t0 = time.perf_counter()
        db.executemany(
            "INSERT INTO jobs (id, type, status, payload, attempts, max_attempts, priority, run_at, created_at, updated_at)"
            " VALUES (?, 'NOOP', 'queued', '{}', 0, 5, 0, ?, ?, ?)",
            ((f"b{i:09d}", now, now, now) for i in range(n_jobs)),
        )
        db.commit()
        while db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0] < n_jobs:
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        db.close()
        stop(procs)
        return n_jobs / elapsed
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


PROCRASTINATE_APP = '''
import procrastinate, os
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_URL"]))

@app.task(name="noop")
def noop():
    return None
'''


def procrastinate_throughput(n_jobs, concurrency=64):
    name = f"atlas_bench_proc_{uuid.uuid4().hex[:8]}"
    url = create_pg_db(name)
    tmp = tempfile.mkdtemp()
    try:
        with open(os.path.join(tmp, "bench_app.py"), "w") as f:
            f.write(PROCRASTINATE_APP)
        env = dict(os.environ, BENCH_URL=url, PYTHONPATH=tmp)
        subprocess.run(["procrastinate", "--app=bench_app.app", "schema", "--apply"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        worker = subprocess.Popen(
            ["procrastinate", "--app=bench_app.app", "worker", f"--concurrency={concurrency}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
        with psycopg.connect(url, autocommit=True) as c:
            t0 = time.perf_counter()
            # Bulk-insert as procrastinate's own defer does, row for row in one statement.
            c.execute(
                """INSERT INTO procrastinate_jobs (queue_name, task_name, args)
                   SELECT 'default', 'noop', '{}'::jsonb FROM generate_series(1, %s)""",
                (n_jobs,),
            )
            while c.execute("SELECT COUNT(*) FROM procrastinate_jobs WHERE status = 'succeeded'").fetchone()[0] < n_jobs:
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
        worker.terminate()
        worker.wait(timeout=30)
        return n_jobs / elapsed
    finally:
        drop_pg_db(name)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atlas", required=True)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--rate-seconds", type=float, default=10)
    ap.add_argument("--skip-procrastinate", action="store_true")
    a = ap.parse_args()
    rows = []
    for w in (1, 2):
        rows.append((f"Atlas, PostgreSQL, {w} worker process(es)", f"{pg_throughput(a.atlas, a.jobs, w):,.0f} jobs/s"))
        print(rows[-1], flush=True)
    for w in (1, 2):
        rows.append((f"Atlas, SQLite, {w} worker process(es)", f"{sqlite_throughput(a.atlas, a.jobs, w):,.0f} jobs/s"))
        print(rows[-1], flush=True)
    p50, p99, n = pg_latency(a.atlas, a.rate_seconds)
    rows.append(("Atlas, PostgreSQL, enqueue-to-start at 100 jobs/s", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({n} jobs)"))
    print(rows[-1], flush=True)
    if not a.skip_procrastinate:
        rows.append(("procrastinate, PostgreSQL, 1 worker (concurrency 64)", f"{procrastinate_throughput(a.jobs):,.0f} jobs/s"))
        print(rows[-1], flush=True)
    print("\n| measurement | result |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    sys.exit(main())
