"""A quickstart's `GET /stats` in FastAPI on uvicorn: what the bench scripts measure
flash-host against (runpod-flash serves load-balanced endpoints this way).

    BENCH_STATS_BODY='{"app": "quickstart", "version": "0.1.0"}' FLASH_RESOURCE_NAME=api \\
        uvicorn --app-dir scripts/bench fastapi_stats:app

The answer is BENCH_STATS_BODY with `served_by` (FLASH_RESOURCE_NAME) added, read per
request as the quickstarts read it, so each script compares the same body as its quickstart's.
"""

import json
import os

from fastapi import FastAPI

app = FastAPI()
BODY = json.loads(os.environ["BENCH_STATS_BODY"])


@app.get("/stats")
def stats() -> dict:
    return {**BODY, "served_by": os.environ.get("FLASH_RESOURCE_NAME")}
