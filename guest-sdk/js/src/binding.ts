/**
 * Arguments in and results out: how a JSON payload (the WIT `payload`, an object of named
 * arguments or an array of positional ones) becomes the arguments of a JavaScript function,
 * and how its result becomes JSON again.
 *
 * JavaScript keeps no parameter names at run time, so they are read once from the
 * function's source text (`Function.prototype.toString`, which every engine keeps verbatim)
 * when the function is registered; in a component that happens while it is
 * pre-initialised, so no call pays for it. A function whose only parameter is a
 * destructuring pattern (`function f({ text, dims })`) receives the object of named
 * arguments as it is. Functions whose source is unavailable (natively bound ones) can
 * name their parameters with `fn(f, { params: [...] })`. In a component, `flash build`
 * records the names from the app's sources before bundling (see `params.ts`).
 */

import { Param, recorded } from './params.js';

export type { Param } from './params.js';

/** A payload that does not fit the function: the WIT `invalid-input`. */
export class InvalidInput extends Error {}

/** A result that is not JSON. */
export class NotJson extends Error {}

/** The parameters of `fn`: recorded at build time, else read from its source text. */
export function params(fn: (...args: never[]) => unknown): Param[] {
  const known = recorded(fn);
  if (known) return known;
  const source = Function.prototype.toString.call(fn);
  return splitParams(paramList(source)).map(parseParam);
}

/** The text between the parentheses of the parameter list (or an arrow's lone name). */
function paramList(source: string): string {
  let i = 0;
  const skipSpace = () => {
    while (i < source.length && /\s/.test(source[i]!)) i++;
  };
  skipSpace();
  if (source.startsWith('async', i) && !/[\w$]/.test(source[i + 5] ?? '')) {
    i += 5;
    skipSpace();
  }
  // `x => ...` (no parentheses): one parameter.
  const arrow = /^([A-Za-z_$][\w$]*)\s*=>/.exec(source.slice(i));
  if (arrow) return arrow[1]!;
  const open = source.indexOf('(', i);
  if (open < 0) return '';
  const close = matching(source, open);
  return source.slice(open + 1, close);
}

/** The index of the bracket that closes the one at `open`, skipping strings and comments. */
function matching(source: string, open: number): number {
  let depth = 0;
  for (let i = open; i < source.length; i++) {
    const c = source[i]!;
    if (c === '"' || c === "'" || c === '`') {
      i = skipString(source, i);
    } else if (c === '/' && source[i + 1] === '/') {
      i = source.indexOf('\n', i);
      if (i < 0) return source.length;
    } else if (c === '/' && source[i + 1] === '*') {
      i = source.indexOf('*/', i + 2) + 1;
      if (i <= 0) return source.length;
    } else if ('([{'.includes(c)) {
      depth++;
    } else if (')]}'.includes(c)) {
      depth--;
      if (depth === 0) return i;
    }
  }
  return source.length;
}

function skipString(source: string, start: number): number {
  const quote = source[start];
  for (let i = start + 1; i < source.length; i++) {
    if (source[i] === '\\') i++;
    else if (quote === '`' && source[i] === '$' && source[i + 1] === '{') i = matching(source, i + 1);
    else if (source[i] === quote) return i;
  }
  return source.length;
}

