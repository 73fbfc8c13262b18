// Error stacks mapped back to the app's files with the source map the build embeds.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { decodeMappings, mapStack } from '../dist/sourcemap.js';

// Bundle line 1: nothing; line 2: column 0 → a.ts 1:0, column 6 → a.ts 3:4;
// line 3: column 2 → b.ts 10:8 (the source index moves by +1, the line by +7).
const map = { file: 'app.js', sources: ['src/a.ts', 'src/b.ts'], mappings: ';AAAA,MAEI;ECOI' };

test('mappings decode into segments per bundle line', () => {
  assert.deepEqual(decodeMappings(map.mappings), [
    [],
    [[0, 0, 0, 0], [6, 0, 2, 4]],
    [[2, 1, 9, 8]],
  ]);
  // Multi-digit and negative values: 16 is `gB`, -1 is `D`.
  assert.deepEqual(decodeMappings('gBAAD'), [[[16, 0, 0, -1]]]);
});

test('frames in the bundle point into the sources; others stay as they are', () => {
  const stack = [
    'embed2@app.js:2:9', // column 8 (0-based): the segment at 6
    'helper@app.js:3:3',
    'outer@app.js:2:1',
    'other@elsewhere.js:2:9',
    'no frame here',
  ].join('\n');
  assert.equal(
    mapStack(stack, map),
    ['embed2@src/a.ts:3:5', 'helper@src/b.ts:10:9', 'outer@src/a.ts:1:1', 'other@elsewhere.js:2:9', 'no frame here'].join('\n'),
  );
  assert.equal(mapStack('f@/x/app.js:3:5', map), 'f@src/b.ts:10:9', 'a path ending in the bundle');
  assert.equal(mapStack(stack, undefined), stack, 'no map: unchanged');
  assert.equal(mapStack('f@app.js:2:1', { ...map, mappings: '!!' }), 'f@app.js:2:1', 'a bad map changes nothing');
});
