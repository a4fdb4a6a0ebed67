#!/usr/bin/env bash
# Set-up shared by run.sh and test.sh: build tools, Rust check, models. Idempotent and quick
# when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)   # lancedb runs protoc
command -v cmake >/dev/null 2>&1 || need+=(cmake)                 # llama.cpp builds with CMake
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
# bindgen (llama-cpp-sys-2) needs libclang.
if ! ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "sovrag set-up: installing ${need[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "sovrag set-up: please install: ${need[*]} (no apt-get here)" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "sovrag set-up: cargo not found. Install Rust with rustup (https://rustup.rs) and run again." >&2
  exit 1
fi
python3 scripts/fetch_models.py ${SOVRAG_WHEELS:+--wheels "$SOVRAG_WHEELS"}
