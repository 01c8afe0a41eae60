import { connect, type KV, type KvEntry, type KvWatchOptions, type NatsConnection, type QueuedIterator } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followBucket, type BucketFollower, type WatchableBucket } from '../../common/kv-follower.js';
import { createLogger, type Logger } from '../../common/log.js';
import { startNats, type TestNats } from '../harness/nats.js';
import { waitFor } from '../../cli/local/ports.js';

// followBucket against a real nats-server with JetStream: the initial list and when it is
// declared applied, changes after it, and a watch that is broken (its subscription closed,
// its iterator failing, its consumer deleted, the server restarted) while the bucket is
// written, after which the follower must hold exactly what the bucket holds.

const logLines: string[] = [];
const quietLog: Logger = createLogger({ test: 'kv-follower' }, (l) => { logLines.push(l); });

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A handler keeping what the follower says the bucket holds, and every call in order. */
class Mirror {
  readonly values = new Map<string, string>();
  readonly events: string[] = [];
  readonly handler = {
    put: (key: string, value: Uint8Array) => { this.values.set(key, dec.decode(value)); this.events.push(`put ${key}=${dec.decode(value)}`); },
    delete: (key: string) => { this.values.delete(key); this.events.push(`del ${key}`); },
  };

  plain(): Record<string, string> { return Object.fromEntries([...this.values].sort(([a], [b]) => (a < b ? -1 : 1))); }
}

/** The bucket's real contents (live keys and values), read without a watch. */
async function contents(kv: KV): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of keys.sort()) {
    const e = await kv.get(k);
    if (e && e.operation === 'PUT') out[k] = dec.decode(e.value);
  }
  return out;
}

