"""The Python half of the polyglot example.

* `POST /analyze` (load-balanced, `py_api`) awaits the Rust function `word_stats` on the
  `text_stats` endpoint: `flash_sdk.peer_call` calls any function of the app by name.
* `GET /preview?text=...&words=...` (load-balanced) awaits the Python function `summarize`
  on `py_worker`: a peer call between two Python endpoints.
* `POST /title` (load-balanced) awaits the Rust function `headline`, which calls the
  Python function `summarize`: Python → Rust → Python. A failure deep in that chain
  reaches the caller with where it began (`flash call title '{"text": ""}'`).
* `POST /loud` (load-balanced) awaits the JavaScript function `shout` on `js_worker`.
* `summarize` (queue, `py_worker`) is what the Rust function `headline` and the JavaScript
  route `POST /report` call.
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


@api.post("/title")
async def title(text: str) -> dict:
    """A headline made in Rust from a summary made in Python."""
    return {"title": await peer_call("headline", text=text)}


@api.post("/loud")
async def loud(text: str) -> dict:
    """`text` shouted by JavaScript."""
    return {"loud": await peer_call("shout", text=text)}


@Endpoint(name="py_worker", cpu="cpu3c-1-2", workers=(0, 2))
def summarize(text: str, words: int = 3) -> str:
    """The first `words` words of `text`, with an ellipsis when there is more."""
    parts = text.split()
    if not parts:
        raise ValueError("nothing to summarize: the text is empty")
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")
