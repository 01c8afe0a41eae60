// `npm run build`: the production code as plain JavaScript, so `edge`, the images and the
// chart start without tsx (and the agent without esbuild):
//   1. tsc -p tsconfig.build.json --noEmit: cli/, common/, node-agent/, operator/ type-checked;
//   2. esbuild bundles them from cli/main.ts into OUT/edge.js and the chunks beside it, one
//      per set of entry points that share code (each command's dynamic imports load only its
//      own), with the runtime dependencies inside except those in EXTERNAL;
//   3. the Workers API shim (node-agent/shim/) bundled into OUT/, where the bundled
//      shim-bundle.ts reads it instead of running esbuild;
//   4. OUT/.built, last, dated when the build began: bin/edge.mjs runs OUT/ only while no
//      source is newer than that (an edit made during the build counts as newer).
// usage: node scripts/build.mjs [--quick] [OUT]   (default dist/; tests build into a temporary folder)
//
// Why one bundle and not a file per module: every agent process (the front, each isolate
// host, the spare) loads ~200 modules, zod alone 95. Node keeps each one's source text, its
// module record and its compiled functions; bundled, tree-shaken and stripped of whitespace,
// an idle agent's four processes took 129 MiB of PSS against 166 (docs/agent.md, "Memory
// of an idle agent"). esbuild's keepNames would cost ~7 MiB of that back (a __name call per
// function); what needs a name kept is a class (an error's `name` is its class's), and
// esbuild renames one only when another top-level name in its chunk is the same, so the
// build refuses such a bundle instead (renamedClasses). OUT/meta.json is esbuild's account of
// which sources went into which file (outputs named relative to OUT).
//
// --quick (what bin/edge.mjs runs when dist/ is older than the sources): no type check
// (`npm run typecheck` does that), so about a second instead of tsc's minute; the same
// bundle otherwise. Both write source maps; bin/edge.mjs turns them on for a quick build.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { build as esbuild, buildSync } from 'esbuild';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The stamp's content for a --quick build (bin/edge.mjs reads it). */
export const QUICK_STAMP = 'quick\n';
/**
 * EDGE_BUILD_MINIFY=0 leaves the bundle's whitespace and syntax as written: for CPU profiles,
 * which place a minified chunk's anonymous functions by line (a chunk is a few long lines).
 */
const MINIFY = process.env.EDGE_BUILD_MINIFY !== '0';
/** The bundle's entry, relative to OUT: what bin/edge.mjs imports. */
export const ENTRY_FILE = 'edge.js';

/**
 * Packages left to node_modules: a native addon; the build and dev tools (absent from the
 * images); client-node, which only the operator and the CLI's cluster commands load (the
 * agent's image leaves it out); those whose code finds files beside itself at run time
 * (sql.js and html-rewriter-wasm their wasm); jsonc-parser, whose main is a UMD wrapper that
 * requires its own files by computed paths esbuild cannot follow; ws's optional native
 * helpers. test/unit/build-bundle.test.ts loads every file of a build, which finds another.
 */
export const EXTERNAL = [
  'isolated-vm', 'esbuild', 'tsx', 'typescript', '@kubernetes/client-node',
  'sql.js', 'html-rewriter-wasm', 'jsonc-parser', 'bufferutil', 'utf-8-validate',
];

/**
 * Classes of ours that the bundle renamed (esbuild suffixes a colliding top-level name with
 * digits), as "Name -> Name2 (file)".
 */
export function renamedClasses(metafile) {
  const ours = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    if (input.includes('node_modules/') || !input.endsWith('.ts')) continue;
    for (const m of readFileSync(join(ROOT, input), 'utf8').matchAll(/\bclass\s+([A-Za-z_$][\w$]*)/g)) ours.add(m[1]);
  }
  const found = [];
  for (const file of Object.keys(metafile.outputs).filter((f) => f.endsWith('.js'))) {
    const text = readFileSync(resolve(ROOT, file), 'utf8');
    for (const m of text.matchAll(/\bclass\s+([A-Za-z_$][\w$]*\d)\b|\b([A-Za-z_$][\w$]*\d)\s*=\s*class\b/g)) {
      const name = m[1] ?? m[2];
      if (ours.has(name)) continue;
      const base = [...ours].find((c) => name.startsWith(c) && /^\d+$/.test(name.slice(c.length)));
      if (base) found.push(`${base} -> ${name} (${file.slice(file.lastIndexOf('/') + 1)})`);
    }
  }
  return found;
}

/** Builds into `out` (replacing it); throws when a step fails. */
export async function build(out, { quick = false } = {}) {
  const began = new Date();
  rmSync(out, { recursive: true, force: true });
  if (!quick) {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--noEmit'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tsc failed (exit ${r.status ?? r.signal}); nothing was built`);
  }

  const result = await esbuild({
    // shim-bundle.js is an entry of its own only so that step 3 can import its options.
    entryPoints: { [ENTRY_FILE.replace(/\.js$/, '')]: join(ROOT, 'cli/main.ts'), 'shim-bundle': join(ROOT, 'node-agent/isolate/shim-bundle.ts') },
    outdir: out, absWorkingDir: ROOT, bundle: true, splitting: true, format: 'esm', platform: 'node', target: 'node20',
    tsconfig: join(ROOT, 'tsconfig.build.json'), external: EXTERNAL,
    minifyWhitespace: MINIFY, minifySyntax: MINIFY, legalComments: 'linked',
    sourcemap: 'linked', metafile: true, logLevel: 'warning',
    // The CommonJS packages inside (nats, prom-client) require Node's modules by name.
    banner: { js: "import { createRequire as __edgeCreateRequire } from 'node:module'; const require = __edgeCreateRequire(import.meta.url);" },
  });
  // Outputs named relative to OUT: bin/edge.mjs builds into a folder of its own and renames it.
  const outputs = Object.fromEntries(Object.entries(result.metafile.outputs).map(([file, o]) => [relative(out, resolve(ROOT, file)), o]));
  writeFileSync(join(out, 'meta.json'), JSON.stringify({ ...result.metafile, outputs }));
  const renamed = renamedClasses(result.metafile);
  if (renamed.length > 0) {
    throw new Error(`the bundle renamed ${renamed.join(', ')}: another top-level name in its chunk is the same, and a class's name is what an error's \`name\` says; rename one of them`);
  }

  const shim = await import(pathToFileURL(join(out, 'shim-bundle.js')).href);
  const bundled = buildSync({ ...shim.SHIM_BUILD_OPTIONS, entryPoints: [join(ROOT, 'node-agent/shim/index.js')] });
  writeFileSync(join(out, shim.SHIM_BUNDLE_FILE), bundled.outputFiles[0].text);
  const nodeCompat = buildSync({ ...shim.NODE_COMPAT_BUILD_OPTIONS, entryPoints: [join(ROOT, 'node-agent/shim/node/index.js')] });
  writeFileSync(join(out, shim.NODE_COMPAT_BUNDLE_FILE), nodeCompat.outputFiles[0].text);
  // The libraries the shim loads at first use (node-agent/isolate/libs.ts), each a script of its own.
  for (const name of Object.keys(shim.SHIM_LIBS)) {
    const lib = buildSync(shim.libBuildOptions(name, join(ROOT, 'node-agent/shim')));
    writeFileSync(join(out, shim.libBundleFile(name)), shim.wrapLib(lib.outputFiles[0].text));
  }

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
