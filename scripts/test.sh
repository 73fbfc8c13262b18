#!/usr/bin/env bash
# Runs Flash's whole test suite on a fresh machine: installs what the tests need (the
# wasm32-wasip2 target, a Python venv with the pinned real `runpod` package and
# componentize-py under target/test-venv; Node.js and npm (as root, from Debian, when
# missing) and the JS SDK's pinned TypeScript; for the container image test the
# x86_64-unknown-linux-musl target, and as root musl-tools and buildah from Debian; for the
# console test Debian's chromium, as root), then
# runs every test of the workspace. Guest components are compiled by the tests themselves
# (see tests/src/lib.rs); the image test builds a release musl flash-host in the same target
# dir (about 15 minutes on 2 cores the first time, cached after: tests/tests/all/image.rs).
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

echo "==> the CPU image's build tools (scripts/build-image.sh --prereqs)"
if ! scripts/build-image.sh cpu --prereqs; then
    echo "warning: the container image test (image::) will fail until these are installed" >&2
fi

# JavaScript components (tests/tests/all/js.rs, the polyglot example) are built with Node.js
# and npm: `flash build` installs its pinned esbuild and componentize-js with npm itself,
# and the SDK's unit tests install the pinned TypeScript (guest-sdk/js/package-lock.json).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing nodejs and npm from Debian (for JavaScript components)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null 2>&1; then
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
        fi
    else
        echo "warning: no node/npm; the JavaScript tests (js::, python::polyglot*) will fail until Node.js 20+ and npm are installed" >&2
    fi
fi
if command -v npm >/dev/null 2>&1; then
    echo "==> npm ci in guest-sdk/js (the JS SDK's pinned TypeScript)"
    (cd guest-sdk/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# The console test (tests/tests/all/console.rs) drives a real headless browser.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${FLASH_TEST_CHROMIUM:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing chromium from Debian (for the console test)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
        fi
    else
        echo "warning: no chromium; the console test (console::) will fail until it is installed (apt-get install chromium) or FLASH_TEST_CHROMIUM names one" >&2
    fi
fi

# The end-to-end tests run the `flash` and `flash-host` binaries. `cargo test` builds a
# package's binaries only for that package's own integration tests, and flash-cli has none:
# build them all first, or the tests would run whatever `flash` an earlier build left here.
echo "==> cargo build --workspace --bins"
cargo build --workspace --bins --locked
echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"
# Every bench in its seconds-long smoke form (without `--bench`), so a bench that no
# longer runs is found here and not when someone needs its numbers.
echo "==> cargo test --workspace --benches (smoke runs)"
cargo test --workspace --locked --benches "$@"
