#!/usr/bin/env bash
# Here (where Rust is): build what the GPU machine runs into .device/ (ignored by git), to be
# carried there: `run` with carry [".device"] and command `bash scripts/device-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p downhill-cli
tests=$(cargo test --release -p downhill-cuda --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
rm -rf .device && mkdir -p .device
cp target/release/downhill .device/
for t in $tests; do
  case "$(basename "$t")" in
    gpu-*) cp "$t" .device/gpu-tests ;;
    host_emulation-*) cp "$t" .device/host-emulation ;;
  esac
done
strip .device/* 2>/dev/null || true
ls -la .device
