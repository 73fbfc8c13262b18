# What scripts/bench.sh, scripts/bench-python.sh and scripts/bench-js.sh share: a work
# directory cleaned up on exit with the servers they started, waiting for a server, wrk
# runs, warm boots of flash-host, and the report's small helpers. Sourced, not run:
#
#   source scripts/bench/lib.sh   # from the repository root; needs $duration, and $bin for
#                                 # start_host and measure_flash
#
# Every figure a helper prints is a plain number (req/s, µs, ms, KiB), so the scripts format
# all their tables the same way.

work=$(mktemp -d)
pids=()
bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap bench_cleanup EXIT

step() { echo "==> $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (at most 60 s) until `url` answers 200 (extra curl arguments after the url).
wait_ready() {
    local _
    for _ in $(seq 1 6000); do
        curl -fs -o /dev/null "${@:2}" "$1" && return 0
        sleep 0.01
    done
    echo "no answer from $1 after 60 s" >&2
    return 1
}

# Milliseconds since `start_ns` (from `date +%s%N`).
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# wrk at concurrency `c` on `url` for $duration seconds (extra wrk arguments after):
# prints "req/s p50_us p99_us"; any answer that is not 2xx fails the run.
load() {
    local url=$1 c=$2 threads=$(($2 < 2 ? 1 : 2))
    [ -d "$work" ] || { echo "the work dir $work is gone" >&2; exit 1; }
    wrk -t"$threads" -c"$c" -d"${duration}s" --latency "${@:3}" "$url" >"$work/wrk.txt"
    if grep -q "Non-2xx" "$work/wrk.txt"; then
        echo "errors in the wrk run on $url:" >&2
        cat "$work/wrk.txt" >&2
        exit 1
    fi
    python3 - "$work/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
p50 = us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
print(rps, p50, p99)
PY
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Starts "$bin/flash-host" serving resource `api` of `artifact` with the cache `cache` on
# $port; sets $pid.
start_host() {
    local artifact=$1 cache=$2
    FLASH_RESOURCE_NAME=api FLASH_DISABLE_RP_AUTH=true FLASH_LISTEN_ADDR="127.0.0.1:$port" \
        FLASH_ARTIFACT_URL="$artifact" FLASH_CACHE_DIR="$cache" RUST_LOG=warn \
        "$bin/flash-host" >"$work/host-$port.log" 2>&1 &
    pid=$!
    pids+=("$pid")
}

stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

declare -A result

# `GET /stats` of flash-host serving `artifact`: boot to the first answer with a warm AOT
# cache (median of 5), idle RSS after 200 requests, and wrk at c=1 and c=16, into
# result[label.boot|rss|c1|c16].
measure_flash() {
    local label=$1 artifact=$2
    local cache="$work/cache-$label" boots=() t0 _
    port=$(free_port) # before any clock starts: a Python start-up takes tens of ms
    start_host "$artifact" "$cache"
    wait_ready "http://127.0.0.1:$port/stats"
    stop
    for _ in 1 2 3 4 5; do
        t0=$(date +%s%N)
        start_host "$artifact" "$cache"
        wait_ready "http://127.0.0.1:$port/stats"
        boots+=("$(ms_since "$t0")")
        stop
    done
    result[$label.boot]=$(printf '%s\n' "${boots[@]}" | sort -n | sed -n 3p)
    start_host "$artifact" "$cache"
    measure_running "$label"
}

# The same for a server process started here on $port by `command...` (boot: a cold
# process).
measure_process() {
    local label=$1 t0
    shift
    t0=$(date +%s%N)
    "$@" >"$work/$label.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_ready "http://127.0.0.1:$port/stats"
    result[$label.boot]=$(ms_since "$t0")
    measure_running "$label"
}

# RSS after 200 requests and wrk at c=1 and c=16 on the server $pid serving $port; stops it.
measure_running() {
    local label=$1 _
    wait_ready "http://127.0.0.1:$port/stats"
    for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/stats"; done
    result[$label.rss]=$(rss_kib "$pid")
    result[$label.c1]=$(load "http://127.0.0.1:$port/stats" 1)
    result[$label.c16]=$(load "http://127.0.0.1:$port/stats" 16)
    stop
}

# Field `n` (1-based) of result[key].
field() { echo "${result[$1]}" | awk -v n="$2" '{print $n}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
us_to_ms() { awk -v v="$1" 'BEGIN {printf "%.2f", v / 1000}'; }
size_kib() { echo $(($(stat -c %s "$1") / 1024)); }
# The size of the (first) component inside an artifact.
component_kib() { tar tzvf "$1" | awk '/\.wasm$/ {print int($3 / 1024); exit}'; }

# The machine and toolchain a run's figures come from.
machine_facts() {
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(rustc --version | cut -d' ' -f1-2)"
}
