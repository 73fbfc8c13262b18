// Every rule of `new Endpoint({...})` and of registering functions, with the exact errors.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { Endpoint, GpuGroup, GpuType, CpuInstanceType, CudaVersion, DataCenter } from '../dist/index.js';
import * as runtime from '../dist/runtime.js';

beforeEach(() => runtime.reset());

const throws = (options, type, message) =>
  assert.throws(() => new Endpoint(options), (e) => {
    assert.equal(e.constructor, type);
    assert.equal(e.message, message);
    return true;
  });

test('unknown options are refused, with the closest known one', () => {
  throws({ name: 'a', worker: 2 }, TypeError, "Endpoint() got an unexpected option 'worker'. Did you mean 'workers'?");
  throws({ name: 'a', idle_timeout: 5 }, TypeError, "Endpoint() got an unexpected option 'idle_timeout'. Did you mean 'idleTimeout'?");
  throws({ name: 'a', zzz: 1 }, TypeError, "Endpoint() got an unexpected option 'zzz'");
  assert.throws(() => new Endpoint('a'), { message: 'Endpoint() takes an object of options, got string' });
});

test('gpu and cpu, id and image', () => {
  throws({ gpu: GpuGroup.ADA_24, cpu: 'cpu3c-1-2' }, Error, 'gpu and cpu are mutually exclusive. specify one or neither.');
  throws({ id: 'x', image: 'y' }, Error, 'id and image are mutually exclusive. id= connects to an existing endpoint, image= deploys a new one.');
});

test('numeric ranges', () => {
  throws({ maxConcurrency: 0 }, Error, 'maxConcurrency must be >= 1, got 0');
  for (const t of [0, 3601, 1.5, '60']) throws({ idleTimeout: t }, Error, 'idleTimeout must be between 1 and 3600 seconds');
  throws({ executionTimeoutMs: -1 }, Error, "executionTimeoutMs must be >= 0 (0: the host's default), got -1");
  throws({ executionTimeoutMs: 'x' }, Error, "executionTimeoutMs must be >= 0 (0: the host's default), got 'x'");
  throws({ scalerValue: 0 }, Error, 'scalerValue must be >= 1, got 0');
  throws({ gpuCount: 0 }, Error, 'gpuCount must be an integer >= 1, got 0');
  throws({ flashboot: 'yes' }, Error, "flashboot must be true or false, got 'yes'");
  throws({ minCudaVersion: '10.0' }, Error, "minCudaVersion must be one of 11.8, 12.0, 12.1, 12.2, 12.3, 12.4, 12.5, 12.6, 12.7, 12.8, 12.9, 13.0, got '10.0'");
  throws({ scalerType: 'FAST' }, Error, "'FAST' is not a valid ServerlessScalerType");
});

test('options Flash cannot honour are refused when set', () => {
  throws({ id: 'abc' }, Error, "Endpoint({ id }) is not supported by Flash: Endpoint({ id }) is runpod-flash's client for an endpoint deployed elsewhere; Flash functions call each other by name: await the registered function instead.");
  throws({ image: 'img' }, Error, 'Endpoint({ image }) is not supported by Flash: a Flash function runs as a WebAssembly component inside flash-host, so there is no container image to choose.');
  throws({ template: {} }, Error, "Endpoint({ template }) is not supported by Flash: Flash generates the endpoint's template (flash-host and the artifact); set environment variables with env: {...}.");
  throws({ volume: { id: 'v' } }, Error, 'Endpoint({ volume }) is not supported by Flash: a WebAssembly component has no file system to mount a network volume on.');
  throws({ systemDependencies: ['ffmpeg'] }, Error, "Endpoint({ systemDependencies }) is not supported by Flash: a WebAssembly component cannot use system packages; use pure-JavaScript npm packages in package.json or the host's wasi:nn for inference.");
  throws({ maxConcurrency: 4 }, Error, 'Endpoint({ maxConcurrency }) is not supported by Flash: flash-host runs every request in a fresh instance and bounds concurrency itself.');
  throws({ dependencies: ['lodash'] }, Error, "Endpoint({ dependencies }) is not supported by Flash for JavaScript: list npm packages in the project's package.json (with its lockfile); flash build bundles them.");
  // Their defaults are accepted.
  new Endpoint({ name: 'ok', id: null, image: null, maxConcurrency: 1, dependencies: [] });
});

test('names', () => {
  for (const name of ['', 'a b', 'x'.repeat(65), 'é']) {
    throws({ name }, Error, `endpoint name '${name}' is invalid: use 1 to 64 letters, digits, '_' and '-'`);
  }
  throws({ name: 5 }, Error, "endpoint name 5 is invalid: use 1 to 64 letters, digits, '_' and '-'");
  new Endpoint({ name: 'a-b_C9' });
});

