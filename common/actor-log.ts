import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import {
  createInbox, headers as natsHeaders,
  type JetStreamClient, type JetStreamManager, type JetStreamPublishOptions, type Msg, type MsgHdrs,
  type NatsConnection, type NatsError, type PurgeOpts,
} from 'nats';
import * as z from 'zod';
import { errorMessage, type Logger } from './log.js';
import { ACTOR_SUBJECTS, ACTORS_STREAM } from './nats.js';
import { FencedError, type ActorAddress, type ActorState, type StorageOp } from './actor-ops.js';
import { EdgeError } from './errors.js';
import { actorInstanceKeyOf, isActorId, isDnsLabel } from './keys.js';
import { ArraySet } from './array-set.js';
import { apiErrorOf, ensureActorStream } from './actor-stream.js';

// The durable, fenced log of each actor, on JetStream (DESIGN.md sections 5 and 6).
//
// One subject per actor (`edge.actor.log.<namespace>.<actor>.<id>`) in the stream
// EDGE_ACTORS holds, in order: ownership claims, commits (one per request: the output
// gate), releases and snapshot markers. Every claim, commit, release and marker is
// published with `Nats-Expected-Last-Subject-Sequence: <the last sequence the writer
// knows>`, so the server itself refuses the write of an owner that another owner has
// claimed the actor from since (FencedError): a stale owner can never append, and a
// refused write is one message that was not stored, so nothing of it applies. A write
// resolves only after JetStream's ack, i.e. once the server has stored it.
//
// Compaction writes the whole state as chunks on `edge.actor.snap.<...>.<gen>` first,
// then a small marker naming the generation on the log subject, fenced like a commit and
// with `Nats-Rollup: sub`, so the history before it goes in the same step. Chunks of older
// generations are purged after the marker lands. A crash at any point leaves load()
// correct: a marker is only ever written after all its chunks were acknowledged, and
// chunks nobody references are ignored (and purged by the next compaction).
//
// Record encoding (every message on both subjects): a 7-byte header (magic 0xED, version
// 1, kind, u32 big-endian length of the JSON meta), the JSON meta, then raw bytes (the
// values of a commit's puts in order, or a chunk's slice of the snapshot). Values never
// go through base64 or JSON; metas are validated with zod when read back, so a corrupt
// message is an ActorLogCorruptError naming the actor and the sequence.

const MAGIC = 0xed;
const VERSION = 1;
const HEADER_BYTES = 7;
const enum Kind { Claim = 1, Commit = 2, Release = 3, Snapshot = 4, Chunk = 5, State = 6 }
const KIND_NAMES: Record<number, string> = { 1: 'claim', 2: 'commit', 3: 'release', 4: 'snapshot', 5: 'chunk', 6: 'state' };
/** Room left in max_payload for the NATS headers of a publish (expected sequence, rollup). */
const PUBLISH_HEADROOM = 512;
/** Room left in a chunk message for the chunk's own header and meta. */
const CHUNK_META_ROOM = 128;
const DIRECT_GET = `$JS.API.DIRECT.GET.${ACTORS_STREAM}`;
const DIRECT_BATCH = 1024;
/** JetStream API error codes (nats-server errors.json). */
const JS_WRONG_LAST_SEQUENCE = 10071;

/** Who owns an actor, as the log says. */
export interface ActorOwner {
  agent: string;
  epoch: number;
  /** The owner gave the actor up (release); the next claim takes epoch + 1 all the same. */
  released: boolean;
  /** Log sequence of the record that says so (claim, release, or the snapshot marker carrying it). */
  seq: number;
}

export interface SnapshotInfo {
  /** Sequence of the marker on the log subject. */
  seq: number;
  gen: string;
  chunks: number;
  /** Size of the encoded snapshot (all chunks together). */
  bytes: number;
  firstChunkSeq: number;
}

export interface LoadedActor {
  state: ActorState;
  /** Sum over keys of UTF-8 key length + value length. */
  bytes: number;
  /** The last sequence on the actor's log subject (0: never used, or purged). What claim() expects. */
  lastSeq: number;
  owner: ActorOwner | null;
  /** The latest snapshot the state was rebuilt from, if any. */
  snapshot: SnapshotInfo | null;
  /** Commits after that snapshot and their encoded size: what a compaction policy looks at. */
  commitsSinceSnapshot: number;
  logBytesSinceSnapshot: number;
}

export interface ClaimResult {
  epoch: number;
  /** Sequence of the claim: what the new owner's first commit expects. */
  seq: number;
}

export interface ActorLogOptions {
  nc: NatsConnection;
  log: Logger;
  /** Stream replicas when this call creates the stream (default 1). */
  replicas?: number;
  /** Per request: JetStream ack, direct get (default 5000 ms). */
  timeoutMs?: number;
  /**
   * How long a write or read keeps retrying through NATS being unreachable (reconnect,
   * restart) before it gives up with ActorLogUnavailableError (default 20000 ms).
   */
  retryMs?: number;
  /** Test hooks: a throw from one simulates a crash at that point. */
  hooks?: {
    /** After every chunk of a snapshot was acknowledged, before its marker is published. */
    afterSnapshotChunks?: (addr: ActorAddress, gen: string) => void | Promise<void>;
  };
}

