// crypto.getRandomValues/randomUUID and crypto.subtle.digest, backed by the host's CSPRNG
// and hashes. The rest of SubtleCrypto is not provided.
import { host } from '../host.js';
import { DOMException, bytesOf, illegalConstructor, requireArgs, toArrayBuffer } from './util.js';
import { ArrayIncludes, ArraySome } from './primordials.js';

const MAX_RANDOM = 65536;
const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];
const DIGESTS = ['SHA-1', 'SHA-256', 'SHA-384', 'SHA-512'];

const hex = (b) => (b < 16 ? '0' : '') + b.toString(16);

export class SubtleCrypto {
  constructor() {
    illegalConstructor();
  }

  async digest(algorithm, data) {
    requireArgs(arguments.length, 2, 'crypto.subtle.digest');
    const name = String(algorithm !== null && typeof algorithm === 'object' ? algorithm.name : algorithm).toUpperCase();
    if (!ArrayIncludes(DIGESTS, name)) throw new DOMException(`crypto.subtle.digest: unrecognized algorithm name "${name}"`, 'NotSupportedError');
    return host.digest(name, toArrayBuffer(bytesOf(data, 'crypto.subtle.digest')));
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
});
