#!/usr/bin/env bash
# Replication's cost and failover time on this machine: etcd and three release
# brokers on loopback, then
#
#   1. produce throughput with acks=all on RF=3 topics (min.insync.replicas=2) and on
#      RF=1 topics, alternating RF1 RF3 RF1 RF3 ..., reporting the median of each, the
#      RF3/RF1 ratio of medians (target >= 0.5) and p99 produce latency (at saturation,
#      so mostly queueing), then p50/p99 at a steady 50 MB/s;
#   2. leader failover: a steady acks=all producer on an RF=3 partition while its
#      leader is killed with SIGKILL (then restarted), five times; the failover time is
#      the longest gap between two acknowledgements, which spans kill -9 to the first
#      write the new leader acknowledged (target <= broker.session.timeout.ms + 2 s).
#
#   benches/replication.sh [--rounds 3] [--duration 15] [--session-timeout-ms 9000] \
#       [--acks-all-fsync true|false] [--skip-failover]
#
# `--acks-all-fsync false` measures Kafka's policy (acks=all answered once the in-sync
# replicas have the batch in memory) instead of Sluice's default (on their disks).
# Needs etcd (Debian's etcd-server) and kcat. Data goes to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
duration=15
session=9000
fsync=true
failover=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --session-timeout-ms) session=$2; shift 2 ;;
        --acks-all-fsync) fsync=$2; shift 2 ;;
        --skip-failover) failover=0; shift ;;
        *) echo "usage: $0 [--rounds N] [--duration S] [--session-timeout-ms MS] [--acks-all-fsync BOOL] [--skip-failover]" >&2; exit 2 ;;
    esac
done
cargo build --quiet --release -p sluice -p sluice-benches
sluice=target/release/sluice
bench=target/release/sluice-bench
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
# Keep the brokers' logs when asked (BENCH_KEEP=dir).
[ -n "${BENCH_KEEP:-}" ] && trap 'cp "$work"/*.log "$BENCH_KEEP"/ 2>/dev/null; cleanup' EXIT

etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster default=http://127.0.0.1:23800 --log-level error >"$work/etcd.log" 2>&1 &
pids+=($!)
sleep 1
declare -A broker_pid
start_broker() { # id
    local id=$1
    "$sluice" --controller etcd://127.0.0.1:23790/bench --node-id "$id" \
        --listen "127.0.0.1:1909$id" --metrics-addr "127.0.0.1:1964$id" \
        --data-dir "$work/data-$id" --shards 1 --broker-session-timeout-ms "$session" \
        --acks-all-fsync="$fsync" \
        >>"$work/broker-$id.log" 2>&1 &
    broker_pid[$id]=$!
    pids+=($!)
}
for id in 1 2 3; do start_broker "$id"; done
bootstrap=127.0.0.1:19091,127.0.0.1:19092,127.0.0.1:19093
for _ in $(seq 100); do
    [ "$(kcat -b 127.0.0.1:19091 -L 2>/dev/null | grep -c 'at 127.0.0.1')" = 3 ] && break
    sleep 0.2
done

# CPU seconds the three brokers have used so far (utime + stime, clock ticks of 1/100 s).
brokers_cpu() {
    local total=0 id
    for id in 1 2 3; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/${broker_pid[$id]}/stat")))
    done
    echo "$total"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { # json key.path
    python3 -c "import json,sys; d=json.load(sys.stdin); k=sys.argv[1].split('.'); [d:=d[x] for x in k]; print(d)" "$1"
}

echo "== throughput: acks=all (--acks-all-fsync=$fsync), RF=1 vs RF=3 (min.insync.replicas=2), $rounds rounds of ${duration}s"
: >"$work/rf1" ; : >"$work/rf3"; : >"$work/p99-1"; : >"$work/p99-3"
for round in $(seq "$rounds"); do
    for rf in 1 3; do
        cpu_before=$(brokers_cpu)
        out=$("$bench" produce --bootstrap "$bootstrap" --topic "rf$rf-$round" --partitions 6 \
            --replication-factor "$rf" --topic-config "min.insync.replicas=$(( rf == 3 ? 2 : 1 ))" \
            --acks all --duration "$duration" --json --delete-topic)
        cpu_after=$(brokers_cpu)
        mb=$(echo "$out" | field mb_per_s)
        p99=$(echo "$out" | field latency_ms.p99)
        total_mb=$(echo "$out" | field bytes | awk '{ print $1 / 1e6 }')
        client=$(echo "$out" | field client_cpu_seconds_per_mb)
        cpu=$(awk -v c=$((cpu_after - cpu_before)) -v m="$total_mb" -v k="$client" \
            'BEGIN { printf "brokers %.2f ms/MB, client %.2f ms/MB", c * 10 / m, k * 1000 }')
        echo "round $round RF=$rf: $mb MB/s, p99 $p99 ms, CPU: $cpu"
        echo "$mb" >>"$work/rf$rf"
        echo "$p99" >>"$work/p99-$rf"
    done
done
rf1=$(median <"$work/rf1"); rf3=$(median <"$work/rf3")
echo "median RF=1 $rf1 MB/s (p99 $(median <"$work/p99-1") ms), RF=3 $rf3 MB/s (p99 $(median <"$work/p99-3") ms)"
echo "RF3/RF1 = $(awk -v a="$rf3" -v b="$rf1" 'BEGIN { printf "%.2f", a / b }') (target >= 0.5)"

echo "== latency: acks=all at a steady 50 MB/s (below both throughputs), p50 / p99"
for rf in 1 3; do
    out=$("$bench" produce --bootstrap "$bootstrap" --topic "steady-rf$rf" --partitions 6 \
        --replication-factor "$rf" --topic-config "min.insync.replicas=$(( rf == 3 ? 2 : 1 ))" \
        --acks all --rate-mb 50 --linger-ms 1 --duration "$duration" --json --delete-topic)
    echo "RF=$rf at 50 MB/s: p50 $(echo "$out" | field latency_ms.p50) ms, p99 $(echo "$out" | field latency_ms.p99) ms"
done

[ "$failover" = 1 ] || exit 0
echo "== failover: kill -9 the leader under a steady acks=all producer, 5 times"
: >"$work/gaps"
for round in 1 2 3 4 5; do
    topic="failover-$round"
    "$bench" produce --bootstrap "$bootstrap" --topic "$topic" --partitions 1 --replication-factor 3 \
        --topic-config min.insync.replicas=2 --acks all --rate-mb 0.5 --message-size 500 \
        --duration $(( session / 1000 + 14 )) --json >"$work/failover-$round.json" &
    producer=$!
    sleep 5
    leader=$(kcat -b "$bootstrap" -L -t "$topic" | awk '/partition 0,/ { sub(",", "", $4); print $4 }')
    kill -9 "${broker_pid[$leader]}"
    sleep $(( session / 1000 + 4 ))
    start_broker "$leader"
    wait "$producer"
    gap=$(field ack_gap_ms_max <"$work/failover-$round.json")
    echo "round $round: killed leader $leader, longest gap between acknowledgements $gap ms"
    echo "$gap" >>"$work/gaps"
    # Let the restarted broker catch up and rejoin before the next round.
    sleep 5
done
echo "median failover $(median <"$work/gaps") ms (target <= $(( session + 2000 )) ms)"
