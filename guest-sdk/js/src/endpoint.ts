/**
 * `Endpoint`: a resource config (one deployable endpoint) and the functions on it.
 *
 * ```ts
 * const gpu = new Endpoint({ name: 'gpu_worker', gpu: GpuGroup.AMPERE_48, workers: [0, 3] });
 * export const embed = gpu.fn(async function embed(text: string) { ... });   // queue-based
 *
 * const api = new Endpoint({ name: 'api', cpu: 'cpu3c-1-2', workers: [1, 3] });
 * api.post('/predict', async function predict(text: string) {              // load-balanced
 *   return { vector: await embed(text) };                                  // another endpoint
 * });
 * ```
 *
 * The options and their rules are the Python SDK's (`flash_sdk.Endpoint`, itself
 * runpod-flash 1.21's), in JavaScript spelling (`idleTimeout` for `idle_timeout`), with the
 * same error texts apart from those names. Options that have no meaning for a WebAssembly
 * component are refused when they are set (see `REFUSED`, and docs/js-sdk.md).
 */

import { Param, params as readParams } from './binding.js';
import { sourceName } from './params.js';
import { CpuInstanceType, CudaVersion, DataCenter, GpuGroup, GpuType, ServerlessScalerType } from './resources.js';
import * as runtime from './runtime.js';
import { AnyFunction, FunctionEntry, ResourceSpec } from './runtime.js';

export const DEFAULT_WORKERS_MIN = 0;
export const DEFAULT_WORKERS_MAX = 1;

const VALID_HTTP_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'] as const;
type HttpMethod = (typeof VALID_HTTP_METHODS)[number];
const RESERVED_PATHS = ['/execute', '/ping'];

/** Everything `new Endpoint({...})` accepts. */
export interface EndpointOptions {
  /** The resource config's name (1 to 64 letters, digits, `_` and `-`); for a queue
   * endpoint it defaults to the name of its function. */
  name?: string;
  /** runpod-flash's client for an endpoint deployed elsewhere: refused. */
  id?: string | null;
  gpu?: GpuGroup | GpuType | (GpuGroup | GpuType)[] | null;
  cpu?: CpuInstanceType | string | (CpuInstanceType | string)[] | null;
  /** Max workers, or `[min, max]`. */
  workers?: number | [number, number] | null;
  /** Seconds an idle worker stays up (1 to 3600; default 60). */
  idleTimeout?: number;
  /** npm packages: JavaScript components bundle the project's package.json instead. */
  dependencies?: string[] | null;
  systemDependencies?: string[] | null;
  accelerateDownloads?: boolean;
  volume?: unknown;
  datacenter?: DataCenter | string | (DataCenter | string)[] | null;
  env?: Record<string, string> | null;
  gpuCount?: number;
  /** Per-call deadline; 0 is the host's default. */
  executionTimeoutMs?: number;
  flashboot?: boolean;
  image?: string | null;
  scalerType?: ServerlessScalerType | null;
  scalerValue?: number;
  template?: unknown;
  minCudaVersion?: CudaVersion | null;
  maxConcurrency?: number;
}

const PARAMETERS: (keyof EndpointOptions)[] = [
  'name', 'id', 'gpu', 'cpu', 'workers', 'idleTimeout', 'dependencies', 'systemDependencies',
  'accelerateDownloads', 'volume', 'datacenter', 'env', 'gpuCount', 'executionTimeoutMs',
  'flashboot', 'image', 'scalerType', 'scalerValue', 'template', 'minCudaVersion',
  'maxConcurrency',
];

/** Options Flash cannot honour, with why and what to do instead. Each is refused only
 * when set to something other than its default. */
const REFUSED: Partial<Record<keyof EndpointOptions, [unknown, string]>> = {
  id: [
    null,
    "Endpoint({ id }) is runpod-flash's client for an endpoint deployed elsewhere; Flash " +
      'functions call each other by name: await the registered function instead',
  ],
  image: [
    null,
    'a Flash function runs as a WebAssembly component inside flash-host, so there is no ' +
      'container image to choose',
  ],
  template: [
    null,
    "Flash generates the endpoint's template (flash-host and the artifact); set environment " +
      'variables with env: {...}',
  ],
  volume: [null, 'a WebAssembly component has no file system to mount a network volume on'],
  systemDependencies: [
    null,
    'a WebAssembly component cannot use system packages; use pure-JavaScript npm packages in ' +
      "package.json or the host's wasi:nn for inference",
  ],
  maxConcurrency: [1, 'flash-host runs every request in a fresh instance and bounds concurrency itself'],
};

