import { describe, expect, it } from 'vitest';
import { checkListAppend, longestUnavailability, type Op } from '../chaos/checker.js';

// The chaos test's checker against hand-built histories: clean ones pass, and each
// injected anomaly is caught as its own kind (and as nothing else).

let t = 0;
const at = () => (t += 10);
function append(key: string, value: string, list: string[] | undefined, outcome: Op['outcome'] = 'ok', p = 0): Op {
  const invokeMs = at();
  return { process: p, type: 'append', key, value, invokeMs, completeMs: at(), outcome, ...(outcome === 'ok' ? { list } : {}) };
}
function read(key: string, list: string[] | undefined, opts: { final?: boolean; outcome?: Op['outcome']; p?: number } = {}): Op {
  const invokeMs = at();
  const outcome = opts.outcome ?? 'ok';
  return { process: opts.p ?? 1, type: 'read', key, invokeMs, completeMs: at(), outcome, ...(outcome === 'ok' ? { list } : {}), ...(opts.final ? { final: true } : {}) };
}
const kinds = ['lost', 'duplicated', 'forked', 'stale', 'reordered', 'phantom', 'failedApplied'] as const;
function only(h: Op[], kind?: (typeof kinds)[number]) {
  const r = checkListAppend(h);
  for (const k of kinds) if (k !== kind) expect(r[k], `${k}: ${JSON.stringify(r.examples)}`).toBe(0);
  if (kind) expect(r[kind]).toBeGreaterThan(0);
  return r;
}

