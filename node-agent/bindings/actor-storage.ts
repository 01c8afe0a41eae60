import { DefaultDeserializer, serialize } from 'node:v8';
import type { ActorState, StorageOp } from '../../common/actor-ops.js';
import { EdgeError } from '../../common/errors.js';

// One actor activation's storage, in memory on the host: what `state.storage` in the
// isolate reads and writes through the synchronous `storage` host callback (see
// storageCall below and node-agent/shim/durable.js).
//
// Values are structured clones: the isolate's value crosses the boundary as isolated-vm
// copies callback arguments (V8's ValueSerializer: Map, Set, Date, RegExp, ArrayBuffer,
// typed arrays, DataView, BigInt, Error, boxed primitives, nested objects and arrays,
// cycles) and is kept here as node:v8 serialize() bytes, exactly what StorageOp carries
// and the durable log stores. The shim refuses functions, symbols, promises and platform
// objects (Request, Headers...) with a DataCloneError before anything is sent.
//
// Every write is applied at once (a request reads its own writes) and recorded: the host
// takes the ops with takePending() when a request ends and commits them to the actor's
// log (the output gate); discardPending() puts the state back to the last take (the
// actor was reset: its uncommitted writes are dropped). Transactions are savepoints in
// the same record: a rollback removes the transaction's ops and undoes its changes, so
// nothing of it is left pending.

/** Durable Objects' limits. */
export const MAX_KEY_BYTES = 2048;
export const MAX_VALUE_BYTES = 128 * 1024;
export const MAX_BATCH_KEYS = 128;

/**
 * A write that would take the actor over spec.storage.maxBytesPerActor. The worker sees a
 * RangeError: storageCall converts it at the isolate boundary.
 */
export class ActorStorageFullError extends EdgeError {}

export interface ListOptions {
  /** First key (inclusive). Not with startAfter. */
  start?: string;
  /** Keys after this one. Not with start. */
  startAfter?: string;
  /** Keys before this one (exclusive). */
  end?: string;
  prefix?: string;
  /** Descending order; with limit, the last `limit` keys of the range. */
  reverse?: boolean;
  /** At most this many entries (a positive integer). */
  limit?: number;
}

export interface ActorStorageOptions {
  /** spec.storage.maxBytesPerActor: key UTF-8 bytes + serialized value bytes over all keys. */
  maxBytes: number;
  /** Names the actor in error messages, e.g. "default/chat-rooms 3f2a...". */
  actor: string;
}

