#!/usr/bin/env sh
# Builds python-guest.wasm (next to this script) from app.py with componentize-py 0.25
# (`pip install 'componentize-py==0.25.*'`, on PATH). The bindings are generated from
# the repository's wit/ at build time; nothing generated is checked in.
set -eu
cd "$(dirname "$0")"
componentize-py -d ../../../wit -w function componentize app -o "${1:-python-guest.wasm}"
