"""The runpod-flash side of scripts/bench.sh's large-payload row.

A real runpod-python worker (`runpod.serverless.start`) running runpod-flash's own handler
(`runpod_flash.runtime.generic_handler.create_handler`): arguments arrive as cloudpickle +
base64 in the job's JSON, the result leaves the same way. Its one function is `echo`.

runpod-flash refuses an encoded argument over 10 MiB (`MAX_PAYLOAD_SIZE`); a 10 MiB payload
is 13.3 MiB once base64-encoded, so with `FLASH_BENCH_LIFT_PAYLOAD_LIMIT=1` the limit is
raised to let the round trip be measured at all (scripts/bench.sh reports that refusal).
"""

import os

import runpod
from runpod_flash.runtime import serialization
from runpod_flash.runtime.generic_handler import create_handler

if os.environ.get("FLASH_BENCH_LIFT_PAYLOAD_LIMIT") == "1":
    serialization.MAX_PAYLOAD_SIZE = 1 << 30


def echo(value):
    return value


runpod.serverless.start({"handler": create_handler({"echo": echo})})
