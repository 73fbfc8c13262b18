/**
 * Typed call failures: the WIT `error-kind`s (`wit/flash.wit`) as JavaScript values.
 *
 * A call to a function on another endpoint fails with `RemoteError`, whose `kind` says why:
 * the callee threw (`user-error`), the arguments did not fit (`invalid-input`), the
 * endpoint could not be reached (`unavailable`), and so on. The names and meanings are the
 * same in every Flash SDK (Rust's `flash_sdk::ErrorKind`, Python's `flash_sdk.ErrorKind`).
 */

/** Why a call failed. Values are the WIT spellings, so `e.kind === "timeout"` works. */
export const ErrorKind = Object.freeze({
  /** The input could not be decoded into the function's arguments. */
  INVALID_INPUT: 'invalid-input',
  /** No function of that name exists in the app. */
  UNKNOWN_FUNCTION: 'unknown-function',
  /** The function ran and threw (or returned an error of its own). */
  USER_ERROR: 'user-error',
  /** The endpoint that serves the function could not be reached or found. */
  UNAVAILABLE: 'unavailable',
  /** The call did not finish within its deadline. */
  TIMEOUT: 'timeout',
  /** The endpoint answered with a failure that could not be classified further. */
  REMOTE_FAILURE: 'remote-failure',
  /** A chain of calls went deeper than the host allows (a likely call cycle). */
  CALL_DEPTH_EXCEEDED: 'call-depth-exceeded',
  /** The component trapped or the host failed; the message says which. */
  INTERNAL: 'internal',
} as const);
export type ErrorKind = (typeof ErrorKind)[keyof typeof ErrorKind];

const KINDS: ReadonlySet<string> = new Set(Object.values(ErrorKind));

/** Where a failure that came back through peer calls began. */
export interface ErrorOrigin {
  /** The function that failed first. */
  function: string;
  /** The resource config that serves it. */
  resource: string;
  /** The functions it came back through, in call order. */
  via: string[];
}

/**
 * A call to another function failed.
 *
 * `kind` is an `ErrorKind`, `message` the callee's message, and `traceback` where the
 * failure happened when the callee reported it (a JavaScript stack, a Python traceback, a
 * Rust backtrace), else undefined. `origin` says where a failure that came back through
 * peer calls began, else undefined. Left uncaught, it fails the calling function with the
 * same kind and origin.
 */
export class RemoteError extends Error {
  readonly kind: ErrorKind;
  readonly traceback?: string;
  readonly origin?: ErrorOrigin;
  /** The callee's message, without the `kind: ` prefix of `message`. */
  readonly detail: string;

  constructor(kind: ErrorKind | string, message: string, traceback?: string | null, origin?: ErrorOrigin | null) {
    let known: ErrorKind = ErrorKind.INTERNAL;
    if (KINDS.has(kind)) {
      known = kind as ErrorKind;
    } else {
      message = `${kind}: ${message}`;
    }
    super(`${known}: ${message}`);
    this.name = 'RemoteError';
    this.kind = known;
    this.detail = message;
    if (traceback) this.traceback = traceback;
    if (origin) this.origin = origin;
  }
}
