import type { KvEntry } from 'nats';
import type { KvStore } from '../kv-store.js';

// An in-memory KvStore with JetStream's visible rules: every write gets the next revision,
// a purged key reads back as a PURGE marker (not null), and values are bytes.

export class FakeKvStore implements KvStore {
  private readonly entries = new Map<string, KvEntry>();
  private revision = 0;
  /** Every write, in order: what a test asserts when "nothing was written" matters. */
  readonly writes: { op: 'PUT' | 'PURGE'; key: string }[] = [];

  constructor(readonly bucket = 'fake') {}

  get(k: string): Promise<KvEntry | null> {
    return Promise.resolve(this.entries.get(k) ?? null);
  }

  put(k: string, data: Uint8Array | string): Promise<number> {
    const value = typeof data === 'string' ? new TextEncoder().encode(data) : data.slice();
    this.writes.push({ op: 'PUT', key: k });
    return Promise.resolve(this.set(k, 'PUT', value));
  }

  purge(k: string): Promise<void> {
    this.writes.push({ op: 'PURGE', key: k });
    this.set(k, 'PURGE', new Uint8Array());
    return Promise.resolve();
  }

  /** The decoded JSON value of a live key, or undefined when absent or purged. */
  json<T = unknown>(k: string): T | undefined {
    const e = this.entries.get(k);
    return e?.operation === 'PUT' ? e.json<T>() : undefined;
  }

  private set(key: string, operation: KvEntry['operation'], value: Uint8Array): number {
    const revision = ++this.revision;
    const text = () => new TextDecoder().decode(value);
    this.entries.set(key, {
      bucket: this.bucket, key, value, created: new Date(), revision, operation, length: value.length,
      json: <T>() => JSON.parse(text()) as T,
      string: text,
    });
    return revision;
  }
}
