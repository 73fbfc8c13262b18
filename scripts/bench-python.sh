#!/usr/bin/env bash
# Python functions on flash-host, measured against the Rust quickstart and FastAPI in one run
# (release profile, loopback, wrk). Prints a markdown report to stdout; see
# docs/benchmarks.md ("Python functions") for the numbers of the last run.
#
#   ./scripts/bench-python.sh            # ~2 minutes after the release build
#
# Rows: GET /stats requests/s at concurrency 1 and 16 for the Python quickstart, the Rust
# quickstart (both a fresh instance per request) and the same route in FastAPI/uvicorn
# (how runpod-flash serves load-balanced endpoints); boot to the first answer with a warm
# AOT cache; resident memory of an idle worker; component and artifact sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flash-target}"
duration="${BENCH_SECONDS:-5}"

command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
venv=$(scripts/bench/venv.sh) # the peers, pinned: scripts/bench/requirements.txt

source scripts/bench/lib.sh

step "release build of flash and flash-host"
cargo build --release --locked -p flash-cli -p flash-host >&2
bin="$CARGO_TARGET_DIR/release"

step "building the quickstarts"
(cd examples/quickstart-python && "$bin/flash" build >&2)
(cd examples/quickstart && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/guests" "$bin/flash" build >&2)

step "Python quickstart on flash-host"
measure_flash python "$root/examples/quickstart-python/.flash/artifact.tar.gz"
step "Rust quickstart on flash-host"
measure_flash rust "$root/examples/quickstart/.flash/artifact.tar.gz"

step "FastAPI/uvicorn"
port=$(free_port)
measure_process fastapi env BENCH_STATS_BODY='{"app": "quickstart-python", "version": "0.1.0"}' FLASH_RESOURCE_NAME=api \
    "$venv/bin/uvicorn" --app-dir scripts/bench fastapi_stats:app --host 127.0.0.1 --port "$port" --log-level warning

echo "Run: $(machine_facts), release profile, wrk ${duration}s per row, loopback."
echo
echo "| GET /stats | req/s c=1 | p50 ms | p99 ms | req/s c=16 | p50 ms | p99 ms | vs FastAPI c=1 | vs FastAPI c=16 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for label in python rust fastapi; do
    echo "| $label | $(field $label.c1 1) | $(us_to_ms "$(field $label.c1 2)") | $(us_to_ms "$(field $label.c1 3)") | $(field $label.c16 1) | $(us_to_ms "$(field $label.c16 2)") | $(us_to_ms "$(field $label.c16 3)") | $(ratio "$(field $label.c1 1)" "$(field fastapi.c1 1)")× | $(ratio "$(field $label.c16 1)" "$(field fastapi.c16 1)")× |"
done
echo
echo "| | boot to first answer, ms (warm AOT cache, median of 5) | idle RSS after 200 requests, MiB | component KiB | artifact KiB |"
echo "|---|---:|---:|---:|---:|"
echo "| python (flash-host) | ${result[python.boot]} | $((result[python.rss] / 1024)) | $(component_kib examples/quickstart-python/.flash/artifact.tar.gz) | $(size_kib examples/quickstart-python/.flash/artifact.tar.gz) |"
echo "| rust (flash-host) | ${result[rust.boot]} | $((result[rust.rss] / 1024)) | $(component_kib examples/quickstart/.flash/artifact.tar.gz) | $(size_kib examples/quickstart/.flash/artifact.tar.gz) |"
echo "| FastAPI/uvicorn (cold process) | ${result[fastapi.boot]} | $((result[fastapi.rss] / 1024)) | – | – |"
