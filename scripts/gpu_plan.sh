#!/usr/bin/env bash
# A sweep plan on a bare GPU machine (the device tool's), its results packed into at most 8 files in $OUT.
#   OUT=<folder> GIT_COMMIT=<sha> bash scripts/gpu_plan.sh PLAN TIME_LIMIT_S [sweep options, e.g. --smoke]
# Second call of the two-transfer staging (/work/shared/device/README.md), carrying .device/cifar_b: it
# completes /root/cifar and expands it into /root/data unless CIFAR10_ROOT is set already. Uses the
# calibration gpu_calibrate.sh left in /root/calib on the same machine, if any. Runs from the repository
# root without installing anything (torch, torchvision, numpy, PyYAML, safetensors, pandas suffice).
# Brings back: summary.csv, sweep.log, and one <run>.tar.gz per run folder without its checkpoint (and
# without model.safetensors unless KEEP_WEIGHTS=1); beyond 6 runs the rest share more_runs.tar.gz.
set -euo pipefail
plan=$1 limit=$2
shift 2
: "${OUT:?set OUT to the folder that comes back}" "${GIT_COMMIT:?set GIT_COMMIT to the commit being run}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 GIT_COMMIT
if [ -z "${CIFAR10_ROOT:-}" ]; then
  if [ ! -d /root/data/cifar-10-batches-py ]; then
    mkdir -p /root/cifar && cp .device/cifar_b/* /root/cifar/ && python3 /root/cifar/expand.py /root/data
  fi
  export CIFAR10_ROOT=/root/data
fi
calib=${CALIBRATION:-/root/calib}
extra=()
[ -d "$calib" ] && extra=(--calibration "$calib")
work=${WORK:-$(mktemp -d)}  # the run folders, checkpoints included (WORK: keep them somewhere known)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/sweep.log" || true
python -m cifar_resnet sweep "$plan" --out "$work" --time-limit "$limit" ${extra[@]+"${extra[@]}"} "$@" 2>&1 \
  | tee -a "$OUT/sweep.log" || true
cp "$work/summary.csv" "$OUT/" 2>/dev/null || true

# one tar per run that left a folder, in the plan's order; at most 6 so that 8 files come back in all
mapfile -t done_runs < <(tail -n +2 "$work/summary.csv" 2>/dev/null | cut -d, -f1 | while read -r r; do
  [ -d "$work/$r" ] && echo "$r"; done)
excludes=(--exclude=checkpoint.pt)
[ "${KEEP_WEIGHTS:-0}" = 1 ] || excludes+=(--exclude=model.safetensors)
for i in "${!done_runs[@]}"; do
  [ "$i" -lt 5 ] || [ "${#done_runs[@]}" -le 6 ] || break
  tar -czf "$OUT/${done_runs[$i]}.tar.gz" "${excludes[@]}" -C "$work" "${done_runs[$i]}"
done
if [ "${#done_runs[@]}" -gt 6 ]; then
  tar -czf "$OUT/more_runs.tar.gz" "${excludes[@]}" -C "$work" "${done_runs[@]:5}"
fi
ls -l "$OUT"
