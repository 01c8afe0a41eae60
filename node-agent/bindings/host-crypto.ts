import { createHash, webcrypto, type Hash } from 'node:crypto';
import { EdgeError } from '../../common/errors.js';
import type { CryptoKeyInfo, CryptoOutcome } from '../abi/bridge.js';

// The host side of one isolate's crypto.subtle. The isolate holds CryptoKey objects whose
// key material never enters it: each is a number naming an entry of THIS isolate's key
// table, so a number another isolate made (or one it guessed) names nothing, and the
// table goes with the isolate. Every operation runs Node's webcrypto, whose work runs on
// libuv's threadpool, off the event loop; that pool is shared by the whole agent (and by
// dns.lookup, fs and zlib), so work is admitted through two gates: at most
// MAX_IN_FLIGHT_PER_ISOLATE operations of one isolate, and at most GLOBAL_SLOTS of all
// isolates, leaving a thread for everything else. Threadpool time is not counted against
// the isolate's CPU limit; the gates bound what one tenant can take instead.

/** Keys one isolate may hold at once (each costs the host an OpenSSL key object). */
export const MAX_KEYS_PER_ISOLATE = 10_000;
/** Operations of one isolate on the threadpool at once; the rest wait in its queue. */
export const MAX_IN_FLIGHT_PER_ISOLATE = 2;
/** Operations one isolate may have waiting (beyond that: QuotaExceededError). */
export const MAX_QUEUED_PER_ISOLATE = 1_000;
/** The largest input one operation takes (as fetch bodies are bounded): DigestStream for more. */
export const MAX_CRYPTO_INPUT_BYTES = 32 * 1024 * 1024;
/** Input bytes one isolate's waiting and running operations may hold on the host together. */
export const MAX_HELD_BYTES_PER_ISOLATE = 64 * 1024 * 1024;
/** Open DigestStreams per isolate. */
export const MAX_DIGEST_STREAMS = 1_000;
/** As workerd: "iteration counts above 100000 are not supported" (NotSupportedError). */
export const MAX_PBKDF2_ITERATIONS = 100_000;
/** RSA key generation above this takes the threadpool for minutes. */
export const MAX_RSA_MODULUS_BITS = 8192;

const threadpool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
/** Operations of all isolates on the threadpool at once: one thread stays free for dns, fs and zlib. */
export const GLOBAL_SLOTS = Math.max(1, threadpool - 1);

/** A crypto error with the DOMException name the isolate rethrows it as. */
export class CryptoError extends EdgeError {
  constructor(readonly domName: string, message: string) {
    super(message);
  }
}

const WEBCRYPTO_NAMES = new Set(['NotSupportedError', 'InvalidAccessError', 'DataError', 'OperationError', 'SyntaxError', 'QuotaExceededError', 'InvalidStateError']);

/** Node's errors as WebCrypto names them: its DOMExceptions keep theirs; argument errors stay TypeErrors. */
export function cryptoErrorName(err: unknown): [string, string] {
  if (err instanceof CryptoError) return [err.domName, err.message];
  if (!(err instanceof Error)) return ['OperationError', String(err)];
  if (WEBCRYPTO_NAMES.has(err.name)) return [err.name, err.message];
  // Node 20 names a non-extractable key's export refusal so.
  if (err.name === 'InvalidAccessException') return ['InvalidAccessError', err.message];
  if (err instanceof TypeError) return ['TypeError', err.message];
  const code = (err as { code?: unknown }).code;
  if (code === 'ERR_MISSING_OPTION' || code === 'ERR_INVALID_ARG_TYPE' || code === 'ERR_INVALID_ARG_VALUE') return ['TypeError', err.message];
  return ['OperationError', err.message];
}

/** A key reference as the isolate's shim writes it inside arguments. */
const KEY_MARK = '$edgeKey';
const HASHES: Record<string, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512', MD5: 'md5' };

