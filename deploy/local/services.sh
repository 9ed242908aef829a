#!/usr/bin/env bash
# Reprise local backing services: a real etcd 3.4 and a Kafka-wire-compatible
# broker (noida-db), both bound to 127.0.0.1 only (or to REPRISE_SERVICES_HOST),
# for the test suite and for local use.
#
# Usage: services.sh up|down|status|env
#        services.sh stop|start etcd|kafka
#
#   up      install what is missing, start both servers with fresh (wiped) data
#           dirs, wait until they answer their protocols, write $DIR/env and
#           print the env lines on stdout. Servers that are already running and
#           healthy are left alone.
#   down    stop both (SIGTERM, bounded wait, then SIGKILL). No-op if nothing
#           runs. Always exits 0 unless a process refuses to die.
#   status  report each server; exit 0 only if both are running and healthy.
#   env     print the env lines (KAFKA_BOOTSTRAP=..., ETCD_ENDPOINTS=...).
#   stop etcd|kafka
#           stop that one server (as down does), keeping its data dir: for
#           fault tests that take a server away and bring it back.
#   start etcd|kafka
#           start that one server again on the same ports WITHOUT wiping its
#           data dir, and wait until it answers. A server already running and
#           healthy is left alone.
#
# Environment:
#   REPRISE_SERVICES_DIR    state dir (default /tmp/reprise-services)
#   REPRISE_SERVICES_HOST   address both servers bind and advertise (default
#                           127.0.0.1; netns-cluster.sh gives a namespace's own)
#   REPRISE_ETCD_PORT       etcd client port (default 12379)
#   REPRISE_ETCD_PEER_PORT  etcd peer port (default 12380)
#   REPRISE_KAFKA_PORT      Kafka port (default 19092)
#   REPRISE_PYTHON          python interpreter used to install/locate noida-db
#                           (default python3)
#   REPRISE_NOIDA_BIN       explicit path to the noida-db binary (skips pip)
#   REPRISE_STARTUP_TIMEOUT seconds to wait for each server (default 30)
#   REPRISE_ETCD_TLS_DIR    serve etcd over TLS with client certificates: the dir
#                           holds ca.pem, server.pem, server.key (etcd's certificate)
#                           and client.pem, client.key (this script's health checks)
#
# Usage from the test suite:
#   eval "$(deploy/local/services.sh up)"   # or: set -a; . /tmp/reprise-services/env
#
# All human-readable messages go to stderr; only the env lines go to stdout.
set -euo pipefail

STATE_DIR="${REPRISE_SERVICES_DIR:-/tmp/reprise-services}"
HOST="${REPRISE_SERVICES_HOST:-127.0.0.1}"
ETCD_PORT="${REPRISE_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${REPRISE_ETCD_PEER_PORT:-12380}"
KAFKA_PORT="${REPRISE_KAFKA_PORT:-19092}"
PYTHON="${REPRISE_PYTHON:-python3}"
STARTUP_TIMEOUT="${REPRISE_STARTUP_TIMEOUT:-30}"
ETCD_TLS_DIR="${REPRISE_ETCD_TLS_DIR:-}"
ETCD_SCHEME=http
[[ -z "$ETCD_TLS_DIR" ]] || ETCD_SCHEME=https
STOP_TIMEOUT=15
NOIDA_VERSION=0.2.3

ETCD_DATA="$STATE_DIR/etcd-data"
ETCD_LOG="$STATE_DIR/etcd.log"
ETCD_PIDFILE="$STATE_DIR/etcd.pid"
KAFKA_DATA="$STATE_DIR/kafka-data"
KAFKA_LOG="$STATE_DIR/kafka.log"
KAFKA_PIDFILE="$STATE_DIR/kafka.pid"
ENV_FILE="$STATE_DIR/env"

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $(basename "$0") up|down|status|env" >&2
    echo "       $(basename "$0") stop|start etcd|kafka" >&2
    exit 2
}

