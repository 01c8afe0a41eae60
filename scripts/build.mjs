// `npm run build`: the production code compiled to plain JavaScript, so `edge`, the images
// and the chart start without tsx (and the agent without esbuild):
//   1. tsc -p tsconfig.build.json: cli/, common/, node-agent/, operator/ into OUT/;
//   2. the Workers API shim (node-agent/shim/) bundled into OUT/node-agent/isolate/, where
//      the compiled shim-bundle.js reads it instead of running esbuild;
//   3. OUT/.built, last, dated when the build began: bin/edge.mjs runs OUT/ only while no
//      source is newer than that (an edit made during the build counts as newer).
// usage: node scripts/build.mjs [--quick] [OUT]   (default dist/; tests build into a temporary folder)
//
// --quick (what bin/edge.mjs runs when dist/ is older than the sources): step 1 by esbuild,
// file by file, as tsx would transpile them (no type check: `npm run typecheck` does that),
// in about a second instead of tsc's minute; with source maps, which bin/edge.mjs turns on
// for such a build. The same files, so the same behaviour as tsc's build.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { buildSync } from 'esbuild';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** What tsconfig.build.json compiles: these folders, less fake/ (test doubles). */
const COMPILED = ['cli', 'common', 'node-agent', 'operator'];
/** The stamp's content for a --quick build (bin/edge.mjs reads it). */
export const QUICK_STAMP = 'quick\n';

function tsFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== 'fake' && e.name !== 'node_modules') out.push(...tsFiles(p)); }
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Builds into `out` (replacing it); throws when a step fails. */
export async function build(out, { quick = false } = {}) {
  const began = new Date();
  rmSync(out, { recursive: true, force: true });
  if (quick) {
    buildSync({
      entryPoints: COMPILED.flatMap((d) => tsFiles(join(ROOT, d))), outdir: out, outbase: ROOT,
      format: 'esm', platform: 'node', target: 'es2022', bundle: false, sourcemap: 'linked', logLevel: 'silent',
      tsconfig: join(ROOT, 'tsconfig.build.json'),
    });
  } else {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tsc failed (exit ${r.status ?? r.signal}); ${out} is incomplete and will not be run`);
  }

  const { SHIM_BUILD_OPTIONS, SHIM_BUNDLE_FILE } = await import(pathToFileURL(join(out, 'node-agent/isolate/shim-bundle.js')).href);
  const bundled = buildSync({ ...SHIM_BUILD_OPTIONS, entryPoints: [join(ROOT, 'node-agent/shim/index.js')] });
  writeFileSync(join(out, 'node-agent/isolate', SHIM_BUNDLE_FILE), bundled.outputFiles[0].text);
  const { NODE_COMPAT_BUILD_OPTIONS, NODE_COMPAT_BUNDLE_FILE } = await import(pathToFileURL(join(out, 'node-agent/isolate/shim-bundle.js')).href);
  const nodeCompat = buildSync({ ...NODE_COMPAT_BUILD_OPTIONS, entryPoints: [join(ROOT, 'node-agent/shim/node/index.js')] });
  writeFileSync(join(out, 'node-agent/isolate', NODE_COMPAT_BUNDLE_FILE), nodeCompat.outputFiles[0].text);

  const stamp = join(out, '.built');
  closeSync(openSync(stamp, 'w'));
  if (quick) writeFileSync(stamp, QUICK_STAMP);
  utimesSync(stamp, began, began);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const quick = args[0] === '--quick';
  const out = resolve((quick ? args[1] : args[0]) ?? join(ROOT, 'dist'));
  try {
    await build(out, { quick });
  } catch (err) {
    process.stderr.write(`build: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`build: ${out}${quick ? ' (quick: esbuild, no type check)' : ''}\n`);
}
