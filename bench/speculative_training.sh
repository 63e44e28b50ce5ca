#!/usr/bin/env bash
# Training a draft for speculative decoding on the organisms (bench/results/speculative.md).
# From one start (the clean organism's: layers 0 and 3 of the arithmetic teacher), train with
# each recipe on the clean organism's data, then measure each student's acceptance under the
# teacher along the teacher's outputs (bench/speculative_acceptance.py).
#   A: 200 steps from the start: sft, and gkd (configs/distillspec.yaml's other settings) with
#      tv / forward_kl / reverse_kl on-policy (lmbda 1) and tv off-policy (lmbda 0);
#   B: 100 more steps from A's sft student: sft, and gkd tv / forward_kl on-policy, tv off-policy;
#   C: 100 more steps from the capacity_gap organism's student (a small random-init model after
#      SFT, on its own data): sft, and gkd tv on-policy, forward_kl on-policy, tv at lmbda 0.5.
# About 30 minutes on one loaded CPU thread.   usage: bash bench/speculative_training.sh [WORKDIR]
set -euo pipefail
W=${1:-/tmp/specwork}
mkdir -p "$W"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
PY=${PY:-python}
$PY -c "
from distill_doctor.testing.layer_init import init_from_teacher_layers
init_from_teacher_layers('fixtures/organisms/models/teacher', (0, 3), '$W/init')"
DATA="--set teacher=fixtures/organisms/models/teacher --set data=fixtures/organisms/clean/train.jsonl"
DATA="$DATA --set batch_size=12 --set overwrite=true --seed 0 --quiet"
train() {  # name start steps lr method [extra --set ...]
  local name=$1 start=$2 steps=$3 lr=$4 method=$5; shift 5
  local t0; t0=$(date +%s)
  if [ "$method" = sft ]; then
    $PY -m distill_doctor train sft --config configs/distillspec.yaml --set method=sft $DATA \
      --set student="$start" --set steps="$steps" --set lr="$lr" --set output_dir="$W/$name" "$@"
  else
    $PY -m distill_doctor train gkd --config configs/distillspec.yaml $DATA \
      --set student="$start" --set steps="$steps" --set lr="$lr" --set output_dir="$W/$name" "$@"
  fi
  echo "$name $(( $(date +%s) - t0 )) s" >> "$W/times.txt"
}
train sft "$W/init" 200 2e-3 sft
train distillspec_tv "$W/init" 200 2e-3 gkd --set gkd.lmbda=1
train onpolicy_fkl "$W/init" 200 2e-3 gkd --set gkd.lmbda=1 --set gkd.divergence=forward_kl
train onpolicy_rkl "$W/init" 200 2e-3 gkd --set gkd.lmbda=1 --set gkd.divergence=reverse_kl
train offpolicy_tv "$W/init" 200 2e-3 gkd --set gkd.lmbda=0
train sft_then_sft "$W/sft" 100 1e-3 sft
train sft_then_tv "$W/sft" 100 1e-3 gkd --set gkd.lmbda=1
train sft_then_fkl "$W/sft" 100 1e-3 gkd --set gkd.lmbda=1 --set gkd.divergence=forward_kl
train sft_then_tv_offpolicy "$W/sft" 100 1e-3 gkd --set gkd.lmbda=0
CAP=fixtures/organisms/capacity_gap
DATA="${DATA/clean\/train.jsonl/capacity_gap/train.jsonl}"
train cap_sft "$CAP/model" 100 1e-3 sft
train cap_tv "$CAP/model" 100 1e-3 gkd --set gkd.lmbda=1
train cap_fkl "$CAP/model" 100 1e-3 gkd --set gkd.lmbda=1 --set gkd.divergence=forward_kl
train cap_tv_mix "$CAP/model" 100 1e-3 gkd --set gkd.lmbda=0.5  # = configs/distillspec.yaml
$PY bench/speculative_paired.py --workdir "$W" cap_tv_mix:cap_sft cap_tv:cap_sft cap_fkl:cap_sft \
  sft_then_tv:sft_then_sft sft_then_tv_offpolicy:sft_then_sft sft_then_fkl:sft_then_sft
$PY bench/speculative_acceptance.py --workdir "$W" init sft distillspec_tv onpolicy_fkl onpolicy_rkl \
  offpolicy_tv sft_then_sft sft_then_tv sft_then_fkl sft_then_tv_offpolicy "$CAP/model" \
  cap_sft cap_tv cap_fkl cap_tv_mix
