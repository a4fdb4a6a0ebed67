#!/usr/bin/env bash
# One command on a fresh machine: set up, build once (release: the tests drive the release
# binary, and llama.cpp unoptimised is too slow to test), run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# --tests: the models the suite loads as well as the default set.
scripts/setup.sh --tests
# The real clients (openai, llm, schemathesis, nginx, chromium) the suite drives.
SOVRAG_CLIENTS_VENV=$(scripts/clients_venv.sh | tail -n 1)
export SOVRAG_CLIENTS_VENV
# llama.cpp for the instruction sets this CPU has (AVX-512, VNNI): see the script.
eval "$(scripts/cpu_flags.sh)"
cargo build --release --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo's last line is the last crate's doc tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "sovrag: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
