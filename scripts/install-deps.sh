#!/usr/bin/env bash
# Installs what building and testing Sluice needs on a fresh Debian machine, when it is
# missing: protoc and the well-known protobuf types (the etcd-client crate compiles
# etcd's API at build time), etcd (cluster tests start a real one), kcat, Prometheus
# (prometheus, promtool) and docker-compose (to validate the compose file) from Debian,
# and the Python clients from PyPI (pinned in compat-tests/python/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    # Tests start their own etcd on free ports; a system etcd Debian may start is not used.
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! python3 -c "import kafka, confluent_kafka" >/dev/null 2>&1; then
    echo "installing Python Kafka clients"
    python3 -m pip install -q --disable-pip-version-check -r compat-tests/python/requirements.txt
fi
