/**
 * The app registry and the two halves of a call: running a function for the host
 * (`invoke`) and calling a function of the app from JavaScript (`call`).
 *
 * `Endpoint` registers resource configs and functions here when the app's modules are
 * evaluated; in a component that happens once, at build time (componentize-js
 * pre-initialises the engine and snapshots it). The host then calls `describe` to learn
 * what the component provides and `invoke` to run one function per job or request.
 *
 * Calls between functions: calling a registered function returns a Promise. When it
 * belongs to the resource config this instance serves (`FLASH_RESOURCE_NAME`), or when no
 * transport is installed (plain Node.js on a developer's machine, unit tests), it runs in
 * place with the JavaScript values given. Otherwise its arguments go out as JSON through
 * the transport's `call` (the WIT `peer` import), and a failure comes back as
 * `RemoteError`.
 */

import { InvalidInput, NotJson, Param, bind, encode, named, params, parsePayload } from './binding.js';
import { ErrorKind, ErrorOrigin, RemoteError } from './errors.js';
import { mapStack } from './sourcemap.js';

/** The environment variable that names the resource config an instance serves. */
export const RESOURCE_NAME_VAR = 'FLASH_RESOURCE_NAME';

/** How calls and progress leave the component (the WIT `peer` and `progress` imports). */
export interface Transport {
  /** Runs `fn` of the app with a JSON payload; throws `RemoteError`. */
  call(fn: string, payload: string): string;
  /** Sends one JSON chunk of partial output. */
  emit(chunk: string): void;
  /** The instance's environment variable `name`. */
  env(name: string): string | undefined;
}

