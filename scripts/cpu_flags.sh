#!/usr/bin/env bash
# Prints `export GGML_…=ON` lines for the x86 instruction sets this CPU has beyond the AVX2
# that llama.cpp is built for by default; run.sh and test.sh evaluate them before building:
#   eval "$(scripts/cpu_flags.sh)"
# Why: llama-cpp-sys-2 builds llama.cpp for AVX2 unless told otherwise, and reading a prompt
# (most of an answer's time on a CPU) is about 1.4x faster with AVX-512 and VNNI on a CPU
# that has them (Qwen2.5-Coder-1.5B on 2 cores: 52 -> 76 prompt tokens/s).
# The binary then runs only on CPUs with these instructions: set SOVRAG_PORTABLE_BUILD=1 to
# build one for other machines. The flags take effect when llama.cpp is compiled; a target
# dir that already holds a build of it keeps that build until `cargo clean -p llama-cpp-sys-2`.
# CPUINFO names another file to read (tests).
set -euo pipefail
[ "${SOVRAG_PORTABLE_BUILD:-0}" = 1 ] && exit 0
cpuinfo="${CPUINFO:-/proc/cpuinfo}"
[ -r "$cpuinfo" ] || exit 0
flags=" $(grep -m1 '^flags' "$cpuinfo" | cut -d: -f2) "
has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
if has avx512f avx512cd avx512vl avx512dq avx512bw; then
  echo "export GGML_AVX512=ON"
  has avx512_vnni && echo "export GGML_AVX512_VNNI=ON"
  has avx512vbmi && echo "export GGML_AVX512_VBMI=ON"
  has avx512_bf16 && echo "export GGML_AVX512_BF16=ON"
fi
has avx_vnni && echo "export GGML_AVX_VNNI=ON"
has bmi2 && echo "export GGML_BMI2=ON"
exit 0
