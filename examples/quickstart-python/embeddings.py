"""The GPU queue endpoint: `embed` turns text into a vector, `similarity` compares two texts.

The "model" is a deterministic feature hash, so the example runs anywhere; swap in real
inference without changing anything else.
"""

import math

from flash_sdk import Endpoint, GpuGroup

# Scale to zero, up to three workers on 48 GB Ampere or 24 GB Ada GPUs.
gpu = Endpoint(name="gpu_config", gpu=[GpuGroup.AMPERE_48, GpuGroup.ADA_24], workers=(0, 3))

MAX_TEXT = 64 * 1024
"""The longest input `embed` accepts, in bytes."""


@gpu
def embed(text: str, dims: int) -> list[float]:
    """Embeds `text` into a unit vector of `dims` dimensions (a hashed bag of words)."""
    if not 0 < dims <= 4096:
        raise ValueError(f"dims must be in 1..=4096, got {dims}")
    if len(text.encode()) > MAX_TEXT:
        raise ValueError(f"text is longer than {MAX_TEXT} bytes")
    # What a function prints goes to its worker's log, tagged with the job: `flash logs`.
    print(f"embedding {len(text.split())} words into {dims} dimensions")
    vector = [0.0] * dims
    for word in text.split():
        h = fnv1a(word.lower().encode())
        vector[(h >> 1) % dims] += 1.0 if h & 1 == 0 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


@gpu
async def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts, in [-1, 1]."""
    va, vb = await embed(a, 64), await embed(b, 64)
    return sum(x * y for x, y in zip(va, vb))


def fnv1a(data: bytes) -> int:
    """64-bit FNV-1a: a stable hash (Python's `hash` is salted per process)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
