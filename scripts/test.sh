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
moto_pid=""
trap 'rm -f "$log" "$log.moto"; [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null' EXIT
# An S3-compatible server on loopback (moto, from the clients' venv) for the tests of an
# index on object storage; they read its address from SOVRAG_TEST_S3_ENDPOINT.
moto_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SOVRAG_CLIENTS_VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$log.moto" 2>&1 &
moto_pid=$!
export SOVRAG_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"
python3 - "$SOVRAG_TEST_S3_ENDPOINT" <<'PY'
import sys, time, urllib.request
url = sys.argv[1]
for _ in range(100):
    try:
        # moto takes unsigned requests: make the suite's bucket.
        urllib.request.urlopen(urllib.request.Request(url + "/sovrag-test", method="PUT"), timeout=5)
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit(f"moto_server did not start at {url}")
PY
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo's last line is the last crate's doc tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "sovrag: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
