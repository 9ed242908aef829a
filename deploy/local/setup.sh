#!/usr/bin/env bash
# Installs the system packages Reprise builds and tests with (Debian/Ubuntu).
# Safe to run again: it installs only what is missing.
set -euo pipefail

# prometheus (promtool) and systemd (systemd-analyze): deploy/check.sh. chromium: the
# dashboard test renders the page in a real browser. iproute2 (ip netns):
# deploy/local/netns-cluster.sh. apache2-bin and nghttp2-client: a server that takes an
# h2c upgrade (nginx does not) and a client that asks for one, in the HTTP/2 capture test.
packages=(protobuf-compiler libprotobuf-dev libpcap-dev libssl-dev pkg-config python3 python3-pip python3-yaml curl tcpdump wrk nginx apache2-utils apache2-bin nghttp2-client prometheus systemd chromium iproute2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}" >&2
    # Services that packages would start on install (nginx on port 80) stay stopped: the
    # tests start their own servers on loopback ports.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        trap '$SUDO rm -f "$policy"' EXIT
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: no Rust toolchain found. Install Rust 1.89 or newer with rustup, then run this again." >&2
    exit 1
fi
