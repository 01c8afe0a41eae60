import { buildSync } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The Workers API shim (node-agent/shim/) bundled into one classic script, the form
// ivm.Isolate.createSnapshot takes. Bundled once per process.

const SHIM_ENTRY = join(dirname(fileURLToPath(import.meta.url)), '../shim/index.js');
let cached: string | undefined;

export function shimSource(): string {
  if (cached !== undefined) return cached;
  const out = buildSync({
    entryPoints: [SHIM_ENTRY],
    bundle: true,
    format: 'iife',
    platform: 'neutral',
    target: 'es2022',
    write: false,
    legalComments: 'none',
    // Smaller source means a smaller snapshot for every isolate; names stay readable.
    minifyWhitespace: true,
    logLevel: 'silent',
  });
  const file = out.outputFiles[0];
  if (!file) throw new Error(`bundling the Workers API shim (${SHIM_ENTRY}) produced no output`);
  cached = file.text;
  return cached;
}
