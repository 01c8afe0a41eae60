import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createLogger } from '../../common/log.js';
import { Agent } from '../../node-agent/agent.js';
import { send } from '../agent/agent-harness.js';

// JS RPC rides internal requests whose method (EDGE:RPC) is not an HTTP token. A client
// sending that method, or the callback header, straight at the agent's front must never
// reach a worker's RPC methods; a tenant's service binding must never reach another
// namespace's worker, however it names it.

const worker = (name: string, namespace: string, source: string, services?: { name: string; worker: string }[]) => stringify({
  apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace },
  spec: {
    routes: [{ host: `${name}.${namespace}.test` }], placement: { minWarmIsolates: 1 },
    limits: { cpuMsPerRequest: 200, memoryMiB: 64, subrequests: 20, wallMsPerRequest: 10_000 },
    ...(services ? { bindings: { services } } : {}), source: { inline: source },
  },
});

const VICTIM = `
import { WorkerEntrypoint } from 'cloudflare:workers';
export default class extends WorkerEntrypoint {
  secret() { return 'the victim secret'; }
  fetch(request) { return new Response('victim fetch ' + request.method); }
}`;

/** Raw HTTP/1.1, so the method is whatever the attacker writes. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(text));
    let out = '';
    s.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(5000, () => { s.destroy(); resolve(out); });
  });
}

describe('RPC cannot be forged from outside or across tenants', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-rpc-sec-'));
  let agent: Agent;

  beforeAll(async () => {
    writeFileSync(join(dir, 'w.yaml'), [
      worker('victim', 'tenant-a', VICTIM),
      // Tenant B names tenant A's worker every way it can: only its own namespace is looked in.
      worker('attacker', 'tenant-b', `export default { async fetch(request, env) {
        const out = [];
        for (const b of ['BYNAME']) {
          try { out.push(await env[b].secret()); } catch (e) { out.push(e.message); }
          try { out.push(await (await env[b].fetch('http://x/')).text()); } catch (e) { out.push(e.message); }
        }
        return Response.json(out);
      } };`, [{ name: 'BYNAME', worker: 'victim' }]),
    ].join('---\n'));
    agent = await Agent.start({
      log: createLogger({}, () => undefined, 'error'),
      source: { kind: 'directory', dir }, agentName: 'rpc-sec',
      listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000, actorLogReplicas: 1, maxBodyBytes: 1024 * 1024, maxWebSocketMessageBytes: 1024 * 1024, poolSize: 2,
    });
  });

  afterAll(async () => {
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses the RPC method from a client before any worker runs', async () => {
    const body = JSON.stringify({ t: 0, k: 'call', n: 'secret', a: ['A', []] });
    for (const method of ['EDGE:RPC', 'edge:rpc']) {
      const answer = await raw(agent.port, `${method} / HTTP/1.1\r\nHost: victim.tenant-a.test\r\nx-edge-rpc-callbacks: 1\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer).not.toContain('victim secret');
    }
    // The callback header on an ordinary request is just a header.
    const res = await send(agent.port, 'victim.tenant-a.test', '/', { method: 'POST', headers: { 'x-edge-rpc-callbacks': '1' }, body: JSON.stringify({ t: 0, k: 'call', n: 'secret' }) });
    expect(await res.text()).toBe('victim fetch POST');
  });

  it('gives a service binding only the binding worker\'s own namespace', async () => {
    const res = await send(agent.port, 'attacker.tenant-b.test', '/');
    const out = JSON.parse(await res.text()) as string[];
    expect(out.join('\n')).not.toMatch(/victim (secret|fetch)/);
    for (const line of out) expect(line).toMatch(/worker tenant-b\/victim is not served on this agent/);
  });
});
