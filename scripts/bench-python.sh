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

echo "==> release build of flash and flash-host" >&2
cargo build --release --locked -p flash-cli -p flash-host >&2
bin="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building the quickstarts" >&2
(cd examples/quickstart-python && "$bin/flash" build >&2)
(cd examples/quickstart && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/guests" "$bin/flash" build >&2)

port=18500
# Waits (at most 30 s) until `url` answers 200; prints the milliseconds since `start_ns`.
wait_ready() {
    local url=$1 start_ns=$2
    for _ in $(seq 1 3000); do
        if curl -fs -o /dev/null "$url"; then
            echo $((($(date +%s%N) - start_ns) / 1000000))
            return 0
        fi
        sleep 0.01
    done
    echo "no answer from $url" >&2
    return 1
}

# Starts flash-host serving resource `api` of `artifact` with `cache`; sets $pid, $port.
start_host() {
    local artifact=$1 cache=$2
    port=$((port + 1))
    FLASH_RESOURCE_NAME=api FLASH_DISABLE_RP_AUTH=true FLASH_LISTEN_ADDR="127.0.0.1:$port" \
        FLASH_ARTIFACT_URL="$artifact" FLASH_CACHE_DIR="$cache" RUST_LOG=warn \
        "$bin/flash-host" >"$work/host-$port.log" 2>&1 &
    pid=$!
    pids+=("$pid")
}

# wrk at concurrency `c` on `url`: "req/s p50 p99" (latencies in ms).
load() {
    local url=$1 c=$2 threads=$(( $2 < 2 ? 1 : 2 ))
    wrk -t"$threads" -c"$c" -d"${duration}s" --latency "$url" >"$work/wrk.txt"
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
    if grep -q "Non-2xx" "$work/wrk.txt"; then echo "errors in wrk run:" >&2; cat "$work/wrk.txt" >&2; exit 1; fi
    echo "$rps $p50 $p99"
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

declare -A result
measure_flash() {
    local label=$1 artifact=$2
    local cache="$work/cache-$label"
    start_host "$artifact" "$cache"
    wait_ready "http://127.0.0.1:$port/stats" "$(date +%s%N)" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # Warm boots (AOT cache primed above): spawn → first /stats answer, median of 5.
    local boots=()
    for _ in 1 2 3 4 5; do
        local t0; t0=$(date +%s%N)
        start_host "$artifact" "$cache"
        boots+=("$(wait_ready "http://127.0.0.1:$port/stats" "$t0")")
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
    result[$label.boot]=$(printf '%s\n' "${boots[@]}" | sort -n | sed -n 3p)
    start_host "$artifact" "$cache"
    wait_ready "http://127.0.0.1:$port/stats" "$(date +%s%N)" >/dev/null
    for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/stats"; done
    result[$label.rss]=$(rss_kib "$pid")
    result[$label.c1]=$(load "http://127.0.0.1:$port/stats" 1)
    result[$label.c16]=$(load "http://127.0.0.1:$port/stats" 16)
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "==> Python quickstart on flash-host" >&2
measure_flash python "$root/examples/quickstart-python/.flash/artifact.tar.gz"
echo "==> Rust quickstart on flash-host" >&2
measure_flash rust "$root/examples/quickstart/.flash/artifact.tar.gz"

echo "==> FastAPI/uvicorn" >&2
cat >"$work/fastapi_stats.py" <<'EOF'
import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/stats")
def stats() -> dict:
    return {"app": "quickstart-python", "version": "0.1.0", "served_by": os.environ.get("FLASH_RESOURCE_NAME")}
EOF
port=$((port + 1))
t0=$(date +%s%N)
(cd "$work" && FLASH_RESOURCE_NAME=api exec "$venv/bin/uvicorn" fastapi_stats:app --host 127.0.0.1 --port "$port" --log-level warning) &
pid=$!
pids+=("$pid")
result[fastapi.boot]=$(wait_ready "http://127.0.0.1:$port/stats" "$t0")
for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/stats"; done
result[fastapi.rss]=$(rss_kib "$pid")
result[fastapi.c1]=$(load "http://127.0.0.1:$port/stats" 1)
result[fastapi.c16]=$(load "http://127.0.0.1:$port/stats" 16)
kill "$pid"; wait "$pid" 2>/dev/null || true

field() { echo "${result[$1]}" | awk -v n="$2" '{print $n}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
size_kib() { echo $(( $(stat -c %s "$1") / 1024 )); }
# The size of the (first) component inside an artifact.
component_kib() { tar tzvf "$1" | awk '/\.wasm$/ {print int($3 / 1024); exit}'; }

echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(rustc --version | cut -d' ' -f1-2), release profile, wrk ${duration}s per row, loopback."
echo
echo "| GET /stats | req/s c=1 | p50 ms | p99 ms | req/s c=16 | p50 ms | p99 ms | vs FastAPI c=1 | vs FastAPI c=16 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for label in python rust fastapi; do
    echo "| $label | $(field $label.c1 1) | $(field $label.c1 2) | $(field $label.c1 3) | $(field $label.c16 1) | $(field $label.c16 2) | $(field $label.c16 3) | $(ratio "$(field $label.c1 1)" "$(field fastapi.c1 1)")× | $(ratio "$(field $label.c16 1)" "$(field fastapi.c16 1)")× |"
done
echo
echo "| | boot to first answer, ms (warm AOT cache, median of 5) | idle RSS after 200 requests, MiB | component KiB | artifact KiB |"
echo "|---|---:|---:|---:|---:|"
echo "| python (flash-host) | ${result[python.boot]} | $((result[python.rss] / 1024)) | $(component_kib examples/quickstart-python/.flash/artifact.tar.gz) | $(size_kib examples/quickstart-python/.flash/artifact.tar.gz) |"
echo "| rust (flash-host) | ${result[rust.boot]} | $((result[rust.rss] / 1024)) | $(component_kib examples/quickstart/.flash/artifact.tar.gz) | $(size_kib examples/quickstart/.flash/artifact.tar.gz) |"
echo "| FastAPI/uvicorn (cold process) | ${result[fastapi.boot]} | $((result[fastapi.rss] / 1024)) | – | – |"
