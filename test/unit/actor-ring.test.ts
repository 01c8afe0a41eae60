import { describe, expect, it } from 'vitest';
import { FakeAgentView } from '../../common/fake/agent-view.js';
import type { Presence } from '../../common/nats.js';
import { ActorRing } from '../../node-agent/actors/ring.js';
import { actorInstanceKey } from '../../common/keys.js';

// The ring on its own: even spread thanks to virtual nodes, minimal movement when an
// agent leaves, draining agents excluded, regions independent.


const presence = (agent: string, region = 'eu-west', draining = false): Presence => ({
  agent, node: agent, region, address: `http://${agent}.test:8080`, ttlMs: 1000, startedAt: '2026-01-01T00:00:00Z', draining,
});

const keys = Array.from({ length: 30_000 }, (_, i) => actorInstanceKey('ns', 'rooms', i.toString(16).padStart(64, '0')));

describe('actor ring', () => {
  it('spreads actors evenly over the agents of a region', () => {
    const ring = new ActorRing(new FakeAgentView(['a', 'b', 'c'].map((n) => presence(n))));
    const counts: Record<string, number> = {};
    for (const k of keys) { const o = ring.owner('eu-west', k)!.agent; counts[o] = (counts[o] ?? 0) + 1; }
    for (const n of Object.values(counts)) expect(Math.abs(n - 10_000)).toBeLessThan(1_500);
  });

  it('moves only the actors of an agent that leaves, and ignores draining agents', () => {
    const v = new FakeAgentView(['a', 'b', 'c'].map((n) => presence(n)));
    const ring = new ActorRing(v);
    let changes = 0;
    ring.onChange(() => { changes++; });
    const before = new Map(keys.map((k) => [k, ring.owner('eu-west', k)!.agent]));
    v.setAgents([presence('a'), presence('b'), presence('c', 'eu-west', true)]);
    expect(changes).toBe(1);
    for (const k of keys) {
      const now = ring.owner('eu-west', k)!.agent;
      expect(now).not.toBe('c');
      if (before.get(k) !== 'c') expect(now).toBe(before.get(k));
    }
  });

  it('keeps regions apart and has no owner where no agent lives', () => {
    const ring = new ActorRing(new FakeAgentView([presence('a', 'eu-west'), presence('z', 'us-east')]));
    expect(ring.owner('eu-west', keys[0]!)?.agent).toBe('a');
    expect(ring.owner('us-east', keys[0]!)?.agent).toBe('z');
    expect(ring.owner('ap-south', keys[0]!)).toBeUndefined();
  });
});
