import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { buildSync } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cli/local/tools.js';
// @ts-expect-error scripts/build.mjs is plain JavaScript without declarations
import { renamedClasses } from '../../scripts/build.mjs';

// dist/ is one bundle without esbuild's keepNames (scripts/build.mjs says why), so a class
// keeps its name only while no other module in its chunk declares the same one. The build
// refuses a bundle where that happened; this is the check, on a bundle made to collide.

const check = renamedClasses as (meta: unknown) => string[];
const run = promisify(execFile);

describe('the bundle refuses renamed classes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bundle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const bundle = (entry: string) => buildSync({
    stdin: { contents: entry, resolveDir: dir, loader: 'ts' }, bundle: true, format: 'esm', platform: 'node',
    outfile: join(dir, 'out.js'), metafile: true, absWorkingDir: REPO_ROOT, logLevel: 'silent',
  }).metafile;

  it('names a class that two modules declare', () => {
    writeFileSync(join(dir, 'a.ts'), 'export class WorkerLoadError extends Error {}\n');
    writeFileSync(join(dir, 'b.ts'), 'export class WorkerLoadError extends Error {}\n');
    const meta = bundle('import { WorkerLoadError as A } from "./a.ts"; import { WorkerLoadError as B } from "./b.ts"; console.log(new A().constructor.name, new B().constructor.name);');
    expect(check(meta)).toEqual(['WorkerLoadError -> WorkerLoadError2 (out.js)']);
  });

  it('passes classes whose names end in digits, and distinct names', () => {
    writeFileSync(join(dir, 'c.ts'), 'export class Sha256 {}\nexport class Codec {}\n');
    writeFileSync(join(dir, 'd.ts'), 'export class Codec2 {}\n');
    const meta = bundle('import { Sha256, Codec } from "./c.ts"; import { Codec2 } from "./d.ts"; console.log(new Sha256(), new Codec(), new Codec2());');
    expect(check(meta)).toEqual([]);
  });
});

describe('a build of dist/', () => {
  // Inside the checkout (as dist/ is), so the packages left outside the bundle resolve.
  const out = mkdtempSync(join(REPO_ROOT, '.dist-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  // A package can require its own files in ways esbuild cannot follow (a UMD wrapper did):
  // such a chunk fails only when some command first loads it, so load every one of them.
  it('loads every file it wrote, in a process of its own', async () => {
    await run(process.execPath, [join(REPO_ROOT, 'scripts/build.mjs'), '--quick', out], { cwd: REPO_ROOT });
    const files = readdirSync(out).filter((f) => f.endsWith('.js') && !f.endsWith('.bundle.js'));
    expect(files).toContain('edge.js');
    const script = `for (const f of ${JSON.stringify(files.map((f) => pathToFileURL(join(out, f)).href))}) await import(f);`;
    await expect(run(process.execPath, ['--no-node-snapshot', '--input-type=module', '-e', script], { cwd: out })).resolves.toBeDefined();
  }, 60_000);
});
