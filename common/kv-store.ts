import type { KV } from 'nats';

// The part of a JetStream KV bucket a writer that reads back its own keys needs: the seam
// where code that only gets, puts and purges takes a bucket, so a unit test can hand it the
// in-memory one in common/fake/kv-store.ts instead of a nats-server.

export type KvStore = Pick<KV, 'get' | 'put' | 'purge'>;
