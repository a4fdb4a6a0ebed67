#!/usr/bin/env bash
# The real clients the test suite drives against a running server (tests/clients/): a Python
# venv with the official openai package, the llm CLI, schemathesis and selenium, and Debian's
# nginx, chromium and chromium-driver. Test-only: running sovrag needs none of it.
#
#   scripts/clients_venv.sh          install what is missing, make or reuse the venv; print
#                                    its path on the last line
#   scripts/clients_venv.sh --check  only report each requirement as found / missing; exit 1
#                                    if any is
#
# The venv lives outside the clone (SOVRAG_CLIENTS_VENV, default ~/.cache/sovrag-ci/clients-venv)
# and is remade only when tests/clients/requirements.txt changes. As in setup.sh, where dpkg
# exists a Debian package decides whether a program is there; Python's venv is decided by
# trying it (a pyenv Python has it without Debian's python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: scripts/clients_venv.sh [--check]" >&2; exit 2 ;;
esac

have_dpkg() { command -v dpkg-query >/dev/null 2>&1; }

# Any of the packages installed.
any_installed() {
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] && return 0
  done
  return 1
}

missing=()
# One requirement: its name, the Debian package to install, the packages that satisfy it.
require() {
  local name=$1 pkg=$2 where=""
  shift 2
  if [ "$name" = venv ]; then
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && where="python3 -m venv"
  elif have_dpkg; then
    any_installed "$@" && where="package $pkg"
  elif command -v "$name" >/dev/null 2>&1; then
    where=$(command -v "$name")
  elif [ -x "/usr/sbin/$name" ]; then
    where="/usr/sbin/$name"
  fi
  if [ -n "$where" ]; then
    printf '  found    %-12s %-16s %s\n' "$name" "$pkg" "$where"
  else
    printf '  missing  %-12s %-16s install: apt-get install -y %s\n' "$name" "$pkg" "$pkg"
    missing+=("$pkg")
  fi
}

check() {
  missing=()
  require nginx        nginx-light     nginx-light nginx nginx-core nginx-full
  require chromium     chromium        chromium
  require chromedriver chromium-driver chromium-driver
  require venv         python3-venv    python3-venv
}

if [ "$check_only" = 1 ]; then
  echo "sovrag clients check:"
  check
  [ ${#missing[@]} -eq 0 ] || { echo "something is missing"; exit 1; }
  exit 0
fi
check >&2
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "clients: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
    check >&2
    [ ${#missing[@]} -eq 0 ] || { echo "clients: still missing ${missing[*]}" >&2; exit 1; }
  else
    echo "clients: missing ${missing[*]}: install them (apt-get install ${missing[*]}), or run as root" >&2
    exit 1
  fi
fi

venv="${SOVRAG_CLIENTS_VENV:-$HOME/.cache/sovrag-ci/clients-venv}"
req=tests/clients/requirements.txt
stamp="$venv/.requirements-sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "clients: making $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"
