#!/usr/bin/env bash
# Everything this project checks and measures on a CUDA machine, in one go, from the
# repository root: the GPU correctness checks, then the two benchmarks at the "gpu"
# preset in bf16 (with torch.compile rows and a profile of the training step).
# Logs and json go to $OUT (default benchmarks/results/gpu).
set -u
OUT=${OUT:-benchmarks/results/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  timeout "${CHECK_S:-150}" $PY benchmarks/check_gpu.py
} 2>&1 | tee "$OUT/check_gpu.log"
timeout "${TRAIN_S:-240}" $PY benchmarks/bench_train.py --compile --profile "$OUT/profile_train.txt" \
  --json "$OUT/train_gpu.json" 2>&1 | tee "$OUT/bench_train.log"
timeout "${DECODE_S:-180}" $PY benchmarks/bench_decode.py --compile --json "$OUT/decode_gpu.json" 2>&1 \
  | tee "$OUT/bench_decode.log"
