import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { ActorState } from '../../common/actor-ops.js';
import { ActorStorage, decodeValue, encodeValue, type ActorStorageOptions } from './actor-storage.js';

// The host side of a SQLite-backed actor's storage (DurableActor spec.storage.backend:
// sqlite). The database itself runs in the actor's isolate (node-agent/shim/sql.js, sql.js
// in WebAssembly); what lives here is its durable form, in the same actor log as KV
// writes, as reserved keys of an ActorStorage:
//
//   sql.db          the database file as of the last snapshot (absent before the first)
//   sql.log.<n>     one statement that wrote, after it: { sql, params, seed, time }
//                   (V8-serialized), n zero-padded so key order is log order
//
// A request's statements are put ops of its one fenced commit (the output gate), with its
// alarm op: nothing reaches the log before the request ends, and a rollback
// (transactionSync, a reset) drops them with the rest. A new activation is handed the
// snapshot and the entries after it (sqlInit) and replays them. Snapshots: when the log
// since the last one has grown past a threshold, the host asks the isolate for the
// database file (sqlCheckpoint) right after a commit, and the actor log's compaction
// writes sql.db alone (the entries it covers are dropped), so replay stays bounded.
//
// User KV (ctx.storage.get/put...) never reaches these keys: for a SQLite-backed class it
// lives in the database's _cf_KV table.

export const SQL_DB_KEY = 'sql.db';
export const SQL_LOG_PREFIX = 'sql.log.';
const INDEX_DIGITS = 12;

/** A snapshot is taken once the log since the last one holds this many bytes (or half the database, if more)... */
export const SQL_SNAPSHOT_LOG_BYTES = 1024 * 1024;
/** ...or this many statements... */
export const SQL_SNAPSHOT_LOG_ENTRIES = 1000;
/**
 * ...or statements that took this long to run (wall time, an upper bound of their CPU):
 * replay must fit in the budget a new activation opens the database with (the startup
 * budget plus one request's, node-agent/actors/isolate.ts).
 */
export const SQL_SNAPSHOT_LOG_MS = 300;

/** One logged statement: replayed exactly as it ran (the PRNG seed and 'now' it saw). */
export interface SqlLogEntry {
  sql: string;
  params: (string | number | bigint | null | Uint8Array)[];
  seed: number;
  time: number;
  /** How long it took to run (ms), what replay will take about. */
  ms?: number;
}

export interface SqlStorageOptions extends ActorStorageOptions {
  /**
   * The largest log entry (one statement: its SQL and bindings): a request's writes are one
   * commit, one NATS message. Default 900 KiB (NATS's default max_payload is 1 MiB).
   */
  maxEntryBytes?: number;
  /** Snapshot thresholds (tests lower them). */
  snapshotLogBytes?: number;
  snapshotLogEntries?: number;
}

let wasmBytes: Uint8Array | undefined;
/** sql.js's WebAssembly module, read once per process; each activation compiles it in its isolate. */
function sqlWasm(): Uint8Array {
  wasmBytes ??= new Uint8Array(readFileSync(createRequire(import.meta.url).resolve('sql.js/dist/sql-wasm.wasm')));
  return wasmBytes;
}

const indexKey = (n: number) => SQL_LOG_PREFIX + String(n).padStart(INDEX_DIGITS, '0');

function checkEntry(e: unknown): SqlLogEntry {
  const x = e as Partial<SqlLogEntry> | null;
  if (x === null || typeof x !== 'object' || typeof x.sql !== 'string' || !Array.isArray(x.params)
    || !Number.isInteger(x.seed) || typeof x.time !== 'number' || !Number.isFinite(x.time)) {
    throw new TypeError('storage: malformed SQL log entry');
  }
  for (const p of x.params) {
    if (!(p === null || typeof p === 'string' || typeof p === 'number' || typeof p === 'bigint' || p instanceof Uint8Array)) {
      throw new TypeError('storage: malformed SQL log entry binding');
    }
  }
  const ms = typeof x.ms === 'number' && Number.isFinite(x.ms) && x.ms >= 0 ? x.ms : 0;
  return { sql: x.sql, params: x.params, seed: x.seed!, time: x.time, ms };
}

export class SqlActorStorage extends ActorStorage {
  private nextIndex = 1;
  /** Log entries (and their bytes) not yet covered by sql.db. */
  private logEntries = 0;
  private logBytes = 0;
  /** Run time of the entries not covered by sql.db, by key. */
  private readonly logMs = new Map<string, number>();
  private readonly snapshotLogBytes: number;
  private readonly snapshotLogEntries: number;
  private readonly maxEntryBytes: number;
  /** Called when writes the isolate's database already holds are dropped: the isolate must go. */
  onDiverged: (() => void) | undefined;
  /** Replay statistics of the last sqlInit, for logs and tests. */
  lastReplay = { entries: 0, snapshotBytes: 0 };

