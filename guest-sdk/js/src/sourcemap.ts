/**
 * Stack frames mapped back to the app's own files.
 *
 * `flash build` bundles the app, its npm dependencies and this SDK into one module, so the
 * engine's stack frames name the bundle (`embed2@quickstart_js.js:1145:11`). The build
 * appends the bundle's source map to it as `globalThis.__flash_source_map` (esbuild's
 * `mappings`, with `sources` relative to the component's folder: `src/embeddings.ts`,
 * `node_modules/ms/index.js`, `flash-sdk/runtime.ts`), and a traceback's frames in the
 * bundle are rewritten to the file, line and column they came from
 * (`embed2@src/embeddings.ts:16:11`). The map is decoded on the first error of an instance,
 * never on the way of a call that succeeds. Without a map (plain Node.js, tests) frames
 * stay as they are.
 */

/** What the build embeds: a source map's `sources` and `mappings`, and the bundle's name. */
export interface EmbeddedSourceMap {
  /** The bundle's file name, as the engine names it in frames. */
  file: string;
  sources: string[];
  /** Base64 VLQ, as in source map version 3. */
  mappings: string;
}

/** One mapping of a bundle line: [bundle column, source index, source line, source column],
 * all 0-based. */
type Segment = [number, number, number, number];

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** The signed values of one VLQ segment. */
function decodeVlq(text: string): number[] {
  const values: number[] = [];
  let value = 0;
  let scale = 1;
  for (const ch of text) {
    const digit = BASE64.indexOf(ch);
    if (digit < 0) throw new Error(`not a base64 VLQ digit: ${ch}`);
    value += (digit & 31) * scale;
    if (digit & 32) {
      scale *= 32;
    } else {
      values.push(value % 2 === 1 ? -Math.floor(value / 2) : value / 2);
      value = 0;
      scale = 1;
    }
  }
  return values;
}

/** A source map's `mappings`, as each bundle line's segments in column order. */
export function decodeMappings(mappings: string): Segment[][] {
  const lines: Segment[][] = [];
  let source = 0;
  let line = 0;
  let column = 0;
  for (const text of mappings.split(';')) {
    const segments: Segment[] = [];
    let bundleColumn = 0;
    for (const segment of text === '' ? [] : text.split(',')) {
      const v = decodeVlq(segment);
      bundleColumn += v[0] ?? 0;
      if (v.length >= 4) {
        source += v[1]!;
        line += v[2]!;
        column += v[3]!;
        segments.push([bundleColumn, source, line, column]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

/** `name@file:line:column`: SpiderMonkey's frame (1-based line and column). */
const FRAME = /^(.*@)(.+):(\d+):(\d+)$/;

/** `stack` with its frames in the bundle of `map` pointing into the app's files. */
export function mapStack(stack: string, map: EmbeddedSourceMap | undefined = embedded()): string {
  if (map === undefined) return stack;
  try {
    let lines: Segment[][] | undefined;
    return stack
      .split('\n')
      .map((frame) => {
        const m = FRAME.exec(frame);
        if (!m || (m[2] !== map.file && !m[2]!.endsWith(`/${map.file}`))) return frame;
        lines ??= decodeMappings(map.mappings);
        const segments = lines[Number(m[3]) - 1] ?? [];
        const column = Number(m[4]) - 1;
        let found = segments[0];
        for (const segment of segments) {
          if (segment[0] > column) break;
          found = segment;
        }
        const source = found === undefined ? undefined : map.sources[found[1]];
        if (found === undefined || source === undefined) return frame;
        return `${m[1]}${source}:${found[2] + 1}:${found[3] + 1}`;
      })
      .join('\n');
  } catch {
    return stack; // a traceback as the engine wrote it beats none
  }
}

function embedded(): EmbeddedSourceMap | undefined {
  return (globalThis as { __flash_source_map?: EmbeddedSourceMap }).__flash_source_map;
}
