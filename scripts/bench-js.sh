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

source scripts/bench/lib.sh

step "release build of flash, flash-host and instantiate_cost"
cargo build --release --locked -p flash-cli -p flash-host >&2
cargo build --release --locked -p flash-runtime --example instantiate_cost >&2
bin="$CARGO_TARGET_DIR/release"

step "building the quickstarts"
(cd examples/quickstart-js && "$bin/flash" build >&2)
(cd examples/quickstart-python && "$bin/flash" build >&2)
(cd examples/quickstart && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/guests" "$bin/flash" build >&2)

step "JavaScript quickstart on flash-host"
measure_flash js "$root/examples/quickstart-js/.flash/artifact.tar.gz"

step "node:http"
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
port=$(free_port)
measure_process node env FLASH_RESOURCE_NAME=api node "$work/node_stats.mjs" "$port"

step "FastAPI/uvicorn"
port=$(free_port)
measure_process fastapi env BENCH_STATS_BODY='{"app": "quickstart-js", "version": "0.1.0", "idle_timeout": "1 minute"}' FLASH_RESOURCE_NAME=api \
    "$venv/bin/uvicorn" --app-dir scripts/bench fastapi_stats:app --host 127.0.0.1 --port "$port" --log-level warning

step "fresh-instance calls (instantiate_cost)"
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

echo "### JavaScript functions: flash-host vs node:http vs FastAPI"
echo
echo "Run: $(machine_facts), node $(node --version), release profile, wrk ${duration}s per row, loopback."
echo
echo "| GET /stats | req/s c=1 | p50 ms | p99 ms | req/s c=16 | p50 ms | p99 ms | vs node:http c=1 / c=16 | vs FastAPI c=1 / c=16 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for label in js node fastapi; do
    case $label in js) name="js quickstart (flash-host)" ;; node) name="node:http" ;; *) name="FastAPI/uvicorn" ;; esac
    echo "| $name | $(field $label.c1 1) | $(us_to_ms "$(field $label.c1 2)") | $(us_to_ms "$(field $label.c1 3)") | $(field $label.c16 1) | $(us_to_ms "$(field $label.c16 2)") | $(us_to_ms "$(field $label.c16 3)") | $(ratio "$(field $label.c1 1)" "$(field node.c1 1)")× / $(ratio "$(field $label.c16 1)" "$(field node.c16 1)")× | $(ratio "$(field $label.c1 1)" "$(field fastapi.c1 1)")× / $(ratio "$(field $label.c16 1)" "$(field fastapi.c16 1)")× |"
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
