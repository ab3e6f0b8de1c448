#!/usr/bin/env python3
"""Check deploy/nats/: the configurations load, and the `atlas` user may do
everything Atlas does on the broker and nothing more.

Starts a private nats-server (the machine's) twice, on free loopback ports in
a temporary directory:
- with nats-server.conf (TLS with certificates generated here, the `atlas`
  user by NKEY), and
- with compose.conf (no TLS, clients without credentials are `atlas`),
then replays, as that user, the broker traffic of Atlas's NATS event log
(crates/events/src/nats) and search indexer (modules/search): the same
JetStream API subjects async-nats sends, raw, so this does not depend on
the Python client's own JetStream helpers. A few requests Atlas never makes
must be refused.

Needs: nats-server, openssl, and the PyPI packages nats-py and nkeys.
"""

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import nats
import nkeys

HERE = os.path.dirname(os.path.abspath(__file__))
NATS_DIR = os.path.join(HERE, "..", "deploy", "nats")
TIMEOUT = 2.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(directory):
    """A CA and a server certificate for 127.0.0.1 / localhost."""
    tls = os.path.join(directory, "tls")
    os.makedirs(tls)

    def run(*args):
        subprocess.run(args, check=True, cwd=tls, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=atlas-test-ca")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(tls, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf")
    return tls


def prepare(directory, config, tls_dir):
    """Copy deploy/nats/ and point the copy at this directory's ports and files."""
    for name in os.listdir(NATS_DIR):
        if name.endswith(".conf"):
            shutil.copy(os.path.join(NATS_DIR, name), directory)
    path = os.path.join(directory, config)
    text = open(path).read()
    port = free_port()
    text, n = re.subn(r"(?m)^port: 4222$", f"port: {port}", text)
    assert n == 1, f"{config}: no `port: 4222` line"
    text = re.sub(r"(?m)^http_port: \d+$", f"http_port: {free_port()}", text)
    text = text.replace('"/data/jetstream"', json.dumps(os.path.join(directory, "js")))
    if tls_dir:
        text = text.replace('"/etc/nats/tls/', '"' + tls_dir + "/")
    open(path, "w").write(text)
    return path, port


class Server:
    def __init__(self, config, env):
        self.config, self.env = config, env

    def __enter__(self):
        check = subprocess.run(["nats-server", "-t", "-c", self.config], env=self.env,
                               capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"{os.path.basename(self.config)} does not load:\n{check.stdout}{check.stderr}")
        self.log = open(self.config + ".log", "w")
        self.proc = subprocess.Popen(["nats-server", "-c", self.config], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


async def connect(url, **options):
    violations = []

    async def on_error(e):
        violations.append(str(e))

    deadline = time.monotonic() + 10
    while True:
        try:
            nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False,
                                    connect_timeout=2, **options)
            violations.clear()  # failed attempts while the server started
            return nc, violations
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def api(nc, subject, body=None):
    """A JetStream API request; its response, or an error on refusal."""
    msg = await nc.request("$JS.API." + subject, json.dumps(body or {}).encode(), timeout=TIMEOUT)
    response = json.loads(msg.data)
    if "error" in response:
        raise RuntimeError(f"{subject}: {response['error']}")
    return response


async def js_publish(nc, subject, payload, msg_id):
    msg = await nc.request(subject, payload, timeout=TIMEOUT, headers={"Nats-Msg-Id": msg_id})
    ack = json.loads(msg.data)
    if "error" in ack:
        raise RuntimeError(f"publish {subject}: {ack['error']}")
    return ack["seq"]


