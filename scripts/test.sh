#!/usr/bin/env bash
# Runs every test. Installs what the black-box tests drive when it is missing: kcat
# (Debian) and the Python clients (PyPI, pinned in compat-tests/python/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null 2>&1; then
    echo "installing kcat"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq kcat
fi
if ! python3 -c "import kafka, confluent_kafka" >/dev/null 2>&1; then
    echo "installing Python Kafka clients"
    python3 -m pip install -q --disable-pip-version-check -r compat-tests/python/requirements.txt
fi

cargo test --workspace "$@"
