#!/usr/bin/env bash
# One recorded GPU run on a bare machine (the device tool's), its record copied under $OUT.
#   GIT_COMMIT=<sha> CIFAR10_ROOT=/root/data bash scripts/gpu_job.sh CONFIG NAME TIME_LIMIT_S
# Runs from the repository root without installing it (the GPU image has torch, torchvision, numpy,
# PyYAML, safetensors, tqdm). Writes $OUT/NAME/{config.yaml,history.csv,metrics.json,model.safetensors}
# and $OUT/NAME/throughput.json; the checkpoint stays behind (too large to bring back, not needed).
set -euo pipefail
config=$1 name=$2 limit=$3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder that comes back}" "${GIT_COMMIT:?set GIT_COMMIT to the commit being run}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
work=$(mktemp -d)
mkdir -p "$OUT/$name"
python -m cifar_resnet train --config "$config" --out "$work/$name" --time-limit "$limit" \
  | tee "$OUT/$name/train.log" || true
cp "$work/$name"/{config.yaml,history.csv,metrics.json} "$OUT/$name/" 2>/dev/null || true
cp "$work/$name/model.safetensors" "$OUT/$name/" 2>/dev/null || true
python benchmarks/throughput.py --config "$config" --steps 50 --json "$OUT/$name/throughput.json" || true
