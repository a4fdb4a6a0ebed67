#!/usr/bin/env bash
# Scale of indexing and watching: a generated tree of N small files (default 20,000) in 200
# folders. Prints the time and peak RSS of `sovrag index`, then starts `serve --watch` on the
# same tree and prints its start-up reconcile time, resident memory, file descriptors and
# inotify watches once it has settled, and again after each of three bursts of 500 edits.
#
#   scripts/bench_scale.sh [N]
set -euo pipefail
N=${1:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SOVRAG_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sovrag}
WORK=$(mktemp -d /tmp/sovrag-scale-XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
export XDG_CONFIG_HOME="$WORK/no-config"

python3 - "$WORK/tree" "$N" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
words = "river stone copper lantern meadow quarry falcon harbor cedar thistle ember saffron".split()
for i in range(n):
    d = os.path.join(root, f"dir{i % 200:03d}")
    os.makedirs(d, exist_ok=True)
    body = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
    with open(os.path.join(d, f"note{i:05d}.md"), "w") as f:
        f.write(f"# Note {i}\n\nUnique marker scalemark{i}. {body}\n")
EOF
echo "tree: $N files in 200 folders"

/usr/bin/time -f "index: %e s wall, %M KB peak RSS" \
  "$BIN" --data-dir "$WORK/data" index "$WORK/tree" 2>&1 | grep -v "^\s*$" | tail -2

"$BIN" --data-dir "$WORK/data" --bind "127.0.0.1:$PORT" --watch "$WORK/tree" serve \
  >"$WORK/serve.log" 2>&1 &
PID=$!
settle() {
  local start=$1
  while :; do
    sleep 0.5
    s=$(curl -sf "http://127.0.0.1:$PORT/v1/status" || true)
    if [ -n "$s" ] && python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if not s["indexing"] and s["queue"]==0 else 1)' "$s"; then
      break
    fi
  done
  python3 -c "import time; print(f'{time.time()-$start:.1f}')"
}
report() {
  local rss fds watches
  rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  fds=$(ls /proc/$PID/fd | wc -l)
  watches=$(cat /proc/$PID/fdinfo/* 2>/dev/null | grep -c '^inotify' || true)
  echo "$1: RSS $((rss / 1024)) MB, $fds file descriptors, $watches inotify watches"
}
T0=$(python3 -c 'import time; print(time.time())')
sleep 2
echo "serve --watch: start-up reconcile settled in $(settle "$T0") s (includes model loading)"
report "serve --watch, settled"

# Three bursts of 500 edits: memory should level off, not grow with every burst.
for burst in 1 2 3; do
  T0=$(python3 -c 'import time; print(time.time())')
  python3 - "$WORK/tree" "$burst" <<'EOF'
import os, sys
root, burst = sys.argv[1], sys.argv[2]
for i in range(500):
    p = os.path.join(root, f"dir{i % 200:03d}", f"note{i:05d}.md")
    with open(p, "a") as f:
        f.write(f"\nEdited in burst {burst}: burstmark{burst}x{i}.\n")
EOF
  sleep 1
  echo "burst $burst: 500 edits applied in $(settle "$T0") s"
  report "after burst $burst"
done
hit=$(curl -sf -XPOST "http://127.0.0.1:$PORT/v1/query" -H 'content-type: application/json' \
  -d '{"query":"burstmark3x499","k":3}' | python3 -c 'import json,sys; print(any("burstmark3x499" in h["text"] for h in json.load(sys.stdin)["hits"]))')
echo "last edit searchable: $hit"
