import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { DEFAULT_ISOLATE_HOSTS } from '../../cli/agent.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { send, workerManifest } from './agent-harness.js';

// The `edge agent` binary over real HTTP: routing by Host and path prefix, reloading when
// the directory changes, keeping the last good version when a change is bad, and the
// admin endpoints.

const respond = (text: string) => `export default { async fetch(request, env) { return new Response(${JSON.stringify(text)} + (env.SUFFIX ?? '')); } };`;

/** `edge agent --workers DIR` on loopback ports, as node's argv. */
const agentArgv = (dir: string, port: number, admin: number) => ['--no-node-snapshot', join(REPO_ROOT, 'bin/edge.mjs'), 'agent', '--workers', dir, '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`];

describe('edge agent (the binary)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-bin-'));
  let child: ChildProcess;
  let port: number;
  let admin: number;
  let output = '';
  const body = async (host: string, path = '/') => {
    const r = await send(port, host, path);
    return `${r.status} ${(await r.text()).trim()}`;
  };
  const adminToken = 'admin-token-for-the-agent-binary-test';
  const status = async () => (await (await fetch(`http://127.0.0.1:${admin}/status`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as { ready: boolean; workers: { key: string; state: string; error?: string; digest: string; servingDigest?: string }[] };

  beforeAll(async () => {
    writeFileSync(join(dir, 'site.yaml'), [
      workerManifest({ name: 'site', source: respond('site root'), host: 'example.test' }),
      workerManifest({ name: 'api', source: respond('api'), host: 'example.test', pathPrefix: '/api' }),
      workerManifest({ name: 'api-v2', source: respond('api v2'), host: 'example.test', pathPrefix: '/api/v2' }),
      workerManifest({ name: 'wild', source: respond('wildcard'), host: '*.example.test' }),
    ].join('---\n'));
    writeFileSync(join(dir, 'notes.txt'), 'not a manifest');
    [port, admin] = await Promise.all([freePort(), freePort()]);
    child = spawn(process.execPath, agentArgv(dir, port, admin), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EDGE_ADMIN_TOKEN: adminToken } });
    child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
    await waitFor('agent /readyz', async () => {
      if (child.exitCode !== null) throw new Error(`agent exited: ${output}`);
      return (await fetch(`http://127.0.0.1:${admin}/readyz`)).status === 200;
    }, 30_000, 100);
  });

  afterAll(() => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('routes by exact host, wildcard host and longest path prefix on whole segments', async () => {
    expect(await body('example.test')).toBe('200 site root');
    expect(await body('EXAMPLE.test:8080', '/page')).toBe('200 site root');
    expect(await body('example.test', '/api')).toBe('200 api');
    expect(await body('example.test', '/api/users?x=1')).toBe('200 api');
    expect(await body('example.test', '/api/v2/users')).toBe('200 api v2');
    expect(await body('example.test', '/apix')).toBe('200 site root');
    expect(await body('a.example.test')).toBe('200 wildcard');
    expect(await body('a.b.example.test')).toBe('200 wildcard');
    expect(await body('other.test')).toBe('404 no worker is routed for host "other.test" and path "/"');
  });

  it('serves /healthz, /readyz, /status and Prometheus /metrics on the admin port', async () => {
    expect((await fetch(`http://127.0.0.1:${admin}/healthz`)).status).toBe(200);
    const s = await status();
    expect(s.ready).toBe(true);
    expect(s.workers.map((w) => `${w.key} ${w.state}`)).toEqual(['default/api ready', 'default/api-v2 ready', 'default/site ready', 'default/wild ready']);
    // Without the admin token: counts, no tenant's worker names.
    const anonymous = await (await fetch(`http://127.0.0.1:${admin}/status`)).text();
    expect(JSON.parse(anonymous)).toEqual({ ready: true, workers: { total: 4, ready: 4, error: 0 }, actors: 0 });
    expect(anonymous).not.toContain('default/');
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    expect(metrics).toMatch(/edge_requests_total\{worker="default\/site",status="200"\} [1-9]/);
    expect(metrics).toMatch(/edge_request_duration_seconds_bucket\{le="0.005",worker="default\/api"\} \d+/);
    expect(metrics).toMatch(/edge_isolate_pool_ready \d+/);
    expect(metrics).toMatch(/edge_worker_isolates\{worker="default\/wild"\} 1/);
    expect(metrics).toMatch(/edge_agent_process_resident_memory_bytes \d+/);
  });

  it('splits the warm pool (--pool-size, default 4) over the isolate hosts instead of 4 per host', async () => {
    expect(DEFAULT_ISOLATE_HOSTS).toBe(2);
    // An agent of its own with no workers: a worker with another memory limit than the
    // default gets a pool of 1 of its own on its host, which would blur the count.
    const empty = mkdtempSync(join(tmpdir(), 'edge-agent-pool-'));
    const [p, a] = await Promise.all([freePort(), freePort()]);
    const other = spawn(process.execPath, agentArgv(empty, p, a), { stdio: 'ignore' });
    try {
      // The front's /metrics sums its hosts' series; each host fills its own share of 2.
      const ready = async () => Number(/^edge_isolate_pool_ready (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${a}/metrics`)).text())?.[1]);
      let last = NaN;
      await waitFor('the pool filled', async () => (last = await ready()) === 4, 20_000, 50).catch((err: Error) => { throw new Error(`${err.message}; edge_isolate_pool_ready ${last}`); });
      await new Promise((r) => setTimeout(r, 500));
      expect(await ready()).toBe(4);
    } finally {
      other.kill('SIGKILL');
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('picks up a new worker and an edited worker when the directory changes', async () => {
    writeFileSync(join(dir, 'new.yaml'), workerManifest({ name: 'fresh', source: respond('fresh v1'), host: 'fresh.test', vars: { SUFFIX: '!' } }));
    await waitFor('new worker served', async () => (await body('fresh.test')) === '200 fresh v1!', 10_000, 50);
    writeFileSync(join(dir, 'new.yaml'), workerManifest({ name: 'fresh', source: respond('fresh v2'), host: 'fresh.test', vars: { SUFFIX: '?' } }));
    await waitFor('edited worker served', async () => (await body('fresh.test')) === '200 fresh v2?', 10_000, 50);
  });

  it('keeps serving the last good version when a change does not compile or does not parse', async () => {
    writeFileSync(join(dir, 'new.yaml'), workerManifest({ name: 'fresh', source: 'export default { async fetch( {', host: 'fresh.test' }));
    await waitFor('bundle error reported', async () => (await status()).workers.some((w) => w.key === 'default/fresh' && w.state === 'error'), 10_000, 50);
    const w = (await status()).workers.find((x) => x.key === 'default/fresh')!;
    expect(w.error).toMatch(/worker default\/fresh: does not compile: Unexpected end of input \[worker:default\/fresh.js:1:\d+\]/);
    expect(w.servingDigest).toMatch(/^sha256:/);
    expect(await body('fresh.test')).toBe('200 fresh v2?');

    writeFileSync(join(dir, 'new.yaml'), 'kind: [this is not: yaml');
    await new Promise((r) => setTimeout(r, 400));
    expect(await body('fresh.test')).toBe('200 fresh v2?');
    expect(output).toMatch(/manifest file does not parse; keeping its last good version/);
  });

  it('stops routing a worker whose manifest is removed', async () => {
    unlinkSync(join(dir, 'new.yaml'));
    await waitFor('worker removed', async () => (await body('fresh.test')).startsWith('404'), 10_000, 50);
    expect(await body('example.test')).toBe('200 site root');
  });

  it('logs structured JSON lines and exits cleanly on SIGTERM', async () => {
    const lines = output.split('\n').filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(JSON.parse(l)).toMatchObject({ ts: expect.any(String), level: expect.any(String), msg: expect.any(String) });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
