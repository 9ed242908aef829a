#!/usr/bin/env bash
# A multi-host rehearsal on one machine. Linux network namespaces, joined by veth links
# to one bridge, stand in for the hosts of a cluster, each running the real daemons:
#
#   ctl      10.77.0.10     etcd and the Kafka-compatible broker (services.sh),
#                           reprise-controller, and ctl
#   prod     10.77.0.20     the production service (reprise-sink on :8080) and
#                           reprise-capture capturing live on prod's eth0 into Kafka
#   client   10.77.0.21     curl: REQUESTS requests with distinct paths to prod
#   load1    10.77.0.31     reprise-worker, registered in etcd
#   load2    10.77.0.32     reprise-worker, registered in etcd
#   staging  10.77.0.40     the replay target: a small HTTP server that logs every request
#
# ctl records the client's traffic, then replays the recording through the controller
# on both workers against staging. The run fails unless staging received every
# recorded request exactly once (methods, paths, bodies, the replay's marker), from
# both load hosts, and the controller's stats API shows a part on each worker with the
# same counts. Everything it made (namespaces, processes, the temp dir) goes on exit.
#
# The bridge lives in a namespace of its own and no namespace has a default route, so
# nothing touches the host's interfaces and no packet leaves the namespaces.
#
# Usage, as root:  bash deploy/local/netns-cluster.sh
# Environment:
#   REPRISE_BIN_DIR         the binaries (default ${CARGO_TARGET_DIR:-target}/debug,
#                           built with `cargo build --bins` when missing there)
#   REPRISE_NETNS_REQUESTS  requests the client sends (default 200)
#   REPRISE_NETNS_TARGET    the replay target (default http://10.77.0.40:8080, staging);
#                           point it elsewhere to see the run fail
# A run takes about 15 s; every wait has a timeout, and the whole run (after any build)
# a deadline of 150 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${REPRISE_NETNS_REQUESTS:-200}
BIN_DIR=${REPRISE_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
DEADLINE_SECS=150
# The PID in the names keeps concurrent runs apart and tells a stale run's namespaces.
P="reprise-$$-"
declare -A IP=([ctl]=10.77.0.10 [prod]=10.77.0.20 [client]=10.77.0.21
    [load1]=10.77.0.31 [load2]=10.77.0.32 [staging]=10.77.0.40)
HOSTS=(ctl prod client load1 load2 staging)
TARGET=${REPRISE_NETNS_TARGET:-http://${IP[staging]}:8080}
# The services' ports inside ctl, set for services.sh too: a REPRISE_*_PORT in the
# caller's environment must not move them away from where the hosts look.
ETCD_PORT=12379 ETCD_PEER_PORT=12380 KAFKA_PORT=19092
SERVICES_ENV=(REPRISE_ETCD_PORT=$ETCD_PORT REPRISE_ETCD_PEER_PORT=$ETCD_PEER_PORT REPRISE_KAFKA_PORT=$KAFKA_PORT)
CATALOG="etcd://${IP[ctl]}:$ETCD_PORT/reprise"
LOG_URL="kafka://${IP[ctl]}:$KAFKA_PORT/reprise-traffic"
CONTROLLER="http://${IP[ctl]}:7100"
API="http://${IP[ctl]}:7180"

log() { printf 'netns-cluster: %s\n' "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || fail "REPRISE_NETNS_REQUESTS must be a positive number, not '$REQUESTS'"
[[ $(id -u) -eq 0 ]] || fail "run as root (network namespaces and live capture need it)"
for c in ip curl python3 timeout; do
    command -v "$c" >/dev/null 2>&1 || fail "$c not found (bash deploy/local/setup.sh installs what is missing)"
done

BINS=(reprise-controller reprise-worker reprise-capture reprise-sink ctl)
missing=()
for b in "${BINS[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
if ((${#missing[@]})); then
    # A directory given explicitly is not ours to fill; the default one is cargo's.
    [[ -z "${REPRISE_BIN_DIR:-}" ]] || fail "missing in REPRISE_BIN_DIR=$BIN_DIR: ${missing[*]}"
    log "building the binaries (missing: ${missing[*]})"
    cargo build --bins || fail "cargo build --bins failed"
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)

# The caller's stdout and stderr, for cleanup: a signal's trap runs inside whatever
# redirection the interrupted command had (a wait's 2>/dev/null, say).
exec 8>&1 9>&2
START=$SECONDS
DEADLINE=$((SECONDS + DEADLINE_SECS))
TMP=$(mktemp -d "/tmp/reprise-netns-$$.XXXXXX")
NAMES=()
PIDS=()
NAMESPACES=()

ns() { printf '%s%s' "$P" "$1"; }
in_ns() {
    local host=$1
    shift
    ip netns exec "$(ns "$host")" "$@"
}

# SECS, capped by what is left of the run's deadline (at least 1: a step started late
# then times out and fails with its own message).
budget() {
    local left=$((DEADLINE - SECONDS))
    ((left > 1)) || left=1
    echo $(($1 < left ? $1 : left))
}

# Kills whatever still runs in a namespace of ours, then deletes it.
reap_ns() {
    local ns=$1 pids i
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null || true)
    if ((${#pids[@]})); then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(ip netns pids "$ns" 2>/dev/null)" ]] && break
            sleep 0.1
        done
    fi
    ip netns del "$ns" 2>/dev/null || true
}

cleanup() {
    local rc=$? i p alive
    trap - EXIT INT TERM ERR
    exec 1>&8 2>&9
    set +e
    # A failure shows the daemons' last words; an interrupt (130, 143) needs none.
    if ((rc != 0 && rc != 130 && rc != 143)); then
        for i in "${!NAMES[@]}"; do
            [[ -s "$TMP/${NAMES[$i]}.log" ]] || continue
            log "last lines of ${NAMES[$i]}'s log:"
            tail -n 8 "$TMP/${NAMES[$i]}.log" | sed "s/^/  [${NAMES[$i]}] /" >&2
        done
        [[ -s "$TMP/services.log" ]] && tail -n 8 "$TMP/services.log" | sed 's/^/  [services] /' >&2
    fi
    # Politely first (the workers release their parts, capture flushes), then by force.
    ((${#PIDS[@]})) && kill -TERM "${PIDS[@]}" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    ((${#PIDS[@]})) && kill -KILL "${PIDS[@]}" 2>/dev/null
    if [[ -d "$TMP/services" ]]; then
        in_ns ctl env REPRISE_SERVICES_DIR="$TMP/services" REPRISE_SERVICES_HOST="${IP[ctl]}" "${SERVICES_ENV[@]}" \
            timeout 40 bash deploy/local/services.sh down 2>>"$TMP/services.log"
    fi
    for p in "${NAMESPACES[@]}"; do reap_ns "$p"; done
    wait 2>/dev/null
    rm -rf "$TMP"
    if ((rc == 0)); then
        log "cleaned up; passed in $((SECONDS - START))s"
    else
        log "cleaned up; failed (exit $rc) after $((SECONDS - START))s"
    fi
    exit "$rc"
}
trap cleanup EXIT
# A plain command that fails (set -e) says which one, before cleanup.
trap 'log "FAILED: line $LINENO: $BASH_COMMAND (exit $?)"' ERR
trap 'log "interrupted" 2>&9; exit 130' INT
trap 'log "terminated" 2>&9; exit 143' TERM

# A run killed outright (SIGKILL) leaves its namespaces, their processes and its temp
# dir behind: remove those whose script is gone.
while read -r name _; do
    [[ "$name" =~ ^reprise-([0-9]+)- ]] || continue
    kill -0 "${BASH_REMATCH[1]}" 2>/dev/null && continue
    log "removing namespace $name of an earlier run that did not finish"
    reap_ns "$name"
done < <(ip netns list 2>/dev/null)
for d in /tmp/reprise-netns-*.*; do
    [[ -d "$d" && "$d" =~ ^/tmp/reprise-netns-([0-9]+)\. ]] || continue
    kill -0 "${BASH_REMATCH[1]}" 2>/dev/null || rm -rf "$d"
done

# start NAME HOST CMD... : a daemon in HOST's namespace, output in $TMP/NAME.log.
start() {
    local name=$1 host=$2
    shift 2
    # Not through in_ns: a function in the background is a subshell of its own, and $!
    # would be that shell's pid. ip netns exec execs the command, so $! is the daemon.
    ip netns exec "$(ns "$host")" "$@" </dev/null >"$TMP/$name.log" 2>&1 8>&- 9>&- &
    NAMES+=("$name")
    PIDS+=($!)
}

# A daemon that died fails the run at once, with its log (shown by cleanup).
check_daemons() {
    local i
    for i in "${!PIDS[@]}"; do
        kill -0 "${PIDS[$i]}" 2>/dev/null || fail "${NAMES[$i]} exited unexpectedly"
    done
}

# wait_until SECS WHAT CMD... : polls CMD until it succeeds.
wait_until() {
    local secs what deadline
    ((SECONDS < DEADLINE)) || fail "the run's ${DEADLINE_SECS}s deadline passed before: $2"
    secs=$(budget "$1")
    what=$2
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        check_daemons
        ((SECONDS < deadline)) || fail "$what: not within ${secs}s"
        sleep 0.2
    done
}

# shellcheck disable=SC2016 # $0 and $1 are the inner shell's
tcp_open() { in_ns "$1" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3"; }
ctl_() { in_ns ctl "$BIN_DIR/ctl" --controller "$CONTROLLER" --timeout-secs 10 "$@"; }

# ------------------------------------------------------------------ the network

log "building namespaces ${P}* on 10.77.0.0/24: a switch and ${HOSTS[*]}"
ip netns add "$(ns sw)"
NAMESPACES+=("$(ns sw)")
ip -n "$(ns sw)" link add br0 type bridge
ip -n "$(ns sw)" link set br0 up
for h in "${HOSTS[@]}"; do
    ip netns add "$(ns "$h")"
    NAMESPACES+=("$(ns "$h")")
    # Both ends are made inside namespaces: the host's own namespace never sees them.
    ip -n "$(ns sw)" link add "$h" type veth peer name eth0 netns "$(ns "$h")"
    ip -n "$(ns sw)" link set "$h" master br0 up
    ip -n "$(ns "$h")" addr add "${IP[$h]}/24" dev eth0
    ip -n "$(ns "$h")" link set eth0 up
    ip -n "$(ns "$h")" link set lo up
    [[ -z "$(ip -n "$(ns "$h")" route show default)" ]] || fail "$h has a default route"
done

# ------------------------------------------------------------------ the cluster

log "ctl: etcd and the Kafka-compatible broker on ${IP[ctl]}"
in_ns ctl env REPRISE_SERVICES_DIR="$TMP/services" REPRISE_SERVICES_HOST="${IP[ctl]}" "${SERVICES_ENV[@]}" \
    REPRISE_STARTUP_TIMEOUT=30 timeout "$(budget 75)" bash deploy/local/services.sh up \
    >/dev/null 2>"$TMP/services.log" || fail "services.sh up failed in ctl"
# Every host reaches ctl over the bridge (no ping needed: bash's /dev/tcp will do).
for h in "${HOSTS[@]}"; do
    wait_until 10 "a link from $h to etcd on ctl" tcp_open "$h" "${IP[ctl]}" "$ETCD_PORT"
done

log "ctl: reprise-controller; load1, load2: reprise-worker"
start controller ctl "$BIN_DIR/reprise-controller" --catalog "$CATALOG" --log "$LOG_URL" \
    --listen "${IP[ctl]}:7100" --http "${IP[ctl]}:7180" --advertise "${IP[ctl]}" \
    --allow-target "${IP[staging]}"
for h in load1 load2; do
    start "worker-$h" "$h" "$BIN_DIR/reprise-worker" --catalog "$CATALOG" \
        --listen "${IP[$h]}:7200" --name "$h"
done

log "prod: the service (reprise-sink :8080); staging: the target (:8080)"
# prod checks the X-Request-Id values 0..REQUESTS (the warm-up request is the last one).
start prod-service prod "$BIN_DIR/reprise-sink" --listen "${IP[prod]}:8080" \
    --check-ids $((REQUESTS + 1))
# staging logs what arrives, one tab-separated line a request, for the checks below.
cat >"$TMP/staging.py" <<'PY'
import http.server, sys, threading
lock = threading.Lock()
out = open(sys.argv[3], "a", buffering=1)
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the workers use it
    disable_nagle_algorithm = True  # else the body waits for the headers' delayed ACK (40 ms)
    def answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fields = (self.client_address[0], self.command, self.path,
                  self.headers.get("X-Reprise-Replay", "-"), self.headers.get("X-Request-Id", "-"),
                  body.decode("utf-8", "replace"))
        with lock:
            out.write("\t".join(fields) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 would drop the workers' connects
Server((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
PY
: >"$TMP/staging.requests"
start staging staging python3 "$TMP/staging.py" "${IP[staging]}" 8080 "$TMP/staging.requests"

wait_until 15 "prod's service on :8080" tcp_open prod "${IP[prod]}" 8080
wait_until 15 "staging on :8080" tcp_open staging "${IP[staging]}" 8080
leading() {
    local metrics
    metrics=$(in_ns ctl curl -sf --max-time 2 "$API/metrics") &&
        awk '$1 == "reprise_controller_leader" && $2 == 1 { found = 1 } END { exit !found }' <<<"$metrics"
}
wait_until 30 "a leading controller" leading
workers_registered() {
    ctl_ workers --json | python3 -c 'import json,sys; ids={w["id"] for w in json.load(sys.stdin)}; sys.exit(ids != {"load1","load2"})'
}
wait_until 30 "load1 and load2 registered in the catalog" workers_registered

log "prod: reprise-capture live on eth0, port 8080, into $LOG_URL"
start capture prod "$BIN_DIR/reprise-capture" --interface eth0 --port 8080 --log "$LOG_URL" \
    --catalog "$CATALOG" --node prod --http "${IP[prod]}:9464" --spool-dir "$TMP/spool"
# Records capture has stored in Kafka, from its metrics (0 while they do not answer).
stored() {
    local metrics
    metrics=$(in_ns prod curl -sf --max-time 2 "http://${IP[prod]}:9464/metrics") || metrics=
    awk '$1 == "reprise_capture_records_stored_total" { n = int($2) } END { print n + 0 }' <<<"$metrics"
}
stored_at_least() { (($(stored) >= $1)); }
# capture logs "capturing" once its pcap handle is open. One request then, before the
# recording starts: once it is in Kafka, capture is live end to end (pcap, parsing, the
# broker), so none of the recorded traffic can be missed.
wait_until 30 "capture opening eth0" grep -q capturing "$TMP/capture.log"
in_ns client curl -sS --fail --max-time 5 -o /dev/null -H "X-Request-Id: $REQUESTS" \
    "http://${IP[prod]}:8080/warm-up" || fail "the warm-up request to prod failed"
wait_until 30 "the warm-up request captured and stored in Kafka" stored_at_least 1
before=$(stored)

# ------------------------------------------------------------------ record

RECORDING=$(ctl_ record start --name netns-rehearsal) || fail "ctl record start failed"
log "recording $RECORDING started; client: $REQUESTS requests to prod"
# Distinct paths (every fourth a POST with a body), ten requests per connection: curl
# keeps one connection for the URLs of one call, so the traffic spreads over partitions
# by connection as production traffic does.
send_batch() {
    local from=$1 to=$2 i args=()
    for ((i = from; i < to; i++)); do
        ((i == from)) || args+=(--next)
        args+=(-sS --fail --max-time 5 -o /dev/null -H "X-Request-Id: $i")
        if ((i % 4 == 3)); then
            args+=(-H 'Content-Type: application/json' --data "{\"order\":$i}"
                "http://${IP[prod]}:8080/api/orders/$i")
        else
            args+=("http://${IP[prod]}:8080/api/items/$i?page=$((i % 7))")
        fi
    done
    in_ns client timeout "$(budget 30)" curl "${args[@]}"
}
for ((i = 0; i < REQUESTS; i++)); do
    if ((i % 4 == 3)); then
        printf 'POST\t/api/orders/%d\t%d\t{"order":%d}\n' "$i" "$i" "$i"
    else
        printf 'GET\t/api/items/%d?page=%d\t%d\t\n' "$i" $((i % 7)) "$i"
    fi
done >"$TMP/expected"
for ((i = 0; i < REQUESTS; i += 10)); do
    send_batch "$i" $((i + 10 < REQUESTS ? i + 10 : REQUESTS)) || fail "the client's requests to prod failed"
done
wait_until 30 "capture storing the $REQUESTS requests" stored_at_least $((before + REQUESTS))
ctl_ record stop "$RECORDING" --json >"$TMP/recording.json" 2>"$TMP/record-stop.err" ||
    fail "ctl record stop failed: $(cat "$TMP/record-stop.err")"

# ------------------------------------------------------------------ replay

log "replaying $RECORDING on load1 and load2 against $TARGET"
replay_rc=0
# --foreground: a Ctrl-C reaches ctl, which cancels the replay and prints its summary.
in_ns ctl timeout --foreground "$(budget 60)" "$BIN_DIR/ctl" --controller "$CONTROLLER" replay \
    --recording "$RECORDING" --target "$TARGET" --json >"$TMP/replay.json" 2>"$TMP/replay.err" ||
    replay_rc=$?
if ((replay_rc != 0)); then
    sed 's/^/  [ctl replay] /' "$TMP/replay.err" >&2
    # The summary, if there is one, in one line: what was sent, what came back, and why
    # it failed.
    [[ ! -s "$TMP/replay.json" ]] || python3 - "$TMP/replay.json" <<'PY' >&2 2>/dev/null || true
import json, sys
s = json.load(open(sys.argv[1]))
kinds = ", ".join(f"{k} {v}" for k, v in s.get("error_kinds", {}).items() if v) or "none"
print(f"  [ctl replay] {s['id']}: {s['state']}, {s['sent']} sent, {s['ok']} ok, "
      f"{s['errors']} errors ({kinds}), {s['http_errors']} http errors; "
      f"error: {s.get('error') or '-'}; breach: {s.get('breach') or '-'}")
PY
    ((replay_rc != 124)) || fail "ctl replay did not end in time"
    fail "ctl replay exited $replay_rc"
fi
REPLAY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$TMP/replay.json")
# The same replay as the controller's stats API serves it (dashboards read this).
in_ns ctl curl -sf --max-time 5 "$API/api/replays/$REPLAY" >"$TMP/api.json" ||
    fail "the stats API has no replay $REPLAY"
in_ns prod curl -sf --max-time 5 "http://${IP[prod]}:8080/_sink/report" >"$TMP/prod.json" ||
    fail "prod's service did not report"

# ------------------------------------------------------------------ checks

python3 - "$TMP" "$REQUESTS" "${IP[load1]}" "${IP[load2]}" "$REPLAY" <<'PY' || fail "the checks above failed"
import collections, json, sys
tmp, n, ip1, ip2, replay = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
problems = []
def check(ok, msg):
    if not ok:
        problems.append(msg)

prod = json.load(open(f"{tmp}/prod.json"))
check(prod["requests"] == n + 1 and prod.get("missing_ids") == 0 and prod.get("duplicate_ids") == 0,
      f"prod served {prod['requests']} requests (missing ids {prod.get('missing_ids')}, "
      f"duplicates {prod.get('duplicate_ids')}), expected {n} and the warm-up")

# What the capture missed while the recording was open (its ledger): nothing.
recording = json.load(open(f"{tmp}/recording.json"))
check(recording["record_count"] == n, f"the recording holds {recording['record_count']} records, expected {n}")
nodes = (recording.get("ledger") or {}).get("nodes", [])
check([e["node"] for e in nodes] == ["prod"], f"the ledger names {[e['node'] for e in nodes]}, expected prod")
missed = {k: sum(e.get(k, 0) for e in nodes)
          for k in ("kernel_drops", "own_drops", "gaps", "resyncs", "truncated_bodies", "malformed")}
check(not any(missed.values()), f"the capture missed traffic: {missed}")

summary = json.load(open(f"{tmp}/replay.json"))
check(summary["records"] == n, f"the recording holds {summary['records']} records, expected {n}")
check(summary["sent"] == n and summary["ok"] == n and summary["errors"] == 0 and summary["http_errors"] == 0,
      f"replay: sent {summary['sent']}, ok {summary['ok']}, errors {summary['errors']}, "
      f"http errors {summary['http_errors']}; expected {n} sent and ok")

# Staging's view: each recorded request once, as recorded, from the load hosts.
expected = collections.Counter(tuple(l.rstrip("\n").split("\t")) for l in open(f"{tmp}/expected"))
arrived = [l.rstrip("\n").split("\t") for l in open(f"{tmp}/staging.requests")]
got = collections.Counter((m, p, rid, body) for _, m, p, _, rid, body in arrived)
check(len(arrived) == n, f"staging received {len(arrived)} requests, expected {n}")
missing, extra = expected - got, got - expected
check(not missing, f"{sum(missing.values())} recorded requests never reached staging, e.g. {sorted(missing)[:3]}")
check(not extra, f"{sum(extra.values())} requests reached staging unrecorded or twice, e.g. {sorted(extra)[:3]}")
markers = collections.Counter(a[3] for a in arrived)
check(set(markers) == {replay}, f"X-Reprise-Replay on staging: {dict(markers)}, expected {replay} on all")
by_ip = collections.Counter(a[0] for a in arrived)
check(set(by_ip) == {ip1, ip2}, f"staging's clients: {dict(by_ip)}, expected both {ip1} (load1) and {ip2} (load2)")

# The controller's view: a part on each worker, done, whose sends match staging's counts.
api = json.load(open(f"{tmp}/api.json"))
parts = {}
for w in api.get("workers", []):
    parts.setdefault(w["id"], []).append(w)
check(set(parts) == {"load1", "load2"}, f"the stats API shows parts on {sorted(parts)}, expected load1 and load2")
for wid, ip in (("load1", ip1), ("load2", ip2)):
    ws = parts.get(wid, [])
    sent = sum(int(w.get("sent", 0)) for w in ws)
    check(all(w.get("state") == "done" for w in ws), f"{wid}'s parts: {[w.get('state') for w in ws]}, expected done")
    check(sent > 0 and sent == by_ip[ip], f"{wid} sent {sent} by the stats API, staging got {by_ip[ip]} from {ip}")

if problems:
    for p in problems:
        print(f"netns-cluster: check failed: {p}", file=sys.stderr)
    sys.exit(1)
paths = len({p for _, p, _, _ in expected})
print(f"recording  {summary['recording_id']}: {n} requests captured live on prod ({paths} distinct paths), "
      f"over {len([r for r in recording['ranges'] if r['end'] > r['start']])} partitions; missed: none")
print(f"replay     {replay}: {summary['sent']} sent, {summary['ok']} ok, 0 errors, "
      f"{summary['duration_s']:.1f}s, latency p99 {summary.get('latency_ms', {}).get('p99', 0):.1f} ms")
print(f"workers    load1 sent {by_ip[ip1]}, load2 sent {by_ip[ip2]} (stats API = staging's counts)")
print(f"staging    every recorded request once: {n} requests, methods, paths, bodies and marker as recorded")
PY
