#!/usr/bin/env python3
"""Back up and restore an Atlas JetStream stream through the JetStream API.

For hosts without the `nats` CLI (`nats stream backup` / `nats stream restore`
do the same). A snapshot holds the stream's messages and its consumers'
positions; Atlas's streams are the events stream (`events.nats.stream`) and
the dead-letter stream (`events.nats.dlq_stream`).

    jetstream_backup.py backup  --url nats://127.0.0.1:4222 --stream ATLAS_EVENTS --out events.snapshot
    jetstream_backup.py restore --url nats://127.0.0.1:4222 --stream ATLAS_EVENTS --file events.snapshot

The file is JSON holding the stream's configuration and state, then a blank
line, then the snapshot bytes the server sent (its own compressed format).
Restore refuses a stream that exists: delete it first (`--replace`).

Protocol: `$JS.API.STREAM.SNAPSHOT.<stream>` with a `deliver_subject`; the
server sends chunks there, some with a reply subject to acknowledge (flow
control), and an empty message at the end. `$JS.API.STREAM.RESTORE.<stream>`
with the configuration and state answers with a subject that takes the
chunks, each acknowledged, and an empty message to finish.

Needs nats-py (`pip install nats-py`).
"""

import argparse
import asyncio
import json
import sys

import nats

CHUNK = 128 * 1024


async def api(nc, subject, body, timeout=10.0):
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    answer = json.loads(reply.data or b"{}")
    if "error" in answer:
        raise SystemExit(f"{subject}: {answer['error'].get('description', answer['error'])}")
    return answer


async def backup(nc, stream, out):
    inbox = nc.new_inbox()
    chunks = []
    done = asyncio.get_running_loop().create_future()

    async def on_chunk(msg):
        if not msg.data:
            if not done.done():
                done.set_result(None)
            return
        chunks.append(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, b"")

    sub = await nc.subscribe(inbox, cb=on_chunk)
    meta = await api(nc, f"$JS.API.STREAM.SNAPSHOT.{stream}",
                     {"deliver_subject": inbox, "chunk_size": CHUNK, "jsck": True})
    await asyncio.wait_for(done, timeout=120)
    await sub.unsubscribe()
    data = b"".join(chunks)
    with open(out, "wb") as f:
        f.write(json.dumps({"config": meta["config"], "state": meta["state"]}).encode())
        f.write(b"\n\n")
        f.write(data)
    print(f"{stream}: {meta['state']['messages']} messages, "
          f"{meta['state'].get('consumer_count', 0)} consumers, {len(data)} bytes -> {out}")


async def restore(nc, stream, path, replace):
    with open(path, "rb") as f:
        raw = f.read()
    head, _, data = raw.partition(b"\n\n")
    meta = json.loads(head)
    if meta["config"]["name"] != stream:
        raise SystemExit(f"{path} holds stream {meta['config']['name']}, not {stream}")
    if replace:
        try:
            await api(nc, f"$JS.API.STREAM.DELETE.{stream}", {})
        except SystemExit:
            pass  # nothing to replace
    answer = await api(nc, f"$JS.API.STREAM.RESTORE.{stream}",
                       {"config": meta["config"], "state": meta["state"]})
    target = answer["deliver_subject"]
    for i in range(0, len(data), CHUNK):
        await nc.request(target, data[i:i + CHUNK], timeout=10)
    reply = await nc.request(target, b"", timeout=120)
    info = json.loads(reply.data)
    if "error" in info:
        raise SystemExit(f"restore of {stream}: {info['error'].get('description', info['error'])}")
    state = info.get("stream_info", info).get("state", {})
    print(f"{stream}: restored {state.get('messages', '?')} messages, "
          f"{state.get('consumer_count', 0)} consumers")


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["backup", "restore"])
    p.add_argument("--url", default="nats://127.0.0.1:4222")
    p.add_argument("--stream", required=True)
    p.add_argument("--out", help="backup: file to write")
    p.add_argument("--file", help="restore: file to read")
    p.add_argument("--replace", action="store_true", help="restore: delete the stream first")
    p.add_argument("--creds", help="a .creds file to authenticate with")
    p.add_argument("--nkey", help="a file holding an NKEY seed to authenticate with")
    p.add_argument("--ca", help="CA certificate (PEM) for TLS")
    args = p.parse_args()
    options = {}
    if args.creds:
        options["user_credentials"] = args.creds
    if args.nkey:
        options["nkeys_seed"] = args.nkey
    if args.ca:
        import ssl
        options["tls"] = ssl.create_default_context(cafile=args.ca)
    nc = await nats.connect(args.url, **options)
    try:
        if args.command == "backup":
            if not args.out:
                raise SystemExit("backup needs --out")
            await backup(nc, args.stream, args.out)
        else:
            if not args.file:
                raise SystemExit("restore needs --file")
            await restore(nc, args.stream, args.file, args.replace)
    finally:
        await nc.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
