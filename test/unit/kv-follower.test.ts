import type { KvEntry, KvWatchOptions, QueuedIterator } from 'nats';
import { describe, expect, it } from 'vitest';
import { followBucket, type WatchableBucket } from '../../common/kv-follower.js';
import { createLogger } from '../../common/log.js';

// followBucket against watches scripted to signal "initialized" in each of the two ways
// nats.js 2.29 does (jetstream/kv.js watch()): from inside watch(), before the iterator is
// returned and before any value was iterated; or as a marker queued behind the last value.
// A local nats-server takes the second path unless the bucket is empty, so only a script
// reaches the first with values in it. test/agent/kv-follower.test.ts runs the real thing.

const enc = new TextEncoder();
const dec = new TextDecoder();

function entry(key: string, value: string | null, revision: number): KvEntry {
  const operation: KvEntry['operation'] = value === null ? 'DEL' : 'PUT';
  const bytes = enc.encode(value ?? '');
  return {
    bucket: 'scripted', key, value: bytes, created: new Date(), revision, delta: 0, operation, length: bytes.length,
    json: () => JSON.parse(dec.decode(bytes)) as unknown, string: () => dec.decode(bytes),
  } as KvEntry;
}

/** An iterator shaped like nats.js's QueuedIteratorImpl: values and callbacks in one queue. */
class ScriptedWatch {
  private readonly queue: (KvEntry | (() => void))[] = [];
  private waiting: (() => void) | undefined;
  private done = false;
  private err: Error | undefined;
  private received = 0;

  push(v: KvEntry | (() => void)): void {
    if (typeof v !== 'function') this.received++;
    this.queue.push(v);
    this.waiting?.();
  }

  getReceived(): number { return this.received; }

