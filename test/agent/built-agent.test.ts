import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { send, workerManifest } from './agent-harness.js';

// `npm run build`, then the agent as its image holds it: package.json, bin/, dist/ and
// node_modules with neither the TypeScript sources nor client-node, esbuild, tsx or
// typescript. Serving a request proves the agent's code path loads none of them (the lint
// rule checks static imports; this also covers dynamic ones) and that the prebuilt shim is
// used, since esbuild is not there to bundle it.

const run = promisify(execFile);
const ABSENT = new Set(['@kubernetes', 'esbuild', 'tsx', 'typescript', '.bin']);

describe('the built agent, without the dev dependencies or client-node', () => {
  const app = mkdtempSync(join(tmpdir(), 'edge-built-'));
  const workers = join(app, 'workers');
  const edge = (args: string[]) => run(process.execPath, ['--no-node-snapshot', join(app, 'bin/edge.mjs'), ...args], { cwd: app });
  let agent: ChildProcess | undefined;

  beforeAll(async () => {
    await run(process.execPath, [join(REPO_ROOT, 'scripts/build.mjs'), join(app, 'dist')], { cwd: REPO_ROOT });
    cpSync(join(REPO_ROOT, 'package.json'), join(app, 'package.json'));
    cpSync(join(REPO_ROOT, 'bin'), join(app, 'bin'), { recursive: true });
    mkdirSync(join(app, 'node_modules'));
    for (const name of readdirSync(join(REPO_ROOT, 'node_modules'))) {
      if (!ABSENT.has(name)) symlinkSync(join(REPO_ROOT, 'node_modules', name), join(app, 'node_modules', name));
    }
    mkdirSync(workers);
    writeFileSync(join(workers, 'hello.yaml'), workerManifest({
      name: 'hello', host: 'hello.test',
      source: 'export default { async fetch(request) { return new Response(`hello from ${new URL(request.url).pathname}`); } };',
    }));
    // HTMLRewriter's lol-html comes from the runtime dependencies, its glue from the prebuilt shim.
    writeFileSync(join(workers, 'html.yaml'), workerManifest({
      name: 'html', host: 'html.test',
      source: 'export default { fetch() { return new HTMLRewriter().on("b", { element(e) { e.setInnerContent("built"); } }).transform(new Response("<b>x</b>")); } };',
    }));
  }, 180_000);

  afterAll(() => {
    agent?.kill('SIGKILL');
    rmSync(app, { recursive: true, force: true });
  });

  it('has what the image leaves out really left out', async () => {
    // Without this the test below could pass by finding a package it is meant not to have.
    // (`edge operator` imports client-node at load; `edge status` no longer needs it.)
    const operator = edge(['operator', '--help']);
    await expect(operator).rejects.toThrow(/Cannot find package '@kubernetes\/client-node'/);
  });

  it('answers edge --help from dist/', async () => {
    const { stdout } = await edge(['--help']);
    expect(stdout).toMatch(/^usage: edge <command>/);
  });

  it('runs edge agent --workers DIR from dist/ and serves a worker', async () => {
    const [port, admin] = await Promise.all([freePort(), freePort()]);
    let output = '';
    agent = spawn(process.execPath, [
      '--no-node-snapshot', join(app, 'bin/edge.mjs'), 'agent', '--workers', workers,
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`,
    ], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
    agent.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
    agent.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
    await waitFor('built agent /readyz', async () => {
      if (agent!.exitCode !== null) throw new Error(`agent exited ${agent!.exitCode}: ${output}`);
      return (await fetch(`http://127.0.0.1:${admin}/readyz`)).status === 200;
    }, 30_000, 100);
    const r = await send(port, 'hello.test', '/x');
    expect(`${r.status} ${await r.text()}`).toBe('200 hello from /x');
    const html = await send(port, 'html.test', '/');
    expect(`${html.status} ${await html.text()}`).toBe('200 <b>built</b>');
    // The front runs no isolate, so it never loads the isolate runtime (node-agent/front.ts:
    // about 14 MiB of its memory); the isolate hosts that served the requests did.
    const maps = (pid: number) => readFileSync(`/proc/${pid}/maps`, 'utf8');
    expect(maps(agent.pid!)).not.toContain('isolated_vm.node');
    const children = (await run('sh', ['-c', `pgrep -P ${agent.pid!} || true`])).stdout.split('\n').filter(Boolean).map(Number);
    expect(children.filter((pid) => maps(pid).includes('isolated_vm.node')).length).toBeGreaterThanOrEqual(2);
  });

  it('falls back to the sources when one is newer than the build (here: to tsx, which is absent)', async () => {
    mkdirSync(join(app, 'cli'));
    const edited = join(app, 'cli', 'main.ts');
    writeFileSync(edited, '');
    const later = new Date(Date.now() + 60_000);
    utimesSync(edited, later, later);
    try {
      await expect(edge(['--help'])).rejects.toThrow(/Cannot find package 'tsx'/);
    } finally {
      rmSync(join(app, 'cli'), { recursive: true, force: true });
    }
    expect((await edge(['--help'])).stdout).toMatch(/^usage: edge <command>/);
  });
});
