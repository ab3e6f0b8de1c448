#!/usr/bin/env bash
# Startup figures of the release binary: size, time from process start to
# /ready = 200 (median of 5 fresh starts, each on a new data directory, so
# migrations run every time), and resident memory once idle.
#
#   bench/startup.sh [path/to/atlas]     (default: $CARGO_TARGET_DIR/release/atlas)
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-target}/release/atlas}"
[ -x "$bin" ] || { echo "no binary at $bin; build it with: cargo build --release" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
times=()
rss=""
for run in 1 2 3 4 5; do
  dir=$(mktemp -d)
  start=$(date +%s%N)
  ( cd "$dir" && exec env ATLAS_SERVER__BIND="127.0.0.1:$port" ATLAS_TELEMETRY__LOG_LEVEL=warn "$bin" serve >/dev/null 2>&1 ) &
  pid=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = "200" ]; do
    sleep 0.002
  done
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
  if [ "$run" = 5 ]; then
    sleep 2
    server=$(pgrep -P "$pid" || echo "$pid")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
  fi
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "binary:            $bin ($(stat -c %s "$bin") bytes, $(du -h "$bin" | cut -f1))"
echo "start → /ready:    ${times[*]} ms (median ${sorted[2]} ms)"
echo "idle RSS:          $(( rss / 1024 )) MiB ($rss KiB, 2 s after ready)"
