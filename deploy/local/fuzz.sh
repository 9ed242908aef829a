#!/usr/bin/env bash
# Fuzzing runs of every fuzz target (HTTP framer, TCP reassembler, access-log parsers,
# HTTP/2 decoder, GoReplay reader). Usage: fuzz.sh [SECONDS_PER_TARGET] (default 20):
# CI runs 15 s each, docs/TESTING.md has the results of 600 s each. The corpus of each
# target is kept in its crate's fuzz/corpus/ (not committed), so a later run starts
# where this one ended.
# Needs cargo-fuzz, which it installs when missing; the sanitizer build needs nightly
# features, enabled here with RUSTC_BOOTSTRAP on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
# One target directory for both fuzz crates: the sanitizer build of the shared
# dependencies happens once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
for target in capture:http_framer capture:reassembler capture:access_log capture:h2_connection store:gor_reader; do
    crate="${target%%:*}"
    name="${target##*:}"
    echo "fuzz: $crate/$name for ${seconds}s" >&2
    log="$(mktemp)"
    # On success libFuzzer's last status line (runs, coverage, corpus, exec/s) and its
    # total; enough to see why on failure (a build error or a crash).
    if (cd "$crate" && cargo fuzz run "$name" -- -max_total_time="$seconds" -rss_limit_mb=2048) >"$log" 2>&1; then
        grep -E '^#[0-9]+' "$log" | tail -n 1
        grep -E '^Done [0-9]+ runs' "$log"
        rm -f "$log"
    else
        tail -n 80 "$log"
        rm -f "$log"
        exit 1
    fi
done
