import { describe, expect, it } from 'vitest';
import { FakeAgentView } from '../../common/fake/agent-view.js';
import { AgentRing } from '../../common/agent-ring.js';
import type { Presence } from '../../common/nats.js';
import { LoadMeter, regionLoads, shardSize, Shards, type ShardRing } from '../../node-agent/serving/shard.js';

// Shards without processes: the same view gives every host the same shard, a host joining
// or leaving moves only its share, and the size follows the load (docs/shards.md).


const presence = (agent: string, region = 'eu-west'): Presence => ({
  agent, node: agent, region, address: `http://${agent}.test:8080`, peerAddress: `http://${agent}.test:9090`, ttlMs: 1000, startedAt: '2026-01-01T00:00:00Z', draining: false,
});

const workers = Array.from({ length: 10_000 }, (_, i) => `tenant-${i % 50}/worker-${i}`);
const names = ['a', 'b', 'c', 'd', 'e', 'f'];

/** Each worker's shard of size n on a ring over `agents`, as one host computes it. */
function shardsOf(agents: string[], n: number, order = agents): Map<string, string> {
  const ring = new AgentRing(new FakeAgentView(order.map((a) => presence(a))));
  expect(ring.size('eu-west', workers[0]!)).toBe(agents.length);
  return new Map(workers.map((w) => [w, ring.members('eu-west', w, n).map((p) => p.agent).sort().join(',')]));
}

describe('shard membership', () => {
  it('is the same on every host for the same view, whatever order it learnt the agents in', () => {
    const one = shardsOf(names, 2);
    const other = shardsOf(names, 2, [...names].reverse());
    expect(other).toEqual(one);
    // Every shard has two distinct members, and load spreads: each host is in about 2/6 of the shards.
    const counts = new Map<string, number>();
    for (const s of one.values()) {
      const m = s.split(',');
      expect(new Set(m).size).toBe(2);
      for (const a of m) counts.set(a, (counts.get(a) ?? 0) + 1);
    }
    for (const n of counts.values()) expect(Math.abs(n - (10_000 * 2) / 6)).toBeLessThan(700);
  });

  it('moves only the leaving or joining host\'s share (about 1/N of the workers per member slot)', () => {
    const six = shardsOf(names, 2);
    const five = shardsOf(names.slice(0, 5), 2);
    let moved = 0;
    for (const w of workers) {
      if (six.get(w) === five.get(w)) continue;
      moved++;
      // A shard that changed had the host that left; the one that stayed is still in it.
      expect(six.get(w)!.split(',')).toContain('f');
      const kept = six.get(w)!.split(',').filter((a) => a !== 'f');
      for (const a of kept) expect(five.get(w)!.split(',')).toContain(a);
    }
    // Shards of size 2 over 6 hosts: a host is in 2/6 of them; only those change.
    const fraction = moved / workers.length;
    expect(fraction).toBeGreaterThan(0.25);
    expect(fraction).toBeLessThan(0.42);
    // A joining host (f back) moves the same share the other way.
    const back = shardsOf(names, 2);
    expect(back).toEqual(six);
  });

  it('grows by appending: a bigger shard keeps the smaller one\'s members', () => {
    const ring = new AgentRing(new FakeAgentView(names.map((a) => presence(a))));
    for (const w of workers.slice(0, 500)) {
      const two = ring.members('eu-west', w, 2).map((p) => p.agent);
      const four = ring.members('eu-west', w, 4).map((p) => p.agent);
      expect(four.slice(0, 2)).toEqual(two);
      expect(ring.members('eu-west', w, 1)[0]!.agent).toBe(ring.owner('eu-west', w)!.agent);
    }
    expect(ring.members('eu-west', workers[0]!, 99)).toHaveLength(6);
  });
});

describe('shard size', () => {
  const policy = { min: 2, max: 5 };
  it('starts at min, one host when the region has one, every host when sharding is off', () => {
    expect(shardSize(policy, 6, 0, undefined)).toBe(2);
    expect(shardSize(policy, 1, 0, undefined)).toBe(1);
    expect(shardSize({ min: 0, max: 5 }, 6, 0, undefined)).toBe(6);
    expect(shardSize(policy, 0, 10, undefined)).toBe(0);
  });

  it('grows with load up to max (and the hosts there are), shrinks one step once it cooled well below', () => {
    let size = shardSize(policy, 6, 0, undefined, 4);
    size = shardSize(policy, 6, 13, size, 4);
    expect(size).toBe(4);
    size = shardSize(policy, 6, 100, size, 4);
    expect(size).toBe(5);
    expect(shardSize(policy, 3, 100, undefined, 4)).toBe(3);
    // Just under the grow point: no shrink (hysteresis).
    size = shardSize(policy, 6, 15, size, 4);
    expect(size).toBe(5);
    size = shardSize(policy, 6, 7, size, 4);
    expect(size).toBe(4);
    size = shardSize(policy, 6, 7, size, 4);
    expect(size).toBe(4);
    for (let i = 0; i < 5; i++) size = shardSize(policy, 6, 0, size, 4);
    expect(size).toBe(2);
  });

  it('is level-triggered: a restarted host computes the same size from the same loads', () => {
    // Grown shards: restarted hosts (current unknown) land on ceil(load / target), as a running one grew to.
    for (const load of [0, 3, 9, 17, 40]) {
      const running = shardSize(policy, 6, load, 2, 4);
      expect(shardSize(policy, 6, load, undefined, 4)).toBe(running);
    }
  });
});

