// crypto.getRandomValues/randomUUID and crypto.subtle, backed by the host. A CryptoKey
// here is a handle: its key material stays in the host's webcrypto (node-agent/bindings/
// host-crypto.ts), in a table of this isolate's keys, and every subtle operation is an
// async host call run on the host's threadpool. The handle lives in a private field, so
// an object made to look like a CryptoKey (or a number) is not one.
import { host } from '../host.js';
import { DOMException, INTERNAL, bytesOf, hostOutcome, illegalConstructor, isObject, requireArgs, toArrayBuffer } from './util.js';
import { ArrayIncludes, ArraySome } from './primordials.js';
import { WritableStream } from './streams.js';

const MAX_RANDOM = 65536;
const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];
const DIGESTS = ['SHA-1', 'SHA-256', 'SHA-384', 'SHA-512', 'MD5'];
/** The most input one operation takes: MAX_CRYPTO_INPUT_BYTES in host-crypto.ts. */
const MAX_INPUT = 32 * 1024 * 1024;
const KEY_MARK = '$edgeKey';
/** Workers' older name for Ed25519 (workerd keeps it): keys made with it report it back. */
const NODE_ED25519 = 'NODE-ED25519';

const hex = (b) => (b < 16 ? '0' : '') + b.toString(16);

const tooLarge = (what, n) => new DOMException(`${what}: the input is ${n} bytes; the limit is ${MAX_INPUT} (use crypto.DigestStream to hash more)`, 'QuotaExceededError');

function failure(e) {
  const [name, message] = e;
  if (name === 'TypeError') return new TypeError(message);
  return new DOMException(message, name);
}

function freezeDeep(o) {
  if (!isObject(o) || ArrayBuffer.isView(o) || o instanceof ArrayBuffer) return o;
  for (const k of Object.keys(o)) {
    const v = o[k];
    // An RSA key's publicExponent (a Uint8Array) cannot be frozen; the object holding it is.
    if (v instanceof ArrayBuffer) o[k] = new Uint8Array(v);
    else freezeDeep(v);
  }
  return Object.freeze(o);
}

// Made lazily (never at snapshot time): tells the host when a key is unreachable here.
let registry = null;
function released(id) {
  try { host.cryptoRelease(id); } catch { /* the isolate is going */ }
}

export class CryptoKey {
  #id;
  #type;
  #extractable;
  #algorithm;
  #usages;

  constructor(key, info, alias) {
    if (key !== INTERNAL) illegalConstructor();
    this.#id = info.id;
    this.#type = info.type;
    this.#extractable = info.extractable;
    this.#algorithm = freezeDeep(alias ? { name: NODE_ED25519, namedCurve: NODE_ED25519 } : info.algorithm);
    this.#usages = Object.freeze(info.usages);
    if (registry === null) registry = new FinalizationRegistry(released);
    registry.register(this, info.id);
  }

