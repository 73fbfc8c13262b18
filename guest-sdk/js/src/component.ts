/**
 * The WebAssembly side of the SDK: binds it to the WIT world `function`.
 *
 * `flash build` generates the component's entry module: it imports the WIT imports
 * (`flash:runtime/peer`, `progress`, and `wasi:cli/environment` for the instance's
 * environment), hands them to `bind`, imports the app's entry module (which registers its
 * endpoints while componentize-js pre-initialises the engine) and exports what `bind`
 * returns as the `describe` and `invoke` interfaces. This module imports no WIT module
 * itself, so the SDK stays importable in Node.js.
 *
 * The mapping onto the contract (`wit/flash.wit`), in componentize-js's conventions
 * (records with camelCase fields, variants as `{ tag, val }`, options as undefined, a
 * thrown value as the `err` of a `result`):
 *
 * - `describe` returns the registered resource configs and functions;
 * - `invoke` runs one function; a `CallFailure` becomes the WIT `call-error` (kind,
 *   message, the JavaScript stack, and the origin of a peer failure let through);
 * - peer calls go out through `peer.call`, whose `err` comes back as `RemoteError`.
 */

import { ErrorKind, RemoteError } from './errors.js';
import * as runtime from './runtime.js';

/** A WIT `call-error` as componentize-js passes it. */
interface WitCallError {
  kind: string;
  message: string;
  traceback?: string;
  origin?: { function: string; resourceConfig: string; via: string[] };
}

/** The imports the generated entry module hands over. */
export interface Imports {
  call(fn: string, payload: string): string;
  emit(chunk: string): void;
  getEnvironment(): [string, string][];
}

/** Installs the WIT imports as the runtime's transport and returns the exports. */
export function bind(imports: Imports) {
  let environment: Map<string, string> | undefined;
  runtime.installTransport({
    call(fn, payload) {
      try {
        return imports.call(fn, payload);
      } catch (e) {
        const error = (e as { payload?: WitCallError }).payload;
        if (!error) throw e;
        const origin = error.origin
          ? { function: error.origin.function, resource: error.origin.resourceConfig, via: [...error.origin.via] }
          : undefined;
        throw new RemoteError(error.kind, error.message, error.traceback, origin);
      }
    },
    emit: (chunk) => imports.emit(chunk),
    env(name) {
      // Read at run time (the first call of each instance), not while pre-initialised.
      environment ??= new Map(imports.getEnvironment());
      return environment.get(name);
    },
  });
  return {
    describe: { describe: witDescription },
    invoke: { invoke: witInvoke },
  };
}

function witDescription() {
  const { resources, functions } = runtime.describe();
  return {
    resources: resources.map((r) => ({
      name: r.name,
      kind: r.kind,
      compute: 'cpu' in r.compute
        ? { tag: 'cpu', val: { instanceIds: r.compute.cpu.instanceIds } }
        : { tag: 'gpu', val: { gpuIds: r.compute.gpu.gpuIds, gpuCount: r.compute.gpu.gpuCount } },
      workersMin: r.workersMin,
      workersMax: r.workersMax,
      idleTimeoutS: r.idleTimeoutS,
      executionTimeoutMs: r.executionTimeoutMs === undefined ? undefined : BigInt(r.executionTimeoutMs),
      scalerType: r.scalerType,
      scalerValue: r.scalerValue,
      env: r.env,
      placement: {
        locations: r.placement.locations,
        minCudaVersion: r.placement.minCudaVersion,
        containerDiskGb: undefined,
        flashboot: r.placement.flashboot,
      },
    })),
    functions: functions.map((f) => ({
      name: f.name,
      resource: f.resource,
      module: f.module,
      isAsync: f.isAsync,
      httpMethod: f.httpMethod,
      httpPath: f.httpPath,
    })),
  };
}

async function witInvoke(fn: string, input: string): Promise<string> {
  try {
    return await runtime.invoke(fn, input);
  } catch (e) {
    const failure =
      e instanceof runtime.CallFailure
        ? e
        : new runtime.CallFailure(ErrorKind.INTERNAL, `flash-sdk: ${String(e)}`, (e as Error)?.stack);
    throw {
      kind: failure.kind,
      message: failure.message,
      traceback: failure.traceback,
      origin: failure.origin
        ? {
            function: failure.origin.function,
            resourceConfig: failure.origin.resource,
            via: failure.origin.via,
          }
        : undefined,
    };
  }
}
