import { describe, expect, it } from 'vitest';
import { CordonPolicy } from '../../node-agent/hosts/cordon.js';

// The cordon's decisions (node-agent/hosts/cordon.ts) from usage reports and a clock.

/** Reports `cores` of CPU for `ns` every 200 ms from `from` to `to` (ms), evaluating after each. */
function run(p: CordonPolicy, load: Record<string, number>, from: number, to: number) {
  const changes = [];
  for (let t = from; t < to; t += 200) {
    p.report(t, Object.fromEntries(Object.entries(load).map(([ns, cores]) => [ns, { cpuMs: cores * 200, requests: 0, limitHits: 0 }])));
    changes.push(...p.evaluate(t));
  }
  return changes;
}

describe('CordonPolicy', () => {
  it('cordons a namespace over its fair share within 2.5 seconds and leaves light neighbours alone', () => {
    const p = new CordonPolicy({ cores: 2 });
    expect(run(p, { hog: 1, light: 0.05, other: 0.1 }, 0, 1000)).toEqual([]);
    const changes = run(p, { hog: 1, light: 0.05, other: 0.1 }, 1000, 2400);
    expect(changes).toEqual([expect.objectContaining({ namespace: 'hog', cordoned: true, reason: 'cpu-share' })]);
    expect(p.cordoned()).toEqual(['hog']);
    run(p, { hog: 1, light: 0.05, other: 0.1 }, 2400, 60_000);
    expect(p.cordoned()).toEqual(['hog']);
  });

  it('does not cordon a light tenant for one burst of requests held up behind someone else', () => {
    const p = new CordonPolicy({ cores: 2 });
    const others = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`t${i}`, 0.2]));
    expect(run(p, { light: 0.15, ...others }, 0, 2000)).toEqual([]);
    // One second at twice its rate (what it sent while stalled arrives at once), then normal.
    expect(run(p, { light: 0.4, ...others }, 2000, 3000)).toEqual([]);
    expect(run(p, { light: 0.15, ...others }, 3000, 10_000)).toEqual([]);
  });

  it('never cordons a tenant that is alone on the node, however busy', () => {
    const p = new CordonPolicy({ cores: 2 });
    expect(run(p, { busy: 1.9 }, 0, 30_000)).toEqual([]);
  });

  it('never cordons a lone tenant for the host work of its requests; does once a neighbour needs the CPU', () => {
    // One core (the agent pinned): 4,000 requests a second of 0.1 ms each are charged 2.4
    // cores, over the node's whole share, but nobody else is there to protect.
    const p = new CordonPolicy({ cores: 1 });
    const changes = [];
    for (let t = 0; t < 10_000; t += 200) {
      p.report(t, { busy: { cpuMs: 80, requests: 800, limitHits: 0 } });
      changes.push(...p.evaluate(t));
    }
    expect(changes).toEqual([]);
    for (let t = 10_000; t < 13_000; t += 200) {
      p.report(t, { busy: { cpuMs: 80, requests: 800, limitHits: 0 }, neighbour: { cpuMs: 10, requests: 5, limitHits: 0 } });
      changes.push(...p.evaluate(t));
    }
    expect(changes).toEqual([expect.objectContaining({ namespace: 'busy', cordoned: true, reason: 'cpu-share' })]);
  });

  it('does not cordon two busy tenants that share the node evenly', () => {
    const p = new CordonPolicy({ cores: 2 });
    expect(run(p, { a: 0.9, b: 0.9 }, 0, 30_000)).toEqual([]);
  });

  it('does not cordon tenants sharing evenly whose charged requests add up to more than the node', () => {
    // 2,000 requests a second each at 0.15 ms: charged 1.3 cores each on a 2-core node.
    const p = new CordonPolicy({ cores: 2 });
    const changes = [];
    for (let t = 0; t < 20_000; t += 200) {
      p.report(t, { a: { cpuMs: 60, requests: 400, limitHits: 0 }, b: { cpuMs: 60, requests: 400, limitHits: 0 } });
      changes.push(...p.evaluate(t));
    }
    expect(changes).toEqual([]);
  });

  it('cordons at once on a limit kill, releases after the hold, and doubles the hold on a repeat', () => {
    const p = new CordonPolicy({ cores: 2, holdMs: 10_000 });
    p.report(0, { bomb: { cpuMs: 5, requests: 1, limitHits: 1 } });
    expect(p.evaluate(0)).toEqual([expect.objectContaining({ namespace: 'bomb', cordoned: true, reason: 'limit-hit' })]);
    expect(p.evaluate(9_999)).toEqual([]);
    expect(p.evaluate(10_000)).toEqual([expect.objectContaining({ namespace: 'bomb', cordoned: false })]);
    p.report(11_000, { bomb: { cpuMs: 5, requests: 1, limitHits: 1 } });
    expect(p.evaluate(11_000)).toHaveLength(1);
    expect(p.evaluate(30_999)).toEqual([]);
    expect(p.evaluate(31_000)).toEqual([expect.objectContaining({ namespace: 'bomb', cordoned: false })]);
  });

  it('charges each request the host work it costs, so a flood of cheap requests counts', () => {
    const p = new CordonPolicy({ cores: 2 });
    const changes = [];
    for (let t = 0; t < 4000; t += 200) {
      // 640 requests a second of 0.05 ms each beside seven light tenants: 0.35 cores, over a
      // share of 0.25 that its isolate CPU alone (0.03) would never reach.
      const light = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`light${i}`, { cpuMs: 4, requests: 10, limitHits: 0 }]));
      p.report(t, { flood: { cpuMs: 6.4, requests: 128, limitHits: 0 }, ...light });
      changes.push(...p.evaluate(t));
    }
    expect(changes).toEqual([expect.objectContaining({ namespace: 'flood', cordoned: true, reason: 'cpu-share' })]);
  });

  it('sends a released tenant back at once when it is over its share again (probation)', () => {
    const p = new CordonPolicy({ cores: 2, holdMs: 5_000 });
    const others = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`t${i}`, 0.05]));
    run(p, { hog: 1, ...others }, 0, 3000);
    expect(p.isCordoned('hog')).toBe(true);
    // Starved in the cordon it looks light; released after the hold...
    const out = run(p, { hog: 0.1, ...others }, 3000, 9000);
    expect(out).toEqual([expect.objectContaining({ namespace: 'hog', cordoned: false })]);
    // ...and home again over its share (0.25 of a core here, but under twice that) it is back
    // as soon as its rate shows it, not 1.5 s later.
    const back = run(p, { hog: 0.4, ...others }, 9000, 10_000);
    expect(back).toEqual([expect.objectContaining({ namespace: 'hog', cordoned: true })]);
  });

  it('keeps holding while the offences go on, and counts each kill once', () => {
    const p = new CordonPolicy({ cores: 2, holdMs: 1_000 });
    for (let t = 0; t < 5_000; t += 500) {
      p.report(t, { bomb: { cpuMs: 1, requests: 1, limitHits: 1 } });
      p.evaluate(t);
      expect(p.isCordoned('bomb')).toBe(true);
    }
    expect(p.evaluate(5_000)).toEqual([]);
    expect(p.evaluate(6_000)).toEqual([expect.objectContaining({ cordoned: false })]);
  });
});
