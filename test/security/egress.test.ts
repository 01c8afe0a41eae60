import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { createLogger } from '../../common/log.js';
import { Agent } from '../../node-agent/agent.js';
import { send, workerManifest } from '../agent/agent-harness.js';

// Issue 12, item 6 (egress) and item 3 (subrequest bodies), played by a hostile tenant
// against the real agent (node-agent/agent.ts, directory mode): its worker fetch()es the
// agent's own admin port, a NATS-monitor stand-in on loopback, the cloud metadata address,
// cluster DNS names, a name that resolves to loopback, and is redirected from an allowed
// server to a forbidden one. Each attempt is refused inside the worker with an error naming
// the destination and the policy, and the forbidden servers never see a request; the one
// allowed destination works, and a healthy neighbour keeps answering.

const ADMIN_TOKEN = 'egress-test-admin-token-0123456789';

/** A loopback HTTP server that counts what reaches it. */
async function server(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ srv: Server; port: number; hits: string[] }> {
  const hits: string[] = [];
  const srv = createServer((req, res) => { hits.push(req.url ?? ''); handler(req, res); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { srv, port: (srv.address() as AddressInfo).port, hits };
}

/** The attacker: fetches ?url= (redirect mode ?redirect=) and says what happened. */
const ATTACKER = `export default {
  async fetch(request) {
    const u = new URL(request.url);
    const target = u.searchParams.get('url');
    try {
      const res = await fetch(target, { redirect: u.searchParams.get('redirect') ?? 'follow' });
      return new Response('reached ' + res.status + ' ' + (await res.text()).slice(0, 200));
    } catch (e) {
      return new Response(e.constructor.name + ': ' + e.message, { status: 502 });
    }
  },
};`;

/** Reads a big response one chunk at a time, pausing on a gate after the first chunk. */
const STREAMER = `export default {
  async fetch(request, env) {
    const u = new URL(request.url);
    const base = u.searchParams.get('origin');
    if (u.pathname === '/upload') {
      const res = await fetch(base + '/sink', { method: 'POST', body: request.body });
      return new Response(await res.text());
    }
    const res = await fetch(base + '/big');
    const reader = res.body.getReader();
    let total = 0;
    let first = true;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (first) { first = false; await (await fetch(base + '/gate')).text(); }
    }
    return new Response(String(total));
  },
};`;

const BIG_BYTES = 64 * 1024 * 1024;
const UPLOAD_BYTES = 40 * 1024 * 1024;

describe('egress: a worker reaches only what its policy allows', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-egress-'));
  let agent: Agent;
  let natsMonitor: Awaited<ReturnType<typeof server>>;
  let allowed: Awaited<ReturnType<typeof server>>;

  beforeAll(async () => {
    // Stands in for nats-server's monitor (:8222/varz): never to be reached.
    natsMonitor = await server((_req, res) => res.end('{"server_id":"secret"}'));
    // The one destination the agent allows (as --egress-allow 127.0.0.1:PORT).
    allowed = await server((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/redirect') res.writeHead(302, { location: url.searchParams.get('to') ?? '/' }).end();
      else res.end('hello from the allowed origin');
    });
    writeFileSync(join(dir, 'workers.yaml'), [
      workerManifest({ name: 'attacker', source: ATTACKER, limits: { subrequests: 10, cpuMsPerRequest: 500 } }),
      workerManifest({ name: 'streamer', source: STREAMER, limits: { subrequests: 10, cpuMsPerRequest: 5000, memoryMiB: 128, wallMsPerRequest: 60_000 } }),
      workerManifest({ name: 'healthy', source: 'export default { fetch() { return new Response("ok"); } };' }),
    ].join('---\n'));
    agent = await Agent.start({
      log: createLogger({}, () => {}),
      source: { kind: 'directory', dir },
      agentName: 'egress-test',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 100 * 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 2,
      adminToken: ADMIN_TOKEN,
      egressAllow: [`127.0.0.1:${allowed.port}`],
      // A name that resolves to loopback, as a rebinding attacker's DNS would answer; the
      // test resolver stands in for that DNS (no network here).
      resolve: async (hostname) => {
        if (hostname === 'rebind.attacker.example') return [{ address: '127.0.0.1', family: 4 }];
        if (hostname === 'mixed.attacker.example') return [{ address: '10.0.0.7', family: 4 }, { address: '169.254.169.254', family: 4 }];
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
      },
    });
  });

  afterAll(async () => {
    await agent?.stop();
    for (const s of [natsMonitor, allowed]) s?.srv.closeAllConnections();
    await Promise.all([natsMonitor, allowed].map((s) => s && new Promise((r) => s.srv.close(r))));
    rmSync(dir, { recursive: true, force: true });
  });

  const attack = async (url: string, redirect?: string) => {
    const r = await send(agent.port, 'attacker.test', `/?url=${encodeURIComponent(url)}${redirect ? `&redirect=${redirect}` : ''}`);
    return { status: r.status, text: await r.text() };
  };
  const healthy = async () => { const r = await send(agent.port, 'healthy.test', '/'); return `${r.status} ${await r.text()}`; };

  it('refuses the agent\'s own admin port, loopback in every spelling, link-local, private and cluster names', async () => {
    const admin = agent.adminPort;
    const cases: [string, RegExp][] = [
      [`http://127.0.0.1:${admin}/status`, new RegExp(`127\\.0\\.0\\.1:${admin} \\(loopback\\)`)],
      [`http://127.0.0.1:${admin}/metrics`, /\(loopback\)/],
      [`http://localhost:${admin}/status`, /localhost:\d+ \(a single-label name\)/],
      [`http://[::1]:${admin}/status`, /\[::1\]:\d+ \(loopback\)/],
      [`http://[::ffff:127.0.0.1]:${admin}/status`, /\(loopback\)/],
      [`http://2130706433:${admin}/status`, /127\.0\.0\.1:\d+ \(loopback\)/],
      [`http://0.0.0.0:${admin}/status`, /\(unspecified\)/],
      [`http://127.0.0.1:${natsMonitor.port}/varz`, /\(loopback\)/],
      ['http://169.254.169.254/latest/meta-data/iam/security-credentials/', /169\.254\.169\.254:80 \(link-local\)/],
      ['http://[fd00:ec2::254]/latest/meta-data/', /\(private\)/],
      ['http://10.96.0.1:443/api', /\(private\)/],
      ['http://100.64.0.1/', /\(carrier-grade NAT\)/],
      ['http://kubernetes.default.svc/api', /\(a cluster-internal name, \*\.svc\)/],
      ['http://edge-isolates-nats.edge-system.svc.cluster.local:8222/varz', /cluster-internal name, \*\.cluster\.local/],
      ['http://metadata.google.internal/computeMetadata/v1/', /cluster-internal name, \*\.internal/],
      [`http://rebind.attacker.example:${admin}/status`, new RegExp(`rebind\\.attacker\\.example:${admin}, which resolves to 127\\.0\\.0\\.1 \\(loopback\\)`)],
      ['http://mixed.attacker.example/', /resolves to 10\.0\.0\.7 \(private\), 169\.254\.169\.254 \(link-local\)/],
    ];
    for (const [url, why] of cases) {
      const r = await attack(url);
      expect(r.status, url).toBe(502);
      expect(r.text, url).toMatch(/^TypeError: fetch .* failed: egress to /);
      expect(r.text, url).toMatch(why);
      expect(r.text, url).toContain('is not allowed by the egress policy of namespace "default" (public internet; allowed: 127.0.0.1:');
    }
    expect(natsMonitor.hits).toEqual([]);
    expect(await healthy()).toBe('200 ok');
  });

  it('checks every redirect hop: an allowed server cannot bounce the worker to a forbidden one', async () => {
    const to = (target: string) => `http://127.0.0.1:${allowed.port}/redirect?to=${encodeURIComponent(target)}`;
    const viaAdmin = await attack(to(`http://127.0.0.1:${agent.adminPort}/status`));
    expect(viaAdmin.status).toBe(502);
    expect(viaAdmin.text).toMatch(new RegExp(`egress to 127\\.0\\.0\\.1:${agent.adminPort} \\(loopback\\) is not allowed`));
    const viaMonitor = await attack(to(`http://127.0.0.1:${natsMonitor.port}/varz`));
    expect(viaMonitor.text).toMatch(/\(loopback\) is not allowed/);
    const viaMetadata = await attack(to('http://169.254.169.254/latest/meta-data/'));
    expect(viaMetadata.text).toMatch(/169\.254\.169\.254:80 \(link-local\) is not allowed/);
    expect(natsMonitor.hits).toEqual([]);
    // redirect: 'manual' hands the 3xx to the worker without following it.
    const manual = await attack(to('http://169.254.169.254/'), 'manual');
    expect(manual.text).toBe('reached 302 ');
    // A redirect that stays on the allowed origin is followed.
    expect((await attack(to('/hello'))).text).toBe('reached 200 hello from the allowed origin');
    expect(await healthy()).toBe('200 ok');
  });

  it('lets the allowed destination through', async () => {
    expect(await attack(`http://127.0.0.1:${allowed.port}/hello`)).toEqual({ status: 200, text: 'reached 200 hello from the allowed origin' });
    // The allowance names a port: the same address on another port stays closed.
    expect((await attack(`http://127.0.0.1:${natsMonitor.port}/`)).text).toMatch(/\(loopback\) is not allowed/);
  });

  it('gives /status in full only to the admin token; anyone else gets counts', async () => {
    const anonymous = await (await fetch(`http://127.0.0.1:${agent.adminPort}/status`)).text();
    expect(JSON.parse(anonymous)).toEqual({ ready: true, workers: { total: 3, ready: 3, error: 0 }, actors: 0 });
    expect(anonymous).not.toMatch(/attacker|healthy|streamer/);
    const wrong = await (await fetch(`http://127.0.0.1:${agent.adminPort}/status`, { headers: { authorization: 'Bearer nope' } })).text();
    expect(wrong).toBe(anonymous);
    const full = (await (await fetch(`http://127.0.0.1:${agent.adminPort}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as { workers: { key: string }[] };
    expect(full.workers.map((w) => w.key)).toEqual(['default/attacker', 'default/healthy', 'default/streamer']);
  });
});

describe('subrequest bodies stream with backpressure', () => {
  // Shares nothing with the block above but the helpers: its own agent and origin.
  const dir = mkdtempSync(join(tmpdir(), 'edge-bodies-'));
  let agent: Agent;
  let origin: Awaited<ReturnType<typeof server>>;
  let written = 0;
  let sunk = 0;
  let releaseGate: (() => void) | undefined;

  beforeAll(async () => {
    origin = await server((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(1024 * 1024, 7);
        const more = () => {
          while (written < BIG_BYTES) {
            written += chunk.byteLength;
            if (!res.write(chunk)) { res.once('drain', more); return; }
          }
          res.end();
        };
        more();
      } else if (url.pathname === '/gate') {
        releaseGate = () => res.end('go');
      } else if (url.pathname === '/sink') {
        req.on('data', (c: Buffer) => { sunk += c.byteLength; });
        req.on('end', () => res.end(String(sunk)));
      } else {
        res.end('?');
      }
    });
    writeFileSync(join(dir, 'workers.yaml'), [
      workerManifest({ name: 'streamer', source: STREAMER, limits: { subrequests: 10, cpuMsPerRequest: 10_000, memoryMiB: 128, wallMsPerRequest: 120_000 } }),
      workerManifest({ name: 'healthy', source: 'export default { fetch() { return new Response("ok"); } };' }),
    ].join('---\n'));
    agent = await Agent.start({
      log: createLogger({}, () => {}),
      source: { kind: 'directory', dir },
      agentName: 'bodies-test',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 100 * 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 2,
      egressAllow: [`127.0.0.1:${origin.port}`],
    });
  });

  afterAll(async () => {
    releaseGate?.();
    await agent?.stop();
    origin?.srv.closeAllConnections();
    await new Promise((r) => origin?.srv.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a 64 MiB response (over the old 32 MiB buffer limit) while the host holds only a window of it', async () => {
    const base = `http://127.0.0.1:${origin.port}`;
    const reply = send(agent.port, 'streamer.test', `/?origin=${encodeURIComponent(base)}`);
    // The worker has read one chunk and waits on the gate: the origin can write only what
    // the socket buffers and the host's window take before it is told to wait.
    await waitFor('the worker to wait on the gate', async () => releaseGate !== undefined, 30_000, 20);
    let last = -1;
    await waitFor('the origin to stall', async () => {
      const stalled = written === last;
      last = written;
      return stalled;
    }, 30_000, 300);
    expect(written).toBeLessThan(24 * 1024 * 1024);
    // What the host holds for it is visible (and is only the window, not the body).
    const metrics = await (await fetch(`http://127.0.0.1:${agent.adminPort!}/metrics`)).text();
    const held = Number(/edge_subrequest_host_bytes\{worker="default\/streamer"[^}]*\} (\d+)/.exec(metrics)?.[1] ?? -1);
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThan(24 * 1024 * 1024);
    releaseGate!();
    const r = await reply;
    expect(`${r.status} ${await r.text()}`).toBe(`200 ${BIG_BYTES}`);
    expect(await (await send(agent.port, 'healthy.test', '/')).text()).toBe('ok');
  });

  it('streams a 40 MiB request body through to the origin', async () => {
    const base = `http://127.0.0.1:${origin.port}`;
    const body = new Uint8Array(UPLOAD_BYTES).fill(1);
    const r = await send(agent.port, 'streamer.test', `/upload?origin=${encodeURIComponent(base)}`, { method: 'POST', body });
    expect(`${r.status} ${await r.text()}`).toBe(`200 ${UPLOAD_BYTES}`);
    expect(await (await send(agent.port, 'healthy.test', '/')).text()).toBe('ok');
  });
});
