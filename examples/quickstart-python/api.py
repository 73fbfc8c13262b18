"""The CPU HTTP endpoint: `POST /predict` and `GET /stats`.

`predict` awaits `embed` like any local function; because `embed` lives on `gpu_config`,
the call goes to the GPU endpoint when deployed.
"""

from dataclasses import dataclass

from flash_sdk import Endpoint, current_resource

from embeddings import embed

# One warm worker, up to three.
api = Endpoint(name="api", cpu="cpu3c-1-2", workers=(1, 3))


@dataclass
class Prediction:
    label: str
    score: float
    dims: int


@api.post("/predict")
async def predict(text: str) -> Prediction:
    """Classifies `text` as positive or negative by its similarity to two prototypes."""
    v = await embed(text, 64)  # a peer call to the GPU endpoint when deployed
    pos = await embed("good great excellent love happy", 64)
    neg = await embed("bad awful terrible hate sad", 64)
    p = sum(x * y for x, y in zip(v, pos))
    n = sum(x * y for x, y in zip(v, neg))
    return Prediction(label="positive" if p >= n else "negative", score=p - n, dims=len(v))


@api.get("/stats")
def stats() -> dict:
    """Static facts about the deployment (and which resource config answered)."""
    return {"app": "quickstart-python", "version": "0.1.0", "served_by": current_resource()}
