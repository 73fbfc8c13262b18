#!/usr/bin/env bash
# GPU check for host-provided inference: runs the `examples/inference` artifact's
# `classifier` model through flash-host on the `gpu` target and on the `cpu` target, and
# prints which ONNX Runtime execution provider served each and the time per job.
#
# Builds nothing. It needs, prebuilt:
#   - flash-host: $FLASH_HOST, else $CARGO_TARGET_DIR (or ./target)/{release,debug}/flash-host
#   - the artifact: first argument, else examples/inference/.flash/artifact.tar.gz
#     (`cd examples/inference && flash build`)
#   - ONNX Runtime: $ORT_DYLIB_PATH, else libonnxruntime.so of the `onnxruntime` package
#     importable by $PYTHON (default python3). For CUDA use the `onnxruntime-gpu` wheel
#     (1.22.x); the CUDA libraries of pip's `nvidia-*` packages are added to
#     LD_LIBRARY_PATH when found.
# Environment: FLASH_GPU_CHECK_JOBS (default 200 jobs per target), FLASH_GPU_CHECK_ROWS
# (rows per job, default 1024). On a machine without CUDA it reports the CPU fallback
# (exit status 0; 2 when the gpu target did not get CUDA and FLASH_GPU_CHECK_STRICT=1).
# Everything is bounded: each run has a 120 s timeout, the whole script stays under 5 min.
set -euo pipefail
cd "$(dirname "$0")/.."

artifact="${1:-examples/inference/.flash/artifact.tar.gz}"
jobs="${FLASH_GPU_CHECK_JOBS:-200}"
rows="${FLASH_GPU_CHECK_ROWS:-1024}"
python="${PYTHON:-python3}"

host="${FLASH_HOST:-}"
if [ -z "$host" ]; then
    target="${CARGO_TARGET_DIR:-$PWD/target}"
    for candidate in "$target/release/flash-host" "$target/debug/flash-host"; do
        if [ -x "$candidate" ]; then host="$candidate"; break; fi
    done
fi
[ -n "$host" ] && [ -x "$host" ] || { echo "error: no flash-host binary (set FLASH_HOST or build it first)" >&2; exit 1; }
[ -f "$artifact" ] || { echo "error: no artifact at $artifact (run \`flash build\` in examples/inference, or pass its path)" >&2; exit 1; }

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    capi="$("$python" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null || true)"
    ORT_DYLIB_PATH="$(ls "$capi"/libonnxruntime.so* 2>/dev/null | head -n1 || true)"
fi
[ -n "$ORT_DYLIB_PATH" ] || { echo "error: set ORT_DYLIB_PATH (or pip install onnxruntime-gpu==1.22.*)" >&2; exit 1; }
export ORT_DYLIB_PATH
# CUDA/cuDNN from pip's nvidia-* wheels (what onnxruntime-gpu's Python package preloads).
nvidia_libs="$("$python" -c 'import nvidia, os, glob; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null || true)"
if [ -n "$nvidia_libs" ]; then export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi

echo "flash-host:   $host"
echo "artifact:     $artifact"
echo "onnxruntime:  $ORT_DYLIB_PATH"
if command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu:          $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1)"
else
    echo "gpu:          none visible (no nvidia-smi)"
fi

input="$("$python" -c '
import json, sys
n = int(sys.argv[1])
rows = [[((i * 7 + j * 3) % 17) / 4.0 - 2.0 for j in range(4)] for i in range(n)]
print(json.dumps({"function_name": "classify", "kwargs": {"rows": rows}}))' "$rows")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
run() { # target
    local log="$tmp/$1.log"
    if ! FLASH_NN_TARGET="$1" RUST_LOG=info timeout 120 "$host" --artifact "$artifact" \
        --resource classifier --test-input "$input" --repeat "$jobs" >"$tmp/$1.out" 2>"$log"; then
        echo "error: flash-host failed on target $1:" >&2; tail -n 20 "$log" >&2; exit 1
    fi
    sed -i 's/\x1b\[[0-9;]*m//g' "$log" # no colours
    local device ms
    device="$(grep -o 'device=[a-z]*' "$log" | head -n1 | cut -d= -f2 || true)"
    ms="$(grep -o '[0-9.]* ms per job' "$log" | cut -d' ' -f1 || true)"
    echo "${device:-unknown} ${ms:-0}"
    if grep -q 'is not available here' "$log"; then
        echo "  flash-host warned ($1): $(grep 'is not available here' "$log" | head -n1 | cut -c1-400)" >&2
    fi
}

read -r gpu_device gpu_ms < <(run gpu)
read -r cpu_device cpu_ms < <(run cpu)
provider() { case "$1" in cuda) echo CUDAExecutionProvider ;; *) echo CPUExecutionProvider ;; esac; }
echo
echo "target gpu -> $(provider "$gpu_device") ($gpu_device): $gpu_ms ms per job ($rows rows)"
echo "target cpu -> $(provider "$cpu_device") ($cpu_device): $cpu_ms ms per job ($rows rows)"
"$python" -c "import sys; g, c = float(sys.argv[1]), float(sys.argv[2]); print(f'gpu vs cpu: {c / g:.2f}x the speed')" "$gpu_ms" "$cpu_ms"
if [ "$gpu_device" != "cuda" ]; then
    echo "RESULT: CPU fallback — the gpu target ran on the CPU (see the warning above)"
    [ "${FLASH_GPU_CHECK_STRICT:-0}" = 1 ] && exit 2
else
    echo "RESULT: CUDA execution provider served the gpu target"
fi
