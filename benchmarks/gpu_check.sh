#!/usr/bin/env bash
# GPU check of issue 3 (fast text encoder, fused kernels), sized for < 8 minutes on one H100.
#
#   1. the Triton kernels against their PyTorch references on the GPU (fp32, fp16, bf16, small
#      and GPU-sized shapes, forward and backward) and the fast text encoder with the kernels
#      against the plain path;
#   2. the benchmark (reference pattern in fp16 weights vs the fast path in bf16 autocast),
#      classes 10 / 100 / 1000, K = 1 and 3, image-conditioned or not, batch 8 and 32, the
#      CoT-PT K=3, C=1000, B=32 memory check, prediction throughput.
#
# Run from the repository root on the device machine (results go to $OUT):
#   bash benchmarks/gpu_check.sh
# with ".whl" carried (fetch it first, where pip works: bash benchmarks/gpu_wheels.sh).
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } \
  > "$OUT/environment.txt" 2>&1

echo "== kernels vs references"
timeout 150 python3 -m cotprompt.kernels.selfcheck --device cuda --dtypes fp32,fp16,bf16 --large \
  > "$OUT/kernels.jsonl" 2> "$OUT/kernels.err"
echo "kernels: exit $? ($(grep -c '"ok": true' "$OUT/kernels.jsonl") ok," \
  "$(grep -c '"ok": false' "$OUT/kernels.jsonl") failed)"
grep '"ok": false' "$OUT/kernels.jsonl" | head -5

echo "== benchmark"
timeout 330 python3 benchmarks/bench_text_encoder.py --preset gpu --device cuda --max-minutes 4.5 \
  --output "$OUT/text_encoder_gpu.md" --json "$OUT/text_encoder_gpu.json" 2>&1 \
  | grep -v "No pretrained weights" | tee "$OUT/bench.log"
echo "benchmark: exit ${PIPESTATUS[0]}"
