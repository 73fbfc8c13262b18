"""scripts/bench.sh's large-payload row: one payload's round trip through a queue endpoint.

Both paths run on one `flash server` gateway on loopback, with `/runsync`, and are timed from
the client's call to its decoded result (encoding and decoding included):

- flash: the payload as a JSON string to `echo` on a flash-host worker
  (`{"function_name": "echo", "kwargs": {"value": ...}}`), as `flash call` and peer calls
  send it;
- runpod-flash: the same payload as runpod-flash's client sends it (`serialize_args`:
  cloudpickle + base64) to a runpod-python worker running runpod-flash's handler
  (pickle_worker.py), and the result decoded as its client does (base64 + cloudpickle).

Prints one JSON object: medians and the runpod-flash refusal without the lifted limit.
"""

import argparse
import base64
import json
import os
import random
import statistics
import string
import sys
import time

import cloudpickle
import requests
from runpod_flash.runtime.serialization import serialize_args


def gql(s, url, query, variables):
    r = s.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        sys.exit(f"GraphQL error: {body['errors']}")
    return body["data"]


def save_worker_endpoint(s, url, name, python, lift):
    argv = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pickle_worker.py")]
    env = {
        "FLASH_WORKER_COMMAND": json.dumps(argv),
        "RUNPOD_SKIP_GPU_CHECK": "true",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_LOG_LEVEL": "ERROR",
        "FLASH_BENCH_LIFT_PAYLOAD_LIMIT": "1" if lift else "0",
    }
    data = gql(
        s,
        url,
        "mutation($i: EndpointInput!) { saveEndpoint(input: $i) { id } }",
        {"i": {"name": name, "workersMin": 1, "workersMax": 1,
               "template": {"env": [{"key": k, "value": v} for k, v in env.items()]}}},
    )
    return data["saveEndpoint"]["id"]


def wait_ready(s, url, endpoint, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        h = s.get(f"{url}/v2/{endpoint}/health", timeout=10).json()
        if h.get("workers", {}).get("ready", 0) >= 1:
            return
        time.sleep(0.1)
    sys.exit(f"endpoint {endpoint}: no ready worker after {seconds} s")


def runsync(s, url, endpoint, job_input):
    r = s.post(f"{url}/v2/{endpoint}/runsync", data=json.dumps({"input": job_input}),
               headers={"content-type": "application/json"}, timeout=120)
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "COMPLETED":
        raise RuntimeError(f"job did not complete: {str(body)[:500]}")
    return body["output"]


def flash_round_trip(s, url, endpoint, payload):
    out = runsync(s, url, endpoint, {"function_name": "echo", "kwargs": {"value": payload}})
    return out


def pickle_round_trip(s, url, endpoint, payload):
    job = {"function_name": "echo", "execution_type": "function", "args": serialize_args((payload,))}
    out = runsync(s, url, endpoint, job)
    if not out.get("success"):
        raise RuntimeError(out.get("error"))
    return cloudpickle.loads(base64.b64decode(out["result"]))


def timed(fn, payload, reps):
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        result = fn(payload)
        elapsed = time.perf_counter() - t0
        if result != payload:
            sys.exit("a round trip returned something else than its payload")
        if i:  # the first is a warm-up
            times.append(elapsed * 1000)
    return statistics.median(times), min(times), max(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--flash-endpoint", required=True, help="a queue endpoint serving `echo`")
    p.add_argument("--mib", type=float, default=10)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()

    s = requests.Session()
    s.headers["authorization"] = f"Bearer {a.key}"
    n = int(a.mib * 1024 * 1024)
    payload = "".join(random.Random(16).choices(string.ascii_letters + string.digits, k=n))

    # runpod-flash as released: does it take the payload at all?
    strict = save_worker_endpoint(s, a.url, "bench-pickle-strict", sys.executable, lift=False)
    wait_ready(s, a.url, strict)
    try:
        pickle_round_trip(s, a.url, strict, payload)
        refusal = None
    except RuntimeError as e:
        refusal = str(e)
    gql(s, a.url, "mutation($id: String!) { deleteEndpoint(id: $id) }", {"id": strict})

    lifted = save_worker_endpoint(s, a.url, "bench-pickle", sys.executable, lift=True)
    wait_ready(s, a.url, lifted)
    wait_ready(s, a.url, a.flash_endpoint)
    flash = timed(lambda v: flash_round_trip(s, a.url, a.flash_endpoint, v), payload, a.reps)
    pickle = timed(lambda v: pickle_round_trip(s, a.url, lifted, v), payload, a.reps)
    gql(s, a.url, "mutation($id: String!) { deleteEndpoint(id: $id) }", {"id": lifted})

    print(json.dumps({
        "mib": a.mib,
        "reps": a.reps,
        "flash_ms": flash,
        "runpod_flash_ms": pickle,
        "runpod_flash_refusal": refusal,
        "flash_request_bytes": len(json.dumps({"input": {"function_name": "echo", "kwargs": {"value": payload}}})),
        "runpod_flash_request_bytes": len(serialize_args((payload,))[0]),
    }))


if __name__ == "__main__":
    main()
