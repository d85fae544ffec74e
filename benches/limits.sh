#!/usr/bin/env bash
# One broker's limits (issue 17), on one release broker with the machine's open-file
# limit, for --rounds rounds (default 3), each scenario once per round in turn:
#
#   standard   sluice-bench produce to a 6-partition topic (1 producer, acks=1)
#   partitions the same to a 10,000-partition topic (made once and kept across rounds:
#              deleting 10,000 partitions and making 10,000 more at once measures
#              ext4, which then skips every inode freed in the last minutes on each
#              allocation; it took 31 s to make the topic)
#   idle       the standard run while 9,900 idle connections are open (each answered
#              one ApiVersions first), with 100 producers instead of one
#   raw-*      the standard and partitions runs again with sluice-bench --raw (Produce
#              requests encoded once, as many partitions' batches as fit in 1 MB), so
#              the broker's cost is measured rather than librdkafka's: raw-standard
#              sends 256-record batches on 2 connections, raw-partitions one-record
#              batches (what librdkafka makes of keyed records over 10,000 partitions)
#              and raw-part-100 100-record batches to the 10,000 partitions; the raw
#              runs are compared with raw-standard
#
# Prints each run's MB/s, every scenario's median as a ratio of the standard median,
# the broker's RSS peak and descriptors after each run, and the start-up time with the
# 10,000 partitions on disk (median of 3 restarts).
#
#   benches/limits.sh [--rounds 3] [--duration 10]
#
# Needs confluent-kafka (for the idle connections) and builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
duration=10
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--duration S]" >&2; exit 2 ;;
    esac
done
cargo build --quiet --release -p sluice -p sluice-benches
work=$(mktemp -d -p "${TMPDIR:-/tmp}" sluice-limits.XXXXXX)
port=$((20000 + RANDOM % 20000))
metrics=$((port + 1))
pid=
idle_pid=
cleanup() {
    [ -n "$idle_pid" ] && kill "$idle_pid" 2>/dev/null || true
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # prints the start-up time in ms
    local t0 t1
    t0=$(date +%s%N)
    target/release/sluice --data-dir "$work/data" --listen "127.0.0.1:$port" \
        --metrics-addr "127.0.0.1:$metrics" >"$work/out" 2>"$work/log" &
    pid=$!
    until grep -q "sluice listening on" "$work/out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
        sleep 0.01
    done
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
stop() {
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    pid=
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
fds() { ls "/proc/$pid/fd" | wc -l; }
rss_mib() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$pid/status"; }

start >/dev/null
sed 's/\x1b\[[0-9;]*m//g' "$work/log" | grep -E "open-file limit|descriptor budget" | sed 's/^.*INFO //'

bench() { # topic partitions producers [flags]; prints MB/s, RSS peak MiB
    local topic=$1 partitions=$2 producers=$3
    shift 3
    target/release/sluice-bench produce --bootstrap "127.0.0.1:$port" --topic "$topic" \
        --partitions "$partitions" --producers "$producers" --duration "$duration" --acks 1 \
        --broker-pid "$pid" --json "$@" 2>/dev/null |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.1f %d" % (r["mb_per_s"], (r["broker_rss_peak_bytes"] or 0) / 2**20))'
}

idle_open() { # opens 9,900 idle connections in the background; waits until they are up
    python3 - "$port" >"$work/idle.out" 2>&1 <<'PY' &
import socket, struct, sys, time
port = int(sys.argv[1])
# ApiVersions v0, correlation id 7, no client id.
request = struct.pack(">ihhih", 10, 18, 0, 7, -1)
conns = []
for i in range(9900):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    conns.append(s)
answered = 0
for s in conns:
    s.settimeout(10)
    head = s.recv(4)
    if len(head) == 4:
        body = b""
        want = struct.unpack(">i", head)[0]
        while len(body) < want:
            chunk = s.recv(want - len(body))
            if not chunk:
                break
            body += chunk
        answered += len(body) == want
print(f"idle connections: {answered} of {len(conns)} answered", flush=True)
time.sleep(3600)
PY
    idle_pid=$!
    until grep -q "idle connections" "$work/idle.out" 2>/dev/null; do
        kill -0 "$idle_pid" 2>/dev/null || { cat "$work/idle.out" >&2; exit 1; }
        sleep 0.2
    done
}
idle_close() {
    kill "$idle_pid" 2>/dev/null || true
    wait "$idle_pid" 2>/dev/null || true
    idle_pid=
}

declare -A runs
for round in $(seq 1 "$rounds"); do
    read -r mb rss < <(bench standard 6 1 --delete-topic)
    runs[standard]+="$mb "
    echo "round $round standard:   $mb MB/s, broker RSS peak $rss MiB, $(fds) descriptors"
    read -r mb rss < <(bench partitions 10000 1)
    runs[partitions]+="$mb "
    echo "round $round partitions: $mb MB/s, broker RSS peak $rss MiB, $(fds) descriptors"
    idle_open
    answered=$(cat "$work/idle.out")
    read -r mb rss < <(bench idle 6 100 --delete-topic)
    runs[idle]+="$mb "
    echo "round $round idle:       $mb MB/s, broker RSS peak $rss MiB, $(fds) descriptors ($answered; RSS now $(rss_mib) MiB)"
    idle_close
    read -r mb rss < <(bench raw-standard 6 2 --raw --key-run 256 --delete-topic)
    runs[raw-standard]+="$mb "
    echo "round $round raw-standard:   $mb MB/s, broker RSS peak $rss MiB, $(fds) descriptors"
    read -r mb rss < <(bench partitions 10000 1 --raw --key-run 1)
    runs[raw-partitions]+="$mb "
    echo "round $round raw-partitions: $mb MB/s, broker RSS peak $rss MiB, $(fds) descriptors"
    read -r mb rss < <(bench partitions 10000 1 --raw --key-run 100)
    runs[raw-part-100]+="$mb "
    echo "round $round raw-part-100:   $mb MB/s, broker RSS peak $rss MiB, $(fds) descriptors"
done
standard=$(echo "${runs[standard]}" | tr ' ' '\n' | grep . | median)
echo
echo "medians of $rounds rounds (MB/s, and as a share of the standard run's):"
for s in standard partitions idle; do
    m=$(echo "${runs[$s]}" | tr ' ' '\n' | grep . | median)
    python3 -c "print('  %-14s %7.1f MB/s  %5.2f' % ('$s', $m, $m / $standard))"
done
raw=$(echo "${runs[raw-standard]}" | tr ' ' '\n' | grep . | median)
echo "raw requests (MB/s, and as a share of raw-standard's):"
for s in raw-standard raw-partitions raw-part-100; do
    m=$(echo "${runs[$s]}" | tr ' ' '\n' | grep . | median)
    python3 -c "print('  %-14s %7.1f MB/s  %5.2f' % ('$s', $m, $m / $raw))"
done
# 10,000 partitions left on disk, a few MB each, for the restarts.
duration=3 bench partitions 10000 1 >/dev/null
stop
times=$(for _ in 1 2 3; do start; stop; done | median)
echo "start-up with 10,000 partitions on disk: $times ms (median of 3)"