/** `kv`, with every watch the follower opens kept so a test can break it. */
function breakable(kv: KV): { bucket: WatchableBucket; watches: QueuedIterator<KvEntry>[] } {
  const watches: QueuedIterator<KvEntry>[] = [];
  return {
    watches,
    bucket: { watch: async (opts?: KvWatchOptions) => { const w = await kv.watch(opts); watches.push(w); return w; } },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('followBucket on a real nats-server', () => {
  let nats: TestNats;
  /** The followers' connection. */
  let nc: NatsConnection;
  /** A second client writing the buckets. */
  let writer: NatsConnection;
  let n = 0;
  const followers: BucketFollower[] = [];

  /** A fresh bucket, as the followers' connection and as the writer's. */
  async function bucket(): Promise<{ name: string; kv: KV; w: KV }> {
    const name = `follow-${++n}`;
    const w = await writer.jetstream().views.kv(name, { history: 1 });
    const kv = await nc.jetstream().views.kv(name);
    return { name, kv, w };
  }

  function follow(kv: WatchableBucket, mirror: Mirror, backoffMs = 250): BucketFollower {
    const f = followBucket(kv, mirror.handler, { log: quietLog, name: 'test', backoff: { initialMs: backoffMs, maxMs: backoffMs } });
    followers.push(f);
    return f;
  }

  beforeAll(async () => {
    nats = await startNats();
    // The followers' client waits a while before reconnecting, so the writer gets in first
    // after a server restart.
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 1_000, name: 'kv-follower-test' });
    writer = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100, name: 'kv-follower-writer' });
  });
  afterAll(async () => {
    await Promise.all(followers.map((f) => f.stop()));
    await Promise.all([nc?.close(), writer?.close()]);
    await nats?.stop();
  });

  it('an empty bucket: the initial list is applied at once, and later writes arrive', async () => {
    const { kv, w } = await bucket();
    const m = new Mirror();
    const started = Date.now();
    const f = follow(kv, m);
    await f.initial;
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(m.events).toEqual([]);
    await w.put('a', enc.encode('1'));
    await waitFor('the put after an empty list', async () => m.values.get('a') === '1', 10_000);
    expect(f.stats).toEqual({ lists: 1, restarts: 0 });
  });

  for (const size of [1, 3, 400]) {
    it(`${size} key(s): every value is applied when "initial" resolves, old deletes are not replayed, then changes follow`, async () => {
      const { kv, w } = await bucket();
      const expected: Record<string, string> = {};
      for (let i = 0; i < size; i++) {
        const k = `k${String(i).padStart(4, '0')}`;
        await w.put(k, enc.encode(`v${i}`));
        expected[k] = `v${i}`;
      }
      // Markers of keys deleted before the follower started.
      await w.put('gone1', enc.encode('x'));
      await w.delete('gone1');
      await w.put('gone2', enc.encode('x'));
      await w.purge('gone2');

      const m = new Mirror();
      const f = follow(kv, m);
      // Checked in the same tick as the resolution: no entry may still be queued.
      const atInitial = await f.initial.then(() => m.plain());
      expect(atInitial).toEqual(expected);
      expect(m.events.filter((e) => e.startsWith('del'))).toEqual([]);

      await w.put('k0000', enc.encode('changed'));
      await w.put('new', enc.encode('n'));
      await w.delete('new');
      if (size > 1) await w.purge('k0001');
      await w.put('last', enc.encode('l'));
      await waitFor('the changes after the list', async () => m.values.get('last') === 'l', 10_000);
      expect(m.plain()).toEqual(await contents(w));
      expect(m.events.slice(size)).toEqual(['put k0000=changed', 'put new=n', 'del new', ...(size > 1 ? ['del k0001'] : []), 'put last=l']);
      expect(f.stats).toEqual({ lists: 1, restarts: 0 });
    });
  }

  for (const how of ['closed', 'failed'] as const) {
    it(`a watch ${how === 'closed' ? 'whose subscription is closed' : 'that throws'} is started again and the follower catches up with puts and deletes made meanwhile`, async () => {
      const { name, kv, w } = await bucket();
      for (const k of ['a', 'b', 'c', 'd']) await w.put(k, enc.encode(`${k}1`));
      const m = new Mirror();
      const { bucket: watched, watches } = breakable(kv);
      const f = follow(watched, m, 1_500);
      await f.initial;
      expect(m.plain()).toEqual({ a: 'a1', b: 'b1', c: 'c1', d: 'd1' });

      // Break it; the follower waits 1.5 s before watching again, and the writes land meanwhile.
      const broke = Date.now();
      if (how === 'closed') watches[0]!.stop(); else watches[0]!.stop(new Error('broken on purpose'));
      await w.put('c', enc.encode('c2'));
      await w.put('x', enc.encode('x1'));
      await w.delete('a');
      // Gone without a marker (as after purgeDeletes or a re-created bucket): only a re-list shows it.
      const jsm = await writer.jetstreamManager();
      await jsm.streams.purge(`KV_${name}`, { filter: `$KV.${name}.b` });
      expect(Date.now() - broke).toBeLessThan(1_000);
      expect(watches).toHaveLength(1);

      await waitFor('the follower to catch up', async () => JSON.stringify(m.plain()) === JSON.stringify({ c: 'c2', d: 'd1', x: 'x1' }), 15_000);
      expect(watches).toHaveLength(2);
      expect(f.stats).toEqual({ lists: 2, restarts: 1 });
      // Only the changes: d was not handed over again.
      expect(m.events.slice(4).sort()).toEqual(['del a', 'del b', 'put c=c2', 'put x=x1']);

      // And it follows on after the re-list.
      await w.put('d', enc.encode('d2'));
      await waitFor('a put after the re-list', async () => m.values.get('d') === 'd2', 10_000);
      expect(logLines.some((l) => l.includes(how === 'closed' ? 'KV watch ended; watching again' : 'broken on purpose'))).toBe(true);
    });
  }

  it('a deleted consumer: the ordered consumer is recreated and the follower catches up', async () => {
    const { name, kv, w } = await bucket();
    await w.put('a', enc.encode('a1'));
    await w.put('b', enc.encode('b1'));
    const m = new Mirror();
    const f = follow(kv, m);
    await f.initial;
    const jsm = await writer.jetstreamManager();
    const consumers = await (await jsm.consumers.list(`KV_${name}`)).next();
    expect(consumers).toHaveLength(1);
    await jsm.consumers.delete(`KV_${name}`, consumers[0]!.name);
    await w.put('c', enc.encode('c1'));
    await w.delete('a');
    await sleep(200);
    expect(m.plain()).toEqual({ a: 'a1', b: 'b1' });
    // nats.js notices after two missed idle heartbeats (5 s each).
    await waitFor('the follower to catch up', async () => JSON.stringify(m.plain()) === JSON.stringify({ b: 'b1', c: 'c1' }), 30_000, 100);
    expect(m.plain()).toEqual(await contents(w));
  });

  it('nats-server restarted on the same store: the follower catches up with writes made before it reconnected', async () => {
    const { kv, w } = await bucket();
    for (const k of ['a', 'b', 'c']) await w.put(k, enc.encode(`${k}1`));
    const m = new Mirror();
    const f = follow(kv, m);
    await f.initial;

    await nats.kill9();
    await nats.restart();
    // The writer reconnects within 100 ms; the followers' client waits a second.
    await waitFor('the writer to reconnect', async () => { await w.put('b', enc.encode('b2')); return true; }, 20_000, 100);
    await w.delete('a');
    await w.put('x', enc.encode('x1'));
    await w.purge('c');

    await waitFor('the follower to catch up', async () => JSON.stringify(m.plain()) === JSON.stringify({ b: 'b2', x: 'x1' }), 30_000, 100);
    expect(m.plain()).toEqual(await contents(w));
    await w.put('y', enc.encode('y1'));
    await waitFor('a put after the restart', async () => m.values.get('y') === 'y1', 10_000);
  });

  it('stop(): no handler call after it, and "initial" of a follower stopped first rejects', async () => {
    const { kv, w } = await bucket();
    const m = new Mirror();
    const f = followBucket(kv, m.handler, { log: quietLog, name: 'test' });
    await f.initial;
    await f.stop();
    await w.put('late', enc.encode('1'));
    await sleep(300);
    expect(m.events).toEqual([]);

    // A bucket whose watch never gets through its list.
    const never: WatchableBucket = { watch: () => new Promise(() => undefined) };
    const g = followBucket(never, m.handler, { log: quietLog, name: 'never' });
    await g.stop();
    await expect(g.initial).rejects.toThrow(/stopped before its current values were applied/);
  });
});