// Node's deserializer returns typed arrays that are views into the serialized bytes; a
// stored value must own exactly its bytes (and must not alias what the log holds).
class OwnBytesDeserializer extends DefaultDeserializer {
  _readHostObject(): unknown {
    const view = (DefaultDeserializer.prototype as unknown as { _readHostObject(this: DefaultDeserializer): unknown })._readHostObject.call(this);
    if (view instanceof DataView) return new DataView(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
    if (ArrayBuffer.isView(view)) return (view as Uint8Array).slice();
    return view;
  }
}

/** A value from its stored bytes (node:v8 serialize() format). */
export function decodeValue(bytes: Uint8Array): unknown {
  const d = new OwnBytesDeserializer(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  d.readHeader();
  return d.readValue() as unknown;
}

/** A value's stored bytes (node:v8 serialize()). */
export function encodeValue(value: unknown): Uint8Array {
  return serialize(value);
}

const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Key order: UTF-8 byte order (= code point order), as Durable Objects list keys. It
 * differs from JavaScript's default (UTF-16 code unit) order only between surrogate
 * pairs (U+10000 and up) and U+E000..U+FFFF.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/** First index in sorted whose key is >= key (after: > key). */
function bound(sorted: string[], key: string, after: boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareKeys(sorted[mid]!, key);
    if (c < 0 || (after && c === 0)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export type Undo =
  | { kind: 'value'; key: string; prev: Uint8Array | undefined }
  | { kind: 'all'; prev: Map<string, Uint8Array>; prevSorted: string[]; prevBytes: number }
  | { kind: 'alarm'; prev: number | null };

export class ActorStorage {
  protected values: Map<string, Uint8Array>;
  /** The keys in compareKeys order. */
  private sorted: string[];
  private total = 0;
  private alarmTime: number | null;
  private pending: StorageOp[] = [];
  private undo: Undo[] = [];
  /** Bumped by takePending: a transaction begun before a take can no longer roll back. */
  private generation = 0;
  private nextTxn = 1;
  private readonly txns = new Map<number, { generation: number; pending: number; undo: number }>();
  readonly maxBytes: number;
  readonly actor: string;

  constructor(initial: ActorState, opts: ActorStorageOptions) {
    this.values = new Map(initial.values);
    this.sorted = [...this.values.keys()].sort(compareKeys);
    for (const [k, v] of this.values) this.total += utf8Bytes(k) + v.byteLength;
    this.alarmTime = initial.alarm;
    this.maxBytes = opts.maxBytes;
    this.actor = opts.actor;
  }

  /** Key UTF-8 bytes + serialized value bytes over all keys, uncommitted writes included. */
  get bytes(): number { return this.total; }
  /** The alarm (epoch ms) as the isolate last set it, or null. */
  get alarm(): number | null { return this.alarmTime; }
  /** Number of keys. */
  get size(): number { return this.values.size; }
  /** True when writes were made since the last take. */
  get dirty(): boolean { return this.pending.length > 0; }

  /** The current state (uncommitted writes included), e.g. to compact the log or hand over on migration. Value bytes are shared: never mutate them. */
  snapshot(): ActorState {
    return { values: new Map(this.values), alarm: this.alarmTime };
  }

  // ---- validation -------------------------------------------------------------------

  private checkKey(key: unknown): string {
    if (typeof key !== 'string') throw new TypeError(`storage: keys must be strings, not ${key === null ? 'null' : typeof key}`);
    const size = utf8Bytes(key);
    if (size > MAX_KEY_BYTES) throw new RangeError(`storage: keys cannot be larger than ${MAX_KEY_BYTES} bytes; a key of ${size} bytes was given`);
    if (LONE_SURROGATE.test(key)) throw new TypeError('storage: a key contains a lone UTF-16 surrogate (keys must be valid Unicode)');
    return key;
  }

  private checkKeys(keys: unknown, what: string): string[] {
    if (!Array.isArray(keys)) throw new TypeError(`storage.${what}: expected an array of keys`);
    if (keys.length > MAX_BATCH_KEYS) throw new RangeError(`storage.${what}: at most ${MAX_BATCH_KEYS} keys per call; ${keys.length} were given`);
    return keys.map((k) => this.checkKey(k));
  }

  private encode(key: string, value: unknown): Uint8Array {
    let bytes: Uint8Array;
    try {
      bytes = encodeValue(value);
    } catch (err) {
      throw new TypeError(`storage.put: the value for key ${JSON.stringify(key.slice(0, 100))} cannot be serialized: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (bytes.byteLength > MAX_VALUE_BYTES) {
      throw new RangeError(`storage.put: values cannot be larger than ${MAX_VALUE_BYTES} bytes serialized; the value for key ${JSON.stringify(key.slice(0, 100))} is ${bytes.byteLength} bytes`);
    }
    return bytes;
  }

  // ---- reads ------------------------------------------------------------------------

  get(key: string): unknown {
    const bytes = this.values.get(this.checkKey(key));
    return bytes === undefined ? undefined : decodeValue(bytes);
  }

  /** The keys that exist, in key order (a Map, as Durable Objects return). */
  getMany(keys: string[]): Map<string, unknown> {
    const wanted = [...new Set(this.checkKeys(keys, 'get'))].sort(compareKeys);
    const out = new Map<string, unknown>();
    for (const k of wanted) {
      const bytes = this.values.get(k);
      if (bytes !== undefined) out.set(k, decodeValue(bytes));
    }
    return out;
  }

  list(opts: ListOptions = {}): Map<string, unknown> {
    const { start, startAfter, end, prefix, reverse, limit } = opts;
    for (const [name, v] of Object.entries({ start, startAfter, end, prefix })) {
      if (v !== undefined && typeof v !== 'string') throw new TypeError(`storage.list: ${name} must be a string`);
    }
    if (start !== undefined && startAfter !== undefined) throw new TypeError('storage.list: start and startAfter cannot both be given');
    if (reverse !== undefined && typeof reverse !== 'boolean') throw new TypeError('storage.list: reverse must be a boolean');
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new RangeError('storage.list: limit must be a positive integer');
    const s = this.sorted;
    let lo = 0;
    let hi = s.length;
    if (start !== undefined) lo = bound(s, start, false);
    if (startAfter !== undefined) lo = bound(s, startAfter, true);
    if (end !== undefined) hi = Math.min(hi, bound(s, end, false));
    if (prefix !== undefined && prefix !== '') {
      const first = bound(s, prefix, false);
      // Keys with the prefix are contiguous from `first`: find where they stop.
      let a = first;
      let b = s.length;
      while (a < b) {
        const mid = (a + b) >>> 1;
        if (s[mid]!.startsWith(prefix)) a = mid + 1;
        else b = mid;
      }
      lo = Math.max(lo, first);
      hi = Math.min(hi, a);
    }
    const out = new Map<string, unknown>();
    if (lo >= hi) return out;
    const count = Math.min(hi - lo, limit ?? Infinity);
    for (let n = 0; n < count; n++) {
      const k = reverse ? s[hi - 1 - n]! : s[lo + n]!;
      out.set(k, decodeValue(this.values.get(k)!));
    }
    return out;
  }

  getAlarm(): number | null { return this.alarmTime; }

  // ---- writes -----------------------------------------------------------------------

  protected setValue(key: string, bytes: Uint8Array | undefined): void {
    const prev = this.values.get(key);
    if (prev !== undefined) this.total -= utf8Bytes(key) + prev.byteLength;
    if (bytes === undefined) {
      if (prev === undefined) return;
      this.values.delete(key);
      const i = bound(this.sorted, key, false);
      this.sorted.splice(i, 1);
      return;
    }
    this.total += utf8Bytes(key) + bytes.byteLength;
    this.values.set(key, bytes);
    if (prev === undefined) this.sorted.splice(bound(this.sorted, key, false), 0, key);
  }

  protected record(op: StorageOp, undo: Undo): void {
    this.pending.push(op);
    this.undo.push(undo);
  }

  put(key: string, value: unknown): void {
    this.putMany([[key, value]]);
  }

  /** All or nothing: every key and value is checked (and the byte limit) before any is written. */
  putMany(entries: [string, unknown][]): void {
    if (!Array.isArray(entries)) throw new TypeError('storage.put: expected entries');
    if (entries.length > MAX_BATCH_KEYS) throw new RangeError(`storage.put: at most ${MAX_BATCH_KEYS} entries per call; ${entries.length} were given`);
    const encoded = new Map<string, Uint8Array>();
    for (const entry of entries) {
      if (!Array.isArray(entry) || entry.length !== 2) throw new TypeError('storage.put: malformed entry');
      const key = this.checkKey(entry[0]);
      encoded.set(key, this.encode(key, entry[1]));
    }
    let after = this.total;
    for (const [k, bytes] of encoded) {
      const prev = this.values.get(k);
      after += bytes.byteLength - (prev === undefined ? -utf8Bytes(k) : prev.byteLength);
    }
    if (after > this.maxBytes && after > this.total) {
      throw new ActorStorageFullError(`storage.put: actor ${this.actor} would hold ${after} bytes, over its storage limit of ${this.maxBytes} bytes (spec.storage.maxBytesPerActor of the DurableActor; keys and serialized values count)`);
    }
    for (const [k, bytes] of encoded) {
      this.record({ op: 'put', key: k, value: bytes }, { kind: 'value', key: k, prev: this.values.get(k) });
      this.setValue(k, bytes);
    }
  }

  /** True when the key existed. */
  delete(key: string): boolean {
    return this.deleteMany([key]) === 1;
  }

  /** How many of the keys existed. */
  deleteMany(keys: string[]): number {
    const list = this.checkKeys(keys, 'delete');
    let n = 0;
    for (const k of list) {
      const prev = this.values.get(k);
      if (prev === undefined) continue;
      n += 1;
      this.record({ op: 'delete', key: k }, { kind: 'value', key: k, prev });
      this.setValue(k, undefined);
    }
    return n;
  }

  /** Every key; the alarm stays (as in Durable Objects: deleteAlarm() removes it). */
  deleteAll(): void {
    this.record({ op: 'deleteAll' }, { kind: 'all', prev: this.values, prevSorted: this.sorted, prevBytes: this.total });
    this.values = new Map();
    this.sorted = [];
    this.total = 0;
  }

  /** Epoch milliseconds (a time in the past fires as soon as the host can), or null to clear. */
  setAlarm(time: number | null): void {
    if (time !== null && (typeof time !== 'number' || !Number.isFinite(time))) {
      throw new TypeError('storage.setAlarm: the time must be a Date or a number of milliseconds since the epoch');
    }
    const t = time === null ? null : Math.floor(time);
    if (t === this.alarmTime) return;
    this.record({ op: 'alarm', time: t }, { kind: 'alarm', prev: this.alarmTime });
    this.alarmTime = t;
  }

  deleteAlarm(): void { this.setAlarm(null); }

  /** Clears the alarm when it is still `time` (the alarm that fired, not one set since). */
  clearAlarmIf(time: number): void {
    if (this.alarmTime === time) this.setAlarm(null);
  }

  // ---- transactions -----------------------------------------------------------------

  /** A savepoint: rollbackTransaction(token) undoes every write made after it. */
  beginTransaction(): number {
    const token = this.nextTxn++;
    this.txns.set(token, { generation: this.generation, pending: this.pending.length, undo: this.undo.length });
    return token;
  }

  commitTransaction(token: number): void {
    this.txns.delete(token);
  }

  rollbackTransaction(token: number): void {
    const t = this.txns.get(token);
    if (!t) throw new Error('storage.transaction: this transaction is already over');
    this.txns.delete(token);
    if (t.generation !== this.generation) {
      throw new Error(`storage.transaction: actor ${this.actor}: cannot roll back, its writes were already committed`);
    }
    this.undoTo(t.undo);
    this.pending.length = t.pending;
    // Savepoints taken inside the rolled-back one are gone with it.
    for (const [k, other] of this.txns) if (other.undo > t.undo) this.txns.delete(k);
  }

  private undoTo(length: number): void {
    while (this.undo.length > length) {
      const u = this.undo.pop()!;
      if (u.kind === 'value') this.setValue(u.key, u.prev);
      else if (u.kind === 'alarm') this.alarmTime = u.prev;
      else {
        this.values = u.prev;
        this.sorted = u.prevSorted;
        this.total = u.prevBytes;
      }
    }
  }

  /** Ops a subclass adds to the isolate's `storage` callback (sql-storage.ts); none here. */
  extendedOp(op: unknown, _a: unknown, _b: unknown): unknown {
    throw new TypeError(`storage: unknown operation ${String(op)}`);
  }

  // ---- the output gate --------------------------------------------------------------

  /** The ops since the last take, in order; the host commits them to the actor's log. */
  takePending(): StorageOp[] {
    const ops = this.pending;
    this.pending = [];
    this.undo = [];
    this.generation += 1;
    this.txns.clear();
    return ops;
  }

  /**
   * Puts the state back to what it was at the last take (the actor was reset: its
   * uncommitted writes are dropped). Ops already taken are not undone: when their
   * commit fails, build a new ActorStorage from the durable state instead.
   */
  discardPending(): void {
    this.undoTo(0);
    this.pending = [];
    this.generation += 1;
    this.txns.clear();
  }
}

/** What the isolate's `storage` host callback may ask (see node-agent/shim/durable.js). */
export type StorageCallOp =
  | 'get' | 'getMany' | 'put' | 'putMany' | 'delete' | 'deleteMany' | 'list' | 'deleteAll'
  | 'getAlarm' | 'setAlarm' | 'txnBegin' | 'txnCommit' | 'txnRollback';

/**
 * The host side of the isolate's synchronous `storage(op, a, b)` callback. Arguments are
 * copies made by isolated-vm from untrusted code: every one is checked by ActorStorage.
 * `storage` is null in an isolate that is not an actor.
 */
export function storageCall(storage: ActorStorage | null, op: unknown, a: unknown, b: unknown): unknown {
  if (!storage) throw new Error('state.storage is only available to actors');
  try {
    return storageOp(storage, op, a, b);
  } catch (err) {
    // isolated-vm passes built-in error types on, not subclasses.
    if (err instanceof ActorStorageFullError) throw new RangeError(err.message);
    throw err;
  }
}

function storageOp(storage: ActorStorage, op: unknown, a: unknown, b: unknown): unknown {
  switch (op as StorageCallOp) {
    case 'get': return storage.get(a as string);
    case 'getMany': return storage.getMany(a as string[]);
    case 'put': storage.put(a as string, b); return undefined;
    case 'putMany': storage.putMany(a as [string, unknown][]); return undefined;
    case 'delete': return storage.delete(a as string);
    case 'deleteMany': return storage.deleteMany(a as string[]);
    case 'list': {
      if (a !== undefined && (a === null || typeof a !== 'object')) throw new TypeError('storage.list: options must be an object');
      const o = (a ?? {}) as Record<string, unknown>;
      return storage.list({
        start: o.start as string | undefined, startAfter: o.startAfter as string | undefined, end: o.end as string | undefined,
        prefix: o.prefix as string | undefined, reverse: o.reverse as boolean | undefined, limit: o.limit as number | undefined,
      });
    }
    case 'deleteAll': storage.deleteAll(); return undefined;
    case 'getAlarm': return storage.getAlarm();
    case 'setAlarm': storage.setAlarm(a as number | null); return undefined;
    case 'txnBegin': return storage.beginTransaction();
    case 'txnCommit': storage.commitTransaction(Number(a)); return undefined;
    case 'txnRollback': storage.rollbackTransaction(Number(a)); return undefined;
    default: return storage.extendedOp(op, a, b);
  }
}
