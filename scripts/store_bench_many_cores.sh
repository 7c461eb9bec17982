#!/usr/bin/env bash
# `optimem bench store` on a machine with many cores and no network (the device machine), to see the
# cluster where its servers get cores of their own (issue 17; this VM has 2). Needs, carried beside
# the checkout (both git-ignored):
#   .whl/*.whl        this package's dependencies for the machine's Python (pip download --only-binary
#                     :all: --python-version 3.12 --no-deps redis freetype-py uharfbuzz ...)
#   .device/redis/    bin/redis-server, bin/redis-cli: wrappers running real/ with lib/ (a Debian
#                     12 redis 7.0 and the libraries `ldd` lists beyond glibc and libstdc++)
# Installs both into /tmp/site, puts .device/redis/bin first on PATH and runs the bench with the
# arguments given; OUT (default ./store_out) gets store.json, the log and the machine's core count.
set -uo pipefail
OUT=${OUT:-$PWD/store_out}
mkdir -p "$OUT"
PY=${PY:-python3}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site PATH="$PWD/.device/redis/bin:$PATH" PYTHONUNBUFFERED=1
{ echo "cores: $(nproc)"; redis-server --version; $PY --version; } | tee "$OUT/machine.txt"
cd /tmp  # import the installed package, not the checkout's folder
timeout "${BENCH_TIMEOUT:-540}" $PY -m optimem bench store "$@" --json --save "$OUT/store.json" > /dev/null 2> "$OUT/store.log"
echo "bench rc=$?"
tail -n 25 "$OUT/store.log"
