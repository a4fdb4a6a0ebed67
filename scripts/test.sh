#!/usr/bin/env bash
# One command on a fresh machine: set up, build once (release: the tests drive the release
# binary, and llama.cpp unoptimised is too slow to test), run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace --all-targets
cargo test --release --workspace "$@"
