// Writes crds/*.yaml (and the chart's copy) from the zod schemas in common/api.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CRD_DIRS, renderCrdFiles } from './crd-files.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const files = renderCrdFiles();
for (const dir of CRD_DIRS) {
  mkdirSync(join(root, dir), { recursive: true });
  // Drop CRDs of kinds that no longer exist.
  for (const f of readdirSync(join(root, dir))) {
    if (f.endsWith('.yaml') && !files.has(`${dir}/${f}`)) rmSync(join(root, dir, f));
  }
}
for (const [path, text] of files) {
  writeFileSync(join(root, path), text);
  console.log(`wrote ${path}`);
}
