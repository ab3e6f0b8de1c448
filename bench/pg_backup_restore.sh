#!/usr/bin/env bash
# The cluster backup and restore procedure of docs/runbook.md, run end to end
# on this machine's PostgreSQL and NATS: write items through a cluster-mode
# atlas, back up with pg_dump and a JetStream snapshot of both streams,
# restore into a new database and replaced streams, serve from them, and
# check that the audit chain verifies and every item is readable and
# searchable. Uses its own database and stream names and removes them.
#
#   bench/pg_backup_restore.sh            # ATLAS_BIN defaults to $CARGO_TARGET_DIR/debug/atlas
#
# Needs: psql, pg_dump, pg_restore, curl, jq, python3 with nats-py.
set -euo pipefail
cd "$(dirname "$0")/.."

ATLAS_BIN="${ATLAS_BIN:-${CARGO_TARGET_DIR:-target}/debug/atlas}"
PG="${ATLAS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
NATS="${ATLAS_TEST_NATS_URL:-nats://127.0.0.1:4222}"
id="$(date +%s)$$"
src_db="atlas_backup_src_$id"
dst_db="atlas_backup_dst_$id"
work="$(mktemp -d)"
server=""
python3 -c 'import nats' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check nats-py

db_url() { echo "${PG%/*}/$1"; }

cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  for s in "BK${id}_EVENTS" "BK${id}_DLQ"; do
    python3 - "$NATS" "$s" <<'EOF' || true
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    try:
        await nc.jetstream().delete_stream(sys.argv[2])
    except Exception:
        pass
    await nc.close()
asyncio.run(main())
EOF
  done
  psql -q "$PG" -c "DROP DATABASE IF EXISTS $src_db" -c "DROP DATABASE IF EXISTS $dst_db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

export ATLAS_EVENTS__BROKER=nats
export ATLAS_EVENTS__NATS__URL="$NATS"
export ATLAS_EVENTS__NATS__STREAM="BK${id}_EVENTS"
export ATLAS_EVENTS__NATS__DLQ_STREAM="BK${id}_DLQ"
export ATLAS_EVENTS__NATS__SUBJECT_PREFIX="bk$id"
export ATLAS_AUTH__JWT_SECRET="backup-procedure-secret-0123456789abcdef"
export ATLAS_AUTH__ARGON2_MEMORY_KIB=256 ATLAS_AUTH__ARGON2_ITERATIONS=1
export ATLAS_AUDIT__SIGNING_KEY_FILE="$work/audit-signing.key"
export ATLAS_AUDIT__CHECKPOINT_EVERY_ROWS=2
# An Ed25519 seed (base64) shared by source and restored node.
head -c 32 /dev/urandom | base64 > "$ATLAS_AUDIT__SIGNING_KEY_FILE"

serve() { # serve DATA_DIR DATABASE_URL PORT
  ATLAS_DATA_DIR="$1" ATLAS_DATABASE__URL="$2" "$ATLAS_BIN" serve --bind "127.0.0.1:$3" >"$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$3/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "atlas serve did not become ready:" >&2
  cat "$work/serve.log" >&2
  return 1
}
stop() { kill -INT "$server"; wait "$server" || true; server=""; }
json() { curl -fsS -H 'content-type: application/json' "$@"; }

echo "== source: database $src_db, streams BK${id}_EVENTS / BK${id}_DLQ"
psql -q "$PG" -c "CREATE DATABASE $src_db" -c "CREATE DATABASE $dst_db"
ATLAS_DATABASE__URL="$(db_url "$src_db")" "$ATLAS_BIN" migrate up | tail -n 1
port=$((20000 + RANDOM % 20000))
serve "$work/node-a" "$(db_url "$src_db")" "$port"
base="http://127.0.0.1:$port/api/v1"
token="$(json -d '{"email":"ops@backup.example","password":"password-123"}' "$base/auth/register" | jq -r .access_token)"
collection="$(json -H "authorization: Bearer $token" -d '{"name":"Backups"}' "$base/collections" | jq -r .id)"
words=(albatross bittern cormorant)
ids=()
for w in "${words[@]}"; do
  ids+=("$(json -H "authorization: Bearer $token" -d "{\"title\":\"$w sighting\"}" "$base/collections/$collection/items" | jq -r .id)")
done
for _ in $(seq 1 100); do
  n="$(ATLAS_DATABASE__URL="$(db_url "$src_db")" "$ATLAS_BIN" audit verify --json | jq .checked)"
  [ "$n" -ge 5 ] && break
  sleep 0.1
done
stop

echo "== back up"
pg_dump --format=custom --no-owner --file "$work/atlas.dump" "$(db_url "$src_db")"
ls -l "$work/atlas.dump" | awk '{print "pg_dump: " $5 " bytes"}'
python3 bench/jetstream_backup.py backup --url "$NATS" --stream "BK${id}_EVENTS" --out "$work/events.snapshot"
python3 bench/jetstream_backup.py backup --url "$NATS" --stream "BK${id}_DLQ" --out "$work/dlq.snapshot"

echo "== restore into $dst_db and replaced streams"
pg_restore --no-owner --dbname "$(db_url "$dst_db")" "$work/atlas.dump"
python3 bench/jetstream_backup.py restore --url "$NATS" --stream "BK${id}_EVENTS" --file "$work/events.snapshot" --replace
python3 bench/jetstream_backup.py restore --url "$NATS" --stream "BK${id}_DLQ" --file "$work/dlq.snapshot" --replace
ATLAS_DATABASE__URL="$(db_url "$dst_db")" "$ATLAS_BIN" audit verify

echo "== serve from the restored database (a new node: empty data dir, index rebuilt)"
serve "$work/node-b" "$(db_url "$dst_db")" "$port"
token="$(json -d '{"email":"ops@backup.example","password":"password-123"}' "$base/auth/login" | jq -r .access_token)"
for i in "${!words[@]}"; do
  title="$(curl -fsS -H "authorization: Bearer $token" "$base/items/${ids[$i]}" | jq -r .title)"
  [ "$title" = "${words[$i]} sighting" ] || { echo "item ${ids[$i]}: got '$title'" >&2; exit 1; }
  found=""
  for _ in $(seq 1 100); do
    found="$(curl -fsS -H "authorization: Bearer $token" "$base/search/items?q=${words[$i]}" | jq -r '.items[0].item.id // empty')"
    [ "$found" = "${ids[$i]}" ] && break
    sleep 0.1
  done
  [ "$found" = "${ids[$i]}" ] || { echo "search for ${words[$i]} did not find ${ids[$i]}" >&2; exit 1; }
  echo "item ${ids[$i]} readable and found by \"${words[$i]}\""
done
stop
echo "backup and restore procedure: OK"