// Process-wide gate and figures (tests and metrics read them).
let globalInFlight = 0;
let peakGlobal = 0;
const globalWaiters: (() => void)[] = [];
export function cryptoInFlight(): { now: number; peak: number } { return { now: globalInFlight, peak: peakGlobal }; }
export function resetCryptoPeak(): void { peakGlobal = globalInFlight; }

async function globalSlot(): Promise<void> {
  if (globalInFlight < GLOBAL_SLOTS) {
    globalInFlight += 1;
  } else {
    // The slot is handed over by the releaser: globalInFlight stays counted.
    await new Promise<void>((resolve) => globalWaiters.push(resolve));
  }
  peakGlobal = Math.max(peakGlobal, globalInFlight);
}

function releaseGlobalSlot(): void {
  const next = globalWaiters.shift();
  if (next) next();
  else globalInFlight -= 1;
}

// Node 20 has the class as a global only (not on crypto.webcrypto).
const NodeCryptoKey = (globalThis as unknown as { CryptoKey: typeof webcrypto.CryptoKey }).CryptoKey;

const copy = (b: ArrayBuffer | ArrayBufferView): Uint8Array => (b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength));

function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength);
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/**
 * Hashes on the event loop (DigestStream's incremental hash and MD5 are not in Node's
 * webcrypto), a MiB at a time with the loop let go between, so a 32 MiB chunk holds it
 * for a few milliseconds at a time instead of a hundred.
 */
async function hashInSlices(h: Hash, bytes: Uint8Array): Promise<void> {
  const SLICE = 1 << 20;
  for (let i = 0; i < bytes.byteLength; i += SLICE) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    h.update(bytes.subarray(i, i + SLICE));
  }
}

interface Waiting { start(): void; fail(err: unknown): void; bytes: number }

export class HostCrypto {
  private readonly keys = new Map<number, webcrypto.CryptoKey>();
  private nextId = 1;
  private readonly streams = new Map<number, Hash>();
  private nextStream = 1;
  private inFlight = 0;
  private readonly queue: Waiting[] = [];
  private heldBytes = 0;
  private closed = false;

  constructor(private readonly workerName: string) {}

  get keyCount(): number { return this.keys.size; }

  /** One operation from the isolate; never rejects (errors come back as `{ e }`). */
  async call(op: string, args: unknown): Promise<CryptoOutcome> {
    try {
      if (!Array.isArray(args)) throw new TypeError(`crypto: malformed call from worker ${this.workerName}`);
      return { v: await this.run(String(op), args) };
    } catch (err) {
      const [name, message] = cryptoErrorName(err);
      return { e: [name, message] };
    }
  }

  /** A key the isolate no longer references (its FinalizationRegistry said so). */
  release(id: unknown): void {
    if (typeof id === 'number') this.keys.delete(id);
  }

  /** The isolate is gone: its keys, streams and waiting operations with it. */
  close(): void {
    this.closed = true;
    this.keys.clear();
    this.streams.clear();
    for (const w of this.queue.splice(0)) w.fail(new CryptoError('OperationError', 'the isolate is gone'));
  }

