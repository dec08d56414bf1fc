#!/usr/bin/env bash
# The GPU code path without a GPU: builds the stand-in CUDA driver and NVRTC
# (crates/downhill-cuda/tests/fake_cuda: host memory, kernels compiled for the host with c++)
# and runs `verify --device cuda` (arguments go to it) and the GPU tests over them. It checks
# what the GPU path computes, not its speed: about 6 minutes in all on 2 cores (each block's
# 256 threads are OS threads). Needs a C++20 compiler (`c++`).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/target/fake-cuda"
# Kernels compiled for the host are kept by their source's hash; an edit of shim.h needs
# `rm -rf target/fake-cuda`.
mkdir -p "$dir/modules"
src=crates/downhill-cuda/tests/fake_cuda
c++ -std=c++20 -O1 -pthread -shared -fPIC -DDOWNHILL_SHIM="\"$PWD/$src/shim.h\"" -o "$dir/libcuda.so" \
  "$src/cuda.cpp" -ldl
c++ -std=c++17 -O1 -shared -fPIC -o "$dir/libnvrtc.so" "$src/nvrtc.cpp"
export LD_LIBRARY_PATH="$dir:${LD_LIBRARY_PATH:-}" DOWNHILL_FAKE_CUDA_DIR="$dir/modules"
cargo run --release -- verify --device cuda "$@"
cargo test --release -p downhill-cuda --test gpu -- --nocapture
