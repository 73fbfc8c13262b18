/**
 * Parameter names (and function names) recorded at build time. esbuild's bundling may rename a function's
 * parameters (a `text` parameter becomes `text2` when another bundled module has a
 * top-level `text`), and named arguments are matched by name: so `flash build` reads the
 * names from the app's own sources before bundling (js_toolchain/build.mjs) and attaches
 * them with `withParams`; `binding.params` prefers them to the function's source text.
 */

/** One parameter as written in the source. */
export interface Param {
  name: string;
  /** It has a default value (`words = 3`): it may be left out. */
  optional: boolean;
  /** `...rest`: takes the surplus positional arguments. */
  rest: boolean;
  /** A destructuring pattern (`{ a, b }` or `[a, b]`), not a name. */
  pattern: boolean;
}

const PARAMS = Symbol.for('flash.params');
const NAME = Symbol.for('flash.name');

/** Attaches the parameters `params` and the source name `name` (bundling may rename a
 * function: `embed` becomes `embed2`) to `fn` and returns it. */
export function withParams<F>(fn: F, params: Param[], name?: string): F {
  if (typeof fn === 'function' && Object.isExtensible(fn)) {
    Object.defineProperty(fn, PARAMS, { value: params });
    if (name) Object.defineProperty(fn, NAME, { value: name });
  }
  return fn;
}

/** The parameters recorded for `fn`, if any. */
export function recorded(fn: unknown): Param[] | undefined {
  return typeof fn === 'function' ? (fn as unknown as Record<symbol, Param[] | undefined>)[PARAMS] : undefined;
}

/** The name `fn` has in the source: recorded at build time, else its `name`. */
export function sourceName(fn: { name: string }): string {
  return (fn as unknown as Record<symbol, string | undefined>)[NAME] ?? fn.name;
}