/** A registered function: call it to run it, in place or on its endpoint. */
export type RemoteFunction<F extends AnyFunction> = ((
  ...args: Parameters<F>
) => Promise<Awaited<ReturnType<F>>>) & {
  /** The function's name in the app (what `describe` reports and other languages call). */
  readonly functionName: string;
  /** The resource config that serves it. */
  readonly resource: string;
};

/** How `fn` and the route methods take a function. */
export interface RegisterOptions {
  /** The function's name in the app; by default its JavaScript name. */
  name?: string;
  /** Its parameter names, when its source text does not show them. */
  params?: string[];
}

/**
 * One resource config and the functions on it: `endpoint.fn(f)` for a queue-based
 * endpoint, `api.get('/path', f)` (and post, put, delete, patch) for a load-balanced one.
 */
export class Endpoint {
  name: string | undefined;
  readonly idleTimeout: number;
  readonly executionTimeoutMs: number;
  readonly dependencies: string[];
  readonly accelerateDownloads: boolean;
  readonly env: Record<string, string>;
  readonly gpuCount: number;
  readonly datacenter: string[];
  readonly flashboot: boolean;
  readonly minCudaVersion: string | null;
  readonly scalerValue: number;
  private readonly gpuIds: string[] | null;
  private readonly cpuIds: string[] | null;
  private readonly cpu: boolean;
  private readonly workers: [number, number];
  private readonly explicitScalerType: ServerlessScalerType | null;
  private readonly routes: { method: string; path: string; functionName: string }[] = [];
  private queueTarget: string | null = null;

  constructor(options: EndpointOptions = {}) {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError(`Endpoint() takes an object of options, got ${typeName(options)}`);
    }
    const unknown = Object.keys(options).filter((k) => !PARAMETERS.includes(k as keyof EndpointOptions));
    if (unknown.length > 0) {
      const suggestion = closest(unknown[0]!, PARAMETERS);
      const hint = suggestion ? `. Did you mean '${suggestion}'?` : '';
      throw new TypeError(`Endpoint() got an unexpected option '${unknown[0]}'${hint}`);
    }
    const o = {
      id: null, gpu: null, cpu: null, workers: null, idleTimeout: 60, dependencies: null,
      systemDependencies: null, accelerateDownloads: true, volume: null, datacenter: null,
      env: null, gpuCount: 1, executionTimeoutMs: 0, flashboot: true, image: null,
      scalerType: null, scalerValue: 4, template: null, minCudaVersion: CudaVersion.V12_8,
      maxConcurrency: 1,
      ...stripUndefined(options),
    } as Required<EndpointOptions>;
    if (o.gpu != null && o.cpu != null) {
      throw new Error('gpu and cpu are mutually exclusive. specify one or neither.');
    }
    if (o.id != null && o.image != null) {
      throw new Error(
        'id and image are mutually exclusive. id= connects to an existing endpoint, image= ' +
          'deploys a new one.',
      );
    }
    if (typeof o.maxConcurrency !== 'number' || o.maxConcurrency < 1) {
      throw new Error(`maxConcurrency must be >= 1, got ${show(o.maxConcurrency)}`);
    }
    if (!Number.isInteger(o.idleTimeout) || o.idleTimeout < 1 || o.idleTimeout > 3600) {
      throw new Error('idleTimeout must be between 1 and 3600 seconds');
    }
    if (!Number.isInteger(o.executionTimeoutMs) || o.executionTimeoutMs < 0) {
      throw new Error(
        `executionTimeoutMs must be >= 0 (0: the host's default), got ${show(o.executionTimeoutMs)}`,
      );
    }
    if (!Number.isInteger(o.scalerValue) || o.scalerValue < 1) {
      throw new Error(`scalerValue must be >= 1, got ${show(o.scalerValue)}`);
    }
    for (const [option, [fallback, why]] of Object.entries(REFUSED) as [string, [unknown, string]][]) {
      const value = (o as unknown as Record<string, unknown>)[option];
      if (value !== fallback && !(fallback === null && value === undefined)) {
        throw new Error(`Endpoint({ ${option} }) is not supported by Flash: ${why}.`);
      }
    }
    if (options.name !== undefined) checkName(options.name);

