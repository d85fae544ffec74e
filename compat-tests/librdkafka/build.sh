#!/usr/bin/env bash
# Builds librdkafka's own test runner from the rdkafka-sys crate that Cargo fetched
# (nothing is vendored here). Output: $OUT/librdkafka/tests/test-runner.
# The build is cached: it reruns only when the crate version changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${LIBRDKAFKA_SUITE_DIR:-target/librdkafka-suite}

cargo fetch --quiet
registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
src=$(ls -d "$registry"/*/rdkafka-sys-*+2.12.1/librdkafka 2>/dev/null | head -n 1)
if [ -z "$src" ] || [ ! -d "$src/tests" ]; then
    echo "librdkafka sources with tests/ not found under $registry (rdkafka-sys 2.12.1)" >&2
    exit 1
fi
stamp="$OUT/built-from"
if [ -x "$OUT/librdkafka/tests/test-runner" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$src" ]; then
    echo "test-runner is up to date ($OUT)"
    exit 0
fi
rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$src" "$OUT/librdkafka"
cd "$OUT/librdkafka"
jobs=$(nproc)
./configure --disable-curl --disable-sasl --disable-ssl --disable-gssapi --disable-zstd --disable-lz4-ext \
    >sluice-configure.txt 2>&1 || { tail -30 sluice-configure.txt; exit 1; }
make -j"$jobs" libs >sluice-make-libs.txt 2>&1 || { tail -30 sluice-make-libs.txt; exit 1; }
make -j"$jobs" -C tests build >sluice-make-tests.txt 2>&1 || { tail -30 sluice-make-tests.txt; exit 1; }
cd - >/dev/null
echo "$src" >"$stamp"
echo "built $OUT/librdkafka/tests/test-runner"