/** A failed `invoke`: the WIT `call-error`. */
export class CallFailure extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly traceback?: string,
    readonly origin?: ErrorOrigin,
  ) {
    super(message);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFunction = (...args: any[]) => any;

/** One function of the app: what `describe` reports and `invoke` runs. */
export interface FunctionEntry {
  name: string;
  resource: string;
  module: string;
  target: AnyFunction;
  params: Param[];
  httpMethod?: string;
  httpPath?: string;
}

/** What an endpoint reports of itself (see `Endpoint`). */
export interface EndpointLike {
  resourceSpec(): ResourceSpec;
}

/** A WIT `resource-config`, in the shape the component binding converts. */
export interface ResourceSpec {
  name: string;
  kind: 'queue' | 'load-balanced';
  compute: { gpu: { gpuIds: string[]; gpuCount: number } } | { cpu: { instanceIds: string[] } };
  workersMin: number;
  workersMax: number;
  idleTimeoutS: number;
  executionTimeoutMs?: number;
  scalerType: 'queue-delay' | 'request-count';
  scalerValue: number;
  env: [string, string][];
  placement: {
    locations: string[];
    minCudaVersion?: string;
    flashboot?: boolean;
  };
}

/** A WIT `function-spec`. */
export interface FunctionSpec {
  name: string;
  resource: string;
  module: string;
  isAsync: boolean;
  httpMethod?: string;
  httpPath?: string;
}

let transport: Transport | undefined;
const functions = new Map<string, FunctionEntry[]>();
const endpoints: EndpointLike[] = [];

/** Sends calls to other resource configs, and progress, through `t`. */
export function installTransport(t: Transport | undefined): void {
  transport = t;
}

/** The resource config this instance serves (`FLASH_RESOURCE_NAME`), or undefined. */
export function currentResource(): string | undefined {
  const value = transport
    ? transport.env(RESOURCE_NAME_VAR)
    : (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[RESOURCE_NAME_VAR];
  return value || undefined;
}

/** Remembers an `Endpoint` that registered something. */
export function registerEndpoint(endpoint: EndpointLike): void {
  if (!endpoints.includes(endpoint)) endpoints.push(endpoint);
}

/** Adds a function; a module evaluated again replaces its own earlier registration. */
export function registerFunction(entry: FunctionEntry): void {
  const same = (functions.get(entry.name) ?? []).filter((f) => f.module !== entry.module);
  same.push(entry);
  functions.set(entry.name, same);
}

/** Forgets every endpoint and function (for tests). */
export function reset(): void {
  functions.clear();
  endpoints.length = 0;
  transport = undefined;
}

function isAsync(fn: AnyFunction): boolean {
  const tag = Object.prototype.toString.call(fn);
  return tag === '[object AsyncFunction]' || tag === '[object AsyncGeneratorFunction]';
}

/**
 * Every resource config and function, shaped like the WIT `description` record. Two
 * `Endpoint`s of one name with different settings are both reported, and so are two
 * functions of one name: the manifest's validation names such conflicts.
 */
export function describe(): { resources: ResourceSpec[]; functions: FunctionSpec[] } {
  const resources: ResourceSpec[] = [];
  const seen = new Set<string>();
  for (const endpoint of endpoints) {
    const spec = endpoint.resourceSpec();
    const key = JSON.stringify(spec);
    if (!seen.has(key)) {
      seen.add(key);
      resources.push(spec);
    }
  }
  resources.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const names = [...functions.keys()].sort();
  const specs = names.flatMap((name) =>
    functions.get(name)!.map((f) => ({
      name: f.name,
      resource: f.resource,
      module: f.module,
      isAsync: isAsync(f.target),
      httpMethod: f.httpMethod,
      httpPath: f.httpPath,
    })),
  );
  return { resources, functions: specs };
}

/** The registered function `name`, or `CallFailure(unknown-function)`. */
export function lookup(name: string): FunctionEntry {
  const found = functions.get(name);
  if (!found || found.length === 0) {
    const known = [...functions.keys()].sort().join(', ') || 'none';
    throw new CallFailure(
      ErrorKind.UNKNOWN_FUNCTION,
      `no function \`${name}\` in this component (it provides: ${known})`,
    );
  }
  return found[0]!;
}

/**
 * Runs function `name` with a JSON payload and resolves to its JSON result.
 *
 * Rejects with `CallFailure`: `invalid-input` for arguments that do not fit, `user-error`
 * with the JavaScript stack for an error the function threw, the callee's kind for an
 * uncaught `RemoteError`.
 */
export async function invoke(name: string, payload: string): Promise<string> {
  const entry = lookup(name);
  let args: unknown[];
  try {
    args = bind(name, entry.params, parsePayload(name, payload));
  } catch (e) {
    if (e instanceof InvalidInput) throw new CallFailure(ErrorKind.INVALID_INPUT, e.message);
    throw e;
  }
  let result: unknown;
  try {
    result = await __flash_call__(entry.target, args);
  } catch (e) {
    if (e instanceof RemoteError) {
      throw new CallFailure(e.kind, e.detail, e.traceback ?? e.stack, e.origin);
    }
    throw new CallFailure(ErrorKind.USER_ERROR, message(e), traceback(e));
  }
  try {
    return encode(name, result);
  } catch (e) {
    if (e instanceof NotJson) throw new CallFailure(ErrorKind.USER_ERROR, e.message);
    throw e;
  }
}

/** `Error: text` for an error, the value itself for anything else thrown. */
function message(e: unknown): string {
  if (e instanceof Error) return e.message ? `${e.name}: ${e.message}` : e.name;
  try {
    return typeof e === 'string' ? e : `thrown: ${JSON.stringify(e)}`;
  } catch {
    return `thrown: ${String(e)}`;
  }
}

/** Calls the user's function; its name marks where the SDK's frames begin in a stack. */
async function __flash_call__(target: AnyFunction, args: unknown[]): Promise<unknown> {
  return await target(...args);
}

/** The stack of `e` down to the user's function: without the SDK's frames and the engine's
 * (componentize-js's initializer), its frames pointing into the app's own files
 * (`sourcemap.ts`). */
function traceback(e: unknown): string | undefined {
  if (!(e instanceof Error) || !e.stack) return undefined;
  const frames: string[] = [];
  for (const line of e.stack.split('\n')) {
    if (line.includes('__flash_call__')) break;
    if (line.trim() !== '' && !line.includes('initializer.js')) frames.push(line);
  }
  // SpiderMonkey's stacks are frames only; V8's start with the message.
  const header = message(e);
  const stack = mapStack(frames.join('\n'));
  return stack.startsWith(header) ? stack : `${header}\n${stack}`;
}

function sameConfig(entry: FunctionEntry): boolean {
  const current = currentResource();
  return transport === undefined || current === undefined || current === entry.resource;
}

/** Calls a registered function from JavaScript: in place or through the transport. */
export async function call(entry: FunctionEntry, args: unknown[]): Promise<unknown> {
  if (sameConfig(entry)) return await entry.target(...args);
  const payload = encode(entry.name, named(entry.name, entry.params, args));
  return JSON.parse(transport!.call(entry.name, payload));
}

/**
 * Calls any function of the app by name, whatever its language: `args` is one object of
 * named arguments, or positional values.
 */
export async function callByName(name: string, args: unknown[]): Promise<unknown> {
  const found = functions.get(name);
  if (found && found.length > 0) {
    const entry = found[0]!;
    if (sameConfig(entry)) {
      // Named arguments in an object, as they would travel: bound as `invoke` binds them.
      let local = args;
      if (isNamed(args)) {
        try {
          local = bind(name, entry.params, args[0] as Record<string, unknown>);
        } catch (e) {
          if (e instanceof InvalidInput) throw new RemoteError(ErrorKind.INVALID_INPUT, e.message);
          throw e;
        }
      }
      return await entry.target(...local);
    }
  }
  if (transport === undefined) {
    throw new RemoteError(
      ErrorKind.UNKNOWN_FUNCTION,
      `no function \`${name}\` here; calls to functions of other components need a deployed ` +
        'app (or `flash run`)',
    );
  }
  const input = isNamed(args) ? args[0] : args;
  return JSON.parse(transport.call(name, encode(name, input)));
}

function isNamed(args: unknown[]): boolean {
  const first = args[0];
  return args.length === 1 && typeof first === 'object' && first !== null && !Array.isArray(first);
}

/** Sends `chunk` (any JSON value) as partial output of the running job. */
export function emit(chunk: unknown): void {
  const payload = encode('emit', chunk);
  transport?.emit(payload);
}
