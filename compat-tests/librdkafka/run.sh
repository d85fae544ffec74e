#!/usr/bin/env bash
# Runs librdkafka's own integration tests against a fresh sluice broker.
#
#   compat-tests/librdkafka/run.sh            the allow-list (what CI runs)
#   compat-tests/librdkafka/run.sh --all      every test 0000-0099, to find new passes
#   compat-tests/librdkafka/run.sh 0012 0030  just these
#
# One test-runner process per test (a failing test aborts its process), each with a
# time limit. Prints PASSED/FAILED per test and a final count; exits non-zero if any
# test of the allow-list failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here="$root/compat-tests/librdkafka"
OUT=${LIBRDKAFKA_SUITE_DIR:-target/librdkafka-suite}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}

"$here/build.sh" || exit 1
cargo build --quiet -p sluice || exit 1
tests_dir="$root/$OUT/librdkafka/tests"

if [ "${1:-}" = "--all" ]; then
    mapfile -t tests < <(ls "$tests_dir" | sed -n 's/^\(00[0-9][0-9]\)-.*\.\(c\|cpp\)$/\1/p' | sort -u)
elif [ $# -gt 0 ]; then
    tests=("$@")
else
    mapfile -t tests < <(sed -e 's/#.*//' -e '/^\s*$/d' "$here/tests.allow" | awk '{print $1}')
fi

work=$(mktemp -d)
broker_pid=""
start_broker() {
    "$root/target/debug/sluice" --listen 127.0.0.1:0 --data-dir "$work/data" --shards 2 \
        --group-initial-rebalance-delay-ms 0 --num-partitions 4 --metrics-addr 127.0.0.1:0 \
        >"$work/broker.out" 2>>"$work/broker.log" &
    broker_pid=$!
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/^sluice listening on //p' "$work/broker.out")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    if [ -z "${addr:-}" ]; then
        echo "sluice did not start:" >&2
        cat "$work/broker.log" >&2
        exit 1
    fi
    printf 'bootstrap.servers=%s\n' "$addr" >"$work/test.conf"
}
stop_broker() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
}
trap 'stop_broker; rm -rf "$work"' EXIT
start_broker

passed=0
failed=0
failed_list=()
for t in "${tests[@]}"; do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "broker died before test $t; restarting (log: broker.log)" >&2
        tail -5 "$work/broker.log" >&2
        start_broker
    fi
    log="$work/test-$t.log"
    (cd "$tests_dir" && LD_LIBRARY_PATH="$root/$OUT/librdkafka/src:$root/$OUT/librdkafka/src-cpp" TESTS="$t" TEST_KAFKA_VERSION=3.9.0 RDKAFKA_TEST_CONF="$work/test.conf" \
        timeout "$TEST_TIMEOUT" ./test-runner -L -p1 >"$log" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && grep -q "PASSED" "$log" && ! grep -q "tests failed\|FAILED" "$log"; then
        echo "PASSED $t"
        passed=$((passed + 1))
    else
        reason=$(grep -m1 -E "FAIL|Test .* failed|Assertion" "$log" | cut -c1-160)
        [ $rc -eq 124 ] && reason="timed out after ${TEST_TIMEOUT}s"
        echo "FAILED $t ${reason}"
        failed=$((failed + 1))
        failed_list+=("$t")
        if [ -n "${LIBRDKAFKA_KEEP_LOGS:-}" ]; then
            mkdir -p "$LIBRDKAFKA_KEEP_LOGS" && cp "$log" "$LIBRDKAFKA_KEEP_LOGS/"
        fi
    fi
done
echo "librdkafka suite: ${passed} passed, ${failed} failed"
[ $failed -eq 0 ]