  private async run(op: string, a: unknown[]): Promise<unknown> {
    switch (op) {
      case 'digestOpen': {
        if (this.streams.size >= MAX_DIGEST_STREAMS) throw new CryptoError('QuotaExceededError', `DigestStream: worker ${this.workerName} already has ${MAX_DIGEST_STREAMS} open DigestStreams`);
        const alg = HASHES[String(a[0])];
        if (!alg) throw new CryptoError('NotSupportedError', `DigestStream: unrecognized algorithm ${String(a[0])}`);
        const id = this.nextStream++;
        this.streams.set(id, createHash(alg));
        return id;
      }
      case 'digestWrite': {
        const h = this.streams.get(Number(a[0]));
        if (!h) throw new CryptoError('InvalidStateError', 'DigestStream: the stream is closed');
        if (!(a[1] instanceof ArrayBuffer)) throw new TypeError('DigestStream: chunks must be ArrayBuffers or ArrayBufferViews');
        if (a[1].byteLength > MAX_CRYPTO_INPUT_BYTES) throw new CryptoError('QuotaExceededError', `DigestStream: a chunk of ${a[1].byteLength} bytes; the limit is ${MAX_CRYPTO_INPUT_BYTES}`);
        await hashInSlices(h, new Uint8Array(a[1]));
        return null;
      }
      case 'digestClose': {
        const h = this.streams.get(Number(a[0]));
        this.streams.delete(Number(a[0]));
        if (!h) throw new CryptoError('InvalidStateError', 'DigestStream: the stream is closed');
        return plain(h.digest());
      }
      case 'digestAbort':
        this.streams.delete(Number(a[0]));
        return null;
      default:
    }
    const bytes = this.inputBytes(a, 0);
    if (bytes > MAX_CRYPTO_INPUT_BYTES) {
      throw new CryptoError('QuotaExceededError', `crypto.subtle.${op}: the input is ${bytes} bytes; the limit is ${MAX_CRYPTO_INPUT_BYTES} (use crypto.DigestStream to hash more)`);
    }
    const args = a.map((x) => this.unmarshal(x));
    this.check(op, args);
    return this.gated(bytes, () => this.perform(op, args));
  }

  private inputBytes(v: unknown, depth: number): number {
    if (v instanceof ArrayBuffer) return v.byteLength;
    if (ArrayBuffer.isView(v)) return v.byteLength;
    if (depth > 4 || v === null || typeof v !== 'object') return 0;
    let n = 0;
    for (const x of Object.values(v)) n += this.inputBytes(x, depth + 1);
    return n;
  }

  private key(v: unknown): webcrypto.CryptoKey {
    const k = typeof v === 'number' ? this.keys.get(v) : undefined;
    if (!k) throw new CryptoError('InvalidAccessError', 'the CryptoKey is not one of this worker\'s keys (or it was released)');
    return k;
  }

