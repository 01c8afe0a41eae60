// `npm run build`: the production code compiled to plain JavaScript, so `edge`, the images
// and the chart start without tsx (and the agent without esbuild):
//   1. tsc -p tsconfig.build.json: cli/, common/, node-agent/, operator/ into OUT/;
//   2. the Workers API shim (node-agent/shim/) bundled into OUT/node-agent/isolate/, where
//      the compiled shim-bundle.js reads it instead of running esbuild;
//   3. OUT/.built, last, dated when the build began: bin/edge.mjs runs OUT/ only while no
//      source is newer than that (an edit made during the build counts as newer).
// usage: node scripts/build.mjs [OUT]   (default dist/; tests build into a temporary folder)
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { buildSync } from 'esbuild';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = resolve(process.argv[2] ?? join(ROOT, 'dist'));
const began = new Date();

rmSync(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out], { stdio: 'inherit' });
if (r.status !== 0) {
  process.stderr.write(`build: tsc failed (exit ${r.status ?? r.signal}); ${out} is incomplete and will not be run\n`);
  process.exit(1);
}

const { SHIM_BUILD_OPTIONS, SHIM_BUNDLE_FILE } = await import(pathToFileURL(join(out, 'node-agent/isolate/shim-bundle.js')).href);
const bundled = buildSync({ ...SHIM_BUILD_OPTIONS, entryPoints: [join(ROOT, 'node-agent/shim/index.js')] });
writeFileSync(join(out, 'node-agent/isolate', SHIM_BUNDLE_FILE), bundled.outputFiles[0].text);
const { NODE_COMPAT_BUILD_OPTIONS, NODE_COMPAT_BUNDLE_FILE } = await import(pathToFileURL(join(out, 'node-agent/isolate/shim-bundle.js')).href);
const nodeCompat = buildSync({ ...NODE_COMPAT_BUILD_OPTIONS, entryPoints: [join(ROOT, 'node-agent/shim/node/index.js')] });
writeFileSync(join(out, 'node-agent/isolate', NODE_COMPAT_BUNDLE_FILE), nodeCompat.outputFiles[0].text);
// The libraries the shim loads at first use (node-agent/isolate/libs.ts), each a script of its own.
const { SHIM_LIBS, libBuildOptions, libBundleFile, wrapLib } = await import(pathToFileURL(join(out, 'node-agent/isolate/shim-bundle.js')).href);
for (const name of Object.keys(SHIM_LIBS)) {
  const lib = buildSync(libBuildOptions(name, join(ROOT, 'node-agent/shim')));
  writeFileSync(join(out, 'node-agent/isolate', libBundleFile(name)), wrapLib(lib.outputFiles[0].text));
}

const stamp = join(out, '.built');
closeSync(openSync(stamp, 'w'));
utimesSync(stamp, began, began);
process.stdout.write(`build: ${out}\n`);