test('workers', () => {
  const w = (workers) => { const e = new Endpoint({ workers }); return [e.workersMin, e.workersMax]; };
  assert.deepEqual(w(undefined), [0, 1]);
  assert.deepEqual(w(3), [0, 3]);
  assert.deepEqual(w([1, 4]), [1, 4]);
  throws({ workers: 'x' }, Error, "workers must be an integer or [min, max] array, got string: 'x'");
  throws({ workers: [1, 2, 3] }, Error, 'workers must be an integer or [min, max] array, got array: [1,2,3]');
  throws({ workers: [-1, 2] }, Error, 'workers cannot be negative: [-1, 2]');
  throws({ workers: [3, 2] }, Error, 'workers min (3) cannot exceed max (2)');
});

test('gpu, cpu, datacenter and env', () => {
  throws({ gpu: 'H100' }, Error, "gpu must be a GpuGroup, GpuType, or array, got string: 'H100'");
  throws({ gpu: [GpuGroup.ADA_24, 7] }, Error, 'gpu list elements must be GpuGroup or GpuType, got number: 7');
  throws({ cpu: 'cpu9x' }, Error, "'cpu9x' is not a valid CpuInstanceType");
  throws({ cpu: 3 }, Error, 'cpu must be a CpuInstanceType, string, or array, got number');
  throws({ datacenter: [1] }, Error, 'datacenter must be a DataCenter, a string, or an array of them, got number');
  throws({ env: { A: 1 } }, Error, "env must map strings to strings, got 'A': 1");
  const gpu = new Endpoint({ name: 'g', gpu: [GpuGroup.AMPERE_48, GpuType.NVIDIA_L4], gpuCount: 2, minCudaVersion: CudaVersion.V12_4, datacenter: DataCenter.EU_RO_1, env: { B: '2', A: '1' }, flashboot: false });
  gpu.fn(function work() {});
  const cpu = new Endpoint({ name: 'c', cpu: [CpuInstanceType.CPU3C_1_2, 'cpu5c-2-4'], executionTimeoutMs: 5000 });
  cpu.get('/x', function route() {});
  const specs = Object.fromEntries(runtime.describe().resources.map((r) => [r.name, r]));
  assert.deepEqual(specs.g.compute, { gpu: { gpuIds: ['AMPERE_48', 'NVIDIA L4'], gpuCount: 2 } });
  assert.deepEqual(specs.g.placement, { locations: ['EU-RO-1'], minCudaVersion: '12.4', flashboot: false });
  assert.deepEqual(specs.g.env, [['A', '1'], ['B', '2']]);
  assert.equal(specs.g.kind, 'queue');
  assert.equal(specs.g.scalerType, 'queue-delay');
  assert.deepEqual(specs.c.compute, { cpu: { instanceIds: ['cpu3c-1-2', 'cpu5c-2-4'] } });
  assert.equal(specs.c.kind, 'load-balanced');
  assert.equal(specs.c.scalerType, 'request-count');
  assert.equal(specs.c.executionTimeoutMs, 5000);
  assert.deepEqual(new Endpoint({}).resourceSpec().compute, { gpu: { gpuIds: ['any'], gpuCount: 1 } });
});

test('routes', () => {
  assert.throws(() => new Endpoint({}).get('/x', function f() {}), {
    message: "name is required for load-balanced endpoints. use new Endpoint({ name: 'my-api', ... }) when registering routes.",
  });
  const api = new Endpoint({ name: 'api' });
  assert.throws(() => api.route('OPTIONS', '/x', function f() {}), { message: 'method must be one of GET, POST, PUT, DELETE, PATCH, got: OPTIONS' });
  assert.throws(() => api.get('x', function f() {}), { message: "path must start with '/', got: x" });
  for (const path of ['/execute', '/ping']) {
    assert.throws(() => api.post(path, function f() {}), { message: `path '${path}' is reserved by the framework. reserved paths: /execute, /ping` });
  }
  api.get('/a', function first() {});
  assert.throws(() => api.get('/a', function second() {}), { message: "duplicate route: GET /a (already registered to 'first')" });
  api.post('/a', function third() {});
  assert.throws(() => api.fn(function q() {}), { message: 'cannot use Endpoint.fn() after registering routes with .get()/.post()/etc. use one pattern or the other.' });
  const queue = new Endpoint({ name: 'q' });
  queue.fn(function job() {});
  assert.throws(() => queue.get('/b', function r() {}), { message: 'cannot add routes after using Endpoint.fn(). use one pattern or the other.' });
  assert.throws(() => queue.fn(5), { message: 'Endpoint.fn() takes a function, got number' });
  assert.throws(() => queue.fn(() => 1), { message: "a Flash function needs a name: register a named function (`async function embed(...) {...}`) or pass { name: 'embed' }" });
  const spec = runtime.describe().functions.find((f) => f.name === 'third');
  assert.deepEqual([spec.resource, spec.httpMethod, spec.httpPath, spec.isAsync], ['api', 'POST', '/a', false]);
});

test('a queue endpoint without a name takes its function\'s', () => {
  const e = new Endpoint({ cpu: 'cpu3c-1-2' });
  const f = e.fn(async function embed(text) { return text; });
  assert.equal(e.name, 'embed');
  assert.equal(f.functionName, 'embed');
  assert.equal(f.resource, 'embed');
  assert.equal(runtime.describe().functions[0].isAsync, true);
});