    this.name = options.name;
    this.gpuIds = normalizeGpu(o.gpu);
    this.cpuIds = normalizeCpu(o.cpu);
    this.cpu = o.cpu != null;
    if (!this.cpu && this.gpuIds === null) this.gpuIds = [GpuGroup.ANY];
    this.workers = normalizeWorkers(o.workers);
    this.idleTimeout = o.idleTimeout;
    this.executionTimeoutMs = o.executionTimeoutMs;
    this.dependencies = [...(o.dependencies ?? [])];
    if (this.dependencies.length > 0) {
      throw new Error(
        'Endpoint({ dependencies }) is not supported by Flash for JavaScript: list npm packages ' +
          "in the project's package.json (with its lockfile); flash build bundles them.",
      );
    }
    this.accelerateDownloads = o.accelerateDownloads;
    this.env = { ...(o.env ?? {}) };
    for (const [key, value] of Object.entries(this.env)) {
      if (typeof value !== 'string') {
        throw new Error(`env must map strings to strings, got '${key}': ${show(value)}`);
      }
    }
    if (!Number.isInteger(o.gpuCount) || o.gpuCount < 1) {
      throw new Error(`gpuCount must be an integer >= 1, got ${show(o.gpuCount)}`);
    }
    this.gpuCount = o.gpuCount;
    this.datacenter = normalizeDatacenters(o.datacenter);
    if (typeof o.flashboot !== 'boolean') {
      throw new Error(`flashboot must be true or false, got ${show(o.flashboot)}`);
    }
    this.flashboot = o.flashboot;
    this.minCudaVersion = o.minCudaVersion;
    const cudaVersions: string[] = Object.values(CudaVersion);
    if (this.minCudaVersion != null && !cudaVersions.includes(this.minCudaVersion)) {
      throw new Error(
        `minCudaVersion must be one of ${cudaVersions.join(', ')}, got ${show(this.minCudaVersion)}`,
      );
    }
    if (o.scalerType != null && !Object.values(ServerlessScalerType).includes(o.scalerType)) {
      throw new Error(`'${String(o.scalerType)}' is not a valid ServerlessScalerType`);
    }
    this.explicitScalerType = o.scalerType;
    this.scalerValue = o.scalerValue;
  }

  get isCpu(): boolean {
    return this.cpu;
  }

  get isLoadBalanced(): boolean {
    return this.routes.length > 0;
  }

  get workersMin(): number {
    return this.workers[0];
  }

  get workersMax(): number {
    return this.workers[1];
  }

  /** REQUEST_COUNT for load-balanced endpoints and QUEUE_DELAY for queue ones, unless set. */
  get scalerType(): ServerlessScalerType {
    if (this.explicitScalerType !== null) return this.explicitScalerType;
    return this.isLoadBalanced ? ServerlessScalerType.REQUEST_COUNT : ServerlessScalerType.QUEUE_DELAY;
  }

  /** Puts a function (sync or async) on this queue-based endpoint. */
  fn<F extends AnyFunction>(target: F, options: RegisterOptions = {}): RemoteFunction<F> {
    if (this.routes.length > 0) {
      throw new Error(
        'cannot use Endpoint.fn() after registering routes with .get()/.post()/etc. use one ' +
          'pattern or the other.',
      );
    }
    if (typeof target !== 'function') {
      throw new TypeError(`Endpoint.fn() takes a function, got ${typeName(target)}`);
    }
    const name = functionName(target, options);
    if (this.name === undefined) {
      this.name = name;
      checkName(this.name);
    }
    this.queueTarget = name;
    return this.register(target, name, options, undefined, undefined);
  }

  /** Registers a GET route; its arguments come from the query string. */
  get<F extends AnyFunction>(path: string, handler: F, options?: RegisterOptions): RemoteFunction<F> {
    return this.route('GET', path, handler, options);
  }

  /** Registers a POST route; its arguments come from the JSON body. */
  post<F extends AnyFunction>(path: string, handler: F, options?: RegisterOptions): RemoteFunction<F> {
    return this.route('POST', path, handler, options);
  }

  put<F extends AnyFunction>(path: string, handler: F, options?: RegisterOptions): RemoteFunction<F> {
    return this.route('PUT', path, handler, options);
  }

  delete<F extends AnyFunction>(path: string, handler: F, options?: RegisterOptions): RemoteFunction<F> {
    return this.route('DELETE', path, handler, options);
  }

  patch<F extends AnyFunction>(path: string, handler: F, options?: RegisterOptions): RemoteFunction<F> {
    return this.route('PATCH', path, handler, options);
  }

  /** Registers a route with any of the methods above. */
  route<F extends AnyFunction>(
    method: string,
    path: string,
    handler: F,
    options: RegisterOptions = {},
  ): RemoteFunction<F> {
    if (this.name === undefined) {
      throw new Error(
        "name is required for load-balanced endpoints. use new Endpoint({ name: 'my-api', ... }) " +
          'when registering routes.',
      );
    }
    const upper = String(method).toUpperCase();
    if (!(VALID_HTTP_METHODS as readonly string[]).includes(upper)) {
      throw new Error(`method must be one of ${VALID_HTTP_METHODS.join(', ')}, got: ${upper}`);
    }
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new Error(`path must start with '/', got: ${String(path)}`);
    }
    if (RESERVED_PATHS.includes(path)) {
      throw new Error(
        `path '${path}' is reserved by the framework. reserved paths: ${RESERVED_PATHS.join(', ')}`,
      );
    }
    if (this.queueTarget !== null) {
      throw new Error(
        'cannot add routes after using Endpoint.fn(). use one pattern or the other.',
      );
    }
    if (typeof handler !== 'function') {
      throw new TypeError(`${upper} ${path}: the handler must be a function, got ${typeName(handler)}`);
    }
    const name = functionName(handler, options);
    for (const existing of this.routes) {
      if (existing.method === upper && existing.path === path) {
        throw new Error(
          `duplicate route: ${upper} ${path} (already registered to '${existing.functionName}')`,
        );
      }
    }
    this.routes.push({ method: upper, path, functionName: name });
    return this.register(handler, name, options, upper as HttpMethod, path);
  }

  private register<F extends AnyFunction>(
    target: F,
    name: string,
    options: RegisterOptions,
    method: string | undefined,
    path: string | undefined,
  ): RemoteFunction<F> {
    const ps: Param[] = options.params
      ? options.params.map((p) => ({ name: p, optional: false, rest: false, pattern: false }))
      : readParams(target);
    const entry: FunctionEntry = {
      name,
      resource: this.name!,
      module: moduleOf(),
      target,
      params: ps,
      httpMethod: method,
      httpPath: path,
    };
    runtime.registerEndpoint(this);
    runtime.registerFunction(entry);
    const remote = (...args: unknown[]) => runtime.call(entry, args);
    Object.defineProperty(remote, 'name', { value: name });
    Object.defineProperty(remote, 'functionName', { value: name, enumerable: true });
    Object.defineProperty(remote, 'resource', { value: entry.resource, enumerable: true });
    return remote as unknown as RemoteFunction<F>;
  }

  /** This endpoint as a WIT `resource-config` (see `runtime.describe`). @internal */
  resourceSpec(): ResourceSpec {
    const compute: ResourceSpec['compute'] = this.cpu
      ? { cpu: { instanceIds: [...(this.cpuIds ?? [])] } }
      : { gpu: { gpuIds: [...(this.gpuIds ?? [])], gpuCount: this.gpuCount } };
    return {
      name: this.name!,
      kind: this.isLoadBalanced ? 'load-balanced' : 'queue',
      compute,
      workersMin: this.workers[0],
      workersMax: this.workers[1],
      idleTimeoutS: this.idleTimeout,
      executionTimeoutMs: this.executionTimeoutMs || undefined,
      scalerType: this.scalerType === ServerlessScalerType.REQUEST_COUNT ? 'request-count' : 'queue-delay',
      scalerValue: this.scalerValue,
      env: Object.entries(this.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      placement: {
        locations: [...this.datacenter],
        // runpod-flash sends a CUDA requirement for GPU endpoints only; the default is
        // the platform's own, so only a chosen version is carried.
        minCudaVersion:
          this.minCudaVersion != null && this.minCudaVersion !== CudaVersion.V12_8
            ? this.minCudaVersion
            : undefined,
        flashboot: this.flashboot ? undefined : false,
      },
    };
  }

  toString(): string {
    return `Endpoint(name=${this.name}, ${this.isLoadBalanced ? 'load-balanced' : 'queue'})`;
  }
}

