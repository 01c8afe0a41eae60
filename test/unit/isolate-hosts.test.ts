import { describe, expect, it } from 'vitest';
import type { AgentView, ViewChange } from '../../common/agent-view.js';
import { agentOf, isolateHostIndex, isolateHostName, servesNamespace } from '../../common/isolate-hosts.js';
import { actorInstanceKey } from '../../common/keys.js';
import type { Presence } from '../../common/nats.js';
import { ActorRing } from '../../node-agent/actors/ring.js';

// The namespace -> isolate host assignment every process computes alike, and the actor ring
// built on it: an actor's owner is always a process that serves its namespace (one host of
// each agent, or an agent without hosts), never a front.

const base = { region: 'eu-west', ttlMs: 1000, startedAt: '2026-01-01T00:00:00Z', draining: false };
const front = (agent: string, n: number): Presence => ({ ...base, agent, node: agent, address: `http://${agent}.test`, isolateHosts: n });
const host = (agent: string, index: number, count: number): Presence => ({
  ...base, agent: isolateHostName(agent, index), node: agent, address: `http://${agent}.test`, peerAddress: `http://${agent}.test:${9000 + index}`,
  isolateHost: { of: agent, index, count },
});
const plain = (agent: string): Presence => ({ ...base, agent, node: agent, address: `http://${agent}.test`, peerAddress: `http://${agent}.test:9000` });

function view(agents: Presence[]): AgentView {
  return { agents: () => agents, onChange: (_cb: (c: ViewChange) => void) => undefined } as unknown as AgentView;
}

describe('isolate host assignment', () => {
  it('is a stable function of the namespace and the host count', () => {
    // Fixed values: a change here moves every tenant of every agent at the next rollout.
    expect(['default', 'neighbour', 'crasher', 'act'].map((ns) => isolateHostIndex(ns, 2))).toEqual([0, 0, 1, 1]);
    expect(isolateHostIndex('anything', 1)).toBe(0);
    const spread = new Map<number, number>();
    for (let i = 0; i < 4000; i++) { const h = isolateHostIndex(`tenant-${i}`, 4); spread.set(h, (spread.get(h) ?? 0) + 1); }
    for (const n of spread.values()) expect(Math.abs(n - 1000)).toBeLessThan(150);
  });

  it('says which processes serve a namespace and which agent a process belongs to', () => {
    const i = isolateHostIndex('shop', 2);
    expect(servesNamespace(front('a', 2), 'shop')).toBe(false);
    expect(servesNamespace(host('a', i, 2), 'shop')).toBe(true);
    expect(servesNamespace(host('a', 1 - i, 2), 'shop')).toBe(false);
    expect(servesNamespace(plain('c'), 'shop')).toBe(true);
    expect(agentOf(host('a', 1, 2))).toBe('a');
    expect(agentOf(front('a', 2))).toBe('a');
  });
});

describe('actor ring with isolate hosts', () => {
  it('gives each actor to a process serving its namespace: one host per agent, never a front, agents without hosts too', () => {
    const ring = new ActorRing(view([front('a', 2), host('a', 0, 2), host('a', 1, 2), front('b', 2), host('b', 0, 2), host('b', 1, 2), plain('c')]));
    for (const ns of ['neighbour', 'crasher']) {
      const i = isolateHostIndex(ns, 2);
      const owners = new Set<string>();
      for (let k = 0; k < 3000; k++) owners.add(ring.owner('eu-west', actorInstanceKey(ns, 'rooms', k.toString(16).padStart(64, '0')))!.agent);
      expect([...owners].sort()).toEqual([isolateHostName('a', i), isolateHostName('b', i), 'c']);
    }
  });

  it('has no owner for a namespace whose hosts are all gone, even with fronts alive', () => {
    const i = isolateHostIndex('shop', 2);
    const ring = new ActorRing(view([front('a', 2), host('a', 1 - i, 2)]));
    expect(ring.owner('eu-west', actorInstanceKey('shop', 'rooms', '0'.repeat(64)))).toBeUndefined();
  });
});
