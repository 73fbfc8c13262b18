// The JavaScript half of the polyglot example (TypeScript).
//
// * `shout` (queue, `js_worker`) is what the Rust function `exclaim` and the Python route
//   `POST /loud` call; it throws on empty text, and the caller learns where it began.
// * `POST /report` (load-balanced, `js_api`) awaits the Rust function `word_stats` and the
//   Python function `summarize` by name with `peerCall`, and the JavaScript function
//   `shout` on `js_worker` as a local one: calls across languages and endpoints.
import { Endpoint, currentResource, peerCall } from 'flash-sdk';

const worker = new Endpoint({ name: 'js_worker', cpu: 'cpu3c-1-2', workers: [0, 2] });

/** `text` upper-cased, with an exclamation mark. */
export const shout = worker.fn(function shout(text: string): string {
  if (!text.trim()) {
    throw new Error('nothing to shout: the text is empty');
  }
  return `${text.toUpperCase()}!`;
});

const api = new Endpoint({ name: 'js_api', cpu: 'cpu3c-1-2', workers: [1, 2] });

interface WordStats {
  words: number;
  longest: string;
  language: string;
}

/** Word statistics from Rust, a summary from Python and a shout from JavaScript. */
api.post('/report', async function report(text: string) {
  const stats = (await peerCall('word_stats', { text })) as WordStats;
  const summary = (await peerCall('summarize', { text, words: 2 })) as string;
  return { stats, summary, shouted: await shout(summary), served_by: currentResource() };
});
