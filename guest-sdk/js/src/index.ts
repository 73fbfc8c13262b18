/**
 * Flash's JavaScript/TypeScript SDK: functions for Flash endpoints, with the same model
 * as the Python SDK (`flash_sdk`) and the Rust one (`flash-sdk`).
 *
 * ```ts
 * import { Endpoint, GpuGroup } from 'flash-sdk';
 *
 * const gpu = new Endpoint({ name: 'gpu_worker', gpu: GpuGroup.AMPERE_48, workers: [0, 3] });
 * export const embed = gpu.fn(async function embed(text: string) { return [text.length]; });
 * ```
 *
 * `flash build` (`kind = "js"` in flash.toml) bundles this package into every JavaScript
 * component; see docs/js-sdk.md.
 */

import * as runtime from './runtime.js';

export { DEFAULT_WORKERS_MAX, DEFAULT_WORKERS_MIN, Endpoint } from './endpoint.js';
export type { EndpointOptions, RegisterOptions, RemoteFunction } from './endpoint.js';
export { ErrorKind, RemoteError } from './errors.js';
export type { ErrorOrigin } from './errors.js';
export {
  CpuInstanceType,
  CudaVersion,
  DataCenter,
  GpuGroup,
  GpuType,
  ServerlessScalerType,
} from './resources.js';

/** The resource config this instance serves (`FLASH_RESOURCE_NAME`); undefined outside an
 * endpoint. */
export function currentResource(): string | undefined {
  return runtime.currentResource();
}

/**
 * Streams `chunk` (any JSON value) as partial output of the running job.
 *
 * On queue endpoints each chunk goes to the job's stream (RunPod `/stream/{id}`) as it is
 * emitted; HTTP routes and calls from other functions ignore chunks. Outside a component
 * it does nothing. The host bounds what a call sends (see docs/python-sdk.md, the same
 * rules hold).
 */
export function emit(chunk: unknown): void {
  runtime.emit(chunk);
}

/**
 * Calls any function of the app by name, whatever its language, and resolves to its
 * result: `await peerCall('word_stats', { text: 'hi' })` (one object: named arguments) or
 * `await peerCall('add', 1, 2)` (positional ones).
 *
 * Registered JavaScript functions are simpler to call directly; this reaches functions of
 * other components (a Rust or Python function). Failures reject with `RemoteError`.
 */
export function peerCall(fn: string, ...args: unknown[]): Promise<unknown> {
  return runtime.callByName(fn, args);
}
