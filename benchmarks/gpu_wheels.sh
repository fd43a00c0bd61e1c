#!/usr/bin/env bash
# Fetch, on a machine with pip access, the wheels that benchmarks/gpu_check.sh installs on the GPU
# machine (its image has torch, triton, numpy, pillow, pluggy, accelerate, safetensors,
# huggingface_hub, timm, torchvision, tqdm, pyyaml, regex, scikit-learn, but not these).
# Usage, from the repository root:  bash benchmarks/gpu_wheels.sh   (then carry ".whl")
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for spec in open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pydantic==2.14.4 \
            pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
            typing-extensions==4.16.0; do
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d .whl "$spec"
done
ls -la .whl
