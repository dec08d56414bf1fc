#!/usr/bin/env bash
# Registers and spills of the benchmark's GPU kernels, without a GPU: NVRTC writes their PTX
# (examples/ptx.rs) and ptxas assembles it for an architecture and reports. Needs NVRTC and
# ptxas, e.g. `pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12` into a venv, with the
# venv's python3 first on PATH or VENV set to it. Arguments: ARCH (sm_90), then a kernel
# layout as `bench --device cuda --tuning` takes it (e.g. `unroll=2,min-blocks=4`).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-sm_90}
shift || true
py=${VENV:+$VENV/bin/}python3
site=$($py -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH="$site/nvidia/cuda_nvrtc/lib:${LD_LIBRARY_PATH:-}"
ptxas="$site/nvidia/cuda_nvcc/bin/ptxas"
out=$(mktemp -d)
cargo run -q --release -p downhill-cuda --example ptx -- "$out" "compute_${arch#sm_}" "$@" > /dev/null
for f in "$out"/*.ptx; do
  printf '%-22s ' "$(basename "$f" .ptx)"
  "$ptxas" -v --gpu-name "$arch" -o "$out/k.cubin" "$f" 2>&1 \
    | grep -E 'Used [0-9]+ registers' | sed -E 's/.*Used ([0-9]+) registers.*/\1 registers/' | tr '\n' ' '
  "$ptxas" -v --gpu-name "$arch" -o "$out/k.cubin" "$f" 2>&1 \
    | grep -Eo '[0-9]+ bytes spill stores' | head -1
done
rm -rf "$out"
