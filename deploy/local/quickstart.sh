#!/usr/bin/env bash
# The newcomer's first command: installs what is missing, builds Reprise, and runs
# `ctl demo` (record live traffic to a demo service, replay it five times over, all on
# this machine with the file-backed log and catalog). Extra arguments go to `ctl demo`.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/setup.sh
cargo build --release --bin ctl
ctl="${CARGO_TARGET_DIR:-target}/release/ctl"
# Live capture needs root (or CAP_NET_RAW).
if [ "$(id -u)" -ne 0 ]; then
    exec sudo "$ctl" demo "$@"
fi
exec "$ctl" demo "$@"
