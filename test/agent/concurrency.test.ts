import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// A worker waiting on subrequests serves many requests at once: the upstream below only
// answers once RELEASE_AT requests are waiting on it together, so the test passes only
// if the agent really has that many in flight for one worker.

const RELEASE_AT = 12;

describe('concurrency of one worker', () => {
  const waiting: ServerResponse[] = [];
  const upstream = createServer((_req, res) => {
    waiting.push(res);
    if (waiting.length >= RELEASE_AT) for (const r of waiting.splice(0)) r.end(`released with ${RELEASE_AT} waiting`);
  });
  let a: TestAgent;

  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const port = (upstream.address() as AddressInfo).port;
    a = await startTestAgent([{
      name: 'proxy',
      source: `export default { async fetch() { const r = await fetch('http://127.0.0.1:${port}/'); return new Response(await r.text()); } }`,
      limits: { subrequests: 1, wallMsPerRequest: 20_000 },
    }]);
  });
  afterAll(async () => {
    for (const r of waiting.splice(0)) r.end('test over');
    upstream.close();
    await a?.stop();
  });

  it(`keeps ${RELEASE_AT} requests waiting on subrequests in flight at once`, async () => {
    const replies = await Promise.all(Array.from({ length: RELEASE_AT }, () => a.get('proxy.test').then(async (r) => `${r.status} ${await r.text()}`)));
    expect(replies).toEqual(Array(RELEASE_AT).fill(`200 released with ${RELEASE_AT} waiting`));
  });
});