  /** The shim's `{ $edgeKey: n }` back into this isolate's key; everything else as sent. */
  private unmarshal(v: unknown, depth = 0): unknown {
    if (depth > 8 || v === null || typeof v !== 'object' || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return v;
    if (Array.isArray(v)) return v.map((x) => this.unmarshal(x, depth + 1));
    const o = v as Record<string, unknown>;
    if (KEY_MARK in o) return this.key(o[KEY_MARK]);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, this.unmarshal(x, depth + 1)]));
  }

  /** Workers' own limits, checked before any work is queued. */
  private check(op: string, args: unknown[]): void {
    const algs = op === 'deriveKey' || op === 'deriveBits' ? [args[0]] : op === 'generateKey' ? [args[0]] : [];
    for (const alg of algs) {
      if (alg === null || typeof alg !== 'object') continue;
      const o = alg as Record<string, unknown>;
      const name = String(o.name).toUpperCase();
      if (name === 'PBKDF2' && Number(o.iterations) > MAX_PBKDF2_ITERATIONS) {
        throw new CryptoError('NotSupportedError', `Pbkdf2 failed: iteration counts above ${MAX_PBKDF2_ITERATIONS} are not supported (requested ${Number(o.iterations)}).`);
      }
      if (name.startsWith('RSA') && Number(o.modulusLength) > MAX_RSA_MODULUS_BITS) {
        throw new CryptoError('NotSupportedError', `RSA keys longer than ${MAX_RSA_MODULUS_BITS} bits are not supported (requested ${Number(o.modulusLength)})`);
      }
    }
    if ((op === 'generateKey' || op === 'importKey' || op === 'deriveKey' || op === 'unwrapKey') && this.keys.size >= MAX_KEYS_PER_ISOLATE - 1) throw this.tooManyKeys(op);
  }

  private tooManyKeys(op: string): CryptoError {
    return new CryptoError('QuotaExceededError', `crypto.subtle.${op}: worker ${this.workerName} already holds ${this.keys.size} CryptoKeys, the most one isolate may hold (${MAX_KEYS_PER_ISOLATE}); drop references to keys it no longer uses`);
  }

  private async gated<T>(bytes: number, work: () => Promise<T>): Promise<T> {
    if (this.closed) throw new CryptoError('OperationError', 'the isolate is gone');
    if (this.heldBytes + bytes > MAX_HELD_BYTES_PER_ISOLATE) {
      throw new CryptoError('QuotaExceededError', `crypto.subtle: worker ${this.workerName}'s pending operations already hold ${this.heldBytes} input bytes; the limit is ${MAX_HELD_BYTES_PER_ISOLATE}`);
    }
    if (this.inFlight >= MAX_IN_FLIGHT_PER_ISOLATE) {
      if (this.queue.length >= MAX_QUEUED_PER_ISOLATE) {
        throw new CryptoError('QuotaExceededError', `crypto.subtle: worker ${this.workerName} already has ${MAX_QUEUED_PER_ISOLATE} operations waiting`);
      }
      this.heldBytes += bytes;
      try {
        await new Promise<void>((start, fail) => this.queue.push({ start, fail, bytes }));
      } finally {
        this.heldBytes -= bytes;
      }
    } else {
      this.inFlight += 1;
    }
    this.heldBytes += bytes;
    try {
      await globalSlot();
      try {
        return await work();
      } finally {
        releaseGlobalSlot();
      }
    } finally {
      this.heldBytes -= bytes;
      // Hand the isolate's slot to its next waiting operation (inFlight stays counted).
      const next = this.queue.shift();
      if (next) next.start();
      else this.inFlight -= 1;
    }
  }

  private register(k: webcrypto.CryptoKey): CryptoKeyInfo {
    if (this.closed) throw new CryptoError('OperationError', 'the isolate is gone');
    if (this.keys.size >= MAX_KEYS_PER_ISOLATE) throw this.tooManyKeys('generateKey');
    const id = this.nextId++;
    this.keys.set(id, k);
    return { id, type: k.type, extractable: k.extractable, algorithm: plain(k.algorithm) as Record<string, unknown>, usages: [...k.usages] };
  }

  private result(r: unknown): unknown {
    if (r instanceof NodeCryptoKey) return { key: this.register(r as webcrypto.CryptoKey) };
    if (r !== null && typeof r === 'object' && 'privateKey' in r && 'publicKey' in r) {
      const p = r as webcrypto.CryptoKeyPair;
      return { pair: { publicKey: this.register(p.publicKey), privateKey: this.register(p.privateKey) } };
    }
    if (r instanceof ArrayBuffer) return r;
    return plain(r);
  }

  private async perform(op: string, a: unknown[]): Promise<unknown> {
    const s = webcrypto.subtle as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    if (op === 'digest' && String((a[0] as { name?: unknown } | null)?.name ?? a[0]).toUpperCase() === 'MD5') return this.md5(a[1]);
    switch (op) {
      case 'digest': case 'generateKey': case 'importKey': case 'exportKey': case 'sign': case 'verify':
      case 'encrypt': case 'decrypt': case 'deriveBits': case 'deriveKey': case 'wrapKey': case 'unwrapKey':
        return this.result(await s[op]!(...a));
      default:
        throw new CryptoError('NotSupportedError', `crypto.subtle has no operation ${op}`);
    }
  }

  /** MD5 is not in Node's webcrypto (Workers has it). */
  private async md5(data: unknown): Promise<ArrayBuffer> {
    if (!(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) throw new TypeError('crypto.subtle.digest: data must be a BufferSource');
    const h = createHash('md5');
    await hashInSlices(h, copy(data));
    return plain(h.digest()) as ArrayBuffer;
  }
}