/** A commit whose record does not fit in one NATS message: nothing was written. */
export class ActorWriteTooLargeError extends EdgeError {
  constructor(readonly address: ActorAddress, readonly bytes: number, readonly limit: number) {
    super(`actor ${actorInstanceKeyOf(address)}: the writes of this request take ${bytes} bytes encoded, over the ${limit}-byte limit of one commit (NATS max_payload ${limit + PUBLISH_HEADROOM}); nothing was written`, { context: { actor: actorInstanceKeyOf(address) } });
  }
}

/** A record in the log that cannot be read back. */
export class ActorLogCorruptError extends EdgeError {
  constructor(readonly address: ActorAddress, readonly seq: number, detail: string, options?: ErrorOptions) {
    super(`actor ${actorInstanceKeyOf(address)}: log record at stream sequence ${seq} is corrupt: ${detail}`, { ...options, context: { actor: actorInstanceKeyOf(address) } });
  }
}

/**
 * NATS stayed unreachable for the whole retry window. For a write, `maybeWritten` says
 * whether the message may have reached the server (its outcome is unknown): the caller
 * must treat the write as failed and reload the actor before serving it again.
 */
export class ActorLogUnavailableError extends EdgeError {
  constructor(readonly address: ActorAddress, readonly operation: string, readonly maybeWritten: boolean, cause: unknown) {
    super(`actor ${actorInstanceKeyOf(address)}: ${operation} failed: NATS JetStream unavailable (${errorMessage(cause)})${maybeWritten ? '; the write may or may not have been stored' : ''}`, { cause, context: { actor: actorInstanceKeyOf(address) } });
  }
}

function checkAddress(a: ActorAddress): void {
  if (!isDnsLabel(a.namespace) || !isDnsLabel(a.actor) || !isActorId(a.id)) {
    throw new Error(`invalid actor address ${JSON.stringify(a)}: namespace and actor must be DNS labels and id 64 lowercase hex`);
  }
}
const logSubject = (a: ActorAddress) => ACTOR_SUBJECTS.log(a.namespace, a.actor, a.id);

// ---------------------------------------------------------------------------------------
// State helpers shared with the storage the isolate sees.

const utf8Length = (s: string) => Buffer.byteLength(s, 'utf8');

/** The byte size load() reports: sum of UTF-8 key length + value length. */
export function stateBytes(state: ActorState): number {
  let n = 0;
  for (const [k, v] of state.values) n += utf8Length(k) + v.byteLength;
  return n;
}

/**
 * Applies ops to a state in place, exactly as replaying the log does; returns the new
 * byte size given the old one. deleteAll clears the values, not the alarm (as on Workers).
 */
