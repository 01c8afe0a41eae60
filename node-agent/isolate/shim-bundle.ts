import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Esbuild from 'esbuild';
import { EdgeError } from '../../common/errors.js';

// The Workers API shim (node-agent/shim/) bundled into one classic script, the form
// ivm.Isolate.createSnapshot takes. `npm run build` writes the bundle beside the compiled
// copy of this module (dist/node-agent/isolate/), so a built agent reads one file and
// neither loads esbuild nor keeps its service process alive; esbuild is a devDependency and
// is absent from the images. Run from the sources (tsx: tests, `edge dev` from a checkout
// without a build) there is no such file and the shim is bundled here, once per process.

const HERE = dirname(fileURLToPath(import.meta.url));
const SHIM_ENTRY = join(HERE, '../shim/index.js');
/** The prebuilt bundle's file name, next to this module. */
export const SHIM_BUNDLE_FILE = 'shim.bundle.js';
/** Only a bundle made here is kept: the prebuilt file is read again (each process makes its snapshot once, and 214 KiB of source held for nothing is heap in every isolate host). */
let bundled: string | undefined;

export class ShimBundleError extends EdgeError {}

export function shimSource(): string {
  return prebuilt(SHIM_BUNDLE_FILE) ?? (bundled ??= bundleShim(SHIM_ENTRY));
}

function prebuilt(file: string): string | undefined {
  try {
    return readFileSync(join(HERE, file), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** How the shim is bundled, here and by scripts/build.mjs (which adds the entry point). */
export const SHIM_BUILD_OPTIONS = {
  bundle: true,
  format: 'iife',
  platform: 'neutral',
  target: 'es2022',
  write: false,
  legalComments: 'none',
  // Smaller source means a smaller snapshot for every isolate; names stay readable.
  minifyWhitespace: true,
  logLevel: 'silent',
  // sql.js (node-agent/shim/sql.js) reaches for these only when it runs under Node, which
  // an isolate is not: left as calls that are never made.
  // html-rewriter-wasm's glue requires these at its first use, where shim/html-rewriter.js
  // answers them (the wasm bytes from the host, the shim's TextDecoder).
  external: ['node:fs', 'node:crypto', 'fs', 'path', 'util', 'assert'],
} as const satisfies Esbuild.BuildOptions;

function bundleShim(entry: string, options: Esbuild.BuildOptions = SHIM_BUILD_OPTIONS): string {
  // Required here, not imported at the top: the built agent must load without esbuild.
  const { buildSync } = createRequire(import.meta.url)('esbuild') as typeof Esbuild;
  const file = buildSync({ ...options, entryPoints: [entry] }).outputFiles?.[0];
  if (!file) throw new ShimBundleError(`bundling the Workers API shim (${entry}) produced no output`);
  return file.text;
}

// nodejs_compat's Node modules (node-agent/shim/node/): a script of its own, outside the
// snapshot every isolate is made from, evaluated only in isolates of workers with the flag
// (worker-isolate.ts). Prebuilt by `npm run build` like the shim.
const NODE_COMPAT_ENTRY = join(HERE, '../shim/node/index.js');
export const NODE_COMPAT_BUNDLE_FILE = 'node-compat.bundle.js';
/** How the nodejs_compat script is bundled, here and by scripts/build.mjs. */
export const NODE_COMPAT_BUILD_OPTIONS = {
  ...SHIM_BUILD_OPTIONS,
  // The polyfills' package.json "browser" maps (readable-stream's Node-free entry) apply
  // only on the browser platform.
  platform: 'browser',
  mainFields: ['browser', 'module', 'main'],
  external: [],
  define: { 'process.env.NODE_DEBUG': 'undefined', 'process.env.READABLE_STREAM': 'undefined' },
} as const satisfies Esbuild.BuildOptions;
let nodeCached: string | undefined;

export function nodeCompatSource(): string {
  nodeCached ??= prebuilt(NODE_COMPAT_BUNDLE_FILE) ?? bundleShim(NODE_COMPAT_ENTRY, NODE_COMPAT_BUILD_OPTIONS);
  return nodeCached;
}

// Libraries the shim loads into an isolate only at their first use (isolate/libs.ts), kept
// out of the snapshot: every isolate holds the snapshot's source text and functions (a
// cached dynamic worker paid ~240 KB of RSS for these four), and most never compress,
// rewrite HTML or open SQLite. Each is a script of its own whose value is a function
// (module, exports, require, __dirname) that evaluates the library where it is called.

/** Library name -> the module its script exports. */
export const SHIM_LIBS = {
  'pako-deflate': 'pako/lib/deflate.js',
  'pako-inflate': 'pako/lib/inflate.js',
  'sql-wasm': 'sql.js/dist/sql-wasm.js',
  'html-rewriter': 'html-rewriter-wasm/dist/html_rewriter.js',
} as const;
export type ShimLib = keyof typeof SHIM_LIBS;
export const isShimLib = (name: string): name is ShimLib => Object.hasOwn(SHIM_LIBS, name);
/** The prebuilt script of a library, next to this module. */
export const libBundleFile = (name: ShimLib): string => `lib-${name}.bundle.js`;

/** How a library is bundled, here and by scripts/build.mjs (which wraps it with wrapLib); `shimDir` is where its package is resolved from. */
export function libBuildOptions(name: ShimLib, shimDir = join(HERE, '../shim')): Esbuild.BuildOptions {
  return {
    ...SHIM_BUILD_OPTIONS,
    format: 'cjs',
    stdin: { contents: `module.exports = require(${JSON.stringify(SHIM_LIBS[name])});`, resolveDir: shimDir, sourcefile: `lib-${name}.js` },
  };
}

/** A library's CommonJS bundle as a script whose completion value is its module function. */
export const wrapLib = (bundle: string): string => `(function (module, exports, require, __dirname) {\n${bundle}\n})`;

const libCached = new Map<ShimLib, string>();
export function libSource(name: ShimLib): string {
  let code = libCached.get(name);
  if (code === undefined) {
    code = prebuilt(libBundleFile(name)) ?? wrapLib(bundleLib(libBuildOptions(name)));
    libCached.set(name, code);
  }
  return code;
}

function bundleLib(options: Esbuild.BuildOptions): string {
  const { buildSync } = createRequire(import.meta.url)('esbuild') as typeof Esbuild;
  const file = buildSync(options).outputFiles?.[0];
  if (!file) throw new ShimBundleError(`bundling a shim library (${options.stdin?.sourcefile ?? '?'}) produced no output`);
  return file.text;
}
