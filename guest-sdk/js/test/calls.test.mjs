// Calls: binding payloads to parameters, in-place and peer calls, thrown errors and their
// kinds, emit and currentResource (the transport stands in for the WIT imports).
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { Endpoint, RemoteError, ErrorKind, peerCall, emit, currentResource } from '../dist/index.js';
import * as runtime from '../dist/runtime.js';
import { params } from '../dist/binding.js';

beforeEach(() => runtime.reset());

test('parameter names are read from the source', () => {
  const names = (f) => params(f).map((p) => (p.rest ? '...' : '') + (p.pattern ? '{}' : p.name) + (p.optional ? '?' : ''));
  assert.deepEqual(names(function f(a, b) {}), ['a', 'b']);
  assert.deepEqual(names(async function f(text, words = 3) {}), ['text', 'words?']);
  assert.deepEqual(names(async (x) => x), ['x']);
  assert.deepEqual(names(async x => x), ['x']);
  assert.deepEqual(names((a, { b, c } = {}, ...rest) => a), ['a', '{}?', '...rest']);
  assert.deepEqual(names(function f(a = ')', /* c, */ b = [1, 2], c = `x${1 + 1}`) {}), ['a?', 'b?', 'c?']);
  assert.deepEqual(names(function f() {}), []);
});

const failure = async (promise, kind, message) => {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof runtime.CallFailure, String(e));
    assert.equal(e.kind, kind);
    assert.equal(e.message, message);
    return true;
  });
};

test('invoke binds named and positional arguments', async () => {
  const e = new Endpoint({ name: 'w', cpu: 'cpu3c-1-2' });
  e.fn(async function summarize(text, words = 3) { return text.split(' ').slice(0, words).join(' '); });
  assert.equal(await runtime.invoke('summarize', '{"text": "a b c d e"}'), '"a b c"');
  assert.equal(await runtime.invoke('summarize', '{"text": "a b c d e", "words": 1}'), '"a"');
  assert.equal(await runtime.invoke('summarize', '["a b c d", 2]'), '"a b"');
  await failure(runtime.invoke('summarize', '{"txt": "a"}'), 'invalid-input', '`summarize`: unexpected argument `txt` (its arguments: `text`, `words`)');
  await failure(runtime.invoke('summarize', '{}'), 'invalid-input', '`summarize`: missing argument `text`');
  await failure(runtime.invoke('summarize', '["a", 1, 2]'), 'invalid-input', '`summarize`: takes 2 positional argument(s), got 3');
  await assert.rejects(runtime.invoke('summarize', '{'), { kind: 'invalid-input', message: /^`summarize`: input is not valid JSON: / });
  await failure(runtime.invoke('summarize', '"x"'), 'invalid-input', '`summarize`: input must be a JSON object of named arguments or an array of positional arguments, got a string');
  await failure(runtime.invoke('nope', '{}'), 'unknown-function', 'no function `nope` in this component (it provides: summarize)');
});

test('a destructuring parameter takes the named arguments whole', async () => {
  new Endpoint({ name: 'w' }).fn(function area({ width, height = 1 }) { return width * height; });
  assert.equal(await runtime.invoke('area', '{"width": 3, "height": 4}'), '12');
});

test('thrown errors are user-errors with the stack; RemoteErrors keep their kind and origin', async () => {
  const e = new Endpoint({ name: 'w' });
  e.fn(async function fails(n) { await null; throw new RangeError(`bad ${n}`); });
  e.fn(function throwsString() { throw 'plain'; });
  e.fn(function relays() { throw new RemoteError('timeout', 'too slow', 'far stack', { function: 'x', resource: 'r', via: [] }); });
  e.fn(function notJson() { return 10n; });
  await assert.rejects(runtime.invoke('fails', '[1]'), (f) => {
    assert.equal(f.kind, 'user-error');
    assert.equal(f.message, 'RangeError: bad 1');
    assert.match(f.traceback, /^RangeError: bad 1\n\s+at fails \(.*calls\.test\.mjs[^\n]*$/);
    return true;
  });
  await failure(runtime.invoke('throwsString', '{}'), 'user-error', 'plain');
  await assert.rejects(runtime.invoke('relays', '{}'), (f) => {
    assert.deepEqual([f.kind, f.message, f.traceback, f.origin], ['timeout', 'too slow', 'far stack', { function: 'x', resource: 'r', via: [] }]);
    return true;
  });
  await failure(runtime.invoke('notJson', '{}'), 'user-error', '`notJson` returned a value that is not JSON: Do not know how to serialize a BigInt');
});

test('RemoteError', () => {
  const e = new RemoteError('unavailable', 'down');
  assert.equal(e.kind, ErrorKind.UNAVAILABLE);
  assert.equal(e.message, 'unavailable: down');
  assert.equal(e.detail, 'down');
  assert.equal(e.traceback, undefined);
  assert.ok(e instanceof Error);
  const odd = new RemoteError('weird', 'x');
  assert.deepEqual([odd.kind, odd.detail], ['internal', 'weird: x']);
});

/** A transport that records what would leave the component. */
function fakeTransport(resource, answers = {}) {
  const sent = [];
  runtime.installTransport({
    call(fn, payload) {
      sent.push([fn, JSON.parse(payload)]);
      const answer = answers[fn];
      if (answer instanceof RemoteError) throw answer;
      return JSON.stringify(answer ?? null);
    },
    emit(chunk) { sent.push(['emit', JSON.parse(chunk)]); },
    env(name) { return name === 'FLASH_RESOURCE_NAME' ? resource : undefined; },
  });
  return sent;
}

test('calls run in place on the same config and through peer otherwise', async () => {
  const a = new Endpoint({ name: 'a' });
  const b = new Endpoint({ name: 'b' });
  let ran = 0;
  const local = a.fn(async function local(x, y = 1) { ran++; return x + y; });
  const remote = b.fn(async function remote(text, words) { ran++; return 'here'; });
  // No transport (plain Node.js): everything in place.
  assert.equal(await remote('t', 2), 'here');
  const sent = fakeTransport('a', { remote: 'there', word_stats: { words: 2 } });
  assert.equal(currentResource(), 'a');
  assert.equal(await local(1, 2), 3);
  assert.equal(await remote('t', 2), 'there');
  assert.equal(ran, 2);
  assert.deepEqual(await peerCall('word_stats', { text: 'a b' }), { words: 2 });
  await peerCall('word_stats', 'a', 'b');
  emit({ step: 1 });
  assert.deepEqual(sent, [
    ['remote', { text: 't', words: 2 }],
    ['word_stats', { text: 'a b' }],
    ['word_stats', ['a', 'b']],
    ['emit', { step: 1 }],
  ]);
  // By name, a function of this config runs in place with its named arguments bound.
  assert.equal(await peerCall('local', { x: 5 }), 6);
});

test('peer failures reject with RemoteError', async () => {
  new Endpoint({ name: 'b' }).fn(function far() {});
  fakeTransport('a', { far: new RemoteError('user-error', 'ValueError: no', 'Traceback ...', { function: 'far', resource: 'b', via: [] }) });
  await assert.rejects(peerCall('far', {}), (e) => {
    assert.ok(e instanceof RemoteError);
    assert.deepEqual([e.kind, e.detail, e.traceback, e.origin.resource], ['user-error', 'ValueError: no', 'Traceback ...', 'b']);
    return true;
  });
  runtime.installTransport(undefined);
  await assert.rejects(peerCall('elsewhere'), {
    kind: 'unknown-function',
    message: 'unknown-function: no function `elsewhere` here; calls to functions of other components need a deployed app (or `flash run`)',
  });
});
