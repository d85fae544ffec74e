#!/usr/bin/env bash
# Share groups (KIP-932): records per second that three confluent-kafka ShareConsumers
# accept (explicit acknowledgement, commit_sync after every poll, so every
# acknowledgement is durable in __share_group_state before the next poll), and how
# long after its lock runs out a killed consumer's record is delivered again.
# Median of ROUNDS (default 3) runs, each with a new topic and group.
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
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
"$bin" --data-dir "$work/data" --listen 127.0.0.1:$port --metrics-addr 127.0.0.1:0 \
    --group-share-min-record-lock-duration-ms 1000 >"$work/out" 2>"$work/log" &
echo $! >"$work/pid"
until grep -q "sluice listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
b=127.0.0.1:$port
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

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
    python3 "$script" hold "$b" "locks-$r" "locks-$r" >"$work/held" 2>/dev/null &
    holder=$!
    until [ -s "$work/held" ]; do sleep 0.05; done
    kill -9 $holder
    python3 "$script" consume "$b" "locks-$r" "locks-$r" 1 20 30 >"$work/again"
    python3 - "$work/held" "$work/again" <<'PY'
import json, sys
held = json.loads(open(sys.argv[1]).readline())
again = json.load(open(sys.argv[2]))
print(round((again["first_delivery_at"] - (held["at"] + 2.0)) * 1000))
PY
done >"$work/delays"
echo "redelivered after lock expiry: $(median <"$work/delays") ms (median of $rounds: $(tr '\n' ' ' <"$work/delays")ms; the holder's clock is read after its poll returns)"
