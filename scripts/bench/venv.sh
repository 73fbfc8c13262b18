#!/usr/bin/env bash
# Makes sure the peers' Python venv matches scripts/bench/requirements.txt (creating or
# re-creating it if not) and prints its path: $FLASH_BENCH_VENV, else
# ~/.cache/flash-bench-peers-venv. Shared by bench.sh, bench-python.sh and bench-js.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${FLASH_BENCH_VENV:-$HOME/.cache/flash-bench-peers-venv}"
if ! cmp -s "$venv/.requirements" scripts/bench/requirements.txt; then
    echo "==> peers' Python venv at $venv (scripts/bench/requirements.txt)" >&2
    rm -rf "$venv" && python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/bench/requirements.txt >&2
    cp scripts/bench/requirements.txt "$venv/.requirements"
fi
echo "$venv"
