#!/usr/bin/env bash
# Seconds per epoch of each run of a plan, measured on the GPU before the plan runs there.
#   OUT=<folder> bash scripts/gpu_calibrate.sh PLAN [sweep options, e.g. --smoke]
# First call of the two-transfer staging (/work/shared/device/README.md), carrying .device/cifar_a: it
# copies that part into /root/cifar, writes each run's configuration into /root/calib and times it with
# benchmarks/throughput.py on random images (no data needed). That fills torch.compile's cache in /tmp
# for the next call on the same machine, and gpu_plan.sh reads /root/calib in place of the plan's
# estimates. Brings back calibration.tar.gz (the configurations and their JSON figures) and calibrate.log.
# STEPS and WARMUP set the timed and untimed steps (default 40 and 15); each run's timing is cut at 150 s,
# and runs not begun within BUDGET seconds (default 240) are left to the plan's estimates, so that the
# results come back inside a 300-s call.
# CALIBRATION moves the folder from /root/calib (then give it to gpu_plan.sh the same way).
set -euo pipefail
plan=$1
shift
: "${OUT:?set OUT to the folder that comes back}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${STAGE:-1}" = 1 ] && [ -d .device/cifar_a ]; then  # STAGE=0: a dry run that leaves /root alone
  mkdir -p /root/cifar && cp .device/cifar_a/* /root/cifar/
fi
calib=${CALIBRATION:-/root/calib}
mkdir -p "$calib" "$OUT"
log="$OUT/calibrate.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$log" || true
# in the plan's order, so that the runs that matter most are timed first
mapfile -t configs < <(python -m cifar_resnet sweep "$plan" --write-configs "$calib" "$@" 2>&1 | tee -a "$log" \
  | sed -n 's/^wrote //p')
deadline=$((SECONDS + ${BUDGET:-240}))
for config in "${configs[@]}"; do
  name=$(basename "$config" .yaml)
  left=$((deadline - SECONDS))
  if [ "$left" -lt 20 ]; then echo "== $name: not timed (BUDGET spent)" | tee -a "$log"; continue; fi
  echo "== $name" | tee -a "$log"
  timeout $((left < 150 ? left : 150)) python benchmarks/throughput.py --config "$config" --steps "${STEPS:-40}" --warmup "${WARMUP:-15}" \
    --json "$calib/$name.json" >> "$log" 2>&1 || echo "timing $name failed (see above)" | tee -a "$log"
done
tar -czf "$OUT/calibration.tar.gz" -C "$calib" .
