import { describe, expect, it } from 'vitest';
import { POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { setConditions, transitions } from '../../operator/controllers/conditions.js';
import { place, regionsOf, type NodeInfo } from '../../operator/controllers/placement.js';

const node = (name: string, region: string | undefined, pool: string | undefined): NodeInfo => ({
  name, labels: { ...(region ? { [REGION_LABEL]: region } : {}), ...(pool ? { [POOL_LABEL]: pool } : {}) },
});

const nodes = [
  node('a1', 'eu-west', 'isolate'), node('a2', 'eu-west', 'isolate'), node('g1', 'eu-west', 'gpu'),
  node('b1', 'us-east', 'isolate'),
  node('g2', 'ap-south', 'gpu'), // a region with only GPU nodes
  node('x', undefined, 'isolate'), node('y', 'eu-west', undefined),
];

describe('placement', () => {
  it('groups nodes by region and pool, ignoring unlabelled ones', () => {
    const r = regionsOf(nodes);
    expect(Object.fromEntries(r)).toEqual({
      'eu-west': { isolate: ['a1', 'a2'], gpu: ['g1'] },
      'us-east': { isolate: ['b1'], gpu: [] },
      'ap-south': { isolate: [], gpu: ['g2'] },
    });
  });

  it('places in every region with isolate nodes when none are named', () => {
    expect(place(undefined, regionsOf(nodes), false)).toEqual({ placed: ['eu-west', 'us-east'], missing: [], missingGpu: [], desiredAgents: { 'eu-west': 2, 'us-east': 1 } });
  });

  it('reports named regions without isolate nodes instead of dropping them', () => {
    const p = place(['us-east', 'ap-south', 'mars', 'us-east'], regionsOf(nodes), false);
    expect(p.placed).toEqual(['us-east']);
    expect(p.missing).toEqual(['ap-south', 'mars']);
  });

  it('flags placed regions without GPU nodes when the worker has ai bindings', () => {
    expect(place(['eu-west', 'us-east'], regionsOf(nodes), true).missingGpu).toEqual(['us-east']);
    expect(place(['eu-west', 'us-east'], regionsOf(nodes), false).missingGpu).toEqual([]);
  });
});

describe('conditions', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const t1 = new Date('2026-01-01T00:01:00Z');

  it('moves lastTransitionTime only when the status flips', () => {
    const a = setConditions(undefined, [{ type: 'Ready', status: 'False', reason: 'AgentsNotReady', message: 'x', observedGeneration: 1 }], t0);
    expect(a[0]!.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    const b = setConditions(a, [{ type: 'Ready', status: 'False', reason: 'BundleInvalid', message: 'y', observedGeneration: 2 }], t1);
    expect(b[0]!.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    const c = setConditions(b, [{ type: 'Ready', status: 'True', reason: 'Serving', message: 'z', observedGeneration: 2 }], t1);
    expect(c[0]!.lastTransitionTime).toBe('2026-01-01T00:01:00Z');
  });

  it('names the conditions whose status or reason changed', () => {
    const a = setConditions(undefined, [{ type: 'Ready', status: 'False', reason: 'AgentsNotReady', message: 'x' }, { type: 'Placed', status: 'True', reason: 'Placed', message: 'p' }], t0);
    const b = setConditions(a, [{ type: 'Ready', status: 'False', reason: 'BundleInvalid', message: 'y' }, { type: 'Placed', status: 'True', reason: 'Placed', message: 'p2' }], t1);
    expect(transitions(a, b).map((c) => c.type)).toEqual(['Ready']);
    expect(transitions(undefined, a).map((c) => c.type)).toEqual(['Ready', 'Placed']);
  });
});
