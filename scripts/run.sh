#!/usr/bin/env bash
# One command on a fresh machine: set up, build, index the built-in guide (corpus/), and serve
# it with the folder watcher on. Extra arguments go to `sovrag serve` (e.g. --watch ~/notes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# llama.cpp for the instruction sets this CPU has (AVX-512, VNNI): see the script.
eval "$(scripts/cpu_flags.sh)"
cargo build --release --bin sovrag
target="${CARGO_TARGET_DIR:-target}"
sovrag="$target/release/sovrag"
"$sovrag" index corpus
bind="${SOVRAG_BIND:-127.0.0.1:7878}"
cat <<MSG

sovrag is serving the built-in guide (corpus/), watching it for changes.
  browser:  http://$bind/
  search:   curl -s http://$bind/v1/query -H 'Content-Type: application/json' -d '{"query": "watch another folder", "k": 3}'
  ask:      curl -s http://$bind/v1/ask -H 'Content-Type: application/json' -d '{"question": "How do I watch another folder?"}'
  CLI:      $sovrag ask "How do I watch another folder?"
Stop with Ctrl-C.

MSG
exec "$sovrag" serve --bind "$bind" --watch corpus "$@"
