#!/usr/bin/env bash
# How long a broker takes to start with a large __consumer_offsets, uncompacted and
# after the cleaner compacted it: N offset commits (default 200,000) by 100 groups into
# one __consumer_offsets partition, then the time from start to "listening" (which
# waits until every group is loaded), median of 3 restarts each way.
#
#   benches/offsets-startup.sh [COMMITS]
#
# Needs a release build (cargo build --release -p sluice) and confluent-kafka.
set -euo pipefail
cd "$(dirname "$0")/.."
commits=${1:-200000}
bin=target/release/sluice
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
flags=(--data-dir "$work/data" --listen 127.0.0.1:$port --metrics-addr 127.0.0.1:0
    --offsets-topic-num-partitions 1 --offsets-topic-segment-bytes 1048576 --shards 1)

start() { # extra flags...; prints the start-up time in ms
    local t0 t1
    t0=$(date +%s%N)
    "$bin" "${flags[@]}" "$@" >"$work/out" 2>"$work/log" &
    echo $! >"$work/pid"
    until grep -q "sluice listening on" "$work/out" 2>/dev/null; do sleep 0.01; done
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
stop() {
    kill "$(cat "$work/pid")"
    while kill -0 "$(cat "$work/pid")" 2>/dev/null; do sleep 0.05; done
}
median() { sort -n | sed -n 2p; }
size() { du -sb "$work/data/__consumer_offsets-0" | cut -f1; }

start --log-cleaner-enable=false >/dev/null
python3 - "$port" "$commits" <<'PY'
import sys, threading
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
port, commits = sys.argv[1], int(sys.argv[2])
boot = f"127.0.0.1:{port}"
admin = AdminClient({"bootstrap.servers": boot})
[f.result() for f in admin.create_topics([NewTopic("t", 10, 1)]).values()]
groups = 100
def run(g):
    c = Consumer({"bootstrap.servers": boot, "group.id": f"g{g}", "enable.auto.commit": False})
    for i in range(commits // groups):
        c.commit(offsets=[TopicPartition("t", i % 10, i)], asynchronous=True)
        c.poll(0)
    c.commit(offsets=[TopicPartition("t", 0, commits)], asynchronous=False)
    c.close()
threads = [threading.Thread(target=run, args=(g,)) for g in range(groups)]
[t.start() for t in threads]; [t.join() for t in threads]
PY
stop
uncompacted_size=$(size)
uncompacted=$(for _ in 1 2 3; do start --log-cleaner-enable=false; stop; done | median)
start --log-cleaner-backoff-ms 200 >/dev/null
sleep 5
stop
compacted_size=$(size)
compacted=$(for _ in 1 2 3; do start --log-cleaner-enable=false; stop; done | median)
echo "commits: $commits by 100 groups"
echo "uncompacted: __consumer_offsets $uncompacted_size bytes, start-up ${uncompacted} ms (median of 3)"
echo "compacted:   __consumer_offsets $compacted_size bytes, start-up ${compacted} ms (median of 3)"
