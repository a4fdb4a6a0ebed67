#!/usr/bin/env bash
# The real clients the test suite drives against a running server (tests/clients/): a Python
# venv with the official openai package, the llm CLI, schemathesis and selenium, and Debian's
# nginx, chromium and chromium-driver. Test-only: running sovrag needs none of it.
#
#   scripts/clients_venv.sh    make or reuse the venv; print its path on the last line
#
# The venv lives outside the clone (SOVRAG_CLIENTS_VENV, default ~/.cache/sovrag-ci/clients-venv)
# and is remade only when tests/clients/requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SOVRAG_CLIENTS_VENV:-$HOME/.cache/sovrag-ci/clients-venv}"
req=tests/clients/requirements.txt
stamp="$venv/.requirements-sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)

# Debian packages, decided by dpkg where there is one, else by the program on PATH.
missing=()
for p in nginx:nginx-light chromium:chromium chromedriver:chromium-driver; do
  prog=${p%%:*} pkg=${p#*:}
  if command -v dpkg-query >/dev/null 2>&1; then
    case "$pkg" in
      # Any nginx package will do; dpkg-query fails on names it has never heard of.
      nginx-light) { dpkg-query -W -f='${Status}\n' nginx-light nginx nginx-core 2>/dev/null || true; } | grep -q "install ok installed" || missing+=("$pkg") ;;
      *) [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$pkg") ;;
    esac
  else
    command -v "$prog" >/dev/null 2>&1 || command -v "/usr/sbin/$prog" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "clients: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
  else
    echo "clients: missing ${missing[*]}: install them (apt-get install ${missing[*]}), or run as root" >&2
    exit 1
  fi
fi

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "clients: making $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"
