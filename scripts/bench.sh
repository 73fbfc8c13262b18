#!/usr/bin/env bash
# Every Flash benchmark against its peer, in the release profile, in one run. Prints one
# markdown table of ratios (all figures from this run) and writes it, with the machine's
# facts, into docs/benchmarks.md ("All rows in one run").
#
#   ./scripts/bench.sh              # ~20 minutes after the release builds; updates the docs
#   ./scripts/bench.sh --no-docs    # print only
#   BENCH_SECONDS=10 ./scripts/bench.sh   # longer wrk windows (default 5 s per row)
#
# Installs what it measures against, pinned and cached: FastAPI/uvicorn, runpod-python,
# runpod-flash and cloudpickle (scripts/bench/requirements.txt, in a venv), and
# wasmtime-cli (`wasmtime serve`, built once with cargo into ~/.cache/flash-bench-tools).
# Needs wrk (installed from Debian when run as root) and the wasm32-wasip2 target.
#
# Rows (see docs/benchmarks.md for what each measures and why):
#   queue jobs/s c=1/16, flash-host vs the runpod-python worker, one gateway, wrk;
#   the gateway's own ceiling (protocol loop);
#   load-balanced GET /stats req/s c=1/16: flash-host vs `wasmtime serve` vs FastAPI, wrk;
#   fresh-instance vs hot call; warm vs cold boot (cargo bench -p flash-host --bench host);
#   deploy send of 10 configs, and until every endpoint has a ready worker;
#   peer-call overhead, p50 and p99 (scripts/bench/peer-app on a real flash server, wrk);
#   a 10 MiB payload round trip vs runpod-flash's cloudpickle + base64 (scripts/bench/payload.py);
#   then the sections of scripts/bench-python.sh, scripts/bench-js.sh and the inference bench,
#   as they print them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flash-target}"
export FLASH_TEST_VENV="${FLASH_TEST_VENV:-$HOME/.cache/flash-test-venv}"
duration="${BENCH_SECONDS:-5}"
update_docs=1
for arg in "$@"; do
    case "$arg" in
        --no-docs) update_docs=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done
source scripts/bench/lib.sh
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- what it measures with and against --------------------------------------------------
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing wrk from Debian"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
    else
        echo "wrk is required: apt-get install wrk" >&2
        exit 1
    fi
fi
rustup target add wasm32-wasip2 >/dev/null

venv=$(scripts/bench/venv.sh) # the peers, pinned: scripts/bench/requirements.txt

wasmtime_version=48.0.8 # the wasmtime flash-host embeds (vendor/wasmtime)
wasmtime="$HOME/.cache/flash-bench-tools/wasmtime-$wasmtime_version/bin/wasmtime"
if [ ! -x "$wasmtime" ]; then
    step "building wasmtime-cli $wasmtime_version (once; about 10 minutes on 2 cores)"
    CARGO_TARGET_DIR="$HOME/.cache/flash-bench-tools/target" cargo install --quiet --locked \
        "wasmtime-cli@$wasmtime_version" --root "$HOME/.cache/flash-bench-tools/wasmtime-$wasmtime_version"
    rm -rf "$HOME/.cache/flash-bench-tools/target"
fi

step "release build of flash and flash-host"
cargo build --release --locked -p flash-cli -p flash-host >&2
bin="$CARGO_TARGET_DIR/release"
guests="$CARGO_TARGET_DIR/guests"

step "building the apps"
(cd examples/quickstart && CARGO_TARGET_DIR="$guests" "$bin/flash" build >&2)
(cd examples/quickstart-python && "$bin/flash" build >&2)
(cd scripts/bench/peer-app && CARGO_TARGET_DIR="$guests" "$bin/flash" build >&2)
(cd scripts/bench/wasi-http-stats && CARGO_TARGET_DIR="$guests" cargo build --quiet --release --target wasm32-wasip2 >&2)
stats_wasm="$guests/wasm32-wasip2/release/flash_bench_wasi_http_stats.wasm"

export FLASH_BENCH_RESULTS="$work/results.jsonl"
: >"$FLASH_BENCH_RESULTS"
record() { printf '{"key": "%s", "value": %s}\n' "$1" "$2" >>"$FLASH_BENCH_RESULTS"; }

