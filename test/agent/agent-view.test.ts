import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentView } from '../../common/agent-view.js';
import { agentKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { connectNats, encodeJson, type EdgeBuckets, type Presence } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { startNats, type TestNats } from '../harness/nats.js';

// The agent view over a real nats-server: liveness on refreshes seen here, whether a refresh
// repeats the last record byte for byte (not parsed again) or changes it.

const REGION = 'view-1';
const quiet = createLogger({}, () => {}, 'error');
let nats: TestNats;
let nc: NatsConnection;
let buckets: EdgeBuckets;
let view: AgentView;

const presence = (agent: string, extra: Partial<Presence> = {}): Presence => ({
  agent, node: `node-${agent}`, region: REGION, address: 'http://127.0.0.1:1/', ttlMs: 600,
  startedAt: '2026-12-04T00:00:00.000Z', draining: false, ...extra,
});
const put = (p: Presence) => buckets.agents.put(agentKey(REGION, p.agent), encodeJson(p));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const names = () => view.agents(REGION).map((p) => p.agent).sort();

beforeAll(async () => {
  nats = await startNats();
  nc = await connectNats(nats.url, 'agent-view test');
  buckets = await provisionNats(nc, { log: quiet });
  view = new AgentView(buckets, quiet, { reports: false });
  await view.start();
}, 60_000);

afterAll(async () => {
  await view?.stop();
  await nc?.close();
  await nats?.stop();
});

describe('agent view', () => {
  it('keeps an agent whose identical refreshes keep coming, drops it a TTL after they stop, and takes a changed one at once', async () => {
    let changes = 0;
    view.onChange((c) => { if (c.all) changes++; });
    await put(presence('a1'));
    await put(presence('a2'));
    for (let i = 0; i < 50 && names().length < 2; i++) await sleep(20);
    expect(names()).toEqual(['a1', 'a2']);
    const afterJoin = changes;
    // Three TTLs of refreshes that repeat the record exactly (a1), and none from a2.
    for (let t = 0; t < 1800; t += 150) {
      await put(presence('a1'));
      await sleep(150);
    }
    expect(names()).toEqual(['a1']);
    // a2 going was a change; a1's repeats were not.
    expect(changes).toBe(afterJoin + 1);
    // A refresh that says something new is read, not taken for a repeat.
    await put(presence('a1', { draining: true }));
    for (let i = 0; i < 50 && !view.agents(REGION)[0]?.draining; i++) await sleep(20);
    expect(view.agents(REGION)[0]).toMatchObject({ agent: 'a1', draining: true });
    expect(changes).toBe(afterJoin + 2);
  }, 30_000);
});
