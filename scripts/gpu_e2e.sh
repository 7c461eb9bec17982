#!/usr/bin/env bash
# The end-to-end benchmark on a GPU machine with no network (issue 20): installs the carried wheels
# (.whl: transformers, the tokenizer, fonts) and this checkout into /tmp/site, then runs
#   1. bench e2e --parts live   (the product turn by turn, 32k and 128k histories, all strategies)
#   2. bench e2e --parts exact,decode at 8k (decode ms/token in generate(), the floor, first divergence)
# writing JSON, plots and logs under OUT (default ./gpu_out). TINY=1 runs the tiny config (CPU smoke test);
# SLACK2=x adds a live run with prefix_slack x; NO_DECODE=1 skips step 2.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
REPO=$PWD
PY=${PY:-python3}
if [ -z "${TINY:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site "$REPO" || exit 1
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv | tee "$OUT/gpu.txt"
  TINY_ARG=""
else
  TINY_ARG="--tiny"
fi
export PYTHONUNBUFFERED=1
cd /tmp  # import the installed package, not the checkout's folder
start=$(date +%s)
timeout "${LIVE_TIMEOUT:-420}" $PY -m optimem bench e2e $TINY_ARG --parts live --live-histories 32768 131072 \
  --turns "${TURNS:-16}" --plots "$OUT" --json --save "$OUT/e2e_live.json" > "$OUT/live_stdout.json" 2> "$OUT/live.log"
echo "live rc=$? after $(( $(date +%s) - start )) s"
tail -n 5 "$OUT/live.log"
# optional: the live run again with another prefix_slack (sensitivity), e.g. SLACK2=0.35
if [ -n "${SLACK2:-}" ]; then
  left=$(( ${TOTAL_S:-570} - ($(date +%s) - start) ))
  timeout "$left" $PY -m optimem bench e2e $TINY_ARG --parts live --live-histories 32768 131072 --prefix-slack "$SLACK2" \
    --turns "${TURNS:-16}" --json --save "$OUT/e2e_live_slack$SLACK2.json" > "$OUT/live2_stdout.json" 2> "$OUT/live2.log"
  echo "live slack $SLACK2 rc=$? after $(( $(date +%s) - start )) s"
fi
left=$(( ${TOTAL_S:-570} - ($(date +%s) - start) ))
if [ -z "${NO_DECODE:-}" ] && [ "$left" -gt 60 ]; then
  timeout "$left" $PY -m optimem bench e2e $TINY_ARG --parts exact,decode --decode-contexts 8192 --json \
    --save "$OUT/e2e_decode.json" > "$OUT/decode_stdout.json" 2> "$OUT/decode.log"
  echo "decode rc=$? after $(( $(date +%s) - start )) s"
  tail -n 5 "$OUT/decode.log"
fi
rm -f "$OUT"/*_stdout.json
ls -la "$OUT"
