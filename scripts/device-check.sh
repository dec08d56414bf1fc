#!/usr/bin/env bash
# On the GPU machine (no Rust there): the GPU tests, `verify --device cuda`, and downhill's and
# torch's steps timed on the same card in one run. Needs .device/ from device-prepare.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# NVRTC: the toolkit's, else the pip package's.
pip_nvrtc=$(python3 -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${pip_nvrtc}:${LD_LIBRARY_PATH:-}"
ls /usr/local/cuda/lib64/libnvrtc.so* "$pip_nvrtc" 2>/dev/null | head -5
export DOWNHILL_REFERENCE_DIR="$PWD/crates/downhill/tests/reference"
echo "== GPU tests"
timeout 240 .device/gpu-tests --nocapture 2>&1 | tee "$OUT/gpu-tests.txt"
echo "== verify --device cuda"
timeout 120 .device/downhill verify --device cuda -q 2>&1 | tee "$OUT/verify.txt"
echo "== downhill bench --device cuda"
timeout 240 .device/downhill bench --device cuda --optimizers adamw,sgd-momentum \
  --non-finite unchecked --reps 20 --json > "$OUT/bench.json" 2> "$OUT/bench.err"
cat "$OUT/bench.json" "$OUT/bench.err"
echo "== torch on the same card"
PYTHONUNBUFFERED=1 timeout 240 python3 bench/torch_cuda_step.py 2>&1 | tee "$OUT/torch.txt"