for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$KAFKA_PORT" "$STARTUP_TIMEOUT"; do
    [[ "$p" =~ ^[0-9]+$ ]] || die "not a number: '$p'"
done

env_lines() {
    printf 'KAFKA_BOOTSTRAP=%s:%s\n' "$HOST" "$KAFKA_PORT"
    printf 'ETCD_ENDPOINTS=%s:%s\n' "$HOST" "$ETCD_PORT"
}

# ---------------------------------------------------------------- installing

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_CREATED=0
cleanup_policy_rc() {
    if [[ $POLICY_RC_CREATED -eq 1 ]]; then
        as_root rm -f "$POLICY_RC" || true
        POLICY_RC_CREATED=0
    fi
}

ensure_apt_packages() {
    local pkgs=()
    command -v etcd >/dev/null 2>&1 || pkgs+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || pkgs+=(etcd-client)
    if [[ -z "${REPRISE_NOIDA_BIN:-}" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || pkgs+=(python3 python3-pip)
        if command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
            pkgs+=(python3-pip)
        fi
    fi
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${pkgs[*]} and apt-get is not available"
    log "installing ${pkgs[*]} (apt)"
    # Keep the package's own system etcd (port 2379) from being auto-started;
    # we never use it. Only done if no policy is in place already.
    if [[ ! -e "$POLICY_RC" ]]; then
        trap cleanup_policy_rc EXIT
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY_RC" >/dev/null
        as_root chmod 755 "$POLICY_RC"
        POLICY_RC_CREATED=1
    fi
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${pkgs[@]}" >&2
    cleanup_policy_rc
    command -v etcd >/dev/null 2>&1 || die "etcd still not found after installing etcd-server"
    command -v etcdctl >/dev/null 2>&1 || die "etcdctl still not found after installing etcd-client"
}

noida_installed_version() {
    "$PYTHON" -c 'import importlib.metadata as m; print(m.version("noida-db"))' 2>/dev/null || true
}

ensure_noida() {
    [[ -n "${REPRISE_NOIDA_BIN:-}" ]] && return 0
    if [[ "$(noida_installed_version)" == "$NOIDA_VERSION" ]]; then
        return 0
    fi
    log "installing noida-db==$NOIDA_VERSION (pip)"
    local out
    if ! out=$("$PYTHON" -m pip install --disable-pip-version-check "noida-db==$NOIDA_VERSION" 2>&1); then
        if grep -qi 'externally-managed' <<<"$out"; then
            log "pip refused (externally managed environment); retrying with --break-system-packages"
            "$PYTHON" -m pip install --disable-pip-version-check --break-system-packages \
                "noida-db==$NOIDA_VERSION" >&2
        else
            printf '%s\n' "$out" >&2
            die "pip install noida-db==$NOIDA_VERSION failed"
        fi
    else
        printf '%s\n' "$out" | tail -n 3 >&2
    fi
    [[ "$(noida_installed_version)" == "$NOIDA_VERSION" ]] || die "noida-db==$NOIDA_VERSION not importable by $PYTHON after install"
}

# The binary itself, not the console script (the Python wrapper does not
# forward signals, so SIGTERM would orphan the real server).
noida_bin() {
    if [[ -n "${REPRISE_NOIDA_BIN:-}" ]]; then
        printf '%s\n' "$REPRISE_NOIDA_BIN"
        return 0
    fi
    local dir
    dir=$("$PYTHON" -c 'import noida_db,os;print(os.path.dirname(noida_db.__file__))') \
        || die "cannot import noida_db with $PYTHON"
    printf '%s\n' "$dir/noida-db"
}

# ------------------------------------------------------------ process helpers

# argv of a pid, one argument per line (empty if gone).
proc_args() { tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" || true; }

# Is pid a live server of kind $2 (etcd|noida-db) using data dir $3?
pid_is_ours() {
    local pid=$1 kind=$2 data=$3 args
    [[ -n "$pid" && "$pid" =~ ^[0-9]+$ ]] || return 1
    args=$(proc_args "$pid")
    [[ -n "$args" ]] || return 1
    [[ "$(basename -- "$(head -n 1 <<<"$args")")" == "$kind" ]] || return 1
    grep -qxF -- "$data" <<<"$args"
}

# All live pids of kind $1 using data dir $2 (pid file first, then a /proc
# scan so that strays without a pid file are found too).
find_pids() {
    local kind=$1 data=$2 pidfile=$3 p pid
    local -A seen=()
    if [[ -f "$pidfile" ]]; then
        pid=$(<"$pidfile")
        if pid_is_ours "$pid" "$kind" "$data"; then
            seen[$pid]=1
            echo "$pid"
        fi
    fi
    # Cheap pre-filter: processes having the data dir as an exact argument.
    while IFS= read -r p; do
        pid=${p#/proc/}
        pid=${pid%/cmdline}
        [[ -n "${seen[$pid]:-}" ]] && continue
        if pid_is_ours "$pid" "$kind" "$data"; then
            seen[$pid]=1
            echo "$pid"
        fi
    done < <(grep -lzxF -- "$data" /proc/[0-9]*/cmdline 2>/dev/null || true)
}

# The live server of ours (pid file first, else a stray found by scanning).
running_pid() {
    find_pids "$@" | head -n 1
}

any_alive() {
    local p
    for p in "$@"; do
        kill -0 "$p" 2>/dev/null && return 0
    done
    return 1
}

# signal_all SIG PID... : each server was started as a session/process-group
# leader (setsid), so signal its whole group (catches any helper children);
# fall back to the pid alone otherwise.
signal_all() {
    local sig=$1 p pgid stat rest
    shift
    for p in "$@"; do
        # pgrp is the 3rd field after "(comm) " in /proc/PID/stat (no ps(1)
        # needed: minimal Debian images lack procps).
        pgid=
        if stat=$(cat "/proc/$p/stat" 2>/dev/null); then
            rest=${stat##*) }
            read -r _ _ pgid _ <<<"$rest"
        fi
        if [[ "$pgid" == "$p" ]]; then
            kill "-$sig" -- "-$p" 2>/dev/null || true
        else
            kill "-$sig" "$p" 2>/dev/null || true
        fi
    done
}

# terminate LABEL PID... : SIGTERM, bounded wait, then SIGKILL.
terminate() {
    local label=$1 p deadline
    shift
    [[ $# -gt 0 ]] || return 0
    log "stopping $label (pid $*)"
    signal_all TERM "$@"
    # A server stopped by SIGSTOP (fault tests) acts on SIGTERM only once continued.
    signal_all CONT "$@"
    deadline=$((SECONDS + STOP_TIMEOUT))
    while any_alive "$@" && ((SECONDS < deadline)); do sleep 0.1; done
    if any_alive "$@"; then
        log "$label did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
        signal_all KILL "$@"
        deadline=$((SECONDS + 5))
        while any_alive "$@" && ((SECONDS < deadline)); do sleep 0.1; done
        if any_alive "$@"; then
            log "$label (pid $*) survived SIGKILL"
            return 1
        fi
    fi
}

# stop_service NAME KIND DATA PIDFILE
stop_service() {
    local name=$1 kind=$2 data=$3 pidfile=$4 pids
    mapfile -t pids < <(find_pids "$kind" "$data" "$pidfile")
    terminate "$name" "${pids[@]}" || return 1
    rm -f "$pidfile"
}

# Is something (anything) accepting connections on HOST:$1?
port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

show_log_tail() {
    local name=$1 logfile=$2
    if [[ -s "$logfile" ]]; then
        log "last lines of $logfile:"
        tail -n 40 "$logfile" | sed "s/^/  [$name] /" >&2
    else
        log "$logfile is empty or missing"
    fi
}

# ------------------------------------------------------------------ probes

etcdctl_() {
    # Drop any ETCDCTL_* from the caller's environment (etcdctl treats them as
    # flag values and complains when they clash with ours).
    (
        while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^ETCDCTL_' || true)
        local tls=()
        [[ -z "$ETCD_TLS_DIR" ]] || tls=(--cacert "$ETCD_TLS_DIR/ca.pem" \
            --cert "$ETCD_TLS_DIR/client.pem" --key "$ETCD_TLS_DIR/client.key")
        ETCDCTL_API=3 exec etcdctl --endpoints="$ETCD_SCHEME://$HOST:$ETCD_PORT" "${tls[@]}" \
            --dial-timeout=1s --command-timeout=3s "$@"
    )
}

etcd_healthy() { etcdctl_ endpoint health >/dev/null 2>&1; }

# Sends a Kafka ApiVersions v0 request and checks for a well-formed reply with
# the same correlation id and error_code 0.
kafka_healthy() {
    "$PYTHON" - "$HOST" "$KAFKA_PORT" >/dev/null 2>&1 <<'PY'
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = b"reprise-services"
corr = 0x5EED
body = struct.pack(">hhih", 18, 0, corr, len(client)) + client
with socket.create_connection((host, port), timeout=2) as s:
    s.settimeout(2)
    s.sendall(struct.pack(">i", len(body)) + body)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                sys.exit(1)
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", read(4))
    if size < 6 or size > 1 << 20:
        sys.exit(1)
    resp = read(size)
    got_corr, err = struct.unpack(">ih", resp[:6])
    sys.exit(0 if (got_corr == corr and err == 0) else 1)
PY
}

# ------------------------------------------------------------------ starting

# launch LOGFILE CMD... : start CMD detached (own session, stdin /dev/null,
# output to LOGFILE) and print its pid. In a non-interactive shell the
# background subshell is not a process-group leader, so setsid(1) does not
# fork and the pid printed is the server's own pid after the execs.
launch() {
    local logfile=$1
    shift
    (
        cd "$STATE_DIR"
        # Close every inherited fd above 2 (the state lock on fd 9, bash's
        # saved copies of the caller's stdout, stray pipes of whoever runs us)
        # so that the servers never hold the lock or a caller's pipe open.
        for fd in "/proc/$BASHPID/fd"/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        # etcd reads ETCD_* variables as flags; keep the caller's out.
        while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep -E '^ETCD(CTL)?_' || true)
        # etcd 3.4 refuses to start on arm64 unless told it may.
        if [[ "$(uname -m)" == aarch64 ]]; then export ETCD_UNSUPPORTED_ARCH=arm64; fi
        exec setsid nohup "$@" </dev/null >"$logfile" 2>&1
    ) &
    echo $!
}

# wait_ready NAME KIND DATA PIDFILE LOGFILE PROBE
wait_ready() {
    local name=$1 kind=$2 data=$3 pidfile=$4 logfile=$5 probe=$6 pid start launched
    start=$SECONDS
    launched=$(<"$pidfile")
    local deadline=$((SECONDS + STARTUP_TIMEOUT))
    while :; do
        pid=$(<"$pidfile")
        if ! pid_is_ours "$pid" "$kind" "$data"; then
            # Covers the (unexpected) case where setsid forked: find the real pid.
            pid=$(find_pids "$kind" "$data" "$pidfile" | head -n 1)
            if [[ -n "$pid" ]]; then
                echo "$pid" >"$pidfile"
            elif ! kill -0 "$(<"$pidfile")" 2>/dev/null; then
                log "$name exited during startup"
                show_log_tail "$name" "$logfile"
                rm -f "$pidfile"
                return 1
            fi
        fi
        if [[ -n "$pid" ]] && $probe; then
            log "$name is ready on $HOST (pid $pid, $((SECONDS - start))s)"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            log "$name did not become ready within ${STARTUP_TIMEOUT}s"
            show_log_tail "$name" "$logfile"
            local pids
            mapfile -t pids < <(find_pids "$kind" "$data" "$pidfile")
            if kill -0 "$launched" 2>/dev/null; then pids+=("$launched"); fi
            terminate "$name" "${pids[@]}" || true
            rm -f "$pidfile"
            return 1
        fi
        sleep 0.2
    done
}

# start_etcd fresh|keep : fresh wipes the data dir first.
start_etcd() {
    local mode=${1:-fresh}
    if port_in_use "$ETCD_PORT" || port_in_use "$ETCD_PEER_PORT"; then
        die "port $ETCD_PORT or $ETCD_PEER_PORT on $HOST is already in use by another process; set REPRISE_ETCD_PORT / REPRISE_ETCD_PEER_PORT"
    fi
    [[ "$mode" == keep ]] || rm -rf "$ETCD_DATA"
    mkdir -p "$ETCD_DATA"
    chmod 700 "$ETCD_DATA"
    local client="$ETCD_SCHEME://$HOST:$ETCD_PORT" peer="http://$HOST:$ETCD_PEER_PORT" tls=()
    [[ -z "$ETCD_TLS_DIR" ]] || tls=(--cert-file "$ETCD_TLS_DIR/server.pem" \
        --key-file "$ETCD_TLS_DIR/server.key" --trusted-ca-file "$ETCD_TLS_DIR/ca.pem" --client-cert-auth)
    log "starting etcd on $client (peer $ETCD_PEER_PORT), log $ETCD_LOG"
    launch "$ETCD_LOG" etcd "${tls[@]}" \
        --name reprise \
        --data-dir "$ETCD_DATA" \
        --listen-client-urls "$client" \
        --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" \
        --initial-advertise-peer-urls "$peer" \
        --initial-cluster "reprise=$peer" \
        --initial-cluster-state new \
        --initial-cluster-token reprise-local \
        --logger zap --log-outputs stderr >"$ETCD_PIDFILE"
    wait_ready etcd etcd "$ETCD_DATA" "$ETCD_PIDFILE" "$ETCD_LOG" etcd_healthy
}

# start_kafka fresh|keep : fresh wipes the data dir first.
start_kafka() {
    local mode=${1:-fresh} bin
    bin=$(noida_bin)
    [[ -f "$bin" ]] || die "noida-db binary not found at $bin"
    [[ -x "$bin" ]] || chmod 755 "$bin" 2>/dev/null || die "$bin is not executable"
    if port_in_use "$KAFKA_PORT"; then
        die "port $KAFKA_PORT on $HOST is already in use by another process; set REPRISE_KAFKA_PORT"
    fi
    [[ "$mode" == keep ]] || rm -rf "$KAFKA_DATA"
    mkdir -p "$KAFKA_DATA"
    log "starting noida-db (kafka) on $HOST:$KAFKA_PORT, log $KAFKA_LOG"
    launch "$KAFKA_LOG" "$bin" start --only kafka \
        --host "$HOST" --kafka-port "$KAFKA_PORT" \
        --data-dir "$KAFKA_DATA" >"$KAFKA_PIDFILE"
    wait_ready kafka noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE" "$KAFKA_LOG" kafka_healthy
}

# ------------------------------------------------------------------ commands

lock_state() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 120 9 || die "could not lock $STATE_DIR/.lock (another services.sh running?)"
    fi
}

cmd_up() {
    lock_state
    local etcd_ok=0 kafka_ok=0 pid
    pid=$(running_pid etcd "$ETCD_DATA" "$ETCD_PIDFILE")
    if [[ -n "$pid" ]] && command -v etcdctl >/dev/null 2>&1 && etcd_healthy; then
        etcd_ok=1
        log "etcd already running and healthy (pid $pid)"
    fi
    pid=$(running_pid noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE")
    if [[ -n "$pid" ]] && kafka_healthy; then
        kafka_ok=1
        log "kafka (noida-db) already running and healthy (pid $pid)"
    fi

    if [[ $etcd_ok -eq 0 || $kafka_ok -eq 0 ]]; then
        ensure_apt_packages
        [[ $kafka_ok -eq 1 ]] || ensure_noida
    fi
    if [[ $etcd_ok -eq 0 ]]; then
        stop_service etcd etcd "$ETCD_DATA" "$ETCD_PIDFILE"
        start_etcd || die "etcd failed to start"
    fi
    if [[ $kafka_ok -eq 0 ]]; then
        stop_service kafka noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE"
        start_kafka || die "kafka (noida-db) failed to start"
    fi

    env_lines >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
    env_lines
}

cmd_down() {
    [[ -d "$STATE_DIR" ]] || return 0
    lock_state
    local kpids epids
    mapfile -t kpids < <(find_pids noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE")
    mapfile -t epids < <(find_pids etcd "$ETCD_DATA" "$ETCD_PIDFILE")
    # Both at once: noida-db takes ~1.5 s to exit (it snapshots on SIGTERM).
    local label=()
    [[ ${#kpids[@]} -gt 0 ]] && label+=(kafka)
    [[ ${#epids[@]} -gt 0 ]] && label+=(etcd)
    terminate "${label[*]}" "${kpids[@]}" "${epids[@]}" || return 1
    rm -f "$KAFKA_PIDFILE" "$ETCD_PIDFILE"
}

cmd_stop() {
    lock_state
    case "$1" in
        etcd) stop_service etcd etcd "$ETCD_DATA" "$ETCD_PIDFILE" ;;
        kafka) stop_service kafka noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE" ;;
    esac
}

cmd_start() {
    lock_state
    local pid
    case "$1" in
        etcd)
            pid=$(running_pid etcd "$ETCD_DATA" "$ETCD_PIDFILE")
            if [[ -n "$pid" ]] && command -v etcdctl >/dev/null 2>&1 && etcd_healthy; then
                log "etcd already running and healthy (pid $pid)"
                return 0
            fi
            ensure_apt_packages
            stop_service etcd etcd "$ETCD_DATA" "$ETCD_PIDFILE"
            start_etcd keep || die "etcd failed to start"
            ;;
        kafka)
            pid=$(running_pid noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE")
            if [[ -n "$pid" ]] && kafka_healthy; then
                log "kafka (noida-db) already running and healthy (pid $pid)"
                return 0
            fi
            ensure_noida
            stop_service kafka noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE"
            start_kafka keep || die "kafka (noida-db) failed to start"
            ;;
    esac
}

cmd_status() {
    local rc=0 pid
    pid=$(running_pid etcd "$ETCD_DATA" "$ETCD_PIDFILE")
    if [[ -z "$pid" ]]; then
        echo "etcd:  not running"
        rc=1
    elif command -v etcdctl >/dev/null 2>&1 && etcd_healthy; then
        echo "etcd:  running (pid $pid), healthy, $HOST:$ETCD_PORT"
    else
        echo "etcd:  running (pid $pid), NOT healthy on $HOST:$ETCD_PORT"
        rc=1
    fi
    pid=$(running_pid noida-db "$KAFKA_DATA" "$KAFKA_PIDFILE")
    if [[ -z "$pid" ]]; then
        echo "kafka: not running"
        rc=1
    elif kafka_healthy; then
        echo "kafka: running (pid $pid), healthy, $HOST:$KAFKA_PORT (noida-db)"
    else
        echo "kafka: running (pid $pid), NOT healthy on $HOST:$KAFKA_PORT (noida-db)"
        rc=1
    fi
    return $rc
}

case "${1:-} ${2:-}" in
    "stop etcd" | "stop kafka") [[ $# -eq 2 ]] || usage; cmd_stop "$2"; exit ;;
    "start etcd" | "start kafka") [[ $# -eq 2 ]] || usage; cmd_start "$2"; exit ;;
esac
[[ $# -eq 1 ]] || usage
case "$1" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) env_lines ;;
    -h | --help | help) sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) usage ;;
esac
