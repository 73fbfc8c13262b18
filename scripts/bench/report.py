"""Turns the figures of one scripts/bench.sh run into one markdown table of ratios.

Reads the JSON lines the benches wrote (`{"key": …, "value": …}`, see
tests/src/bench_results.rs and scripts/bench.sh), prints the table, and with `--docs FILE`
replaces the part of FILE between the `<!-- bench.sh:begin -->` and `<!-- bench.sh:end -->`
markers with it. A row whose figures are missing says so instead of inventing a number.
"""

import argparse
import json
import sys

BEGIN, END = "<!-- bench.sh:begin -->", "<!-- bench.sh:end -->"


def load(path):
    figures = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                figures[row["key"]] = row["value"]
    return figures


def fmt(v, digits=0):
    if v is None:
        return "missing"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def goal_mark(met):
    return "met" if met else "**not met**"


def table(f):
    g = f.get
    rows = []

    def row(what, flash, peer_name, peer, r, goal="–"):
        rows.append(f"| {what} | {flash} | {peer_name} | {peer} | {r} | {goal} |")

    for c in (1, 16):
        fh, py = g(f"gateway.flash_host.c{c}"), g(f"gateway.runpod_python.c{c}")
        row(f"queue jobs/s, c={c} (`/runsync` through one `flash server`)", fmt(fh),
            "runpod-python worker", fmt(py), ratio(fh, py))
    for c in (1, 16):
        p = g(f"gateway.protocol.c{c}")
        goal = "–" if c == 1 else f"≥ 2,000: {goal_mark(p is not None and p >= 2000)}"
        row(f"gateway alone jobs/s, c={c} (protocol loop, no worker process)", fmt(p), "–", "–", "–", goal)
    for c in (1, 16):
        fh, ws, fa = g(f"lb.rust.c{c}"), g(f"lb.wasmtime_serve.c{c}"), g(f"lb.fastapi.c{c}")
        goal_ws = f"≥ 2×: {goal_mark(fh and ws and fh / ws >= 2)}" if c == 16 else "–"
        goal_fa = f"≥ 10×: {goal_mark(fh and fa and fh / fa >= 10)}" if c == 16 else "–"
        row(f"load-balanced `GET /stats` req/s, c={c}", fmt(fh), "`wasmtime serve`", fmt(ws), ratio(fh, ws), goal_ws)
        row(f"load-balanced `GET /stats` req/s, c={c}", fmt(fh), "FastAPI/uvicorn", fmt(fa), ratio(fh, fa), goal_fa)
    for c in (1, 16):
        py, fa = g(f"lb.python.c{c}"), g(f"lb.fastapi.c{c}")
        row(f"load-balanced `GET /stats` req/s, c={c}, **Python** function", fmt(py), "FastAPI/uvicorn", fmt(fa), ratio(py, fa))
    fresh, hot = g("host.fresh_call_us"), g("host.hot_call_us")
    row("call p50, µs: fresh instance (what serving does) vs hot instance", fmt(fresh, 1), "hot call", fmt(hot, 1), ratio(fresh, hot))
    warm, cold = g("host.warm_boot_ms"), g("host.cold_boot_ms")
    row("boot to first answer, ms: warm AOT cache vs cold (compile)", fmt(warm, 1), "cold boot", fmt(cold, 1), ratio(cold, warm) + " faster warm" if warm and cold else "–")
    first, ready = g("deploy.first_send_ms.10"), g("deploy.until_ready_ms.10")
    row("`deploy send`, 10 configs, ms: the send vs until every endpoint has a ready worker", fmt(first, 1), "until ready", fmt(ready, 1), "–")
    for q in ("p50", "p99"):
        here, peer = g(f"peer.here_{q}_us"), g(f"peer.peer_{q}_us")
        over = peer - here if here is not None and peer is not None else None
        goal = f"≤ 500 µs: {goal_mark(over is not None and over <= 500)}" if q == "p50" else "–"
        row(f"peer call {q}, µs: LB route calling a queue function on another config; overhead {fmt(over)} µs",
            fmt(peer), "same call in place", fmt(here), ratio(peer, here), goal)
    fl, pk = g("payload.flash_ms"), g("payload.runpod_flash_ms")
    mib = g("payload.mib")
    r = pk / fl if fl and pk else None
    row(f"{fmt(mib)} MiB payload round trip through a queue endpoint, ms (median)", fmt(fl, 1),
        "runpod-flash (cloudpickle + base64 in JSON)", fmt(pk, 1), ratio(pk, fl) + " faster" if r else "–",
        f"≥ 3×: {goal_mark(r is not None and r >= 3)}")
    head = [
        "| row | Flash | peer | peer's figure | ratio | goal |",
        "|---|---:|---|---:|---:|---|",
    ]
    return "\n".join(head + rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--facts", required=True, help="one line: when, machine, toolchain")
    p.add_argument("--notes", help="a file of extra lines to print under the table")
    p.add_argument("--docs", help="a markdown file to update between the markers")
    a = p.parse_args()
    body = f"Run: {a.facts}\n\n{table(load(a.results))}\n"
    if a.notes:
        with open(a.notes) as n:
            extra = n.read().strip()
        if extra:
            body += f"\n{extra}\n"
    print(body)
    if a.docs:
        with open(a.docs) as d:
            text = d.read()
        if BEGIN not in text or END not in text:
            sys.exit(f"{a.docs} has no {BEGIN} … {END} section to update")
        start = text.index(BEGIN) + len(BEGIN)
        end = text.index(END)
        with open(a.docs, "w") as d:
            d.write(text[:start] + "\n" + body + text[end:])
        print(f"updated {a.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
