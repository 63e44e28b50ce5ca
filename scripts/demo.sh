#!/usr/bin/env bash
# Set everything up and run the main job on the bundled model organisms:
# eval -> diagnose -> report for each student; prints a summary and where the HTML reports are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/distill-doctor demo "$@"
