#!/usr/bin/env bash
# Broker CPU per Produce request and end-to-end latency at linger.ms=0, where every
# message is a Produce request of its own: the per-request cost of the broker's path
# (decode, route, append, write round, answer). Runs `sluice-bench e2e` against one or
# two Sluice brokers, alternating A B A B ..., and reads each broker's CPU time from
# /proc/PID/stat and its Produce count from /metrics before and after each run.
#
#   benches/request-cost.sh [--rounds 3] [--rate-mb 50] [--duration 20] \
#       A_BOOTSTRAP A_METRICS_ADDR A_PID [B_BOOTSTRAP B_METRICS_ADDR B_PID]
#
# Prints per run and then medians: µs of broker CPU per Produce request, requests/s,
# and the e2e latency p50 / p99 / p99.9 (ms).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
rate=50
duration=20
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --rate-mb) rate=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ ${#args[@]} -ne 3 ] && [ ${#args[@]} -ne 6 ]; then
    echo "usage: $0 [--rounds N] [--rate-mb MB] [--duration S] A_BOOTSTRAP A_METRICS A_PID [B_BOOTSTRAP B_METRICS B_PID]" >&2
    exit 2
fi
cargo build --quiet --release -p sluice-benches
bench=target/release/sluice-bench
ticks=$(getconf CLK_TCK)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

cpu_seconds() { # pid
    awk -v t="$ticks" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"
}
produce_requests() { # metrics address
    curl -s "http://$1/metrics" | awk '/^sluice_requests_total\{api="Produce"\}/ { print $2 }'
}

run() { # label bootstrap metrics pid
    local label=$1 bootstrap=$2 metrics=$3 pid=$4 topic="cost-$1-$RANDOM"
    local cpu0 req0 out cpu1 req1
    cpu0=$(cpu_seconds "$pid"); req0=$(produce_requests "$metrics")
    out=$($bench e2e --bootstrap "$bootstrap" --topic "$topic" --partitions 6 --message-size 1024 \
        --acks 1 --linger-ms 0 --rate-mb "$rate" --duration "$duration" --json --delete-topic)
    cpu1=$(cpu_seconds "$pid"); req1=$(produce_requests "$metrics")
    python3 - "$label" "$cpu0" "$cpu1" "${req0:-0}" "${req1:-0}" "$out" "$duration" >>"$results" <<'PY'
import json, sys
label, cpu0, cpu1, req0, req1, out, duration = sys.argv[1:]
r = json.loads(out)
requests = float(req1) - float(req0)
cpu = float(cpu1) - float(cpu0)
print(json.dumps({"label": label, "us_per_request": 1e6 * cpu / max(requests, 1),
                  "requests_per_s": requests / float(duration), "latency_ms": r["latency_ms"]}))
PY
    tail -n 1 "$results"
}

for _ in $(seq 1 "$rounds"); do
    run A "${args[0]}" "${args[1]}" "${args[2]}"
    if [ ${#args[@]} -eq 6 ]; then
        run B "${args[3]}" "${args[4]}" "${args[5]}"
    fi
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["label"], []).append(r)
print()
print(f"{'broker':7} {'CPU/request (µs)':22} {'requests/s':12} {'p50 ms':8} {'p99 ms':22} {'p99.9 ms':8}")
medians = {}
for label, runs in sorted(rows.items()):
    cost = [r["us_per_request"] for r in runs]
    p99 = [r["latency_ms"]["p99"] for r in runs]
    medians[label] = statistics.median(cost)
    print(f"{label:7} {statistics.median(cost):6.1f} ({min(cost):.1f}..{max(cost):.1f}){'':4} "
          f"{statistics.median(r['requests_per_s'] for r in runs):<12.0f} "
          f"{statistics.median(r['latency_ms']['p50'] for r in runs):<8.2f} "
          f"{statistics.median(p99):6.2f} ({min(p99):.2f}..{max(p99):.2f}){'':3} "
          f"{statistics.median(r['latency_ms']['p99.9'] for r in runs):.2f}")
if len(medians) == 2:
    print(f"CPU per request A/B: {medians['A'] / medians['B']:.2f}")
PY
