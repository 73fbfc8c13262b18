#!/usr/bin/env bash
# JavaScript functions on flash-host, measured against Node's own HTTP server (node:http) and
# FastAPI in one run (release profile, loopback, wrk). Prints a self-contained markdown
# section to stdout; see docs/benchmarks.md ("JavaScript functions") for the numbers of the
# last run.
#
#   ./scripts/bench-js.sh            # ~3 minutes after the release build
#
# Rows: GET /stats requests/s at concurrency 1 and 16 for the JavaScript quickstart on
# flash-host (a fresh instance per request), the same route in node:http and in
# FastAPI/uvicorn (how runpod-flash serves load-balanced endpoints); boot to the first
# answer with a warm AOT cache; resident memory of an idle worker; component and artifact
# sizes; and where a fresh-instance call's time goes (`instantiate_cost`, in-process) for
# the JavaScript, Python and Rust quickstarts' `stats`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flash-target}"
duration="${BENCH_SECONDS:-5}"

command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
command -v node >/dev/null || { echo "node is required: apt-get install nodejs npm" >&2; exit 1; }
venv=$(scripts/bench/venv.sh) # the peers, pinned: scripts/bench/requirements.txt

echo "==> release build of flash, flash-host and instantiate_cost" >&2
cargo build --release --locked -p flash-cli -p flash-host >&2
cargo build --release --locked -p flash-runtime --example instantiate_cost >&2
bin="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building the quickstarts" >&2
(cd examples/quickstart-js && "$bin/flash" build >&2)
(cd examples/quickstart-python && "$bin/flash" build >&2)
(cd examples/quickstart && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/guests" "$bin/flash" build >&2)

port=18600
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

# wrk at concurrency `c` on `url`: "req/s p50 p99" (latencies as wrk prints them).
load() {
    local url=$1 c=$2 threads=$(( $2 < 2 ? 1 : 2 ))
    [ -d "$work" ] || { echo "the work dir $work is gone" >&2; exit 1; }
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

# Boot (median of 5 warm boots), idle RSS after 200 requests, and wrk at c=1 and c=16.
measure_flash() {
    local label=$1 artifact=$2
    local cache="$work/cache-$label"
    start_host "$artifact" "$cache"
    wait_ready "http://127.0.0.1:$port/stats" "$(date +%s%N)" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
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

# The same for a plain server process started by `command...` on $port (boot: cold start).
measure_process() {
    local label=$1; shift
    port=$((port + 1))
    local t0; t0=$(date +%s%N)
    "$@" &
    pid=$!
    pids+=("$pid")
    result[$label.boot]=$(wait_ready "http://127.0.0.1:$port/stats" "$t0")
    for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/stats"; done
    result[$label.rss]=$(rss_kib "$pid")
    result[$label.c1]=$(load "http://127.0.0.1:$port/stats" 1)
    result[$label.c16]=$(load "http://127.0.0.1:$port/stats" 16)
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "==> JavaScript quickstart on flash-host" >&2
measure_flash js "$root/examples/quickstart-js/.flash/artifact.tar.gz"

echo "==> node:http" >&2
cat >"$work/node_stats.mjs" <<'JS'
import { createServer } from 'node:http';

createServer((req, res) => {
  if (req.method === 'GET' && req.url.split('?')[0] === '/stats') {
    const body = JSON.stringify({
      app: 'quickstart-js', version: '0.1.0',
      served_by: process.env.FLASH_RESOURCE_NAME ?? null, idle_timeout: '1 minute',
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  } else {
    res.writeHead(404).end();
  }
}).listen(Number(process.argv[2]), '127.0.0.1');
JS
measure_process node env FLASH_RESOURCE_NAME=api node "$work/node_stats.mjs" $((port + 1))

echo "==> FastAPI/uvicorn" >&2
cat >"$work/fastapi_stats.py" <<'PY'
import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/stats")
def stats() -> dict:
    return {"app": "quickstart-js", "version": "0.1.0",
            "served_by": os.environ.get("FLASH_RESOURCE_NAME"), "idle_timeout": "1 minute"}
PY
measure_process fastapi env FLASH_RESOURCE_NAME=api "$venv/bin/uvicorn" --app-dir "$work" \
    fastapi_stats:app --host 127.0.0.1 --port $((port + 1)) --log-level warning

echo "==> fresh-instance calls (instantiate_cost)" >&2
# instantiate_cost's means per iteration, in µs: "instantiate recycle ahead fresh warm".
cost() {
    local artifact=$1 iterations=$2 dir
    dir=$(mktemp -d -p "$work")
    tar xzf "$artifact" -C "$dir"
    local wasm; wasm=$(find "$dir/components" -name '*.wasm' | sort | head -1)
    "$bin/examples/instantiate_cost" "$wasm" stats '{}' "$iterations" >"$work/cost.txt" 2>&1 \
        || { cat "$work/cost.txt" >&2; exit 1; }
    awk 'NR > 1 && NF > 1 {
        v = $NF; n = v; sub(/[^0-9.]+$/, "", n); unit = substr(v, length(n) + 1);
        if (unit == "ns") n /= 1000; else if (unit == "ms") n *= 1000; else if (unit == "s") n *= 1000000;
        printf "%.1f ", n }' "$work/cost.txt"
}
result[js.cost]=$(cost examples/quickstart-js/.flash/artifact.tar.gz 1000)
result[python.cost]=$(cost examples/quickstart-python/.flash/artifact.tar.gz 1000)
result[rust.cost]=$(cost examples/quickstart/.flash/artifact.tar.gz 2000)

field() { echo "${result[$1]}" | awk -v n="$2" '{print $n}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
size_kib() { echo $(( $(stat -c %s "$1") / 1024 )); }
# The size of the (first) component inside an artifact.
component_kib() { tar tzvf "$1" | awk '/\.wasm$/ {print int($3 / 1024); exit}'; }

echo "### JavaScript functions: flash-host vs node:http vs FastAPI"
echo
echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(rustc --version | cut -d' ' -f1-2), node $(node --version), release profile, wrk ${duration}s per row, loopback."
echo
echo "| GET /stats | req/s c=1 | p50 | p99 | req/s c=16 | p50 | p99 | vs node:http c=1 / c=16 | vs FastAPI c=1 / c=16 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for label in js node fastapi; do
    case $label in js) name="js quickstart (flash-host)" ;; node) name="node:http" ;; *) name="FastAPI/uvicorn" ;; esac
    echo "| $name | $(field $label.c1 1) | $(field $label.c1 2) | $(field $label.c1 3) | $(field $label.c16 1) | $(field $label.c16 2) | $(field $label.c16 3) | $(ratio "$(field $label.c1 1)" "$(field node.c1 1)")× / $(ratio "$(field $label.c16 1)" "$(field node.c16 1)")× | $(ratio "$(field $label.c1 1)" "$(field fastapi.c1 1)")× / $(ratio "$(field $label.c16 1)" "$(field fastapi.c16 1)")× |"
done
echo
echo "| | boot to first answer, ms | idle RSS after 200 requests, MiB | component KiB | artifact KiB |"
echo "|---|---:|---:|---:|---:|"
echo "| js quickstart (flash-host, warm AOT cache, median of 5) | ${result[js.boot]} | $((result[js.rss] / 1024)) | $(component_kib examples/quickstart-js/.flash/artifact.tar.gz) | $(size_kib examples/quickstart-js/.flash/artifact.tar.gz) |"
echo "| node:http (cold process) | ${result[node.boot]} | $((result[node.rss] / 1024)) | – | – |"
echo "| FastAPI/uvicorn (cold process) | ${result[fastapi.boot]} | $((result[fastapi.rss] / 1024)) | – | – |"
echo
echo "Fresh-instance call of each quickstart's \`stats\` (\`instantiate_cost\`, in-process, µs per iteration):"
echo
echo "| | instantiate | recycle (drop) | call in an instance made ahead, with its drop | whole fresh-instance call | call in a warm instance |"
echo "|---|---:|---:|---:|---:|---:|"
for label in js python rust; do
    echo "| $label | $(echo "${result[$label.cost]}" | awk '{printf "%s | %s | %s | %s | %s", $1, $2, $3, $4, $5}') |"
done
