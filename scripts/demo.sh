#!/usr/bin/env bash
# The main job on the embedded default: build examples/quickstart (Rust),
# examples/quickstart-python and examples/quickstart-js (the same app in Python and
# TypeScript), start a local `flash server` (which
# runs one `flash-host` worker per resource config), `flash deploy new/send` each to it,
# `flash call` every function — the queue ones through the RunPod-compatible gateway, the
# HTTP routes through the load-balanced proxy, including `predict`'s cross-config peer
# call — prints the log lines of one job with `flash logs`, then `flash deploy delete` and
# cleans up. The first Python build installs the
# pinned componentize-py into the cache directory, the first JavaScript build the pinned
# componentize-js and esbuild (npm).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

rustup target add wasm32-wasip2 >/dev/null
echo "==> building flash and flash-host"
cargo build --quiet -p flash-cli -p flash-host --bins
flash="$CARGO_TARGET_DIR/debug/flash"

echo "==> flash build (examples/quickstart)"
(cd examples/quickstart && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/guests" "$flash" build)
echo "==> flash build (examples/quickstart-python)"
(cd examples/quickstart-python && "$flash" build)
echo "==> flash build (examples/quickstart-js)"
(cd examples/quickstart-js && "$flash" build)

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo "==> flash server on 127.0.0.1:$port (data: $data)"
"$flash" server --data-dir "$data" --listen "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    [ -s "$data/api_key" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
done

export FLASH_SERVER_URL="http://127.0.0.1:$port" FLASH_HOME="$data"
unset RUNPOD_API_KEY
fail() { echo "--- server log"; tail -50 "$data/server.log"; exit 1; }
demo() {
    local example="$1"
    (
        cd "examples/$example"
        echo "==> [$example] flash deploy new demo && flash deploy send demo"
        "$flash" deploy new demo || fail
        "$flash" deploy send demo || fail
        echo "==> [$example] flash call (queue: embed, similarity; load-balanced: predict -> peer call to embed, stats)"
        for call in 'embed {"text":"hello flash","dims":8}' 'similarity {"a":"good day","b":"great day"}' \
                    'predict {"text":"what a great day"}' 'stats {}'; do
            fn="${call%% *}"; args="${call#* }"
            echo "--- $fn $args"
            "$flash" call "$fn" "$args" --env demo || fail
        done
        "$flash" deploy info demo || fail
        echo "==> [$example] flash logs demo --job <id>: what one embed job printed, on its worker"
        job="$("$flash" call embed '{"text":"watch this job","dims":4}' --env demo --json |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" || fail
        "$flash" logs demo --job "$job" || fail
        echo "==> [$example] flash deploy delete demo"
        "$flash" deploy delete demo --yes || fail
    )
}
demo quickstart
demo quickstart-python
demo quickstart-js
