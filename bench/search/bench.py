#!/usr/bin/env python3
"""Search benchmark (issue 6): corpus generator, loader, reindex, query
latency over HTTP, index lag under writes, and PostgreSQL full-text search on
the same data. Standard library only; PostgreSQL is reached through `psql`.

Steps (each a subcommand, sharing one work directory):

  generate  seeded corpus -> WORK/corpus/*.tsv and WORK/queries.json
  setup     fresh Atlas data dir: migrate, register users (atlas serve, then stopped)
  load      bulk-insert the corpus into Atlas's SQLite database
  reindex   `atlas search reindex`: docs/s and index size
  query     start `atlas serve`, run the query set over HTTP
  lag       start `atlas serve`, create items over HTTP at a fixed rate, measure index lag
  pg        load the corpus into a fresh PostgreSQL database, run the same queries
  clean     drop the PostgreSQL database and delete WORK

See bench/README.md ("Search") for what each figure means.
"""

import argparse
import asyncio
import bisect
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone

COLLECTIONS = 100
USER_COLLECTIONS = 10
VOCAB = 50_000
ZIPF_S = 1.0
TAGS = 500
TAGS_PER_COLLECTION = 40
PASSWORD = "bench-search-password"
BENCH_EMAIL = "reader@bench.example"
OWNER_EMAIL = "owner@bench.example"
KINDS = ["one_word", "two_words", "phrase", "prefix", "typo", "tag_filtered"]

# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "br", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "sl", "st", "th", "tr", "ch", "qu", "sp", "cl"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "ee", "oo", "ie", "y"]
CODAS = ["", "", "", "", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "rt", "ng", "x"]
SUFFIXES = [("", 50), ("s", 14), ("ing", 8), ("ed", 8), ("er", 6), ("ation", 4), ("ly", 4),
            ("ness", 2), ("ment", 2), ("able", 2)]
STOP = set("a an and are as at be but by for if in into is it no not of on or such that the their then "
           "there these they this to was will with".split())


def make_vocabulary(rng):
    """VOCAB distinct pseudo-English words, most frequent first: shorter
    words tend to be more frequent, as in natural text. Words are stems
    plus common English suffixes, so stemming has work to do."""
    suffixes, weights = zip(*SUFFIXES)
    words, seen = [], set()
    while len(words) < VOCAB:
        syllables = rng.choices([1, 2, 3, 4], weights=[25, 50, 22, 3])[0]
        stem = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))
        word = stem + rng.choices(suffixes, weights=weights)[0]
        if word in seen or word in STOP or len(word) < 2:
            continue
        seen.add(word)
        words.append(word)
    # Sort by length with noise: rank 1 is short, the long tail is long.
    keyed = sorted(words, key=lambda w: len(w) + rng.random() * 6)
    return keyed


def zipf_cum_weights(n, s=ZIPF_S):
    acc, out = 0.0, []
    for r in range(1, n + 1):
        acc += 1.0 / (r ** s)
        out.append(acc)
    return out


def body_length(rng):
    """Log-normal (median 180 words), clipped to 50..2,000: mean about 235."""
    return max(50, min(2000, int(round(rng.lognormvariate(math.log(180), 0.75)))))


def sentences(rng, words):
    out, i = [], 0
    while i < len(words):
        n = rng.randint(6, 18)
        chunk = words[i:i + n]
        chunk[0] = chunk[0].capitalize()
        out.append(" ".join(chunk) + ".")
        i += n
    return " ".join(out)


