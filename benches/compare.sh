#!/usr/bin/env bash
# Runs the standard scenarios against one or two Kafka-compatible brokers, alternating
# A B A B ... for --rounds rounds, and prints median (min..max) per scenario and, with
# two brokers, the ratio A/B of the medians. Targets are those of the io_uring issue,
# for a 2-vCPU machine running broker and load generator together.
#
#   benches/compare.sh [--rounds 3] [--pid-a PID] [--pid-b PID] [--cold] [--scenarios abcd] A_BOOTSTRAP [B_BOOTSTRAP]
#
# Each run deletes its topic at the end (a 15 s produce run writes ~5 GB). --cold drops
# the page cache (needs root) before each consume, so the backlog is read from the disk
# whatever the broker's I/O mode; benches/direct-io.sh runs this for direct vs buffered.
#
# Scenarios (1 KiB records, one topic of 6 partitions):
#   a  produce, acks=1                      target >= 600 MB/s
#   b  produce, acks=all                    target >= 75% of the disk's write+fdatasync rate
#   c  consume a 2 GiB backlog              target >= 800 MB/s
#   d  end-to-end latency at 50 MB/s        target p99 <= 2 ms, p99.9 <= 3 x p99
#   e  produce acks=1, raw requests         (no target: what the broker takes without
#                                            librdkafka's 2-3 ms of client CPU per MB)
#   f  produce acks=all, raw requests       target >= 90% of the disk's O_DIRECT rate
#
# e and f use sluice-bench --raw: Produce requests encoded once, 2 connections, batches
# of 256 records, so on a 2-core machine the client's CPU does not cap the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
pid_a=""
pid_b=""
cold=0
scenarios=abcd
addrs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --pid-a) pid_a=$2; shift 2 ;;
        --pid-b) pid_b=$2; shift 2 ;;
        --cold) cold=1; shift ;;
        --scenarios) scenarios=$2; shift 2 ;;
        *) addrs+=("$1"); shift ;;
    esac
done
[ ${#addrs[@]} -ge 1 ] || { echo "usage: $0 [--rounds N] [--pid-a PID] [--pid-b PID] A [B]" >&2; exit 2; }
cargo build --quiet --release -p sluice-benches
bench=target/release/sluice-bench
results=$(mktemp)
trap 'rm -f "$results" "${ddfile:-}"' EXIT

# The disk's sequential write-and-fdatasync bandwidth, measured now, on this disk.
ddfile=$(mktemp -p "${TMPDIR:-/tmp}" sluice-dd.XXXXXX)
# Buffered (through the page cache) and direct (O_DIRECT): a direct-I/O broker is held
# to the second.
dd_rate() {
    dd if=/dev/zero of="$ddfile" bs=1M count=512 conv=fdatasync "$@" 2>&1 | \
        sed -n 's/.* copied, \([0-9.]*\) s, .*/\1/p' | awk '{ printf "%.1f", 536.870912 / $1 }'
    rm -f "$ddfile"
}
disk_mb=$(dd_rate)
disk_direct_mb=$(dd_rate oflag=direct)
echo "disk: ${disk_mb} MB/s sequential write with fdatasync, ${disk_direct_mb} MB/s with O_DIRECT"
b_target=$(awk -v d="$disk_mb" 'BEGIN { printf "%.1f", d * 0.75 }')
f_target=$(awk -v d="$disk_direct_mb" 'BEGIN { printf "%.1f", d * 0.9 }')
raw=(--raw --producers 2 --key-run 256 --duration 15 --delete-topic)

run() { # label broker-index bootstrap pid scenario
    local label=$1 bootstrap=$3 pid=$4 scenario=$5 topic="bench-$5-$2-$RANDOM"
    local common=(--bootstrap "$bootstrap" --partitions 6 --message-size 1024 --json)
    [ -n "$pid" ] && common+=(--broker-pid "$pid")
    local out
    case "$scenario" in
        a) out=$($bench produce "${common[@]}" --topic "$topic" --acks 1 --duration 15 --target-mb 600 --delete-topic) ;;
        b) out=$($bench produce "${common[@]}" --topic "$topic" --acks all --duration 15 --target-mb "$b_target" --delete-topic) ;;
        c) $bench produce "${common[@]}" --topic "$topic" --acks 1 --count 2097152 >/dev/null
           if [ "$cold" = 1 ]; then sync; echo 1 > /proc/sys/vm/drop_caches; fi
           out=$($bench consume "${common[@]}" --topic "$topic" --count 2097152 --target-mb 800 --delete-topic) ;;
        # linger.ms=0: latency is measured without librdkafka's default 5 ms batching wait.
        d) out=$($bench e2e "${common[@]}" --topic "$topic" --acks 1 --linger-ms 0 --rate-mb 50 --duration 20 --target-p99-ms 2 --delete-topic) ;;
        e) out=$($bench produce "${common[@]}" --topic "$topic" --acks 1 "${raw[@]}") ;;
        f) out=$($bench produce "${common[@]}" --topic "$topic" --acks all --target-mb "$f_target" "${raw[@]}") ;;
    esac
    echo "$label $scenario $out" >>"$results"
    echo "$label $scenario $out"
}

