#!/usr/bin/env bash
# Set everything up (.venv with the CPU torch wheel on machines without a GPU) and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m integration`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