  constructor(initial: ActorState, opts: SqlStorageOptions) {
    super(initial, opts);
    this.snapshotLogBytes = opts.snapshotLogBytes ?? SQL_SNAPSHOT_LOG_BYTES;
    this.snapshotLogEntries = opts.snapshotLogEntries ?? SQL_SNAPSHOT_LOG_ENTRIES;
    this.maxEntryBytes = opts.maxEntryBytes ?? 900 * 1024;
    for (const [k, v] of initial.values) {
      if (!k.startsWith(SQL_LOG_PREFIX)) continue;
      this.nextIndex = Math.max(this.nextIndex, Number(k.slice(SQL_LOG_PREFIX.length)) + 1);
      this.logEntries += 1;
      this.logBytes += v.byteLength;
    }
  }

  /** Log keys in log order (zero-padded indexes sort as numbers). */
  private logKeys(): string[] {
    const keys: string[] = [];
    for (const k of this.values.keys()) if (k.startsWith(SQL_LOG_PREFIX)) keys.push(k);
    return keys.sort();
  }

  /** What the isolate opens: the module, the snapshot and the entries after it, in order. */
  private init(): { wasm: Uint8Array; db: Uint8Array | null; log: SqlLogEntry[]; maxBytes: number; maxEntryBytes: number } {
    const dbBytes = this.getRaw(SQL_DB_KEY);
    const log = this.logKeys().map((k) => decodeValue(this.getRaw(k)!) as SqlLogEntry);
    this.lastReplay = { entries: log.length, snapshotBytes: dbBytes?.byteLength ?? 0 };
    return { wasm: sqlWasm(), db: dbBytes ?? null, log, maxBytes: this.maxBytes, maxEntryBytes: this.maxEntryBytes };
  }

  private getRaw(key: string): Uint8Array | undefined {
    return this.values.get(key);
  }

  private logStatement(entry: unknown): void {
    const e = checkEntry(entry);
    const bytes = encodeValue(e);
    const key = indexKey(this.nextIndex++);
    this.logMs.set(key, e.ms ?? 0);
    this.record({ op: 'put', key, value: bytes }, { kind: 'value', key, prev: undefined });
    this.setValue(key, bytes);
    this.logEntries += 1;
    this.logBytes += bytes.byteLength;
  }

  /** The isolate's database file as of the last commit: it replaces sql.db and every entry so far. */
  private checkpoint(bytes: unknown): void {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('storage: a SQL checkpoint must be bytes');
    if (this.dirty) throw new Error('storage: a SQL checkpoint is taken only between events');
    // Not a change of state (the database is the same), so not an op: the next compaction writes it.
    for (const k of this.logKeys()) this.setValue(k, undefined);
    this.logMs.clear();
    this.setValue(SQL_DB_KEY, new Uint8Array(bytes));
    this.logEntries = 0;
    this.logBytes = 0;
  }

  /** Whether the log since the last snapshot has grown enough to take one. */
  wantsCompaction(): boolean {
    const db = this.getRaw(SQL_DB_KEY)?.byteLength ?? 0;
    let ms = 0;
    for (const v of this.logMs.values()) ms += v;
    return this.logEntries >= this.snapshotLogEntries || this.logBytes >= Math.max(this.snapshotLogBytes, db / 2) || ms >= SQL_SNAPSHOT_LOG_MS;
  }

  override extendedOp(op: unknown, a: unknown, _b: unknown): unknown {
    switch (op) {
      case 'sqlInit': return this.init();
      case 'sqlLog': this.logStatement(a); return undefined;
      case 'sqlCheckpoint': this.checkpoint(a); return undefined;
      case 'encode': return encodeValue(a);
      case 'decode':
        if (!(a instanceof Uint8Array)) throw new TypeError('storage: a stored value must be bytes');
        return decodeValue(a);
      default: return super.extendedOp(op, a, _b);
    }
  }

  override discardPending(): void {
    const diverged = this.dirty;
    super.discardPending();
    this.recount();
    if (diverged) this.onDiverged?.();
  }

  override rollbackTransaction(token: number): void {
    super.rollbackTransaction(token);
    this.recount();
  }

  private recount(): void {
    let n = 0;
    let bytes = 0;
    const keys = this.logKeys();
    for (const k of keys) { n += 1; bytes += this.getRaw(k)!.byteLength; }
    const live = new Set(keys);
    for (const k of [...this.logMs.keys()]) if (!live.has(k)) this.logMs.delete(k);
    this.logEntries = n;
    this.logBytes = bytes;
  }
}