for round in $(seq 1 "$rounds"); do
    for scenario in $(echo "$scenarios" | fold -w1); do
        run A 0 "${addrs[0]}" "$pid_a" "$scenario"
        if [ ${#addrs[@]} -ge 2 ]; then
            run B 1 "${addrs[1]}" "$pid_b" "$scenario"
        fi
    done
done

python3 - "$results" "$disk_mb" "$disk_direct_mb" <<'PY'
import json, statistics, sys
print(f"disk write+fdatasync: buffered {sys.argv[2]} MB/s, O_DIRECT {sys.argv[3]} MB/s")
rows = {}
for line in open(sys.argv[1]):
    label, scenario, payload = line.split(" ", 2)
    rows.setdefault((scenario, label), []).append(json.loads(payload))
names = {"a": "produce acks=1 (MB/s)", "b": "produce acks=all (MB/s)", "c": "consume 2 GiB (MB/s)", "d": "e2e p99 at 50 MB/s (ms)",
         "e": "raw produce acks=1 (MB/s)", "f": "raw produce acks=all (MB/s)"}
def metric(s, r):
    return r["latency_ms"]["p99"] if s == "d" else r["mb_per_s"]
print()
print(f"{'scenario':28} {'A median (min..max)':26} {'B median (min..max)':26} A/B")
for s in "abcdef":
    cells, medians = [], []
    for label in "AB":
        runs = rows.get((s, label))
        if not runs:
            cells.append("-"); continue
        values = [metric(s, r) for r in runs]
        m = statistics.median(values); medians.append(m)
        cells.append(f"{m:.2f} ({min(values):.2f}..{max(values):.2f})")
    ratio = f"{medians[0] / medians[1]:.2f}" if len(medians) == 2 and medians[1] else "-"
    print(f"{names[s]:28} {cells[0]:26} {cells[1]:26} {ratio}")
    for label in "AB":
        runs = rows.get((s, label), [])
        if not runs:
            continue
        def med(key):
            vals = [r[key] for r in runs if r.get(key) is not None]
            return statistics.median(vals) if vals else None
        extra = []
        rss = [r["broker_rss_peak_bytes"] for r in runs if r.get("broker_rss_peak_bytes")]
        if rss: extra.append(f"broker RSS peak {max(rss) / 2**20:.0f} MiB")
        if med("broker_cpu_seconds_per_mb"): extra.append(f"broker CPU {med('broker_cpu_seconds_per_mb')*1000:.2f} ms/MB")
        if med("client_cpu_seconds_per_mb"): extra.append(f"client CPU {med('client_cpu_seconds_per_mb')*1000:.2f} ms/MB")
        if s == "d":
            p999 = statistics.median(r["latency_ms"]["p99.9"] for r in runs)
            p50 = statistics.median(r["latency_ms"]["p50"] for r in runs)
            extra.append(f"p50 {p50:.2f} ms, p99.9 {p999:.2f} ms (medians)")
        extra += runs[-1].get("targets", [])
        print(f"{'':28} {label}: " + "; ".join(extra) + (" (last round)" if runs[-1].get("targets") else ""))
PY
