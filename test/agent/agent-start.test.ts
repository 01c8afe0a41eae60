import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../cli/local/ports.js';
import { createLogger } from '../../common/log.js';
import { Agent, type AgentConfig } from '../../node-agent/agent.js';
import { workerManifest } from './agent-harness.js';

// The composition root owns start order, so it also owns a start that fails half-way: what
// it had started (here the admin port, the worker server and its isolate pool) is undone,
// and the error is the one that stopped it.

const refused = (port: number) => new Promise<boolean>((resolve) => {
  const s = connect(port, '127.0.0.1');
  s.once('connect', () => { s.destroy(); resolve(false); });
  s.once('error', () => resolve(true));
});

describe('Agent.start', () => {
  const holders: Server[] = [];
  afterAll(() => { for (const h of holders) h.close(); });

  it('undoes what it started when a later step fails, and rethrows that step\'s error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-agent-start-'));
    writeFileSync(join(dir, 'hello.yaml'), workerManifest({ name: 'hello', source: 'export default { fetch() { return new Response("hi") } }' }));
    // The HTTP front's port is taken, so the start fails after the admin port is listening.
    const taken = createServer();
    holders.push(taken);
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const listenPort = (taken.address() as { port: number }).port;
    const adminPort = await freePort();
    const cfg: AgentConfig = {
      log: createLogger({}, () => {}, 'error'),
      source: { kind: 'directory', dir },
      agentName: 'standalone',
      listen: { host: '127.0.0.1', port: listenPort },
      admin: { host: '127.0.0.1', port: adminPort },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 1,
    };
    await expect(Agent.start(cfg)).rejects.toThrow(/EADDRINUSE/);
    expect(await refused(adminPort)).toBe(true);

    // With the port free, the same config starts and serves.
    const free = await freePort();
    const agent = await Agent.start({ ...cfg, listen: { host: '127.0.0.1', port: free } });
    try {
      expect(await refused(adminPort)).toBe(false);
    } finally {
      await agent.stop();
    }
    expect(await refused(adminPort)).toBe(true);
  });
});
