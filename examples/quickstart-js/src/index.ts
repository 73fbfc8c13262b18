// The CPU HTTP endpoint: `POST /predict` and `GET /stats`, and the app's entry module.
//
// `predict` awaits `embed` like any local function; because `embed` lives on `gpu_config`,
// the call goes to the GPU endpoint when deployed.
import { Endpoint, currentResource } from 'flash-sdk';
import ms from 'ms';

import { embed } from './embeddings.js';

// One warm worker, up to three.
const api = new Endpoint({ name: 'api', cpu: 'cpu3c-1-2', workers: [1, 3] });

interface Prediction {
  label: 'positive' | 'negative';
  score: number;
  dims: number;
}

/** Classifies `text` as positive or negative by its similarity to two prototypes. */
api.post('/predict', async function predict(text: string): Promise<Prediction> {
  const v = await embed(text, 64); // a peer call to the GPU endpoint when deployed
  const pos = await embed('good great excellent love happy', 64);
  const neg = await embed('bad awful terrible hate sad', 64);
  const p = v.reduce((s, x, i) => s + x * pos[i]!, 0);
  const n = v.reduce((s, x, i) => s + x * neg[i]!, 0);
  return { label: p >= n ? 'positive' : 'negative', score: p - n, dims: v.length };
});

/** Static facts about the deployment (and which resource config answered). */
api.get('/stats', function stats() {
  // `ms` is an npm dependency (package.json): flash build bundles it.
  return { app: 'quickstart-js', version: '0.1.0', served_by: currentResource(), idle_timeout: ms(60_000, { long: true }) };
});
