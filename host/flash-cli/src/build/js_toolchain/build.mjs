// Builds one JavaScript component for `flash build` (host/flash-cli/src/build/js.rs), with
// the pinned esbuild and componentize-js next to this file:
//
//   node build.mjs <request.json>
//
// The request names the generated entry module, the SDK sources, the WIT directory and
// world, the output file, and a fixed work directory. Two steps:
//
// 1. esbuild bundles the entry module (the app's modules, their npm dependencies and the
//    SDK, TypeScript compiled on the way) into one ES module; the WIT imports stay
//    external, and `flash-sdk` resolves to the SDK sources built into `flash`.
// 2. componentize-js turns the bundle into a component: it evaluates it in SpiderMonkey
//    under wizer and snapshots the heap.
//
// Parameter names: the SDK binds named arguments to parameters by name, and bundling can
// rename parameters (to avoid shadowing another module's top-level name). So every module
// of the app itself (not node_modules) is first compiled alone (esbuild.transform, with
// keepNames: it may rename a function that shadows its own variable, and keeps the old
// name in a `__name` call) and parsed with acorn, and each function registered with the SDK
// (`x.fn(function f(a, b) {...})`, `api.get('/p', (a) => ...)`, and every top-level
// function declaration) gets its parameter list and its name attached with `withParams`
// (params.ts): bundling may rename functions too (`embed` becomes `embed2`).
//
// Stack traces: the bundle's source map (through each app module's own map from TypeScript)
// is appended to the bundle as `globalThis.__flash_source_map`, and the SDK maps an error's
// frames back to the app's files with it (guest-sdk/js/src/sourcemap.ts).
//
// Peer calls: while it reads each module of the app, it also lists what each function
// mentions (identifiers, property names, string literals) and whether it calls `peerCall`
// with a name that is not a literal, and writes that call graph to `request.callGraph`:
// `flash build` gives the API key only to resource configs whose functions may call a
// function another config serves (flash_manifest::peer_calls).
//
// Reproducibility: componentize-js names its work directory after Math.random() and puts
// that path into the snapshot, so this process makes Math.random() constant and points
// TMPDIR at the request's fixed work directory (js.rs serialises builds that share it);
// wizer runs with `wizerEnv` (the deterministic pre-initialisation shim, preinit_shim.c,
// where js.rs provides it), which fixes the random bytes and clocks the guest sees.
import { readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';

const request = JSON.parse(await readFile(process.argv[2], 'utf8'));

const esbuild = await import('esbuild');
const acorn = await import('acorn');
const walk = await import('acorn-walk');
const sdk = {
  'flash-sdk': join(request.sdk, 'index.ts'),
  'flash-sdk/component': join(request.sdk, 'component.ts'),
  'flash-sdk/params': join(request.sdk, 'params.ts'),
};

/** The methods that register a function with the SDK (Endpoint.fn and the routes). */
const REGISTERS = new Set(['fn', 'get', 'post', 'put', 'delete', 'patch', 'route']);

/** A parameter node as the SDK's `Param`. */
function param(node) {
  switch (node.type) {
    case 'Identifier':
      return { name: node.name, optional: false, rest: false, pattern: false };
    case 'AssignmentPattern':
      return { ...param(node.left), optional: true };
    case 'RestElement':
      return { ...param(node.argument), rest: true };
    default:
      return { name: '', optional: false, rest: false, pattern: true };
  }
}

/** `__name(fn, "name")`: how esbuild's keepNames keeps the name of a renamed function. */
function isName(node) {
  return (
    node?.type === 'CallExpression' &&
    node.callee.type === 'Identifier' &&
    node.callee.name === '__name' &&
    node.arguments.length === 2 &&
    node.arguments[1].type === 'Literal'
  );
}

/** `code` (plain JavaScript) with the parameter lists of its registered functions attached;
 * undefined when it has none. */
function recordParams(code) {
  let ast;
  try {
    ast = acorn.parse(code, { ecmaVersion: 'latest', sourceType: 'module', allowHashBang: true });
  } catch {
    return undefined; // esbuild reports what does not parse
  }
  const edits = [];
  walk.fullAncestor(ast, (node, _state, ancestors) => {
    const parent = ancestors[ancestors.length - 2];
    const params = () => JSON.stringify(node.params.map(param));
    if (node.type === 'FunctionDeclaration' && node.id) {
      const top = parent?.type === 'Program' ||
        (parent?.type?.startsWith('Export') && ancestors[ancestors.length - 3]?.type === 'Program');
      if (top) edits.push([node.end, `;__flash_params(${node.id.name}, ${params()}, ${JSON.stringify(node.id.name)});`]);
    } else if (node.type === 'FunctionExpression' || node.type === 'ArrowFunctionExpression') {
      // keepNames wraps a function expression that was renamed: `__name(function slow2() {...}, "slow")`.
      let wrapped = node;
      let call = parent;
      let name = node.id?.name ?? '';
      if (isName(parent) && parent.arguments[0] === node) {
        wrapped = parent;
        call = ancestors[ancestors.length - 3];
        name = parent.arguments[1].value;
      }
      if (
        call?.type === 'CallExpression' &&
        call.arguments.includes(wrapped) &&
        call.callee.type === 'MemberExpression' &&
        !call.callee.computed &&
        REGISTERS.has(call.callee.property.name)
      ) {
        edits.push([wrapped.start, '__flash_params(']);
        edits.push([wrapped.end, `, ${params()}, ${JSON.stringify(name)})`]);
      }
    }
  });
  if (edits.length === 0) return undefined;
  edits.sort((a, b) => b[0] - a[0]);
  let out = code;
  for (const [at, text] of edits) out = out.slice(0, at) + text + out.slice(at);
  // On the first line, without a line break: the module's source map stays true.
  return `import { withParams as __flash_params } from 'flash-sdk/params';${out}`;
}
/** The call graph of the app's modules: function name → { names, computed_peer_call }. */
const graph = new Map();

/** The name a function or binding node goes by, or undefined for an anonymous function
 * (whose mentions count for the function around it). */
function scopeName(node, parent) {
  switch (node.type) {
    case 'FunctionDeclaration':
      return node.id?.name;
    case 'VariableDeclarator':
      return node.id.type === 'Identifier' ? node.id.name : undefined;
    case 'FunctionExpression':
    case 'ArrowFunctionExpression':
      if (isName(parent) && parent.arguments[0] === node) return parent.arguments[1].value;
      if (node.id) return node.id.name;
      if ((parent?.type === 'Property' || parent?.type === 'MethodDefinition' ||
           parent?.type === 'PropertyDefinition') && parent.value === node && !parent.computed) {
        return parent.key.name ?? parent.key.value;
      }
      return undefined;
    default:
      return undefined;
  }
}

/** A string the code spells out: a string literal or a template without substitutions. */
function literalString(node) {
  if (node?.type === 'Literal' && typeof node.value === 'string') return node.value;
  if (node?.type === 'TemplateLiteral' && node.expressions.length === 0) return node.quasis[0].value.cooked;
  return undefined;
}

/** Adds what the functions of `code` (plain JavaScript) mention to `graph`. */
function recordCalls(code) {
  let ast;
  try {
    ast = acorn.parse(code, { ecmaVersion: 'latest', sourceType: 'module', allowHashBang: true });
  } catch {
    return; // esbuild reports what does not parse
  }
  const mention = (ancestors, name, computed = false) => {
    // The innermost named function or binding around the node (the node itself excluded).
    for (let i = ancestors.length - 2; i >= 0; i--) {
      const scope = scopeName(ancestors[i], ancestors[i - 1]);
      if (scope === undefined) continue;
      let node = graph.get(scope);
      if (!node) graph.set(scope, (node = { names: new Set(), computed: false }));
      if (name !== undefined) node.names.add(name);
      node.computed ||= computed;
      return;
    }
  };
  walk.fullAncestor(ast, (node, _state, ancestors) => {
    if (node.type === 'Identifier') {
      mention(ancestors, node.name);
    } else if (node.type === 'MemberExpression' && !node.computed && node.property.type === 'Identifier') {
      mention(ancestors, node.property.name);
    } else if (literalString(node) !== undefined) {
      mention(ancestors, literalString(node));
    } else if (node.type === 'CallExpression') {
      const callee = node.callee.type === 'MemberExpression' ? node.callee.property : node.callee;
      if (callee?.name === 'peerCall' && literalString(node.arguments[0]) === undefined) {
        mention(ancestors, undefined, true);
      }
    }
  });
}

const result = await esbuild.build({
  entryPoints: [request.entry],
  absWorkingDir: request.root,
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2022',
  mainFields: ['module', 'main'],
  conditions: ['import', 'default'],
  keepNames: true,
  nodePaths: request.nodePaths,
  charset: 'utf8',
  legalComments: 'none',
  sourcemap: 'external',
  sourcesContent: false,
  write: false,
  outfile: join(request.work, request.bundleName),
  logLevel: 'silent',
  plugins: [
    {
      name: 'flash',
      setup(build) {
        build.onResolve({ filter: /^flash-sdk(\/(component|params))?$/ }, (args) => ({ path: sdk[args.path] }));
        build.onResolve({ filter: /^(flash|wasi):/ }, (args) => ({ path: args.path, external: true }));
        build.onLoad({ filter: /\.([cm]?[jt]s|[jt]sx)$/ }, async (args) => {
          if (args.path.includes('/node_modules/') || args.path.startsWith(request.sdk)) return undefined;
          const source = await readFile(args.path, 'utf8');
          const loader = /\.[cm]?ts$/.test(args.path) ? 'ts' : /x$/.test(args.path) ? args.path.slice(-3) : 'js';
          // With an inline source map, which the bundle's source map goes through.
          const { code } = await esbuild.transform(source, {
            loader, target: 'es2022', keepNames: true, sourcefile: args.path, sourcemap: 'inline',
          });
          recordCalls(code);
          const recorded = recordParams(code);
          return recorded === undefined ? undefined : { contents: recorded, loader: 'js', resolveDir: dirname(args.path) };
        });
      },
    },
  ],
}).catch((e) => {
  const errors = (e.errors ?? []).map((m) =>
    m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ${m.text}` : m.text,
  );
  console.error(`bundling failed:\n${errors.join('\n') || e.message}`);
  process.exit(2);
});
if (request.callGraph) {
  const functions = {};
  for (const name of [...graph.keys()].sort()) {
    const node = graph.get(name);
    functions[name] = { names: [...node.names].sort(), ...(node.computed ? { computed_peer_call: true } : {}) };
  }
  await writeFile(request.callGraph, JSON.stringify({ functions }));
}
// esbuild writes the bundle's own relative paths into comments: they are the project's,
// relative to its root, so the bundle does not depend on where the project is.
let bundle = result.outputFiles.find((f) => !f.path.endsWith('.map')).text;
const sourceMap = result.outputFiles.find((f) => f.path.endsWith('.map'));
if (sourceMap) {
  // The SDK maps error stacks back to the app's files with it (guest-sdk/js/src/sourcemap.ts).
  // Appended, so the bundle's own lines do not move; its sources are named relative to the
  // component's folder, wherever the project, its dependencies and the SDK are.
  const map = JSON.parse(sourceMap.text);
  const from = dirname(join(request.work, request.bundleName));
  const name = (source) => {
    const path = resolve(from, source);
    if (path.startsWith(`${request.sdk}/`)) return `flash-sdk/${relative(request.sdk, path)}`;
    const dependency = path.indexOf('/node_modules/');
    if (dependency >= 0) return path.slice(dependency + 1);
    return relative(request.root, path);
  };
  const embedded = { file: request.bundleName, sources: map.sources.map(name), mappings: map.mappings };
  bundle += `\nglobalThis.__flash_source_map = ${JSON.stringify(embedded)};\n`;
}

Math.random = () => 0.5;
await rm(request.work, { recursive: true, force: true });
await mkdir(request.work, { recursive: true });
const source = join(request.work, request.bundleName);
await writeFile(source, bundle);
if (request.bundleCopy) await writeFile(request.bundleCopy, bundle);
process.env.TMPDIR = request.work;
process.chdir(request.work);

const { componentize } = await import('@bytecodealliance/componentize-js');
let component;
try {
  ({ component } = await componentize({
    sourcePath: source,
    witPath: request.wit,
    worldName: request.world,
    // No outgoing HTTP and no `fetch` event handler: the host provides neither.
    disableFeatures: ['http', 'fetch-event'],
    env: request.wizerEnv,
  }));
} catch (e) {
  console.error(`componentize-js failed: ${e.message ?? e}`);
  process.exit(3);
}
await mkdir(dirname(request.output), { recursive: true });
await writeFile(request.output, component);
await rm(request.work, { recursive: true, force: true });
