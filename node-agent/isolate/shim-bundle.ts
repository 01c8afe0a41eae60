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
let cached: string | undefined;

export class ShimBundleError extends EdgeError {}

export function shimSource(): string {
  cached ??= prebuiltShim() ?? bundleShim(SHIM_ENTRY);
  return cached;
}

function prebuiltShim(): string | undefined {
  try {
    return readFileSync(join(HERE, SHIM_BUNDLE_FILE), 'utf8');
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
  external: ['node:fs', 'node:crypto'],
} as const satisfies Esbuild.BuildOptions;

function bundleShim(entry: string): string {
  // Required here, not imported at the top: the built agent must load without esbuild.
  const { buildSync } = createRequire(import.meta.url)('esbuild') as typeof Esbuild;
  const file = buildSync({ ...SHIM_BUILD_OPTIONS, entryPoints: [entry] }).outputFiles[0];
  if (!file) throw new ShimBundleError(`bundling the Workers API shim (${entry}) produced no output`);
  return file.text;
}
