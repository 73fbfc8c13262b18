#!/usr/bin/env bash
# Runs Flash's whole test suite on a fresh machine: installs what the tests need (the
# wasm32-wasip2 target, a Python venv with the pinned real `runpod` package and
# componentize-py under target/test-venv), then runs every test of the workspace.
# Guest components are compiled by the tests themselves (see tests/src/lib.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

echo "==> toolchain: $(rustc --version)"
rustup target add wasm32-wasip2 >/dev/null

venv="${FLASH_TEST_VENV:-$PWD/target/test-venv}"
if [ "$(cat "$venv/.flash-requirements" 2>/dev/null)" != "$(cat tests/requirements.txt)" ]; then
    echo "==> creating the test venv at $venv (tests/requirements.txt)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
    cp tests/requirements.txt "$venv/.flash-requirements"
fi
export FLASH_TEST_VENV="$venv"

echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"
