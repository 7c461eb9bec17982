#!/usr/bin/env bash
# Sets optimem up on a fresh machine: a virtual environment in .venv with optimem and its extras.
#   bash scripts/setup.sh          what `optimem demo` needs: the core install, no torch
#   bash scripts/setup.sh --dev    also the test tools and the services tests start (redis-server,
#                                  tesseract with English, Simplified Chinese, Arabic, Hebrew,
#                                  Japanese and Korean)
# Idempotent: a second run installs nothing new and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

if ((dev)); then
  need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng)
  if ! tesseract --list-langs 2>/dev/null | grep -q '^chi_sim$'; then need+=(tesseract-ocr-chi-sim); fi
  # Arabic, Hebrew, Japanese and Korean: the legibility test and bench read those pages back
  for lang in ara heb jpn kor; do
    tesseract --list-langs 2>/dev/null | grep -q "^${lang}\$" || need+=("tesseract-ocr-${lang}")
  done
  if ((${#need[@]})); then
    if [[ "$(id -u)" == 0 ]]; then
      echo "optimem setup: apt-get install ${need[*]}" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "optimem setup: tests need ${need[*]}; install them with apt-get as root" >&2
    fi
  fi
fi

py=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ((dev)); then
  # torch first and pinned: on CPU machines an unpinned torch pulls several GB of CUDA wheels.
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    "${pip[@]}" install "torch==2.13.0"
  fi
  "${pip[@]}" install -e ".[all,dev,providers]"
  # tiktoken's OpenAI encodings cannot be downloaded offline: rebuilt from quicktok-v1's wheel, checked
  # against tiktoken's pinned SHA-256 and put in tiktoken's cache (langchain-openai's token counter)
  .venv/bin/python -m optimem.bench.tiktoken_offline
else
  # the demo, render, plan and the memory without a model need no torch: the core install only
  # (add the model with: .venv/bin/python -m pip install "torch==2.13.0" -e ".[model]")
  "${pip[@]}" install -e .
fi
