"""The Python half of the polyglot example.

* `POST /analyze` (load-balanced, `py_api`) awaits the Rust function `word_stats` on the
  `text_stats` endpoint: `flash_sdk.peer_call` calls any function of the app by name.
* `GET /preview?text=...&words=...` (load-balanced) awaits the Python function `summarize`
  on `py_worker`: a peer call between two Python endpoints.
* `summarize` (queue, `py_worker`) is what the Rust function `headline` calls.
"""

from flash_sdk import Endpoint, current_resource, peer_call

api = Endpoint(name="py_api", cpu="cpu3c-1-2", workers=(1, 2))


@api.post("/analyze")
async def analyze(text: str) -> dict:
    """Word statistics computed in Rust, wrapped by Python."""
    stats = await peer_call("word_stats", text=text)
    return {"text": text, "stats": stats, "served_by": current_resource()}


@api.get("/preview")
async def preview(text: str, words: int = 3) -> dict:
    """A summary of `text` from the `py_worker` endpoint (arguments from the query string)."""
    return {"summary": await summarize(text, words), "words": words}


@Endpoint(name="py_worker", cpu="cpu3c-1-2", workers=(0, 2))
def summarize(text: str, words: int = 3) -> str:
    """The first `words` words of `text`, with an ellipsis when there is more."""
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")