describe('list-append checker', () => {
  it('passes a clean sequential history', () => {
    const r = only([
      append('k', 'a', ['a']),
      read('k', ['a']),
      append('k', 'b', ['a', 'b']),
      append('j', 'x', ['x']),
      read('k', ['a', 'b'], { final: true }),
      read('j', ['x'], { final: true }),
    ]);
    expect(r).toMatchObject({ ops: 6, ok: 6, acked: 3, failed: 0, unknown: 0, keysWithoutFinal: [] });
  });

  it('passes concurrent ops seen in either order, and unknown appends present or absent', () => {
    // b and c overlap in time: either order is linearizable.
    const b: Op = { process: 0, type: 'append', key: 'k', value: 'b', invokeMs: 100, completeMs: 200, outcome: 'ok', list: ['a', 'c', 'b'] };
    const c: Op = { process: 1, type: 'append', key: 'k', value: 'c', invokeMs: 110, completeMs: 150, outcome: 'ok', list: ['a', 'c'] };
    // A read concurrent with c's append need not see it.
    const r1: Op = { process: 2, type: 'read', key: 'k', invokeMs: 120, completeMs: 130, outcome: 'ok', list: ['a'] };
    const u1: Op = { process: 3, type: 'append', key: 'k', value: 'u1', invokeMs: 300, completeMs: 400, outcome: 'unknown' };
    const u2: Op = { process: 3, type: 'append', key: 'k', value: 'u2', invokeMs: 500, completeMs: 600, outcome: 'unknown' };
    const f: Op = { process: 4, type: 'append', key: 'k', value: 'f', invokeMs: 500, completeMs: 600, outcome: 'fail' };
    const final: Op = { process: 2, type: 'read', key: 'k', invokeMs: 700, completeMs: 710, outcome: 'ok', list: ['a', 'c', 'b', 'u2'], final: true };
    const a: Op = { process: 0, type: 'append', key: 'k', value: 'a', invokeMs: 0, completeMs: 50, outcome: 'ok', list: ['a'] };
    const r = only([a, b, c, r1, u1, u2, f, final]);
    expect(r).toMatchObject({ unknown: 2, failed: 1, acked: 3 });
  });

  it('catches a lost append: acknowledged, missing from the final read', () => {
    const r = only([append('k', 'a', ['a']), append('k', 'b', ['a', 'b']), read('k', ['a'], { final: true })], 'lost');
    expect(r.lost).toBe(1);
    expect(r.examples[0]).toMatchObject({ kind: 'lost', key: 'k' });
  });

  it('catches a duplicated value', () => {
    const r = only([append('k', 'a', ['a']), append('k', 'b', ['a', 'b']), read('k', ['a', 'b', 'b'], { final: true })], 'duplicated');
    expect(r.duplicated).toBe(1);
  });

  it('catches a fork: two reads neither a prefix of the other', () => {
    const h = [append('k', 'a', ['a']), append('k', 'b', ['a', 'b'], 'unknown'), append('k', 'c', ['a', 'c'], 'unknown')];
    // Reads with unknown appends in different orders: two histories of the key.
    h.push(read('k', ['a', 'b']), read('k', ['a', 'c']));
    const r = checkListAppend(h);
    expect(r.forked).toBe(1);
    expect(r.lost + r.duplicated + r.phantom).toBe(0);
  });

  it('catches a stale read: invoked after an ack, missing it, though the key still has it', () => {
    const r = only([
      append('k', 'a1', ['a1']),
      append('k', 'a2', ['a1', 'a2'], 'ok', 1),
      read('k', ['a1'], { p: 2 }), // the paused owner's superseded state
      read('k', ['a1', 'a2'], { final: true }),
    ], 'stale');
    expect(r).toMatchObject({ stale: 1, staleMaxMissing: 1 });
  });

  it('catches a stale append result (the list an append returns is a read too)', () => {
    const r = checkListAppend([
      append('k', 'a1', ['a1']),
      append('k', 'a2', ['a1', 'a2']),
      append('k', 'a3', ['a1', 'a3'], 'unknown'), // not acked: the list it would have returned is not looked at
      append('k', 'a4', ['a1', 'a4']), // acked on a state missing a2
      read('k', ['a1', 'a2', 'a4'], { final: true }),
    ]);
    expect(r).toMatchObject({ stale: 1, forked: 1, lost: 0, duplicated: 0, phantom: 0 });
  });

  it('catches a real-time reorder in the final list', () => {
    const a: Op = { process: 0, type: 'append', key: 'k', value: 'a', invokeMs: 0, completeMs: 10, outcome: 'unknown' };
    const b: Op = { process: 1, type: 'append', key: 'k', value: 'b', invokeMs: 20, completeMs: 30, outcome: 'ok', list: ['b'] };
    // a's outcome was unknown: it may apply late, but not before b, which was acked before...
    // ...a third append c invoked after b's ack must come after b.
    const c: Op = { process: 2, type: 'append', key: 'k', value: 'c', invokeMs: 40, completeMs: 50, outcome: 'unknown' };
    const final: Op = { process: 3, type: 'read', key: 'k', invokeMs: 60, completeMs: 70, outcome: 'ok', list: ['c', 'b', 'a'], final: true };
    const r = checkListAppend([a, b, c, final]);
    expect(r.reordered).toBe(1);
    expect(r.lost + r.duplicated + r.stale).toBe(0);
  });

  it('catches a phantom value and a failed append that was applied', () => {
    only([append('k', 'a', ['a']), read('k', ['a', 'zz'], { final: true })], 'phantom');
    only([append('k', 'a', ['a']), append('k', 'b', undefined, 'fail'), read('k', ['a', 'b'], { final: true })], 'failedApplied');
  });

  it('uses the longest list seen when a key has no final read, and says so', () => {
    const r = checkListAppend([append('k', 'a', ['a']), append('k', 'b', ['a', 'b'])]);
    expect(r).toMatchObject({ lost: 0, keysWithoutFinal: ['k'] });
  });

  it('measures the longest stretch without an ok op per key inside a window', () => {
    const op = (key: string, completeMs: number, outcome: Op['outcome'] = 'ok'): Op => ({ process: 0, type: 'read', key, invokeMs: completeMs - 1, completeMs, outcome, list: [] });
    const h = [op('a', 100), op('a', 200), op('a', 900), op('b', 150), op('b', 300), op('b', 500, 'fail'), op('b', 2000)];
    expect(longestUnavailability(h, 0, 1000)).toEqual({ key: 'b', ms: 1700 });
    expect(longestUnavailability(h, 0, 250)).toEqual({ key: 'a', ms: 700 });
    // A key with nothing ok after the window opened was down until the window closed.
    expect(longestUnavailability([op('c', 10)], 100, 400)).toEqual({ key: 'c', ms: 300 });
  });
});