/** The top-level comma-separated parts of a parameter list. */
function splitParams(list: string): string[] {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (c === '"' || c === "'" || c === '`') i = skipString(list, i);
    else if ('([{'.includes(c)) i = matching(list, i);
    else if (c === '/' && list[i + 1] === '*') i = list.indexOf('*/', i + 2) + 1 || list.length;
    else if (c === '/' && list[i + 1] === '/') i = list.indexOf('\n', i) >= 0 ? list.indexOf('\n', i) : list.length;
    else if (c === ',') {
      parts.push(list.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(list.slice(start));
  return parts
    .map((p) => p.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, '').trim())
    .filter((p) => p.length > 0);
}

function parseParam(text: string): Param {
  const rest = text.startsWith('...');
  const body = rest ? text.slice(3).trim() : text;
  const pattern = body.startsWith('{') || body.startsWith('[');
  const name = pattern ? '' : (/^[A-Za-z_$][\w$]*/.exec(body)?.[0] ?? '');
  const afterName = pattern ? body.slice(matching(body, 0) + 1) : body.slice(name.length);
  const optional = /^\s*=/.test(afterName);
  return { name, optional, rest, pattern };
}

/** The JSON `payload` as a named-arguments object or a positional-arguments array. */
export function parsePayload(fn: string, payload: string): Record<string, unknown> | unknown[] {
  let value: unknown;
  try {
    value = payload.trim() === '' ? {} : JSON.parse(payload);
  } catch (e) {
    throw new InvalidInput(`\`${fn}\`: input is not valid JSON: ${(e as Error).message}`);
  }
  if (value === null) return {};
  if (Array.isArray(value) || typeof value === 'object') {
    return value as Record<string, unknown> | unknown[];
  }
  throw new InvalidInput(
    `\`${fn}\`: input must be a JSON object of named arguments or an array of positional ` +
      `arguments, got ${jsonType(value)}`,
  );
}

/** The positional arguments a call of `fn` (with parameters `ps`) gets from `input`. */
export function bind(fn: string, ps: Param[], input: Record<string, unknown> | unknown[]): unknown[] {
  if (Array.isArray(input)) {
    const fixed = ps.filter((p) => !p.rest).length;
    if (input.length > fixed && !ps.some((p) => p.rest)) {
      throw new InvalidInput(`\`${fn}\`: takes ${fixed} positional argument(s), got ${input.length}`);
    }
    const required = ps.filter((p) => !p.rest && !p.optional).length;
    if (input.length < required) {
      const missing = ps.filter((p) => !p.rest && !p.optional)[input.length]!;
      throw new InvalidInput(`\`${fn}\`: missing argument \`${missing.name || 'argument ' + input.length}\``);
    }
    return input;
  }
  // One destructuring parameter: it takes the named arguments whole.
  if (ps.length === 1 && ps[0]!.pattern && !ps[0]!.rest) return [input];
  const byName = new Map(ps.filter((p) => p.name && !p.rest).map((p) => [p.name, p]));
  for (const key of Object.keys(input)) {
    if (!byName.has(key)) {
      const known = [...byName.keys()].map((n) => `\`${n}\``).join(', ') || 'none';
      throw new InvalidInput(`\`${fn}\`: unexpected argument \`${key}\` (its arguments: ${known})`);
    }
  }
  const args: unknown[] = [];
  for (const p of ps) {
    if (p.rest) break;
    if (p.pattern) {
      throw new InvalidInput(
        `\`${fn}\`: named arguments cannot fill a destructuring parameter next to others; ` +
          'send an array of positional arguments',
      );
    }
    if (Object.prototype.hasOwnProperty.call(input, p.name)) {
      args.push(input[p.name]);
    } else if (p.optional) {
      args.push(undefined);
    } else {
      throw new InvalidInput(`\`${fn}\`: missing argument \`${p.name}\``);
    }
  }
  // Trailing left-out optional arguments are not passed at all (`arguments.length`).
  while (args.length > 0 && args[args.length - 1] === undefined) args.pop();
  return args;
}

/** `args` as named arguments of a function with parameters `ps` (for a peer call). */
export function named(fn: string, ps: Param[], args: unknown[]): Record<string, unknown> | unknown[] {
  if (ps.some((p) => p.rest || p.pattern) || ps.length < args.length) {
    if (ps.length === 1 && ps[0]!.pattern && args.length === 1) return args[0] as Record<string, unknown>;
    return args;
  }
  const out: Record<string, unknown> = {};
  args.forEach((value, i) => {
    if (value !== undefined) out[ps[i]!.name] = value;
  });
  void fn;
  return out;
}

/** `value` as JSON text; `undefined` (a function that returns nothing) is `null`. */
export function encode(fn: string, value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (e) {
    throw new NotJson(`\`${fn}\` returned a value that is not JSON: ${(e as Error).message}`);
  }
  if (text === undefined) {
    throw new NotJson(`\`${fn}\` returned a value that is not JSON: ${typeof value}`);
  }
  return text;
}

function jsonType(value: unknown): string {
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'number') return 'a number';
  if (typeof value === 'boolean') return 'a boolean';
  return typeof value;
}
