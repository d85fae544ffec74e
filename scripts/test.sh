#!/usr/bin/env bash
# Runs every test: the workspace's tests (cluster tests start a real etcd), then
# librdkafka's own test suite on its allow-list. Installs what building and the
# black-box tests need when it is missing (scripts/install-deps.sh: protoc, etcd, kcat,
# Prometheus, docker-compose, the Python clients).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo test --workspace "$@"

# librdkafka's own integration tests on the allow-list (compat-tests/librdkafka).
compat-tests/librdkafka/run.sh