export function applyOps(state: ActorState, ops: readonly StorageOp[], bytes: number): number {
  for (const op of ops) {
    switch (op.op) {
      case 'put': {
        const old = state.values.get(op.key);
        bytes += old === undefined ? utf8Length(op.key) + op.value.byteLength : op.value.byteLength - old.byteLength;
        state.values.set(op.key, op.value);
        break;
      }
      case 'delete': {
        const old = state.values.get(op.key);
        if (old !== undefined) { bytes -= utf8Length(op.key) + old.byteLength; state.values.delete(op.key); }
        break;
      }
      case 'deleteAll':
        state.values.clear();
        bytes = 0;
        break;
      case 'alarm':
        state.alarm = op.time;
        break;
    }
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------
// Record codec.

/** A value of its own (Buffer.slice would share, and pin, the whole message or snapshot). */
const copyOf = (b: Uint8Array, off: number, size: number) => new Uint8Array(b.subarray(off, off + size));

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

function frame(kind: Kind, meta: unknown, bodyLength: number): { buf: Buffer; bodyAt: number } {
  const m = textEncoder.encode(JSON.stringify(meta));
  const buf = Buffer.allocUnsafe(HEADER_BYTES + m.length + bodyLength);
  buf[0] = MAGIC;
  buf[1] = VERSION;
  buf[2] = kind;
  buf.writeUInt32BE(m.length, 3);
  buf.set(m, HEADER_BYTES);
  return { buf, bodyAt: HEADER_BYTES + m.length };
}

const epochSchema = z.number().int().min(1);
const genSchema = z.string().regex(/^[0-9a-f]{16}$/);
const ClaimMeta = z.object({ agent: z.string().min(1), epoch: epochSchema, nonce: z.string().optional() });
const ReleaseMeta = z.object({ agent: z.string().min(1), epoch: epochSchema });
const OpMeta = z.discriminatedUnion('op', [
  z.object({ op: z.literal('put'), key: z.string(), size: z.number().int().min(0) }),
  z.object({ op: z.literal('delete'), key: z.string() }),
  z.object({ op: z.literal('deleteAll') }),
  z.object({ op: z.literal('alarm'), time: z.number().finite().nullable() }),
]);
const CommitMeta = z.object({ epoch: epochSchema, ops: z.array(OpMeta) });
const u32 = z.number().int().min(0).max(0xffff_ffff);
const SnapshotMeta = z.object({
  agent: z.string().min(1),
  epoch: epochSchema,
  gen: genSchema,
  chunks: z.number().int().min(1).max(100_000),
  bytes: z.number().int().min(HEADER_BYTES),
  crc: u32,
  firstChunkSeq: z.number().int().min(1),
  stateBytes: z.number().int().min(0),
  keys: z.number().int().min(0),
});
const ChunkMeta = z.object({ gen: genSchema, index: z.number().int().min(0) });

type LogRecord =
  | { kind: 'claim'; agent: string; epoch: number }
  | { kind: 'release'; agent: string; epoch: number }
  | { kind: 'commit'; epoch: number; ops: StorageOp[] }
  | ({ kind: 'snapshot' } & z.infer<typeof SnapshotMeta>);

/** Splits a framed message into kind, parsed meta JSON and body; throws a plain Error saying what is wrong. */
function unframe(data: Uint8Array): { kind: number; meta: unknown; body: Uint8Array } {
  if (data.byteLength < HEADER_BYTES) throw new Error(`${data.byteLength} bytes, shorter than a record header`);
  if (data[0] !== MAGIC) throw new Error(`not an actor log record (first byte 0x${(data[0] ?? 0).toString(16)})`);
  if (data[1] !== VERSION) throw new Error(`record version ${data[1]} is not supported (this agent reads version ${VERSION})`);
  const kind = data[2]!;
  const metaLength = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(3);
  if (HEADER_BYTES + metaLength > data.byteLength) throw new Error(`meta length ${metaLength} runs past the ${data.byteLength}-byte record`);
  let meta: unknown;
  try {
    meta = JSON.parse(textDecoder.decode(data.subarray(HEADER_BYTES, HEADER_BYTES + metaLength)));
  } catch (err) {
    throw new Error(`${KIND_NAMES[kind] ?? `kind ${kind}`} meta is not JSON: ${errorMessage(err)}`, { cause: err });
  }
  return { kind, meta, body: data.subarray(HEADER_BYTES + metaLength) };
}

function parseMeta<T extends z.ZodType>(schema: T, meta: unknown, kind: number): z.infer<T> {
  const r = schema.safeParse(meta);
  if (!r.success) throw new Error(`${KIND_NAMES[kind]}: ${z.prettifyError(r.error)}`);
  return r.data;
}

function decodeLogRecord(data: Uint8Array): LogRecord {
  const { kind, meta, body } = unframe(data);
  switch (kind) {
    case Kind.Claim: return { kind: 'claim', ...parseMeta(ClaimMeta, meta, kind) };
    case Kind.Release: return { kind: 'release', ...parseMeta(ReleaseMeta, meta, kind) };
    case Kind.Snapshot: return { kind: 'snapshot', ...parseMeta(SnapshotMeta, meta, kind) };
    case Kind.Commit: {
      const m = parseMeta(CommitMeta, meta, kind);
      let off = 0;
      const ops: StorageOp[] = new Array(m.ops.length);
      for (let i = 0; i < m.ops.length; i++) {
        const op = m.ops[i]!;
        if (op.op === 'put') {
          if (off + op.size > body.byteLength) throw new Error(`commit: put of ${JSON.stringify(op.key)} runs past the record body`);
          ops[i] = { op: 'put', key: op.key, value: copyOf(body, off, op.size) };
          off += op.size;
        } else {
          ops[i] = op;
        }
      }
      if (off !== body.byteLength) throw new Error(`commit: ${body.byteLength - off} bytes left over after the values`);
      return { kind: 'commit', epoch: m.epoch, ops };
    }
    default:
      throw new Error(`${KIND_NAMES[kind] ?? `unknown kind ${kind}`} record on an actor log subject`);
  }
}

/** Encodes one commit; throws TypeError for malformed ops (nothing is written then). */
export function encodeCommit(epoch: number, ops: readonly StorageOp[]): Buffer {
  const metaOps: unknown[] = new Array(ops.length);
  let bodyLength = 0;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    switch (op.op) {
      case 'put':
        if (!(op.value instanceof Uint8Array)) throw new TypeError(`put of ${JSON.stringify(op.key)}: value is not a Uint8Array`);
        metaOps[i] = { op: 'put', key: op.key, size: op.value.byteLength };
        bodyLength += op.value.byteLength;
        break;
      case 'delete': metaOps[i] = { op: 'delete', key: op.key }; break;
      case 'deleteAll': metaOps[i] = { op: 'deleteAll' }; break;
      case 'alarm':
        if (op.time !== null && !Number.isFinite(op.time)) throw new TypeError(`alarm time ${op.time} is not a finite number`);
        metaOps[i] = { op: 'alarm', time: op.time };
        break;
      default:
        throw new TypeError(`unknown storage op ${JSON.stringify(op)}`);
    }
  }
  const { buf, bodyAt } = frame(Kind.Commit, { epoch, ops: metaOps }, bodyLength);
  let off = bodyAt;
  for (const op of ops) {
    if (op.op === 'put') { buf.set(op.value, off); off += op.value.byteLength; }
  }
  return buf;
}

/** The whole state as one buffer: a State record whose meta lists [key, size] and whose body holds the values. */
function encodeState(state: ActorState): { blob: Buffer; bytes: number } {
  const entries: [string, number][] = [];
  let valuesLength = 0;
  let bytes = 0;
  for (const [k, v] of state.values) {
    entries.push([k, v.byteLength]);
    valuesLength += v.byteLength;
    bytes += utf8Length(k) + v.byteLength;
  }
  const { buf, bodyAt } = frame(Kind.State, { alarm: state.alarm, entries }, valuesLength);
  let off = bodyAt;
  for (const v of state.values.values()) { buf.set(v, off); off += v.byteLength; }
  return { blob: buf, bytes };
}

function decodeState(blob: Uint8Array): { state: ActorState; bytes: number } {
  const { kind, meta, body } = unframe(blob);
  if (kind !== Kind.State) throw new Error(`snapshot holds a ${KIND_NAMES[kind] ?? kind} record, not a state`);
  // Validated by hand: a snapshot can list a hundred thousand entries.
  const m = meta as { alarm?: unknown; entries?: unknown };
  if (typeof m !== 'object' || m === null) throw new Error('state meta is not an object');
  if (m.alarm !== null && !(typeof m.alarm === 'number' && Number.isFinite(m.alarm))) throw new Error('state alarm is neither null nor a number');
  if (!Array.isArray(m.entries)) throw new Error('state entries is not an array');
  const values = new Map<string, Uint8Array>();
  let off = 0;
  let bytes = 0;
  for (const e of m.entries as unknown[]) {
    if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || !Number.isSafeInteger(e[1]) || (e[1] as number) < 0) {
      throw new Error(`state entry ${JSON.stringify(e)?.slice(0, 80)} is not [key, size]`);
    }
    const [key, size] = e as [string, number];
    if (off + size > body.byteLength) throw new Error(`state value of ${JSON.stringify(key)} runs past the snapshot`);
    values.set(key, copyOf(body, off, size));
    off += size;
    bytes += utf8Length(key) + size;
  }
  if (off !== body.byteLength) throw new Error(`state: ${body.byteLength - off} bytes left over after the values`);
  return { state: { values, alarm: m.alarm as number | null }, bytes };
}

