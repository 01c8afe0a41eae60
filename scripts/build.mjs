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
// of an idle agent"). Identifiers are minified too (smaller source and scope tables in every
// process); what needs a name kept is a class (an error's `name` is its class's), and
// esbuild's keepNames would cost ~7 MiB for it (a __name call per function), so
// pinClassNames gives each class of ours a static block that sets its name instead.
// OUT/meta.json is esbuild's account of which sources went into which file (outputs named
// relative to OUT).
//
// --quick (what bin/edge.mjs runs when dist/ is older than the sources): no type check
// (`npm run typecheck` does that), so about a second instead of tsc's minute; the same
// bundle otherwise. Both write source maps; bin/edge.mjs turns them on for a quick build.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { build as esbuild, buildSync } from 'esbuild';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The stamp's content for a --quick build (bin/edge.mjs reads it). */
export const QUICK_STAMP = 'quick\n';
/**
 * EDGE_BUILD_MINIFY=0 leaves the bundle's whitespace, syntax and names as written: for CPU
 * profiles and stack traces, which name a minified chunk's functions and classes as the
 * minifier did and place them by line (a chunk is a few long lines).
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

/** Where a class declaration of ours starts: `export abstract class Name`, first on its line. */
const CLASS_START = /^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:abstract[ \t]+)?class[ \t]+([A-Za-z_$][\w$]*)/gm;

/**
 * `source` with each class declaration's name pinned: a static block first in its body sets
 * the constructor's `name` to the declared one, which minified identifiers would otherwise
 * change (an EdgeError's `name` is its class's, so the logs' `errorClass` and every
 * `err.name` would read `Xe`). The body is the first `{` outside the head's type arguments
 * (`extends Base<{ a: number }>`); a misplaced `static {}` block does not parse, so a head
 * this misreads fails the build rather than the program.
 */
export function pinClassNames(source) {
  let out = '';
  let from = 0;
  for (const m of source.matchAll(CLASS_START)) {
    let angle = 0;
    let i = m.index + m[0].length;
    for (; i < source.length; i++) {
      const c = source[i];
      if (c === '<') angle++;
      else if (c === '>' && source[i - 1] !== '=') angle--;
      else if (c === '{' && angle === 0) break;
    }
    if (i >= source.length) break;
    out += `${source.slice(from, i + 1)} static { Object.defineProperty(this, "name", { value: ${JSON.stringify(m[1])}, configurable: true }); }`;
    from = i + 1;
  }
  return out + source.slice(from);
}

/** The esbuild plugin that runs pinClassNames over our TypeScript (not node_modules'). */
export const pinClassNamesPlugin = {
  name: 'pin-class-names',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, (args) => {
      if (args.path.includes(`${sep}node_modules${sep}`)) return undefined;
      return { contents: pinClassNames(readFileSync(args.path, 'utf8')), loader: 'ts' };
    });
  },
};

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
    minifyWhitespace: MINIFY, minifySyntax: MINIFY, minifyIdentifiers: MINIFY, legalComments: 'linked', plugins: [pinClassNamesPlugin],
    sourcemap: 'linked', metafile: true, logLevel: 'warning',
    // The CommonJS packages inside (nats, prom-client) require Node's modules by name.
    banner: { js: "import { createRequire as __edgeCreateRequire } from 'node:module'; const require = __edgeCreateRequire(import.meta.url);" },
  });
  // Outputs named relative to OUT: bin/edge.mjs builds into a folder of its own and renames it.
  const outputs = Object.fromEntries(Object.entries(result.metafile.outputs).map(([file, o]) => [relative(out, resolve(ROOT, file)), o]));
  writeFileSync(join(out, 'meta.json'), JSON.stringify({ ...result.metafile, outputs }));

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
