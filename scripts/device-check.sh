#!/usr/bin/env bash
# On the GPU machine (no Rust there): the GPU tests, `verify --device cuda`, and downhill's and
# torch's steps timed on the same card in one run. Needs .device/ from device-prepare.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# NVRTC: the toolkit's, else a pip package's (torch's cu13 wheels ship `libnvrtc.so.13`, a name
# cudarc does not try: its list ends at `.so.12`). Whichever is found is linked as `libnvrtc.so`
# in a directory put first on the library path.
nvrtc=$( (ls /usr/local/cuda*/lib64/libnvrtc.so* /usr/local/cuda*/targets/*/lib/libnvrtc.so* 2>/dev/null
  python3 - <<'PY' 2>/dev/null
import glob, site
for d in site.getsitepackages():
    for p in sorted(glob.glob(d + "/nvidia/**/libnvrtc.so*", recursive=True)):
        print(p)
PY
) | grep -v -e builtins -e '\.alt\.' | head -1)
echo "NVRTC: ${nvrtc:-none found}"
if [ -n "$nvrtc" ]; then
  mkdir -p /tmp/downhill-nvrtc
  ln -sf "$nvrtc" /tmp/downhill-nvrtc/libnvrtc.so
  export LD_LIBRARY_PATH="/tmp/downhill-nvrtc:$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
fi
export DOWNHILL_REFERENCE_DIR="$PWD/crates/downhill/tests/reference"
# In one `run` command (600 s at most, from 15 minutes of device time a session): the goal
# figures first, so that a cut-off run still brings them back; the time limits add up to 570 s.
echo "== verify --device cuda"
timeout 60 .device/downhill verify --device cuda -q 2>&1 | tee "$OUT/verify.txt"
echo "== downhill bench --device cuda"
timeout 150 .device/downhill bench --device cuda --optimizers adamw,sgd-momentum \
  --non-finite unchecked --reps 20 --json > "$OUT/bench.json" 2> "$OUT/bench.err"
cat "$OUT/bench.json" "$OUT/bench.err"
echo "== torch on the same card"
PYTHONUNBUFFERED=1 timeout 150 python3 bench/torch_cuda_step.py 2>&1 | tee "$OUT/torch.txt"
echo "== other kernel layouts (printed as they come; registers: scripts/ptx-report.sh)"
timeout 60 .device/downhill bench --device cuda --optimizers adamw,sgd-momentum \
  --non-finite unchecked --reps 10 --tuning 'unroll=2;unroll=2,min-blocks=4;chunk=65536' \
  2>&1 | tee "$OUT/tuning.txt"
echo "== GPU tests"
timeout 150 .device/gpu-tests --nocapture 2>&1 | tee "$OUT/gpu-tests.txt"
