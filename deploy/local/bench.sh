#!/usr/bin/env bash
# Reproduces every figure of docs/BENCHMARKS.md: builds the release binaries and runs
# `reprise-bench all` (about 10 minutes on 2 cores). Pass `--gor PATH` to include a
# GoReplay binary in the side-by-side run, `--kafka HOST:PORT` for the Kafka figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
cargo build --release --bins
"${CARGO_TARGET_DIR:-target}/release/reprise-bench" all "$@"