  stop(err?: Error): void {
    this.done = true;
    this.err = err;
    this.waiting?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<KvEntry> {
    for (;;) {
      while (this.queue.length === 0 && !this.done) await new Promise<void>((r) => { this.waiting = r; });
      this.waiting = undefined;
      if (this.err) throw this.err;
      const next = this.queue.shift();
      if (next === undefined) return;
      if (typeof next === 'function') { next(); continue; }
      yield next;
    }
  }
}

type Signal = 'inline' | 'queued';

/** A bucket whose n-th watch delivers `lists[n]` and signals "initialized" as `signal[n]` says. */
function scripted(lists: KvEntry[][], signal: Signal[]): { bucket: WatchableBucket; watches: ScriptedWatch[] } {
  const watches: ScriptedWatch[] = [];
  const bucket: WatchableBucket = {
    watch: (opts?: KvWatchOptions) => {
      const i = watches.length;
      const w = new ScriptedWatch();
      watches.push(w);
      for (const e of lists[i] ?? []) w.push(e);
      const fn = opts?.initializedFn ?? (() => undefined);
      if (signal[i] === 'inline') fn(); else w.push(fn);
      return Promise.resolve(w as unknown as QueuedIterator<KvEntry>);
    },
  };
  return { bucket, watches };
}

function mirror(): { values: Map<string, string>; events: string[]; handler: { put(k: string, v: Uint8Array): void; delete(k: string): void } } {
  const values = new Map<string, string>();
  const events: string[] = [];
  return {
    values,
    events,
    handler: {
      put: (k, v) => { values.set(k, dec.decode(v)); events.push(`put ${k}=${dec.decode(v)}`); },
      delete: (k) => { values.delete(k); events.push(`del ${k}`); },
    },
  };
}

const quiet = createLogger({}, () => undefined);
const settle = () => new Promise((r) => setTimeout(r, 20));

describe('followBucket: when the initial values count as applied', () => {
  for (const signal of ['inline', 'queued'] as const) {
    it(`signalled ${signal}: "initial" resolves only after every listed value was handed over`, async () => {
      const { bucket } = scripted([[entry('a', '1', 1), entry('gone', null, 2), entry('b', '2', 3), entry('c', '3', 4)]], [signal]);
      const m = mirror();
      const f = followBucket(bucket, m.handler, { log: quiet, name: 'scripted' });
      const atInitial = await f.initial.then(() => Object.fromEntries(m.values));
      expect(atInitial).toEqual({ a: '1', b: '2', c: '3' });
      // The DEL marker of a key never handed over is no delete.
      expect(m.events).toEqual(['put a=1', 'put b=2', 'put c=3']);
      await f.stop();
    });
  }

  it('signalled inline on an empty bucket: "initial" resolves with nothing iterated', async () => {
    const { bucket } = scripted([[]], ['inline']);
    const f = followBucket(bucket, mirror().handler, { log: quiet, name: 'scripted' });
    await f.initial;
    expect(f.stats).toEqual({ lists: 1, restarts: 0 });
    await f.stop();
  });
});

describe('followBucket: re-lists', () => {
  it('after a watch ends: unchanged keys are not handed over again, changed ones are, vanished ones are deleted', async () => {
    const { bucket, watches } = scripted([
      [entry('a', '1', 1), entry('b', '1', 2), entry('c', '1', 3)],
      // b rewritten, c gone without a marker, d new; a unchanged (same revision).
      [entry('a', '1', 1), entry('b', '2', 5), entry('d', '1', 6)],
    ], ['queued', 'inline']);
    const m = mirror();
    const f = followBucket(bucket, m.handler, { log: quiet, name: 'scripted', backoff: { initialMs: 1, maxMs: 1 } });
    await f.initial;
    watches[0]!.stop();
    for (let i = 0; i < 100 && f.stats.lists < 2; i++) await settle();
    expect(f.stats).toEqual({ lists: 2, restarts: 1 });
    expect(Object.fromEntries(m.values)).toEqual({ a: '1', b: '2', d: '1' });
    expect(m.events.slice(3)).toEqual(['put b=2', 'put d=1', 'del c']);
    // Changes after the re-list still arrive.
    watches[1]!.push(entry('a', null, 7));
    await settle();
    expect(m.events.at(-1)).toBe('del a');
    await f.stop();
  });

  it('backs off between failing watches, doubling up to the maximum, and stops retrying on stop()', async () => {
    let calls = 0;
    const times: number[] = [];
    const failing: WatchableBucket = { watch: () => { calls++; times.push(Date.now()); return Promise.reject(new Error('no JetStream')); } };
    const lines: string[] = [];
    const f = followBucket(failing, mirror().handler, { log: createLogger({}, (l) => { lines.push(l); }), name: 'failing', backoff: { initialMs: 20, maxMs: 80 } });
    await new Promise((r) => setTimeout(r, 400));
    await f.stop();
    const after = calls;
    await new Promise((r) => setTimeout(r, 200));
    expect(calls).toBe(after);
    // 0, 20, 60, 140, 220, 300, 380 ms: about 7 tries in 400 ms, not hundreds.
    expect(calls).toBeGreaterThanOrEqual(4);
    expect(calls).toBeLessThanOrEqual(8);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps[0]).toBeGreaterThanOrEqual(15);
    expect(Math.max(...gaps)).toBeLessThan(300);
    expect(gaps.at(-1)).toBeGreaterThanOrEqual(70);
    expect(lines.some((l) => l.includes('KV watch failed; watching again') && l.includes('no JetStream'))).toBe(true);
    await expect(f.initial).rejects.toThrow(/stopped before/);
  });

  it('a handler that throws is logged and the follower goes on', async () => {
    const { bucket } = scripted([[entry('bad', '1', 1), entry('good', '1', 2)]], ['queued']);
    const seen: string[] = [];
    const lines: string[] = [];
    const f = followBucket(bucket, {
      put: (k) => { if (k === 'bad') throw new Error('cannot apply'); seen.push(k); },
      delete: () => undefined,
    }, { log: createLogger({}, (l) => { lines.push(l); }), name: 'scripted' });
    await f.initial;
    expect(seen).toEqual(['good']);
    expect(lines.some((l) => l.includes('KV handler failed on a put') && l.includes('cannot apply'))).toBe(true);
    await f.stop();
  });
});
