// node:crypto, the parts Workers' nodejs_compat has that workers use most. createHash and
// createHmac are synchronous as in Node: the input is kept in the isolate (its memory
// counts against the worker's limit) and hashed by the host's digest callback when
// digest() is called. HMAC is built on the same digest (RFC 2104), so a key never leaves
// the isolate except as part of a hash input.
import { Buffer } from 'buffer';

/** Bytes one hash may be fed before digest(); a bigger input is refused with a RangeError. */
export const MAX_HASH_INPUT_BYTES = 64 * 1024 * 1024;

const ALGORITHMS = { md5: ['MD5', 64], sha1: ['SHA-1', 64], sha256: ['SHA-256', 64], sha384: ['SHA-384', 128], sha512: ['SHA-512', 128] };

export function makeCrypto(digestCallback) {
  const webcrypto = globalThis.crypto;
  const algorithm = (name) => {
    const a = ALGORITHMS[String(name).toLowerCase().replace(/^sha-/, 'sha')];
    if (!a) {
      const err = new Error(`Digest method not supported: ${String(name)} (this runtime has ${Object.keys(ALGORITHMS).join(', ')})`);
      err.code = 'ERR_CRYPTO_INVALID_DIGEST';
      throw err;
    }
    return a;
  };
  const toBytes = (data, encoding) => {
    if (typeof data === 'string') return Buffer.from(data, encoding ?? 'utf8');
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    throw new TypeError('The "data" argument must be of type string or an instance of Buffer, TypedArray, or DataView.');
  };
  const digestBytes = (name, chunks, total) => {
    const all = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.length; }
    return Buffer.from(digestCallback(name, all.buffer));
  };
  const encode = (buf, encoding) => (encoding === undefined || encoding === 'buffer' ? buf : buf.toString(encoding));

  class Hash {
    #name; #chunks = []; #total = 0; #done = false;
    constructor(name) { this.#name = algorithm(name)[0]; }
    update(data, encoding) {
      if (this.#done) throw Object.assign(new Error('Digest already called'), { code: 'ERR_CRYPTO_HASH_FINALIZED' });
      // Copied: Node hashes at update(), so a later change to the caller's buffer must not count.
      const bytes = Uint8Array.from(toBytes(data, encoding));
      if (this.#total + bytes.length > MAX_HASH_INPUT_BYTES) {
        throw new RangeError(`createHash: this runtime hashes at most ${MAX_HASH_INPUT_BYTES} bytes per hash (hash larger data in parts, or with crypto.subtle.digest)`);
      }
      this.#chunks.push(bytes);
      this.#total += bytes.length;
      return this;
    }
    digest(encoding) {
      if (this.#done) throw Object.assign(new Error('Digest already called'), { code: 'ERR_CRYPTO_HASH_FINALIZED' });
      this.#done = true;
      const out = digestBytes(this.#name, this.#chunks, this.#total);
      this.#chunks = [];
      return encode(out, encoding);
    }
    copy() {
      const h = new Hash(this.#name);
      for (const c of this.#chunks) h.update(c);
      return h;
    }
  }

  class Hmac {
    #name; #inner; #outerKey;
    constructor(name, key) {
      const [webName, block] = algorithm(name);
      this.#name = webName;
      let k = toBytes(key instanceof Object && key.type === 'secret' && key.export ? key.export() : key);
      if (k.length > block) k = digestBytes(webName, [k], k.length);
      const ipad = new Uint8Array(block).fill(0x36);
      const opad = new Uint8Array(block).fill(0x5c);
      for (let i = 0; i < k.length; i++) { ipad[i] ^= k[i]; opad[i] ^= k[i]; }
      this.#inner = new Hash(webName).update(ipad);
      this.#outerKey = opad;
    }
    update(data, encoding) { this.#inner.update(data, encoding); return this; }
    digest(encoding) {
      const inner = this.#inner.digest();
      return encode(new Hash(this.#name).update(this.#outerKey).update(inner).digest(), encoding);
    }
  }

  const randomBytes = (size, cb) => {
    if (!Number.isInteger(size) || size < 0 || size > 2 ** 31 - 1) throw new RangeError(`The "size" argument is out of range: ${String(size)}`);
    const buf = Buffer.alloc(size);
    for (let at = 0; at < size; at += 65536) webcrypto.getRandomValues(buf.subarray(at, Math.min(size, at + 65536)));
    if (typeof cb === 'function') { globalThis.queueMicrotask(() => cb(null, buf)); return undefined; }
    return buf;
  };
  const randomInt = (min, max, cb) => {
    if (max === undefined || typeof max === 'function') { cb = max; max = min; min = 0; }
    const range = max - min;
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || range <= 0 || range > 2 ** 48) throw new RangeError('randomInt: min and max must be safe integers with 0 < max - min <= 2^48');
    const limit = 2 ** 48 - (2 ** 48 % range);
    let n;
    do { n = randomBytes(6).readUIntBE(0, 6); } while (n >= limit);
    const r = min + (n % range);
    if (typeof cb === 'function') { globalThis.queueMicrotask(() => cb(null, r)); return undefined; }
    return r;
  };
  const timingSafeEqual = (a, b) => {
    const x = toBytes(a), y = toBytes(b);
    if (x.length !== y.length) throw Object.assign(new RangeError('Input buffers must have the same byte length'), { code: 'ERR_CRYPTO_TIMING_SAFE_EQUAL_LENGTH' });
    let diff = 0;
    for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
    return diff === 0;
  };
  const mod = {
    createHash: (name) => new Hash(name),
    createHmac: (name, key) => new Hmac(name, key),
    Hash, Hmac,
    getHashes: () => Object.keys(ALGORITHMS),
    randomBytes, randomInt, timingSafeEqual,
    randomUUID: () => webcrypto.randomUUID(),
    getRandomValues: (a) => webcrypto.getRandomValues(a),
    randomFillSync: (buf, offset = 0, size) => {
      const view = toBytes(buf);
      const end = size === undefined ? view.length : offset + size;
      for (let at = offset; at < end; at += 65536) webcrypto.getRandomValues(view.subarray(at, Math.min(end, at + 65536)));
      return buf;
    },
    webcrypto,
    subtle: webcrypto.subtle,
  };
  return mod;
}