# --- in-process calls and boots ---------------------------------------------------------
step "flash-host: fresh vs hot calls, cold and warm boots (cargo bench -p flash-host --bench host)"
cargo bench --locked -p flash-host --bench host >"$work/host.md"

# --- queue: flash-host vs runpod-python on one gateway ----------------------------------
step "queue jobs/s through flash server: protocol loop, runpod-python, flash-host (wrk, ${duration}s per row)"
FLASH_BENCH_FLASH_HOST="[\"$bin/flash-host\"]" \
    FLASH_BENCH_ARTIFACT="$root/scripts/bench/peer-app/.flash/artifact.tar.gz" \
    FLASH_BENCH_ENV='{"FLASH_RESOURCE_NAME": "back", "RUST_LOG": "warn"}' \
    FLASH_BENCH_INPUT='{"function_name": "echo", "kwargs": {"value": {"x": 1}}}' \
    cargo bench --locked -p flash-control --bench gateway_throughput -- --secs "$duration" --wrk >"$work/gateway.md"

# --- deploy send ------------------------------------------------------------------------
step "deploy send: 1, 5, 10 configs, and 10 until ready (cargo bench -p flash-cli --bench deploy_send)"
FLASH_HOST_BIN="$bin/flash-host" FLASH_BENCH_REPS=3 \
    cargo bench --locked -p flash-cli --bench deploy_send >"$work/deploy.md"

# --- load-balanced route: flash-host vs wasmtime serve vs FastAPI -------------------------
# Runs "$@" in the background and waits for GET /stats on $port; sets $pid.
serve() {
    "$@" >"$work/server-$port.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_ready "http://127.0.0.1:$port/stats"
    for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/stats"; done
}
measure_lb() {
    local label=$1 c r
    for c in 1 16; do
        r=$(load "http://127.0.0.1:$port/stats" "$c")
        record "lb.$label.c$c" "$(echo "$r" | cut -d' ' -f1)"
    done
    stop
}
for lang in rust python; do
    step "GET /stats on flash-host ($lang quickstart)"
    example=quickstart; [ "$lang" = python ] && example=quickstart-python
    port=$(free_port)
    serve env FLASH_RESOURCE_NAME=api FLASH_DISABLE_RP_AUTH=true FLASH_LISTEN_ADDR="127.0.0.1:$port" \
        FLASH_ARTIFACT_URL="$root/examples/$example/.flash/artifact.tar.gz" \
        FLASH_CACHE_DIR="$work/cache-$lang" RUST_LOG=warn "$bin/flash-host"
    measure_lb "$lang"
done
step "GET /stats on wasmtime serve $wasmtime_version (scripts/bench/wasi-http-stats)"
port=$(free_port)
serve "$wasmtime" serve --addr "127.0.0.1:$port" -S cli=y --env FLASH_RESOURCE_NAME=api "$stats_wasm"
measure_lb wasmtime_serve
step "GET /stats on FastAPI/uvicorn"
port=$(free_port)
serve env BENCH_STATS_BODY='{"app": "quickstart", "version": "0.1.0"}' FLASH_RESOURCE_NAME=api \
    "$venv/bin/uvicorn" --app-dir scripts/bench fastapi_stats:app --host 127.0.0.1 --port "$port" --log-level warning
measure_lb fastapi

# --- a real flash server: peer calls and the large payload ------------------------------
step "flash server with scripts/bench/peer-app deployed"
data="$work/server-data"
mkdir -p "$data"
port=$(free_port)
"$bin/flash" server --data-dir "$data" --listen "127.0.0.1:$port" --allow-worker-command-override \
    >"$work/flash-server.log" 2>&1 &