function functionName(target: AnyFunction, options: RegisterOptions): string {
  const name = options.name ?? sourceName(target);
  if (!name) {
    throw new Error(
      'a Flash function needs a name: register a named function (`async function embed(...) ' +
        "{...}`) or pass { name: 'embed' }",
    );
  }
  if (!/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/.test(name)) {
    throw new Error(`function name '${name}' is invalid: use 1 to 64 letters, digits, '_' and '-'`);
  }
  return name;
}

/** The module a function is registered from: the bundle keeps no file names, so the
 * registering stack frame's file is used where the engine reports one. */
function moduleOf(): string {
  const stack = new Error().stack ?? '';
  for (const line of stack.split('\n')) {
    const file = /(?:\(|@|at )((?:file:\/\/)?[^\s()]+?):\d+:\d+\)?$/.exec(line.trim())?.[1];
    if (file && !/flash-sdk|guest-sdk\/js|\/dist\/|\/src\/(endpoint|runtime)\./.test(file)) {
      return file.replace(/^file:\/\//, '').replace(/^.*\//, '').replace(/\.[cm]?[jt]s$/, '');
    }
  }
  return '';
}

function checkName(name: unknown): void {
  if (typeof name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
    throw new Error(
      `endpoint name ${show(name)} is invalid: use 1 to 64 letters, digits, '_' and '-'`,
    );
  }
}

function normalizeWorkers(workers: unknown): [number, number] {
  if (workers === null || workers === undefined) return [DEFAULT_WORKERS_MIN, DEFAULT_WORKERS_MAX];
  let min: number;
  let max: number;
  if (Number.isInteger(workers)) {
    [min, max] = [DEFAULT_WORKERS_MIN, workers as number];
  } else if (
    Array.isArray(workers) &&
    workers.length === 2 &&
    workers.every((w) => Number.isInteger(w))
  ) {
    [min, max] = workers as [number, number];
  } else {
    throw new Error(
      `workers must be an integer or [min, max] array, got ${typeName(workers)}: ${show(workers)}`,
    );
  }
  if (min < 0 || max < 0) throw new Error(`workers cannot be negative: [${min}, ${max}]`);
  if (min > max) throw new Error(`workers min (${min}) cannot exceed max (${max})`);
  return [min, max];
}

const GPU_VALUES: ReadonlySet<string> = new Set([...Object.values(GpuGroup), ...Object.values(GpuType)]);

function normalizeGpu(gpu: unknown): string[] | null {
  if (gpu === null || gpu === undefined) return null;
  if (typeof gpu === 'string' && GPU_VALUES.has(gpu)) return [gpu];
  if (Array.isArray(gpu)) {
    for (const g of gpu) {
      if (typeof g !== 'string' || !GPU_VALUES.has(g)) {
        throw new Error(`gpu list elements must be GpuGroup or GpuType, got ${typeName(g)}: ${show(g)}`);
      }
    }
    return [...gpu];
  }
  throw new Error(`gpu must be a GpuGroup, GpuType, or array, got ${typeName(gpu)}: ${show(gpu)}`);
}

const CPU_VALUES: ReadonlySet<string> = new Set(Object.values(CpuInstanceType));

function normalizeCpu(cpu: unknown): string[] | null {
  if (cpu === null || cpu === undefined) return null;
  const one = (c: unknown): string => {
    if (typeof c === 'string' && CPU_VALUES.has(c)) return c;
    if (typeof c === 'string') throw new Error(`'${c}' is not a valid CpuInstanceType`);
    throw new Error(`cpu must be a CpuInstanceType, string, or array, got ${typeName(c)}`);
  };
  if (Array.isArray(cpu)) return cpu.map(one);
  return [one(cpu)];
}

/** `DataCenter`, string, or an array of them → RunPod data centre ids (`flash build`
 * checks them). */
function normalizeDatacenters(datacenter: unknown): string[] {
  if (datacenter === null || datacenter === undefined) return [];
  const items = Array.isArray(datacenter) ? datacenter : [datacenter];
  return items.map((item) => {
    if (typeof item !== 'string') {
      throw new Error(
        `datacenter must be a DataCenter, a string, or an array of them, got ${typeName(item)}`,
      );
    }
    return item;
  });
}

function stripUndefined(options: EndpointOptions): Partial<EndpointOptions> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function show(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The option name closest to `word` (Python's difflib cut-off, 0.6), if any. */
function closest(word: string, options: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = 0.6;
  for (const option of options) {
    const score = similarity(word.toLowerCase(), option.toLowerCase());
    if (score >= bestScore) {
      best = option;
      bestScore = score;
    }
  }
  return best;
}

/** 2·matches / total length, as difflib's ratio, with matches from the longest common
 * subsequence. */
function similarity(a: string, b: string): number {
  const row = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = 0;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = a[i - 1] === b[j - 1] ? diagonal + 1 : Math.max(row[j]!, row[j - 1]!);
      diagonal = above;
    }
  }
  return (2 * row[b.length]!) / (a.length + b.length);
}
