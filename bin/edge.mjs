#!/usr/bin/env -S node --no-node-snapshot
// The `edge` command. --no-node-snapshot is required by isolated-vm on Node >= 20 (the
// shebang passes it, so do the Makefile, the Dockerfile and the chart).
//
// Runs the compiled JavaScript in dist/ (`npm run build`) when it is there and no source is
// newer than the build; otherwise the TypeScript sources through tsx, so a checkout without a
// build, or with edits made since, runs what is on disk. The images carry dist/ and no sources,
// so they always run dist/ (and have no tsx). EDGE_FROM_SOURCE=1 forces the sources.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// Written last by scripts/build.mjs, with the time the build started.
const STAMP = join(ROOT, 'dist', '.built');
// What dist/ is compiled or bundled from (scripts/build.mjs, tsconfig.build.json).
const SOURCES = ['cli', 'common', 'node-agent', 'operator', 'tsconfig.json', 'tsconfig.build.json'];

function newestMtime(path) {
  let st;
  try { st = statSync(path); } catch { return 0; }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)));
  return newest;
}

function distIsCurrent() {
  if (process.env.EDGE_FROM_SOURCE === '1' || !existsSync(STAMP)) return false;
  const built = statSync(STAMP).mtimeMs;
  return SOURCES.every((s) => newestMtime(join(ROOT, s)) <= built);
}

let main;
if (distIsCurrent()) {
  ({ main } = await import('../dist/cli/main.js'));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../cli/main.ts'));
}
process.exitCode = await main(process.argv.slice(2));
