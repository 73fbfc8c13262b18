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
// Reproducibility: componentize-js names its work directory after Math.random() and puts
// that path into the snapshot, so this process makes Math.random() constant and points
// TMPDIR at the request's fixed work directory (js.rs serialises builds that share it);
// wizer runs with `wizerEnv` (the deterministic pre-initialisation shim, preinit_shim.c,
// where js.rs provides it), which fixes the random bytes and clocks the guest sees.
import { readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

const request = JSON.parse(await readFile(process.argv[2], 'utf8'));

const esbuild = await import('esbuild');
const sdk = {
  'flash-sdk': join(request.sdk, 'index.ts'),
  'flash-sdk/component': join(request.sdk, 'component.ts'),
};
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
  write: false,
  outfile: join(request.work, request.bundleName),
  logLevel: 'silent',
  plugins: [
    {
      name: 'flash',
      setup(build) {
        build.onResolve({ filter: /^flash-sdk(\/component)?$/ }, (args) => ({ path: sdk[args.path] }));
        build.onResolve({ filter: /^(flash|wasi):/ }, (args) => ({ path: args.path, external: true }));
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
// esbuild writes the bundle's own relative paths into comments: they are the project's,
// relative to its root, so the bundle does not depend on where the project is.
const bundle = result.outputFiles[0].text;

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