async def pull(nc, stream, consumer, batch):
    """CONSUMER.MSG.NEXT with an inbox reply, as a pull consumer does."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                     json.dumps({"batch": batch, "expires": 1_000_000_000}).encode(), reply=inbox)
    out = []
    while len(out) < batch:
        msg = await sub.next_msg(timeout=TIMEOUT)
        if msg.reply and msg.reply.startswith("$JS.ACK."):
            out.append(msg)
    await sub.unsubscribe()
    return out


def stream_config(name, subject):
    return {"name": name, "subjects": [subject], "retention": "limits", "storage": "file",
            "max_age": 3600 * 10**9, "num_replicas": 1, "duplicate_window": 120 * 10**9}


def consumer_config(durable, filter_subject, ack_policy="explicit"):
    return {"durable_name": durable, "deliver_policy": "all", "ack_policy": ack_policy,
            "ack_wait": 30 * 10**9, "max_deliver": 6, "filter_subject": filter_subject,
            "max_ack_pending": 256, "num_replicas": 1}


async def create_consumer(nc, stream, config):
    subject = f"CONSUMER.CREATE.{stream}.{config['durable_name']}.{config['filter_subject']}"
    return await api(nc, subject, {"stream_name": stream, "config": config, "action": ""})


async def atlas_traffic(nc):
    """What Atlas does, in the order a first start, some events, a dead
    letter, a replay and a purge would."""
    for name, subject in (("ATLAS_EVENTS", "atlas.events.>"), ("ATLAS_DLQ", "atlas.dlq.>")):
        config = stream_config(name, subject)
        try:
            await api(nc, f"STREAM.UPDATE.{name}", config)
        except RuntimeError:  # not found on the first start
            await api(nc, f"STREAM.CREATE.{name}", config)
        await api(nc, f"STREAM.UPDATE.{name}", config)  # the next start
        await api(nc, f"STREAM.INFO.{name}")

    # The relay publishes events.
    for i, subject in enumerate(("atlas.events.item.created", "atlas.events.item.updated",
                                 "atlas.events.collection.created")):
        await js_publish(nc, subject, json.dumps({"event_id": f"e{i}"}).encode(), f"e{i}")

    # A module consumer: created, updated, looked up, pulled, acked, nak'ed
    # and terminated; then re-created with another filter.
    await create_consumer(nc, "ATLAS_EVENTS", consumer_config("audit", "atlas.events.>"))
    await create_consumer(nc, "ATLAS_EVENTS", consumer_config("audit", "atlas.events.>"))
    await api(nc, "CONSUMER.INFO.ATLAS_EVENTS.audit")
    first, second, third = await pull(nc, "ATLAS_EVENTS", "audit", 3)
    await first.ack()
    await second.nak(delay=0.1)
    await third.term()
    await api(nc, "CONSUMER.DELETE.ATLAS_EVENTS.audit")
    await create_consumer(nc, "ATLAS_EVENTS", consumer_config("audit", "atlas.events.item.*"))

    # A search index's consumer: deleted and re-created at its position.
    search = consumer_config("search-node1", "atlas.events.item.>", ack_policy="all")
    await create_consumer(nc, "ATLAS_EVENTS", search)
    await api(nc, "CONSUMER.DELETE.ATLAS_EVENTS.search-node1")
    await create_consumer(nc, "ATLAS_EVENTS", search)
    (msg, _) = await pull(nc, "ATLAS_EVENTS", "search-node1", 2)
    await msg.ack()

    # A dead letter, listed, replayed to the events stream, deleted, purged.
    seq = await js_publish(nc, "atlas.dlq.audit", b'{"event_id":"e2"}', "dlq:audit:e2:3")
    info = await api(nc, "STREAM.INFO.ATLAS_DLQ")
    assert info["state"]["messages"] == 1, info["state"]
    await api(nc, "STREAM.MSG.GET.ATLAS_DLQ", {"seq": seq})
    await js_publish(nc, "atlas.events.collection.created", b'{"event_id":"e2"}', "replay:1:e2")
    await api(nc, "STREAM.MSG.DELETE.ATLAS_DLQ", {"seq": seq})
    await api(nc, "STREAM.PURGE.ATLAS_DLQ", {"filter": "atlas.dlq.audit"})
    await api(nc, "STREAM.PURGE.ATLAS_DLQ")


async def refused(nc, violations):
    """Requests Atlas never makes must be refused by the server."""
    for subject in ("$JS.API.STREAM.DELETE.ATLAS_EVENTS", "$JS.API.STREAM.CREATE.OTHER",
                    "$JS.API.STREAM.SNAPSHOT.ATLAS_EVENTS", "$JS.API.ACCOUNT.PURGE.ATLAS"):
        before = len(violations)
        try:
            await nc.request(subject, b"{}", timeout=0.5)
            raise AssertionError(f"{subject} was answered, it should be refused")
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            pass
        await nc.flush()
        await asyncio.sleep(0.1)
        assert len(violations) > before, f"{subject}: no permissions violation reported"
    before = len(violations)
    await nc.publish("elsewhere.subject", b"x")
    await nc.flush()
    await asyncio.sleep(0.1)
    assert len(violations) > before, "publish outside atlas.> was not refused"


async def scenario(name, url, **options):
    nc, violations = await connect(url, **options)
    try:
        await atlas_traffic(nc)
        await nc.flush()
        await asyncio.sleep(0.2)
        if violations:
            sys.exit(f"{name}: Atlas's traffic hit permission errors: {violations}")
        await refused(nc, violations)
    finally:
        await nc.close()
    print(f"ok: {name}: Atlas's broker traffic allowed, other requests refused")


async def ignore(_error):
    pass


def main():
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="atlas-nats-") as tmp:
        env = dict(os.environ)
        user = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
        env["NATS_ATLAS_NKEY"] = user.public_key.decode()
        env["NATS_ATLAS_PASSWORD"] = "compose-check"
        env["NATS_OPS_PASSWORD"] = "ops-check"
        seed_file = os.path.join(tmp, "atlas.nk")
        with open(seed_file, "wb") as f:
            f.write(user.seed)

        prod = os.path.join(tmp, "prod")
        os.makedirs(prod)
        tls_dir = make_certificates(prod)
        config, port = prepare(prod, "nats-server.conf", tls_dir)
        context = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.crt"))
        with Server(config, env):
            asyncio.run(scenario("nats-server.conf (TLS, NKEY)", f"tls://localhost:{port}",
                                 tls=context, nkeys_seed=seed_file))
            # Without the CA, the server's certificate is not trusted.
            try:
                asyncio.run(asyncio.wait_for(
                    nats.connect(f"tls://localhost:{port}", allow_reconnect=False,
                                 connect_timeout=2, nkeys_seed=seed_file, error_cb=ignore), 5))
                sys.exit("nats-server.conf: a client without the CA connected")
            except SystemExit:
                raise
            except Exception:
                print("ok: nats-server.conf: a client that does not trust the CA is refused")

        compose = os.path.join(tmp, "compose")
        os.makedirs(compose)
        config, port = prepare(compose, "compose.conf", None)
        with Server(config, env):
            asyncio.run(scenario("compose.conf (no credentials)", f"nats://127.0.0.1:{port}"))


if __name__ == "__main__":
    main()
