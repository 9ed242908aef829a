#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts the real test servers (etcd
# and a Kafka-compatible broker on 127.0.0.1), runs every unit and integration test,
# and stops the servers again.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/setup.sh
services=deploy/local/services.sh
trap 'bash "$services" down' EXIT
set -a
eval "$(bash "$services" up)"
set +a
# Every suite runs even after one fails, so that a CI run names every failure.
cargo test --workspace --all-targets --no-fail-fast "$@"