describe('load meter', () => {
  it('publishes only busy workers, smoothed, and forgets idle ones', () => {
    const m = new LoadMeter();
    for (let i = 0; i < 8; i++) m.begin('ns/hot');
    m.begin('ns/warm');
    for (let i = 0; i < 30; i++) m.sample();
    expect(m.published()['ns/hot']).toBeCloseTo(8, 0);
    expect(m.published()['ns/warm']).toBeCloseTo(1, 0);
    for (let i = 0; i < 8; i++) m.end('ns/hot');
    m.end('ns/warm');
    for (let i = 0; i < 60; i++) m.sample();
    expect(m.published()).toEqual({});
  });

  it('sums the region\'s presence loads per worker', () => {
    const loads = regionLoads([{ ...presence('a'), shardLoad: { 'ns/w': 3, 'ns/x': 1 } }, { ...presence('b'), shardLoad: { 'ns/w': 2.5 } }, presence('c')]);
    expect(loads.get('ns/w')).toBe(5.5);
    expect(loads.get('ns/x')).toBe(1);
  });
});

describe('shards on a host', () => {
  function fakeRing(agents: string[]): ShardRing & { set(a: string[]): void } {
    const listeners: (() => void)[] = [];
    let ring = new AgentRing(new FakeAgentView(agents.map((a) => presence(a))));
    return {
      members: (r, k, n, self) => ring.members(r, k, n, self),
      size: (r, k, self) => ring.size(r, k, self),
      onChange: (cb) => { listeners.push(cb); },
      set(a) { ring = new AgentRing(new FakeAgentView(a.map((x) => presence(x)))); for (const l of listeners) l(); },
    };
  }

  it('routes a non-member\'s requests round robin over the members, and a member\'s here', () => {
    const ring = fakeRing(['a', 'b', 'c']);
    const members = ring.members('eu-west', 'ns/w', 2).map((p) => p.agent);
    const outsider = ['a', 'b', 'c'].find((a) => !members.includes(a))!;
    const mine = new Shards({ ring, region: 'eu-west', self: members[0]!, loads: () => new Map() });
    mine.setPolicy('ns/w', { min: 2, max: 3 });
    expect(mine.route('ns/w')).toEqual({ local: true });
    expect(mine.isMember('ns/w')).toBe(true);
    const other = new Shards({ ring, region: 'eu-west', self: outsider, loads: () => new Map() });
    other.setPolicy('ns/w', { min: 2, max: 3 });
    expect(other.isMember('ns/w')).toBe(false);
    const first = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = other.route('ns/w');
      if (r.local) throw new Error('expected a forward');
      expect(r.members.map((p) => p.agent).sort()).toEqual([...members].sort());
      first.add(r.members[0]!.agent);
    }
    expect(first.size).toBe(2);
    // Sharding off for this worker: served here.
    other.setPolicy('ns/w', { min: 0, max: 3 });
    expect(other.route('ns/w')).toEqual({ local: true });
  });

  it('grows the shard to the outsider when the region\'s load says so, and tells the host', () => {
    const ring = fakeRing(['a', 'b', 'c']);
    const members = ring.members('eu-west', 'ns/w', 2).map((p) => p.agent);
    const outsider = ['a', 'b', 'c'].find((a) => !members.includes(a))!;
    let load = 0;
    const s = new Shards({ ring, region: 'eu-west', self: outsider, loads: () => new Map([['ns/w', load]]), targetConcurrency: 4 });
    s.setPolicy('ns/w', { min: 2, max: 3 });
    let told = 0;
    s.onChange(() => { told++; });
    expect(s.isMember('ns/w')).toBe(false);
    load = 11;
    s.refresh();
    expect(s.isMember('ns/w')).toBe(true);
    expect(told).toBe(1);
    load = 0;
    s.refresh();
    expect(s.isMember('ns/w')).toBe(false);
    expect(told).toBe(2);
    // A member leaving the ring: the outsider takes its place.
    ring.set([outsider, members[0]!]);
    expect(s.isMember('ns/w')).toBe(true);
  });

  it('a starting host (its presence not seen yet) counts itself on the ring: it warms its share, not every worker', () => {
    const ring = fakeRing(['a', 'b', 'c', 'd']);
    let pending = true;
    const s = new Shards({ ring, region: 'eu-west', self: 'e', loads: () => new Map(), pendingSelf: () => pending });
    const keys = workers.slice(0, 600);
    for (const k of keys) s.setPolicy(k, { min: 2, max: 3 });
    const before = new Map(keys.map((k) => [k, s.isMember(k)]));
    const mine = [...before.values()].filter(Boolean).length;
    // About 2/5 of the workers, not all of them.
    expect(mine).toBeGreaterThan(600 * 0.25);
    expect(mine).toBeLessThan(600 * 0.55);
    // Never forwarded to itself, and what it forwards goes to the others only.
    for (const k of keys) {
      const r = s.route(k);
      if (!r.local) expect(r.members.map((p) => p.agent)).not.toContain('e');
    }
    // Its presence lands: nothing changes.
    pending = false;
    ring.set(['a', 'b', 'c', 'd', 'e']);
    for (const k of keys) expect(s.isMember(k)).toBe(before.get(k));
  });
});
