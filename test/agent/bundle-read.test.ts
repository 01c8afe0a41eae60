import { randomBytes } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import { BUNDLES_BUCKET, connectNats, readObjectDirect, type EdgeBuckets } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { startNats, type TestNats } from '../harness/nats.js';

// The agent reads bundles with message gets (readObjectDirect), not ObjectStore.get(), which
// leaves an ephemeral consumer on the server per call: 10,000 bundles at an agent's start ran
// into the server's consumer limit (issue 17's bench). Same bytes as the object store's own
// reader, for one-chunk and many-chunk objects; absent and deleted objects are null; and
// reading many leaves no consumer behind.

let nats: TestNats;
let nc: NatsConnection;
let buckets: EdgeBuckets;

beforeAll(async () => {
  nats = await startNats();
  nc = await connectNats(nats.url, 'bundle read test');
  buckets = await provisionNats(nc, { log: createLogger({}, () => undefined) });
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

describe('readObjectDirect', () => {
  it('reads what the object store holds, one chunk or many, and null for absent and deleted objects', async () => {
    const jsm = await nc.jetstreamManager();
    const small = new TextEncoder().encode('export default { fetch() { return new Response("hi") } }');
    // Over the object store's 128 KiB chunk: three chunks, the last a short one.
    const big = randomBytes(128 * 1024 * 2 + 1234);
    const empty = new Uint8Array(0);
    await buckets.bundles.putBlob({ name: 'sha256:small' }, small);
    await buckets.bundles.putBlob({ name: 'sha256:big+/=' }, big);
    await buckets.bundles.putBlob({ name: 'sha256:empty' }, empty);
    await buckets.bundles.putBlob({ name: 'sha256:gone' }, small);
    await buckets.bundles.delete('sha256:gone');
    // Rewritten: the newest version is read, not the first chunk subject's.
    await buckets.bundles.putBlob({ name: 'sha256:small' }, new TextEncoder().encode('v2'));
    expect(Buffer.from((await readObjectDirect(jsm, BUNDLES_BUCKET, 'sha256:small'))!).toString()).toBe('v2');
    expect(Buffer.from((await readObjectDirect(jsm, BUNDLES_BUCKET, 'sha256:big+/='))!).equals(big)).toBe(true);
    expect(Buffer.from((await buckets.bundles.getBlob('sha256:big+/='))!).equals(big)).toBe(true);
    expect((await readObjectDirect(jsm, BUNDLES_BUCKET, 'sha256:empty'))?.length).toBe(0);
    expect(await readObjectDirect(jsm, BUNDLES_BUCKET, 'sha256:gone')).toBeNull();
    expect(await readObjectDirect(jsm, BUNDLES_BUCKET, 'sha256:never')).toBeNull();
  });

  it('leaves no consumer behind, where getBlob leaves one per read', async () => {
    const jsm = await nc.jetstreamManager();
    await buckets.bundles.putBlob({ name: 'sha256:many' }, new TextEncoder().encode('x'.repeat(100)));
    const consumers = async () => (await jsm.streams.info(`OBJ_${BUNDLES_BUCKET}`)).state.consumer_count;
    const before = await consumers();
    for (let i = 0; i < 50; i++) expect((await readObjectDirect(jsm, BUNDLES_BUCKET, 'sha256:many'))?.length).toBe(100);
    expect(await consumers()).toBe(before);
    for (let i = 0; i < 5; i++) await buckets.bundles.getBlob('sha256:many');
    // The comparison that shows why: the object store's reader leaves its ordered consumers.
    expect(await consumers()).toBeGreaterThan(before);
  });
});
