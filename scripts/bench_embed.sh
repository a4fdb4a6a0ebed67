#!/usr/bin/env bash
# Embedding throughput, sovrag vs the Python reference (shared/bench/pyref.py: ONNX Runtime +
# the same int8 MiniLM), on the same SciFact documents and thread count, run side by side.
# Usage: scripts/bench_embed.sh [N_DOCS=1000] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"; threads="${2:-2}"
bench=../shared/bench
models="${SOVRAG_MODELS:-$HOME/.cache/sovrag/models}"
sovrag="${CARGO_TARGET_DIR:-target}/release/sovrag"
venv="${PYREF_VENV:-/tmp/pyref}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q -r "$bench/requirements.txt"
fi
py=$(ORT_DYLIB_PATH= "$venv/bin/python" "$bench/pyref.py" "$bench/scifact" --onnx "$models/minilm/model.onnx" \
  --tokenizer "$models/minilm/tokenizer.json" --threads "$threads" --limit "$n" | head -1)
rs=$("$sovrag" --threads "$threads" eval --beir "$bench/scifact" --embed-bench "$n" --json)
echo "pyref : $py"
echo "sovrag: $rs"
python3 - "$py" "$rs" <<'PY'
import json, sys
p, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# Same documents, same model, same threads: the ratio of wall times is the throughput ratio.
# (pyref counts tokens after padding every text to the longest, so its tokens/s is inflated;
# sovrag counts real tokens. The time ratio compares like with like.)
real = r['embed_tokens']
print(f"pyref  {p['embed_s']:.2f}s, {real / p['embed_s']:.0f} real tokens/s")
print(f"sovrag {r['embed_s']:.2f}s, {real / r['embed_s']:.0f} real tokens/s")
print(f"sovrag/pyref throughput ratio: {p['embed_s'] / r['embed_s']:.2f}x ({p['threads']} threads, {p['embed_docs']} docs)")
PY
