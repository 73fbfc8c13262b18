// The GPU queue endpoint: `embed` turns text into a vector, `similarity` compares two texts.
//
// The "model" is a deterministic feature hash, so the example runs anywhere; swap in real
// inference without changing anything else.
import { Endpoint, GpuGroup } from 'flash-sdk';

// Scale to zero, up to three workers on 48 GB Ampere or 24 GB Ada GPUs.
const gpu = new Endpoint({ name: 'gpu_config', gpu: [GpuGroup.AMPERE_48, GpuGroup.ADA_24], workers: [0, 3] });

/** The longest input `embed` accepts, in bytes. */
const MAX_TEXT = 64 * 1024;

/** Embeds `text` into a unit vector of `dims` dimensions (a hashed bag of words). */
export const embed = gpu.fn(function embed(text: string, dims: number): number[] {
  if (!(dims > 0 && dims <= 4096)) {
    throw new RangeError(`dims must be in 1..=4096, got ${dims}`);
  }
  if (new TextEncoder().encode(text).length > MAX_TEXT) {
    throw new RangeError(`text is longer than ${MAX_TEXT} bytes`);
  }
  // What a function logs goes to its worker's log, tagged with the job: `flash logs`.
  console.log(`embedding ${words(text).length} words into ${dims} dimensions`);
  const vector = new Array<number>(dims).fill(0);
  for (const word of words(text)) {
    const h = fnv1a(word.toLowerCase());
    vector[(h >>> 1) % dims]! += (h & 1) === 0 ? 1 : -1;
  }
  const norm = Math.sqrt(vector.reduce((s, x) => s + x * x, 0));
  return norm > 0 ? vector.map((x) => x / norm) : vector;
});

/** Cosine similarity of two texts, in [-1, 1]. */
export const similarity = gpu.fn(async function similarity(a: string, b: string): Promise<number> {
  const [va, vb] = await Promise.all([embed(a, 64), embed(b, 64)]);
  return va.reduce((s, x, i) => s + x * vb[i]!, 0);
});

function words(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

/** 32-bit FNV-1a of the UTF-8 bytes of `text`. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  }
  return h;
}
