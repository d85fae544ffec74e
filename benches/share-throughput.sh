#!/usr/bin/env bash
# Share groups (KIP-932): records per second that three confluent-kafka ShareConsumers
# accept (explicit acknowledgement, commit_sync after every poll, so every
# acknowledgement is durable in __share_group_state before the next poll), and how
# long after its lock runs out a killed consumer's record is delivered again.
# Median of ROUNDS (default 3) runs, each with a new topic and group, after a warm-up.
# The rate counts from the consumers' start (joining included) to the last delivery.
#
#   benches/share-throughput.sh [RECORDS [ROUNDS]]
#
# Needs a release build (cargo build --release -p sluice) and confluent-kafka 2.16.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-30000}
rounds=${2:-3}
bin=target/release/sluice
script=compat-tests/python/share_consumers.py
work=$(mktemp -d)
stop() {
    local pid
    pid=$(cat "$work/pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}
trap 'stop; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
"$bin" --data-dir "$work/data" --listen 127.0.0.1:$port --metrics-addr 127.0.0.1:0 \
    --group-share-min-record-lock-duration-ms 1000 >"$work/out" 2>"$work/log" &
echo $! >"$work/pid"
until grep -q "sluice listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
b=127.0.0.1:$port
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# A warm-up round, not counted: it creates __share_group_state and loads its
# coordinators, which only the first share group of a cluster pays for.
python3 "$script" produce "$b" warm-up 2 1000 m >/dev/null
python3 "$script" configure "$b" warm-up share.auto.offset.reset=earliest >/dev/null
python3 "$script" consume "$b" warm-up warm-up 3 1000 60 >/dev/null

for r in $(seq "$rounds"); do
    python3 "$script" produce "$b" "bench-$r" 2 "$records" m >/dev/null
    python3 "$script" configure "$b" "bench-$r" share.auto.offset.reset=earliest >/dev/null
    python3 "$script" consume "$b" "bench-$r" "bench-$r" 3 "$records" 300 |
        python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["distinct"] == d["accepted"]; print(d["records_per_second"])'
done >"$work/rates"
echo "accepted by 3 share consumers: $(median <"$work/rates") records/s (median of $rounds: $(tr '\n' ' ' <"$work/rates"))"

# Redelivery: a consumer takes records and is killed; a second one is waiting. The
# delay is from the lock's end (acquisition + 2 s) to the first redelivery.
for r in $(seq "$rounds"); do
    python3 "$script" produce "$b" "locks-$r" 1 20 m >/dev/null
    python3 "$script" configure "$b" "locks-$r" share.auto.offset.reset=earliest \
        share.record.lock.duration.ms=2000 >/dev/null
    # A file per round: the wait below must not see the last round's line.
    python3 "$script" hold "$b" "locks-$r" "locks-$r" >"$work/held-$r" 2>/dev/null &
    holder=$!
    until [ -s "$work/held-$r" ]; do sleep 0.05; done
    kill -9 $holder
    wait $holder 2>/dev/null || true
    python3 "$script" consume "$b" "locks-$r" "locks-$r" 1 20 30 >"$work/again"
    python3 - "$work/held-$r" "$work/again" <<'PY'
import json, sys
held = json.loads(open(sys.argv[1]).readline())
again = json.load(open(sys.argv[2]))
print(round((again["first_delivery_at"] - (held["at"] + 2.0)) * 1000))
PY
done >"$work/delays"
echo "redelivered after lock expiry: $(median <"$work/delays") ms (median of $rounds: $(tr '\n' ' ' <"$work/delays")ms; the holder's clock is read after its poll returns)"
