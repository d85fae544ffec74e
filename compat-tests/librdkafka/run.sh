#!/usr/bin/env bash
# Runs librdkafka's own integration tests against fresh sluice brokers.
#
#   compat-tests/librdkafka/run.sh                 the allow-list (scripts/test.sh runs it)
#   compat-tests/librdkafka/run.sh --all           every test 0000-0153 in every scenario
#   compat-tests/librdkafka/run.sh 0012 0107:noautocreate   just these
#
# A test runs in a scenario, as librdkafka's runner names them: `default` (a broker
# that creates topics on first use, as Kafka does by default), `noautocreate` (a
# broker started with --auto-create-topics=false; tests such as 0107 topic_recreate
# need it), `cluster` (three brokers coordinated through a real etcd, bootstrapped
# through all three: partitions, leaders and group coordinators spread over them) or
# `cluster-noautocreate` (the same with --auto-create-topics=false), or `consumer` (one
# broker; librdkafka's consumers use the KIP-848 protocol, group.protocol=consumer).
# Each scenario has its own brokers, started when a test first needs them. librdkafka
# knows no cluster scenarios: its tests run there as in `default` / `noautocreate`.
#
# One test-runner process per test (a failing test aborts its process), each with a
# time limit, JOBS of them at a time against the same broker (tests use random topic
# and group names); a failed test runs once more on its own. Prints
# PASSED/FAILED/SKIPPED per test with its duration and a final count; exits non-zero
# if any test failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here="$root/compat-tests/librdkafka"
OUT=${LIBRDKAFKA_SUITE_DIR:-target/librdkafka-suite}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
JOBS=${JOBS:-3}
SCENARIOS=(default noautocreate cluster cluster-noautocreate consumer)

"$here/build.sh" || exit 1
cargo build --quiet -p sluice || exit 1
tests_dir="$root/$OUT/librdkafka/tests"

# Each entry is TEST or TEST:SCENARIO.
if [ "${1:-}" = "--all" ]; then
    mapfile -t numbers < <(ls "$tests_dir" | sed -n 's/^\(0[01][0-9][0-9]\)-.*\.\(c\|cpp\)$/\1/p' | sort -u)
    tests=()
    for scenario in "${SCENARIOS[@]}"; do
        for n in "${numbers[@]}"; do tests+=("$n:$scenario"); done
    done
elif [ $# -gt 0 ]; then
    tests=("$@")
else
    # tests.allow: "TEST [SCENARIO]  # name"
    mapfile -t tests < <(sed -e 's/#.*//' -e '/^\s*$/d' "$here/tests.allow" |
        awk '{ print ($2 == "" ? $1 : $1 ":" $2) }')
fi

work=$(mktemp -d)
# Per scenario, the pids of its processes (brokers, and etcd for `cluster`).
declare -A broker_pids=()
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Starts one sluice named <scenario>.<n>; prints its address. Its pid goes to
# $work/pid-<name>.
start_sluice() { # name flags...
    local name=$1 addr=""
    shift
    "$root/target/debug/sluice" --listen 127.0.0.1:0 --data-dir "$work/data-$name" --shards 2 \
        --num-partitions 4 --metrics-addr 127.0.0.1:0 "$@" \
        >"$work/broker-$name.out" 2>>"$work/broker-$name.log" &
    echo $! >"$work/pid-$name"
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/^sluice listening on //p' "$work/broker-$name.out")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "sluice ($name) did not start:" >&2
        cat "$work/broker-$name.log" >&2
        exit 1
    fi
    echo "$addr"
}
start_broker() { # scenario
    local scenario=$1 addrs=() pids=()
    case $scenario in
        noautocreate) addrs+=("$(start_sluice noautocreate.0 --auto-create-topics=false)") ;;
        cluster | cluster-noautocreate)
            local client peer flags=()
            [ "$scenario" = cluster-noautocreate ] && flags+=(--auto-create-topics=false)
            client=$(free_port) peer=$(free_port)
            etcd --data-dir "$work/etcd-$scenario" --listen-client-urls "http://127.0.0.1:$client" \
                --advertise-client-urls "http://127.0.0.1:$client" \
                --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
                --initial-cluster "default=http://127.0.0.1:$peer" --logger zap --log-level error \
                >"$work/etcd-$scenario.log" 2>&1 &
            pids+=($!)
            for _ in $(seq 1 100); do
                (exec 3<>"/dev/tcp/127.0.0.1/$client") 2>/dev/null && break
                sleep 0.1
            done
            for id in 1 2 3; do
                addrs+=("$(start_sluice "$scenario.$id" --controller "etcd://127.0.0.1:$client/rdk" --node-id "$id" \
                    "${flags[@]}")")
            done
            ;;
        consumer) addrs+=("$(start_sluice consumer.0 --group-consumer-heartbeat-interval-ms 1000)") ;;
        *) addrs+=("$(start_sluice "$scenario.0")") ;;
    esac
    for f in "$work"/pid-"$scenario".*; do pids+=("$(cat "$f")"); done
    broker_pids[$scenario]="${pids[*]}"
    local IFS=,
    printf 'bootstrap.servers=%s\n' "${addrs[*]}" >"$work/test-$scenario.conf"
}
# Starts the scenario's brokers if they are not all running (first use, or one died).
ensure_broker() { # scenario
    local pids=${broker_pids[$1]:-} pid alive=1
    [ -z "$pids" ] && alive=0
    for pid in $pids; do kill -0 "$pid" 2>/dev/null || alive=0; done
    [ $alive -eq 1 ] && return
    if [ -n "$pids" ]; then
        echo "a process of scenario $1 died; restarting them (last lines of the logs follow)" >&2
        for pid in $pids; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
        tail -n 5 "$work"/broker-"$1".*.log >&2
        rm -f "$work"/pid-"$1".* "$work"/broker-"$1".*.out
    fi
    start_broker "$1"
}
stop_brokers() {
    local pid i
    for pid in ${broker_pids[*]}; do kill "$pid" 2>/dev/null; done
    # The brokers are not this shell's children (started in command substitutions), so
    # `wait` cannot see them: poll until each has flushed and gone, so that removing
    # the work directory does not race their last writes.
    for pid in ${broker_pids[*]}; do
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
}
trap 'stop_brokers; rm -rf "$work"' EXIT

