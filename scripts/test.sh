#!/usr/bin/env bash
# Runs every test: the workspace's tests, then librdkafka's own test suite on its
# allow-list. Installs what the black-box tests drive when it is missing: kcat,
# Prometheus (prometheus, promtool) and docker-compose (to validate the compose file)
# from Debian, and the Python clients from PyPI (pinned in
# compat-tests/python/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! python3 -c "import kafka, confluent_kafka" >/dev/null 2>&1; then
    echo "installing Python Kafka clients"
    python3 -m pip install -q --disable-pip-version-check -r compat-tests/python/requirements.txt
fi

cargo test --workspace "$@"

# librdkafka's own integration tests on the allow-list (compat-tests/librdkafka).
compat-tests/librdkafka/run.sh
