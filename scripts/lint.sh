#!/usr/bin/env bash
# The habits CI enforces, from the project's own venv (no network): ruff lint, ruff format, mypy.
# The same three run before each commit through .pre-commit-config.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