pids+=("$!")
wait_ready "http://127.0.0.1:$port/ping"
export FLASH_SERVER_URL="http://127.0.0.1:$port" FLASH_HOME="$data"
unset RUNPOD_API_KEY
key=$(cat "$data/api_key")
(
    cd scripts/bench/peer-app
    "$bin/flash" deploy new bench >&2
    "$bin/flash" deploy send bench >&2
    "$bin/flash" deploy info bench >"$work/deploy-info.txt"
)
# "<endpoint id> <url>" of a resource, from `flash deploy info`'s table.
endpoint_of() {
    python3 -c '
import re, sys
for line in open(sys.argv[1]):
    cells = [c.strip() for c in re.split("[│┆]", line)]
    if len(cells) > 4 and cells[1] == sys.argv[2]:
        print(cells[3], cells[4])
        break
else:
    sys.exit(f"no row for {sys.argv[2]} in flash deploy info")
' "$work/deploy-info.txt" "$1"
}
read -r back_id _ <<<"$(endpoint_of back)"
read -r _ front_url <<<"$(endpoint_of front)"
cat >"$work/auth.lua" <<LUA
wrk.headers["authorization"] = "Bearer $key"
LUA
wait_ready "$front_url/peer" -H "authorization: Bearer $key"
for route in here peer; do
    for _ in $(seq 1 200); do curl -fs -o /dev/null -H "authorization: Bearer $key" "$front_url/$route"; done
done
step "peer-call overhead: GET /here (in place) and GET /peer (queue function on another config), c=1"
for route in here peer; do
    read -r _ p50 p99 <<<"$(load "$front_url/$route" 1 -s "$work/auth.lua")"
    record "peer.${route}_p50_us" "$p50"
    record "peer.${route}_p99_us" "$p99"
done
step "10 MiB payload round trip: flash-host vs runpod-flash's path (scripts/bench/payload.py)"
"$venv/bin/python" scripts/bench/payload.py --url "http://127.0.0.1:$port" --key "$key" \
    --flash-endpoint "$back_id" --mib 10 --reps 5 >"$work/payload.json"
python3 - "$work/payload.json" "$FLASH_BENCH_RESULTS" "$work/notes.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
with open(sys.argv[2], "a") as out:
    for key, value in (("payload.mib", r["mib"]), ("payload.flash_ms", r["flash_ms"][0]),
                       ("payload.runpod_flash_ms", r["runpod_flash_ms"][0])):
        out.write(json.dumps({"key": key, "value": value}) + "\n")
with open(sys.argv[3], "a") as notes:
    refusal = r["runpod_flash_refusal"]
    if refusal:
        first = refusal.split("\\n")[-1] if "\\n" in refusal else refusal
        notes.write(f"- runpod-flash as released refuses the {r['mib']:g} MiB payload "
                    f"({r['runpod_flash_request_bytes']:,} bytes once pickled and base64-encoded; its "
                    f"`MAX_PAYLOAD_SIZE` is 10 MiB), so its row was measured with that limit lifted.\n")
    notes.write(f"- Request bodies: Flash {r['flash_request_bytes']:,} bytes, runpod-flash "
                f"{r['runpod_flash_request_bytes']:,} bytes (argument only).\n")
PY

# --- the per-language and inference sections (their own tables) ---------------------------
step "Python functions: scripts/bench-python.sh"
FLASH_BENCH_VENV="$venv" BENCH_SECONDS="$duration" scripts/bench-python.sh >"$work/python.md"
step "JavaScript functions: scripts/bench-js.sh"
FLASH_BENCH_VENV="$venv" BENCH_SECONDS="$duration" scripts/bench-js.sh >"$work/js.md"
step "inference: cargo bench -p flash-host --bench nn"
cargo bench --locked -p flash-host --bench nn >"$work/nn.md"

# --- the report -------------------------------------------------------------------------
facts="$(machine_facts), $(free -g | awk '/Mem:/ {print $2}') GiB, \`$(git rev-parse --short HEAD)\`, load average before the run $load_before, release profile, wrk ${duration}s per row, loopback"
docs=()
[ "$update_docs" = 1 ] && docs=(--docs docs/benchmarks.md)
touch "$work/notes.md"
python3 scripts/bench/report.py "$FLASH_BENCH_RESULTS" --facts "$facts" --notes "$work/notes.md" "${docs[@]}"
for part in host gateway deploy python js nn; do
    echo
    echo "<details><summary>$part bench output</summary>"
    echo
    cat "$work/$part.md"
    echo "</details>"
done
