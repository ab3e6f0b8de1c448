#!/usr/bin/env bash
# One Atlas binary, one operation: for A/B runs between two builds, run
# alternately (the machine's speed drifts between runs; only alternating
# pairs compare).
#
#   bench/single.sh BIN [list|get|create] [CONNECTIONS] [SECONDS]
#   SEED=2000 bench/single.sh /tmp/a create 16 20
#
# Starts BIN on 127.0.0.1:$PORT (default 18080) with a fresh data dir (as
# bench/compare.py does: no rate limit, log level warn), registers a user,
# creates a read and a write collection, seeds $SEED items (default 10000)
# into the read one with wrk, waits $SETTLE seconds (default 5), then runs
# wrk for the operation. Prints RSS after seeding, req/s, p50/p99, the
# server's CPU (all, user) in cores during the load, its peak RSS (VmRSS
# every 100 ms) and the RSS split at the end. $EXTRA_ENV (VAR=value ...)
# is passed to the server. Needs wrk, curl and python3.
set -euo pipefail

bin=${1:?usage: bench/single.sh BIN [list|get|create] [CONNECTIONS] [SECONDS]}
op=${2:-list}; conns=${3:-16}; secs=${4:-10}
seed=${SEED:-10000}; settle=${SETTLE:-5}; port=${PORT:-18080}
lua="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lua"
base="http://127.0.0.1:$port"

work=$(mktemp -d /tmp/atlas-single.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/data"
cd "$work"
# shellcheck disable=SC2086 # EXTRA_ENV is a list of VAR=value words.
env -i PATH="$PATH" HOME="${HOME:-/root}" ATLAS_DATA_DIR="$work/data" \
  ATLAS_SERVER__BIND="127.0.0.1:$port" ATLAS_SERVER__RATE_LIMIT_PER_SECOND=0 \
  ATLAS_AUTH__ACCESS_TOKEN_TTL_SECS=3600 ATLAS_TELEMETRY__LOG_LEVEL=warn \
  ${EXTRA_ENV:-} "$bin" serve > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 200); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token=$(curl -sf -XPOST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"email\":\"single-$RANDOM@example.com\",\"password\":\"bench-password-123\",\"display_name\":\"B\"}" \
  | json '["access_token"]')
auth="Authorization: Bearer $token"
collection() {
  curl -sf -XPOST "$base/api/v1/collections" -H "$auth" -H 'content-type: application/json' \
    -d "{\"name\":\"$1\"}" | json '["id"]'
}
read_id=$(collection read); write_id=$(collection write)
export BENCH_LUA_DIR="$lua" BENCH_AUTH="Bearer $token"

# Seed with wrk in 1 s rounds until the "bench" tag counts $seed items.
have=0
while [ "$have" -lt "$seed" ]; do
  BENCH_PATH="/api/v1/collections/$read_id/items" wrk -t2 -c16 -d1s -s "$lua/create.lua" "$base" >/dev/null
  have=$(curl -sf "$base/api/v1/collections/$read_id/tags" -H "$auth" \
    | json '["items"]' | python3 -c "import ast,sys; print(max([t['count'] for t in ast.literal_eval(sys.stdin.read())] or [0]))")
done
sleep "$settle"
rss() { grep -E "VmRSS|RssAnon|RssFile" "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' '; }
echo "after seeding $have items: $(rss)"

case "$op" in
  list) export BENCH_PATH="/api/v1/collections/$read_id/items?limit=20" ;;
  create) export BENCH_PATH="/api/v1/collections/$write_id/items" ;;
  get)
    curl -sf "$base/api/v1/collections/$read_id/items?limit=100" -H "$auth" \
      | python3 -c 'import json,sys; [print(i["id"]) for i in json.load(sys.stdin)["items"]]' > "$work/ids"
    export BENCH_IDS_FILE="$work/ids" BENCH_PATH_PREFIX=/api/v1/items/ BENCH_PATH_SUFFIX= ;;
  *) echo "unknown operation $op" >&2; exit 2 ;;
esac

( while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/{print $2}' "/proc/$pid/status"; sleep 0.1; done ) > "$work/rss" &
sampler=$!
ticks() { awk "{print $1}" "/proc/$pid/stat"; }
all0=$(ticks '$14+$15'); user0=$(ticks '$14')
wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s --latency -s "$lua/$op.lua" "$base" > "$work/wrk.out"
all1=$(ticks '$14+$15'); user1=$(ticks '$14')
kill "$sampler"
hz=$(getconf CLK_TCK)
peak=$(sort -n "$work/rss" | tail -1)
rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")
p50=$(awk '$1=="50%"{print $2}' "$work/wrk.out"); p99=$(awk '$1=="99%"{print $2}' "$work/wrk.out")
python3 -c "print(f'$op@$conns: {float(\"$rps\"):.0f} req/s, p50 $p50, p99 $p99, server CPU {($all1-$all0)/$hz/$secs:.2f} cores (user {($user1-$user0)/$hz/$secs:.2f}), peak RSS {$peak/1024:.1f} MiB')"
echo "at the end: $(rss)"