  get type() { return this.#type; }
  get extractable() { return this.#extractable; }
  get algorithm() { return this.#algorithm; }
  get usages() { return this.#usages; }

  static isKey(v) {
    return isObject(v) && #id in v;
  }

  static handleOf(k, what) {
    if (!isObject(k) || !(#id in k)) throw new TypeError(`${what} is not of type 'CryptoKey'`);
    return { [KEY_MARK]: k.#id };
  }
}

/** NODE-ED25519 in an algorithm, as Ed25519 for the host; `alias` says it was used. */
function algorithmOf(alg) {
  const name = typeof alg === 'string' ? alg : isObject(alg) ? alg.name : undefined;
  if (typeof name === 'string' && name.toUpperCase() === NODE_ED25519) return { alg: { name: 'Ed25519' }, alias: true };
  return { alg, alias: false };
}

/**
 * An argument as it crosses to the host: BufferSources copied to ArrayBuffers (counted
 * against MAX_INPUT), CryptoKeys as their handles, dictionaries read as WebIDL reads them
 * (own and inherited enumerable members), functions and symbols dropped.
 */
function marshal(v, what, budget, depth = 0) {
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    const b = bytesOf(v, what);
    budget.n += b.byteLength;
    if (budget.n > MAX_INPUT) throw tooLarge(what, budget.n);
    // A Uint8Array, not an ArrayBuffer: a BigInteger (publicExponent) must be one.
    return new Uint8Array(toArrayBuffer(b));
  }
  if (!isObject(v)) return typeof v === 'symbol' ? undefined : v;
  if (typeof v === 'function' || depth > 6) return undefined;
  if (CryptoKey.isKey(v)) return CryptoKey.handleOf(v, what);
  if (Array.isArray(v)) {
    const out = [];
    for (let i = 0; i < v.length && i < 1000; i++) out[i] = marshal(v[i], what, budget, depth + 1);
    return out;
  }
  const out = {};
  for (const k in v) {
    if (k === KEY_MARK) continue;
    const x = marshal(v[k], what, budget, depth + 1);
    if (x !== undefined) out[k] = x;
  }
  return out;
}

// Input bytes of this isolate's crypto calls not yet settled. Every call copies its input
// to the host, so the same 32 MiB buffer passed to many calls at once would fill the
// host's memory before any of them were refused there: refused here first.
const MAX_PENDING = 64 * 1024 * 1024;
let pending = 0;

async function call(op, args, alias = false, bytes = 0) {
  if (pending + bytes > MAX_PENDING) {
    throw new DOMException(`crypto: this worker's unsettled crypto calls already hold ${pending} input bytes; the limit is ${MAX_PENDING}`, 'QuotaExceededError');
  }
  pending += bytes;
  let r;
  try {
    r = await hostOutcome(host.crypto(op, args));
  } finally {
    pending -= bytes;
  }
  if (r.e) throw failure(r.e);
  const v = r.v;
  if (isObject(v) && v.key) return new CryptoKey(INTERNAL, v.key, alias);
  if (isObject(v) && v.pair) {
    return { publicKey: new CryptoKey(INTERNAL, v.pair.publicKey, alias), privateKey: new CryptoKey(INTERNAL, v.pair.privateKey, alias) };
  }
  return v;
}

function usagesOf(u, what) {
  if (!isObject(u) || typeof u[Symbol.iterator] !== 'function') throw new TypeError(`${what}: keyUsages must be a sequence of strings`);
  const out = [];
  for (const x of u) { out.push(String(x)); if (out.length > 16) break; }
  return out;
}

// subtle is made without a constructor (see the end of this file), so it has no private fields.
async function keyed(op, algorithm, key, data) {
  const what = `crypto.subtle.${op}`;
  const h = CryptoKey.handleOf(key, `${what}: parameter 2`);
  const budget = { n: 0 };
  const args = [marshal(algorithmOf(algorithm).alg, what, budget), h];
  for (const d of data) args.push(marshal(bytesOf(d, what), what, budget));
  return call(op, args, false, budget.n);
}

export class SubtleCrypto {
  constructor() {
    illegalConstructor();
  }

  async digest(algorithm, data) {
    requireArgs(arguments.length, 2, 'crypto.subtle.digest');
    const name = String(isObject(algorithm) ? algorithm.name : algorithm).toUpperCase();
    if (!ArrayIncludes(DIGESTS, name)) throw new DOMException(`crypto.subtle.digest: unrecognized algorithm name "${name}"`, 'NotSupportedError');
    const budget = { n: 0 };
    const args = [{ name }, marshal(data, 'crypto.subtle.digest', budget)];
    return call('digest', args, false, budget.n);
  }

  async generateKey(algorithm, extractable, keyUsages) {
    requireArgs(arguments.length, 3, 'crypto.subtle.generateKey');
    const { alg, alias } = algorithmOf(algorithm);
    return call('generateKey', [marshal(alg, 'crypto.subtle.generateKey', { n: 0 }), !!extractable, usagesOf(keyUsages, 'crypto.subtle.generateKey')], alias);
  }

  async importKey(format, keyData, algorithm, extractable, keyUsages) {
    requireArgs(arguments.length, 5, 'crypto.subtle.importKey');
    const what = 'crypto.subtle.importKey';
    const budget = { n: 0 };
    const { alg, alias } = algorithmOf(algorithm);
    const args = [String(format), marshal(keyData, what, budget), marshal(alg, what, budget), !!extractable, usagesOf(keyUsages, what)];
    return call('importKey', args, alias, budget.n);
  }

  async exportKey(format, key) {
    requireArgs(arguments.length, 2, 'crypto.subtle.exportKey');
    return call('exportKey', [String(format), CryptoKey.handleOf(key, 'crypto.subtle.exportKey: parameter 2')]);
  }

  async sign(algorithm, key, data) {
    requireArgs(arguments.length, 3, 'crypto.subtle.sign');
    return keyed('sign', algorithm, key, [data]);
  }

  async verify(algorithm, key, signature, data) {
    requireArgs(arguments.length, 4, 'crypto.subtle.verify');
    return keyed('verify', algorithm, key, [signature, data]);
  }

  async encrypt(algorithm, key, data) {
    requireArgs(arguments.length, 3, 'crypto.subtle.encrypt');
    return keyed('encrypt', algorithm, key, [data]);
  }

  async decrypt(algorithm, key, data) {
    requireArgs(arguments.length, 3, 'crypto.subtle.decrypt');
    return keyed('decrypt', algorithm, key, [data]);
  }

  async deriveBits(algorithm, baseKey, length = null) {
    requireArgs(arguments.length, 2, 'crypto.subtle.deriveBits');
    const what = 'crypto.subtle.deriveBits';
    const h = CryptoKey.handleOf(baseKey, `${what}: parameter 2`);
    return call('deriveBits', [marshal(algorithm, what, { n: 0 }), h, length === null || length === undefined ? null : Number(length)]);
  }

  async deriveKey(algorithm, baseKey, derivedKeyAlgorithm, extractable, keyUsages) {
    requireArgs(arguments.length, 5, 'crypto.subtle.deriveKey');
    const what = 'crypto.subtle.deriveKey';
    const h = CryptoKey.handleOf(baseKey, `${what}: parameter 2`);
    const budget = { n: 0 };
    return call('deriveKey', [marshal(algorithm, what, budget), h, marshal(derivedKeyAlgorithm, what, budget), !!extractable, usagesOf(keyUsages, what)]);
  }

  async wrapKey(format, key, wrappingKey, wrapAlgorithm) {
    requireArgs(arguments.length, 4, 'crypto.subtle.wrapKey');
    const what = 'crypto.subtle.wrapKey';
    const k = CryptoKey.handleOf(key, `${what}: parameter 2`);
    const w = CryptoKey.handleOf(wrappingKey, `${what}: parameter 3`);
    return call('wrapKey', [String(format), k, w, marshal(wrapAlgorithm, what, { n: 0 })]);
  }

  async unwrapKey(format, wrappedKey, unwrappingKey, unwrapAlgorithm, unwrappedKeyAlgorithm, extractable, keyUsages) {
    requireArgs(arguments.length, 7, 'crypto.subtle.unwrapKey');
    const what = 'crypto.subtle.unwrapKey';
    const budget = { n: 0 };
    const w = CryptoKey.handleOf(unwrappingKey, `${what}: parameter 3`);
    const { alg, alias } = algorithmOf(unwrappedKeyAlgorithm);
    const args = [
      String(format), marshal(wrappedKey, what, budget), w, marshal(unwrapAlgorithm, what, budget),
      marshal(alg, what, budget), !!extractable, usagesOf(keyUsages, what),
    ];
    return call('unwrapKey', args, alias, budget.n);
  }

  /** Workers' constant-time comparison of two equally long buffers. */
  timingSafeEqual(a, b) {
    requireArgs(arguments.length, 2, 'crypto.subtle.timingSafeEqual');
    const x = bytesOf(a, 'crypto.subtle.timingSafeEqual');
    const y = bytesOf(b, 'crypto.subtle.timingSafeEqual');
    if (x.byteLength !== y.byteLength) throw new TypeError('crypto.subtle.timingSafeEqual: the inputs must have the same length');
    let diff = 0;
    for (let i = 0; i < x.byteLength; i++) diff |= x[i] ^ y[i];
    return diff === 0;
  }
}

/**
 * Workers' DigestStream: a WritableStream whose `digest` settles with the hash of what was
 * written once it closes. The hash runs on the host as chunks arrive, so a large stream
 * is never held whole.
 */
export class DigestStream extends WritableStream {
  #state;

  constructor(algorithm) {
    requireArgs(arguments.length, 1, 'DigestStream');
    const name = String(isObject(algorithm) ? algorithm.name : algorithm).toUpperCase();
    if (!ArrayIncludes(DIGESTS, name)) throw new DOMException(`DigestStream: unrecognized algorithm name "${name}"`, 'NotSupportedError');
    const state = { id: 0, bytes: 0, resolve: null, reject: null, digest: null };
    state.digest = new Promise((resolve, reject) => { state.resolve = resolve; state.reject = reject; });
    // Nobody may ever ask for the digest of an aborted stream.
    state.digest.catch(() => {});
    super({
      async start() {
        state.id = await call('digestOpen', [name]);
      },
      async write(chunk) {
        if (!(chunk instanceof ArrayBuffer) && !ArrayBuffer.isView(chunk)) throw new TypeError('DigestStream: chunks must be ArrayBuffers or ArrayBufferViews');
        const b = bytesOf(chunk, 'DigestStream');
        if (b.byteLength > MAX_INPUT) throw tooLarge('DigestStream', b.byteLength);
        await call('digestWrite', [state.id, toArrayBuffer(b)], false, b.byteLength);
        state.bytes += b.byteLength;
      },
      async close() {
        try {
          state.resolve(await call('digestClose', [state.id]));
        } catch (e) {
          state.reject(e);
          throw e;
        }
      },
      abort(reason) {
        state.reject(reason);
        return call('digestAbort', [state.id]).then(() => undefined, () => undefined);
      },
    });
    this.#state = state;
  }

  get digest() { return this.#state.digest; }
  get bytesWritten() { return this.#state.bytes; }
}

export class Crypto {
  constructor() {
    illegalConstructor();
  }

  getRandomValues(array) {
    requireArgs(arguments.length, 1, 'crypto.getRandomValues');
    if (!ArraySome(INTEGER_ARRAYS, (T) => array instanceof T)) {
      throw new DOMException('crypto.getRandomValues: the argument must be an integer-type TypedArray', 'TypeMismatchError');
    }
    const n = array.byteLength;
    if (n > MAX_RANDOM) {
      throw new DOMException(
        `crypto.getRandomValues: the ArrayBufferView's byte length (${n}) exceeds the number of bytes of entropy available via this API (${MAX_RANDOM})`,
        'QuotaExceededError',
      );
    }
    if (n > 0) new Uint8Array(array.buffer, array.byteOffset, n).set(new Uint8Array(host.randomBytes(n)));
    return array;
  }

  randomUUID() {
    const b = new Uint8Array(host.randomBytes(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let s = '';
    for (let i = 0; i < 16; i++) s += (i === 4 || i === 6 || i === 8 || i === 10 ? '-' : '') + hex(b[i]);
    return s;
  }
}

// Made without running a constructor: code that runs at snapshot time should stay
// trivial (see the note at the end of ./index.js). subtle is an own property so that
// freezing the crypto global freezes it too.
export const crypto = Object.create(Crypto.prototype, {
  subtle: { value: Object.create(SubtleCrypto.prototype), enumerable: true },
  DigestStream: { value: DigestStream, enumerable: true },
});