// ---------------------------------------------------------------------------------------
// NATS error classification.

const natsCodeOf = (err: unknown): string | undefined => {
  const c = (err as Partial<NatsError> | null)?.code;
  return typeof c === 'string' ? c : undefined;
};
/** The log's real last sequence when the server refused a write for its expected sequence. */
function wrongLastSequence(err: unknown): number | undefined {
  const api = apiErrorOf(err);
  if (api?.err_code !== JS_WRONG_LAST_SEQUENCE) return undefined;
  const m = /(\d+)\s*$/.exec(api.description ?? '');
  return m ? Number(m[1]) : -1;
}
/** Errors that may go away on their own (reconnect, server restart, JetStream recovering). */
function isTransient(err: unknown): boolean {
  const api = apiErrorOf(err);
  if (api) return api.code === 503;
  if (err instanceof TransientError) return true;
  const code = natsCodeOf(err);
  return code === 'TIMEOUT' || code === '503' || code === 'DISCONNECT' || code === 'REQUEST_ERROR' || code === 'CONNECTION_REFUSED';
}
class TransientError extends EdgeError {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const randomHex = (bytes: number) => randomBytes(bytes).toString('hex');

interface StoredRecord { seq: number; data: Uint8Array }

// ---------------------------------------------------------------------------------------

export class ActorLog {
  private readonly nc: NatsConnection;
  private readonly js: JetStreamClient;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly retryMs: number;
  private readonly hooks: NonNullable<ActorLogOptions['hooks']>;
  /** False between a disconnect and the reconnect that follows. */
  private connected = true;
  private readonly onReconnect = new Set<() => void>();
  /** Fails an in-flight request (see guarded()). */
  private readonly inflight = new ArraySet<(err: Error) => void>();

  private constructor(opts: ActorLogOptions, private readonly jsm: JetStreamManager) {
    this.nc = opts.nc;
    this.js = opts.nc.jetstream();
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.retryMs = opts.retryMs ?? 20_000;
    this.hooks = opts.hooks ?? {};
    void this.watchConnection();
  }

  /**
   * A request published while the client is disconnected, or in flight when the
   * connection drops, is often never answered (it waits for its full timeout): on a
   * disconnect or reconnect every in-flight request fails at once as transient, and the
   * retry (safe: writes are fenced, reads idempotent) goes out once reconnected.
   */
  private async watchConnection(): Promise<void> {
    try {
      for await (const s of this.nc.status()) {
        if (s.type !== 'disconnect' && s.type !== 'reconnect') continue;
        this.connected = s.type === 'reconnect';
        const err = new TransientError(`NATS ${s.type === 'reconnect' ? 'reconnected' : 'disconnected'} while the request was in flight`);
        for (const abort of [...this.inflight]) abort(err);
        if (this.connected) for (const wake of [...this.onReconnect]) wake();
      }
    } catch (err) {
      this.log.warn('actor log: connection status stream ended', { error: err });
    }
  }

