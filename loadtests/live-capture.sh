#!/usr/bin/env bash
# Live capture completeness: `ab -k -c 8 -n REQUESTS` at full speed against a real nginx
# on a loopback port while reprise-capture records the loopback interface into a file
# log. Prints ab's rate, the capture's packets/s, kernel drops, and how many of the
# requests were stored. Needs root (pcap) and nginx and ab (deploy/local/setup.sh).
# Usage: loadtests/live-capture.sh [REQUESTS] [-- CAPTURE FLAGS...] (default 200000);
# REPRISE_CAPTURE_BIN runs another build of reprise-capture (before/after comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-200000}"
shift || true
[[ "${1:-}" == "--" ]] && shift
cargo build --release -q -p reprise-capture
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
work="$(mktemp -d)"
nginx_pid="" capture_pid=""
cleanup() {
    [[ -n "$capture_pid" ]] && kill "$capture_pid" 2>/dev/null || true
    [[ -n "$nginx_pid" ]] && kill "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
}
NGINX
nginx -p "$work" -c "$work/nginx.conf" -e "$work/error.log" &
nginx_pid=$!
"${REPRISE_CAPTURE_BIN:-$bin/reprise-capture}" --interface lo --port "$port" --log "file://$work/log" "$@" \
    >"$work/report.json" 2>"$work/capture.log" &
capture_pid=$!
for _ in $(seq 100); do grep -q capturing "$work/capture.log" && break; sleep 0.1; done
grep -q capturing "$work/capture.log" || { cat "$work/capture.log" >&2; exit 1; }
started=$(date +%s.%N)
ab -q -k -c 8 -n "$requests" "http://127.0.0.1:$port/" >"$work/ab.txt" 2>&1
elapsed=$(python3 -c "import time; print(time.time() - $started)")
sleep 1
kill -INT "$capture_pid"
wait "$capture_pid" || true
capture_pid=""
grep -E "^(Complete requests|Failed requests|Requests per second)" "$work/ab.txt"
python3 - "$work/report.json" "$requests" "$elapsed" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
requests, elapsed = int(sys.argv[2]), float(sys.argv[3])
print(f"capture: {report['packets']} packets ({report['packets'] / elapsed:,.0f}/s over {elapsed:.1f} s), "
      f"kernel drops {report['kernel_drops']}, gaps {report['gaps']}, resyncs {report['resyncs']}")
print(f"stored {report['requests']} of {requests} requests ({100 * report['requests'] / requests:.2f}%), "
      f"records stored {report['records_stored']}, dropped {report['records_dropped']}")
PY
