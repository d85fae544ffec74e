#!/usr/bin/env bash
# Direct I/O against buffered I/O, side by side in one run (issue 16): two sluice
# brokers from the same release build on the same disk, A with direct I/O (the default)
# and B with --io-direct=false, driven alternately by benches/compare.sh for --rounds
# rounds. The page cache is dropped before each consume (run as root), so the 2 GiB
# backlog is cold for both. Prints compare.sh's table: throughput, broker CPU per MB,
# broker RSS peak and latency for each mode, with the disk's buffered and O_DIRECT
# write+fdatasync rates measured at the start.
#
#   benches/direct-io.sh [--rounds 3] [--scenarios abcdef] [-- extra sluice flags]
#
# Data directories live under ${TMPDIR:-/tmp} (the disk being measured) and are removed
# at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
scenarios=abcdef
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --scenarios) scenarios=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "usage: $0 [--rounds N] [--scenarios abcdef] [-- sluice flags]" >&2; exit 2 ;;
    esac
done
cargo build --quiet --release -p sluice
work=$(mktemp -d -p "${TMPDIR:-/tmp}" sluice-direct-io.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # name port metrics-port flags...
    local name=$1 port=$2 metrics=$3
    shift 3
    mkdir -p "$work/$name"
    target/release/sluice --data-dir "$work/$name" --listen "127.0.0.1:$port" \
        --metrics-addr "127.0.0.1:$metrics" "$@" "${extra[@]}" >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do
        grep -q "sluice is ready" "$work/$name.log" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "broker $name did not start:" >&2
    cat "$work/$name.log" >&2
    exit 1
}

start direct 19192 19744
start buffered 19193 19745 --io-direct=false
grep -h "log files:" "$work/direct.log" "$work/buffered.log" | sed 's/\x1b\[[0-9;]*m//g'
echo "A = direct I/O (pid ${pids[0]}), B = buffered (pid ${pids[1]})"
benches/compare.sh --rounds "$rounds" --scenarios "$scenarios" --cold \
    --pid-a "${pids[0]}" --pid-b "${pids[1]}" 127.0.0.1:19192 127.0.0.1:19193
echo
for m in 19744 19745; do
    echo "metrics of 127.0.0.1:$m:"
    curl -s "127.0.0.1:$m/metrics" | grep -E '^sluice_storage_(io_mode|log_cache|direct_)' || true
done