  /** Runs one NATS round trip (or a group of them) that a disconnect fails at once. */
  private async guarded<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.connected) {
      await new Promise<void>((resolve) => {
        const wake = () => { clearTimeout(timer); this.onReconnect.delete(wake); resolve(); };
        const timer = setTimeout(wake, this.timeoutMs);
        this.onReconnect.add(wake);
      });
      if (!this.connected) throw new TransientError(`NATS still disconnected after ${this.timeoutMs} ms`);
    }
    return new Promise<T>((resolve, reject) => {
      const abort = (err: Error) => { this.inflight.delete(abort); reject(err); };
      this.inflight.add(abort);
      fn().then((v) => { this.inflight.delete(abort); resolve(v); }, (err: unknown) => { this.inflight.delete(abort); reject(err); });
    });
  }

  /** Creates the stream (or binds to it, fixing the settings this code relies on) and returns the log. */
  static async open(opts: ActorLogOptions): Promise<ActorLog> {
    const jsm = await opts.nc.jetstreamManager();
    await ensureActorStream(jsm, opts.replicas ?? 1, opts.log);
    return new ActorLog(opts, jsm);
  }

  /** The largest commit record one publish can carry (the server's max_payload less room for headers). */
  get maxCommitBytes(): number {
    return (this.nc.info?.max_payload ?? 1024 * 1024) - PUBLISH_HEADROOM;
  }

  /**
   * Takes ownership: appends a claim with epoch `prevEpoch + 1`, accepted only if the log
   * still ends at `lastSeq` (what load() returned). Throws FencedError when someone wrote
   * since: reload and decide again.
   */
  async claim(addr: ActorAddress, agent: string, lastSeq: number, prevEpoch: number): Promise<ClaimResult> {
    checkAddress(addr);
    const epoch = prevEpoch + 1;
    const { buf } = frame(Kind.Claim, { agent, epoch, nonce: randomHex(8) }, 0);
    const seq = await this.publishFenced(addr, 'claim', epoch, buf, lastSeq);
    return { epoch, seq };
  }

  /**
   * Appends one request's writes as one record, accepted only if the log still ends at
   * `expectedSeq` (the sequence of this owner's claim or of its previous commit). Resolves
   * with the new last sequence once JetStream has stored it. Throws FencedError when
   * another owner claimed the actor, ActorWriteTooLargeError (nothing written) when the
   * record does not fit in one NATS message.
   */
  async commit(addr: ActorAddress, epoch: number, expectedSeq: number, ops: readonly StorageOp[]): Promise<number> {
    checkAddress(addr);
    const buf = encodeCommit(epoch, ops);
    const limit = this.maxCommitBytes;
    if (buf.byteLength > limit) throw new ActorWriteTooLargeError(addr, buf.byteLength, limit);
    return this.publishFenced(addr, 'commit', epoch, buf, expectedSeq);
  }

  /** Gives the actor up (clean shutdown, migration): the next owner claims epoch + 1 without waiting. */
  async release(addr: ActorAddress, agent: string, epoch: number, expectedSeq: number): Promise<number> {
    checkAddress(addr);
    const { buf } = frame(Kind.Release, { agent, epoch }, 0);
    return this.publishFenced(addr, 'release', epoch, buf, expectedSeq);
  }

  /**
   * Replaces the actor's history with a snapshot of `state` (which must be the state as of
   * `expectedSeq`): chunks first, then the marker, fenced like a commit, rolling up the log
   * subject. `agent` (the owner's name, kept in the marker because the rollup removes the
   * claim) is read from the log when omitted. Returns the marker's sequence: what the
   * owner's next commit expects.
   */
  async compact(addr: ActorAddress, epoch: number, expectedSeq: number, state: ActorState, agent?: string): Promise<SnapshotInfo> {
    checkAddress(addr);
    if (agent === undefined) {
      const { owner, lastSeq } = await this.readLog(addr);
      if (lastSeq !== expectedSeq || !owner || owner.epoch !== epoch) {
        throw new FencedError(addr, `actor ${actorInstanceKeyOf(addr)}: snapshot at epoch ${epoch} expected the log at sequence ${expectedSeq} but it is at ${lastSeq} with owner epoch ${owner?.epoch ?? 'none'}`,
          { write: 'snapshot', epoch, expectedSeq, actualSeq: lastSeq });
      }
      agent = owner.agent;
    }
    const { blob, bytes: sBytes } = encodeState(state);
    const chunkSize = this.maxCommitBytes - CHUNK_META_ROOM;
    const chunks = Math.max(1, Math.ceil(blob.byteLength / chunkSize));
    // All chunks in flight at once; every one is acknowledged before the marker goes out.
    // A retry writes a new generation, so a chunk of a failed attempt never mixes in.
    const { gen, subject, firstChunkSeq } = await this.retrying(addr, 'writing snapshot chunks', false, () => this.guarded(async () => {
      const gen = randomHex(8);
      const subject = ACTOR_SUBJECTS.snapshot(addr.namespace, addr.actor, addr.id, gen);
      const acks = await Promise.all(Array.from({ length: chunks }, (_, index) => {
        const slice = blob.subarray(index * chunkSize, Math.min(blob.byteLength, (index + 1) * chunkSize));
        const { buf, bodyAt } = frame(Kind.Chunk, { gen, index }, slice.byteLength);
        buf.set(slice, bodyAt);
        return this.js.publish(subject, buf, { timeout: this.timeoutMs });
      }));
      return { gen, subject, firstChunkSeq: Math.min(...acks.map((a) => a.seq)) };
    }));
    await this.hooks.afterSnapshotChunks?.(addr, gen);
    const { buf } = frame(Kind.Snapshot, {
      agent, epoch, gen, chunks, bytes: blob.byteLength, crc: crc32(blob), firstChunkSeq, stateBytes: sBytes, keys: state.values.size,
    }, 0);
    const h = natsHeaders();
    h.set('Nats-Rollup', 'sub');
    let seq: number;
    try {
      seq = await this.publishFenced(addr, 'snapshot', epoch, buf, expectedSeq, h);
    } catch (err) {
      // Refused for certain: this generation will never be referenced, drop its chunks
      // (best effort; the next compaction purges leftovers anyway). Not after an unknown
      // outcome: the marker may have landed, and then these chunks are the actor's state.
      if (err instanceof FencedError) {
        await this.purge(addr, { filter: subject })
          .catch((e: unknown) => this.log.warn('actor snapshot: dropping unreferenced chunks failed', { actor: actorInstanceKeyOf(addr), gen, error: e }));
      }
      throw err;
    }
    // Older generations (and chunks of snapshots that never got a marker) all precede
    // this generation's first chunk.
    await this.purge(addr, { filter: ACTOR_SUBJECTS.snapshotAll(addr.namespace, addr.actor, addr.id), seq: firstChunkSeq })
      .catch((e: unknown) => this.log.warn('actor snapshot: purging older generations failed (the next compaction retries)', { actor: actorInstanceKeyOf(addr), gen, error: e }));
    return { seq, gen, chunks, bytes: blob.byteLength, firstChunkSeq };
  }

  /**
   * Rebuilds the actor's state from its latest snapshot plus the commits after it. A
   * never-used actor has empty state and lastSeq 0. The result is consistent as of
   * `lastSeq`: a claim expecting it succeeds only if nothing was written since. (With
   * replicas > 1 a direct get may be answered by a follower slightly behind; a claim
   * based on that read is refused with FencedError, never wrongly accepted.)
   */
  async load(addr: ActorAddress): Promise<LoadedActor> {
    checkAddress(addr);
    for (let attempt = 1; ; attempt++) {
      const read = await this.readLog(addr);
      const { records, lastSeq, owner } = read;
      let snapshot: SnapshotInfo | null = null;
      let state: ActorState = { values: new Map(), alarm: null };
      let bytes = 0;
      let from = 0;
      if (read.lastSnapshot >= 0) {
        const { seq, rec } = records[read.lastSnapshot] as { seq: number; rec: LogRecord & { kind: 'snapshot' } };
        const got = await this.readSnapshot(addr, seq, rec);
        if (typeof got === 'string') {
          // A snapshot whose chunks are gone: either a newer compaction replaced it while we
          // read (the log moved on: read again) or the stream lost data.
          if (attempt < 3 && (await this.lastSequence(addr)) !== lastSeq) continue;
          throw new ActorLogCorruptError(addr, seq, got);
        }
        ({ state, bytes } = got);
        snapshot = { seq, gen: rec.gen, chunks: rec.chunks, bytes: rec.bytes, firstChunkSeq: rec.firstChunkSeq };
        from = read.lastSnapshot + 1;
      }
      let commits = 0;
      let logBytes = 0;
      for (let i = from; i < records.length; i++) {
        const r = records[i]!;
        if (r.rec.kind !== 'commit') continue;
        bytes = applyOps(state, r.rec.ops, bytes);
        commits++;
        logBytes += r.size;
      }
      return { state, bytes, lastSeq, owner, snapshot, commitsSinceSnapshot: commits, logBytesSinceSnapshot: logBytes };
    }
  }

  /** The last sequence on the actor's log subject (0 if none): one direct get. */
  async lastSequence(addr: ActorAddress): Promise<number> {
    checkAddress(addr);
    return this.retrying(addr, 'reading the last sequence', false, () => this.guarded(async () => {
      const m = await this.nc.request(`${DIRECT_GET}.${logSubject(addr)}`, undefined, { timeout: this.timeoutMs });
      const code = m.headers?.code ?? 0;
      if (code === 404) return 0;
      if (code !== 0) throw directGetError(m);
      return Number(m.headers?.get('Nats-Sequence'));
    }));
  }

  /** Deletes everything of one actor (log and snapshots). A later claim starts it afresh from lastSeq 0. */
  async purgeActor(addr: ActorAddress): Promise<number> {
    checkAddress(addr);
    const [a, b] = await Promise.all([
      this.purge(addr, { filter: logSubject(addr) }),
      this.purge(addr, { filter: ACTOR_SUBJECTS.snapshotAll(addr.namespace, addr.actor, addr.id) }),
    ]);
    return a + b;
  }

  /** Deletes every actor of one DurableActor (the CR was deleted). */
  async purgeNamespace(namespace: string, actor: string): Promise<number> {
    if (!isDnsLabel(namespace) || !isDnsLabel(actor)) throw new Error(`invalid DurableActor ${namespace}/${actor}: both must be DNS labels`);
    const what = { namespace, actor, id: '*' };
    const [a, b] = await Promise.all([
      this.purge(what, { filter: ACTOR_SUBJECTS.logAllOf(namespace, actor) }),
      this.purge(what, { filter: ACTOR_SUBJECTS.snapshotAllOf(namespace, actor) }),
    ]);
    return a + b;
  }

  /** A stream purge (idempotent, so retried through reconnects); returns how many messages went. */
  private purge(addr: ActorAddress, opts: PurgeOpts): Promise<number> {
    return this.retrying(addr, `purging ${opts.filter ?? 'the stream'}`, false, () => this.guarded(async () => (await this.jsm.streams.purge(ACTORS_STREAM, opts)).purged));
  }

  // -------------------------------------------------------------------------------------

  /** Every record on the log subject, decoded, with the owner they establish. */
  private async readLog(addr: ActorAddress): Promise<{
    records: { seq: number; size: number; rec: LogRecord }[]; lastSeq: number; owner: ActorOwner | null; lastSnapshot: number;
  }> {
    const msgs = await this.retrying(addr, 'reading the log', false, () => this.guarded(() => this.readBatch(logSubject(addr), 1, 0)));
    const records: { seq: number; size: number; rec: LogRecord }[] = new Array(msgs.length);
    let owner: ActorOwner | null = null;
    let lastSnapshot = -1;
    let warned = false;
    for (let i = 0; i < msgs.length; i++) {
      const { seq, data } = msgs[i]!;
      let rec: LogRecord;
      try {
        rec = decodeLogRecord(data);
      } catch (err) {
        throw new ActorLogCorruptError(addr, seq, errorMessage(err), { cause: err });
      }
      records[i] = { seq, size: data.byteLength, rec };
      switch (rec.kind) {
        case 'claim': owner = { agent: rec.agent, epoch: rec.epoch, released: false, seq }; break;
        case 'release': owner = { agent: rec.agent, epoch: rec.epoch, released: true, seq }; break;
        case 'snapshot': owner = { agent: rec.agent, epoch: rec.epoch, released: false, seq }; lastSnapshot = i; break;
        case 'commit':
          // The server's sequence check is what fences; an epoch that does not match is a
          // writer bug worth a log line, not a reason to refuse the actor's data.
          if (!warned && (!owner || owner.epoch !== rec.epoch || owner.released)) {
            warned = true;
            this.log.warn('actor log: commit epoch does not match its owner', { actor: actorInstanceKeyOf(addr), seq, epoch: rec.epoch, owner: owner ?? undefined });
          }
          break;
      }
    }
    return { records, lastSeq: msgs.at(-1)?.seq ?? 0, owner, lastSnapshot };
  }

  /** The state a marker names, or why it cannot be read. */
  private async readSnapshot(addr: ActorAddress, markerSeq: number, m: z.infer<typeof SnapshotMeta>): Promise<{ state: ActorState; bytes: number } | string> {
    const subject = ACTOR_SUBJECTS.snapshot(addr.namespace, addr.actor, addr.id, m.gen);
    const msgs = await this.retrying(addr, 'reading a snapshot', false, () => this.guarded(() => this.readBatch(subject, m.firstChunkSeq, m.chunks)));
    const parts: (Uint8Array | undefined)[] = new Array(m.chunks);
    for (const { seq, data } of msgs) {
      let chunk: z.infer<typeof ChunkMeta>;
      let body: Uint8Array;
      try {
        const u = unframe(data);
        if (u.kind !== Kind.Chunk) throw new Error(`${KIND_NAMES[u.kind] ?? u.kind} record on a snapshot subject`);
        chunk = parseMeta(ChunkMeta, u.meta, u.kind);
        body = u.body;
      } catch (err) {
        throw new ActorLogCorruptError(addr, seq, `snapshot chunk: ${errorMessage(err)}`, { cause: err });
      }
      if (chunk.gen !== m.gen || chunk.index >= m.chunks) throw new ActorLogCorruptError(addr, seq, `snapshot chunk ${chunk.index} of generation ${chunk.gen} does not belong to the marker at ${markerSeq}`);
      parts[chunk.index] = body;
    }
    const missing = parts.findIndex((p) => p === undefined);
    if (missing >= 0) return `snapshot ${m.gen} (marker at ${markerSeq}): chunk ${missing} of ${m.chunks} is missing`;
    const blob = Buffer.concat(parts as Uint8Array[]);
    if (blob.byteLength !== m.bytes) return `snapshot ${m.gen} (marker at ${markerSeq}): ${blob.byteLength} bytes in its chunks, the marker says ${m.bytes}`;
    if (crc32(blob) !== m.crc) return `snapshot ${m.gen} (marker at ${markerSeq}): checksum mismatch`;
    try {
      return decodeState(blob);
    } catch (err) {
      throw new ActorLogCorruptError(addr, markerSeq, `snapshot ${m.gen}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Direct get, batched: the messages on `subject` from `fromSeq` on (at most `max` of them
   * when max > 0), in order, in as few round trips as the server allows (one for a whole
   * actor log unless it holds more than 1024 records).
   */
  private readBatch(subject: string, fromSeq: number, max: number): Promise<StoredRecord[]> {
    return new Promise((resolve, reject) => {
      const out: StoredRecord[] = [];
      const inbox = createInbox((this.nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
      let timer: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (err?: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sub.unsubscribe();
        if (err) reject(err); else resolve(out);
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => finish(new TransientError(`direct get of ${subject} timed out after ${this.timeoutMs} ms`)), this.timeoutMs);
      };
      const ask = (seq: number) => {
        const batch = max > 0 ? Math.min(DIRECT_BATCH, max - out.length) : DIRECT_BATCH;
        this.nc.publish(DIRECT_GET, textEncoder.encode(JSON.stringify({ seq, next_by_subj: subject, batch })), { reply: inbox });
        arm();
      };
      const sub = this.nc.subscribe(inbox, {
        callback: (err, m: Msg) => {
          if (done) return;
          if (err) { finish(err); return; }
          const h = m.headers;
          const code = h?.code ?? 0;
          if (code === 0 && h) {
            out.push({ seq: Number(h.get('Nats-Sequence')), data: m.data });
            arm();
            return;
          }
          if (code === 204) {
            const pending = Number(h?.get('Nats-Num-Pending') || 0);
            const last = Number(h?.get('Nats-Last-Sequence') || 0);
            if (pending > 0 && last > 0 && (max <= 0 || out.length < max)) ask(last + 1); else finish();
            return;
          }
          if (code === 404) { finish(); return; }
          finish(directGetError(m));
        },
      });
      try { ask(fromSeq); } catch (err) { finish(err); }
    });
  }

  /**
   * One fenced publish on the actor's log subject. A timeout or lost connection leaves the
   * outcome unknown: the same bytes are published again with the same expectation, so at
   * most one copy can land, and a refusal after such a retry checks whether the first
   * copy is the one that moved the log on.
   */
  private async publishFenced(addr: ActorAddress, write: string, epoch: number, data: Uint8Array, expectedSeq: number, hdrs?: MsgHdrs): Promise<number> {
    const subject = logSubject(addr);
    const deadline = Date.now() + this.retryMs;
    let ambiguous = false;
    for (let attempt = 1; ; attempt++) {
      try {
        const opts: Partial<JetStreamPublishOptions> = { expect: { lastSubjectSequence: expectedSeq }, timeout: this.timeoutMs };
        if (hdrs) opts.headers = hdrs;
        const ack = await this.guarded(() => this.js.publish(subject, data, opts));
        return ack.seq;
      } catch (err) {
        const actual = wrongLastSequence(err);
        if (actual !== undefined) {
          if (ambiguous) {
            const landed = await this.findOwnWrite(addr, subject, expectedSeq, data);
            if (landed > 0) {
              this.log.info('actor log: an unacknowledged write had landed', { actor: actorInstanceKeyOf(addr), write, seq: landed });
              return landed;
            }
          }
          throw new FencedError(addr,
            `actor ${actorInstanceKeyOf(addr)}: ${write} at epoch ${epoch} refused: it expected the log to end at sequence ${expectedSeq} but it ends at ${actual < 0 ? 'a later one' : actual} (another owner claimed the actor, or it was purged)`,
            { write, epoch, expectedSeq, ...(actual >= 0 ? { actualSeq: actual } : {}) });
        }
        if (!isTransient(err)) {
          const api = apiErrorOf(err);
          if (api) throw new Error(`actor ${actorInstanceKeyOf(addr)}: ${write} refused by JetStream: ${api.description ?? api.code}`);
          throw err;
        }
        ambiguous = true;
        if (Date.now() >= deadline) throw new ActorLogUnavailableError(addr, write, true, err);
        this.log.warn('actor log: write not acknowledged, retrying', { actor: actorInstanceKeyOf(addr), write, attempt, error: err });
        await sleep(Math.min(1000, 50 * 2 ** attempt));
      }
    }
  }

  /** The sequence at which `data` follows `expectedSeq` on the subject, or 0 when something else does. */
  private async findOwnWrite(addr: ActorAddress, subject: string, expectedSeq: number, data: Uint8Array): Promise<number> {
    const [next] = await this.retrying(addr, 'checking an unacknowledged write', false, () => this.guarded(() => this.readBatch(subject, expectedSeq + 1, 1)));
    return next && Buffer.compare(next.data, data) === 0 ? next.seq : 0;
  }

  /** Runs `fn` again on transient errors until the retry window closes. */
  private async retrying<T>(addr: ActorAddress, what: string, maybeWritten: boolean, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.retryMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err)) throw err;
        if (Date.now() >= deadline) throw new ActorLogUnavailableError(addr, what, maybeWritten, err);
        this.log.warn('actor log: NATS unavailable, retrying', { actor: actorInstanceKeyOf(addr), what, attempt, error: err });
        await sleep(Math.min(1000, 50 * 2 ** attempt));
      }
    }
  }
}

function directGetError(m: Msg): Error {
  const code = m.headers?.code ?? 0;
  const msg = `JetStream direct get: ${code} ${m.headers?.description ?? ''}`.trim();
  return code === 503 ? new TransientError(msg) : new Error(msg);
}
