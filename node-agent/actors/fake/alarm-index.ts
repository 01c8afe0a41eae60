import type { KvEntry, KvWatchOptions, Payload, QueuedIterator } from 'nats';
import type { AlarmIndexPort } from '../alarms.js';

// KV `edge-actor-alarms` in memory: put, purge, and watchers that get the current values,
// then initializedFn, then every later change, as a JetStream KV watch delivers them.

const enc = new TextEncoder();
const dec = new TextDecoder();

class FakeWatch implements QueuedIterator<KvEntry> {
  private readonly queue: KvEntry[] = [];
  private wake: (() => void) | undefined;
  private stopped = false;
  private processed = 0;
  private received = 0;

  constructor(private readonly onStop: () => void) {}

  push(e: KvEntry): void {
    if (this.stopped) return;
    this.received += 1;
    this.queue.push(e);
    this.wake?.();
  }

  stop(): void {
    this.stopped = true;
    this.onStop();
    this.wake?.();
  }

  getProcessed(): number { return this.processed; }
  getPending(): number { return this.queue.length; }
  getReceived(): number { return this.received; }

  async *[Symbol.asyncIterator](): AsyncIterator<KvEntry> {
    for (;;) {
      const e = this.queue.shift();
      if (e) { this.processed += 1; yield e; continue; }
      if (this.stopped) return;
      await new Promise<void>((r) => { this.wake = r; });
      this.wake = undefined;
    }
  }
}

export class FakeAlarmIndex implements AlarmIndexPort {
  private readonly values = new Map<string, KvEntry>();
  private readonly watches = new Set<FakeWatch>();
  private revision = 0;
  /** Every write, in order: what the alarms asked the index to remember. */
  readonly writes: { op: 'put' | 'purge'; key: string; value?: unknown }[] = [];

  async put(key: string, data: Payload): Promise<number> {
    const value = typeof data === 'string' ? enc.encode(data) : data;
    this.writes.push({ op: 'put', key, value: JSON.parse(dec.decode(value)) as unknown });
    return this.emit(key, 'PUT', value);
  }

  async purge(key: string): Promise<void> {
    this.writes.push({ op: 'purge', key });
    this.emit(key, 'PURGE', new Uint8Array(0));
  }

  async watch(opts: KvWatchOptions = {}): Promise<QueuedIterator<KvEntry>> {
    if (opts.key !== undefined && opts.key !== '>') throw new Error(`FakeAlarmIndex watches every key ('>'), not ${String(opts.key)}`);
    const w = new FakeWatch(() => this.watches.delete(w));
    for (const e of this.values.values()) w.push(e);
    this.watches.add(w);
    opts.initializedFn?.();
    return w;
  }

  /** Open watches (a stopped component leaves none). */
  get watchers(): number { return this.watches.size; }

  private emit(key: string, operation: KvEntry['operation'], value: Uint8Array): number {
    this.revision += 1;
    const e: KvEntry = {
      bucket: 'edge-actor-alarms', key, value, created: new Date(), revision: this.revision, operation, length: value.byteLength,
      json: <T>() => JSON.parse(dec.decode(value)) as T,
      string: () => dec.decode(value),
    };
    if (operation === 'PUT') this.values.set(key, e); else this.values.delete(key);
    for (const w of this.watches) w.push(e);
    return this.revision;
  }
}
