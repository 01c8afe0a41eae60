#!/usr/bin/env -S node --no-node-snapshot
// The `edge` command. --no-node-snapshot is required by isolated-vm on Node >= 20 (the
// shebang passes it, so do the Makefile, the Dockerfile and the chart).
//
// Runs the bundled JavaScript in dist/ (dist/edge.js) when it is there and no source is
// newer than the build. In a checkout where a source is newer (or there is no build), it
// first rebuilds dist/ quickly (`scripts/build.mjs --quick`: esbuild without the type
// check, about a second, once per edit) and runs that: loading tsx and transpiling on
// every run cost each command more CPU than the command itself. The images carry dist/
// and no sources, so they always run dist/. Without esbuild (or scripts/), and with
// EDGE_FROM_SOURCE=1, it runs the sources through tsx.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');
// Written last by scripts/build.mjs, with the time the build started.
const STAMP = join(DIST, '.built');
// What dist/ is compiled or bundled from (scripts/build.mjs, tsconfig.build.json).
const SOURCES = ['cli', 'common', 'node-agent', 'operator', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs'];
// The bundle's entry (scripts/build.mjs ENTRY_FILE); a dist/ without it is an older layout.
const ENTRY = join(DIST, 'edge.js');
const BUILDER = join(ROOT, 'scripts', 'build.mjs');

function newestMtime(path) {
  let st;
  try { st = statSync(path); } catch { return 0; }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)));
  return newest;
}

function distIsCurrent() {
  if (!existsSync(STAMP) || !existsSync(ENTRY)) return false;
  const built = statSync(STAMP).mtimeMs;
  return SOURCES.every((s) => newestMtime(join(ROOT, s)) <= built);
}

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (err) { return err.code === 'EPERM'; } };

/**
 * Rebuilds dist/ with `build.mjs --quick` into a folder of its own, then swaps it in. One
 * process builds at a time (`edge dev` and the tests start several at once): the others wait
 * for it, then use its build. False when this checkout cannot (no esbuild or no scripts/).
 */
async function quickBuild() {
  if (!existsSync(BUILDER)) return false;
  try { await import('esbuild'); } catch { return false; }
  const lock = join(ROOT, '.dist-building');
  for (const deadline = Date.now() + 120_000; ;) {
    try { mkdirSync(lock); break; } catch (err) { if (err.code !== 'EEXIST') throw err; }
    let holder = 0;
    try { holder = Number(readFileSync(join(lock, 'pid'), 'utf8')); } catch { /* being written */ }
    if (holder && !alive(holder)) { rmSync(lock, { recursive: true, force: true }); continue; }
    if (Date.now() > deadline) throw new Error(`edge: waited 2 minutes for the dist/ build of pid ${holder} (${lock})`);
    await sleep(50);
    if (!existsSync(lock) && distIsCurrent()) return true;
  }
  const tmp = join(ROOT, `.dist-${process.pid}`);
  try {
    writeFileSync(join(lock, 'pid'), String(process.pid));
    if (distIsCurrent()) return true;
    const { build } = await import(pathToFileURL(BUILDER).href);
    // Said to a person only: scripts and tests read stderr, and the build changes no result.
    if (process.stderr.isTTY) process.stderr.write('edge: sources changed since the last build; rebuilding dist/ (esbuild, about a second)\n');
    await build(tmp, { quick: true });
    rmSync(DIST, { recursive: true, force: true });
    renameSync(tmp, DIST);
    return true;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(lock, { recursive: true, force: true });
  }
}

/** quickBuild, or false (tsx then) when it fails: a read-only checkout, a broken esbuild. */
async function tryQuickBuild() {
  try { return await quickBuild(); } catch (err) {
    process.stderr.write(`edge: could not rebuild dist/ (${err.message}); running the sources through tsx\n`);
    return false;
  }
}

let main;
if (process.env.EDGE_FROM_SOURCE !== '1' && (distIsCurrent() || await tryQuickBuild())) {
  // A quick build has source maps: stack traces then point at the TypeScript, as under tsx.
  if (readFileSync(STAMP, 'utf8') !== '') process.setSourceMapsEnabled(true);
  ({ main } = await import(pathToFileURL(ENTRY).href));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../cli/main.ts'));
}
process.exitCode = await main(process.argv.slice(2));