# Runs one test (TEST or TEST:SCENARIO) and writes "STATUS spec seconds reason" to
# $work/result-<spec>.
run_one() {
    local spec=$1 t=${1%%:*} scenario=default started rc statuses status reason=""
    [ "$spec" != "$t" ] && scenario=${spec#*:}
    local log="$work/test-$t-$scenario.log" result="$work/result-$t-$scenario"
    # librdkafka's own scenario: a cluster runs its tests as the single broker would.
    local theirs=$scenario
    [ "$scenario" = cluster ] && theirs=default
    local protocol=()
    [ "$scenario" = consumer ] && theirs=default protocol=(TEST_CONSUMER_GROUP_PROTOCOL=consumer)
    [ "${scenario#cluster-}" != "$scenario" ] && theirs=${scenario#cluster-}
    started=$(date +%s)
    (cd "$tests_dir" && exec env LD_LIBRARY_PATH="$root/$OUT/librdkafka/src:$root/$OUT/librdkafka/src-cpp" \
        TESTS="$t" TEST_KAFKA_VERSION=3.9.0 TEST_SCENARIO="$theirs" "${protocol[@]}" \
        RDKAFKA_TEST_CONF="$work/test-$scenario.conf" \
        timeout "$TEST_TIMEOUT" ./test-runner -L -p1 >"$log" 2>&1)
    rc=$?
    # The summary table has a row per test and sub-test: "| 0012_produce_consume | PASSED |".
    statuses=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk -F'|' -v t="$t" '$2 ~ "^ *"t"_" { gsub(/ /, "", $3); print $3 }')
    if [ $rc -eq 0 ] && echo "$statuses" | grep -qx PASSED && ! echo "$statuses" | grep -qx FAILED; then
        status=PASSED
    elif [ $rc -eq 0 ] && [ -n "$statuses" ] && ! echo "$statuses" | grep -qvx SKIPPED; then
        status=SKIPPED
        reason=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m1 -o "SKIPPING TEST: .*" | cut -c1-120)
    else
        status=FAILED
        reason=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m1 -A1 "failed at" | tail -n 1 | cut -c1-160)
        [ $rc -eq 124 ] && reason="timed out after ${TEST_TIMEOUT}s"
        if [ -n "${LIBRDKAFKA_KEEP_LOGS:-}" ]; then
            mkdir -p "$LIBRDKAFKA_KEEP_LOGS" && cp "$log" "$LIBRDKAFKA_KEEP_LOGS/"
        fi
    fi
    local shown=$t
    [ "$scenario" != default ] && shown="$t:$scenario"
    echo "$status $shown $(($(date +%s) - started))s $reason" >"$result"
    echo "$status $shown $(($(date +%s) - started))s $reason"
}

scenario_of() {
    if [ "$1" = "${1%%:*}" ]; then echo default; else echo "${1#*:}"; fi
}

running=0
pids=()
for spec in "${tests[@]}"; do
    ensure_broker "$(scenario_of "$spec")"
    run_one "$spec" &
    pids+=($!)
    running=$((running + 1))
    if [ $running -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
# Only the tests: a bare `wait` would also wait for the brokers.
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"

# A test that failed while others ran beside it gets one more run on its own: a few
# are timing-sensitive under load (0033 failed once in CI that way). A real failure
# fails twice; a pass on retry is reported as such.
for f in "$work"/result-*; do
    [ -e "$f" ] || continue
    read -r status shown _ <"$f"
    if [ "$status" = FAILED ]; then
        echo "retrying $shown alone"
        ensure_broker "$(scenario_of "$shown")"
        run_one "$shown" >/dev/null
        read -r status _ <"$f"
        echo "$status $shown (on retry, alone)"
    fi
done

passed=$(cat "$work"/result-* 2>/dev/null | grep -c '^PASSED')
failed=$(cat "$work"/result-* 2>/dev/null | grep -c '^FAILED')
skipped=$(cat "$work"/result-* 2>/dev/null | grep -c '^SKIPPED')
echo "librdkafka: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" -eq 0 ]