def uuid_like(rng, ms):
    """A UUID v7-shaped id (time-ordered), deterministic for a seed."""
    rand = rng.getrandbits(74)
    h = f"{ms:012x}" + "7" + f"{(rand >> 62) & 0xfff:03x}" + f"{0x8 | ((rand >> 60) & 0x3):x}" + f"{rand & ((1 << 60) - 1):015x}"
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tsv_escape(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def cmd_generate(a):
    rng = random.Random(a.seed)
    vocab = make_vocabulary(rng)
    cw = zipf_cum_weights(len(vocab))
    tag_names = sorted({"-".join(rng.sample(vocab[200:5000], rng.choice([1, 1, 2]))) for _ in range(TAGS * 2)})[:TAGS]
    rng.shuffle(tag_names)
    tag_cw = zipf_cum_weights(TAGS_PER_COLLECTION, 1.1)
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    ms0 = int(base.timestamp() * 1000)
    collections = [dict(id=uuid_like(rng, ms0 - 100 + i), slug=f"bench-{i:03d}",
                        tags=rng.sample(tag_names, TAGS_PER_COLLECTION)) for i in range(COLLECTIONS)]
    tag_ids = {}
    for c in collections:
        for t in c["tags"]:
            tag_ids[(c["id"], t)] = uuid_like(rng, ms0 - 50)
    user_colls = [c["id"] for c in collections[:USER_COLLECTIONS]]
    out = os.path.join(a.work, "corpus")
    os.makedirs(out, exist_ok=True)
    lengths, titles_len = [], []
    phrases, user_tags = [], {}
    rank = {w: r for r, w in enumerate(vocab, 1)}
    step = max(1, a.items // 4000)
    t0 = time.time()
    with open(os.path.join(out, "items.tsv"), "w") as fi, open(os.path.join(out, "item_tags.tsv"), "w") as ft:
        for i in range(a.items):
            created = base + timedelta(seconds=i * 20)
            c = collections[rng.randrange(COLLECTIONS)]
            item_id = uuid_like(rng, int(created.timestamp() * 1000))
            tl = rng.randint(3, 10)
            title = " ".join(rng.choices(vocab, cum_weights=cw, k=tl)).capitalize()
            n = body_length(rng)
            words = rng.choices(vocab, cum_weights=cw, k=n)
            body = sentences(rng, list(words))
            k = rng.choices([0, 1, 2, 3, 4, 5], weights=[15, 30, 25, 15, 10, 5])[0]
            tags = sorted(set(rng.choices(c["tags"], cum_weights=tag_cw, k=k)))
            lengths.append(n)
            titles_len.append(tl)
            url = f"https://site{rng.randrange(500)}.example/{item_id[:8]}"
            fi.write("\t".join([item_id, c["id"], tsv_escape(title), tsv_escape(body), url,
                                json.dumps(tags), "{}", "1", ts(created), ts(created)]) + "\n")
            for t in tags:
                ft.write(f"{item_id}\t{tag_ids[(c['id'], t)]}\n")
            if c["id"] in user_colls:
                for t in tags:
                    user_tags[t] = user_tags.get(t, 0) + 1
                if i % step == 0:
                    # A phrase of two neighbouring words, neither among the 50 most frequent.
                    for _ in range(20):
                        j = rng.randrange(n - 1)
                        if rank[words[j]] > 50 and rank[words[j + 1]] > 50:
                            phrases.append(f"{words[j]} {words[j + 1]}")
                            break
            if a.items >= 100_000 and i % 100_000 == 0 and i:
                print(f"  {i:,} items, {time.time() - t0:.0f} s", file=sys.stderr)
    with open(os.path.join(out, "tags.tsv"), "w") as f:
        for (cid, name), tid in tag_ids.items():
            f.write(f"{tid}\t{cid}\t{name}\n")
    with open(os.path.join(out, "collections.json"), "w") as f:
        json.dump([dict(id=c["id"], slug=c["slug"]) for c in collections], f)

    # The query set: words drawn log-uniformly over frequency ranks 10..VOCAB
    # (as many queries per decade of rank: common and rare words alike).
    qrng = random.Random(a.seed + 1)
    vset = set(vocab)

    def word(min_len=1, max_len=99):
        while True:
            r = int(10 ** qrng.uniform(1, math.log10(len(vocab))))
            w = vocab[r - 1]
            if min_len <= len(w) <= max_len:
                return w

    def typo(w):
        while True:
            p = qrng.randrange(len(w))
            op = qrng.choice(["sub", "del", "ins", "swap"])
            letters = "abcdefghijklmnopqrstuvwxyz"
            if op == "sub":
                t = w[:p] + qrng.choice(letters) + w[p + 1:]
            elif op == "del":
                t = w[:p] + w[p + 1:]
            elif op == "ins":
                t = w[:p] + qrng.choice(letters) + w[p:]
            else:
                if p == len(w) - 1:
                    continue
                t = w[:p] + w[p + 1] + w[p] + w[p + 2:]
            if t != w and t not in vset:
                return t

    n = a.queries
    tag_list = sorted(user_tags, key=lambda t: -user_tags[t])
    tag_w = [user_tags[t] for t in tag_list]
    qs = {
        "one_word": [dict(q=word()) for _ in range(n)],
        "two_words": [dict(q=f"{word()} {word()}") for _ in range(n)],
        "phrase": [dict(q=f'"{p}"') for p in qrng.sample(phrases, min(n, len(phrases)))],
        "prefix": [dict(q=word(6)[:qrng.randint(3, 5)]) for _ in range(n)],
        "typo": [dict(q=typo(word(5, 8))) for _ in range(n)],
        "tag_filtered": [dict(q=word(), tags=qrng.choices(tag_list, weights=tag_w)[0]) for _ in range(n)],
    }
    meta = dict(seed=a.seed, items=a.items, collections=COLLECTIONS, vocabulary=len(vocab), zipf_s=ZIPF_S,
                body_words_mean=round(statistics.mean(lengths), 1), body_words_median=statistics.median(lengths),
                body_words_min=min(lengths), body_words_max=max(lengths), title_words_mean=round(statistics.mean(titles_len), 2),
                user_collections=user_colls, seconds=round(time.time() - t0, 1),
                corpus_bytes=os.path.getsize(os.path.join(out, "items.tsv")))
    with open(os.path.join(a.work, "queries.json"), "w") as f:
        json.dump(dict(meta=meta, queries=qs), f, indent=1)
    print(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------
# Atlas process
# --------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def atlas_env(a, port=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    env.update(ATLAS_DATA_DIR=os.path.join(a.work, "atlas"), ATLAS_SERVER__RATE_LIMIT_PER_SECOND="0",
               ATLAS_AUTH__ACCESS_TOKEN_TTL_SECS="7200", ATLAS_TELEMETRY__LOG_LEVEL="warn")
    if port:
        env["ATLAS_SERVER__BIND"] = f"127.0.0.1:{port}"
    return env


class Server:
    def __init__(self, a):
        self.a = a
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        log = open(os.path.join(a.work, "atlas-serve.log"), "a")
        self.proc = subprocess.Popen([a.atlas, "serve"], env=atlas_env(a, self.port), stdout=log, stderr=log,
                                     cwd=a.work)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"atlas serve exited with {self.proc.returncode}; see {a.work}/atlas-serve.log")
            try:
                with urllib.request.urlopen(self.base + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit("atlas serve not ready after 600 s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024


def http_json(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def login(base, email):
    return http_json("POST", base + "/api/v1/auth/login", dict(email=email, password=PASSWORD))["access_token"]


def db_path(a):
    return os.path.join(a.work, "atlas", "atlas.db")


def cmd_setup(a):
    shutil.rmtree(os.path.join(a.work, "atlas"), ignore_errors=True)
    s = Server(a)
    try:
        for email in (OWNER_EMAIL, BENCH_EMAIL):
            http_json("POST", s.base + "/api/v1/auth/register", dict(email=email, password=PASSWORD))
    finally:
        s.stop()
    print("data dir:", os.path.join(a.work, "atlas"), "database:", db_path(a), os.path.exists(db_path(a)))


def read_tsv(path):
    with open(path) as f:
        for line in f:
            yield [x.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r").replace("\\\\", "\\")
                   for x in line.rstrip("\n").split("\t")]


def cmd_load(a):
    meta = json.load(open(os.path.join(a.work, "queries.json")))["meta"]
    colls = json.load(open(os.path.join(a.work, "corpus", "collections.json")))
    db = sqlite3.connect(db_path(a))
    db.execute("PRAGMA synchronous=OFF")
    users = dict(db.execute("SELECT email, id FROM users").fetchall())
    owner, reader = users[OWNER_EMAIL], users[BENCH_EMAIL]
    now = ts(datetime.now(timezone.utc))
    t0 = time.time()
    rng = random.Random(a.seed + 2)
    with db:
        for c in colls:
            db.execute("INSERT INTO collections (id, name, slug, description, created_by, created_at, updated_at) "
                       "VALUES (?, ?, ?, NULL, ?, ?, ?)", (c["id"], c["slug"], c["slug"], owner, now, now))
            db.execute("INSERT INTO memberships (id, collection_id, user_id, role, created_at, updated_at) "
                       "VALUES (?, ?, ?, 'owner', ?, ?)", (uuid_like(rng, 1), c["id"], owner, now, now))
        for cid in meta["user_collections"]:
            db.execute("INSERT INTO memberships (id, collection_id, user_id, role, created_at, updated_at) "
                       "VALUES (?, ?, ?, 'editor', ?, ?)", (uuid_like(rng, 2), cid, reader, now, now))
        db.executemany("INSERT INTO tags (id, collection_id, name) VALUES (?, ?, ?)",
                       read_tsv(os.path.join(a.work, "corpus", "tags.tsv")))

    def rows():
        for r in read_tsv(os.path.join(a.work, "corpus", "items.tsv")):
            r.insert(8, owner)  # created_by
            yield r

    with db:
        db.executemany("INSERT INTO items (id, collection_id, title, body, source_url, tags, metadata, version, "
                       "created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
        db.executemany("INSERT INTO item_tags (item_id, tag_id) VALUES (?, ?)",
                       read_tsv(os.path.join(a.work, "corpus", "item_tags.tsv")))
    # Statistics for the loaded tables only: stats of the (then nearly empty)
    # outbox would make SQLite plan Atlas's outbox reads as full scans later.
    for table in ("collections", "memberships", "tags", "items", "item_tags"):
        db.execute(f"ANALYZE {table}")
    n = db.execute("SELECT count(*) FROM items").fetchone()[0]
    db.close()
    print(json.dumps(dict(items=n, seconds=round(time.time() - t0, 1), db_bytes=os.path.getsize(db_path(a)))))


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def busy_seconds():
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def cmd_reindex(a):
    import resource
    t0 = time.time()
    b0, r0 = busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([a.atlas, "search", "reindex"], env=atlas_env(a), cwd=a.work, capture_output=True, text=True)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall
    other = (busy_seconds() - b0) / wall - mine
    print(p.stdout, p.stderr, file=sys.stderr)
    if p.returncode != 0:
        raise SystemExit(p.returncode)
    meta = json.load(open(os.path.join(a.work, "queries.json")))["meta"]
    size = dir_bytes(os.path.join(a.work, "atlas", "search"))
    m = re.search(r"indexed (\d+) items in ([\d.]+) s", p.stdout)
    docs = int(m.group(1)) if m else meta["items"]
    res = dict(items=docs, wall_seconds=round(wall, 2), docs_per_s=round(docs / wall),
               atlas_seconds=float(m.group(2)) if m else None,
               index_bytes=size, index_mb=round(size / 2**20, 1), corpus_mb=round(meta["corpus_bytes"] / 2**20, 1),
               reindex_cpu_cores=round(mine, 2), other_cpu_cores=round(other, 2),
               peak_rss_mb=round(r1.ru_maxrss / 1024, 1), output=p.stdout.strip()[-500:])
    save(a, "reindex", res)
    print(json.dumps(res, indent=1))


def save(a, key, value):
    path = os.path.join(a.work, "results.json")
    d = json.load(open(path)) if os.path.exists(path) else {}
    d[key] = value
    with open(path, "w") as f:
        json.dump(d, f, indent=1)


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def summary(lat_ms, extra=None):
    d = dict(n=len(lat_ms), p50=round(pct(lat_ms, 50), 2), p99=round(pct(lat_ms, 99), 2),
             max=round(max(lat_ms), 2) if lat_ms else None, mean=round(statistics.mean(lat_ms), 2) if lat_ms else None)
    d.update(extra or {})
    return d


def query_url(base, q):
    params = dict(q=q["q"], limit="20")
    if q.get("tags"):
        params["tags"] = q["tags"]
    return base + "/api/v1/search/items?" + urllib.parse.urlencode(params)


def cmd_query(a):
    qs = json.load(open(os.path.join(a.work, "queries.json")))["queries"]
    s = Server(a)
    try:
        token = login(s.base, BENCH_EMAIL)
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", s.port)
        hdr = {"authorization": f"Bearer {token}"}

        def one(q):
            url = query_url("", q)
            t = time.perf_counter()
            conn.request("GET", url, headers=hdr)
            r = conn.getresponse()
            body = r.read()
            dt = (time.perf_counter() - t) * 1000
            if r.status != 200:
                raise SystemExit(f"{r.status} {body[:300]!r} for {url}")
            return dt, json.loads(body)

        # Warm-up: one pass over a sample of every kind (page cache, mmap).
        wrng = random.Random(7)
        for kind in KINDS:
            for q in wrng.sample(qs[kind], min(a.warmup, len(qs[kind]))):
                one(q)
        order = [(k, i) for k in KINDS for i in range(len(qs[k]))]
        random.Random(11).shuffle(order)
        lat = {k: [] for k in KINDS}
        hits = {k: [] for k in KINDS}
        totals = {k: [] for k in KINDS}
        cpu0, t0, b0 = s.cpu_seconds(), time.time(), busy_seconds()
        for k, i in order:
            dt, page = one(qs[k][i])
            lat[k].append(dt)
            hits[k].append(len(page["items"]))
            totals[k].append(page.get("total_estimate") or 0)
        wall = time.time() - t0
        res = {k: summary(lat[k], dict(mean_hits=round(statistics.mean(hits[k]), 1),
                                       zero_hit_share=round(sum(1 for h in hits[k] if h == 0) / len(hits[k]), 3),
                                       median_total=statistics.median(totals[k]))) for k in KINDS}
        res["_server_cpu_cores"] = round((s.cpu_seconds() - cpu0) / wall, 2)
        res["_machine_busy_cores"] = round((busy_seconds() - b0) / wall, 2)
        res["_server_peak_rss_mb"] = round(s.rss_mb(), 1)
        save(a, "atlas_query", res)
        print(json.dumps(res, indent=1))
    finally:
        s.stop()


# --------------------------------------------------------------------------
# Index lag
# --------------------------------------------------------------------------

def poll_ready(port, path, stop_at):
    """Sample the search position from /ready as fast as it answers."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port)
    last = None
    with open(path, "w") as out:
        while time.time() < stop_at:
            try:
                conn.request("GET", "/ready")
                r = conn.getresponse()
                body = json.loads(r.read())
            except (OSError, ValueError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port)
                time.sleep(0.01)
                continue
            now = time.time()
            pos = find_position(body)
            if pos is not None and pos != last:
                out.write(f"{now:.6f}\t{pos}\n")
                out.flush()
                last = pos
            time.sleep(a_poll_interval)


a_poll_interval = 0.002


def find_position(body):
    if isinstance(body, dict):
        if "position" in body and "generation" in body:
            return body["position"]
        for v in body.values():
            p = find_position(v)
            if p is not None:
                return p
    if isinstance(body, list):
        for v in body:
            p = find_position(v)
            if p is not None:
                return p
    return None


async def writer(a, port, token, colls, bodies, results):
    start = time.time() + 0.5
    total = a.rate * a.duration
    sem = asyncio.Semaphore(a.connections)
    pool = asyncio.Queue()
    for _ in range(a.connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def send(i):
        async with sem:
            reader, w = await pool.get()
            t_send = time.time()
            try:
                payload = json.dumps(dict(title=f"lag probe {i} " + bodies[i % len(bodies)][:60],
                                          body=bodies[i % len(bodies)], tags=["lag"])).encode()
                cid = colls[i % len(colls)]
                req = (f"POST /api/v1/collections/{cid}/items HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                       f"authorization: Bearer {token}\r\ncontent-type: application/json\r\n"
                       f"content-length: {len(payload)}\r\n\r\n").encode() + payload
                w.write(req)
                await w.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                body = await reader.readexactly(int(m.group(1))) if m else b""
                results.append((i, status, time.time(), time.time() - t_send))
            except Exception as e:  # noqa: BLE001 - counted as a failed write
                results.append((i, 0, time.time(), None))
                reader, w = await asyncio.open_connection("127.0.0.1", port)
            finally:
                pool.put_nowait((reader, w))

    tasks = []
    for i in range(total):
        delay = start + i / a.rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
    return time.time() - start


def cmd_lag(a):
    meta = json.load(open(os.path.join(a.work, "queries.json")))["meta"]
    rng = random.Random(a.seed + 3)
    vocab = make_vocabulary(random.Random(a.seed))
    cw = zipf_cum_weights(len(vocab))
    bodies = [sentences(rng, rng.choices(vocab, cum_weights=cw, k=body_length(rng))) for _ in range(500)]
    s = Server(a)
    try:
        token = login(s.base, BENCH_EMAIL)
        db = sqlite3.connect(f"file:{db_path(a)}?mode=ro", uri=True)
        seq0 = db.execute("SELECT coalesce(max(sequence), 0) FROM outbox").fetchone()[0]
        samples = os.path.join(a.work, "lag-positions.tsv")
        poller = multiprocessing.Process(target=poll_ready, args=(s.port, samples, time.time() + a.duration + 60))
        poller.start()
        results = []
        cpu0, b0 = s.cpu_seconds(), busy_seconds()
        wall = asyncio.run(writer(a, s.port, token, meta["user_collections"], bodies, results))
        cpu = (s.cpu_seconds() - cpu0) / wall
        busy = (busy_seconds() - b0) / wall
        # Wait for the index to catch up with the last write.
        last_seq = db.execute("SELECT coalesce(max(sequence), 0) FROM outbox").fetchone()[0]
        deadline = time.time() + 60
        while time.time() < deadline:
            rows = open(samples).read().split("\n")
            lastpos = int(rows[-2].split("\t")[1]) if len(rows) > 1 else 0
            if lastpos >= last_seq:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        poller.terminate()
        poller.join()
        pos = [(float(t), int(p)) for t, p in (line.split("\t") for line in open(samples).read().split("\n") if line)]
        events = db.execute("SELECT sequence, occurred_at FROM outbox WHERE sequence > ? AND event_type = 'ItemCreated' "
                            "ORDER BY sequence", (seq0,)).fetchall()
        lags = []
        j = 0
        positions = [p for _, p in pos]
        for seq, occurred in events:
            k = bisect.bisect_left(positions, seq)
            if k == len(positions):
                continue
            t_occ = datetime.fromisoformat(occurred.replace("Z", "+00:00")).timestamp()
            lags.append((pos[k][0] - t_occ) * 1000)
            j += 1
        ok = sum(1 for r in results if r[1] == 201)
        intervals = [b[0] - a_[0] for a_, b in zip(pos, pos[1:])]
        wl = [r[3] * 1000 for r in results if r[1] == 201]
        res = summary(lags, dict(write_p50_ms=round(pct(wl, 50), 1), write_p99_ms=round(pct(wl, 99), 1), target_rate=a.rate, duration_s=a.duration, reached_rate=round(ok / wall),
                                 writes_ok=ok, writes_failed=len(results) - ok, events=len(events),
                                 events_unindexed=len(events) - len(lags), server_cpu_cores=round(cpu, 2), machine_busy_cores=round(busy, 2),
                                 commits_seen=len(pos), median_commit_interval_ms=round(statistics.median(intervals) * 1000, 1)
                                 if intervals else None))
        save(a, "lag", res)
        print(json.dumps(res, indent=1))
    finally:
        s.stop()


# --------------------------------------------------------------------------
# PostgreSQL full-text search
# --------------------------------------------------------------------------

def psql(a, sql, db=None, **kw):
    return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", a.pg_url.rsplit("/", 1)[0] + "/" + (db or "postgres"),
                           "-c", sql], check=True, capture_output=True, text=True, **kw)


def pg_sql(kind, q, colls):
    lit = "'" + q["q"].replace("'", "''") + "'"
    inlist = ",".join(f"'{c}'" for c in colls)
    if kind in ("one_word", "two_words", "typo"):
        tsq = f"websearch_to_tsquery('english', {lit})"
    elif kind == "phrase":
        tsq = f"phraseto_tsquery('english', {lit[0]}{q['q'].strip(chr(34))}{lit[-1]})"
    elif kind == "prefix":
        tsq = f"to_tsquery('english', {lit[:-1]}:*')"
    else:  # tag_filtered
        tsq = f"websearch_to_tsquery('english', {lit})"
    tag = f" AND tags @> ARRAY['{q['tags']}']" if kind == "tag_filtered" else ""
    return (f"SELECT id, ts_rank(tsv, query) AS rank FROM items, {tsq} query WHERE tsv @@ query "
            f"AND collection_id IN ({inlist}){tag} ORDER BY rank DESC LIMIT 20;")


def cmd_pg(a):
    data = json.load(open(os.path.join(a.work, "queries.json")))
    meta, qs = data["meta"], data["queries"]
    name = a.pg_db
    if not a.skip_pg_load:
        psql(a, f"DROP DATABASE IF EXISTS {name}")
        psql(a, f"CREATE DATABASE {name}")
        t0 = time.time()
        psql(a, "CREATE UNLOGGED TABLE staging (id text, collection_id text, title text, body text, source_url text, "
                "tags_json text, metadata text, version bigint, created_at text, updated_at text)", db=name)
        items = os.path.join(a.work, "corpus", "items.tsv")
        psql(a, f"\\copy staging FROM '{items}' WITH (FORMAT text)", db=name)
        # The stored tsvector is exactly to_tsvector('english', title || ' ' || body);
        # tags as an array for a GIN containment filter.
        psql(a, "CREATE TABLE items AS SELECT id, collection_id, title, body, source_url, "
                "translate(tags_json, '[]', '{}')::text[] AS tags, metadata, version, created_at, updated_at, "
                "to_tsvector('english', title || ' ' || coalesce(body, '')) AS tsv FROM staging; "
                "DROP TABLE staging; ALTER TABLE items ADD PRIMARY KEY (id)", db=name)
        t1 = time.time()
        psql(a, "SET maintenance_work_mem = '2GB'; CREATE INDEX items_tsv ON items USING gin (tsv); "
                "CREATE INDEX items_coll ON items (collection_id); CREATE INDEX items_tags ON items USING gin (tags)", db=name)
        psql(a, "VACUUM ANALYZE items", db=name)
        t2 = time.time()
        size = psql(a, "SELECT pg_relation_size('items_tsv'), pg_total_relation_size('items')", db=name).stdout
        gin, total = (int(x) for x in size.strip().split("|"))
        load = dict(copy_and_tsvector_seconds=round(t1 - t0, 1), index_seconds=round(t2 - t1, 1),
                    gin_index_mb=round(gin / 2**20, 1), table_total_mb=round(total / 2**20, 1))
        save(a, "pg_load", load)
        print(json.dumps(load))
    colls = meta["user_collections"]
    order = [(k, i) for k in KINDS for i in range(min(a.pg_queries, len(qs[k])))]
    random.Random(11).shuffle(order)
    wrng = random.Random(7)
    warm = [(k, i) for k in KINDS for i in wrng.sample(range(len(qs[k])), min(a.warmup, len(qs[k])))]
    script = ["\\timing on", f"SET statement_timeout = '{a.pg_timeout}s';", "\\o /dev/null"]
    for k, i in warm:
        script.append(pg_sql(k, qs[k][i], colls))
    script.append("\\o")
    script.append("\\echo MEASURE")
    script.append("\\o /dev/null")
    for k, i in order:
        script.append(pg_sql(k, qs[k][i], colls))
    p = subprocess.run(["psql", "-X", "-q", a.pg_url.rsplit("/", 1)[0] + "/" + name], input="\n".join(script),
                       capture_output=True, text=True)
    out = p.stdout.split("MEASURE", 1)[1]
    times = [float(x) for x in re.findall(r"Time: ([\d.]+) ms", out)]
    timeouts = p.stderr.count("statement timeout")
    if len(times) != len(order):
        print(p.stderr[-2000:], file=sys.stderr)
    lat = {k: [] for k in KINDS}
    for (k, _), t in zip(order, times):
        lat[k].append(t)
    res = {k: summary(lat[k]) for k in KINDS if lat[k]}
    res["_timeouts"] = timeouts
    res["_statement_timeout_s"] = a.pg_timeout
    save(a, "pg_query", res)
    print(json.dumps(res, indent=1))


def cmd_clean(a):
    psql(a, f"DROP DATABASE IF EXISTS {a.pg_db}")
    shutil.rmtree(a.work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["generate", "setup", "load", "reindex", "query", "lag", "pg", "clean"])
    p.add_argument("--work", default="/var/tmp/atlas-bench-search", help="work directory (corpus, Atlas data dir, results.json)")
    p.add_argument("--atlas", default=os.environ.get("ATLAS_BIN", "/var/tmp/atlas-target/release/atlas"))
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--queries", type=int, default=300, help="queries per kind (Atlas)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up queries per kind, not counted")
    p.add_argument("--rate", type=int, default=1000, help="lag: item writes per second")
    p.add_argument("--duration", type=int, default=30, help="lag: seconds of writes")
    p.add_argument("--connections", type=int, default=128, help="lag: HTTP connections (max writes in flight)")
    p.add_argument("--pg-url", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--pg-db", default="bench_search_fts")
    p.add_argument("--pg-queries", type=int, default=100, help="queries per kind (PostgreSQL)")
    p.add_argument("--pg-timeout", type=int, default=30, help="PostgreSQL statement_timeout, seconds")
    p.add_argument("--skip-pg-load", action="store_true", help="pg: reuse the loaded database")
    a = p.parse_args()
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    {"generate": cmd_generate, "setup": cmd_setup, "load": cmd_load, "reindex": cmd_reindex, "query": cmd_query,
     "lag": cmd_lag, "pg": cmd_pg, "clean": cmd_clean}[a.step](a)


if __name__ == "__main__":
    main()
